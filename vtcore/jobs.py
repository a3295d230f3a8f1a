"""A background job: one thread running fn(progress, should_stop), with progress(frac, text),
a stop flag, the result, or the error with what was kept. The search's StudyRunner runs on one;
the dashboard (vtapp.jobs) runs its counting and benchmark work on them and polls `status()`.
`run_child` runs a CLI command in a process of its own (the dashboard's benchmarks and
latency profiles: timings must not share the server's cores and GIL).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from vtcore.errors import VTError
from vtcore.workspace import repo_root

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
JobFn = Callable[[Progress, ShouldStop], Any]

STATES = ("created", "running", "stopping", "finished", "stopped", "error")


def _one_line(e: BaseException) -> str:
    """A VTError's own message (it names the file / line / field), anything else prefixed with
    its type; first line only."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, VTError):
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


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
        self.meta = meta if meta is not None else {}   # what the caller wants to remember (inputs, labels)
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
        # Whatever happens here, in fn or in the error handling itself, the job ends in a final
        # state: a job shown "running" after its thread died is the one outcome not allowed.
        try:
            result = self.fn(self.progress, self.should_stop)
            with self._lock:
                self.result = result
                self.state = "stopped" if self._stop.is_set() else "finished"
                if self.state == "finished":
                    self.fraction = 1.0
        except BaseException as e:  # noqa: BLE001 - the thread must report, never die silently
            self._fail(e)
        finally:
            with self._lock:
                if self.state not in ("finished", "stopped", "error"):
                    self.state = "error"
                    self.error = self.error or "the job ended without a result"
            self.finished_at = time.time()

    def _fail(self, e: BaseException) -> None:
        stopped = self._stop.is_set()
        msg = _one_line(e)
        if not isinstance(e, VTError):
            self.trace = traceback.format_exc()
        try:
            kept = self._kept() if callable(self._kept) else self._kept
        except BaseException as k:  # noqa: BLE001 - saying what was kept must not hide the error
            kept = f"unknown: finding out failed too ({_one_line(k)})"
        with self._lock:
            self.error = None if stopped else msg
            self.kept = kept
            self.state = "stopped" if stopped else "error"

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


# ---------------------------------------------------------------------------------------------
# Work in a child process


class Stopped(VTError):
    """The work was asked to stop and did."""


def _read_progress(path: Path, offset: int, progress: Progress) -> int:
    """Forward the complete JSON lines written to `path` since `offset`; return the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1   # a line still being written waits for the next poll
    for line in data[:end].splitlines():
        try:
            rec = json.loads(line)
            progress(float(rec["fraction"]), str(rec.get("text", "")))
        except (ValueError, KeyError, TypeError):
            continue
    return offset + end


def _end(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop a child and everything it started (its own process group): TERM, then KILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


BAR = re.compile(r"\[[# ]{30}\] +\d{1,3}\.\d%")   # a progress bar line (cmd.common.progress_printer)


def _error_line(stderr: str, returncode: int) -> str:
    """The CLI's one-line reason ("error: ...") among the progress bars on stderr; without one
    (a child that exited on its own, e.g. on a signal it handled) the exit status and the last
    line that is not a progress bar: a bar is where the child was, never why it ended."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if errors:
        return errors[-1][len("error: "):]
    said = [ln for ln in lines if not BAR.search(ln)]
    return f"the child process exited with status {returncode}" + (f": {said[-1]}" if said else
                                                                     ", saying no reason")


def run_child(args: list[str], progress: Progress, should_stop: ShouldStop, poll_s: float = 0.3,
              on_start: Callable[[int], None] | None = None) -> dict:
    """Run `python -m vtcore ARGS --json` in a process of its own and return its JSON result.

    The dashboard times nothing in its own process: a benchmark there would share the server's
    cores and GIL with every page rerun. Progress comes back through a file of JSON lines
    (--progress-file); should_stop() ends the child (and its process group); a failure raises
    VTError with the child's one-line reason. `on_start(pid)` is told the child's pid."""
    root = repo_root()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="vtcore-child-") as tmp:
        prog, out, err = Path(tmp) / "progress.jsonl", Path(tmp) / "stdout", Path(tmp) / "stderr"
        cmd = [sys.executable, "-m", "vtcore", *args, "--json", "--progress-file", str(prog)]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=root, env=env,
                                    start_new_session=True)
        if on_start is not None:
            on_start(proc.pid)
        offset = 0
        try:
            while proc.poll() is None:
                if should_stop():
                    _end(proc)
                    raise Stopped("stopped; the child process was ended")
                offset = _read_progress(prog, offset, progress)
                time.sleep(poll_s)
        finally:
            _end(proc)   # whatever happened here, no child outlives the job
        _read_progress(prog, offset, progress)
        stdout = out.read_text(encoding="utf-8", errors="replace")
        stderr = err.read_text(encoding="utf-8", errors="replace")
    if proc.returncode < 0:   # a signal from outside (the OOM killer, kill -9): its last progress line is no reason
        raise VTError(f"the child process was killed ({signal.Signals(-proc.returncode).name}) from outside, "
                      "e.g. by the out-of-memory killer; nothing it computed was kept")
    if proc.returncode != 0:
        raise VTError(_error_line(stderr, proc.returncode))
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise VTError("the child process printed no JSON result") from None
