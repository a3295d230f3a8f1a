"""Studies on disk: an Optuna TPE search over a search.Problem, stored as a journal per study.

A study lives in <workspace>/studies/<name>.journal (Optuna's JournalStorage). This module
repairs what killed runs leave (torn records, trials left RUNNING), tells concurrent runs apart
(a flock per live run), runs a study in a background thread (StudyRunner), reads trials back
(load_study_rows, read_trial) and holds the one rule for "best" (best_trial).
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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtcore.errors import VTError
from vtcore.files import DISK_FULL, free_bytes
from vtcore.jobs import Job
from vtcore.search import ExactResult, Problem, hypervolume_2d, pareto_mask, thin_frontier
from vtcore.workspace import subdir



NAME_LIMIT = 200   # bytes of a study name: <name>.journal.active must fit a 255-byte file name


def studies_dir(workspace: str | Path | None = None) -> Path:
    return subdir("studies", workspace)


def study_path(name: str, workspace: str | Path | None = None) -> Path:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise VTError(f"study name {name!r} must be a plain file name (no slashes, not starting with '.')")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_LIMIT:
        raise VTError(f"study name {name[:40]!r}... is {len(name)} characters; at most {NAME_LIMIT} fit a file name "
                      "(with .journal.active)")
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
    too). A run that can take it exclusively is alone: trials left RUNNING are then stale. It
    keeps the lock exclusive until shared() (after failing them), so a run started meanwhile
    waits there instead of starting a trial that would be taken for stale."""

    def __init__(self, journal: Path):
        self._f = open(journal.with_name(journal.name + ".active"), "a+b")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.alone = True
        except OSError:
            self.alone = False
            fcntl.flock(self._f, fcntl.LOCK_SH)   # waits while an alone run fails its stale trials

    def shared(self) -> None:
        """Let other runs in: held shared until release(), this run is alive."""
        if not self._f.closed:
            fcntl.flock(self._f, fcntl.LOCK_SH)

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


def _trial_fault(r: dict, s: dict) -> str | None:
    """Why a finished trial cannot be what the study's problem (its settings, Problem.fingerprint)
    produced: a parameter outside the searched range, a metric out of its range, a utility that
    is not alpha C + (1 - alpha) R. A hand-edited journal is caught here, never reported as best."""
    k, gamma = r.get("k"), r.get("gamma")
    if isinstance(k, bool) or not isinstance(k, int):
        return f"k is {k!r}, not an integer"
    lo, hi = s.get("k_min", 1), s.get("k_max")
    if k < lo or (hi is not None and k > hi):
        return f"k = {k:,} is outside the study's range {lo:,}..{hi if hi is None else f'{hi:,}'}"
    if s.get("objective") == "speedup":
        if isinstance(gamma, bool) or not isinstance(gamma, int) or not s.get("gamma_min", 1) <= gamma <= s.get(
                "gamma_max", 64):
            return f"gamma = {gamma!r} is outside the study's range {s.get('gamma_min')}..{s.get('gamma_max')}"
        sp = r.get("speedup")
        if not isinstance(sp, (int, float)) or not 0 < sp <= 2 * (gamma + 1):   # gamma + 1 at best, noise aside
            return f"speed-up {sp!r} is impossible for gamma = {gamma}"
    c, red, u = r.get("coverage"), r.get("latency_reduction"), r.get("utility")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (c, red, u)):
        return "coverage, latency reduction or utility is missing or not a finite number"
    if not 0.0 <= c <= 1.0 or not -1.0 <= red <= 1.0:
        return f"coverage {c} or latency reduction {red} is outside [0, 1]"
    alpha = s.get("alpha", 0.5)
    if abs(u - (alpha * c + (1 - alpha) * red)) > 1e-6:
        return f"utility {u} is not alpha C + (1 - alpha) R = {alpha * c + (1 - alpha) * red:.6f}"
    return None


def vet_rows(rows: list[dict], settings: dict) -> list[str]:
    """Finished trials that the study's problem cannot have produced become FAIL (so never best,
    never counted), each with its reason in row["fault"]; returns one note per such trial."""
    notes = []
    for r in rows:
        if r["state"] != "COMPLETE":
            continue
        fault = _trial_fault(r, settings)
        if fault:
            r.update(state="FAIL", feasible=None, fault=fault)
            notes.append(f"trial {r['number']} is not counted: {fault} (the journal was edited or is damaged)")
    return notes


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
    settings = dict(study.user_attrs.get("vtcore", {}))
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    vet_rows(rows, settings)
    return settings, rows


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
    if row.get("fault"):
        raise VTError(f"study {name!r} trial {number} cannot be used: {row['fault']}")
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
        self._run_lock.shared()

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
        self.notes += vet_rows(self._rows, want)
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
        except Exception as e:
            # a full disk surfaces from the journal as an OSError, or as Optuna's own assertion
            # on the half-written log: said as what it is
            free = free_bytes(self.path)
            if (isinstance(e, OSError) and e.errno in DISK_FULL) or (free is not None and free < 1 << 16):
                raise VTError(f"cannot write the study journal {self.path}: the disk is full "
                              f"({free if free is not None else '?'} bytes free); free some space or set "
                              "VTCORE_WORKSPACE elsewhere") from None
            raise
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
    def stored_rows(self) -> list[dict]:
        """Every trial in the study file now, this run's and any concurrent run's, vetted against
        the problem (vet_rows): what a summary counts, not this run's own memory."""
        rows = [trial_row(t) for t in self.study.get_trials(deepcopy=False)]
        for note in vet_rows(rows, json.loads(json.dumps(self.problem.fingerprint()))):
            if note not in self.notes:
                self.notes.append(note)
        return rows

    def best(self, rows: list[dict] | None = None) -> dict[str, Any] | None:
        """The best feasible trial (best_trial) of `rows`, by default those seen so far, or None."""
        return best_trial(self.snapshot() if rows is None else rows, self.problem.objective)

    def pareto_rows(self, rows: list[dict] | None = None) -> list[dict]:
        """Feasible non-dominated trials in (coverage, latency_reduction)."""
        rows = [r for r in (self.snapshot() if rows is None else rows) if r["state"] == "COMPLETE" and r["feasible"]]
        if not rows:
            return []
        m = pareto_mask(np.array([r["coverage"] for r in rows]), np.array([r["latency_reduction"] for r in rows]))
        return sorted((r for r, keep in zip(rows, m) if keep), key=lambda r: r["k"])


def summarize(runner: StudyRunner, exact: ExactResult, max_points: int = 200) -> dict[str, Any]:
    """The result of a run next to the exact optimum (regret = exact - TPE, >= 0 when TPE is feasible)."""
    p = runner.problem
    try:   # the study file's trials: concurrent runs' too, hand-edited ones failed
        rows = runner.stored_rows()
    except (ValueError, OSError):   # the storage itself failed: this run's own view
        rows = runner.snapshot()
    best = runner.best(rows)
    value_key = "speedup" if p.objective == "speedup" else "utility"
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
        front = runner.pareto_rows(rows)
        out["trial_pareto"] = [{"k": r["k"], "coverage": r["coverage"], "latency_reduction": r["latency_reduction"],
                                "number": r["number"]} for r in front]
        ref = (0.0, min(0.0, float(p.reduction[p.k_min:p.k_max + 1].min())))
        ks_all = exact.frontier_k
        hv_exact = hypervolume_2d(p.coverage[ks_all], p.reduction[ks_all], ref)
        hv_tpe = hypervolume_2d(np.array([r["coverage"] for r in front]),
                                np.array([r["latency_reduction"] for r in front]), ref) if front else 0.0
        out["hypervolume_ratio"] = hv_tpe / hv_exact if hv_exact > 0 else None
    return out
