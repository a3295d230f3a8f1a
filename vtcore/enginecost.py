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
