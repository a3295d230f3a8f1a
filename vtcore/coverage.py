"""Ranking and coverage: which k tokens a trimmed draft keeps, and what share of the
assistant tokens they cover.

Conventions used across vtcore:
- `order` is a permutation of all V token ids: always-keep ids first (in the order given),
  then the rest by count descending, ties by token id ascending (deterministic).
- A coverage curve is a float64 array of length V + 1 with curve[k] = C(k), the share of
  measured tokens whose id is among the first k ids of `order`; curve[0] = 0, curve[V] = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vtcore.errors import VTError


def rank_tokens(counts: np.ndarray, always_keep: Sequence[int] = ()) -> np.ndarray:
    """All ids ordered for keeping: always-keep first, then by count desc, ties by id asc."""
    counts = np.asarray(counts)
    V = counts.shape[0]
    keep = list(dict.fromkeys(int(i) for i in always_keep))  # de-duplicate, keep order
    for i in keep:
        if not 0 <= i < V:
            raise VTError(f"always-keep token id {i} is outside the vocabulary (size {V})")
    # a stable sort on -counts keeps equal counts in ascending id order
    by_count = np.argsort(-counts, kind="stable")
    if not keep:
        return by_count.astype(np.int64)
    is_keep = np.zeros(V, dtype=bool)
    is_keep[keep] = True
    return np.concatenate([np.array(keep, dtype=np.int64), by_count[~is_keep[by_count]]])


def coverage_curve(counts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """C(k) for every k = 0..V in one array: the share of `counts` covered by order[:k]."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape[0] != order.shape[0]:
        raise VTError(f"counts have {counts.shape[0]} ids but the ranking has {order.shape[0]}")
    total = int(counts.sum())
    if total == 0:
        raise VTError("no tokens to measure coverage on (the measured part of the data is empty)")
    curve = np.empty(counts.shape[0] + 1, dtype=np.float64)
    curve[0] = 0.0
    np.cumsum(counts[order], out=curve[1:])
    curve /= total
    curve[-1] = 1.0  # exact, whatever the float rounding of the running sum
    return curve


def k_for_coverage(curve: np.ndarray, target: float) -> int:
    """Smallest k with C(k) >= target. Raises when no k reaches it."""
    if not 0.0 <= target <= 1.0:
        raise VTError(f"coverage target must be in [0, 1], got {target}")
    k = int(np.searchsorted(curve, target - 1e-12, side="left"))
    if k >= curve.shape[0]:
        raise VTError(f"no k reaches coverage {target}; the best is {curve[-1]:.4f}")
    return k


def kept_ids(order: np.ndarray, k: int) -> np.ndarray:
    """The token ids a draft with k rows keeps, in ranking (frequency) order."""
    if not 1 <= k <= order.shape[0]:
        raise VTError(f"k must be between 1 and {order.shape[0]}, got {k}")
    return order[:k].copy()


@dataclass
class Coverage:
    """Curves for one counts file: ranked on the fit rows, measured in-sample and held out."""

    order: np.ndarray            # ranking from the fit (non-held-out) rows
    insample: np.ndarray         # C(k) measured on the rows the ranking was made from
    heldout: np.ndarray | None   # C(k) on held-out rows (None when there are none)
    always_keep: list[int]
    order_all: np.ndarray        # ranking from all rows (what an export of "the data" keeps)
    insample_all: np.ndarray     # C(k) of order_all on all rows

    @property
    def vocab_size(self) -> int:
        return int(self.order.shape[0])

    def curve(self, which: str = "heldout") -> np.ndarray:
        """'heldout' (the honest default; falls back to in-sample when nothing is held out)
        or 'insample'."""
        if which == "heldout":
            return self.heldout if self.heldout is not None else self.insample
        if which == "insample":
            return self.insample
        raise VTError(f"coverage must be 'heldout' or 'insample', got {which!r}")


def analyse(counts_fit: np.ndarray, counts_heldout: np.ndarray | None,
            always_keep: Sequence[int] = ()) -> Coverage:
    """Rank on the fit part, measure on it and on the held-out part."""
    order = rank_tokens(counts_fit, always_keep)
    insample = coverage_curve(counts_fit, order)
    heldout = None
    if counts_heldout is not None and int(np.asarray(counts_heldout).sum()) > 0:
        heldout = coverage_curve(counts_heldout, order)
    all_counts = np.asarray(counts_fit) + (0 if counts_heldout is None else np.asarray(counts_heldout))
    order_all = rank_tokens(all_counts, always_keep)
    return Coverage(order=order, insample=insample, heldout=heldout,
                    always_keep=list(dict.fromkeys(int(i) for i in always_keep)),
                    order_all=order_all, insample_all=coverage_curve(all_counts, order_all))


def out_of_domain(counts_a: np.ndarray, counts_b: np.ndarray,
                  always_keep: Sequence[int] = ()) -> np.ndarray:
    """C(k) of a ranking made on domain A, measured on domain B."""
    return coverage_curve(counts_b, rank_tokens(counts_a, always_keep))
