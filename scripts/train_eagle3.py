"""Train the default EAGLE-3 head for SmolLM2-135M-Instruct on this CPU.

    python scripts/train_eagle3.py                   # whole run within --budget-min; resumable
    python scripts/train_eagle3.py --steps 40 --out /tmp/e3   # a short run elsewhere

Data (self-distillation, as scripts/train_draft.py): the target's own continuations of the
non-held-out sample prompts (user turns of samples/code.jsonl, the first user turn of
samples/chat.jsonl.gz; greedy, plus sampled ones for the code rows), generated and cached by
train_draft.py's `target_continuations` in the same workspace cache, so either script reuses
the other's. For every training sequence (prompt + continuation) the target is run once,
teacher forced, and its three aux hidden states (HF indices 2, 15, 27: vtcore.eagle3) and its
final hidden state are cached in the workspace.

Objective: EAGLE-3's training-time test as SpecForge runs it (specforge/algorithms/eagle3/
model.py): step 0 feeds fc(target aux) with the next token's embedding; step k feeds the
draft's own step k-1 output at the same position with the token k further on, attending the
step-0 keys causally plus its own earlier-step keys (vtcore.eagle3.Eagle3Draft.ttt_step). Each
step's loss is the cross-entropy to the target's full next-token distribution at the position
it predicts; steps are weighted 0.8^k (SpecForge's ploss_decay). Only continuation tokens the
draft would actually propose are scored (the first one comes from the target's prefill).

The draft's embedding and its head are the target's tied embedding (frozen, shared, full
49,152-token draft vocabulary, d2t all zeros): only fc + the decoder layer + the final norm are
trained and committed (bf16). Training runs under CPU bf16 autocast (AMX), the master weights
and the loss in fp32.

Resumable: the optimizer, step and history are checkpointed in the workspace
(<workspace>/train_eagle3/runs/<signature>/ckpt.pt) every --ckpt-every steps; rerunning the
same command continues. Held-out acceptance per draft position (greedy chain drafting, gamma 4)
on the held-out rows of samples/code.jsonl (and chat) goes into the recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from train_draft import add_distillation_args, distillation, log  # noqa: E402
from vtcore import checkpoints  # noqa: E402
from vtcore import eagle3 as E  # noqa: E402
from vtcore import models  # noqa: E402
from vtcore.tokens import sha256_file  # noqa: E402
from vtcore.workspace import subdir  # noqa: E402

FEATURES_VERSION = 1


# ---------------------------------------------------------------- target features


def _sig(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


@torch.inference_mode()
def target_features(target, seqs: list[dict], aux_ids, cache_dir: Path, batch: int = 8) -> float:
    """Fill seq["aux"] (bf16 [n-1, 3H], the aux states of positions 0..n-2) and seq["last"]
    (fp32 [n-1-(P-1), H], the final hidden states of positions P-1..n-2, the logits input)
    for each sequence (ids = prompt + continuation, P = prompt length), cached one file each.
    Returns the seconds spent computing (0 when everything was cached)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for s in seqs:
        f = cache_dir / f"{_sig(FEATURES_VERSION, list(aux_ids), s['ids'], s['P'])}.pt"
        s["_feat"] = f
        if f.is_file():
            s.update(torch.load(f, weights_only=True))
        else:
            todo.append(s)
    log(f"target features: {len(seqs) - len(todo)} cached, {len(todo)} to compute")
    todo.sort(key=lambda s: len(s["ids"]))
    t0 = time.perf_counter()
    for b in range(0, len(todo), batch):
        group = todo[b: b + batch]
        L = max(len(s["ids"]) - 1 for s in group)
        ids = torch.zeros(len(group), L, dtype=torch.long)
        mask = torch.zeros(len(group), L, dtype=torch.long)
        for r, s in enumerate(group):
            n = len(s["ids"]) - 1
            ids[r, :n] = torch.tensor(s["ids"][:-1])
            mask[r, :n] = 1
        last, aux = E.target_forward(target, ids, aux_ids, attention_mask=mask)
        for r, s in enumerate(group):
            n, P = len(s["ids"]) - 1, s["P"]
            item = {"aux": aux[r, :n].to(torch.bfloat16).clone(), "last": last[r, P - 1: n].float().clone()}
            torch.save(item, s["_feat"].with_suffix(".tmp"))
            os.replace(s["_feat"].with_suffix(".tmp"), s["_feat"])
            s.update(item)
        if (b // batch) % 10 == 0 or b + batch >= len(todo):
            done = min(b + batch, len(todo))
            rate = done / (time.perf_counter() - t0)
            log(f"features {done}/{len(todo)} (~{(len(todo) - done) / rate / 60:.1f} min left)")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- batches and the TTT loss


class SoftCE(torch.autograd.Function):
    """Per-row cross-entropy of logits z [M, V] to a distribution p [M, V]:
    logsumexp(z) - sum(p z), with grad softmax(z) - p; z is kept in its own dtype (bf16 saves
    half the memory), the arithmetic is fp32."""

    @staticmethod
    def forward(ctx, z, p):
        zf = z.float()
        lse = torch.logsumexp(zf, -1)
        ctx.save_for_backward(z, p, lse)
        return lse - (p * zf).sum(-1)

    @staticmethod
    def backward(ctx, g):
        z, p, lse = ctx.saved_tensors
        grad = torch.exp(z.float() - lse[:, None]).sub_(p).mul_(g[:, None])
        return grad.to(z.dtype), None


def make_batch(seqs: list[dict], steps: int) -> dict:
    """Right-padded step-0 inputs of a batch, and for each TTT step k the (row, position) pairs
    scored: position t predicts token t+2+k, scored when it is a drafted continuation token
    (index P+1 .. n-1); its label is the target's distribution at position j = t+1+k."""
    B, T = len(seqs), max(len(s["ids"]) - 1 for s in seqs)
    ids = torch.zeros(B, T + steps, dtype=torch.long)   # ids[b, t] = token t+1 (shifted), zero-padded
    H3 = seqs[0]["aux"].shape[-1]
    aux = torch.zeros(B, T, H3)
    valid = torch.zeros(B, T, dtype=torch.bool)
    rows, js, last = [], [], []
    for r, s in enumerate(seqs):
        n, P = len(s["ids"]) - 1, s["P"]
        ids[r, :n] = torch.tensor(s["ids"][1:])
        aux[r, :n] = s["aux"].float()
        valid[r, :n] = True
        j = torch.arange(P, n)                           # label positions (the target's logits there)
        rows.append(torch.full_like(j, r))
        js.append(j)
        last.append(s["last"][1:])                        # "last" starts at P-1
    mask0 = torch.ones(T, T, dtype=torch.bool).tril()[None, None] & valid[:, None, None, :]
    return {"ids": ids, "aux": aux, "mask0": mask0, "pos": torch.arange(T).expand(B, T),
            "rows": torch.cat(rows), "js": torch.cat(js), "last": torch.cat(last), "T": T}


def ttt_outputs(draft, batch: dict, steps: int):
    """Yield (k, h_out [B, T, H]) for TTT steps k = 0..steps-1."""
    T = batch["T"]
    h = draft.fuse(batch["aux"])
    kv: list = []
    for k in range(steps):
        h = draft.ttt_step(batch["ids"][:, k: k + T], h, kv, batch["pos"], batch["mask0"])
        yield k, h


def target_probs(W: torch.Tensor, last: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    out = torch.empty(last.shape[0], W.shape[0])
    for i in range(0, last.shape[0], chunk):
        out[i: i + chunk] = torch.softmax(last[i: i + chunk] @ W.t(), -1)
    return out


def train_step(draft, batch, W, W16, args) -> tuple[torch.Tensor, list[float], list[float]]:
    p = target_probs(W, batch["last"])
    labels = p.argmax(-1)
    total, losses, accs = 0.0, [], []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else torch.autocast("cpu", enabled=False)
    with ctx:
        for k, h in ttt_outputs(draft, batch, args.ttt):
            t = batch["js"] - 1 - k
            x = draft.norm(h[batch["rows"], t])
            z = x.to(W16.dtype) @ W16.t()
            loss = SoftCE.apply(z, p).mean()
            total = total + (args.ploss_decay ** k) * loss
            losses.append(loss.item())
            accs.append((z.argmax(-1) == labels).float().mean().item())
    return total, losses, accs


# ---------------------------------------------------------------- held-out acceptance


@torch.inference_mode()
def acceptance(draft, seqs: list[dict], W: torch.Tensor, gamma: int = 4, batch: int = 8) -> dict:
    """Greedy chain drafting simulated exactly from teacher-forced TTT steps: with greedy
    decoding a chain whose first j-1 tokens were accepted saw exactly the target's tokens, so
    step j's token is accepted iff its argmax equals the target's greedy token there.
    alpha[j-1] = share of chain starts whose step j is accepted given steps 1..j-1 were;
    accepted_per_step / tokens_per_step: greedy speculative decoding at `gamma` walked over
    each continuation (accepted draft tokens per target step; + the target's own token)."""
    hit = [0] * gamma
    tried = [0] * gamma
    accepted, steps = 0, 0
    for b in range(0, len(seqs), batch):
        group = seqs[b: b + batch]
        bt = make_batch(group, gamma)
        y = (bt["last"] @ W.t()).argmax(-1)                 # the target's greedy token after position j
        ok = torch.zeros(len(bt["js"]), gamma, dtype=torch.bool)   # ok[i, k]: chain starting at j_i - 1, step k+1
        for k, h in ttt_outputs(draft, bt, gamma):
            t = bt["js"] - 1 - k
            pred = draft.head_target_ids[draft.logits(h[bt["rows"], t]).argmax(-1)]
            ok[:, k] = pred == y
        # ok was filled per label position j (step k predicts the label at j from start t = j-1-k);
        # re-index per chain start s = j - 1: step k of the chain starting at s is ok[idx(s + k), k]
        start = 0
        for r, s in enumerate(group):
            n, P = len(s["ids"]) - 1, s["P"]
            m = n - P                                       # label positions P..n-1 (j), count m
            o = ok[start: start + m]
            start += m
            # chain start c (= committed-token index, c = P..n-1): step k+1 checks label j = c + k
            for c in range(m):
                ln = 0
                while ln < gamma and c + ln < m and bool(o[c + ln, ln]):
                    ln += 1
                for k in range(min(ln + 1, gamma, m - c)):
                    tried[k] += 1
                    hit[k] += int(k < ln)
            c = 0
            while c < m:                                    # the decoding walk
                ln = 0
                while ln < gamma and c + ln < m and bool(o[c + ln, ln]):
                    ln += 1
                accepted += ln
                steps += 1
                c += ln + 1
    alpha = [h / t if t else None for h, t in zip(hit, tried)]
    aps = accepted / max(steps, 1)
    return {"alpha_per_position": alpha, "chain_starts": tried[0], "gamma": gamma,
            "accepted_per_step": aps, "tokens_per_step": aps + 1.0}


# ---------------------------------------------------------------- the run


def _fmt(alpha) -> str:
    return "[" + ", ".join("-" if a is None else f"{a:.3f}" for a in alpha) + "]"


def init_draft(target, aux_ids, seed: int) -> E.Eagle3Draft:
    tc = target.config
    cfg = checkpoints.config_from_dict({
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": tc.hidden_size,
        "num_attention_heads": tc.num_attention_heads, "num_key_value_heads": tc.num_key_value_heads,
        "head_dim": tc.head_dim, "intermediate_size": tc.intermediate_size, "vocab_size": tc.vocab_size,
        "draft_vocab_size": tc.vocab_size, "rms_norm_eps": tc.rms_norm_eps, "hidden_act": tc.hidden_act,
        "rope_parameters": dict(tc.rope_parameters), "max_position_embeddings": tc.max_position_embeddings,
        "tie_word_embeddings": True, "num_hidden_layers": 1, "target_hidden_size": tc.hidden_size})
    torch.manual_seed(seed)
    draft = E.Eagle3Draft(cfg)
    for name, p in draft.named_parameters():   # HF's init: N(0, 0.02) linears, ones for norms
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.02)
    with torch.no_grad():   # the head is the target's: start from the norm it was trained behind
        draft.norm.weight.copy_(target.model.norm.weight)
    W = target.get_output_embeddings().weight.detach()
    draft.embed_weight = draft.head = W
    draft.aux_ids = tuple(aux_ids)
    return draft


def lr_at(step: int, planned: int, args) -> float:
    """Linear warm-up, then cosine to 0.1 x lr."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(planned - args.warmup, 1)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def order_for(epoch: int, n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    add_distillation_args(ap)
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--ttt", type=int, default=4, help="training-time-test steps (draft positions trained)")
    ap.add_argument("--ploss-decay", type=float, default=0.8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=0, help="exact number of steps (default: epochs, cut to the budget)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--grad-clip", type=float, default=0.5)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--bf16", type=int, default=-1, help="CPU bf16 autocast: 1/0 (default: when the CPU has AMX)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=150.0, help="whole run, generation included")
    ap.add_argument("--stop-at", type=int, default=0, help="checkpoint and exit after this step (resume later)")
    ap.add_argument("--ckpt-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=0, help="steps between held-out evaluations (0: per epoch)")
    ap.add_argument("--out", default=str(models.default_eagle3_dir()))
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.bf16 < 0:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
        args.bf16 = int("amx_bf16" in flags)
    args.bf16 = bool(args.bf16)

    tdir = models.default_target_dir(args.workspace)
    target = models.load_model(tdir, "cpu", torch.float32)
    tok = models.load_tokenizer_from(tdir)
    for p in target.parameters():
        p.requires_grad = False
    aux_ids = E.default_aux_layer_ids(target.config.num_hidden_layers)
    log(f"aux layers {aux_ids}")
    # the target's continuations: train_draft.py's cache, shared
    d = distillation(target, tok, tdir, args)
    code, chat, train_p, eval_code, eval_chat, code_train = d.code, d.chat, d.train_p, d.eval_code, d.eval_chat, d.code_train
    t_gen, gen_cost = d.t_gen, d.gen_cost

    def seqs_of(prompts, cs):
        return [{"ids": p.ids + c["cont"].tolist(), "P": len(p.ids)} for p, c in zip(prompts, cs)
                if len(c["cont"]) >= 2]

    train_s = seqs_of(train_p, d.train_c) + seqs_of(code_train * args.code_samples, d.sampled)
    ec_s = seqs_of(eval_code, d.eval_code_c)
    ch_s = seqs_of(eval_chat, d.eval_chat_c)
    fdir = subdir("train_eagle3", args.workspace) / "features"
    t_feat = target_features(target, train_s + ec_s + ch_s, aux_ids, fdir)
    ledger = fdir / "timing.json"
    feat_cost = json.loads(ledger.read_text())["seconds"] if ledger.is_file() else 0.0
    if t_feat > 0:
        feat_cost += t_feat
        ledger.write_text(json.dumps({"seconds": round(feat_cost, 1)}))
    positions = sum(len(s["ids"]) - 1 - s["P"] for s in train_s)
    log(f"{len(train_s)} training sequences, {positions} scored positions per TTT step")

    W = target.get_output_embeddings().weight.detach()
    W16 = W.to(torch.bfloat16) if args.bf16 else W
    draft = init_draft(target, aux_ids, args.seed)
    params = [p for p in draft.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    per_epoch = math.ceil(len(train_s) / args.batch)

    # one run directory per recipe: a rerun of the same command resumes, another recipe starts afresh
    recipe_args = {k: v for k, v in vars(args).items() if k != "stop_at"}
    sig = _sig(recipe_args | {"out": None, "steps": None, "budget_min": None, "workspace": None, "threads": None,
                              "ckpt_every": None, "eval_every": None, "eval_chat": None},
               len(train_s), positions)
    run_dir = subdir("train_eagle3", args.workspace) / "runs" / sig
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "ckpt.pt"
    state = {"step": 0, "planned": args.steps or args.epochs * per_epoch, "history": [], "evals": [],
             "train_s": 0.0, "runs": 0}
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        draft.load_state_dict(saved["model"], strict=False)
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        if args.steps and args.steps != state["planned"]:   # a new plan: the cosine continues toward it
            state.setdefault("plan_changes", []).append({"at_step": state["step"], "from": state["planned"],
                                                         "to": args.steps})
            state["planned"] = args.steps
        log(f"resuming {run_dir.name} at step {state['step']}/{state['planned']}")
    state["runs"] += 1
    eval_sets = {"code": ec_s, "chat": ch_s} if ch_s else {"code": ec_s}

    def evaluate(d, sets=("code", "chat")) -> dict:
        d.eval()
        res = {name: acceptance(d, s, W, args.gamma) for name, s in eval_sets.items() if name in sets}
        d.train()
        return res

    if state["step"] == 0 and not state["evals"]:
        t_e = time.perf_counter()
        ev = evaluate(draft)
        state["eval_s"] = (time.perf_counter() - t_e) * len(ec_s) / max(len(ec_s) + len(ch_s), 1)
        state["evals"].append({"step": 0, **ev})
        log(f"untrained: code accepted/step {ev['code']['accepted_per_step']:.3f} ({state['eval_s']:.0f} s)")
    budget_left = args.budget_min * 60 - gen_cost - feat_cost - state["train_s"] - (time.perf_counter() - t_start - t_gen - t_feat)
    log(f"generation {gen_cost / 60:.1f} min, features {feat_cost / 60:.1f} min; {budget_left / 60:.1f} min left for training")

    def save_ckpt():
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": draft.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
        os.replace(tmp, ckpt)

    draft.train()
    t_run = time.perf_counter()
    steps_this_run = 0
    eval_every = args.eval_every or per_epoch
    while state["step"] < state["planned"]:
        step = state["step"]
        epoch, i = divmod(step, per_epoch)
        idx = order_for(epoch, len(train_s), args.seed)[i * args.batch: (i + 1) * args.batch]
        lr = lr_at(step, state["planned"], args)
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        batch = make_batch([train_s[j] for j in idx], args.ttt)
        loss, losses, accs = train_step(draft, batch, W, W16, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        dt = time.perf_counter() - t0
        state["train_s"] += dt
        state["step"] = step = step + 1
        steps_this_run += 1
        state["history"].append({"step": step, "loss": round(loss.item(), 4), "ploss": [round(x, 4) for x in losses],
                                 "acc": [round(a, 4) for a in accs], "lr": lr, "grad_norm": round(float(gn), 3),
                                 "s": round(dt, 2)})
        if steps_this_run == 10 and not args.steps and state["runs"] == 1:
            # fit the schedule to the budget once, early; steps inside the warm-up do not depend on it
            per_step = (time.perf_counter() - t_run) / 10
            n_evals = max(state["planned"] // eval_every, 1)
            afford = int((budget_left - 180 - n_evals * state.get("eval_s", 60)) / per_step)
            if afford < state["planned"]:
                log(f"{per_step:.1f} s/step: {state['planned']} steps do not fit the budget, training {afford}")
                state["planned"] = max(afford, 3)
        if step % 5 == 0 or step == state["planned"] or steps_this_run <= 3:
            el = state["train_s"] / step
            log(f"step {step}/{state['planned']} loss {loss.item():.3f} acc {' '.join(f'{a:.2f}' for a in accs)} "
                f"lr {lr:.2e} {dt:.1f} s/step, ~{(state['planned'] - step) * el / 60:.0f} min left")
        if step % eval_every == 0 and step < state["planned"]:
            t_e = time.perf_counter()
            ev = evaluate(draft, ("code",))   # chat only at the start and the end: time
            state["eval_s"] = time.perf_counter() - t_e
            state["evals"].append({"step": step, **ev})
            log(f"step {step}: held-out code alpha {_fmt(ev['code']['alpha_per_position'])}, "
                f"accepted/step {ev['code']['accepted_per_step']:.3f}")
        if step % args.ckpt_every == 0 or step == state["planned"]:
            save_ckpt()
        if step == args.stop_at:
            save_ckpt()
            log(f"stopped at step {step} (--stop-at); rerun to continue")
            return
    save_ckpt()
    draft.eval()

    # commit: fc + layer + norm in bf16, SpecForge names; evaluate what was written, loaded as users load it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    trained = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in draft.trainable_state().items()}
    save_file(trained, str(out / E.WEIGHTS_FILE), metadata={"format": "pt"})
    tc = target.config
    cfg = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": tc.hidden_size,
           "num_attention_heads": tc.num_attention_heads, "num_key_value_heads": tc.num_key_value_heads,
           "head_dim": tc.head_dim, "intermediate_size": tc.intermediate_size, "num_hidden_layers": 1,
           "vocab_size": tc.vocab_size, "draft_vocab_size": tc.vocab_size, "target_hidden_size": tc.hidden_size,
           "rms_norm_eps": tc.rms_norm_eps, "hidden_act": tc.hidden_act,
           "rope_parameters": dict(tc.rope_parameters), "max_position_embeddings": tc.max_position_embeddings,
           "tie_word_embeddings": True, "norm_output": True, "torch_dtype": "bfloat16"}
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    committed = E.build_default_eagle3(target, out)
    t_e = time.perf_counter()
    final = {name: acceptance(committed, s, W, args.gamma) for name, s in eval_sets.items()}
    log(f"held-out (committed bf16 weights): code alpha {_fmt(final['code']['alpha_per_position'])}, "
        f"accepted/step {final['code']['accepted_per_step']:.3f}, tokens/step {final['code']['tokens_per_step']:.3f}"
        + (f"; chat accepted/step {final['chat']['accepted_per_step']:.3f}" if "chat" in final else ""))
    eval_final_s = time.perf_counter() - t_e

    hist = state["history"]
    recipe = {
        "draft": models.DEFAULT_EAGLE3, "kind": "EAGLE-3 head (1 decoder layer)",
        "target": models.DEFAULT_TARGET, "target_source": models.SMOLLM2_PIP,
        "aux_layers": {"hf_hidden_state_indices": list(aux_ids),
                       "meaning": "outputs of target layers 1, 14, 26 (= inputs of layers 2, 15, 27): EAGLE-3's "
                                  "default in SGLang, vLLM, SpecForge and speculators; not written into config.json, "
                                  "so every engine falls back to that same default"},
        "init": "fc and the layer's linears N(0, 0.02), norms 1, final norm = the target's final norm; embedding "
                "and lm_head = the target's tied embedding (frozen, shared, not committed); draft vocabulary = the "
                "target's 49,152 ids (d2t all 0, t2d all True)",
        "committed": {"file": E.WEIGHTS_FILE, "dtype": "bfloat16", "sha256": sha256_file(out / E.WEIGHTS_FILE),
                      "tensors": len(trained), "parameters": sum(v.numel() for v in trained.values()),
                      "bytes": (out / E.WEIGHTS_FILE).stat().st_size},
        "data": {
            "train": {"code.jsonl": {"rows": len(code_train), "sha256": sha256_file(code),
                                     "continuations_per_row": f"1 greedy + {args.code_samples} sampled at "
                                                              f"temperature {args.sample_temperature}"},
                      "chat.jsonl.gz": {"rows": len(train_p) - len(code_train), "sha256": sha256_file(chat),
                                        "first_user_turn_only": True, "continuations_per_row": "1 greedy"}},
            "split": "rows with vtcore.split.is_heldout(i) False; held-out rows unseen",
            "sequences": len(train_s), "scored_positions_per_ttt_step": positions,
            "continuations": f"the target's own (max {args.max_new_tokens} new tokens, EOS kept), cached by "
                             "scripts/train_draft.py's target_continuations (shared cache)",
            "features": "target run once per sequence, teacher forced (fp32): aux states stored bf16, final hidden fp32",
        },
        "objective": {"ttt_steps": args.ttt, "step_weights": f"{args.ploss_decay}^k (SpecForge ploss_decay)",
                      "loss": "per step: cross-entropy to the target's full next-token distribution (softmax of its "
                              "logits) at the predicted position, mean over scored positions",
                      "scored": "continuation tokens the draft proposes at inference (from the 2nd generated token)"},
        "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.95], "weight_decay": 0.0,
                      "grad_clip": args.grad_clip, "warmup_steps": args.warmup,
                      "schedule": "linear warm-up, then cosine to 0.1 x lr", "batch_sequences": args.batch,
                      "precision": "CPU bf16 autocast (AMX), fp32 master weights and loss" if args.bf16 else "fp32"},
        "seed": args.seed, "steps": state["step"], "epochs": round(state["step"] / per_epoch, 2),
        "plan_changes": state.get("plan_changes", []),
        "reproduce": f"python scripts/train_eagle3.py --seed {args.seed} --steps {state['step']} --chat-prompts "
                     f"{args.chat_prompts} --code-samples {args.code_samples} --batch {args.batch} --ttt {args.ttt} "
                     f"--lr {args.lr} --warmup {args.warmup} --bf16 {int(args.bf16)} --threads {args.threads}"
                     + (" (this run changed its plan when resumed: see plan_changes; run each plan with "
                        "--steps <from> --stop-at <at_step>, then the next)" if state.get("plan_changes") else ""),
        "time_s": {"generation": round(gen_cost, 1), "features": round(feat_cost, 1),
                   "training": round(state["train_s"], 1), "final_eval": round(eval_final_s, 1),
                   "this_run": round(time.perf_counter() - t_start, 1),
                   "total": round(gen_cost + feat_cost + state["train_s"] + eval_final_s
                                  + sum(1 for _ in state["evals"]) * state.get("eval_s", 0), 1),
                   "runs": state["runs"]},
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "amx_bf16": args.bf16},
        "heldout": {
            "code_rows": len(ec_s), "chat_rows": len(ch_s), "gamma": args.gamma,
            "metric": "greedy chain drafting simulated exactly (teacher-forced TTT steps; with greedy decoding an "
                      "accepted prefix is the target's own tokens): alpha_per_position[j-1] = share of chain starts "
                      "(every committed position of the target's greedy continuation) whose draft step j equals the "
                      "target's greedy token given steps 1..j-1 were accepted; accepted_per_step = accepted draft "
                      "tokens per target step walking each continuation at gamma 4; tokens_per_step = that + 1",
            "untrained": state["evals"][0] if state["evals"] else None,
            "trained": final,
            "during_training": [{"step": e["step"], "code_accepted_per_step": round(e["code"]["accepted_per_step"], 4)}
                                for e in state["evals"]],
        },
        "history": hist[:: max(1, len(hist) // 50)] + ([hist[-1]] if hist else []),
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    log(f"wrote {out / E.WEIGHTS_FILE}, config.json and recipe.json")
    print(json.dumps({"heldout": final, "steps": state["step"]}, indent=1))


if __name__ == "__main__":
    main()
