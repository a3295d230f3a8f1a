"""Every `python -m vtcore ...` line of the README runs exactly as written, in order, in a fresh
directory and workspace (offline), exits 0 and prints the JSON it promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clihelpers import ROOT

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


def test_the_readme_lists_every_command():
    lines = readme_cli_lines()
    assert {ln.split()[3] for ln in lines} == set(EXPECT)


def test_every_readme_cli_line_runs_as_written(tmp_path):
    work, ws = tmp_path / "work", tmp_path / "ws"
    work.mkdir()
    (work / "samples").symlink_to(ROOT / "samples")
    # the converted SmolLM2 target is a cache of a pip package: share the test session's copy
    models = Path(os.environ["VTCORE_WORKSPACE"]) / "models"
    models.mkdir(parents=True, exist_ok=True)
    ws.mkdir()
    (ws / "models").symlink_to(models)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VTCORE_WORKSPACE": str(ws), "PYTHONPATH": str(ROOT)}
    python = Path(sys.executable)
    env["PATH"] = f"{python.parent}:{env['PATH']}"   # `python` is this interpreter
    for line in readme_cli_lines():
        # bash, as a user would type it (the validate line uses a glob); `python` is this venv's
        p = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{line}\n{p.stderr[-2000:]}"
        result = json.loads(p.stdout.strip().splitlines()[-1])
        assert EXPECT[line.split()[3]](result), f"{line}\n{json.dumps(result)[:2000]}"
