"""Counting's running result, shared by the engines: each engine (local, Ray) fills a Tally and
counts.counts_file turns it into a CountsFile, so every engine ends in the same arrays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from vtcore.data import ReadStats


@dataclass
class DataSource:
    path: str                     # a file, a saved-dataset folder, or hf:ID[:CONFIG][:SPLIT]
    domain: str | None = None


@dataclass
class Tally:
    """Per-domain bincounts of the fit and the held-out rows, in the order the domains first
    appear in the data (file by file, row by row)."""

    vocab_size: int
    domains: list[str] = field(default_factory=list)
    fit: list[np.ndarray] = field(default_factory=list)    # int64[V] per domain
    held: list[np.ndarray] = field(default_factory=list)
    reads: list[ReadStats] = field(default_factory=list)   # one per dataset

    def domain_index(self, name: str) -> int:
        if name not in self.domains:
            self.domains.append(name)
            self.fit.append(np.zeros(self.vocab_size, dtype=np.int64))
            self.held.append(np.zeros(self.vocab_size, dtype=np.int64))
        return self.domains.index(name)

    def add(self, keys: list[tuple[int, bool]], ids_per_row: list[list[int]]) -> None:
        """Rows' ids under their (domain index, held out) keys, one bincount per key."""
        buckets: dict[tuple[int, bool], list[list[int]]] = {}
        for key, ids in zip(keys, ids_per_row):
            buckets.setdefault(key, []).append(ids)
        for (d, held), rows in buckets.items():
            flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64)
            if flat.size:
                (self.held if held else self.fit)[d] += np.bincount(flat, minlength=self.vocab_size)

    def nonzero(self) -> list[tuple[str, bool, np.ndarray, np.ndarray]]:
        """(domain, held out, ids, counts) of each domain and split's nonzero counts: what merge()
        adds, a few thousand ids where the arrays hold V."""
        out = []
        for name, f, h in zip(self.domains, self.fit, self.held):
            for held, c in ((False, f), (True, h)):
                ids = np.flatnonzero(c)
                out.append((name, held, ids.astype(np.int32), c[ids]))
        return out

    def merge(self, name: str, held: bool, ids: np.ndarray, counts: np.ndarray) -> None:
        """Add another tally's counts of one domain and split, as its nonzero (ids, counts)."""
        (self.held if held else self.fit)[self.domain_index(name)][ids] += counts

    def reorder(self, names: list[str]) -> None:
        """Put the domains in this order (an engine that merges out of order restores the
        order of first appearance)."""
        at = [self.domains.index(n) for n in names]
        self.domains = list(names)
        self.fit = [self.fit[i] for i in at]
        self.held = [self.held[i] for i in at]
