"""Speculative decoding, lossless, with an optionally trimmed draft head. The draft is a standalone
draft LM (StandaloneProposer) or an EAGLE-3 head reading the target's hidden states
(Eagle3Proposer, vtcore.eagle3).

One step: the draft proposes g <= gamma tokens one at a time (its own KV cache), the target
scores all of them in one forward pass, the longest acceptable prefix is kept plus one token
from the target (the correction, or a bonus token when everything was accepted), and both
caches are cropped back to the committed tokens.

- greedy: a draft token is accepted while it equals the target's argmax, so the output is the
  target's greedy output token for token.
- sample (Leviathan et al. 2023, Chen et al. 2023): accept d with probability min(1, p(d)/q(d));
  on rejection sample from norm(max(0, p - q)); after g acceptances sample from p. The output
  distribution is exactly the target's.

A trimmed draft keeps k target ids (sorted ascending). Its head is a contiguous [k, H] copy of
the kept rows, so the draft computes h @ W[kept].T: a genuinely smaller matmul, not full
logits masked afterwards. Draft probabilities live on the kept ids and are 0 elsewhere, which
the acceptance rule handles exactly (a token the draft cannot propose is still reachable
through the residual distribution).

Cache invariant: each model's KV cache holds a prefix of the committed sequence; the tokens
after it are fed on that model's next forward. Rolling back is a crop to the committed length.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Callable

import torch

from vtcore import eagle3, models
from vtcore.checkpoints import read_trimmed_draft
from vtcore.errors import VTError
from vtcore.formats import read_config, read_token_ids


@dataclass
class SpecConfig:
    gamma: int = 4                 # draft tokens proposed per target step
    max_new_tokens: int = 128
    mode: str = "greedy"           # "greedy" | "sample"
    temperature: float = 1.0       # sample mode only
    seed: int = 0                  # sample mode: torch.Generator seed
    eos_ids: tuple[int, ...] = ()  # generation stops after the first of these

    def __post_init__(self):
        if self.mode not in ("greedy", "sample"):
            raise VTError(f"mode must be 'greedy' or 'sample', got {self.mode!r}")
        if self.gamma < 1:
            raise VTError(f"gamma must be >= 1, got {self.gamma}")
        if self.max_new_tokens < 1:
            raise VTError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.mode == "sample" and not self.temperature > 0:
            raise VTError(f"temperature must be > 0 in sample mode, got {self.temperature}")


# ---------------------------------------------------------------- the draft and its head


@dataclass
class Draft:
    model: Any                     # a HF causal LM; only its decoder runs, the head is ours
    head: torch.Tensor             # [n, H], contiguous: row i scores target id ids[i]
    kept: torch.Tensor | None      # int64[n] target ids ascending; None: row i is id i
    bias: torch.Tensor | None = None
    name: str = ""

    @property
    def k(self) -> int:
        return int(self.head.shape[0])

    @property
    def trimmed(self) -> bool:
        return self.kept is not None


def make_draft(model, kept_ids=None, vocab_size: int | None = None, name: str = "") -> Draft:
    """A Draft over `model`. With `kept_ids` (target ids, any order) the head is a contiguous
    copy of those rows of the model's output embedding, sorted by id. `vocab_size` is the
    target's logit width: full-vocabulary rows beyond it (padding) are dropped."""
    lm_head = model.get_output_embeddings()
    W = lm_head.weight
    b = getattr(lm_head, "bias", None)
    V = int(W.shape[0])
    if kept_ids is None:
        if vocab_size is not None and V > vocab_size:
            kept_ids = torch.arange(vocab_size)
        else:
            return Draft(model, W.detach(), None, None if b is None else b.detach(), name)
    kept = torch.as_tensor(kept_ids, dtype=torch.long).flatten().unique(sorted=True)
    if kept.numel() == 0:
        raise VTError("the token map keeps no ids")
    if int(kept.min()) < 0 or int(kept.max()) >= V:
        raise VTError(f"token id {int(kept.max())} is outside the draft's vocabulary ({V} rows, ids 0..{V - 1}): "
                      "the token map belongs to another tokenizer")
    idx = kept.to(W.device)
    head = W.detach().index_select(0, idx).contiguous()
    bias = None if b is None else b.detach().index_select(0, idx).contiguous()
    return Draft(model, head, idx, bias, name)


def load_draft(path_or_id: str | os.PathLike, device="cpu", dtype=None, token_map=None,
               vocab_size: int | None = None, workspace=None) -> Draft:
    """A Draft from a plain HF causal LM (dir or cached hub id), optionally trimmed by a token
    map (vtcore.formats.read_token_ids), or from a trimmed draft directory (an "hf-draft"
    export: vtcore.checkpoints.read_trimmed_draft)."""
    path = Path(models.resolve_model(path_or_id, workspace))
    cfg = read_config(path)
    if "draft_vocab_size" not in cfg:
        model = models.load_model(path, device, dtype)
        kept = read_token_ids(token_map) if token_map is not None else None
        try:
            return make_draft(model, kept, vocab_size, name=str(path_or_id))
        except VTError as e:
            raise VTError(f"{token_map}: {e}") from None
    if token_map is not None:
        raise VTError(f"{path}: already a trimmed draft (draft_vocab_size={cfg['draft_vocab_size']}); "
                      "do not pass a token map too")
    return _trimmed_draft_model(path, device, dtype or models.model_dtype(device), str(path_or_id))


def _trimmed_draft_model(path: Path, device, dtype, name: str) -> Draft:
    """A causal LM from a trimmed draft directory: the config's model with its full-size input
    embedding, the [N, H] head held by the Draft (the config's full-size lm_head is never used)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    td = read_trimmed_draft(path)
    head, bias = td.weights.pop("lm_head.weight"), td.weights.pop("lm_head.bias", None)
    config = AutoConfig.from_pretrained(str(path))
    config.tie_word_embeddings = False
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(td.weights, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise VTError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.lm_head.weight = torch.nn.Parameter(head.to(dtype), requires_grad=False)
    model = model.to(device).eval()
    bias = None if bias is None else bias.to(device=device, dtype=dtype)
    kept = torch.from_numpy(td.kept).to(device)
    return Draft(model, model.lm_head.weight.detach(), kept, bias, name)


# ---------------------------------------------------------------- timing and stats


class Clock:
    """Interval timing: perf_counter on CPU, CUDA events on GPU (read once, at the end)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000.0 if self.cuda else b - a

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time_ms(self, fn: Callable[[], Any]) -> float:
        """Milliseconds of one fn() call, waiting for the GPU to finish it."""
        a = self.now()
        fn()
        b = self.now()
        self.sync()
        return self.seconds(a, b) * 1e3


@dataclass
class RunStats:
    prompt_tokens: int
    new_tokens: int = 0
    gamma: int = 0
    accepted: list[int] = field(default_factory=list)    # accepted draft tokens, per target step
    drafted: list[int] = field(default_factory=list)     # draft tokens proposed, per target step
    draft_s: list[float] = field(default_factory=list)   # draft time per step (all its forwards)
    head_s: list[float] = field(default_factory=list)    # of which the LM-head matmuls
    target_s: list[float] = field(default_factory=list)  # target time per verify / decode forward
    prefill_s: float = 0.0
    wall_s: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.target_s)

    @property
    def accepted_per_step(self) -> float:
        """Mean draft tokens accepted per target step (0..gamma; the target's own token excluded)."""
        return sum(self.accepted) / max(self.steps, 1)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def overhead_s(self) -> float:
        """Wall time outside the timed forwards and prefill: the loop's own work (sampling or
        argmax, acceptance, cache crops, bookkeeping), which a speed-up model must count too."""
        return max(self.wall_s - self.prefill_s - sum(self.draft_s) - sum(self.target_s), 0.0)


@dataclass
class GenResult:
    tokens: list[int]              # generated ids (prompt excluded), EOS included if hit
    stats: RunStats
    target_cache: Any = None       # the caches as left at the end (tests check rollback)
    draft_cache: Any = None


# ---------------------------------------------------------------- model plumbing


def postprocess_logits(model, logits: torch.Tensor) -> torch.Tensor:
    """Elementwise logit transforms some architectures apply after the head (Cohere, Gemma 2)."""
    cfg = model.config
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits




class _Runner:
    """Forward passes of one model with its cache, the committed sequence fed lazily."""

    def __init__(self, model, aux_ids: tuple[int, ...] | None = None):
        self.model = model
        self.decoder = models.decoder_of(model)
        self.kw = models.cache_kwarg(self.decoder)
        self.cache = models.new_cache(model)
        self.aux_ids = aux_ids    # EAGLE-3: the target layers whose hidden states the draft reads

    @property
    def cached(self) -> int:
        return self.cache.get_seq_length()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states [L, H] of `ids` (shape [1, L]) appended to the cache, and the
        aux-layer states [L, k*Ht] when an EAGLE-3 draft reads them."""
        if self.aux_ids is not None:
            return eagle3.target_forward(self.model, ids[0], self.aux_ids, cache=self.cache)
        out = self.decoder(input_ids=ids, use_cache=True, **{self.kw: self.cache})
        return out.last_hidden_state[0], None

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return self.forward(ids)[0]

    def logits(self, ids: torch.Tensor, last: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Full-vocabulary logits [last, V] of the last `last` positions (the target's head), and
        the aux states of every position fed (EAGLE-3)."""
        h, aux = self.forward(ids)
        return postprocess_logits(self.model, self.model.get_output_embeddings()(h[-last:])).float(), aux


def _sample(probs: torch.Tensor, gen: torch.Generator) -> int:
    return int(torch.multinomial(probs, 1, generator=gen))


def _first_eos(tokens: list[int], eos: tuple[int, ...]) -> int | None:
    for i, t in enumerate(tokens):
        if t in eos:
            return i
    return None


def _prompt_tensor(prompt_ids, device) -> torch.Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.long).flatten()
    if ids.numel() == 0:
        raise VTError("empty prompt")
    return ids.to(device)


# ---------------------------------------------------------------- generation


@torch.inference_mode()
def target_generate(target, prompt_ids, cfg: SpecConfig) -> GenResult:
    """The baseline: the target alone, one token per forward, with its KV cache."""
    device = target.get_output_embeddings().weight.device
    clock = Clock(device)
    seq = _prompt_tensor(prompt_ids, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    stats = RunStats(prompt_tokens=int(seq.numel()), gamma=0)
    tgt = _Runner(target)
    clock.sync()
    t_start = time.perf_counter()
    if seq.numel() > 1:
        a = clock.now()
        tgt.hidden(seq[None, :-1])
        b = clock.now()
        prefill = (a, b)
    out: list[int] = []
    pending = seq[-1:]
    steps = []
    while len(out) < cfg.max_new_tokens:
        a = clock.now()
        logits = tgt.logits(pending[None], 1)[0][0]
        b = clock.now()
        steps.append((a, b))
        if cfg.mode == "greedy":
            tok = int(logits.argmax())
        else:
            tok = _sample(torch.softmax(logits / cfg.temperature, -1), gen)
        out.append(tok)
        if tok in cfg.eos_ids:
            break
        pending = torch.tensor([tok], device=device)
    clock.sync()
    stats.wall_s = time.perf_counter() - t_start
    if seq.numel() > 1:
        stats.prefill_s = clock.seconds(*prefill)
    stats.target_s = [clock.seconds(a, b) for a, b in steps]
    stats.new_tokens = len(out)
    return GenResult(out, stats, tgt.cache, None)


@dataclass
class Proposal:
    """What a draft proposed in one step: g target ids, the head rows they came from, and (in
    sample mode) the draft's distribution over its head rows at each of them, with timings."""

    tokens: torch.Tensor                       # int64[g] target ids
    rows: torch.Tensor                         # int64[g] rows of the draft head
    q: list[torch.Tensor] = field(default_factory=list)   # sample mode: softmax over head rows, per step
    draft_iv: list[tuple] = field(default_factory=list)   # clock intervals of each draft forward
    head_iv: list[tuple] = field(default_factory=list)    # of which the head matmul


def _pick(z: torch.Tensor, greedy: bool, temperature: float, gen: torch.Generator) -> tuple[torch.Tensor, Any]:
    """The draft's choice of head row from its logits, and its distribution in sample mode."""
    if greedy:
        return z.argmax(), None
    q = torch.softmax(z / temperature, -1)
    return torch.multinomial(q, 1, generator=gen)[0], q


class StandaloneProposer:
    """A standalone draft LM proposing a chain of tokens with its own KV cache, which holds a
    prefix of the committed sequence (rolled back to it after each verify)."""

    aux_ids = None

    def __init__(self, draft: Draft):
        self.draft = draft
        self.runner = _Runner(draft.model)
        self.head_t = draft.head.t()
        self.kept = draft.kept

    @property
    def cache(self):
        return self.runner.cache

    def prefill(self, seq: torch.Tensor, n_seq: int, aux: torch.Tensor | None) -> None:
        self.runner.hidden(seq[None, : n_seq - 1])

    def propose(self, seq: torch.Tensor, n_seq: int, g: int, cfg: SpecConfig, gen: torch.Generator,
                clock: Clock) -> Proposal:
        d = self.draft
        prop = Proposal(torch.empty(g, dtype=torch.long, device=seq.device),
                        torch.empty(g, dtype=torch.long, device=seq.device))
        inp = seq[self.runner.cached: n_seq]
        for j in range(g):
            a = clock.now()
            h = self.runner.hidden(inp[None])[-1]
            ha = clock.now()
            z = h @ self.head_t                      # [k]: only the kept rows are computed
            if d.bias is not None:
                z = z + d.bias
            hb = clock.now()
            row, q = _pick(postprocess_logits(d.model, z).float(), cfg.mode == "greedy", cfg.temperature, gen)
            if q is not None:
                prop.q.append(q)
            prop.rows[j], prop.tokens[j] = row, (d.kept[row] if d.kept is not None else row)
            inp = prop.tokens[j: j + 1]
            prop.draft_iv.append((a, clock.now()))
            prop.head_iv.append((ha, hb))
        return prop

    def commit(self, n_seq: int, aux: torch.Tensor | None) -> None:
        """Keep every committed token but the last one (it is fed on the next step)."""
        models.crop_cache(self.runner.cache, n_seq - 1)


class Eagle3Proposer:
    """An EAGLE-3 head (vtcore.eagle3). At position t it reads the target's fused aux states at t
    with the embedding of token t+1 and predicts token t+2. The first step of a round feeds every
    newly committed position with the target's states (which also rewrites the draft's KV cache
    there); later steps feed the draft's own output state. Rolling back crops the draft's cache
    to the positions computed from target states."""

    def __init__(self, draft: eagle3.Eagle3Draft):
        self.draft = draft
        self.cache = eagle3.Eagle3Cache()
        self.aux_ids = tuple(draft.aux_ids)
        self.kept = draft.head_target_ids   # the target id of each head row, ascending
        self.aux: torch.Tensor | None = None   # the target's aux states of positions 0..n_seq-2
        self.from_target = 0                # draft cache positions computed from target states

    def prefill(self, seq: torch.Tensor, n_seq: int, aux: torch.Tensor | None) -> None:
        self.aux = aux
        if n_seq > 2:   # every pair but the last; the first propose feeds that one
            self.draft(seq[1: n_seq - 1], self.draft.fuse(aux[: n_seq - 2]), self.cache)

    def propose(self, seq: torch.Tensor, n_seq: int, g: int, cfg: SpecConfig, gen: torch.Generator,
                clock: Clock) -> Proposal:
        d = self.draft
        if self.aux is None or self.aux.shape[0] < n_seq - 1 or n_seq < 2:
            g = 0   # nothing the target has seen yet to draft from (a one-token prompt)
        prop = Proposal(torch.empty(g, dtype=torch.long, device=seq.device),
                        torch.empty(g, dtype=torch.long, device=seq.device))
        base = self.cache.length
        for j in range(g):
            a = clock.now()
            if j == 0:
                h = d(seq[base + 1: n_seq], d.fuse(self.aux[base: n_seq - 1]), self.cache)[-1:]
                self.from_target = self.cache.length
            else:
                h = d(prop.tokens[j - 1: j], h, self.cache)
            ha = clock.now()
            z = d.logits(h)[0]                     # [n]: only the head's rows are computed
            hb = clock.now()
            row, q = _pick(z.float(), cfg.mode == "greedy", cfg.temperature, gen)
            if q is not None:
                prop.q.append(q)
            prop.rows[j], prop.tokens[j] = row, self.kept[row]
            prop.draft_iv.append((a, clock.now()))
            prop.head_iv.append((ha, hb))
        return prop

    def commit(self, n_seq: int, aux: torch.Tensor | None) -> None:
        """Keep the target's states of the committed positions (the verify fed the uncommitted
        tail and the drafts: the first ones are now committed), and drop the draft's own."""
        have = 0 if self.aux is None else self.aux.shape[0]
        new = aux[: n_seq - 1 - have]
        self.aux = new if self.aux is None else torch.cat([self.aux, new])
        self.cache.crop(self.from_target)


def make_proposer(draft: Draft | eagle3.Eagle3Draft) -> StandaloneProposer | Eagle3Proposer:
    return Eagle3Proposer(draft) if isinstance(draft, eagle3.Eagle3Draft) else StandaloneProposer(draft)


def _accept(logits: torch.Tensor, prop: Proposal, kept: torch.Tensor | None, cfg: SpecConfig,
            gen: torch.Generator) -> tuple[int, list[int]]:
    """(accepted draft tokens n, the new tokens: the accepted ones + one from the target).

    greedy: accept while a draft token equals the target's argmax; the target's argmax follows.
    sample: accept d with probability min(1, p(d)/q(d)); on rejection sample from
    norm(max(0, p - q)), after g acceptances from p (Leviathan et al. 2023, Chen et al. 2023)."""
    g = prop.tokens.numel()
    if cfg.mode == "greedy":
        t_best = logits.argmax(-1)
        n = int((t_best[:g] == prop.tokens).int().cumprod(0).sum()) if g else 0
        return n, prop.tokens[:n].tolist() + [int(t_best[n])]
    V = logits.shape[-1]
    p = torch.softmax(logits / cfg.temperature, -1)
    u = torch.rand(g, generator=gen, device=logits.device)
    new: list[int] = []
    for i in range(g):
        d, row = int(prop.tokens[i]), int(prop.rows[i])
        if float(u[i]) * float(prop.q[i][row]) < float(p[i, d]):    # u < p/q without dividing
            new.append(d)
            continue
        q_full = torch.zeros(V, device=logits.device)
        q_full[kept if kept is not None else torch.arange(prop.q[i].numel(), device=logits.device)] = prop.q[i]
        resid = (p[i] - q_full).clamp_min(0)
        total = float(resid.sum())
        return i, new + [_sample(resid / total if total > 0 else p[i], gen)]
    return g, new + [_sample(p[g], gen)]


def _check_vocab(proposer: StandaloneProposer | Eagle3Proposer, V: int) -> None:
    kept = proposer.kept
    if kept is not None and int(kept.max()) >= V:
        raise VTError(f"the draft keeps token id {int(kept.max())}, beyond the target's vocabulary ({V})")
    if kept is None and proposer.draft.k > V:
        raise VTError(f"the draft's head has {proposer.draft.k} rows but the target's vocabulary has {V}; "
                      "build the Draft with make_draft(model, vocab_size=V)")


@torch.inference_mode()
def speculative_generate(target, draft: Draft | eagle3.Eagle3Draft, prompt_ids, cfg: SpecConfig,
                         should_stop: Callable[[], bool] | None = None) -> GenResult:
    """Generate with the draft proposing and the target verifying; lossless (see module doc)."""
    device = target.get_output_embeddings().weight.device
    clock = Clock(device)
    prompt = _prompt_tensor(prompt_ids, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    proposer = make_proposer(draft)
    _check_vocab(proposer, int(target.get_output_embeddings().weight.shape[0]))
    tgt = _Runner(target, proposer.aux_ids)
    stats = RunStats(prompt_tokens=int(prompt.numel()), gamma=cfg.gamma)

    # committed sequence: the prompt, then the accepted/corrected tokens (a growing device buffer)
    seq = torch.empty(prompt.numel() + cfg.max_new_tokens + cfg.gamma + 1, dtype=torch.long, device=device)
    seq[: prompt.numel()] = prompt
    n_seq = int(prompt.numel())

    clock.sync()
    t_start = time.perf_counter()
    marks: list[tuple] = []   # per step: (draft intervals, head intervals, target interval)
    prefill = None
    if n_seq > 1:  # prefill both caches with all but the last prompt token
        a = clock.now()
        _, aux = tgt.forward(seq[None, : n_seq - 1])
        proposer.prefill(seq, n_seq, aux)
        prefill = (a, clock.now())

    out: list[int] = []
    while len(out) < cfg.max_new_tokens:
        if should_stop is not None and should_stop():
            break
        g = min(cfg.gamma, cfg.max_new_tokens - len(out) - 1)   # a step always yields >= 1 token
        prop = proposer.propose(seq, n_seq, g, cfg, gen, clock)
        # verify: the target scores the uncommitted tail and every draft token in one forward
        a = clock.now()
        logits, aux = tgt.logits(torch.cat([seq[tgt.cached: n_seq], prop.tokens])[None], prop.tokens.numel() + 1)
        marks.append((prop.draft_iv, prop.head_iv, (a, clock.now())))   # logits row i follows draft i-1
        n, new = _accept(logits, prop, proposer.kept, cfg, gen)
        stats.accepted.append(n)
        stats.drafted.append(prop.tokens.numel())
        new = new[: cfg.max_new_tokens - len(out)]
        stop = _first_eos(new, cfg.eos_ids)
        if stop is not None:
            new = new[: stop + 1]
        seq[n_seq: n_seq + len(new)] = torch.tensor(new, dtype=torch.long, device=device)
        n_seq += len(new)
        out.extend(new)
        # roll back: the caches may hold every committed token but the last one, nothing rejected
        models.crop_cache(tgt.cache, n_seq - 1)
        proposer.commit(n_seq, aux)
        if stop is not None:
            break

    finish_stats(stats, clock, t_start, prefill, marks, len(out))
    return GenResult(out, stats, tgt.cache, proposer.cache)


def finish_stats(stats: RunStats, clock, t_start: float, prefill, marks: list, new_tokens: int) -> None:
    """Read the timing marks a decoding loop left (after one device sync) into its RunStats."""
    clock.sync()
    stats.wall_s = time.perf_counter() - t_start
    if prefill is not None:
        stats.prefill_s = clock.seconds(*prefill)
    for draft_iv, head_iv, t_iv in marks:
        stats.draft_s.append(sum(clock.seconds(a, b) for a, b in draft_iv))
        stats.head_s.append(sum(clock.seconds(a, b) for a, b in head_iv))
        stats.target_s.append(clock.seconds(*t_iv))
    stats.new_tokens = new_tokens


@torch.inference_mode()
def verify_ratios(target, prompt_ids, n_max: int, repeats: int = 7,
                  aux_ids: tuple[int, ...] | None = None) -> list[float]:
    """For n = 1..n_max new tokens after the prompt (a verify of gamma drafts feeds gamma + 1): the
    median over rounds of (one target forward over n tokens) / (one over 1 token), cropped back
    after each. Each round times every n back to back, and ratios are taken within a round, so a
    slow spell of a shared machine (seconds long) cancels instead of inflating one size."""
    device = target.get_output_embeddings().weight.device
    clock = Clock(device)
    seq = _prompt_tensor(prompt_ids, device)
    tgt = _Runner(target, aux_ids)
    tgt.hidden(seq[None])
    base = tgt.cached
    ids = seq[-1:].repeat(n_max)[None]
    rounds = []
    for _ in range(repeats + 1):   # the first round warms up
        ms = []
        for n in range(1, n_max + 1):
            ms.append(clock.time_ms(lambda: tgt.logits(ids[:, :n], n)))
            models.crop_cache(tgt.cache, base)
        rounds.append([m / ms[0] for m in ms])
    return [median(r[n] for r in rounds[1:]) for n in range(n_max)]
