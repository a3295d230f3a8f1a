"""Train the default draft: a 2-layer SmolLM2-135M-Instruct, distilled from the target itself.

    python scripts/train_draft.py                 # ~1 h on one CPU thread; writes the weights
    python scripts/train_draft.py --steps 120     # reproduce a recorded run exactly

The draft is the target's first two decoder layers + its final norm, with the target's tied
embedding/head frozen and shared (so only the layers are trained and committed). Training data
is the target's own greedy continuations of sample prompts (self-distillation): the user turns
of samples/code.jsonl and the first user turn of samples/chat.jsonl.gz, rendered with the
target's chat template; only rows that are not held out (vtcore.split) are trained on, so the
benchmark's prompts stay unseen. The loss mixes cross-entropy on the target's greedy token with
cross-entropy to the target's top-k distribution at the same position.

The target's continuations (and their top-k logits) are cached in the workspace, so reruns
skip generation. The recipe, timing and held-out top-1 agreement with the target go into
weights/smollm2-135m-2l-draft/recipe.json.
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
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from vtcore import models  # noqa: E402
from vtcore.bench import load_prompts  # noqa: E402
from vtcore.tokens import sha256_file  # noqa: E402
from vtcore.workspace import repo_root, subdir  # noqa: E402

DRAFT_LAYERS = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the target's continuations


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def cont_path(cache_dir: Path, tag, max_new: int, topk: int, prompt, sample: int = -1, temperature: float = 1.0,
              seed: int = 0) -> Path:
    extra = () if sample < 0 else ("sample", sample, temperature, seed)
    return cache_dir / f"{_key(tag, max_new, topk, prompt.ids, *extra)}.pt"


@torch.inference_mode()
def target_continuations(target, tok, prompts, max_new: int, topk: int, batch: int, cache_dir: Path,
                         tag, sample: int = -1, temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """Continuations of every prompt (EOS included if reached) with the target's top-k logits
    at each position, generated in left-padded batches, cached one file per prompt.
    sample < 0: greedy; sample = j >= 0: the j-th sampled continuation at `temperature`.
    Each batch's generation time goes to cache_dir/timing.jsonl, so a rerun that finds the
    continuations cached still knows what they cost."""
    cache_dir.mkdir(parents=True, exist_ok=True)

    def path(p):
        return cont_path(cache_dir, tag, max_new, topk, p, sample, temperature, seed)

    out: dict[int, dict] = {}
    todo = []
    for i, p in enumerate(prompts):
        f = path(p)
        if f.is_file():
            out[i] = torch.load(f, weights_only=True)
        else:
            todo.append(i)
    kind = "greedy" if sample < 0 else f"sampled #{sample}"
    log(f"{kind} continuations: {len(prompts) - len(todo)} cached, {len(todo)} to generate")
    todo.sort(key=lambda i: len(prompts[i].ids))  # similar lengths per batch: less padding
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    t0 = time.perf_counter()
    for b in range(0, len(todo), batch):
        tb = time.perf_counter()
        idx = todo[b: b + batch]
        L = max(len(prompts[i].ids) for i in idx)
        ids = torch.tensor([[pad] * (L - len(prompts[i].ids)) + prompts[i].ids for i in idx])
        mask = torch.tensor([[0] * (L - len(prompts[i].ids)) + [1] * len(prompts[i].ids) for i in idx])
        kw = dict(do_sample=False) if sample < 0 else dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        if sample >= 0:
            torch.manual_seed(seed * 1000003 + sample * 1009 + b)   # reproducible per batch
        gen = target.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=pad, eos_token_id=tok.eos_token_id, **kw)
        new = gen.sequences[:, L:]
        logits = torch.stack(gen.logits, 1).float()          # [B, T, V], before temperature
        top_v, top_i = logits.topk(topk, -1)
        keys = []
        for r, i in enumerate(idx):
            cont = new[r].tolist()
            if tok.eos_token_id in cont:
                cont = cont[: cont.index(tok.eos_token_id) + 1]
            n = len(cont)
            item = {"cont": torch.tensor(cont, dtype=torch.long), "top_i": top_i[r, :n].to(torch.int32).clone(),
                    "top_v": top_v[r, :n].clone()}
            f = path(prompts[i])
            torch.save(item, f.with_suffix(".tmp"))
            os.replace(f.with_suffix(".tmp"), f)
            out[i] = item
            keys.append(f.stem)
        with open(cache_dir / "timing.jsonl", "a") as fh:
            fh.write(json.dumps({"seconds": round(time.perf_counter() - tb, 2), "keys": keys}) + "\n")
        done = min(b + batch, len(todo))
        rate = done / (time.perf_counter() - t0)
        log(f"generated {done}/{len(todo)} ({rate * 60:.1f} prompts/min, ~{(len(todo) - done) / rate / 60:.1f} min left)")
    return [out[i] for i in range(len(prompts))]


def generation_seconds(cache_dir: Path, keys: set[str]) -> float:
    """What generating these cached continuations cost, from the timing ledger (a batch counts
    in proportion to how many of its continuations are used)."""
    total = 0.0
    ledger = cache_dir / "timing.jsonl"
    if ledger.is_file():
        for line in ledger.read_text().splitlines():
            rec = json.loads(line)
            used = sum(1 for k in rec["keys"] if k in keys)
            total += rec["seconds"] * used / max(len(rec["keys"]), 1)
    return total


@dataclass
class Distillation:
    """The sample prompts and the target's own continuations of them (cached in the workspace):
    what this script and train_eagle3.py train and evaluate on."""

    code: Path
    chat: Path
    train_p: list                   # non-held-out code and chat prompts (greedy continuations)
    eval_code: list                 # held-out prompts
    eval_chat: list
    code_train: list                # the code prompts of train_p (their sampled continuations too)
    train_c: list                   # greedy continuations of train_p
    eval_code_c: list
    eval_chat_c: list
    sampled: list                   # args.code_samples sampled continuations of code_train, sample by sample
    t_gen: float                    # this run's generation wall time (0 when all cached)
    gen_cost: float                 # what generating every continuation used cost (the cache's ledger)


def add_distillation_args(ap: argparse.ArgumentParser) -> None:
    """The flags `distillation` reads (with --seed and --workspace, which each script has)."""
    ap.add_argument("--code-prompts", type=int, default=None, help="non-held-out code rows used (default: all)")
    ap.add_argument("--chat-prompts", type=int, default=400, help="non-held-out chat rows used for training")
    ap.add_argument("--eval-chat", type=int, default=100, help="held-out chat rows evaluated (0: none)")
    ap.add_argument("--code-samples", type=int, default=2,
                    help="extra sampled continuations per code training prompt (more code to learn from)")
    ap.add_argument("--sample-temperature", type=float, default=0.7)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--topk", type=int, default=32, help="target logits kept per position (part of the cache key)")
    ap.add_argument("--gen-batch", type=int, default=16)


def distillation(target, tok, tdir: Path, args) -> Distillation:
    code, chat = repo_root() / "samples" / "code.jsonl", repo_root() / "samples" / "chat.jsonl.gz"
    train_p = (load_prompts(code, tok, heldout=False, limit=args.code_prompts)
               + load_prompts(chat, tok, heldout=False, limit=args.chat_prompts))
    eval_code = load_prompts(code, tok, heldout=True, limit=args.code_prompts)
    eval_chat = load_prompts(chat, tok, heldout=True, limit=args.eval_chat) if args.eval_chat else []
    log(f"prompts: {len(train_p)} train, {len(eval_code)} + {len(eval_chat)} held-out")

    tag = json.loads((tdir / models.CONVERSION_MARKER).read_text())["source_bytes"]
    cache = subdir("train_draft", args.workspace) / "continuations"
    t_gen = time.perf_counter()
    all_p = train_p + eval_code + eval_chat
    conts = target_continuations(target, tok, all_p, args.max_new_tokens, args.topk, args.gen_batch, cache, tag)
    code_train = [p for p in train_p if p.domain == "code"]
    sampled = []
    for j in range(args.code_samples):
        sampled += target_continuations(target, tok, code_train, args.max_new_tokens, args.topk, args.gen_batch,
                                        cache, tag, sample=j, temperature=args.sample_temperature, seed=args.seed)
    t_gen = time.perf_counter() - t_gen
    used = {cont_path(cache, tag, args.max_new_tokens, args.topk, p).stem for p in all_p}
    used |= {cont_path(cache, tag, args.max_new_tokens, args.topk, p, j, args.sample_temperature, args.seed).stem
             for j in range(args.code_samples) for p in code_train}
    n_tr, n_ec = len(train_p), len(eval_code)
    return Distillation(code, chat, train_p, eval_code, eval_chat, code_train, conts[:n_tr], conts[n_tr: n_tr + n_ec],
                        conts[n_tr + n_ec:], sampled, t_gen, generation_seconds(cache, used))


# ---------------------------------------------------------------- the draft


def init_draft(target):
    """The target's first DRAFT_LAYERS layers + final norm; embedding/head shared and frozen."""
    from transformers import AutoModelForCausalLM

    cfg = target.config.__class__.from_dict(target.config.to_dict())
    cfg.num_hidden_layers = DRAFT_LAYERS
    draft = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    state = {k: v for k, v in target.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < DRAFT_LAYERS}
    draft.load_state_dict(state, strict=False)
    draft.set_input_embeddings(target.get_input_embeddings())
    draft.get_output_embeddings().weight = target.get_output_embeddings().weight
    for name, p in draft.named_parameters():
        p.requires_grad = name.startswith("model.layers.") or name.startswith("model.norm.")
    return draft


def trained_state(draft) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.bfloat16).contiguous() for k, v in draft.state_dict().items()
            if k.startswith("model.layers.") or k.startswith("model.norm.")}


def _batch(prompts, conts, idx):
    """Right-padded inputs prompt + cont[:-1]; loss rows: the positions predicting cont."""
    seqs = [prompts[i].ids + conts[i]["cont"].tolist()[:-1] for i in idx]
    L = max(map(len, seqs))
    ids = torch.zeros(len(idx), L, dtype=torch.long)
    mask = torch.zeros(len(idx), L, dtype=torch.long)
    rows, cols = [], []
    for r, (i, s) in enumerate(zip(idx, seqs)):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        P, n = len(prompts[i].ids), len(conts[i]["cont"])
        rows += [r] * n
        cols += list(range(P - 1, P - 1 + n))
    labels = torch.cat([conts[i]["top_i"][:, 0] for i in idx]).long()   # the target's argmax at each position
    top_i = torch.cat([conts[i]["top_i"] for i in idx]).long()
    top_v = torch.cat([conts[i]["top_v"] for i in idx])
    return ids, mask, torch.tensor(rows), torch.tensor(cols), labels, top_i, top_v


def _hidden(draft, ids, mask):
    return draft.model(input_ids=ids, attention_mask=mask).last_hidden_state


@torch.inference_mode()
def agreement(draft, prompts, conts, gamma: int = 4, batch: int = 8) -> dict:
    """Per-position top-1 agreement of the draft with the target on the target's greedy
    continuations (teacher forced), and the greedy speculative decoding those agreements imply
    exactly: with greedy decoding the draft always sees the target's own prefix."""
    W = draft.get_output_embeddings().weight
    agree, total, tokens, steps = 0, 0, 0, 0
    for b in range(0, len(prompts), batch):
        idx = list(range(b, min(b + batch, len(prompts))))
        ids, mask, rows, cols, labels, _, _ = _batch(prompts, conts, idx)
        pred = (_hidden(draft, ids, mask)[rows, cols] @ W.t()).argmax(-1)
        ok = (pred == labels).tolist()
        agree += sum(ok)
        total += len(ok)
        start = 0
        for i in idx:  # simulate greedy steps over each continuation
            seq = ok[start: start + len(conts[i]["cont"])]
            start += len(seq)
            pos = 0
            while pos < len(seq):
                n = 0
                while n < gamma and pos + n < len(seq) - 1 and seq[pos + n]:
                    n += 1
                pos += n + 1
                tokens += n + 1
                steps += 1
    from vtcore.speculative import alpha_from_tokens_per_step

    tps = tokens / max(steps, 1)
    return {"top1_agreement": agree / max(total, 1), "positions": total, "gamma": gamma,
            "tokens_per_step": tps, "implied_alpha": alpha_from_tokens_per_step(tps, gamma)}


def evaluate(draft, sets: dict) -> dict:
    res = {name: agreement(draft, p, c) for name, (p, c) in sets.items()}
    tot = sum(r["positions"] for r in res.values())
    res["all"] = {"top1_agreement": sum(r["top1_agreement"] * r["positions"] for r in res.values()) / tot,
                  "positions": tot}
    return res


def train(draft, prompts, conts, args, eval_sets) -> dict:
    g = torch.Generator().manual_seed(args.seed)
    params = [p for p in draft.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    W = draft.get_output_embeddings().weight
    per_epoch = math.ceil(len(prompts) / args.batch)
    planned = args.steps or args.epochs * per_epoch
    history, t0, step, order = [], time.perf_counter(), 0, []
    budget = args.train_budget_s
    draft.train()
    while step < planned:
        if not order:
            order = torch.randperm(len(prompts), generator=g).tolist()
        idx, order = order[: args.batch], order[args.batch:]
        # linear warm-up, then cosine to 0.1 x lr; steps inside the warm-up do not depend on
        # `planned`, so cutting the plan to the budget at step 3 leaves a run reproducible by --steps
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        else:
            t = (step - args.warmup) / max(planned - args.warmup, 1)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        for group in opt.param_groups:
            group["lr"] = lr
        ids, mask, rows, cols, labels, top_i, top_v = _batch(prompts, conts, idx)
        logq = torch.log_softmax(_hidden(draft, ids, mask)[rows, cols] @ W.t(), -1)
        hard = -logq.gather(1, labels[:, None]).mean()
        soft = -(torch.softmax(top_v, -1) * logq.gather(1, top_i)).sum(-1).mean()
        loss = args.hard_weight * hard + (1 - args.hard_weight) * soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step == 3 and not args.steps:  # fit the schedule to the time budget once, early
            per_step = (time.perf_counter() - t0) / 3
            # an evaluation per epoch, and ~2 min for the final evaluation and saving
            afford = int((budget - 120) / (per_step + args.eval_s / per_epoch))
            if afford < planned:
                log(f"{per_step:.1f} s/step: {planned} steps do not fit the budget, training {afford}")
                planned = max(afford, 3)
        history.append({"step": step, "loss": round(loss.item(), 4), "hard": round(hard.item(), 4),
                        "soft": round(soft.item(), 4), "lr": lr})
        if step % 10 == 0 or step == planned:
            el = time.perf_counter() - t0
            log(f"step {step}/{planned} loss {loss.item():.3f} (hard {hard.item():.3f}) "
                f"{el / step:.1f} s/step, ~{(planned - step) * el / step / 60:.1f} min left")
        if step % per_epoch == 0 and step < planned:
            draft.eval()
            ev = evaluate(draft, eval_sets)
            log(f"epoch {step // per_epoch}: held-out agreement {ev['all']['top1_agreement']:.3f}")
            history[-1]["heldout_agreement"] = ev["all"]["top1_agreement"]
            draft.train()
    draft.eval()
    return {"steps": step, "epochs": step / per_epoch, "seconds": time.perf_counter() - t0,
            "history": history[:: max(1, len(history) // 50)] + ([history[-1]] if history else [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    add_distillation_args(ap)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=0, help="exact number of steps (default: epochs, cut to the budget)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--hard-weight", type=float, default=0.5, help="weight of the greedy-token CE (rest: top-k CE)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=55.0, help="whole run, generation included")
    ap.add_argument("--out", default=str(models.default_draft_dir()))
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    args.t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tdir = models.default_target_dir(args.workspace)
    target = models.load_model(tdir, "cpu", torch.float32)
    tok = models.load_tokenizer_from(tdir)
    for p in target.parameters():
        p.requires_grad = False
    d = distillation(target, tok, tdir, args)
    code, chat, eval_code, eval_chat, code_train = d.code, d.chat, d.eval_code, d.eval_chat, d.code_train
    t_gen, gen_cost, ec_c, ch_c = d.t_gen, d.gen_cost, d.eval_code_c, d.eval_chat_c
    n_greedy = len(d.train_p)
    train_p = d.train_p + code_train * args.code_samples
    train_c = d.train_c + d.sampled
    eval_sets = {"code": (eval_code, ec_c), "chat": (eval_chat, ch_c)}

    draft = init_draft(target)
    t_eval = time.perf_counter()
    before = evaluate(draft, eval_sets)
    args.eval_s = time.perf_counter() - t_eval
    log(f"untrained held-out agreement: {before['all']['top1_agreement']:.3f}")
    # the budget covers generation too, cached or not: train for what is left of it
    args.train_budget_s = args.budget_min * 60 - gen_cost - (time.perf_counter() - args.t_start - t_gen)
    log(f"generation cost {gen_cost / 60:.1f} min (this run {t_gen / 60:.1f}); "
        f"{args.train_budget_s / 60:.1f} min left for training")
    run = train(draft, train_p, train_c, args, eval_sets)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    save_file(trained_state(draft), str(out / "layers.safetensors"), metadata={"format": "pt"})
    # evaluate what was committed: bf16 layers loaded the way load_default_pair loads them
    committed = models.build_default_draft(target, out)
    after = evaluate(committed, eval_sets)
    log(f"held-out agreement: {before['all']['top1_agreement']:.3f} -> {after['all']['top1_agreement']:.3f}")

    def sha(p):
        return sha256_file(p)

    recipe = {
        "draft": models.DEFAULT_DRAFT, "draft_layers": DRAFT_LAYERS,
        "target": models.DEFAULT_TARGET, "target_source": models.SMOLLM2_PIP,
        "init": f"target layers 0..{DRAFT_LAYERS - 1} + final norm; tied embedding/head shared with the target, frozen",
        "committed": {"file": "layers.safetensors", "dtype": "bfloat16", "sha256": sha(out / "layers.safetensors"),
                      "tensors": len(trained_state(draft))},
        "data": {
            "train": {"code.jsonl": {"rows": len(code_train), "sha256": sha(code),
                                     "continuations_per_row": f"1 greedy + {args.code_samples} sampled at "
                                                              f"temperature {args.sample_temperature}"},
                      "chat.jsonl.gz": {"rows": n_greedy - len(code_train), "sha256": sha(chat),
                                        "first_user_turn_only": True, "continuations_per_row": "1 greedy"}},
            "split": "rows with vtcore.split.is_heldout(i) False (i = row index in file order); held-out rows unseen",
            "targets": f"the target's continuations (max {args.max_new_tokens} new tokens, EOS kept) and its "
                       f"top-{args.topk} logits at every position, batched generation (left padding); labels are "
                       "the target's argmax at each position",
            "train_positions": sum(len(c["cont"]) for c in train_c),
        },
        "loss": f"{args.hard_weight} * CE(greedy token) + {1 - args.hard_weight} * CE(target top-{args.topk} softmax)",
        "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.95], "weight_decay": 0.0, "grad_clip": 1.0,
                      "warmup_steps": args.warmup, "schedule": "linear warm-up, then cosine to 0.1 x lr", "batch_sequences": args.batch},
        "seed": args.seed, "steps": run["steps"], "epochs": round(run["epochs"], 2),
        "reproduce": f"python scripts/train_draft.py --seed {args.seed} --steps {run['steps']} --chat-prompts "
                     f"{args.chat_prompts} --code-samples {args.code_samples} --sample-temperature "
                     f"{args.sample_temperature} --lr {args.lr} --batch {args.batch} --hard-weight {args.hard_weight} "
                     f"--threads {args.threads}",
        "time_s": {"generation": round(gen_cost, 1), "generation_this_run": round(t_gen, 1),
                   "training": round(run["seconds"], 1),
                   "total_this_run": round(time.perf_counter() - args.t_start, 1),
                   "total_with_generation": round(time.perf_counter() - args.t_start - t_gen + gen_cost, 1)},
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__},
        "heldout": {"code_rows": len(eval_code), "chat_rows": len(eval_chat),
                    "metric": "per-position top-1 agreement with the target on its greedy continuations "
                              "(teacher forced); tokens_per_step: greedy speculative decoding simulated exactly "
                              "from those agreements at gamma 4; implied_alpha: the per-token acceptance "
                              "that tokens_per_step implies",
                    "untrained": before, "trained": after},
        "history": run["history"],
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=1) + "\n")
    log(f"wrote {out / 'layers.safetensors'} and recipe.json")


if __name__ == "__main__":
    main()
