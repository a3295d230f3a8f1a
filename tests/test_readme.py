"""Every `python -m vtcore ...` line of the README runs exactly as written, in order, in a fresh
directory and workspace (offline), exits 0 and prints the JSON it promises. Each line runs in this
process through the CLI's own entry (vtcore.cli.main), split as bash splits it (the validate line's
glob expanded too): the same parsing and the same JSON as `python -m vtcore`, without a fresh
interpreter importing torch for every line (tests/test_cli_count.py runs the module entry point in
a real process)."""

from __future__ import annotations

import glob
import json
import re
import shlex

import pytest

from tests.clihelpers import ROOT
from tests.conftest import share_session_caches

pytestmark = pytest.mark.integration


def readme_cli_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [ln.strip() for b in blocks for ln in b.splitlines() if ln.strip().startswith("python -m vtcore ")]


# what each command's JSON must hold (a check of substance, not only of exit 0)
EXPECT = {
    "count": lambda r: r["rows"] == 4018 and r["assistant_tokens"] > 1_000_000,
    "coverage": lambda r: set(r["k_for"]) == {"0.95", "0.99"} and r["heldout_k_for"]["0.99"] > r["heldout_k_for"]["0.95"],
    "flops": lambda r: set(r["latency_reduction"]) == {"32000", "13264"}
    and round(r["latency_reduction"]["32000"], 3) == 0.481 and round(r["lm_head_share"], 4) == 0.6415,
    "profile": lambda r: r["ks"][-1] == 49152 and len(r["step_ms"]) == len(r["ks"]),
    "optimize": lambda r: r["best_k"] is not None and r["regret"] is not None and r["regret"] >= -1e-12,
    "export": lambda r: r["validated"] and r["vocab_size"] == 151936 and "eagle3" in r["files"],
    "validate": lambda r: r["valid"] and r["format"] == "eagle3" and r["vocab_size"] == 151936,
    "bench": lambda r: r["identical_outputs"] is True and r["trimmed"]["tokens_per_s"] > 0,
}
LINES = readme_cli_lines()


def argv_of(line: str) -> list[str]:
    """The arguments bash hands `python -m vtcore` for this line: split as bash splits it, a glob
    expanded in the current directory (sorted, as bash does; left as is when nothing matches)."""
    words = shlex.split(line)[3:]
    return [x for w in words for x in (sorted(glob.glob(w)) or [w] if any(c in w for c in "*?[") else [w])]


def test_the_readme_lists_every_command():
    assert {ln.split()[3] for ln in LINES} == set(EXPECT)
    assert argv_of("python -m vtcore validate 'a b' --k 1") == ["validate", "a b", "--k", "1"]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory):
    """The directory the lines run in (samples/ beside them) and their workspace, whose converted
    models and counts cache are the session's (both keyed by what made them)."""
    root = tmp_path_factory.mktemp("readme")
    work = root / "work"
    work.mkdir()
    (work / "samples").symlink_to(ROOT / "samples")
    return work, share_session_caches(root / "ws")


@pytest.mark.parametrize("line", LINES, ids=[f"{i}-{ln.split()[3]}" for i, ln in enumerate(LINES)])
def test_readme_cli_line_runs_as_written(line, readme_dir, monkeypatch, capsys, torch_threads):
    from vtcore.cli import main

    work, ws = readme_dir
    monkeypatch.chdir(work)
    monkeypatch.setenv("VTCORE_WORKSPACE", str(ws))
    code = main(argv_of(line))
    out, err = capsys.readouterr()
    assert code == 0, f"{line}\n{err[-2000:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert EXPECT[line.split()[3]](result), f"{line}\n{json.dumps(result)[:2000]}"
