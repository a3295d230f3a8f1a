"""vtcore.jobs: background jobs (progress, stop, errors with what was kept), the registry, and the
dashboard's counting job on the real samples with the bundled tokenizer."""

import json
import threading
import time

import pytest

from conftest import SAMPLES
from vtapp import state
from vtcore.errors import DataError, VTError
from vtapp.jobs import Registry, counting_job
from vtcore.jobs import Job


def _wait(job, timeout=60.0):
    assert job.join(timeout), f"job {job.name} did not end within {timeout} s"
    return job


def test_job_reports_progress_and_result():
    seen = threading.Event()
    go = threading.Event()

    def fn(progress, should_stop):
        progress(0.25, "a quarter")
        seen.set()
        go.wait(10)
        progress(2.0, "")          # clamped; empty text keeps the last one
        return {"answer": 42}

    job = Job(fn, name="t").start()
    assert seen.wait(10)
    s = job.status()
    assert s["state"] == "running" and s["running"] and s["fraction"] == 0.25 and s["text"] == "a quarter"
    go.set()
    _wait(job)
    assert job.state == "finished" and job.result == {"answer": 42}
    assert job.fraction == 1.0 and job.text == "a quarter" and job.error is None and job.done


def test_vterror_keeps_its_message_and_what_was_kept():
    def fn(progress, should_stop):
        progress(0.5, "half")
        raise DataError("malformed JSON (Expecting value at column 1)", "data.jsonl", 3)

    job = _wait(Job(fn, name="t", kept=lambda: "the previous counts").start())
    assert job.state == "error"
    assert job.error == "data.jsonl:3: malformed JSON (Expecting value at column 1)"
    assert job.kept == "the previous counts" and job.trace is None
    assert job.status()["fraction"] == 0.5   # where it got to stays visible


def test_other_exceptions_are_named_and_traced():
    def fn(progress, should_stop):
        return {}["missing"]

    job = _wait(Job(fn, name="t", kept="nothing").start())
    assert job.state == "error" and job.error == "KeyError: 'missing'"
    assert "Traceback" in job.trace and job.kept == "nothing"


def test_stop_ends_a_job_as_stopped_not_failed():
    def fn(progress, should_stop):
        for i in range(1000):
            if should_stop():
                raise VTError("counting stopped")
            progress(i / 1000, f"{i}")
            time.sleep(0.005)
        return "ran to the end"

    job = Job(fn, name="t").start()
    time.sleep(0.05)
    job.stop()
    assert job.status()["state"] in ("stopping", "stopped")
    _wait(job)
    assert job.state == "stopped" and job.error is None and job.result is None
    with pytest.raises(VTError, match="already started"):
        job.start()


def test_registry_refuses_a_second_running_job_under_one_name():
    release = threading.Event()
    reg = Registry()
    first = reg.start("count", Job(lambda p, s: release.wait(10), name="count"))
    with pytest.raises(VTError, match="already running"):
        reg.start("count", Job(lambda p, s: None, name="count"))
    assert reg.running() == ["count"] and reg.get("count") is first
    second = Job(lambda p, s: None, name="count")
    reg.put("count", second, replace_running=True)   # the old one is asked to stop
    assert first.should_stop() and reg.get("count") is second
    release.set()
    _wait(first)
    assert reg.pop("count") is second and reg.get("count") is None


def test_counting_job_counts_the_sample_and_makes_it_current(workspace):
    job = _wait(counting_job([str(SAMPLES / "code.jsonl")]).start())
    assert job.state == "finished", job.error
    info = job.result
    assert info["rows"] == 164 and info["assistant_tokens"] > 0
    st = state.load_state()
    assert st.counts_path == info["counts_path"] and st.datasets == [str(SAMPLES / "code.jsonl")]
    assert st.tokenizer is None and st.mask == "template"


def test_counting_job_on_a_malformed_file_keeps_the_current_counts(workspace, tmp_path):
    good = _wait(counting_job([str(SAMPLES / "code.jsonl")]).start())
    state.update_state(selected={"k": 10, "counts_path": good.result["counts_path"]})
    bad = tmp_path / "bad.jsonl"
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad.write_text(json.dumps(row) + "\n" + '{"messages": [\n')
    job = _wait(counting_job([str(bad)]).start())
    assert job.state == "error"
    assert job.error.startswith(f"{bad}:2: malformed JSON"), job.error
    assert good.result["counts_path"].split("/")[-1] in job.kept
    st = state.load_state()
    assert st.counts_path == good.result["counts_path"] and st.selected["k"] == 10   # nothing lost


def test_counting_job_can_be_stopped(workspace):
    job = counting_job([str(SAMPLES / "chat.jsonl.gz")]).start()
    job.stop()
    _wait(job)
    assert job.state == "stopped" and job.error is None
    assert state.load_state().counts_path is None
