"""The counts file (docs/design.md, "Contracts"): `counts` int64[V] + `manifest` JSON, in one .npz.

Extra arrays beside the contract's two (readers that only know the contract ignore them):
- counts_fit, counts_heldout  int64[V]: the deterministic row split used for held-out coverage
- domain_names                JSON list; counts_by_domain int64[D, V] (rows of each domain)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from vtcore.coverage import Coverage, analyse, out_of_domain
from vtcore.errors import VTError
from vtcore.files import VOCAB_LIMIT, atomic_file, check_npz

FORMAT = "vtcore-counts/1"


@dataclass
class CountsFile:
    counts: np.ndarray                    # int64[V], all counted rows
    manifest: dict
    counts_fit: np.ndarray                # int64[V], rows used for ranking
    counts_heldout: np.ndarray            # int64[V], held-out rows
    domain_names: list[str] = field(default_factory=list)
    counts_by_domain: np.ndarray | None = None   # int64[D, V]

    @property
    def vocab_size(self) -> int:
        return int(self.counts.shape[0])

    @property
    def always_keep(self) -> list[int]:
        return [int(i) for i in self.manifest.get("always_keep", [])]

    def coverage(self, extra_keep: list[int] | None = None) -> Coverage:
        """Ranking and curves; `extra_keep` adds user ids to the always-keep set."""
        return analyse(self.counts_fit, self.counts_heldout, self.always_keep + list(extra_keep or []))

    def domain_counts(self, name: str) -> np.ndarray:
        if name not in self.domain_names:
            raise VTError(f"domain {name!r} not in this counts file (has: {', '.join(self.domain_names) or 'none'})")
        return self.counts_by_domain[self.domain_names.index(name)]

    def ood_curve(self, rank_on: str, measure_on: str) -> np.ndarray:
        """C(k) ranked on domain `rank_on`, measured on domain `measure_on`."""
        return out_of_domain(self.domain_counts(rank_on), self.domain_counts(measure_on), self.always_keep)


def counts_sha256(cf: CountsFile) -> str:
    """The identity of the counts themselves (all rows and the held-out ones, which make both
    curves), not of the file: a recount of the same data has the same hash."""
    h = hashlib.sha256()
    for a in (cf.counts, cf.counts_heldout):
        h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
    return h.hexdigest()


def save_counts(path: str | os.PathLike, cf: CountsFile, force: bool = False,
                inputs: Iterable[str | os.PathLike] = (), flag: str = "--out") -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a file; an existing
    file is replaced only with force, an input of the command never (vtcore.files.atomic_file)."""
    path = Path(path)
    arrays = {
        "counts": cf.counts.astype(np.int64),
        "manifest": np.array(json.dumps(cf.manifest, sort_keys=True)),
        "counts_fit": cf.counts_fit.astype(np.int64),
        "counts_heldout": cf.counts_heldout.astype(np.int64),
        "domain_names": np.array(json.dumps(cf.domain_names)),
    }
    if cf.counts_by_domain is not None:
        arrays["counts_by_domain"] = cf.counts_by_domain.astype(np.int64)
    with atomic_file(path, force=force, inputs=inputs, flag=flag) as f:
        np.savez_compressed(f, **arrays)
    return path


INT64_MAX = (1 << 63) - 1


def _exact_sum(a: np.ndarray) -> int:
    """The sum in Python ints (no wrap-around): int64 sums of forged counts can come out negative."""
    return sum(int(x) for x in a.tolist())


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], by_domain: np.ndarray | None, names: list) -> None:
    """Wrong figures must not load quietly (a short or negative array gives a wrong C(k)): one
    length V for every array, non-negative integers, counts = fit + held-out = sum of domains."""
    V = arrays["counts"].shape[0] if arrays["counts"].ndim == 1 else None
    if V is not None and V > VOCAB_LIMIT:
        raise VTError(f"{path}: field 'counts' has {V:,} entries, more token ids than any vocabulary "
                      f"(limit {VOCAB_LIMIT:,})")
    for name, a in arrays.items():
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise VTError(f"{path}: field '{name}' must be a 1-D integer array, got {a.dtype}{list(a.shape)}")
        if a.shape[0] != V:
            raise VTError(f"{path}: field '{name}' has {a.shape[0]:,} entries but 'counts' has {V:,}: every array "
                          "must have one entry per token id (V)")
        if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
            raise VTError(f"{path}: field '{name}' has negative counts (token id {int(np.argmin(a))}: "
                          f"{int(a.min())}); counts are never negative")
        if a.size and int(a.max()) > INT64_MAX // max(a.size, 1) and _exact_sum(a) > INT64_MAX:
            raise VTError(f"{path}: field '{name}' sums to {_exact_sum(a):,}, past what int64 holds: the counts "
                          "overflowed or were edited")
    counts, fit, held = arrays["counts"], arrays["counts_fit"], arrays["counts_heldout"]
    if fit is not counts and not np.array_equal(fit.astype(np.int64) + held, counts):
        raise VTError(f"{path}: fields 'counts_fit' + 'counts_heldout' do not add up to 'counts'")
    if by_domain is not None:
        if by_domain.ndim != 2 or by_domain.dtype.kind not in "iu" or by_domain.shape != (len(names), V):
            raise VTError(f"{path}: field 'counts_by_domain' must be an integer array of shape "
                          f"[{len(names)} domains, {V:,}], got {by_domain.dtype}{list(by_domain.shape)}")
        if by_domain.dtype.kind == "i" and by_domain.size and int(by_domain.min()) < 0:
            raise VTError(f"{path}: field 'counts_by_domain' has negative counts")
        if not np.array_equal(by_domain.sum(axis=0, dtype=np.int64), counts):
            raise VTError(f"{path}: field 'counts_by_domain' does not add up to 'counts'")


def _check_manifest(path: Path, manifest, counts: np.ndarray, names: list) -> None:
    """The manifest's own figures must be those of the arrays beside it."""
    if not isinstance(manifest, dict):
        raise VTError(f"{path}: field 'manifest' must be a JSON object, got {type(manifest).__name__}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise VTError(f"{path}: field 'domain_names' must be a JSON list of names")
    V, total = int(counts.shape[0]), int(counts.sum(dtype=np.int64))
    if "vocab_size" in manifest and manifest["vocab_size"] != V:
        raise VTError(f"{path}: manifest says vocab_size {manifest['vocab_size']!r} but 'counts' has {V:,} entries")
    if "assistant_tokens" in manifest and manifest["assistant_tokens"] != total:
        raise VTError(f"{path}: manifest says assistant_tokens {manifest['assistant_tokens']!r} but 'counts' sums "
                      f"to {total:,}")
    keep = manifest.get("always_keep", [])
    if not isinstance(keep, list) or not all(isinstance(i, int) and 0 <= i < V for i in keep):
        raise VTError(f"{path}: manifest field 'always_keep' must list token ids in [0, {V})")


def load_counts(path: str | os.PathLike) -> CountsFile:
    """Read a counts file; only plain arrays (allow_pickle=False), so loading runs no code."""
    path = Path(path)
    if not path.is_file():
        raise VTError(f"{path}: counts file not found")
    check_npz(path)   # every array's declared size, before anything is decompressed
    try:
        with np.load(path, allow_pickle=False) as z:
            if "counts" not in z or "manifest" not in z:
                raise VTError(f"{path}: not a counts file (needs 'counts' and 'manifest', has {sorted(z.files)})")
            counts = z["counts"]
            manifest = json.loads(str(z["manifest"]))
            fit = z["counts_fit"] if "counts_fit" in z else counts
            heldout = z["counts_heldout"] if "counts_heldout" in z else np.zeros_like(counts)
            names = json.loads(str(z["domain_names"])) if "domain_names" in z else []
            by_domain = z["counts_by_domain"] if "counts_by_domain" in z else None
    except VTError:
        raise
    except Exception as e:  # zip/format errors: say which file
        raise VTError(f"{path}: cannot read counts file ({e})") from e
    _check_arrays(path, {"counts": counts, "counts_fit": fit, "counts_heldout": heldout}, by_domain, names)
    _check_manifest(path, manifest, counts, names)
    return CountsFile(counts=counts.astype(np.int64), manifest=manifest, counts_fit=fit.astype(np.int64),
                      counts_heldout=heldout.astype(np.int64), domain_names=list(names),
                      counts_by_domain=None if by_domain is None else by_domain.astype(np.int64, copy=False))
