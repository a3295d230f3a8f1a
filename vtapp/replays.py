"""The dashboard's acceptance replays (vtcore.acceptance), kept in <workspace>/acceptance/ and tied
to the counts they were made for: each file's manifest names the counts' sha256
(vtcore.countsfile.counts_sha256), so a page finds the replays of the current counts and never
shows one made for another dataset.

A replay's rankings (frequency and acceptance-aware) need counts in the TARGET's tokenizer: when
the current counts were made with it, those counts; otherwise the same datasets counted with the
target's tokenizer (cached like any count), named in the manifest ("ranking_counts"). No
Streamlit here: the pages cache what these functions compute.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vtcore.errors import VTError
from vtcore.jobs import Progress, ShouldStop, Stopped
from vtcore.workspace import subdir

FOLDER = "acceptance"
RANKINGS = ("frequency", "acceptance")


@dataclass(frozen=True)
class ReplayRequest:
    """What a replay measures: the pair (None: the embedded SmolLM2 pair), the dataset file whose
    held-out rows are replayed (its fit rows make the acceptance-aware ranking), and its size."""

    target: str | None = None
    draft: str | None = None
    data: str | None = None
    prompts: int = 8
    fit_prompts: int = 16
    max_new_tokens: int = 48
    gamma_max: int = 8


def replay_path(counts_sha: str, req: ReplayRequest, workspace: str | os.PathLike | None = None) -> Path:
    """Where the replay of `req` for the counts `counts_sha` is kept (one file per request)."""
    key = hashlib.sha256(json.dumps(asdict(req), sort_keys=True).encode()).hexdigest()[:10]
    return subdir(FOLDER, workspace) / f"{counts_sha[:12]}-{key}.npz"


def read_manifest(path: str | os.PathLike) -> dict | None:
    """An acceptance file's manifest (only that member is read), or None if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            man = json.loads(str(z["manifest"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):   # a file being written or damaged
        return None
    return man if isinstance(man, dict) else None


def replays_for(counts_sha: str, workspace: str | os.PathLike | None = None) -> list[tuple[Path, dict]]:
    """(path, manifest) of every replay made for the counts `counts_sha`, newest first."""
    d = subdir(FOLDER, workspace)
    out = []
    files = [p for p in d.glob(f"{counts_sha[:12]}-*.npz") if ".tmp" not in p.name]   # not one being written
    for p in sorted(files, key=lambda q: q.stat().st_mtime, reverse=True):
        man = read_manifest(p)
        if man is not None and man.get("counts_sha256") == counts_sha:
            out.append((p, man))
    return out


def measure(req: ReplayRequest, counts_path: str, datasets: Sequence[tuple[str, str | None]], mask: str,
            progress: Progress, should_stop: ShouldStop, workspace: str | os.PathLike | None = None) -> dict:
    """Replay req's full draft over the target's continuation of req.data's held-out (and fit)
    prompts (vtcore.cmd.acceptance.run_acceptance), find the counts its rankings come from, and
    write the acceptance file tied to the counts at `counts_path`. Returns the CLI's summary
    with "path". `datasets` ((path, domain) each) and `mask` are what the counts were made from."""
    from vtcore import acceptance as A
    from vtcore import models
    from vtcore.cmd.acceptance import AcceptanceConfig, run_acceptance
    from vtcore.counts import count_dataset
    from vtcore.countsfile import counts_sha256, load_counts
    from vtcore.tokens import tokenizer_info

    cf = load_counts(counts_path)
    sha = counts_sha256(cf)

    def part(lo: float, hi: float) -> Progress:
        def report(f: float, text: str = "") -> None:
            if should_stop():   # the replay checks nothing itself: stop at its next progress report
                raise Stopped("stopped; no acceptance file was written")
            progress(lo + (hi - lo) * f, text)
        return report

    cfg = AcceptanceConfig(target=req.target, draft=req.draft, data=req.data, gamma_max=req.gamma_max,
                           prompts=req.prompts, fit_prompts=req.fit_prompts, max_new_tokens=req.max_new_tokens,
                           device="cpu", workspace=None if workspace is None else str(workspace))
    rep, summary = run_acceptance(cfg, None, progress=part(0.0, 0.9))
    tok = models.load_tokenizer_from(req.target, workspace)
    tinfo = tokenizer_info(tok)
    same = tinfo.sha256 == cf.manifest.get("tokenizer_sha256") and len(tok) == cf.vocab_size
    if same:
        rank_path, rcf = str(counts_path), cf
    else:   # the counts are in another tokenizer: the same data counted with the target's
        progress(0.92, "counting the data with the target's tokenizer")
        rcf, info = count_dataset(list(datasets), tokenizer=tok, mask=mask if mask != "generate" else "template",
                                  workspace=None if workspace is None else str(workspace),
                                  progress=part(0.9, 0.99), should_stop=should_stop)
        rank_path = info["counts_path"]
    A.check_counts(rep, rcf.vocab_size, f"the counts {rank_path}")
    rep.manifest.update(counts_sha256=sha, counts_path=str(counts_path), ranking_counts=str(rank_path),
                        ranking_counts_sha256=counts_sha256(rcf), same_tokenizer=bool(same),
                        ranking_tokenizer=tinfo.name, request=asdict(req))
    path = A.save_acceptance(replay_path(sha, req, workspace), rep)
    progress(1.0, "done")
    return {**summary, "manifest": rep.manifest, "path": str(path)}


# ---------------------------------------------------------------- what the pages draw


@dataclass
class AcceptanceCurves:
    """Per ranking (frequency, acceptance): held-out C(k) and replayed A(k) at one gamma, k = 0..V
    of the ranking counts; `full` is the full head's replayed accepted tokens per step."""

    gamma: int
    full: float
    coverage: dict[str, np.ndarray]
    accepted: dict[str, np.ndarray]
    orders: dict[str, np.ndarray]
    vocab: int

    def at(self, ranking: str, k: int) -> tuple[float, float]:
        """(held-out C, replayed A) of `ranking`'s first k ids."""
        k = int(min(max(k, 0), self.vocab))
        return float(self.coverage[ranking][k]), float(self.accepted[ranking][k])


def acceptance_curves(rep: Any, rcf: Any, gamma: int) -> AcceptanceCurves:
    """Both rankings of the replay `rep` over the counts `rcf` (their tokenizer), at `gamma`."""
    from vtcore import acceptance as A

    if not 1 <= gamma <= rep.gamma_max:
        raise VTError(f"gamma {gamma} outside the replay's 1..{rep.gamma_max}")
    held = rcf.counts_heldout if int(rcf.counts_heldout.sum()) else rcf.counts
    V = int(rcf.vocab_size)
    cov, acc, orders = {}, {}, {}
    rankings = RANKINGS if rep.select(False).size else RANKINGS[:1]
    for r in rankings:
        order = A.ranking_for(rep, rcf.counts_fit, rcf.always_keep, r)
        c = np.concatenate([[0.0], np.cumsum(held[order]) / max(int(held.sum()), 1)])
        cov[r] = np.concatenate([c, np.full(V + 1 - c.size, c[-1])]) if c.size < V + 1 else c[: V + 1]
        acc[r] = A.acceptance_table(rep, order, [gamma], k_max=V)[0]
        orders[r] = order
    full = float(A.for_set(rep, None, gamma).accepted_per_step[0])
    return AcceptanceCurves(gamma, full, cov, acc, orders, V)


def acceptance_choice(cf: Any, path: str | os.PathLike, k: int, extra_keep: Sequence[int] = ()) -> Any:
    """The first k ids of the acceptance-aware ranking of the replay at `path` over `cf`: what
    `vtcore export --ranking acceptance --acceptance FILE --k K` exports."""
    from vtcore import acceptance as A
    from vtcore.selection import choose_ranked

    rep = A.load_acceptance(path)
    try:
        order = A.ranking_for(rep, cf.counts_fit, list(cf.always_keep) + list(extra_keep), "acceptance")
    except VTError as e:
        raise VTError(f"{path}: {e}") from None
    if not 1 <= k <= order.size:
        raise VTError(f"k must be between 1 and {order.size}, got {k}")
    how = f"k given, acceptance-aware ranking ({Path(path).name}: {int((~rep.heldout).sum())} fit-row prompts replayed)"
    return choose_ranked(cf, order, k, "acceptance", how=how)
