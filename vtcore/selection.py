"""The chosen point and the token set it stands for: the one home of choosing.

`Selection` is the point: which k, on which coverage curve, from where (a coverage constraint,
the exact frontier, a study trial, typed in). The dashboard's Coverage and Frontier pages make
one, and the Export and Benchmark pages read it (vtapp saves it in the workspace state as a
plain dict).

`ChosenIds` is what a point resolves to on one counts file: the kept ids, in ranking order, and
the coverage figures and provenance that describe exactly them. `choose(cf, selection)` resolves
a Selection; the CLI's `export` flags go through `choose_k`, `choose_min_coverage`,
`choose_from_study` and `choose_ranked` (a ranking made elsewhere, the acceptance-aware one);
`of_ids` describes ids chosen anywhere else (the benchmark's search, a token map, a draft's d2t).
vtcore.export renders them into the engines' formats; vtcore.bench trims its draft to them.

The ids a point stands for are `Coverage.kept(curve, k)`: the ranking whose coverage the curve
measures, so the exported set is the one whose coverage was shown for that k.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from vtcore.countsfile import CountsFile, counts_sha256
from vtcore.coverage import CURVES, Coverage, k_for_coverage
from vtcore.errors import VTError
from vtcore.studies import read_trial

SOURCES = ("coverage", "exact", "trial", "manual")


@dataclass(frozen=True)
class Selection:
    k: int
    curve: str = "heldout"                  # coverage curve k was chosen on (its ranking is exported)
    source: str = "manual"                  # coverage | exact | trial | manual
    counts_path: str | None = None          # the counts file it belongs to
    coverage: float | None = None           # C(k) on `curve`
    latency_reduction: float | None = None  # R(k) of `draft`, when known
    draft: str | None = None
    study: str | None = None                # source "trial": the study and trial number
    trial: int | None = None
    gamma: int | None = None

    def __post_init__(self) -> None:
        if self.curve not in CURVES:
            raise VTError(f"coverage curve must be one of {', '.join(CURVES)}, got {self.curve!r}")
        if self.source not in SOURCES:
            raise VTError(f"selection source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if int(self.k) < 1:
            raise VTError(f"k must be >= 1, got {self.k}")
        if self.source == "trial" and (not self.study or self.trial is None):
            raise VTError("a trial selection needs its study name and trial number")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Selection | None":
        """A saved selection, or None when there is none or it cannot be read (an older format)."""
        if not d:
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, ValueError, VTError):
            return None

    def provenance(self) -> str:
        """Where the point came from, without k: 'trial 3 of chat, heldout C = 0.9512'."""
        where = {"trial": f"trial {self.trial} of {self.study}", "exact": "exact frontier",
                 "coverage": "coverage constraint", "manual": "typed in"}[self.source]
        c = "" if self.coverage is None else f", {self.curve} C = {self.coverage:.4f}"
        return f"{where}{c}"

    def label(self) -> str:
        return f"k = {int(self.k):,} ({self.provenance()})"


def for_min_coverage(cov: Coverage, min_coverage: float, curve: str = "heldout",
                     counts_path: str | None = None) -> Selection:
    """The smallest k whose coverage on `curve` meets the constraint (never fewer than the
    always-keep ids)."""
    used = cov.resolve(curve)
    C = cov.curve(used)
    k = max(k_for_coverage(C, min_coverage), len(cov.always_keep), 1)
    return Selection(k=int(k), curve=used, source="coverage", counts_path=counts_path, coverage=float(C[k]))


# ---------------------------------------------------------------- resolving a point to its ids

@dataclass
class ChosenIds:
    """The ids a chosen point stands for on one counts file, and the figures that describe them."""

    ids: np.ndarray                 # int64[k] target ids, ranking order (always-keep first)
    curve: str                      # the ranking the ids are a prefix of: a coverage curve's (heldout |
                                    # insample) or one named where it was made (acceptance, frequency, token map)
    tokenizer_vocab: int            # V of the counts = len(tokenizer)
    coverage: float | None          # C(k) on `curve`: the figure shown for this k
    coverage_all_rows: float        # share of all counted assistant tokens the ids cover
    coverage_heldout_rows: float | None  # share of the held-out rows' tokens they cover (None: none held out)
    manifest: dict                  # the counts file's provenance
    always_keep: list[int]
    how: str                        # human description: "k = 4096", "smallest k with ...", "study s trial 3"
    extra: dict = field(default_factory=dict)   # study trial facts: latency_reduction, alpha, ...
    # when a search chose gamma with k (the benchmark's): that gamma, its predicted speed-up, and
    # what the acceptance was modelled on ("replay": the replayed A(k, gamma); "a0*C(k)")
    gamma: int | None = None
    predicted_speedup: float | None = None
    chosen_on: str = "a0*C(k)"

    @property
    def k(self) -> int:
        return int(self.ids.size)

    @property
    def sorted_ids(self) -> np.ndarray:
        return np.sort(self.ids)


def of_ids(cf: CountsFile, ids: np.ndarray, curve: str, how: str, coverage: float | None = None,
           always_keep: list[int] | None = None) -> ChosenIds:
    """The ChosenIds of ids chosen by any means, with their coverage of this counts file's rows
    (ids past the counts' vocabulary, say from another tokenizer's token map, cover nothing)."""
    ids = np.asarray(ids, dtype=np.int64)
    inside = ids[ids < cf.vocab_size]
    held_total = int(cf.counts_heldout.sum())
    return ChosenIds(ids=ids, curve=curve, tokenizer_vocab=cf.vocab_size, coverage=coverage,
                     coverage_all_rows=float(cf.counts[inside].sum() / max(int(cf.counts.sum()), 1)),
                     coverage_heldout_rows=float(cf.counts_heldout[inside].sum() / held_total) if held_total else None,
                     manifest=dict(cf.manifest), how=how,
                     always_keep=list(cf.always_keep if always_keep is None else always_keep))


def choose_k(cf: CountsFile, k: int, curve: str = "heldout", extra_keep: list[int] | None = None,
             how: str | None = None) -> ChosenIds:
    """The first k ids of the ranking whose coverage `curve` measures (always-keep first)."""
    cov = cf.coverage(extra_keep)
    if not 1 <= k <= cov.vocab_size:
        raise VTError(f"k must be between 1 and {cov.vocab_size} (the tokenizer's size), got {k}")
    used = cov.resolve(curve)
    return of_ids(cf, cov.kept(used, k), used, how or f"k given, {used} ranking", float(cov.curve(used)[k]),
                  cov.always_keep)


def choose_ranked(cf: CountsFile, order: np.ndarray, k: int, curve: str, how: str) -> ChosenIds:
    """The first k ids of a ranking made elsewhere (the acceptance-aware one: `curve` names it),
    with their held-out coverage as C(k)."""
    if not 1 <= k <= len(order):
        raise VTError(f"k must be between 1 and {len(order)}, got {k}")
    ids = np.asarray(order[:k], dtype=np.int64)
    held_total = int(cf.counts_heldout.sum())
    at_k = float(cf.counts_heldout[ids].sum() / held_total) if held_total else None
    return of_ids(cf, ids, curve, how, at_k)


def choose_min_coverage(cf: CountsFile, min_coverage: float, curve: str = "heldout",
                        extra_keep: list[int] | None = None) -> ChosenIds:
    """The smallest k whose coverage on `curve` meets the constraint."""
    sel = for_min_coverage(cf.coverage(extra_keep), min_coverage, curve)
    return choose_k(cf, sel.k, sel.curve, extra_keep,
                    how=f"smallest k with {sel.curve} coverage >= {min_coverage}")


_LATENCY_SOURCES = {"flops": "FLOPs per draft token (vtcore.cost)",
                    "paper-flops": "the seed paper's FLOPs proxy (vtcore.cost, no attention scores)"}


def choose_from_study(cf: CountsFile, name: str, trial: int | str, workspace: str | os.PathLike | None = None,
                      extra_keep: list[int] | None = None) -> ChosenIds:
    """The k of a study trial ("best" for the best feasible one), on the curve the study was run
    on; the study's objective facts go into the summary."""
    settings, row = read_trial(name, trial, workspace)
    trial = row["number"]
    made_for, these = settings.get("counts_sha256"), counts_sha256(cf)
    if made_for is not None and made_for != these:
        raise VTError(f"study {name!r} was run on other counts (sha256 {made_for[:12]}…) than these "
                      f"(sha256 {these[:12]}…): its k does not mean the same coverage here; export with the "
                      "counts the study was made for, or choose k with --k / --min-coverage")
    choice = choose_k(cf, int(row["k"]), settings.get("coverage_source", "heldout"), extra_keep,
                      how=f"study {name} trial {trial}")
    src = settings.get("latency_source")
    choice.extra = {
        "study": name, "trial": trial, "gamma": row.get("gamma"), "feasible": row.get("feasible"),
        "values": row.get("values"),
        "latency_reduction": row.get("latency_reduction"),
        "latency_estimate": _LATENCY_SOURCES.get(src, f"measured latency profile {src}" if src else None),
        "alpha": settings.get("alpha"), "min_coverage": settings.get("min_coverage"),
        "objective": settings.get("objective"), "utility": row.get("utility"),
        "predicted_speedup": row.get("speedup"),
        "counts_checked": made_for is not None,   # a study from before the counts' hash was recorded
    }
    return choice


def choose(cf: CountsFile, sel: Selection, extra_keep: list[int] | None = None,
           workspace: str | os.PathLike | None = None) -> ChosenIds:
    """The token set a selection stands for (a trial's k and curve come from its study)."""
    if sel.source == "trial":
        return choose_from_study(cf, sel.study, sel.trial, workspace, extra_keep)
    return choose_k(cf, sel.k, sel.curve, extra_keep, how=sel.provenance())
