"""What a speculative round costs in each serving engine: the rows its draft head computes, the
tokens its draft layer runs, the tokens its target verifies, and the per-token extras.

Read from the engines' code (docs/design.md, "Engine cost model"):
- SGLang (speculative/eagle_worker.py `draft_forward`, spec_utils / eagle_utils
  `select_top_k_tokens` and `organize_draft_results`, sglang main 2026): a tree of s steps,
  top-t, n draft tokens. The draft-extend forward after a verify scores one row per request;
  each of the s - 1 tree steps runs the draft on t tokens per request and its head on t rows, so
  the head computes bs * (1 + (s - 1) * t) rows per round; the target verifies n tokens per
  request (the root included) with a tree mask.
- vLLM 0.33 (v1/spec_decode EAGLE proposer, `Eagle3LlamaForCausalLM.compute_logits`): chains only;
  each of the gamma draft steps runs the head on one row per request and then scatters the k
  draft logits into a full-vocabulary tensor (`new_full((N, vocab_size), -inf)` then an indexed
  copy) when the head has a d2t map: an O(V) cost per drafted token that trimming the head
  adds rather than removes. The target verifies gamma + 1 tokens per request.
- chain: our engine's chain (vtcore.speculative): gamma head rows, no scatter.

Costs are in milliseconds; the unit costs (one draft-layer token, one head row at the head's k,
one full-vocabulary scatter, a verify of n tokens) are measured by the caller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from vtcore.errors import VTError

ENGINES = ("sglang", "vllm", "chain")


@dataclass(frozen=True)
class RoundShape:
    """Work per speculative round, for a batch of `batch` requests."""

    engine: str
    head_rows: int          # draft head rows computed
    draft_forwards: int     # draft forwards per round
    draft_tokens: int       # tokens the draft layer runs (the first forward counted as one per request)
    forward_tokens: tuple   # tokens of each draft forward (bs, then bs * t for SGLang's tree steps)
    scatter_rows: int       # full-vocabulary scatters (vLLM)
    verified: int           # tokens the target verifies (per request)
    max_accepted: int       # the most draft tokens one round can accept (the tree's depth, gamma)


def round_shape(engine: str, batch: int = 1, gamma: int | None = None, steps: int | None = None,
                topk: int | None = None, tokens: int | None = None, trimmed: bool = True) -> RoundShape:
    """The work of one round: SGLang from (s, t, n); vLLM and the chain from gamma. vLLM scatters
    only a head with a d2t map (trimmed: a full-vocabulary head's logits are returned as they are)."""
    if batch < 1:
        raise VTError(f"batch size must be >= 1, got {batch}")
    if engine == "sglang":
        if not (steps and topk and tokens) or steps < 1 or topk < 1 or tokens < 2:
            raise VTError("the SGLang model needs steps >= 1, topk >= 1 and draft tokens >= 2")
        rows = batch * (1 + (steps - 1) * topk)
        return RoundShape(engine, rows, steps, rows, (batch,) + (batch * topk,) * (steps - 1), 0, tokens, steps)
    if engine in ("vllm", "chain"):
        if not gamma or gamma < 1:
            raise VTError(f"the {engine} model needs gamma >= 1")
        return RoundShape(engine, batch * gamma, gamma, batch * gamma, (batch,) * gamma,
                          batch * gamma if engine == "vllm" and trimmed else 0, gamma + 1, gamma)
    raise VTError(f"engine model must be one of {', '.join(ENGINES)}, got {engine!r}")


@dataclass(frozen=True)
class UnitCosts:
    """Measured unit costs in milliseconds."""

    layer_ms_per_token: float     # the draft's layer(s) on one token (a one-token forward, head excluded)
    head_ms_per_row: float        # the draft head per row, at the head's k
    scatter_ms: float = 0.0       # one full-vocabulary scatter of k logits (vLLM)
    overhead_ms: float = 0.0      # the loop's own work per round
    layer_ratio: Callable[[int], float] | None = None   # a T-token forward / a one-token one
                                                        # (measured; None: T, linear)
    head_ratio: Callable[[int], float] | None = None    # the head on T rows in one matmul / on one
                                                        # row (its weight read once; None: T)


def draft_ms(shape: RoundShape, u: UnitCosts) -> float:
    """Draft time per round: each forward's layer and head at its token count, and the scatters."""
    lr, hr = u.layer_ratio or float, u.head_ratio or float
    per_forward = sum(u.layer_ms_per_token * lr(T) + u.head_ms_per_row * hr(T) for T in shape.forward_tokens)
    return per_forward + shape.scatter_rows * u.scatter_ms


def round_ms(shape: RoundShape, u: UnitCosts, verify_ms: Callable[[int], float]) -> float:
    """A round: the draft, the target's verify of `shape.verified` tokens, the loop's work."""
    return draft_ms(shape, u) + verify_ms(shape.verified) + u.overhead_ms


def predicted_speedup(tokens_per_round: float, shape: RoundShape, u: UnitCosts,
                      verify_ms: Callable[[int], float], target_ms_per_token: float) -> float:
    """Tokens per second with speculation over the target alone's, at `tokens_per_round` new
    tokens per verify (the acceptance length; from a measurement or an acceptance model)."""
    return tokens_per_round * target_ms_per_token / round_ms(shape, u, verify_ms)


def scatter_ms(k: int, vocab_size: int, rows: int = 1, repeats: int = 50, dtype=None) -> float:
    """Milliseconds of vLLM's full-vocabulary scatter for `rows` rows of k draft logits, on the CPU
    (a `new_full(-inf)` then an indexed copy, as Eagle3LlamaForCausalLM.compute_logits does)."""
    import torch

    dtype = dtype or torch.float32
    logits = torch.randn(rows, k, dtype=dtype)
    ids = torch.randperm(vocab_size)[:k].sort().values
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        full = logits.new_full((rows, vocab_size), float("-inf"))
        full[:, ids] = logits
        best = min(best, time.perf_counter() - t)
    return 1000 * best


# ---------------------------------------------------------------- the search's objective per engine
#
# The search prices a round relative to one target decode step at the same batch (vtcore.search
# Problem with engine set). A forward over T tokens per request costs roofline(T) steps of its
# model: memory-bound (the weights read once) until the batch's bs * T tokens pass
# `parallel_tokens`, linear beyond (a CPU is linear from the first token: parallel_tokens = 1).
# Draft step at k: c(k) = c_full * (1 - R(k)), layer and head together (the head computes the
# same number of rows as the layer runs tokens in every engine: 1 per request per chain step, t
# per request per tree step after the first). So per round:
#   chain:  gamma * c(k) + verify(gamma + 1)
#   vllm:   gamma * (c(k) + bs * scatter / roofline(1)) + verify(gamma + 1)   (the scatter writes
#           V logits per drafted token per request, trimmed or not)
#   sglang: c(k) * (1 + (s - 1) * roofline(t)) + verify(n)
# and the speed-up is the acceptance length (tokens per verify) over that.


def roofline(tokens: int | float, batch: int = 1, parallel_tokens: float = 1.0) -> float:
    """Cost of a forward over `tokens` per request relative to one over 1, at batch `batch`:
    max(1, bs * T / P) / max(1, bs / P)."""
    if parallel_tokens < 1:
        raise VTError(f"parallel tokens must be >= 1, got {parallel_tokens}")
    return max(1.0, batch * tokens / parallel_tokens) / max(1.0, batch / parallel_tokens)


def geometric_ranks(a, t_max: int, depth: int):
    """[depth, t_max, K] rank probabilities without a replay: the target's token is the r-th best
    kept row with probability a * (1 - a)^r (a = a0 * C(k), the chain's acceptance at r = 0),
    the same at every depth."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    r = np.arange(t_max, dtype=np.float64)[:, None]
    p = a[None, :] * (1.0 - a[None, :]) ** r
    return np.broadcast_to(p[None], (depth,) + p.shape)


def tree_accepted(ranks, topk: int, steps_max: int, tokens_max: int):
    """[steps_max, tokens_max + 1, K]: expected accepted draft tokens per round of the tree
    (s, topk, n) at s = 1..steps_max (index s - 1) and n = 0..tokens_max (index n; n < 2 is 0).

    ranks[d - 1, r, k]: probability that at depth d the target's token is the r-th best of the
    kept rows (r = 0: the chain accepts it). The tree is built as SGLang builds it, with each
    node scored by the product of its path's rank probabilities (a calibrated draft: its score
    for its r-th child is the chance that child is the target's token): depth 1 holds the t best
    children of the root, each further depth the t^2 children of the t frontier nodes, of which the
    best t are the next frontier; the n - 1 best candidates by score are drafted. The target's path
    runs through a node with that node's score (depths taken independent), and the accepted length
    is the number of drafted nodes on it, so the expected accepted tokens are the sum of the
    drafted nodes' scores. With t = 1, n = s + 1 this is the chain: sum over d of the product of
    the first d acceptances."""
    import numpy as np

    ranks = np.asarray(ranks, dtype=np.float64)
    D, R, K = ranks.shape
    if steps_max > D or topk > R:
        raise VTError(f"the rank table covers depth {D} and rank {R}, not {steps_max} and {topk}")
    t = topk
    out = np.zeros((steps_max, tokens_max + 1, K))
    frontier = ranks[0, :t].T                                     # [K, t]: the depth-1 nodes
    cands = frontier
    for d in range(1, steps_max + 1):
        if d > 1:
            children = (frontier[:, :, None] * ranks[d - 1, :t].T[:, None, :]).reshape(K, t * t)
            frontier = -np.sort(-children, axis=1)[:, :t]
            cands = np.concatenate([cands, children], axis=1)
        best = np.cumsum(-np.sort(-cands, axis=1), axis=1)        # [K, m]: the j + 1 best, summed
        m = best.shape[1]
        for n in range(2, tokens_max + 1):
            out[d - 1, n] = best[:, min(n - 2, m - 1)]
    return out


def replay_ranks(rep, order, t_max: int, k_max: int, depth: int | None = None):
    """[depth, t_max, k_max + 1] rank probabilities from an acceptance replay (vtcore.acceptance):
    for the head keeping order[:k], the share of the held-out records at depth d whose target
    token is kept with exactly r kept ids scoring above it (records past the first EOS and chains
    that would start before the continuation are not counted). Exact per depth, for every k, from
    the ids the replay records above the target's token (more than the cap: counted as rejected
    for a trimmed set, as the chain's replay does)."""
    import numpy as np

    from vtcore import acceptance

    D = rep.gamma_max if depth is None else depth
    if D > rep.gamma_max:
        raise VTError(f"the replay goes to depth {rep.gamma_max}, not {D}")
    rank = acceptance.ranks_of(order, max(rep.vocab_size, int(rep.tokens.max()) + 1))
    out = np.zeros((D, t_max, k_max + 1))
    big = k_max + 1
    for d in range(1, D + 1):
        rows, toks = [], []
        for p in rep.select(True):
            N, off, eos = int(rep.n_tokens[p]), int(rep.offsets[p]), int(rep.eos_at[p])
            j = np.arange(d - 1, N if eos < 0 else min(N, eos + 1))
            rows.append(off + j * rep.gamma_max + (d - 1))
            toks.append(rep.tokens[rep.tok_offsets[p] + j])
        r_idx, y = np.concatenate(rows), np.concatenate(toks)
        if r_idx.size == 0:
            continue
        n_above = rep.n_above[r_idx]
        ab = rep.above[r_idx].astype(np.int64)
        ab_rank = np.sort(np.where(ab >= 0, rank[np.clip(ab, 0, None)], acceptance.BIG), axis=1)
        ab_rank = np.minimum(ab_rank, big)
        lo = np.where(n_above >= acceptance.BIG, big, np.minimum(rank[y] + 1, big))
        known = n_above <= rep.cap          # more ids above than recorded: rejected (as the chain's replay)
        C = ab_rank.shape[1]
        diff = np.zeros((t_max, k_max + 3))
        for r in range(t_max):
            # exactly r kept ids above y: the r-th smallest above-rank < k <= the (r+1)-th smallest
            prev = ab_rank[:, r - 1] + 1 if 0 < r <= C else (np.zeros_like(lo) if r == 0 else np.full(lo.shape, big))
            start = np.minimum(np.maximum(lo, prev), big)
            end = np.minimum(ab_rank[:, r] if r < C else np.full(lo.shape, big), k_max)
            ok = known & (start <= end)
            np.add.at(diff[r], start[ok], 1.0)
            np.add.at(diff[r], end[ok] + 1, -1.0)
        out[d - 1] = np.cumsum(diff, axis=1)[:, :k_max + 1] / r_idx.size
    out[:, :, 0] = 0.0
    return out
