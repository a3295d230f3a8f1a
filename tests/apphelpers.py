"""Shared by the dashboard tests (test_app*.py, test_e2e.py): small real datasets and the AppTest
helpers (the tiny target/draft pair is drafthelpers.tiny_pair)."""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "samples" / "code.jsonl"
APP = str(ROOT / "app.py")


def code_rows(n: int) -> bytes:
    """The first n rows of the HumanEval sample, as JSONL bytes (a real small upload)."""
    lines = CODE.read_text(encoding="utf-8").splitlines()[:n]
    assert len(lines) == n
    return ("\n".join(lines) + "\n").encode()


def malformed_rows() -> bytes:
    """One good row, then a line cut in the middle (line 2)."""
    first = json.loads(CODE.read_text(encoding="utf-8").splitlines()[0])
    return (json.dumps(first) + "\n" + '{"messages": [{"role": "user", "content": "unterminated\n').encode()


# ---------------------------------------------------------------- AppTest

def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def open_app(page: str | None = None, query: dict | None = None, timeout: float = 60) -> AppTest:
    """The app run once (with these query parameters), then `page`; no exception on either."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    return ok(at)


def settle(at: AppTest, timeout: float = 60.0) -> AppTest:
    """Rerun until no background job shows progress (what the page's polling fragment does)."""
    t0 = time.time()
    while True:
        at.run()
        ok(at)
        if not at.get("progress"):
            return at
        assert time.time() - t0 < timeout, "the background job did not finish"
        time.sleep(0.3)


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r}: {[m.label for m in at.metric]}"
    return found[0]


def count(paths, tokenizer: str | None = None, timeout: float = 120) -> str:
    """Count these files as the Data page's job does (it becomes the current counts); the counts path."""
    from vtapp.jobs import counting_job

    job = counting_job([str(p) for p in paths], tokenizer=tokenizer).start()
    job.join(timeout)
    assert job.state == "finished", job.error
    return job.result["counts_path"]


def record_jobs(monkeypatch, factory: str, name: str) -> list[dict]:
    """vtapp.jobs.<factory> replaced by one that records each call's arguments by name and starts
    a job named `name` that does nothing: the page's wiring is under test (the jobs run in their
    own tests)."""
    import vtapp.jobs
    from vtcore.jobs import Job

    real, calls = getattr(vtapp.jobs, factory), []

    def fake(*args, **kw):
        calls.append(dict(inspect.signature(real).bind(*args, **kw).arguments))
        return Job(lambda progress, should_stop: None, name=name)

    monkeypatch.setattr(vtapp.jobs, factory, fake)
    return calls
