"""Shared by the CLI tests: `python -m vtcore ...` in a fresh process, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_vtcore(*args: str, ws: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI offline (HF_HUB_OFFLINE=1) with its own workspace, from the repository root."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VTCORE_WORKSPACE": str(ws), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vtcore", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def last_json(p: subprocess.CompletedProcess) -> Any:
    """The one JSON object a successful --json run prints as its last stdout line."""
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])
