"""Background jobs for long work the dashboard starts (counting, benchmarks): one thread each,
progress(frac, text), a stop flag, the result, or the error with what was kept.

No Streamlit here: the UI polls `status()` from its own reruns. A `Registry` holds jobs (and
anything else with .running / .stop(), e.g. a search.StudyRunner) by name, so a page that
reruns after a browser refresh finds the work it started.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from vtcore.errors import VTError

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
JobFn = Callable[[Progress, ShouldStop], Any]

STATES = ("created", "running", "stopping", "finished", "stopped", "error")


class Job:
    """Runs fn(progress, should_stop) -> result in a daemon thread.

    States: created -> running (-> stopping) -> finished | stopped | error. An exception ends
    the job with state "error" and a one-line `error`; a VTError keeps its own message (it
    already names the file / line / field), anything else is prefixed with its type and the
    traceback is kept in `trace`. `kept` says what survives a failure ("earlier counts are
    unchanged", "12 trials stay in the study"): a string, or a function called at failure time.
    A job asked to stop that ends (by returning or by raising) is "stopped", not "error".
    """

    def __init__(self, fn: JobFn, name: str = "job", kept: str | Callable[[], str] | None = None,
                 meta: dict | None = None):
        self.fn, self.name, self._kept = fn, name, kept
        self.meta = dict(meta or {})      # what the caller wants to remember (inputs, labels)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "created"
        self.fraction = 0.0
        self.text = ""
        self.result: Any = None
        self.error: str | None = None
        self.trace: str | None = None
        self.kept: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    # -- called from the worker thread --
    def progress(self, frac: float, text: str = "") -> None:
        with self._lock:
            self.fraction = min(max(float(frac), 0.0), 1.0)
            if text:
                self.text = str(text)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def _run(self) -> None:
        try:
            result = self.fn(self.progress, self.should_stop)
            with self._lock:
                self.result = result
                self.state = "stopped" if self._stop.is_set() else "finished"
                if self.state == "finished":
                    self.fraction = 1.0
        except BaseException as e:  # noqa: BLE001 - the thread must report, never die silently
            stopped = self._stop.is_set()
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if not isinstance(e, VTError):
                msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
                self.trace = traceback.format_exc()
            kept = self._kept() if callable(self._kept) else self._kept
            with self._lock:
                self.error = None if stopped else msg
                self.kept = kept
                self.state = "stopped" if stopped else "error"
        finally:
            self.finished_at = time.time()

    # -- control, from any thread --
    def start(self) -> "Job":
        if self._thread is not None:
            raise VTError(f"job {self.name!r} was already started")
        self.state, self.started_at = "running", time.time()
        self._thread = threading.Thread(target=self._run, name=f"vtcore-job-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the job to stop; the function sees should_stop() and ends at its next check."""
        self._stop.set()
        with self._lock:
            if self.state == "running":
                self.state = "stopping"

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self.state in ("finished", "stopped", "error") and not self.running

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.time()) - self.started_at

    def status(self) -> dict[str, Any]:
        """A consistent copy of the job's state, cheap to poll."""
        with self._lock:
            return {"name": self.name, "state": self.state, "fraction": self.fraction, "text": self.text,
                    "error": self.error, "kept": self.kept, "running": self.running,
                    "elapsed": round(self.elapsed(), 3), "meta": dict(self.meta)}


class Registry:
    """Named long-lived workers (Jobs, StudyRunners): one per name while it runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def get(self, name: str) -> Any | None:
        with self._lock:
            return self._items.get(name)

    def put(self, name: str, worker: Any, replace_running: bool = False) -> Any:
        """Store a worker under `name`. A running worker already there is kept and this one
        refused (VTError), unless replace_running: then the old one is asked to stop."""
        with self._lock:
            old = self._items.get(name)
            if old is not None and getattr(old, "running", False) and old is not worker:
                if not replace_running:
                    raise VTError(f"{name!r} is already running; stop it first")
                old.stop()
            self._items[name] = worker
        return worker

    def start(self, name: str, job: Job) -> Job:
        """Register and start a job (refused while another one runs under the same name)."""
        self.put(name, job)
        return job.start()

    def pop(self, name: str) -> Any | None:
        with self._lock:
            return self._items.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def running(self) -> list[str]:
        with self._lock:
            return [n for n, w in self._items.items() if getattr(w, "running", False)]

    def stop_all(self) -> None:
        with self._lock:
            workers = list(self._items.values())
        for w in workers:
            if getattr(w, "running", False):
                w.stop()


# ---------------------------------------------------------------------------------------------
# The dashboard's jobs: plain functions over vtcore, each a Job ready to start


def counting_job(paths: list[str], tokenizer: str | None = None, mask: str = "template", schema: str = "auto",
                 skip_bad: bool = False, workspace: str | None = None) -> Job:
    """Count a dataset and make the result the workspace's current counts (vtcore.state), so
    the pages find it even if the browser was closed while it ran. The result is count_dataset's
    summary dict."""
    from vtcore import state

    before = state.load_state(workspace).counts_path

    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        from vtcore.counts import count_dataset

        _, info = count_dataset(list(paths), tokenizer=tokenizer, mask=mask, schema=schema, skip_bad=skip_bad,
                                progress=progress, should_stop=should_stop, workspace=workspace)
        st = state.load_state(workspace)
        changed = st.counts_path != info["counts_path"]
        st.counts_path, st.datasets, st.tokenizer = info["counts_path"], [str(p) for p in paths], tokenizer
        st.mask, st.skip_bad = mask, skip_bad
        if changed:   # a selection or study made for other counts does not carry over
            st.selected, st.study = None, None
        state.save_state(st, workspace)
        return info

    kept = ("nothing changed: the current counts are still " + (Path(before).name if before else "none yet")
            + "; uploaded files stay in the workspace")
    return Job(fn, name="count", kept=kept, meta={"paths": [str(p) for p in paths], "tokenizer": tokenizer,
                                                   "mask": mask})


def bench_job(cfg, workspace: str | None = None) -> Job:
    """Run vtcore.bench.run_bench in the background; results are appended to the results store
    by run_bench itself (cfg.save)."""
    def fn(progress: Progress, should_stop: ShouldStop) -> dict:
        from vtcore.bench import run_bench

        return run_bench(cfg, progress=progress, should_stop=should_stop)

    return Job(fn, name="bench", kept="earlier benchmark runs stay in bench/results.jsonl; this run saved nothing",
               meta={"target": cfg.target, "draft": cfg.draft})
