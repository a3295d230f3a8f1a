"""python -m vtcore count: the JSON contract, progress on stderr, exit 2 with a one-line reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLES
from vtcore.cli import main

KEYS = {"rows", "rows_skipped", "assistant_tokens", "unique_tokens", "vocab_size", "coverage_at", "k_for",
        "heldout_coverage_at", "seconds", "tokens_per_second", "counts_path", "cache_hit"}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_count_json_contract(capsys, tmp_path, workspace):
    out_file = tmp_path / "c.npz"
    code, out, err = run_cli(capsys, "count", "--data", str(SAMPLES / "code.jsonl"), "--out", str(out_file), "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["rows"] == 164 and result["vocab_size"] == 151669 and out_file.is_file()
    assert set(result["coverage_at"]) == {"1024", "2048", "4096", "8192", "16384", "32768"}
    assert set(result["k_for"]) == {"0.9", "0.95", "0.99"}
    assert all(0 < v <= 1 for v in result["heldout_coverage_at"].values())
    assert "counting" in err and "100.0%" in err   # the progress bar goes to stderr
    code, out, _ = run_cli(capsys, "count", "--data", str(SAMPLES / "code.jsonl"), "--json")
    assert json.loads(out.strip().splitlines()[-1])["cache_hit"] is True


def test_count_human_output(capsys, workspace):
    code, out, _ = run_cli(capsys, "count", "--data", f"code={SAMPLES / 'code.jsonl'}")
    assert code == 0 and "assistant tokens" in out and "k for coverage" in out


def bad(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


GOOD = json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}).encode()


@pytest.mark.parametrize("name, data, message", [
    ("malformed.jsonl", GOOD + b"\n{not json\n", r"malformed\.jsonl:2: malformed JSON"),
    ("empty.jsonl", b"", r"empty\.jsonl: file is empty"),
    ("noassistant.jsonl", json.dumps({"messages": [{"role": "user", "content": "u"}]}).encode(),
     r"noassistant\.jsonl:1: row has no assistant turn"),
    ("roles.jsonl", json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "bot", "content": "a"}]}).encode(),
     r"roles\.jsonl:1, field 'messages\[\]\.role': unknown role\(s\) \['bot'\]"),
    ("latin1.jsonl", GOOD + b"\n" + b'{"prompt": "\xff", "response": "r"}\n', r"latin1\.jsonl:2: not valid UTF-8"),
    ("schema.jsonl", json.dumps({"q": 1, "a": 2}).encode(), r"schema\.jsonl:1: cannot detect the schema: fields found \['a', 'q'\]"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, workspace, name, data, message):
    import re

    code, out, err = run_cli(capsys, "count", "--data", bad(tmp_path, name, data), "--json")
    assert code == 2 and out == ""
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and re.search(message, lines[0]), err


def test_missing_tokenizer_path(capsys, workspace):
    code, _, err = run_cli(capsys, "count", "--data", str(SAMPLES / "code.jsonl"), "--tokenizer", "./nope/tok", "--json")
    assert code == 2 and "tokenizer path ./nope/tok does not exist" in err


def test_skip_bad_reports_skipped_rows(capsys, tmp_path, workspace):
    path = bad(tmp_path, "mixed.jsonl", GOOD + b"\n{bad\n" + GOOD + b"\n")
    code, out, _ = run_cli(capsys, "count", "--data", path, "--skip-bad", "--json")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["rows"] == 2 and result["rows_skipped"] == 1


def test_module_entry_point_in_a_real_process(tmp_path):
    env = dict(os.environ, VTCORE_WORKSPACE=str(tmp_path / "ws"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "vtcore", "count", "--data", str(SAMPLES / "code.jsonl"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["rows"] == 164
    proc = subprocess.run([sys.executable, "-m", "vtcore", "count", "--data", str(tmp_path / "missing.jsonl"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "missing.jsonl: dataset not found" in proc.stderr


def test_coverage_command_reports_k_and_ood(capsys, tmp_path, workspace_shared_counts):
    counts = tmp_path / "both.npz"
    # repeatable flags take their values either way: --data A B, --k A --k B, --min-coverage A B
    assert main(["count", "--data", str(SAMPLES / "code.jsonl"), str(SAMPLES / "chat.jsonl.gz"),
                 "--out", str(counts), "--json"]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "coverage", "--counts", str(counts), "--min-coverage", "0.95", "0.9",
                           "--k", "4096", "--k", "1024", "--ood", "code:chat", "--json")
    r = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and r["domains"] == ["code", "chat"]
    assert list(r["coverage_at"]) == ["4096", "1024"] and list(r["k_for"]) == ["0.95", "0.9"]
    assert r["ood"]["coverage_at"]["4096"] < r["coverage_at"]["4096"]
    assert r["ood"]["k_for"]["0.95"] > r["k_for"]["0.95"]
    code, _, err = run_cli(capsys, "coverage", "--counts", str(counts), "--ood", "code:legal", "--json")
    assert code == 2 and "domain 'legal' not in this counts file" in err
