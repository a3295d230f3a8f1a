"""The tool used by a hostile or careless user. One test (or a few) per case, each asserting
what a user sees: a one-line error with exit 2, or a correct result;
nothing a user made is overwritten without --force. Big-file cases run with small caps set by
their flag (--max-row-mb, a chunk size), so the suite stays fast; peak memory on the real big
inputs is measured by benchmarks/bench_memory.py."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.conftest import SAMPLES
from vtcore.cli import main
from vtcore.errors import VTError

ROW = {"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there!"}]}
GOOD = (json.dumps(ROW) + "\n").encode()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, pattern: str) -> str:
    """Exit 2 and exactly one `error:` line on stderr matching `pattern`, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def result(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def write(path, data: bytes):
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ nothing a user made is destroyed

def test_count_out_refuses_an_existing_file_and_never_replaces_its_input(capsys, tmp_path, workspace):
    data = write(tmp_path / "mydata.jsonl", GOOD * 3)
    before = data.read_bytes()
    # --out names the dataset itself: refused even with --force
    for extra in ([], ["--force"]):
        code, _, err = cli(capsys, "count", "--data", data, "--out", data, *extra, "--json")
        one_error(code, err, r"mydata\.jsonl is an input of this command")
        assert data.read_bytes() == before
    # a file the user has is kept unless --force
    mine = write(tmp_path / "mine.npz", b"not yours")
    code, _, err = cli(capsys, "count", "--data", data, "--out", mine, "--json")
    one_error(code, err, r"mine\.npz already exists; pass --force")
    assert mine.read_bytes() == b"not yours"
    code, out, _ = cli(capsys, "count", "--data", data, "--out", mine, "--force", "--json")
    assert code == 0 and result(out)["rows"] == 3 and mine.read_bytes()[:2] == b"PK"


def test_export_and_profile_share_the_writer(capsys, tmp_path):
    from vtcore.files import atomic_file, check_target
    from vtcore.errors import VTError

    target = write(tmp_path / "t.bin", b"old")
    with pytest.raises(VTError, match="already exists; pass --force"):
        with atomic_file(target) as f:
            f.write(b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["t.bin"]   # no temp file left
    with atomic_file(target, force=True) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    code, _, err = cli(capsys, "profile", "--draft", "smollm2-135m-2l", "--out", target, "--json")
    one_error(code, err, r"t\.bin already exists; pass --force")   # refused before measuring
    assert target.read_bytes() == b"new"
    link = tmp_path / "link.bin"
    link.hardlink_to(target)
    with pytest.raises(VTError, match="is an input of this command"):
        check_target(link, force=True, inputs=[target])


# ------------------------------------------------------------------ bounded memory, no hang

def test_a_line_over_the_row_cap_is_a_bad_row_read_in_bounded_pieces(capsys, tmp_path, workspace):
    big = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "x " * 40_000}]}
    data = write(tmp_path / "big.jsonl", GOOD + (json.dumps(big) + "\n").encode() + GOOD)
    code, _, err = cli(capsys, "count", "--data", data, "--max-row-mb", "0.05", "--json")
    one_error(code, err, r"big\.jsonl:2: row over the size cap \(0\.1 MB > 0\.05 MB; raise it with --max-row-mb")
    code, out, _ = cli(capsys, "count", "--data", data, "--max-row-mb", "0.05", "--skip-bad", "--json")
    r = result(out)
    assert code == 0 and r["rows"] == 2 and r["skipped"] == {"row over the size cap": 1}
    code, out, _ = cli(capsys, "count", "--data", data, "--max-row-mb", "1", "--json")   # raised: counted
    assert code == 0 and result(out)["rows"] == 3


def test_the_cap_holds_for_json_arrays_csv_and_lines_without_a_newline(tmp_path):
    from vtcore.data import iter_records
    from vtcore.errors import DataError

    long = "y" * 5000
    (tmp_path / "a.json").write_text(json.dumps([ROW, {"text": long}]))
    (tmp_path / "a.csv").write_text(f"prompt,response\nhi,{long}\n")
    (tmp_path / "a.jsonl").write_text(json.dumps(ROW) + "\n" + "z" * 5000)   # no newline at the end
    for name, line in (("a.json", 1), ("a.csv", 2)):
        with pytest.raises(DataError, match=rf"{name}:{line}: row over the size cap"):
            list(iter_records(tmp_path / name, max_row_bytes=1000))
    rows = list(iter_records(tmp_path / "a.jsonl", max_row_bytes=1000))
    assert rows[0] == (1, ROW) and isinstance(rows[1][1], DataError) and "size cap" in str(rows[1][1])


def test_fifos_and_devices_are_refused_before_anything_reads_them(capsys, tmp_path, workspace):
    zero = tmp_path / "zero.jsonl"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    for path, kind in ((zero, "a character device"), (fifo, r"a FIFO \(named pipe\)")):
        code, _, err = cli(capsys, "count", "--data", path, "--json")   # would hang or grow without end
        one_error(code, err, rf"{path.name}: refused: this is {kind}, not a regular file")
    code, _, err = cli(capsys, "validate", fifo, "--vocab-size", "10", "--json")
    one_error(code, err, r"pipe\.jsonl.*FIFO")


# ------------------------------------------------------------------ one line and exit 2, never a traceback

@pytest.fixture
def gz_files(tmp_path):
    import gzip

    z = gzip.compress((SAMPLES / "code.jsonl").read_bytes())   # 164 rows
    cut = write(tmp_path / "cut.jsonl.gz", z[: len(z) // 2])
    plain = write(tmp_path / "plain.jsonl.gz", GOOD * 3)    # named .gz, not gzip
    return cut, plain


def test_cut_or_foreign_gzip_is_the_files_error(capsys, gz_files, workspace):
    cut, plain = gz_files
    code, _, err = cli(capsys, "count", "--data", cut, "--json")
    one_error(code, err, r"cut\.jsonl\.gz:\d+: the gzip stream is cut short \(truncated file\)")
    code, _, err = cli(capsys, "count", "--data", plain, "--json")
    one_error(code, err, r"plain\.jsonl\.gz:1: not a valid gzip stream")
    # --skip-bad: the rows before the cut are kept, and the cut is reported
    code, out, _ = cli(capsys, "count", "--data", cut, "--skip-bad", "--json")
    r = result(out)
    assert code == 0 and 0 < r["rows"] < 164 and r["skipped"] == {"the gzip stream is cut short": 1}
    assert any("cut short" in w and f"{r['rows']:,} rows before it were kept" in w for w in r["warnings"])
    code, _, err = cli(capsys, "count", "--data", plain, "--skip-bad", "--json")
    one_error(code, err, r"no rows to count \(all skipped: \{'not a valid gzip stream': 1\}\)")


def test_gzip_errors_in_json_arrays_and_csv(tmp_path):
    import gzip

    from vtcore.data import iter_records
    from vtcore.errors import DataError

    for name, data in (("a.json.gz", json.dumps([ROW] * 300).encode()), ("a.csv.gz", b"prompt,response\n" + b"p,r\n" * 3000)):
        z = gzip.compress(data)
        write(tmp_path / name, z[: len(z) - 20])
        with pytest.raises(DataError, match=rf"{re.escape(name)}.*gzip stream is cut short"):
            list(iter_records(tmp_path / name))


def test_unusable_workspace_is_named_with_reason_and_fix(capsys, tmp_path, monkeypatch):
    afile = write(tmp_path / "ws-file", b"")
    for ws, why in ((afile, "it exists and is not a folder"), (afile / "sub", r"cannot create it \(Not a directory\)")):
        monkeypatch.setenv("VTCORE_WORKSPACE", str(ws))
        code, _, err = cli(capsys, "count", "--data", SAMPLES / "code.jsonl", "--json")
        line = one_error(code, err, rf"workspace {re.escape(str(ws))} cannot be used: {why}")
        assert "set VTCORE_WORKSPACE" in line


def test_out_that_cannot_be_made_and_long_names(capsys, tmp_path, workspace):
    data = write(tmp_path / "d.jsonl", GOOD * 2)
    afile = write(tmp_path / "afile", b"")
    code, _, err = cli(capsys, "count", "--data", data, "--out", afile / "sub" / "c.npz", "--json")
    one_error(code, err, r"cannot write --out .*afile/sub/c\.npz")
    long_out = tmp_path / ("c" * 251 + ".npz")            # 255 bytes: legal, but its temp name was not
    code, out, err = cli(capsys, "count", "--data", data, "--out", long_out, "--json")
    assert code == 0 and long_out.is_file(), err
    code, _, err = cli(capsys, "count", "--data", data, "--out", tmp_path / ("c" * 300 + ".npz"), "--json")
    one_error(code, err, r"the name is too long")
    code, _, err = cli(capsys, "count", "--data", tmp_path / ("d" * 300 + ".jsonl"), "--json")
    one_error(code, err, r"d{20}.*\.jsonl: cannot open the dataset \(File name too long\)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission bits")
def test_out_in_a_folder_without_permission(capsys, tmp_path, workspace):
    data = write(tmp_path / "d.jsonl", GOOD * 2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = cli(capsys, "count", "--data", data, "--out", locked / "c.npz", "--json")
    one_error(code, err, r"cannot write --out .*locked/c\.npz \(Permission denied\)")


def test_validate_reads_a_token_map_in_chunks_from_the_file(capsys, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from vtcore import validate
    from vtcore.formats import safe_torch_load, stored_ids

    rng = np.random.default_rng(0)
    ids = rng.permutation(5000)[:3000].astype(np.int64)
    ids[2999] = ids[10]           # a duplicate 2989 ids apart: in another chunk
    ids[1500] = -7
    ids[1700] = 5003              # >= V
    path = tmp_path / "token_map_sglang_k3000.pt"
    torch.save(torch.from_numpy(ids), path)
    stored = stored_ids(path, safe_torch_load(path, mmap=True))
    assert stored is not None and stored.size == 3000
    assert np.array_equal(np.concatenate(list(stored.chunks(128))), ids)   # the file's bytes, chunk by chunk
    monkeypatch.setattr(validate, "CHUNK_IDS", 128)                        # the big-file path, small
    code, out, err = cli(capsys, "validate", path, "--vocab-size", "5000", "--json")
    problems = result(out)["problems"]
    assert code == 2 and problems == [
        "token map: negative ids -7",
        "token map: ids 5003 are >= the vocabulary size 5000",
        f"token map: duplicate ids {ids[10]} (each id may appear once)"], problems
    # without V: the mask spans the largest id seen; the same duplicate is found
    problems, _ = validate.check_ids(np.abs(ids), None, 3000, {int(ids[5]): "kept"}, chunk=100)
    assert problems == [f"token map: duplicate ids {ids[10]} (each id may appear once)".replace("token map", "token ids")]


def test_long_texts_are_encoded_in_pieces_with_the_same_ids(qwen_tok, monkeypatch):
    """A 50 MB message needed ~18 GB inside the tokenizer; long texts are now encoded in pieces
    cut at pre-token boundaries. With tiny pieces every sample row is 'long': the ids must be
    exactly those of whole encoding, in all three paths (segments, whole rows, content)."""
    from vtcore import mask
    from vtcore.data import read_dataset

    convs = list(read_dataset(SAMPLES / "code.jsonl")) + list(read_dataset(SAMPLES / "chat.jsonl.gz"))[:300]
    special = conv_with(["Hello <|im_end|> inside, then text " * 40])   # added tokens inside: the whole-row path
    expected = {m: mask.AssistantTokens(qwen_tok, m).encode(convs + [special]) for m in ("template", "content")}
    monkeypatch.setattr(mask, "PIECE_CHARS", 200)
    for m in ("template", "content"):
        at = mask.AssistantTokens(qwen_tok, m)
        got = at.encode(convs + [special])
        assert got == expected[m] and at.stats.texts_in_pieces > 100, m
    assert at.stats.cuts_inside_words == 0
    # a run without spaces or line breaks is cut anyway, and counted
    at = mask.AssistantTokens(qwen_tok, "content")
    at.encode([conv_with(["x" * 1000])])
    assert at.stats.cuts_inside_words >= 1


def conv_with(answers: list[str]):
    from vtcore.data import Conversation

    msgs = []
    for a in answers:
        msgs += [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]
    return Conversation(messages=msgs, domain="d", source="t:1", index=0)


# ------------------------------------------------------------------ no job "running" after it died

def test_a_job_whose_error_handling_fails_still_ends_in_error():
    from vtcore.jobs import Job

    def fn(progress, should_stop):
        raise ValueError("the real error")

    def kept():
        raise OSError("journal unreadable")   # what jobs._run called outside its own error handling

    job = Job(fn, name="t", kept=kept).start()
    assert job.join(10)
    s = job.status()
    assert s["state"] == "error" and not s["running"] and s["error"] == "ValueError: the real error"
    assert s["kept"].startswith("unknown: finding out failed too (OSError: journal unreadable)")


def optimize(capsys, counts, study, trials=5, *extra):
    return cli(capsys, "optimize", "--counts", counts, "--draft", "qwen3-0.6b", "--study", study,
               "--trials", trials, *extra, "--json")


def test_a_torn_last_journal_line_is_dropped_not_appended_onto(capsys, code_counts, workspace):
    code, out, err = optimize(capsys, code_counts, "torn")
    first = result(out)
    journal = workspace / "studies" / "torn.journal"
    assert code == 0 and first["n_trials"] == 5 and first["notes"] == []
    with open(journal, "ab") as f:           # a run killed in the middle of a write
        f.write(b'{"op_code":5,"worker_id":"dead-1","trial_id":7,"para')
    code, out, err = optimize(capsys, code_counts, "torn")
    second = result(out)
    assert code == 0 and second["state"] == "finished" and second["n_trials"] == 10, err
    assert "recovered study journal torn.journal" in second["notes"][0] and "note: recovered" in err
    assert journal.read_bytes().endswith(b"\n") and (workspace / "studies" / "torn.journal.bak").is_file()
    code, out, _ = optimize(capsys, code_counts, "torn")
    assert code == 0 and result(out)["n_trials"] == 15 and result(out)["notes"] == []


def test_a_journal_already_glued_by_the_old_append_is_recovered(capsys, code_counts, workspace):
    from vtcore import studies

    optimize(capsys, code_counts, "glued")
    journal = workspace / "studies" / "glued.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    # what the old code made of a torn line: the next run's records written onto it
    journal.write_bytes(b"".join(lines[:-3]) + b'{"op_code":5,"wor' + b"".join(lines[-3:]))
    with pytest.raises(ValueError):           # Optuna itself cannot read it any more
        studies._storage(journal).get_all_studies()
    settings, rows = studies.load_study_rows(journal)
    assert len([r for r in rows if r["state"] == "COMPLETE"]) == 5
    code, out, _ = optimize(capsys, code_counts, "glued")
    assert code == 0 and result(out)["n_trials"] == 10


STALE_RUN = """
import sys, time
import numpy as np
from vtcore import search, studies
V = 1000
p = search.Problem(np.linspace(0, 1, V + 1), 1 - np.arange(V + 1) / V)
def slow(k, gamma):
    if k is not None and len(seen) >= 3:
        time.sleep(600)   # killed here, mid-trial
    seen.append(k)
    return p.evaluate(k, gamma)
seen = []
studies.StudyRunner(p, "killed", n_trials=50, evaluate=slow).run()
"""


def test_a_trial_left_running_by_kill_9_is_failed_on_resume_and_not_counted(workspace):
    import subprocess
    import sys
    import time

    import numpy as np

    from tests.conftest import ROOT
    from vtcore import search, studies

    env = {**os.environ, "VTCORE_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", STALE_RUN], env=env)
    journal = workspace / "studies" / "killed.journal"
    try:
        deadline = time.time() + 120
        # trial 3 sleeps: wait for it (an earlier trial can be caught RUNNING for an instant too)
        while not (journal.is_file() and any(r["state"] == "RUNNING" and r["number"] == 3
                                             for r in studies.load_study_rows(journal)[1])):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
    finally:
        proc.kill()                             # kill -9
        proc.wait()
    V = 1000
    p = search.Problem(np.linspace(0, 1, V + 1), 1 - np.arange(V + 1) / V)
    runner = studies.StudyRunner(p, "killed", n_trials=2).run()
    assert runner.state == "finished"
    assert runner.notes == ["failed 1 trial(s) left running by a run that was killed (trial 3); they are not counted"]
    s = studies.summarize(runner, search.solve_exact(p))
    assert s["n_trials"] == 5 and s["n_failed"] == 1
    assert [r["state"] for r in studies.load_study_rows(journal)[1]].count("RUNNING") == 0


def test_pareto_points_is_checked_before_the_study_runs(capsys, code_counts, workspace):
    code, _, err = optimize(capsys, code_counts, "pp", 5, "--pareto-points", "-1")
    one_error(code, err, r"--pareto-points must be >= 1, got -1")
    assert not (workspace / "studies" / "pp.journal").exists()


# ------------------------------------------------------------------ wrong figures are refused

def tampered_counts(src, dst, **change):
    import numpy as np

    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in change.items():
        arrays[k] = v(arrays[k]) if callable(v) else v
    np.savez(dst, **arrays)
    return dst


def test_counts_files_are_checked_on_load(capsys, code_counts, tmp_path):
    import numpy as np

    def negative(c):
        c = c.copy()
        c[int(np.argmax(c))] -= 1000
        return c

    cases = {
        "negative": ({"counts": negative}, r"field 'counts' has negative counts"),
        "short": ({"counts_fit": lambda c: c[:-10]}, r"field 'counts_fit' has 151,659 entries but 'counts' has 151,669"),
        "sum": ({"counts_heldout": lambda c: c * 2}, r"fields 'counts_fit' \+ 'counts_heldout' do not add up to 'counts'"),
        "manifest": ({"manifest": lambda m: np.array(json.dumps({**json.loads(str(m)), "assistant_tokens": 8036}))},
                     r"manifest says assistant_tokens 8036 but 'counts' sums to"),
        "floats": ({"counts": lambda c: c.astype(float)}, r"field 'counts' must be a 1-D integer array, got float64"),
    }
    for name, (change, pattern) in cases.items():
        bad = tampered_counts(code_counts, tmp_path / f"{name}.npz", **change)
        code, _, err = cli(capsys, "coverage", "--counts", bad, "--min-coverage", "0.9", "--json")
        one_error(code, err, rf"{name}\.npz: {pattern}")


def test_export_refuses_a_study_made_on_other_counts(capsys, code_counts, tmp_path, workspace):
    code, out, _ = optimize(capsys, code_counts, "for-code")
    assert code == 0
    other = tmp_path / "other.npz"
    data = write(tmp_path / "other.jsonl", GOOD * 5)
    assert cli(capsys, "count", "--data", data, "--out", other, "--json")[0] == 0
    code, _, err = cli(capsys, "export", "--counts", other, "--from-study", "for-code", "--trial", "best",
                       "--out", tmp_path / "ex", "--json")
    one_error(code, err, r"study 'for-code' was run on other counts \(sha256 [0-9a-f]{12}…\) than these")
    assert not (tmp_path / "ex").exists()
    code, out, _ = cli(capsys, "export", "--counts", code_counts, "--from-study", "for-code", "--trial", "best",
                       "--out", tmp_path / "ex", "--json")
    assert code == 0 and result(out)["validated"]


def test_bom_duplicates_and_image_parts(capsys, tmp_path, workspace):
    data = write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + GOOD * 4)
    for extra in ([], ["--skip-bad"]):   # the BOM is accepted, not a malformed first row
        code, out, _ = cli(capsys, "count", "--data", data, *extra, "--json")
        assert code == 0 and result(out)["rows"] == 4 and result(out)["rows_skipped"] == 0
    link = tmp_path / "same.jsonl"
    link.symlink_to(data)
    code, out, _ = cli(capsys, "count", "--data", data, link, data, "--json")
    r = result(out)
    assert code == 0 and r["rows"] == 4 and r["domains"] == {"bom": r["assistant_tokens"]}
    assert sum("was given more than once" in w and "counted once" in w for w in r["warnings"]) == 2
    image = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                       {"type": "image_url", "image_url": {"url": "x.png"}}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "A cat."},
                                                            {"type": "input_audio", "input_audio": {}}]}]}
    data = write(tmp_path / "mm.jsonl", (json.dumps(image) + "\n").encode() * 3)
    code, out, _ = cli(capsys, "count", "--data", data, "--json")
    warning = [w for w in result(out)["warnings"] if "non-text message parts" in w]
    assert code == 0 and warning and "6 non-text message parts were not counted (image_url: 3, input_audio: 3)" in warning[0]


def test_a_code_carrying_torchscript_map_is_refused_without_torchs_advice(capsys, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "token_map_sglang_k3.pt"
    script = ("import torch, sys\nclass M(torch.nn.Module):\n    def forward(self, x):\n        return x + 1\n"
              "torch.jit.save(torch.jit.script(M()), sys.argv[1])\n")
    (tmp_path / "mk.py").write_text(script)
    subprocess.run([sys.executable, str(tmp_path / "mk.py"), str(path)], check=True)
    code, out, err = cli(capsys, "validate", path, "--vocab-size", "10", "--json")
    line = one_error(code, err, r"refused: a TorchScript archive carries code")
    assert "weights_only" not in line and "succeed" not in line and "weights_only" not in out


# ------------------------------------------------------------------ runs on one study draw different k

def test_runs_on_one_study_draw_different_seeds(workspace):
    import threading

    import numpy as np

    from vtcore import search, studies

    V = 5000
    p = search.Problem(np.linspace(0, 1, V + 1) ** 0.3, 1 - np.arange(V + 1) / V)
    first = studies.StudyRunner(p, "twice", n_trials=8, seed=42).run()
    second = studies.StudyRunner(p, "twice", n_trials=8, seed=42).run()
    ks = [r["k"] for r in second.snapshot()]
    assert first.seed_used == 42 and second.seed_used != 42        # a new study alone keeps its seed
    assert ks[:8] != ks[8:]                                       # the resumed run samples other k
    # two runs alive at once: the second is not alone, draws another seed, fails none of the first's trials
    release = threading.Event()
    started = threading.Event()

    def held(k, gamma):
        started.set()
        release.wait(30)
        return p.evaluate(k, gamma)

    a = studies.StudyRunner(p, "together", n_trials=1, seed=7, evaluate=held).start()
    assert started.wait(30)
    b = studies.StudyRunner(p, "together", n_trials=1, seed=7)
    assert b.seed_used != a.seed_used and b.notes == []
    release.set()
    a.join(30)
    b.run()
    assert [r["state"] for r in studies.load_study_rows(b.path)[1]] == ["COMPLETE", "COMPLETE"]


# ------------------------------------------------------------------ the dashboard: errors in place, choices kept

def page(path: str):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    if path != "app.py":
        at.switch_page(path).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_unusable_workspace_is_named_on_every_page(tmp_path, monkeypatch):
    monkeypatch.setenv("VTCORE_WORKSPACE", str(write(tmp_path / "ws-file", b"")))
    for path in ("app.py", "pages/1_Data.py", "pages/2_Coverage.py", "pages/3_Frontier.py", "pages/4_Export.py",
                 "pages/5_Benchmark.py"):
        at = page(path)
        errors = [e.value for e in at.error]
        assert len(errors) == 1 and "ws-file cannot be used: it exists and is not a folder" in errors[0], (path, errors)
        assert "set VTCORE_WORKSPACE" in errors[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_empty_uploads_are_errors_in_place(workspace):
    from vtapp.jobs import counting_job

    at = page("pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload").run()
    at.file_uploader(key="uploader").set_value(("empty.jsonl", b"", "application/jsonl")).run()
    assert not at.exception and [e.value for e in at.error] == ["empty.jsonl: the uploaded file is empty"]
    assert at.multiselect(key="uploads_chosen").value == [] and at.button(key="count_btn").disabled
    job = counting_job([str(SAMPLES / "code.jsonl")]).start()   # a counted dataset, for the Frontier
    assert job.join(120) and job.state == "finished"
    at = page("pages/3_Frontier.py")
    at.radio(key="draft_kind").set_value("config.json").run()
    at.file_uploader(key="config_upload").set_value(("config.json", b"", "application/json")).run()
    assert not at.exception
    assert "config.json: the uploaded file is empty" in [e.value for e in at.error]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_data_page_keeps_the_chosen_uploads_after_a_refresh(workspace):
    at = page("pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload").run()
    at.file_uploader(key="uploader").set_value(("mine.jsonl", GOOD * 3, "application/jsonl")).run()
    chosen = at.multiselect(key="uploads_chosen").value
    assert len(chosen) == 1 and chosen[0].endswith("-mine.jsonl")
    again = page("pages/1_Data.py")          # a refresh: a new session, the same workspace
    assert again.radio(key="data_source").value == "Upload"
    assert again.multiselect(key="uploads_chosen").value == chosen
    again.button(key="count_btn").click().run()
    while again.get("progress"):
        again.run()
    again.run()
    assert [m.value for m in again.metric if m.label == "Rows"] == ["3"]
    assert not [w.value for w in again.warning if "another tab" in w.value]   # this tab's own count


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_count_in_another_tab_is_said_not_silently_shown(workspace, tmp_path):
    from vtapp import state
    from vtapp.jobs import counting_job

    job = counting_job([str(SAMPLES / "code.jsonl")]).start()
    assert job.join(120) and job.state == "finished"
    tab = page("pages/3_Frontier.py")
    tab.number_input(key="trials").set_value(5).run()
    tab.button(key="run_tpe").click().run()
    name = state.load_state().study
    while tab.get("progress"):                # the study runs in the background
        tab.run()
    assert name and not tab.warning
    other = counting_job([str(write(tmp_path / "other.jsonl", GOOD * 5))]).start()   # another tab counts
    assert other.join(120) and other.state == "finished"
    tab.query_params["study"] = name          # this tab still shows its study
    tab.run()
    warnings = [w.value for w in tab.warning]
    assert any("The current counts changed to" in w and "another tab or window" in w for w in warnings), warnings
    assert any(f"Study {name} was run on other counts" in w for w in warnings), warnings


# ------------------------------------------------------------------ corrupt EAGLE-3 drafts

@pytest.fixture(scope="module")
def eagle3_drafts(tmp_path_factory, code_counts):
    """A sound EAGLE-3 draft keeping the 64 most frequent ids of the code sample, its target's
    config, and the same draft corrupted each way a careless edit or a bad conversion makes it:
    {name: (directory, what the refusal must name)}."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from tests.drafthelpers import V, eagle3_checkpoint, tiny_target_config

    root = tmp_path_factory.mktemp("drafts")
    with np.load(code_counts) as z:
        kept = np.sort(np.argsort(-z["counts"], kind="stable")[:64])
    good = root / "good"
    eagle3_checkpoint(good, V, kept)
    weights = load_file(str(good / "model.safetensors"))
    config = json.loads((good / "config.json").read_text())
    nan_head = weights["lm_head.weight"].clone()
    nan_head[3, 5] = float("nan")
    dup = weights["d2t"].clone()
    dup[1] = dup[0] - 1          # rows 0 and 1 both map to the same target id
    cases = {
        "hidden-huge": ({"hidden_size": 10 ** 9}, {}, r"'hidden_size' is 1000000000, outside 1\.\.65,536"),
        "hidden-missing": ({"hidden_size": None}, {}, r"'hidden_size' is missing"),
        "heads-zero": ({"num_attention_heads": 0}, {}, r"'num_attention_heads' is 0, outside"),
        "head-wide": ({}, {"lm_head.weight": torch.randn(64, 17)},
                      r"tensor lm_head\.weight is \[64, 17\], the config implies \[64, 16\]"),
        "fc-missing": ({}, {"fc.weight": None}, r"tensor fc\.weight is missing"),
        "fc-shape": ({}, {"fc.weight": torch.randn(16, 40)}, r"tensor fc\.weight is \[16, 40\], the config implies \[16, 48\]"),
        "head-int": ({}, {"lm_head.weight": torch.ones(64, 16, dtype=torch.int32)},
                     r"tensor lm_head\.weight has dtype int32, expected a float dtype"),
        "head-nan": ({}, {"lm_head.weight": nan_head}, r"tensor lm_head\.weight holds NaN"),
        "d2t-float": ({}, {"d2t": weights["d2t"].float()}, r"d2t must hold integer token ids, got dtype float32"),
        "t2d-empty": ({}, {"t2d": torch.zeros(0, dtype=torch.bool)}, r"t2d has length 0 but the target vocabulary"),
        "d2t-duplicate": ({}, {"d2t": dup}, r"the draft's own d2t \+ arange is not strictly increasing"),
        "d2t-out-of-range": ({}, {"d2t": weights["d2t"] + V}, r"the draft's own d2t \+ arange gives ids .* >= len\(t2d\)"),
    }
    out = {}
    for name, (cfg_change, w_change, pattern) in cases.items():
        d = root / name
        d.mkdir()
        cfg = {k: v for k, v in {**config, **cfg_change}.items() if v is not None}
        w = {k: v for k, v in {**weights, **w_change}.items() if v is not None}
        (d / "config.json").write_text(json.dumps(cfg))
        save_file(w, str(d / "model.safetensors"))
        out[name] = (d, pattern)
    return good, tiny_target_config(root / "target"), out


def test_corrupt_eagle3_drafts_are_refused_by_export_and_failed_by_validate(capsys, code_counts, eagle3_drafts,
                                                                           tmp_path):
    good, target, bad = eagle3_drafts
    code, out, err = cli(capsys, "export", "--counts", code_counts, "--k", 32, "--draft", good, "--target", target,
                         "--out", tmp_path / "good", "--json")
    assert code == 0 and result(out)["validated"], err
    for name, (d, pattern) in bad.items():
        code, _, err = cli(capsys, "export", "--counts", code_counts, "--k", 32, "--draft", d, "--target", target,
                           "--out", tmp_path / name, "--json")
        one_error(code, err, rf"{name}: not a usable EAGLE-3 draft: .*{pattern}")
        written = [p.name for p in (tmp_path / name).iterdir()] if (tmp_path / name).exists() else []
        assert not [w for w in written if "draft" in w], (name, written)   # no draft written; the token maps may be
        code, out, _ = cli(capsys, "validate", d, "--json")
        report = json.loads(out)
        report = report[0] if isinstance(report, list) else report
        assert code != 0 and any(re.search(pattern, p) for p in report.get("problems", [])), (name, out)


def test_bench_refuses_a_corrupt_eagle3_draft_with_the_same_check(capsys, eagle3_drafts, tmp_path, workspace):
    _, target, bad = eagle3_drafts    # the draft is checked before the target is loaded
    for name in ("head-wide", "heads-zero", "d2t-duplicate"):
        d, pattern = bad[name]
        code, _, err = cli(capsys, "bench", "--target", target, "--draft", d, "--prompts", 1, "--max-new-tokens", 2,
                           "--no-save", "--json")
        one_error(code, err, rf"{name}: not a usable EAGLE-3 draft: .*{pattern}")


# ------------------------------------------------------------------ tiny files, absurd numbers

def npy_claiming(shape, data: bytes = b"\0" * 64) -> bytes:
    """A .npy whose header declares `shape` of int64 followed by only `data`."""
    import io

    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": "<i8", "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_tiny_files_that_claim_huge_arrays_are_refused_before_allocation(capsys, code_counts, tmp_path, monkeypatch):
    import zipfile

    import numpy as np
    import torch

    from vtcore.formats import read_token_ids

    # a 1 KB .npy whose header claims 5e10 elements, and a zip named .npy: validate names them
    write(tmp_path / "d2t-5.npy", npy_claiming((50_000_000_000,)))
    write(tmp_path / "t2d-5.npy", npy_claiming((50_000_000_000,)))
    code, out, _ = cli(capsys, "validate", tmp_path / "d2t-5.npy", "--json")
    assert code != 0 and "declares a int64 array of shape [50000000000]" in out and "over the limit" in out
    with zipfile.ZipFile(tmp_path / "t2d-7.npy", "w") as z:
        z.writestr("x.npy", npy_claiming((3,), b"\0" * 24))
    write(tmp_path / "d2t-7.npy", npy_claiming((3,), b"\0" * 24))
    code, out, _ = cli(capsys, "validate", tmp_path / "d2t-7.npy", "--json")
    assert code != 0 and "a zip archive (an .npz?), not a .npy array" in out
    # a counts file whose member declares a huge array in a few bytes
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w") as z:
        z.writestr("counts.npy", npy_claiming((10 ** 12,)))
        z.writestr("manifest.npy", npy_claiming((), b"\0" * 8))
    code, _, err = cli(capsys, "coverage", "--counts", bomb, "--json")
    one_error(code, err, r"bomb\.npz: member counts\.npy: declares a int64 array of shape \[1000000000000\] "
                         r"\(7,629,394\.5 MB\), over the limit")
    # a deflated counts file that expands past the limit (4 MB here, by the environment)
    with np.load(code_counts) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["counts_by_domain"] = np.zeros((4, arrays["counts"].size), dtype=np.int64)   # 4.6 MB of zeros
    np.savez_compressed(tmp_path / "deflated.npz", **arrays)
    assert (tmp_path / "deflated.npz").stat().st_size < 200_000
    monkeypatch.setenv("VTCORE_MAX_ARRAY_MB", "4")
    code, _, err = cli(capsys, "coverage", "--counts", tmp_path / "deflated.npz", "--json")
    one_error(code, err, r"deflated\.npz: member counts_by_domain\.npy expands to 4\.6 MB, over the limit of 4\.0 MB")
    monkeypatch.setenv("VTCORE_MAX_ARRAY_MB", "1")
    # the token map bench reads: its zip's expanded size, before torch loads it
    torch.save(torch.arange(200_000), tmp_path / "map.pt")
    with pytest.raises(VTError, match=r"map\.pt: the token map expands to 1\.\d MB, over the limit of 1\.0 MB"):
        read_token_ids(tmp_path / "map.pt")
    monkeypatch.delenv("VTCORE_MAX_ARRAY_MB")
    assert read_token_ids(tmp_path / "map.pt").numel() == 200_000
    # the same map with its members deflated: validate maps the file, and must not read packed bytes as ids
    with zipfile.ZipFile(tmp_path / "map.pt") as src, zipfile.ZipFile(tmp_path / "packed.pt", "w",
                                                                       zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            z.writestr(info.filename, src.read(info))
    code, out, _ = cli(capsys, "validate", tmp_path / "packed.pt", "--json")
    assert code != 0 and "tensor data map/data/0 is compressed; torch.save stores tensors uncompressed" in out, out


def test_absurd_numbers_are_refused_by_their_flag_with_the_limit(capsys, code_counts, tmp_path, workspace):
    cases = [
        (["profile", "--draft", "qwen3-0.6b", "--context", 2_000_000], r"--context must be within 0\.\.131,072"),
        (["flops", "--draft", "qwen3-0.6b", "--context", 1_000_000_000], r"--context must be within 0\.\.1,048,576"),
        (["optimize", "--counts", code_counts, "--draft", "qwen3-0.6b", "--objective", "speedup",
          "--gamma-max", 1_000_000], r"--gamma-max must be within 1\.\.64"),
        (["export", "--counts", code_counts, "--k", 10, "--vocab-size", 99_999_999_999], r"--vocab-size must be within"),
        (["profile", "--draft", "qwen3-0.6b", "--threads", -1], r"--threads must be within 1\.\.\d+ \(this machine's cores\)"),
        (["bench", "--threads", 100_000], r"--threads must be within 1\.\.\d+"),
        (["optimize", "--counts", code_counts, "--draft", "qwen3-0.6b", "--study", "s" * 300],
         r"study name 's+'\.\.\. is 300 characters; at most 200"),
        (["export", "--counts", code_counts, "--k", 10, "--out", tmp_path / ("o" * 300)],
         r"--out .*: cannot create the folder \(File name too long\)"),
    ]
    for argv, pattern in cases:
        code, _, err = cli(capsys, *argv, "--json")
        one_error(code, err, pattern)


def test_malformed_configs_and_json_are_one_line_errors(capsys, code_counts, tmp_path, workspace):
    import torch

    from vtcore.formats import read_token_ids

    listed = tmp_path / "listed"
    listed.mkdir()
    write(listed / "config.json", b"[1, 2]")
    for argv in (["export", "--counts", code_counts, "--k", 10, "--target", listed],
                 ["export", "--counts", code_counts, "--k", 10, "--draft", listed]):
        code, _, err = cli(capsys, *argv, "--out", tmp_path / "ex", "--json")
        one_error(code, err, r"listed/config\.json: (config\.json )?must be a JSON object, got a JSON list")
    code, out, _ = cli(capsys, "validate", listed, "--json")
    assert code != 0 and "config.json must be a JSON object, got a JSON list" in out
    # a draft whose shard index is a list, or not JSON
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    write(sharded / "config.json", json.dumps({"vocab_size": 100, "hidden_size": 8}).encode())
    for index in (b"[1]", b"{not json", b'{"weight_map": {"w": "../elsewhere.safetensors"}}'):
        write(sharded / "model.safetensors.index.json", index)
        code, out, _ = cli(capsys, "validate", sharded, "--json")
        assert code != 0 and "model.safetensors.index.json" in out, out
    # JSON with a 100,000-digit number, or nested 100,000 deep: as a config and as a dataset row
    for name, text in (("digits", "{\"vocab_size\": " + "9" * 100_000 + "}"), ("deep", "[" * 100_000 + "]" * 100_000)):
        d = tmp_path / name
        d.mkdir()
        write(d / "config.json", text.encode())
        code, _, err = cli(capsys, "export", "--counts", code_counts, "--k", 10, "--target", d, "--out",
                           tmp_path / "ex", "--json")
        one_error(code, err, rf"{name}/config\.json: not valid JSON \((Exceeds the limit|nested too deep)")
        write(tmp_path / f"{name}.jsonl", GOOD + text.encode() + b"\n" + GOOD)
        code, _, err = cli(capsys, "count", "--data", tmp_path / f"{name}.jsonl", "--json")   # a malformed row
        one_error(code, err, rf"{name}\.jsonl:2: malformed JSON \((Exceeds the limit|nested too deep)")
    # a sparse tensor as a token map
    torch.save(torch.arange(5).to_sparse(), tmp_path / "sparse.pt")
    with pytest.raises(VTError, match=r"sparse\.pt: a token map must be a dense 1-D integer tensor, got a "
                                      r"torch\.sparse_coo tensor"):
        read_token_ids(tmp_path / "sparse.pt")


def test_counts_whose_int64_sum_wraps_are_refused(capsys, code_counts, tmp_path):
    import numpy as np

    def huge(c):
        c = np.zeros_like(c)
        c[:3] = 1 << 62             # each fits int64; their sum does not
        return c

    bad = tampered_counts(code_counts, tmp_path / "wraps.npz", counts=huge, counts_fit=huge,
                          counts_heldout=lambda c: np.zeros_like(c), counts_by_domain=lambda c: huge(c[0])[None])
    for argv in (["coverage", "--counts", bad], ["optimize", "--counts", bad, "--draft", "qwen3-0.6b"]):
        code, _, err = cli(capsys, *argv, "--json")
        one_error(code, err, r"wraps\.npz: field 'counts' sums to 13,835,058,055,282,163,712, past what int64 holds")


# ------------------------------------------------------------------ hand-edited journals, concurrent runs

def test_forged_trials_in_a_journal_are_failed_and_never_best(capsys, code_counts, tmp_path, workspace):
    code, out, _ = optimize(capsys, code_counts, "forged", 4)
    assert code == 0
    journal = workspace / "studies" / "forged.journal"
    lines = journal.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec.get("op_code") == 5 and rec.get("trial_id") == 0:
            rec["param_value_internal"] = 1e12                        # k = 10^12
        if rec.get("op_code") == 5 and rec.get("trial_id") == 1:
            rec["param_value_internal"] = -5.0                        # k = -5
        if rec.get("op_code") == 8 and rec.get("trial_id") == 2:
            rec["user_attr"]["metrics"]["utility"] = 99.0             # a utility no k reaches
        if rec.get("op_code") == 6 and rec.get("trial_id") == 2:
            rec["values"] = [99.0]
        lines[i] = json.dumps(rec)
    journal.write_text("\n".join(lines) + "\n")
    code, out, err = optimize(capsys, code_counts, "forged", 2)
    s = result(out)
    assert code == 0 and s["best_trial"] not in (0, 1, 2) and s["regret"] >= 0, s
    assert s["n_trials"] == 3 and s["n_failed"] == 3, s              # 6 in the study, 3 of them forged
    faults = " ".join(s["notes"])
    assert "trial 0 is not counted: k = 1,000,000,000,000 is outside the study's range 1..151,936" in faults
    assert "trial 1 is not counted: k = -5 is outside" in faults
    assert re.search(r"trial 2 is not counted: utility 99\.0 is not alpha C \+ \(1 - alpha\) R", faults)
    for trial, pattern in (("2", r"trial 2 cannot be used: utility 99\.0"), ("0", r"trial 0 cannot be used: k = ")):
        code, _, err = cli(capsys, "export", "--counts", code_counts, "--from-study", "forged", "--trial", trial,
                           "--out", tmp_path / "ex", "--json")
        one_error(code, err, pattern)
    code, out, _ = cli(capsys, "export", "--counts", code_counts, "--from-study", "forged", "--trial", "best",
                       "--out", tmp_path / "ex", "--json")
    assert code == 0 and result(out)["k"] == s["best_k"]


def test_two_optimize_processes_on_one_study_report_the_study_files_trials(code_counts, tmp_path):
    """Two `optimize --study S` processes at once: both exit 0, each run's trials are all in the
    study, and each reports n_trials and the best trial as the study file holds them when it ends
    (the last to end: the union of both runs), not its own trials."""
    from vtcore import studies

    ws, n = tmp_path / "ws", 25
    runs = [vtcore_child(["optimize", "--counts", code_counts, "--draft", "qwen3-0.6b", "--study", "both",
                          "--trials", n, "--json"], tmp_path, f"run{i}", ws=ws) for i in range(2)]
    reports = []
    for proc, out, err in runs:
        assert proc.wait(timeout=180) == 0, err.read_text()
        reports.append(result(out.read_text()))
    settings, rows = studies.load_study_rows(ws / "studies" / "both.journal")
    done = [r for r in rows if r["state"] == "COMPLETE"]
    assert len(done) == 2 * n and all(r["n_new_trials"] == n for r in reports)
    last = max(reports, key=lambda r: r["n_trials"])
    assert last["n_trials"] == 2 * n and last["best_trial"] == studies.best_trial(rows, "utility")["number"]
    # they ran at once: the first to end counted the other's trials so far too (its own memory: n)
    assert min(r["n_trials"] for r in reports) > n, reports
    for r in reports:   # its best is a trial of the study, as stored
        assert r["n_trials"] <= 2 * n and r["n_failed"] == 0 and r["notes"] == [], r
        best = next(t for t in done if t["number"] == r["best_trial"])
        assert (r["best_k"], r["utility"], r["coverage"]) == (best["k"], best["utility"], best["coverage"])


def test_a_summary_counts_the_trials_of_concurrent_runs_from_the_study(workspace):
    import numpy as np

    from vtcore import search, studies

    V = 1000
    p = search.Problem(np.linspace(0, 1, V + 1) ** 0.3, 1 - np.arange(V + 1) / V)
    first = studies.StudyRunner(p, "shared", n_trials=3, seed=1)
    second = studies.StudyRunner(p, "shared", n_trials=4, seed=2).run()   # runs while the first is open
    first.run()
    s = studies.summarize(first, search.solve_exact(p))
    stored = studies.load_study_rows(first.path)[1]
    assert s["n_trials"] == len(stored) == 7 and s["n_new_trials"] == 3
    assert s["best_trial"] == studies.best_trial(stored, "utility")["number"]
    assert second.progress()["done"] == 4


# ------------------------------------------------------------------ the results store

def test_the_results_store_survives_torn_and_foreign_lines_and_the_page_counts_them(workspace):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT
    from vtcore.bench import BenchConfig, append_result, read_results, results_path
    from vtcore.benchtypes import BenchStopped

    path = results_path()
    path.write_bytes(b'{"time": "earlier", "device": "cpu"}\n'
                     b'\xff\xfe not utf-8\n'
                     b'[1, 2, 3]\n'
                     b'{"time": "killed mid-wri')                       # a torn last line, no newline
    append_result(BenchConfig(workspace=str(workspace)), BenchStopped(device="cpu", target="t", draft="d", k=1))
    rows, unreadable = read_results()
    assert [r["time"] for r in rows][0] == "earlier" and rows[1]["stopped"] and len(rows) == 2
    assert unreadable == 3 and path.read_bytes().endswith(b"}\n")
    assert path.read_bytes().count(b"\n") == 5                          # the new record on its own line
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/5_Benchmark.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("3 unreadable line(s)" in c.value for c in at.caption)


# ------------------------------------------------------------------ a full disk

@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MB tmpfs, filled but for `room` bytes by the test; skipped where mounting is not allowed."""
    import shutil
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                                         capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    def fill(room: int) -> None:
        st = os.statvfs(mnt)
        (mnt / "filler").write_bytes(b"\0" * max(st.f_bavail * st.f_frsize - room, 0))

    yield mnt, fill
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing_behind(capsys, code_counts, full_disk, monkeypatch):
    mnt, fill = full_disk
    fill(0)
    data = write(mnt.parent / "rows.jsonl", GOOD * 3)
    code, _, err = cli(capsys, "count", "--data", data, "--out", mnt / "c.npz", "--json")
    one_error(code, err, r"cannot write --out .*c\.npz: the disk is full \(no space left")
    code, _, err = cli(capsys, "export", "--counts", code_counts, "--k", 100, "--out", mnt / "ex", "--json")
    one_error(code, err, r"cannot write --out .*ex: needs 0\.\d MB, only 0\.0 MB free on its file system")
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]          # no temp file, no empty folder
    monkeypatch.setenv("VTCORE_WORKSPACE", str(mnt / "ws"))
    code, _, err = cli(capsys, "count", "--data", data, "--json")
    one_error(code, err, r"cannot unpack the bundled tokenizer into the workspace .*ws/tokenizers \(No space left "
                         r"on device; it needs 11 MB free\)")


def test_export_cleans_killed_runs_temps_and_force_keeps_a_users_folder(capsys, code_counts, tmp_path):
    out = tmp_path / "ex"
    stale = out / ".tmp-hf_draft_k100-999999999-abcd1234"       # what an export killed mid-write leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    mine = out / "token_map_sglang_k100.pt"                     # a folder of the user's at an output's name
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "export", "--counts", code_counts, "--k", 100, "--out", out, "--force", "--json")
    one_error(code, err, r"token_map_sglang_k100\.pt is a folder this export did not write")
    assert (mine / "notes.txt").read_text() == "mine"
    mine.rename(tmp_path / "moved")
    code, out_text, err = cli(capsys, "export", "--counts", code_counts, "--k", 100, "--out", out, "--json")
    assert code == 0 and result(out_text)["validated"], err
    assert not stale.exists() and not any(p.name.startswith(".") for p in out.iterdir())


# ------------------------------------------------------------------ names that are not UTF-8

def test_a_dataset_name_that_is_not_utf8_is_carried_through_counts_and_exports(capsys, tmp_path, workspace):
    data = tmp_path / os.fsdecode(b"mine\xff.jsonl")          # any bytes the file system allows
    data.write_bytes(GOOD * 4)
    code, out, err = cli(capsys, "count", "--data", data, "--out", tmp_path / "c.npz", "--json")
    assert code == 0 and list(result(out)["domains"]) == [os.fsdecode(b"mine\xff")], err
    (tmp_path / "c.npz").rename(tmp_path / "renamed.npz")
    for extra in (["--json"], []):                              # the JSON line and the human output
        code, out, err = cli(capsys, "export", "--counts", tmp_path / "renamed.npz", "--k", 5, "--out",
                             tmp_path / "ex", "--force", *extra)
        assert code == 0 and "Traceback" not in err, err
    text = (tmp_path / "ex" / "summary_k5.json").read_bytes()
    assert b"mine\\udcff.jsonl" in text                         # the JSON escape of the byte: valid UTF-8
    paths = [d["path"] for d in json.loads(text.decode("utf-8"))["manifest"]["datasets_detail"]]
    assert [os.fsencode(p) for p in paths] == [os.fsencode(data)]   # read back, the same bytes


# ------------------------------------------------------------------ Ray

def test_an_unreachable_ray_address_fails_within_the_stated_timeout(capsys, tmp_path, workspace, monkeypatch):
    import socket
    import time

    data = write(tmp_path / "rows.jsonl", GOOD * 3)
    monkeypatch.setenv("VTCORE_RAY_TIMEOUT", "1")
    with socket.socket() as s:            # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        code, _, err = cli(capsys, "count", "--data", data, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
                           "--json")
    assert time.monotonic() - t0 < 60                      # Ray itself retries for minutes
    one_error(code, err, rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port}: Connection refused within the "
                         r"1 s timeout \(VTCORE_RAY_TIMEOUT\)")


def vtcore_child(argv: list, tmp_path, name: str, ws=None, **env: str):
    """`python -m vtcore ARGV` in a process of its own (offline; its own workspace unless `ws`),
    stdout and stderr to files: (process, stdout path, stderr path)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "VTCORE_WORKSPACE": str(ws or tmp_path / f"{name}-ws"),
               "PYTHONPATH": str(ROOT), **env}
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "vtcore", *map(str, argv)], cwd=ROOT, env=environ,
                                stdout=fo, stderr=fe)
    return proc, out, err


def test_sigterm_and_sigint_end_a_ray_count_that_is_still_connecting(tmp_path):
    """A count joining a Ray address that never answers as Ray, given a 600 s timeout: the signal,
    not the timeout, ends it, within seconds, with one line that says what it was doing. SIGTERM
    lands while ray.init retries (the port accepts TCP but is no Ray), SIGINT while the address
    is still being probed (a port whose full backlog drops the SYN: the connect hangs)."""
    import signal
    import socket
    import time

    pytest.importorskip("ray", reason="ray[data] is not installed")
    data = write(tmp_path / "rows.jsonl", GOOD * 3)
    silent = socket.create_server(("127.0.0.1", 0), backlog=8)      # accepts TCP, says nothing
    full = socket.create_server(("127.0.0.1", 0), backlog=0)        # its queue filled by one connection
    fillers = [socket.create_connection(full.getsockname(), timeout=0.5)]
    try:
        while True:                                                 # until a connect to it hangs
            fillers.append(socket.create_connection(full.getsockname(), timeout=0.5))
    except OSError:
        pass
    runs = {}
    for sig, server in ((signal.SIGTERM, silent), (signal.SIGINT, full)):
        address = "127.0.0.1:%d" % server.getsockname()[1]
        proc, _, err = vtcore_child(["count", "--data", data, "--engine", "ray", "--ray-address", address,
                                     "--no-cache", "--json"], tmp_path, sig.name, VTCORE_RAY_TIMEOUT="600")
        runs[sig] = (address, proc, err)
    try:
        deadline = time.monotonic() + 120
        for sig, (address, proc, err) in runs.items():
            while "starting Ray" not in err.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
        time.sleep(1)                                               # inside the probe / ray.init now
        for sig, (address, proc, err) in runs.items():
            assert proc.poll() is None, err.read_text()             # still connecting, as Ray would for minutes
            proc.send_signal(sig)
        sent = time.monotonic()
        for sig, (address, proc, err) in runs.items():
            code = proc.wait(timeout=30)
            took = time.monotonic() - sent
            text = err.read_text(errors="replace")
            assert code == 128 + sig, (sig.name, code, text)
            errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
            assert "Traceback" not in text and errors == [
                f"error: {sig.name} received while joining the Ray cluster at {address}: counting ended, "
                "nothing was written"], text
            assert took < 10, (sig.name, took)
    finally:
        for _, proc, _ in runs.values():
            proc.kill()
            proc.wait()
        for s in (silent, full, *fillers):
            s.close()


# ------------------------------------------------------------------ softer cases

def test_a_child_killed_from_outside_is_reported_as_killed_not_by_its_last_progress_bar(code_counts, workspace):
    """A dashboard job's child killed once it has drawn a progress bar: the job's error (what the
    page shows, "<label> failed: <error>") says it was killed, not where its bar was."""
    import signal

    from vtcore.jobs import Job, run_child

    pid, bars = [], []

    def progress(frac: float, text: str = "") -> None:   # the child has drawn a bar: kill it now
        bars.append(text)
        if len(bars) == 1:
            os.kill(pid[0], signal.SIGKILL)

    argv = ["optimize", "--counts", str(code_counts), "--draft", "qwen3-0.6b", "--trials", "5000"]
    job = Job(lambda _p, stop: run_child(argv, progress, stop, on_start=pid.append), name="optimize").start()
    assert job.join(120)
    s = job.status()
    assert bars and s["state"] == "error", s
    assert s["error"].startswith("the child process was killed (SIGKILL) from outside"), s
    assert bars[0] not in s["error"] and "%" not in s["error"]


def test_bench_prompts_beyond_the_held_out_rows_says_how_many_ran(qwen_tok, tmp_path):
    """`bench --prompts N` past the usable held-out rows: the run's note (its `notes`, printed as
    "note:" lines and in the JSON) gives the number that runs, the length of the list measured."""
    from vtcore import bench

    rows = [ROW] * 14 + [{"text": "no turns"}] * 1                     # held out: rows 4, 9 and 14 (a text row)
    data = write(tmp_path / "few.jsonl", b"".join((json.dumps(r) + "\n").encode() for r in rows))
    notes: list[str] = []
    prompts = bench.measured_prompts(data, qwen_tok, 100_000, notes)
    assert [p.row for p in prompts] == [4, 9]
    assert notes == [f"--prompts 100,000: {data} has 2 usable held-out prompt(s) (a user turn first, at most "
                     "1,024 tokens); ran 2"]
    assert len(bench.measured_prompts(data, qwen_tok, 2, notes)) == 2 and len(notes) == 1   # enough: no note
    assert len(bench.measured_prompts(SAMPLES / "code.jsonl", qwen_tok, 3, notes)) == 3 and len(notes) == 1


def test_bench_refuses_max_new_tokens_past_the_targets_context(capsys, eagle3_drafts, workspace):
    good, target, _ = eagle3_drafts                      # the target's config says 40,960 positions
    code, _, err = cli(capsys, "bench", "--target", target, "--draft", good, "--max-new-tokens", 100_000, "--no-save",
                       "--json")
    one_error(code, err, r"--max-new-tokens 100,000 is past the target's context of 40,960 tokens")
