"""Acceptance measured, not assumed: the acceptance of a trimmed draft head for ANY kept set,
from one replay of the full draft over the target's own greedy continuation.

Why one replay suffices (greedy decoding):
- the committed output is the target's greedy output whatever the draft, so every step starts
  from a prefix of the target's continuation y;
- trimming changes only the head; the draft's hidden state does not depend on it (an EAGLE-3
  draft's cache at committed positions is computed from the target's states);
- depth d of a chain is accepted only if depths 1..d-1 were, i.e. only if the earlier proposals
  equal the target's tokens, so along every accepted prefix the chain's inputs are y itself:
  feeding y along the chain (EAGLE-3's training-time test, Eagle3Draft.ttt_step; a plain forward
  for a standalone draft) gives the state of every depth that matters.
So at target position j and depth d (the chain started at c = j - d + 1) the trimmed head keeping
S proposes y_j iff y_j is in S and no id of S scores above it (ties: the lower id wins, as argmax
over ascending rows). The replay records y_j and the ids the full head scores above it, up to a
cap (more than `cap` counts as rejected for every S but the full vocabulary; the replay reports
how often). Walking the greedy steps over those indicators (`simulate`) gives a trimmed head's
accepted tokens per step exactly, for every k of a ranking and every gamma, without running it.

Sample mode (`expected_replay`, `expected_steps`): the replay records, per position and depth,
the probability that a kept set's draft is accepted (sum_x min(p_target(x), q_S(x))), and the
decoding walk is solved for its expectation; see Expected for what is approximated.

Acceptance file (.npz): the arrays of `Replay` plus a JSON manifest (target, draft, data sha256,
gamma_max, continuation length, cap, version). `target_continuations` is public: the target's
greedy continuations of a dataset's prompts, cached in the workspace.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vtcore.coverage import rank_tokens
from vtcore.errors import VTError
from vtcore.workspace import subdir

ACCEPTANCE_VERSION = 1        # the replay's records and the file layout
CONTINUATION_VERSION = 1      # how continuations are generated (bump when that changes)
DEFAULT_CAP = 64
DEFAULT_GAMMA_MAX = 8
BIG = np.int64(1) << 40       # a rank no k reaches

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------- the target's continuations


@dataclass
class Continuation:
    """The target's greedy continuation of one prompt."""

    prompt: list[int]
    tokens: list[int]            # the target's greedy tokens after the prompt
    eos_at: int | None           # index in `tokens` of the first EOS, if any
    source: str = ""             # "file:line"
    row: int = -1                # record index in the file (vtcore.split numbering)
    domain: str = ""
    heldout: bool = True
    states: Any = None           # an EAGLE-3 draft's aux states of prompt + tokens[:-1], when just generated

    @property
    def response(self) -> list[int]:
        """The answer as a chat would show it: the tokens up to and including the first EOS."""
        return self.tokens if self.eos_at is None else self.tokens[: self.eos_at + 1]


def model_fingerprint(model) -> str:
    """A cheap identity of a model's weights: its config and a strided sample of every tensor
    (a retrained or other model gives another key; hashing every byte would cost seconds)."""
    import torch

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            flat = p.detach().flatten()
            step = max(flat.numel() // 256, 1)
            h.update(name.encode())
            h.update(flat[::step][:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def _cont_key(fp: str, prompt: list[int], max_new_tokens: int, stop_at_eos: bool, eos: tuple[int, ...],
              dtype: str, device: str, sample: tuple | None = None) -> str:
    parts = [CONTINUATION_VERSION, fp, prompt, max_new_tokens, stop_at_eos, list(eos), dtype, device]
    blob = json.dumps(parts + ([list(sample)] if sample else []))   # greedy keys stay as they were
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def target_continuations(target, prompts: Sequence[Any], *, eos: Sequence[int] = (), max_new_tokens: int = 48,
                         stop_at_eos: bool = False, heldout: bool = True,
                         workspace: str | os.PathLike | None = None,
                         progress: Progress | None = None, temperature: float | None = None,
                         seed: int = 0, draft=None) -> list[Continuation]:
    """The target's greedy continuation of each prompt (objects with `.ids`, and optionally
    `.source`, `.row`, `.domain`: vtcore.bench.load_prompts gives them for a dataset's held-out
    or fit rows). Each is generated by vtcore.speculative.target_generate (one token per forward
    with the target's KV cache: the numerics of the benchmark's target-alone run) and cached in
    <workspace>/continuations/, keyed by the target's weights (model_fingerprint), the prompt's
    ids, max_new_tokens, the EOS ids, stop_at_eos, dtype, device and CONTINUATION_VERSION.

    stop_at_eos=False (the replay) always generates max_new_tokens, so the tokens after an EOS
    are known too (a verify step may accept drafts past it); `eos_at` marks the first EOS.
    stop_at_eos=True (counting the target's own answers) stops after the first EOS.
    `heldout` is copied into each Continuation (which split the prompts came from).
    temperature: a sampled continuation instead (seed + the prompt's index), for the sample-mode
    replay (expected_replay).
    draft: an EAGLE-3 draft whose replay follows; a continuation generated now (not read from the
    cache) then keeps the target's aux states of every position it fed (`states`), so the replay
    needs no second target pass over prompt + continuation."""
    from vtcore import eagle3, speculative

    if max_new_tokens < 1:
        raise VTError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = tuple(int(i) for i in eos)
    device = target.get_output_embeddings().weight.device
    fp = model_fingerprint(target)
    cache = subdir("continuations", workspace)
    if temperature is not None and temperature <= 0:
        raise VTError(f"temperature must be > 0, got {temperature}")
    out = []
    for i, p in enumerate(prompts):
        ids = [int(t) for t in p.ids]
        sample = None if temperature is None else (float(temperature), seed + i)
        key = _cont_key(fp, ids, max_new_tokens, stop_at_eos, eos, str(target.dtype), device.type, sample)
        f = cache / f"{key}.json"
        tokens = None
        if f.is_file():
            try:
                tokens = [int(t) for t in json.loads(f.read_text())["tokens"]]
            except (ValueError, KeyError, TypeError):
                tokens = None   # a damaged cache entry is regenerated
        states, fresh = None, False
        aux_ids = tuple(draft.aux_ids) if isinstance(draft, eagle3.Eagle3Draft) else None
        if tokens is None and aux_ids and sample is None and not stop_at_eos and len(ids) > 1:
            tokens, states = _generate_with_states(target, ids, max_new_tokens, aux_ids)
            fresh = True
        elif tokens is None:
            cfg = speculative.SpecConfig(gamma=1, max_new_tokens=max_new_tokens, eos_ids=eos if stop_at_eos else (),
                                         mode="greedy" if sample is None else "sample",
                                         temperature=1.0 if sample is None else sample[0],
                                         seed=0 if sample is None else sample[1])
            tokens = speculative.target_generate(target, ids, cfg).tokens
            fresh = True
        if fresh:
            tmp = f.with_suffix(".tmp")
            tmp.write_text(json.dumps({"tokens": tokens}))
            os.replace(tmp, f)
        eos_at = next((j for j, t in enumerate(tokens) if t in eos), None)
        out.append(Continuation(ids, tokens, eos_at, getattr(p, "source", ""), getattr(p, "row", -1),
                                getattr(p, "domain", ""), heldout, states))
        if progress:
            progress((i + 1) / len(prompts), f"target continuation {i + 1}/{len(prompts)}")
    return out


def _generate_with_states(target, ids: list[int], max_new_tokens: int, aux_ids: tuple[int, ...]):
    """(tokens, aux states [P + n - 1, ...]): the target's greedy continuation computed as
    vtcore.speculative.target_generate does (a prefill of all but the last prompt token, then one
    token per forward with the KV cache, the same logits), keeping the aux-layer states of every
    position it feeds."""
    import torch

    from vtcore import eagle3, models, speculative

    dev = target.get_output_embeddings().weight.device
    cache = models.new_cache(target)
    seq = torch.tensor(ids, dtype=torch.long, device=dev)
    with torch.inference_mode():
        auxs = [eagle3.target_forward(target, seq[:-1], aux_ids, cache=cache)[1]]
        pending, out = seq[-1:], []
        for _ in range(max_new_tokens):
            h, aux = eagle3.target_forward(target, pending, aux_ids, cache=cache)
            auxs.append(aux)
            logits = speculative.postprocess_logits(target, target.get_output_embeddings()(h[-1:])).float()[0]
            out.append(int(logits.argmax()))
            pending = torch.tensor(out[-1:], dtype=torch.long, device=dev)
    return out, torch.cat(auxs)


# ---------------------------------------------------------------- the replay


@dataclass
class Replay:
    """What decides acceptance for any kept set, per (prompt, target position j, depth d).

    Record r = offsets[p] + j * gamma_max + (d - 1): the chain started at committed count
    c = j - d + 1 (records with c < 0 are never read) proposes for tokens[tok_offsets[p] + j].
    n_above[r]: how many ids the full head scores above the target's token (BIG when the draft
    cannot propose it); above[r, :min(n_above, cap)]: those ids, best first (-1 pads)."""

    gamma_max: int
    cap: int
    prompt_len: np.ndarray        # int64[P]
    n_tokens: np.ndarray          # int64[P]: continuation length
    eos_at: np.ndarray            # int64[P]: first EOS in the continuation, -1 none
    heldout: np.ndarray           # bool[P]: a held-out prompt (measured) or a fit one (ranking)
    tokens: np.ndarray            # int64[sum n_tokens]: the continuations, concatenated
    n_above: np.ndarray           # int64[R]
    above: np.ndarray             # int32[R, cap]
    proposable: np.ndarray        # int64[N]: target ids the full head scores
    vocab_size: int               # the target's vocabulary
    manifest: dict = field(default_factory=dict)

    @property
    def tok_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_tokens)[:-1]]).astype(np.int64)

    @property
    def offsets(self) -> np.ndarray:
        return self.tok_offsets * self.gamma_max

    def select(self, heldout: bool | None) -> np.ndarray:
        """Indices of the prompts measured (True), used for ranking (False), or all (None)."""
        return np.arange(self.heldout.size) if heldout is None else np.flatnonzero(self.heldout == heldout)

    def overflow_share(self) -> float:
        """Share of the records a chain can reach whose target token has more than `cap` ids
        scored above it (counted as rejected for every trimmed set)."""
        used = self._reachable()
        n = self.n_above[used]
        n = n[n < BIG]
        return float((n > self.cap).mean()) if n.size else 0.0

    def committed_tokens(self, prompts: np.ndarray | None = None) -> int:
        """Tokens a decoding run over these prompts commits: the continuation up to its first EOS."""
        prompts = self.select(True) if prompts is None else prompts
        return int(np.where(self.eos_at[prompts] >= 0, self.eos_at[prompts] + 1, self.n_tokens[prompts]).sum())

    def _reachable(self) -> np.ndarray:
        mask = np.zeros(self.n_above.size, dtype=bool)
        D = self.gamma_max
        for p in range(self.n_tokens.size):
            off, N = int(self.offsets[p]), int(self.n_tokens[p])
            j = np.arange(N)[:, None]
            d = np.arange(1, D + 1)[None, :]
            mask[off: off + N * D] = (j - d + 1 >= 0).ravel()
        return mask


def _record(z, y: int, row_of, ids_of_row, cap: int) -> tuple[Any, Any]:
    """n_above [n] and the ids above [n, cap] of logits z [n, Nd] for target tokens y [n]."""
    import torch

    n = z.shape[0]
    ry = row_of[y]
    ok = ry >= 0
    s_y = z.gather(1, ry.clamp_min(0)[:, None])
    above = (z > s_y) | ((z == s_y) & (ids_of_row[None, :] < y[:, None]))
    n_above = above.sum(1).long()
    n_above[~ok] = int(BIG)
    kk = min(cap, z.shape[1])
    vals, rows = z.masked_fill(~above, float("-inf")).topk(kk, dim=1)
    ids = ids_of_row[rows].int()
    ids[torch.arange(kk)[None, :].expand(n, kk) >= n_above[:, None].clamp_max(kk)] = -1
    if kk < cap:
        ids = torch.cat([ids, torch.full((n, cap - kk), -1, dtype=ids.dtype)], 1)
    return n_above, ids


def _draft_rows(draft) -> Any:
    """The target id of each of the full draft's head rows."""
    import torch

    from vtcore import eagle3

    if isinstance(draft, eagle3.Eagle3Draft):
        return draft.head_target_ids.cpu().long()
    return (draft.kept if draft.kept is not None else torch.arange(draft.k)).cpu().long()


def _draft_pass(target, draft, c: Continuation, D: int, with_target_logits: bool = False):
    """Yield (depth index k, ok [N] bool, draft logits z [ok.sum(), rows], target logits or None)
    for depths 1..D of the full draft fed the continuation along every chain (see the module
    doc); target logits [N, V]: the target's scores of y_j at each position j (sample mode)."""
    import torch

    from vtcore import eagle3, models, speculative

    dev = target.get_output_embeddings().weight.device
    P, N = len(c.prompt), len(c.tokens)
    if P < 2:
        raise VTError("the replay needs prompts of at least 2 tokens")
    x = torch.tensor(c.prompt + c.tokens, dtype=torch.long, device=dev)
    j = torch.arange(N)

    def target_logits(hidden):
        if not with_target_logits:
            return None
        h = hidden[P - 1: P - 1 + N]                 # position P+j-1 predicts y_j
        return speculative.postprocess_logits(target, target.get_output_embeddings()(h)).float().cpu()

    if isinstance(draft, eagle3.Eagle3Draft):
        T = x.numel() - 1
        if c.states is not None and not with_target_logits:   # kept when the continuation was made
            aux, tl = c.states.to(dev), None
        else:
            hidden, aux = eagle3.target_forward(target, x[:-1], draft.aux_ids)
            tl = target_logits(hidden)
        ids = torch.zeros(1, T + D, dtype=torch.long, device=dev)
        ids[0, :T] = x[1:]
        h = draft.fuse(aux)[None]
        kv: list = []
        mask0 = torch.ones(T, T, dtype=torch.bool, device=dev).tril()[None, None]
        pos = torch.arange(T, device=dev)[None]
        for k in range(D):
            h = draft.ttt_step(ids[:, k: k + T], h, kv, pos, mask0)
            t = P + j - k - 2                           # depth k+1 predicting y_j starts from position t
            ok = t >= 0
            yield k, ok, draft.logits(h[0, t[ok].to(dev)]).float().cpu(), tl
    else:
        tl = None
        if with_target_logits:
            tl = target_logits(models.decoder_of(target)(input_ids=x[None, :-1]).last_hidden_state[0])
        out = models.decoder_of(draft.model)(input_ids=x[None, :-1]).last_hidden_state[0]
        z = out[P - 1: P - 1 + N] @ draft.head.t()
        if draft.bias is not None:
            z = z + draft.bias
        z = speculative.postprocess_logits(draft.model, z).float().cpu()
        for k in range(D):                              # the chain's state does not depend on the depth
            yield k, torch.ones(N, dtype=torch.bool), z, tl


def replay(target, draft, conts: list[Continuation], gamma_max: int = DEFAULT_GAMMA_MAX, cap: int = DEFAULT_CAP,
           progress: Progress | None = None, manifest: dict | None = None) -> Replay:
    """One pass of the FULL draft over each continuation (see the module doc): an EAGLE-3 head
    (vtcore.eagle3.Eagle3Draft) through its training-time test, a standalone draft
    (vtcore.speculative.Draft) teacher forced, every depth 1..gamma_max at once."""
    import torch

    from vtcore import eagle3

    if gamma_max < 1 or cap < 1:
        raise VTError(f"gamma_max and cap must be >= 1, got {gamma_max} and {cap}")
    if not conts:
        raise VTError("nothing to replay: no continuations")
    is_e3 = isinstance(draft, eagle3.Eagle3Draft)
    ids_of_row = _draft_rows(draft)
    V = int(target.get_output_embeddings().weight.shape[0])
    row_of = torch.full((max(V, int(ids_of_row.max()) + 1),), -1, dtype=torch.long)
    row_of[ids_of_row] = torch.arange(ids_of_row.numel())
    D = gamma_max
    n_above_all, above_all = [], []
    with torch.inference_mode():
        for pi, c in enumerate(conts):
            N = len(c.tokens)
            y = torch.tensor(c.tokens, dtype=torch.long)
            na = torch.full((N, D), int(BIG), dtype=torch.long)
            ab = torch.full((N, D, cap), -1, dtype=torch.int32)
            last = None
            for k, ok, z, _ in _draft_pass(target, draft, c, D):
                if not is_e3 and last is not None:      # a standalone draft: every depth alike
                    na[:, k], ab[:, k] = last
                    continue
                n_, a_ = _record(z, y[ok], row_of, ids_of_row, cap)
                na[ok, k], ab[ok, k] = n_, a_
                last = (n_, a_)
            n_above_all.append(na.reshape(-1).numpy())
            above_all.append(ab.reshape(-1, cap).numpy())
            if progress:
                progress((pi + 1) / len(conts), f"replay {pi + 1}/{len(conts)}")
    man = {"version": ACCEPTANCE_VERSION, "gamma_max": D, "cap": cap, "mode": "greedy",
           "draft_kind": "eagle3" if is_e3 else "standalone", **(manifest or {})}
    return Replay(gamma_max=D, cap=cap,
                  prompt_len=np.array([len(c.prompt) for c in conts], dtype=np.int64),
                  n_tokens=np.array([len(c.tokens) for c in conts], dtype=np.int64),
                  eos_at=np.array([-1 if c.eos_at is None else c.eos_at for c in conts], dtype=np.int64),
                  heldout=np.array([c.heldout for c in conts], dtype=bool),
                  tokens=np.concatenate([np.asarray(c.tokens, dtype=np.int64) for c in conts]),
                  n_above=np.concatenate(n_above_all).astype(np.int64), above=np.concatenate(above_all),
                  proposable=ids_of_row.numpy().astype(np.int64), vocab_size=V, manifest=man)


# ---------------------------------------------------------------- sample mode: the expected acceptance


@dataclass
class Expected:
    """Sample mode: per kept set s and record r (Replay's numbering), the probability that the
    trimmed head's draft at that (position, depth) is accepted, alpha = sum_x min(p(x), q_S(x)):
    p the target's distribution at temperature T, q_S the draft's softmax at T over the kept
    rows only (what the trimmed head samples from). Depth d's chain is fed the target's own
    continuation (a sampled one) as in the greedy replay; in real sampling an accepted draft token
    is distributed as min(p, q_S) / alpha rather than being y, so depths >= 2 are an approximation
    (depth 1 is exact given the prefix)."""

    gamma_max: int
    temperature: float
    n_tokens: np.ndarray          # int64[P]
    eos_at: np.ndarray            # int64[P]
    heldout: np.ndarray           # bool[P]
    alpha: np.ndarray             # float64[S, R]
    labels: list                  # per set: k (an int) or None for the full head

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n_tokens)[:-1]]).astype(np.int64) * self.gamma_max


def expected_replay(target, draft, conts: list[Continuation], kept_sets: Sequence[np.ndarray | None],
                    gamma_max: int, temperature: float, progress: Progress | None = None) -> Expected:
    """The acceptance probabilities of several kept sets (None: the full head) from one pass of
    the full draft and the target over each continuation (see Expected)."""
    import torch

    if temperature <= 0:
        raise VTError(f"temperature must be > 0 for sample mode, got {temperature}")
    if not conts:
        raise VTError("nothing to replay: no continuations")
    from vtcore import eagle3

    is_e3 = isinstance(draft, eagle3.Eagle3Draft)
    ids_of_row = _draft_rows(draft)
    rows_of_set = []
    for kept in kept_sets:
        if kept is None:
            rows_of_set.append(torch.arange(ids_of_row.numel()))
            continue
        kept = np.asarray(kept, dtype=np.int64)
        mask = np.zeros(max(int(ids_of_row.max()), int(kept.max()) if kept.size else 0) + 1, dtype=bool)
        mask[kept] = True
        rows_of_set.append(torch.from_numpy(np.flatnonzero(mask[ids_of_row.numpy()])))
    D = gamma_max
    alpha = np.zeros((len(kept_sets), sum(len(c.tokens) for c in conts) * D))
    off = 0
    with torch.inference_mode():
        for pi, c in enumerate(conts):
            N = len(c.tokens)
            a = torch.zeros(len(kept_sets), N, D, dtype=torch.float64)
            p_rows = None
            for k, ok, z, tl in _draft_pass(target, draft, c, D, with_target_logits=True):
                if p_rows is None:   # the target's distribution at each position, on the draft's rows
                    p_rows = torch.softmax(tl / temperature, -1)[:, ids_of_row]
                elif not is_e3:      # a standalone draft: every depth alike
                    a[:, :, k] = a[:, :, 0]
                    continue
                p = p_rows[ok]
                for si, rows in enumerate(rows_of_set):
                    q = torch.softmax(z[:, rows] / temperature, -1)
                    a[si, ok, k] = torch.minimum(p[:, rows], q).sum(1).double()
            alpha[:, off: off + N * D] = a.reshape(len(kept_sets), -1).numpy()
            off += N * D
            if progress:
                progress((pi + 1) / len(conts), f"expected replay {pi + 1}/{len(conts)}")
    return Expected(gamma_max=D, temperature=float(temperature),
                    n_tokens=np.array([len(c.tokens) for c in conts], dtype=np.int64),
                    eos_at=np.array([-1 if c.eos_at is None else c.eos_at for c in conts], dtype=np.int64),
                    heldout=np.array([c.heldout for c in conts], dtype=bool), alpha=np.clip(alpha, 0.0, 1.0),
                    labels=[None if kept is None else int(np.asarray(kept).size) for kept in kept_sets])


def expected_steps(ex: Expected, gamma: int, prompts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """(expected accepted draft tokens, expected target steps, committed tokens) per kept set:
    the decoding walk as a Markov chain over the committed count c. A step at c drafts
    g = min(gamma, n - c - 1) (as vtcore.speculative does with max_new_tokens = n), accepts m
    with probability prod_{e<m} alpha(c+e, e+1) (1 - alpha(c+m, m+1)) (m = g: all accepted),
    moves to c + m + 1 and stops once the first EOS is committed; the expectations from c = 0 are
    solved backwards from the end. Accepted per step = the first over the second (a ratio of
    totals, as measured)."""
    if not 1 <= gamma <= ex.gamma_max:
        raise VTError(f"gamma {gamma} outside the replay's 1..{ex.gamma_max}")
    prompts = np.flatnonzero(ex.heldout) if prompts is None else prompts
    S, D = ex.alpha.shape[0], ex.gamma_max
    acc, steps, tokens = np.zeros(S), np.zeros(S), 0
    for p in prompts:
        N, off, eos = int(ex.n_tokens[p]), int(ex.offsets[p]), int(ex.eos_at[p])
        tokens += eos + 1 if eos >= 0 else N
        al = ex.alpha[:, off: off + N * D].reshape(S, N, D)
        e_acc, e_steps = np.zeros((S, N + 1)), np.zeros((S, N + 1))
        for c in range(N - 1, -1, -1):
            g = min(gamma, N - c - 1)
            reach = np.ones(S)                       # P(the first m drafts all accepted)
            ea, es = np.zeros(S), np.ones(S)
            for m in range(g + 1):
                pm = reach * (1.0 - al[:, c + m, m]) if m < g else reach
                nxt = c + m + 1
                done = nxt >= N or (0 <= eos <= c + m)
                ea += pm * (m + (0.0 if done else e_acc[:, nxt]))
                es += pm * (0.0 if done else e_steps[:, nxt])
                if m < g:
                    reach = reach * al[:, c + m, m]
            e_acc[:, c], e_steps[:, c] = ea, es
        acc += e_acc[:, 0]
        steps += e_steps[:, 0]
    return acc, steps, np.full(S, tokens)


# ---------------------------------------------------------------- A(k, gamma): the greedy steps, simulated


def ranks_of(order: np.ndarray, vocab: int) -> np.ndarray:
    """rank[id] = position of id in `order`; ids not in it get BIG (never kept)."""
    order = np.asarray(order, dtype=np.int64)
    rank = np.full(max(vocab, int(order.max()) + 1 if order.size else 0), BIG, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


def intervals(rep: Replay, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per record, the k range [lo, hi] whose prefix order[:k] accepts it: the target's token is
    kept (k > its rank) and no id above it is (k <= the smallest rank among them)."""
    rank = ranks_of(order, max(rep.vocab_size, int(rep.tokens.max()) + 1))
    y = _record_tokens(rep)
    lo = np.where(rep.n_above >= BIG, BIG, rank[y] + 1)
    ab = rep.above.astype(np.int64)
    r_ab = np.where(ab >= 0, rank[np.clip(ab, 0, None)], BIG)
    hi = r_ab.min(axis=1) if rep.cap else np.full(lo.shape, BIG)
    hi = np.where(rep.n_above > rep.cap, -1, hi)     # ids beyond the cap unknown: rejected
    hi = np.where(rep.n_above == 0, BIG, hi)
    return lo, hi


def _record_tokens(rep: Replay) -> np.ndarray:
    return np.repeat(rep.tokens, rep.gamma_max)


@dataclass
class Simulated:
    """Greedy speculative decoding walked over the records for each k in `ks` at one gamma."""

    ks: np.ndarray                 # int64[K]
    gamma: int
    accepted: np.ndarray           # int64[K]: accepted draft tokens in all
    steps: np.ndarray              # int64[K]: target steps
    drafted_at: np.ndarray         # int64[K, gamma]: steps that drafted depth d
    accepted_at: np.ndarray        # int64[K, gamma]: of which depth d was accepted

    @property
    def accepted_per_step(self) -> np.ndarray:
        return self.accepted / np.maximum(self.steps, 1)

    @property
    def by_position(self) -> np.ndarray:
        """[K, gamma]: share of steps drafting depth d whose d-th token was accepted."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.drafted_at > 0, self.accepted_at / np.maximum(self.drafted_at, 1), np.nan)


def simulate(rep: Replay, lo: np.ndarray, hi: np.ndarray, ks: np.ndarray, gamma: int,
             prompts: np.ndarray | None = None) -> Simulated:
    """The greedy steps for every k of `ks` at once (numpy over k): a step at committed count c
    drafts g = min(gamma, n - c - 1) tokens (as vtcore.speculative does with max_new_tokens = n),
    accepts the run of consecutive accepted depths, then moves c by accepted + 1; it stops after
    the first EOS of the continuation."""
    if not 1 <= gamma <= rep.gamma_max:
        raise VTError(f"gamma {gamma} outside the replay's 1..{rep.gamma_max}")
    ks = np.asarray(ks, dtype=np.int64)
    K, D = ks.size, rep.gamma_max
    acc = np.zeros(K, dtype=np.int64)
    steps = np.zeros(K, dtype=np.int64)
    dr_at = np.zeros((K, gamma), dtype=np.int64)
    ac_at = np.zeros((K, gamma), dtype=np.int64)
    prompts = rep.select(True) if prompts is None else prompts
    offs = rep.offsets
    dd = np.arange(gamma)
    for p in prompts:
        N, off, eos = int(rep.n_tokens[p]), int(offs[p]), int(rep.eos_at[p])
        c = np.zeros(K, dtype=np.int64)
        active = np.ones(K, dtype=bool)
        while active.any():
            g = np.clip(N - c - 1, 0, gamma)
            valid = dd[None, :] < g[:, None]                         # [K, gamma]
            j = np.clip(c[:, None] + dd[None, :], 0, N - 1)
            r = off + j * D + dd[None, :]
            ok = valid & (lo[r] <= ks[:, None]) & (ks[:, None] <= hi[r])
            run = np.cumprod(ok, axis=1).astype(bool)
            n = run.sum(1)
            a = active
            acc += np.where(a, n, 0)
            steps += a
            dr_at += valid & a[:, None]
            ac_at += run & a[:, None]
            end = c + n
            stop = (eos >= 0) & (c <= eos) & (eos <= end)
            c = end + 1
            active = a & ~stop & (c < N)
    return Simulated(ks, gamma, acc, steps, dr_at, ac_at)


def breakpoints(lo: np.ndarray, hi: np.ndarray, k_max: int) -> np.ndarray:
    """The k values where some record's acceptance changes (A(k) is constant between them)."""
    pts = np.concatenate([[1], lo[lo <= k_max], hi[(hi >= 0) & (hi < k_max)] + 1])
    return np.unique(np.clip(pts, 1, k_max))


def acceptance_table(rep: Replay, order: np.ndarray, gammas: Sequence[int] | None = None,
                     k_max: int | None = None, prompts: np.ndarray | None = None) -> np.ndarray:
    """A[g_i, k] for k = 0..k_max: the replayed accepted draft tokens per target step of the
    head keeping order[:k] at gammas[g_i] (A[:, 0] = 0), simulated exactly at every breakpoint
    and constant between them: one vectorised sweep per gamma."""
    gammas = list(gammas or range(1, rep.gamma_max + 1))
    k_max = int(k_max if k_max is not None else len(order))
    lo, hi = intervals(rep, order)
    ks = breakpoints(lo, hi, k_max)
    out = np.zeros((len(gammas), k_max + 1))
    idx = np.searchsorted(ks, np.arange(1, k_max + 1), side="right") - 1
    for i, g in enumerate(gammas):
        sim = simulate(rep, lo, hi, ks, g, prompts)
        out[i, 1:] = sim.accepted_per_step[idx]
    return out


def for_set(rep: Replay, kept: Sequence[int] | None, gamma: int, prompts: np.ndarray | None = None) -> Simulated:
    """The replayed figures of one head: keeping `kept` (None: the full head)."""
    if kept is None:
        order, k = rep.proposable, rep.proposable.size
    else:
        kept = np.unique(np.asarray(kept, dtype=np.int64))
        rest = np.setdiff1d(rep.proposable, kept)
        order, k = np.concatenate([kept, rest]), kept.size
    lo, hi = intervals(rep, order)
    return simulate(rep, lo, hi, np.array([k]), gamma, prompts)


# ---------------------------------------------------------------- the acceptance-aware ranking


def accepted_scores(rep: Replay, prompts: np.ndarray | None = None) -> np.ndarray:
    """float64[V]: per token, how often the FULL head proposes it and gets accepted with every
    earlier depth of its chain accepted too (each chain start counts; the fit prompts by default)."""
    prompts = rep.select(False) if prompts is None else prompts
    score = np.zeros(max(rep.vocab_size, int(rep.tokens.max()) + 1))
    D, offs, toffs = rep.gamma_max, rep.offsets, rep.tok_offsets
    for p in prompts:
        N, off = int(rep.n_tokens[p]), int(offs[p])
        ok = (rep.n_above[off: off + N * D] == 0).reshape(N, D)
        y = rep.tokens[toffs[p]: toffs[p] + N]
        for d in range(D):
            c = np.arange(N - d)                          # chain starts reaching depth d + 1 within N
            run = np.ones(c.size, dtype=bool)
            for e in range(d + 1):
                run &= ok[c + e, e]
            np.add.at(score, y[c + d][run], 1.0)
    return score


def acceptance_ranking(rep: Replay, counts_fit: np.ndarray, always_keep: Sequence[int] = (),
                       allowed: np.ndarray | None = None, prompts: np.ndarray | None = None) -> np.ndarray:
    """Always-keep ids first, then the tokens the full head gets accepted on (fit prompts) by that
    score, ties by fit count then id, then the rest by fit count (vtcore.coverage.rank_tokens);
    restricted to `allowed` (the ids the draft can propose) when given."""
    counts_fit = np.asarray(counts_fit)
    V = counts_fit.shape[0]
    score = accepted_scores(rep, prompts)[:V]
    keep = list(dict.fromkeys(int(i) for i in always_keep))
    freq = rank_tokens(counts_fit, keep)
    hit = np.flatnonzero(score > 0)
    hit = hit[np.lexsort((hit, -counts_fit[hit], -score[hit]))]
    is_keep = np.zeros(V, dtype=bool)
    is_keep[keep] = True
    hit = hit[~is_keep[hit]]
    seen = is_keep.copy()
    seen[hit] = True
    order = np.concatenate([np.array(keep, dtype=np.int64), hit, freq[~seen[freq]]]).astype(np.int64)
    if allowed is not None:
        mask = np.zeros(V, dtype=bool)
        allowed = np.asarray(allowed)
        mask[allowed[allowed < V]] = True
        order = order[mask[order]]
    return order


# ---------------------------------------------------------------- the acceptance file

_ARRAYS = ("prompt_len", "n_tokens", "eos_at", "heldout", "tokens", "n_above", "above", "proposable")


def save_acceptance(path: str | os.PathLike, rep: Replay) -> Path:
    """Write the replay as .npz with its manifest (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    man = {**rep.manifest, "gamma_max": rep.gamma_max, "cap": rep.cap, "vocab_size": rep.vocab_size,
           "prompts": int(rep.n_tokens.size), "heldout_prompts": int(rep.heldout.sum()),
           "continuation_tokens": int(rep.n_tokens.sum())}
    rep.manifest = man
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, manifest=np.array(json.dumps(man)), **{k: getattr(rep, k) for k in _ARRAYS})
    os.replace(tmp, path)
    return path


def load_acceptance(path: str | os.PathLike) -> Replay:
    """An acceptance file written by save_acceptance; VTError naming the file and field otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VTError(f"{path}: no such acceptance file (make one with `python -m vtcore acceptance --out {path}`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            man = json.loads(str(z["manifest"]))
            arrs = {k: z[k] for k in _ARRAYS}
    except KeyError as e:
        raise VTError(f"{path}: not an acceptance file (missing {e})") from None
    except (ValueError, OSError) as e:
        raise VTError(f"{path}: not an acceptance file ({e})") from None
    if not isinstance(man, dict) or man.get("version") != ACCEPTANCE_VERSION:
        raise VTError(f"{path}: acceptance file version {man.get('version') if isinstance(man, dict) else '?'}, "
                      f"this code reads version {ACCEPTANCE_VERSION}; rerun `vtcore acceptance`")
    D, cap = int(man["gamma_max"]), int(man["cap"])
    R = int(arrs["n_tokens"].sum()) * D
    if arrs["n_above"].shape != (R,) or arrs["above"].shape != (R, cap) or arrs["tokens"].size != R // D:
        raise VTError(f"{path}: field n_above/above/tokens do not match n_tokens x gamma_max ({R} records)")
    return Replay(gamma_max=D, cap=cap, prompt_len=arrs["prompt_len"].astype(np.int64),
                  n_tokens=arrs["n_tokens"].astype(np.int64), eos_at=arrs["eos_at"].astype(np.int64),
                  heldout=arrs["heldout"].astype(bool), tokens=arrs["tokens"].astype(np.int64),
                  n_above=arrs["n_above"].astype(np.int64), above=arrs["above"].astype(np.int32),
                  proposable=arrs["proposable"].astype(np.int64), vocab_size=int(man["vocab_size"]), manifest=man)


def merge_replays(reps: Sequence[Replay]) -> Replay:
    """One replay of several (e.g. the fit prompts of two domains, or two acceptance files of the
    same pair): the prompts of each, in order. A mixed-domain acceptance ranking is the ranking of
    the merged replay (the accepted scores add up), with the domains' fit counts added."""
    if not reps:
        raise VTError("nothing to merge")
    a = reps[0]
    for r in reps[1:]:
        if (r.gamma_max, r.cap, r.vocab_size) != (a.gamma_max, a.cap, a.vocab_size) or not np.array_equal(
                r.proposable, a.proposable):
            raise VTError(f"cannot merge replays of different pairs or settings: gamma_max/cap/vocabulary "
                          f"{(a.gamma_max, a.cap, a.vocab_size)} vs {(r.gamma_max, r.cap, r.vocab_size)}, "
                          f"drafts {a.manifest.get('draft')} vs {r.manifest.get('draft')}")
    cat = {k: np.concatenate([getattr(r, k) for r in reps]) for k in _ARRAYS if k != "proposable"}
    man = {**a.manifest, "merged": [r.manifest.get("data") for r in reps]}
    return Replay(gamma_max=a.gamma_max, cap=a.cap, proposable=a.proposable, vocab_size=a.vocab_size, manifest=man,
                  **cat)


def summarize(rep: Replay, extra: dict | None = None) -> dict:
    """The full head's replayed accepted tokens per step by gamma, and how often the cap bit."""
    ho = rep.select(True)
    full = {g: float(for_set(rep, None, g, ho).accepted_per_step[0]) for g in range(1, rep.gamma_max + 1)}
    return {"manifest": rep.manifest, "heldout_prompts": int(ho.size), "fit_prompts": int(rep.select(False).size),
            "full_accepted_per_step": full, "over_cap_share": rep.overflow_share(), **(extra or {})}


def check_counts(rep: Replay, vocab_size: int, where: str = "the counts file") -> None:
    """The replay's tokens must be ids of the counts' tokenizer (the same target)."""
    top = int(rep.tokens.max()) if rep.tokens.size else -1
    if top >= vocab_size:
        raise VTError(f"the acceptance file's continuation has token id {top}, beyond {where}'s {vocab_size:,}-token "
                      f"vocabulary: it was made for another target ({rep.manifest.get('target')})")


def ranking_for(rep: Replay, counts_fit: np.ndarray, always_keep: Sequence[int], ranking: str,
                allowed: np.ndarray | None = None) -> np.ndarray:
    """The ranking a trimmed head keeps a prefix of: "frequency" (the fit rows' counts) or
    "acceptance" (acceptance_ranking over the replay's fit prompts)."""
    check_counts(rep, int(np.asarray(counts_fit).shape[0]))
    if ranking == "frequency":
        order = rank_tokens(counts_fit, always_keep)
        if allowed is not None:
            mask = np.zeros(order.size, dtype=bool)
            allowed = np.asarray(allowed)
            mask[allowed[allowed < order.size]] = True
            order = order[mask[order]]
        return order
    if ranking != "acceptance":
        raise VTError(f"ranking must be 'frequency' or 'acceptance', got {ranking!r}")
    if not rep.select(False).size:
        raise VTError("the acceptance file has no fit-row prompts to rank on (made with --fit-prompts 0)")
    return acceptance_ranking(rep, counts_fit, always_keep, allowed)
