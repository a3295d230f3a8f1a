"""Shared by the CLI tests: `python -m vtcore ...` as a user runs it, offline, with its own workspace.

In this process by default, through the CLI's own entry (vtcore.cli.main: the same parsing, the same
output and exit status) without a fresh interpreter importing torch for every command; `subprocess_=True`
runs a real `python -m vtcore` process where the process itself is under test (signals, Ray's runtime,
the module entry point: tests/test_cli_count.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_vtcore(*args: str, ws: Path, timeout: float = 300, subprocess_: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI offline (HF_HUB_OFFLINE=1) with its own workspace, from the repository root.
    In process, `timeout` is not enforced (pytest's own run is the bound)."""
    env = {"HF_HUB_OFFLINE": "1", "VTCORE_WORKSPACE": str(ws)}
    if subprocess_:
        return subprocess.run([sys.executable, "-m", "vtcore", *args], cwd=ROOT,
                              env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=timeout)
    import pytest
    import torch

    from vtcore.cli import main

    out, err, threads = io.StringIO(), io.StringIO(), torch.get_num_threads()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        for k, v in env.items():
            mp.setenv(k, v)
        try:
            rc = main(list(args))
        except SystemExit as e:   # argparse's usage errors
            rc = e.code if isinstance(e.code, int) else 2
        finally:
            torch.set_num_threads(threads)   # a --threads flag sets it for the process
    return subprocess.CompletedProcess(["python", "-m", "vtcore", *args], rc, out.getvalue(), err.getvalue())


def last_json(p: subprocess.CompletedProcess) -> Any:
    """The one JSON object a successful --json run prints as its last stdout line."""
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])
