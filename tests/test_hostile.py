"""Issue #13: the tool used by a hostile or careless user. One test (or a few) per numbered case
of the issue, each asserting what a user sees: a one-line error with exit 2, or a correct result;
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


# ------------------------------------------------------------------ 1. nothing a user made is destroyed

def test_1_count_out_refuses_an_existing_file_and_never_replaces_its_input(capsys, tmp_path, workspace):
    data = write(tmp_path / "mydata.jsonl", GOOD * 3)
    before = data.read_bytes()
    # the case: --out names the dataset itself; refused even with --force
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


def test_1_export_and_profile_share_the_writer(tmp_path):
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
    link = tmp_path / "link.bin"
    link.hardlink_to(target)
    with pytest.raises(VTError, match="is an input of this command"):
        check_target(link, force=True, inputs=[target])
