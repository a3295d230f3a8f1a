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


def k_for_coverage(curve: np.ndarray, min_coverage: float) -> int:
    """Smallest k with C(k) >= min_coverage. Raises when no k reaches it."""
    if not 0.0 <= min_coverage <= 1.0:
        raise VTError(f"coverage constraint must be in [0, 1], got {min_coverage}")
    k = int(np.searchsorted(curve, min_coverage - 1e-12, side="left"))
    if k >= curve.shape[0]:
        raise VTError(f"no k reaches coverage {min_coverage}; the best is {curve[-1]:.4f}")
    return k


def kept_ids(order: np.ndarray, k: int) -> np.ndarray:
    """The token ids a draft with k rows keeps, in ranking (frequency) order."""
    if not 1 <= k <= order.shape[0]:
        raise VTError(f"k must be between 1 and {order.shape[0]}, got {k}")
    return order[:k].copy()


CURVES = ("heldout", "insample")


@dataclass
class Coverage:
    """The two coverage curves of one counts file, each with one meaning everywhere:

    - heldout (the honest default): ranked on the fit rows, measured on the held-out rows;
      what k tokens chosen this way cover on rows the choice never saw.
    - insample: ranked on all rows, measured on all rows.

    A k returned under a coverage constraint meets it on the curve it names, and the token
    set exported for that k is `kept(curve, k)`: the set whose coverage that curve shows.
    """

    order_all: np.ndarray          # ranking from all rows
    insample: np.ndarray           # C(k) of order_all on all rows
    order_fit: np.ndarray          # ranking from the fit (non-held-out) rows
    heldout: np.ndarray | None     # C(k) of order_fit on the held-out rows (None: nothing held out)
    always_keep: list[int]

    @property
    def vocab_size(self) -> int:
        return int(self.order_all.shape[0])

    def resolve(self, curve: str = "heldout") -> str:
        """The curve actually used: 'heldout' falls back to 'insample' when nothing is held out."""
        if curve not in CURVES:
            raise VTError(f"coverage curve must be 'heldout' or 'insample', got {curve!r}")
        return "insample" if curve == "heldout" and self.heldout is None else curve

    def curve(self, curve: str = "heldout") -> np.ndarray:
        return self.heldout if self.resolve(curve) == "heldout" else self.insample

    def order(self, curve: str = "heldout") -> np.ndarray:
        """The ranking whose coverage `curve` measures."""
        return self.order_fit if self.resolve(curve) == "heldout" else self.order_all

    def kept(self, curve: str, k: int) -> np.ndarray:
        """The k ids a draft keeps when k was chosen on `curve` (ranking order)."""
        return kept_ids(self.order(curve), k)


def analyse(counts_fit: np.ndarray, counts_heldout: np.ndarray | None,
            always_keep: Sequence[int] = ()) -> Coverage:
    """Both curves: all rows ranked and measured in-sample; fit rows ranked, held-out measured."""
    counts_fit = np.asarray(counts_fit)
    all_counts = counts_fit if counts_heldout is None else counts_fit + np.asarray(counts_heldout)
    order_all = rank_tokens(all_counts, always_keep)
    order_fit = rank_tokens(counts_fit, always_keep)
    heldout = None
    if counts_heldout is not None and int(np.asarray(counts_heldout).sum()) > 0:
        heldout = coverage_curve(counts_heldout, order_fit)
    return Coverage(order_all=order_all, insample=coverage_curve(all_counts, order_all), order_fit=order_fit,
                    heldout=heldout, always_keep=list(dict.fromkeys(int(i) for i in always_keep)))


def out_of_domain(counts_a: np.ndarray, counts_b: np.ndarray,
                  always_keep: Sequence[int] = ()) -> np.ndarray:
    """C(k) of a ranking made on domain A, measured on domain B."""
    return coverage_curve(counts_b, rank_tokens(counts_a, always_keep))
