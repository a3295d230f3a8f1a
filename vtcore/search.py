"""Objectives over the draft vocabulary k, their exact solution, and a background Optuna search.

- Utility (the seed paper): U(k) = alpha * C(k) + (1 - alpha) * R(k), s.t. C(k) >= min_coverage and
  k_min <= k <= k_max.
- Speed-up (Leviathan et al. 2023): a(k) = a0 * C(k), c(k) = t_draft(k) / t_target =
  c_full * (1 - R(k)), S = (1 - a^(gamma+1)) / ((1 - a) * (gamma * c(k) + 1)); space (k, gamma).
- Pareto: maximise C and R together.

Every objective is solved exactly by one vectorised sweep over every integer k (and every
gamma); that is the ground truth each TPE result is compared with (regret). TPE samples k on a
log scale by default: C(k) changes over orders of magnitude of k (token frequencies are
Zipf-like), so uniform sampling of 151,936 values would spend almost every trial on the flat
tail.

Arrays indexed by k have length V + 1 (k = 0..V), V the draft's own vocabulary; a coverage
curve made with a smaller tokenizer is padded with 1.0 (ids past the tokenizer are never used).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtcore.errors import VTError
from vtcore.jobs import Job
from vtcore.workspace import subdir

OBJECTIVES = ("utility", "speedup", "pareto")


# ---------------------------------------------------------------------------------------------
# Objective functions (vectorised)

def utility(coverage: np.ndarray, reduction: np.ndarray, alpha: float) -> np.ndarray:
    return alpha * np.asarray(coverage) + (1.0 - alpha) * np.asarray(reduction)


def predicted_speedup(a: np.ndarray | float, gamma: np.ndarray | int,
                      cost_ratio: np.ndarray | float, verify_cost: float = 1.0) -> np.ndarray:
    """Expected speed-up of speculative decoding over target-only decoding (Leviathan et al.
    2023, eq. for walltime improvement): per-token acceptance a, draft length gamma, cost ratio
    c = t_draft / t_target. Broadcasts over its arguments; a = 1 gives (gamma + 1) / (gamma c + 1).
    verify_cost: a (gamma+1)-token target forward in one-token target steps; the paper takes 1
    (true on a GPU), a CPU pays more (the benchmark measures it)."""
    a, g, c = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(gamma, dtype=np.float64),
                                  np.asarray(cost_ratio, dtype=np.float64))
    one = np.isclose(a, 1.0)
    safe = np.where(one, 0.5, a)
    tokens = np.where(one, g + 1.0, (1.0 - safe ** (g + 1.0)) / (1.0 - safe))
    return tokens / (g * c + verify_cost)


def pareto_mask(coverage: np.ndarray, reduction: np.ndarray) -> np.ndarray:
    """True where (C, R) is not dominated (both maximised). Of identical points the first is kept.
    O(n log n): sorted by R descending, a point is on the front iff its C beats every point
    before it."""
    C = np.asarray(coverage, dtype=np.float64)
    R = np.asarray(reduction, dtype=np.float64)
    idx = np.arange(C.shape[0])
    order = np.lexsort((idx, -C, -R))
    Cs = C[order]
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(Cs)[:-1]])
    mask = np.zeros(C.shape[0], dtype=bool)
    mask[order[Cs > best_before]] = True
    return mask


def hypervolume_2d(coverage: np.ndarray, reduction: np.ndarray, ref: tuple[float, float] = (0.0, 0.0)) -> float:
    """Area dominated by the (C, R) points above the reference point (both maximised)."""
    C = np.asarray(coverage, dtype=np.float64)
    R = np.asarray(reduction, dtype=np.float64)
    keep = (C > ref[0]) & (R > ref[1])
    C, R = C[keep], R[keep]
    if C.size == 0:
        return 0.0
    m = pareto_mask(C, R)
    C, R = C[m], R[m]
    o = np.argsort(C)
    C, R = C[o], R[o]     # C ascending, so R descending along a front
    widths = np.diff(np.concatenate([[ref[0]], C]))
    return float(np.sum(widths * (R - ref[1])))


def pad_curve(curve: np.ndarray, vocab: int) -> np.ndarray:
    """A coverage curve (length V_tok + 1) extended to the draft's vocabulary (length vocab + 1)."""
    curve = np.asarray(curve, dtype=np.float64)
    n = curve.shape[0] - 1
    if n > vocab:
        raise VTError(f"the coverage curve has {n:,} token ids but the draft has only {vocab:,} vocabulary rows")
    if n == vocab:
        return curve
    return np.concatenate([curve, np.full(vocab - n, curve[-1])])


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The problem and its exact solution

@dataclass
class Problem:
    coverage: np.ndarray            # C(k), k = 0..V
    reduction: np.ndarray           # R(k), k = 0..V
    objective: str = "utility"
    alpha: float = 0.5
    min_coverage: float = 0.0
    k_min: int = 1
    k_max: int | None = None        # None: V
    k_log: bool = True
    a0: float = 0.7                 # acceptance of the draft with its full vocabulary
    cost_ratio_full: float | None = None   # t_draft(V) / t_target (speed-up objective)
    verify_costs: tuple[float, ...] | None = None   # verify of gamma+1 tokens / one target step, for
                                                    # gamma = 1, 2, ... (None: 1, a GPU's cost)
    gamma_min: int = 1
    gamma_max: int = 8
    coverage_source: str = "heldout"
    latency_source: str = "flops"
    counts_sha256: str | None = None   # the counts C(k) came from (countsfile.counts_sha256)
    accepted: np.ndarray | None = field(default=None, repr=False)   # [G, V+1]: replayed accepted draft
    # tokens per step of order[:k] at gamma = 1..G (vtcore.acceptance); None: the a0 * C(k) model
    acceptance_source: str | None = None   # where `accepted` came from (an acceptance file)

    def __post_init__(self) -> None:
        self.coverage = np.asarray(self.coverage, dtype=np.float64)
        self.reduction = np.asarray(self.reduction, dtype=np.float64)
        if self.k_max is None:
            self.k_max = self.vocab
        self.validate()

    @property
    def vocab(self) -> int:
        return int(self.coverage.shape[0] - 1)

    def validate(self) -> None:
        V = self.vocab
        if self.objective not in OBJECTIVES:
            raise VTError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.reduction.shape != self.coverage.shape:
            raise VTError(f"latency reduction covers {self.reduction.shape[0] - 1:,} k values, coverage {V:,}")
        if not 0.0 <= self.alpha <= 1.0 or math.isnan(self.alpha):
            raise VTError(f"--alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise VTError(f"--min-coverage must be in [0, 1], got {self.min_coverage}")
        if self.k_min < 1:
            raise VTError(f"--k-min must be >= 1, got {self.k_min}")
        if self.k_max > V:
            raise VTError(f"--k-max {self.k_max:,} exceeds the draft's vocabulary ({V:,})")
        if self.k_min > self.k_max:
            raise VTError(f"--k-min {self.k_min:,} is larger than --k-max {self.k_max:,}")
        reachable = float(self.coverage[self.k_min:self.k_max + 1].max())
        if reachable < self.min_coverage:
            raise VTError(f"no k in [{self.k_min:,}, {self.k_max:,}] reaches coverage {self.min_coverage} "
                          f"({self.coverage_source}); the best reachable is {reachable:.4f} at k={self.k_max:,}")
        if self.objective == "speedup":
            if not 0.0 < self.a0 <= 1.0:
                raise VTError(f"--a0 (acceptance with the full vocabulary) must be in (0, 1], got {self.a0}")
            if self.cost_ratio_full is None or not self.cost_ratio_full > 0:
                raise VTError("the speed-up objective needs the draft/target cost ratio: give --cost-ratio, or "
                              "--t-target-ms with a latency profile, or a draft preset that names its target")
            if not 1 <= self.gamma_min <= self.gamma_max:
                raise VTError(f"gamma range must satisfy 1 <= gamma_min <= gamma_max, got "
                              f"{self.gamma_min}..{self.gamma_max}")
            if self.accepted is not None:
                self.accepted = np.asarray(self.accepted, dtype=np.float64)
                if self.accepted.ndim != 2 or self.accepted.shape[0] < self.gamma_max or self.accepted.shape[1] != V + 1:
                    raise VTError(f"the acceptance table is {list(self.accepted.shape)}, need [>= {self.gamma_max}, "
                                  f"{V + 1}] (gamma 1..gamma_max, k 0..{V})")
            if self.verify_costs is not None and len(self.verify_costs) < self.gamma_max:
                raise VTError(f"verify costs are known up to gamma {len(self.verify_costs)}, not {self.gamma_max}")

    @property
    def acceptance_model(self) -> str:
        return "a0*C(k)" if self.accepted is None else "replay"

    def tokens_per_step(self, k: np.ndarray | int, gamma: np.ndarray | int) -> np.ndarray:
        """Expected new tokens per target step: 1 + the replayed accepted tokens of order[:k] at
        gamma when an acceptance table is given, else (1 - a^(g+1)) / (1 - a) with a = a0 C(k)."""
        if self.accepted is None:
            return predicted_speedup(self.a0 * self.coverage[k], gamma, 0.0, 1.0)
        return 1.0 + self.accepted[np.asarray(gamma) - 1, k]

    def speedup(self, k: np.ndarray | int, gamma: np.ndarray | int) -> np.ndarray:
        """The speed-up model at (k, gamma): tokens per step / (gamma c(k) + verify cost)."""
        return self.tokens_per_step(k, gamma) / (np.asarray(gamma) * self.cost_ratio(k) + self.verify_cost(gamma))

    def verify_cost(self, gamma: np.ndarray | int) -> np.ndarray | float:
        if self.verify_costs is None:
            return 1.0
        return np.asarray(self.verify_costs, dtype=np.float64)[np.asarray(gamma) - 1]

    def cost_ratio(self, k: np.ndarray | int) -> np.ndarray:
        """c(k) = t_draft(k) / t_target = c_full * (1 - R(k))."""
        return self.cost_ratio_full * (1.0 - self.reduction[k])

    def evaluate(self, k: int, gamma: int | None = None) -> dict[str, Any]:
        """Metrics of one (k, gamma) point, as a trial records them."""
        c, r = float(self.coverage[k]), float(self.reduction[k])
        out = {"coverage": c, "latency_reduction": r, "utility": float(utility(c, r, self.alpha)),
               "feasible": c >= self.min_coverage}
        if self.objective == "speedup":
            g = int(gamma if gamma is not None else self.gamma_min)
            out["gamma"] = g
            out["speedup"] = float(self.speedup(k, g))
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What a stored study was made for: resuming with anything else would mix two problems."""
        fp = {"objective": self.objective, "alpha": self.alpha, "min_coverage": self.min_coverage,
              "k_min": int(self.k_min), "k_max": int(self.k_max), "k_log": self.k_log,
              "coverage_sha": _sha(self.coverage), "reduction_sha": _sha(self.reduction),
              "coverage_source": self.coverage_source, "latency_source": self.latency_source}
        if self.objective == "speedup":
            if self.verify_costs is not None:
                fp["verify_costs"] = list(self.verify_costs)
            fp.update(a0=self.a0, cost_ratio_full=self.cost_ratio_full,
                      gamma_min=self.gamma_min, gamma_max=self.gamma_max)
            if self.accepted is not None:
                fp.update(acceptance_model="replay", accepted_sha=_sha(self.accepted))
        if self.counts_sha256 is not None:   # export and the Frontier compare it with the counts in use
            fp["counts_sha256"] = self.counts_sha256
        return fp


@dataclass
class ExactResult:
    best_k: int
    best_gamma: int | None
    best_value: float           # utility, or speed-up
    coverage: float
    latency_reduction: float
    utility: float
    frontier_k: np.ndarray      # feasible Pareto-optimal k (ascending)
    n_evaluated: int
    seconds: float
    speedup: float | None = None
    best_gamma_by_k: np.ndarray | None = field(default=None, repr=False)   # speed-up: argmax gamma per k


def solve_exact(p: Problem) -> ExactResult:
    """Every integer k in [k_min, k_max] (and every gamma) in one vectorised pass."""
    t0 = time.perf_counter()
    ks = np.arange(p.k_min, p.k_max + 1)
    C, R = p.coverage[ks], p.reduction[ks]
    feasible = C >= p.min_coverage
    U = utility(C, R, p.alpha)
    best_gamma = None
    gamma_by_k = None
    speedup = None
    n = ks.size
    if p.objective == "speedup":
        gammas = np.arange(p.gamma_min, p.gamma_max + 1)[:, None]
        S = p.speedup(ks[None, :], gammas)   # [G, K]
        gi = np.argmax(S, axis=0)
        value = S[gi, np.arange(n)]
        gamma_by_k = gammas[gi, 0]
        n *= gammas.shape[0]
    else:
        value = U   # the Pareto objective's pick is its utility optimum (always on the front)
    i = int(np.argmax(np.where(feasible, value, -np.inf)))
    if p.objective == "speedup":
        best_gamma = int(gamma_by_k[i])
        speedup = float(value[i])
    front = ks[feasible][pareto_mask(C[feasible], R[feasible])]
    return ExactResult(best_k=int(ks[i]), best_gamma=best_gamma, best_value=float(value[i]),
                       coverage=float(C[i]), latency_reduction=float(R[i]), utility=float(U[i]),
                       frontier_k=np.sort(front), n_evaluated=int(n), seconds=time.perf_counter() - t0,
                       speedup=speedup, best_gamma_by_k=gamma_by_k)


def thin_frontier(front_k: np.ndarray, n: int = 200, must: tuple[int, ...] = ()) -> np.ndarray:
    """At most about n frontier points, log-spaced in k, always keeping both ends and `must`."""
    front_k = np.sort(np.asarray(front_k, dtype=np.int64))
    if front_k.size <= n:
        return front_k
    targets = np.geomspace(front_k[0], front_k[-1], n)
    idx = np.clip(np.searchsorted(front_k, targets), 0, front_k.size - 1)
    keep = set(front_k[idx].tolist()) | {int(front_k[0]), int(front_k[-1])}
    on_front = set(front_k.tolist())
    keep |= {int(k) for k in must if int(k) in on_front}
    return np.array(sorted(keep), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Studies on disk

def studies_dir(workspace: str | Path | None = None) -> Path:
    return subdir("studies", workspace)


def study_path(name: str, workspace: str | Path | None = None) -> Path:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise VTError(f"study name {name!r} must be a plain file name (no slashes, not starting with '.')")
    return studies_dir(workspace) / f"{name}.journal"


def _storage(path: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


# A journal is one JSON record per line, appended under a lock. A run killed mid-append leaves a
# torn last line: Optuna's reader skips it, but the next append lands on the same line, and from
# then on every read fails ("Expecting ':' delimiter") and every trial is unreachable.

def recover_journal(path: Path, full: bool = False) -> str | None:
    """Make a study journal readable again, under the journal's own lock, and say what was done
    (None when nothing was needed). A torn last line (no newline) is cut off; with full=True
    (the file failed to read) every line is parsed and a line that is a torn write glued to
    whole records keeps the records. The original is kept as <name>.journal.bak."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0 or (not full and _ends_with_newline(path)):
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:   # looked at again under the lock: no writer is mid-append now
        data = path.read_bytes()
        kept, dropped = _complete_records(data)
        if dropped == 0:
            return None
        backup = path.with_name(path.name + ".bak")
        shutil.copyfile(path, backup)
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        lock.release()
    return (f"recovered study journal {path.name}: dropped {dropped:,} bytes of a record torn by a run that "
            f"was killed mid-write, kept all {len(kept):,} complete records (the original is {backup.name})")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _complete_records(data: bytes) -> tuple[list[bytes], int]:
    """The journal's complete records and how many bytes were dropped. A line that does not
    parse is a torn write; when whole records were appended onto it, they are kept."""
    kept, dropped = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        if _parses(line):
            kept.append(line)
            continue
        start = line.rfind(b'{"op_code"')
        if start > 0 and _parses(line[start:]):
            kept.append(line[start:])
            dropped += start
        else:
            dropped += len(line)
    return kept, dropped


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class _RunLock:
    """Says whether other runs of a study are alive: each run holds a shared flock on
    <study>.journal.active while it lives (the kernel drops it when a process dies, kill -9
    too). A run that can take it exclusively is alone: trials left RUNNING are then stale."""

    def __init__(self, journal: Path):
        self._f = open(journal.with_name(journal.name + ".active"), "a+b")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.alone = True
        except OSError:
            self.alone = False
        fcntl.flock(self._f, fcntl.LOCK_SH)   # held until release(): this run is alive

    def release(self) -> None:
        if not self._f.closed:
            self._f.close()


def _seed_for_run(seed: int, n_trials: int, alone: bool) -> int:
    """The sampler's seed: `seed` itself for a new study run alone (reproducible), else mixed
    with the trials already in the study, and with a random nonce when other runs are alive,
    so no two runs on one study draw the same k values."""
    if n_trials == 0 and alone:
        return seed
    key = f"{seed}:{n_trials}:{'' if alone else uuid.uuid4().hex}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


def trial_row(t) -> dict[str, Any]:
    """One trial as the dashboard and the CLI show it (plain JSON types)."""
    m = t.user_attrs.get("metrics", {})
    cons = t.constraints
    return {"number": t.number, "k": t.params.get("k"), "gamma": t.params.get("gamma"),
            "coverage": m.get("coverage"), "latency_reduction": m.get("latency_reduction"),
            "utility": m.get("utility"), "speedup": m.get("speedup"),
            "values": None if t.values is None else [float(v) for v in t.values],
            "feasible": (all(v <= 0 for v in cons.values()) if cons else None) if t.state.name == "COMPLETE" else None,
            "state": t.state.name}


def best_trial(rows: list[dict], objective: str) -> dict | None:
    """The best feasible finished trial: highest speed-up (speedup objective) or utility (utility,
    and Pareto, whose pick is its utility optimum, as in solve_exact); ties go to the earliest."""
    ok = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] and r.get("k") is not None]
    if not ok:
        return None
    key = "speedup" if objective == "speedup" else "utility"
    return max(ok, key=lambda r: (r[key] if r.get(key) is not None else -math.inf, -r["number"]))


def load_study_rows(path: str | Path) -> tuple[dict, list[dict]]:
    """(settings, trial rows) of a study file, for showing a study without running it."""
    import optuna

    path = Path(path)
    if not path.is_file():
        raise VTError(f"{path}: study file not found")
    try:
        storage = _storage(path)
        summaries = optuna.get_all_study_summaries(storage)
    except ValueError as e:   # glued by a torn write (see recover_journal): repaired, then read
        if recover_journal(path, full=True) is None:
            raise VTError(f"{path}: cannot read the study journal ({e})") from e
        storage = _storage(path)
        summaries = optuna.get_all_study_summaries(storage)
    if not summaries:
        raise VTError(f"{path}: no study in this file")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    return dict(study.user_attrs.get("vtcore", {})), [trial_row(t) for t in study.get_trials(deepcopy=False)]


def read_trial(name: str, number: int | str, workspace: str | Path | None = None) -> tuple[dict, dict]:
    """(study settings, trial row) of a saved study. `number` may be "best": best_trial's pick."""
    path = study_path(name, workspace)   # refuses names with slashes or a leading dot
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob(f"*{path.suffix}"))
        raise VTError(f"study {name!r} not found at {path} (studies: {', '.join(have) or 'none'})")
    settings, rows = load_study_rows(path)
    if number == "best":
        best = best_trial(rows, settings.get("objective", "utility"))
        if best is None:
            raise VTError(f"study {name!r} has no feasible finished trial")
        return settings, best
    row = next((r for r in rows if r["number"] == number), None)
    if row is None:
        raise VTError(f"study {name!r} has no trial {number} ({len(rows)} trials, numbered 0..{len(rows) - 1})")
    if row["state"] != "COMPLETE":
        raise VTError(f"study {name!r} trial {number} is {row['state']}, not COMPLETE: pick a finished trial")
    if row.get("k") is None:
        raise VTError(f"study {name!r} trial {number} has no parameter 'k'")
    return settings, row


# ---------------------------------------------------------------------------------------------
# The runner: one study, one background thread

class StudyRunner:
    """Runs an Optuna TPE study on a Problem in a background thread.

    start() / stop() / join(); snapshot() returns the trials so far (a list copy of plain dicts,
    safe to call from any thread, cheap enough to poll); progress() the counts and state. An
    exception in the objective ends the run with state "error" and `error` set; the trials before
    it stay in the study file and in the snapshot. The study lives in
    <workspace>/studies/<name>.journal (JournalStorage): a new runner with the same name, in this or
    another process, resumes it (same problem only: see Problem.fingerprint).

    Opening a study also repairs what killed runs leave: a torn last journal record is dropped
    (recover_journal), and trials left RUNNING are failed when no other run of the study is alive
    (_RunLock), so they are not counted. `notes` says what was done. Each run seeds its sampler
    with _seed_for_run: a resumed or concurrent run does not repeat another's k values.
    """

    def __init__(self, problem: Problem, study_name: str | None = None, n_trials: int = 100, seed: int = 42,
                 workspace: str | Path | None = None, timeout: float | None = None,
                 evaluate: Callable[[int, int | None], dict] | None = None):
        if n_trials is not None and n_trials < 1:
            raise VTError(f"--trials must be >= 1, got {n_trials}")
        self.problem = problem
        self.study_name = study_name or f"{problem.objective}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.path = study_path(self.study_name, workspace)
        self.n_trials, self.seed, self.timeout = n_trials, seed, timeout
        self._evaluate = evaluate or problem.evaluate
        self._lock = threading.Lock()
        self._rows: list[dict] = []
        self._done = 0
        # the thread, stop flag, states and error reporting are a vtcore.jobs.Job's
        self._job = Job(self._optimize, name=f"study-{self.study_name}", kept=self._reload_rows)
        self.notes: list[str] = []          # what opening the study repaired
        self._run_lock = _RunLock(self.path)
        try:
            self.study = self._open()
        except BaseException:
            self._run_lock.release()
            raise

    def _open(self):
        import optuna
        from optuna.exceptions import ExperimentalWarning

        optuna.logging.set_verbosity(optuna.logging.WARNING)   # no INFO line per trial on stderr
        note = recover_journal(self.path)
        if note:
            self.notes.append(note)
        directions = ["maximize", "maximize"] if self.problem.objective == "pareto" else ["maximize"]
        try:
            study = optuna.create_study(study_name=self.study_name, storage=_storage(self.path),
                                        directions=directions, load_if_exists=True)
        except ValueError as e:   # a journal glued by an older run's torn write, or another kind of study
            note = recover_journal(self.path, full=True)
            if note is None:
                raise VTError(f"study {self.study_name!r} ({self.path}) cannot be resumed: {e}") from e
            self.notes.append(note)
            study = optuna.create_study(study_name=self.study_name, storage=_storage(self.path),
                                        directions=directions, load_if_exists=True)
        want = json.loads(json.dumps(self.problem.fingerprint()))
        have = study.user_attrs.get("vtcore")
        if have is None:
            if study.trials:
                raise VTError(f"study {self.study_name!r} ({self.path}) was not made by vtcore; use a new --study name")
            study.set_user_attr("vtcore", want)
        elif have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            if diff != ["counts_sha256"] or "counts_sha256" in have:
                raise VTError(f"study {self.study_name!r} was made for a different problem (differs in: "
                              f"{', '.join(diff)}); use a new --study name")
            study.set_user_attr("vtcore", want)   # a study from before the counts' hash was recorded
        if self._run_lock.alone:
            self._fail_stale(study)
        self.seed_used = _seed_for_run(self.seed, len(study.trials), self._run_lock.alone)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)   # multivariate TPE is "experimental"
            study.sampler = optuna.samplers.TPESampler(seed=self.seed_used, multivariate=True)
        self._rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
        return study

    def _fail_stale(self, study) -> None:
        """Trials left RUNNING by a killed run (no other run is alive) end as FAIL."""
        from optuna.trial import TrialState

        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for t in stale:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if stale:
            self.notes.append(f"failed {len(stale)} trial(s) left running by a run that was killed (trial "
                              f"{', '.join(str(t.number) for t in stale)}); they are not counted")

    # -- the objective, run in the worker thread --
    def _objective(self, trial) -> float | tuple[float, float]:
        p = self.problem
        k = trial.suggest_int("k", p.k_min, p.k_max, log=p.k_log)
        gamma = trial.suggest_int("gamma", p.gamma_min, p.gamma_max) if p.objective == "speedup" else None
        m = self._evaluate(k, gamma)
        trial.set_constraint("min_coverage", p.min_coverage - m["coverage"])   # feasible when <= 0
        trial.set_user_attr("metrics", {key: v for key, v in m.items() if key != "feasible"})
        if p.objective == "pareto":
            return m["coverage"], m["latency_reduction"]
        return m["speedup"] if p.objective == "speedup" else m["utility"]

    def _after_trial(self, study, trial) -> None:
        row = trial_row(trial)
        with self._lock:
            self._rows.append(row)
            self._done += 1
        if self._job.should_stop():
            study.stop()

    def _optimize(self, progress, should_stop) -> None:
        try:
            self.study.optimize(self._objective, n_trials=self.n_trials, timeout=self.timeout,
                                callbacks=[self._after_trial], gc_after_trial=False, show_progress_bar=False)
        finally:
            self._run_lock.release()

    def _reload_rows(self) -> str:
        """After a failure (the objective or the storage raised): the study file's trials are what was kept."""
        rows = [trial_row(t) for t in self.study.get_trials(deepcopy=False)]
        with self._lock:
            self._rows = rows
        return f"{len(rows)} trials stay in {self.path}"

    # -- control, from any thread --
    def start(self) -> "StudyRunner":
        self._job.start()
        return self

    def run(self) -> "StudyRunner":
        """Start and wait (the CLI's foreground run)."""
        self.start()
        self.join()
        return self

    def stop(self) -> None:
        """Ask the study to stop after the trial in flight."""
        self._job.stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True when it has."""
        return self._job.join(timeout)

    @property
    def running(self) -> bool:
        return self._job.running

    @property
    def state(self) -> str:
        """created, running, stopping, finished, stopped or error (vtcore.jobs.STATES)."""
        return self._job.state

    @property
    def error(self) -> str | None:
        return self._job.error

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self._rows)

    def progress(self) -> dict[str, Any]:
        with self._lock:
            done, total_rows = self._done, len(self._rows)
        frac = done / self.n_trials if self.n_trials else 0.0
        return {"state": self.state, "done": done, "n_trials": self.n_trials, "fraction": min(frac, 1.0),
                "trials_in_study": total_rows, "error": self.error}

    # -- results --
    def best(self) -> dict[str, Any] | None:
        """The best feasible trial so far (best_trial), or None."""
        return best_trial(self.snapshot(), self.problem.objective)

    def pareto_rows(self) -> list[dict]:
        """Feasible non-dominated trials in (coverage, latency_reduction)."""
        rows = [r for r in self.snapshot() if r["state"] == "COMPLETE" and r["feasible"]]
        if not rows:
            return []
        m = pareto_mask(np.array([r["coverage"] for r in rows]), np.array([r["latency_reduction"] for r in rows]))
        return sorted((r for r, keep in zip(rows, m) if keep), key=lambda r: r["k"])


def summarize(runner: StudyRunner, exact: ExactResult, max_points: int = 200) -> dict[str, Any]:
    """The result of a run next to the exact optimum (regret = exact - TPE, >= 0 when TPE is feasible)."""
    p = runner.problem
    best = runner.best()
    value_key = "speedup" if p.objective == "speedup" else "utility"
    rows = runner.snapshot()
    out: dict[str, Any] = {
        "objective": p.objective, "coverage_source": p.coverage_source, "latency_source": p.latency_source,
        "alpha": p.alpha, "min_coverage": p.min_coverage, "k_min": int(p.k_min), "k_max": int(p.k_max),
        "k_sampling": "log" if p.k_log else "linear",
        "best_k": None if best is None else best["k"],
        "coverage": None if best is None else best["coverage"],
        "latency_reduction": None if best is None else best["latency_reduction"],
        "utility": None if best is None else best["utility"],
        "best_trial": None if best is None else best["number"],
        "exact_best_k": exact.best_k, "exact_coverage": exact.coverage,
        "exact_latency_reduction": exact.latency_reduction, "exact_utility": exact.utility,
        "regret": None if best is None else exact.best_value - best[value_key],
        # failed trials (an objective error, or left running by a killed run) are not trials
        "n_trials": sum(1 for r in rows if r["state"] in ("COMPLETE", "PRUNED")),
        "n_failed": sum(1 for r in rows if r["state"] == "FAIL"),
        "n_new_trials": runner.progress()["done"],
        "n_feasible": sum(1 for r in rows if r["feasible"]),
        "state": runner.state, "error": runner.error, "notes": list(runner.notes), "seed_used": runner.seed_used,
        "study_name": runner.study_name, "study_path": str(runner.path),
        "exact_seconds": exact.seconds, "exact_evaluated": exact.n_evaluated,
    }
    if best is None:
        out["note"] = "no feasible trial yet: every trial so far has coverage below --min-coverage"
    if p.objective == "speedup":
        out.update(best_gamma=None if best is None else best["gamma"],
                   predicted_speedup=None if best is None else best["speedup"],
                   exact_best_gamma=exact.best_gamma, exact_speedup=exact.speedup,
                   a0=p.a0, cost_ratio_full=p.cost_ratio_full)
    must = (exact.best_k,) + (() if best is None else (best["k"],))
    ks = thin_frontier(exact.frontier_k, max_points, must)
    out["pareto"] = [{"k": int(k), "coverage": float(p.coverage[k]), "latency_reduction": float(p.reduction[k])}
                     for k in ks]
    out["pareto_size"] = int(exact.frontier_k.size)
    if p.objective == "pareto":
        front = runner.pareto_rows()
        out["trial_pareto"] = [{"k": r["k"], "coverage": r["coverage"], "latency_reduction": r["latency_reduction"],
                                "number": r["number"]} for r in front]
        ref = (0.0, min(0.0, float(p.reduction[p.k_min:p.k_max + 1].min())))
        ks_all = exact.frontier_k
        hv_exact = hypervolume_2d(p.coverage[ks_all], p.reduction[ks_all], ref)
        hv_tpe = hypervolume_2d(np.array([r["coverage"] for r in front]),
                                np.array([r["latency_reduction"] for r in front]), ref) if front else 0.0
        out["hypervolume_ratio"] = hv_tpe / hv_exact if hv_exact > 0 else None
    return out
