"""The selected point: which k (and from which coverage curve, study trial or frontier point)
the user chose. The CLI's `export` builds one from its flags; the dashboard's Coverage and
Frontier pages make one, and the Export and Benchmark pages read it (vtapp saves it in the
workspace state as a plain dict).

The token set a selection stands for is `Coverage.kept(curve, k)`: the ranking whose coverage
the curve measures, so the exported set is the one whose coverage was shown for that k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from vtcore.coverage import CURVES, Coverage, k_for_coverage
from vtcore.errors import VTError

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
