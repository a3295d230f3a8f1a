"""Shared by the dashboard tests (test_app.py, test_e2e.py): small real datasets (the tiny
target/draft pair is drafthelpers.tiny_pair)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "samples" / "code.jsonl"


def code_rows(n: int) -> bytes:
    """The first n rows of the HumanEval sample, as JSONL bytes (a real small upload)."""
    lines = CODE.read_text(encoding="utf-8").splitlines()[:n]
    assert len(lines) == n
    return ("\n".join(lines) + "\n").encode()


def malformed_rows() -> bytes:
    """One good row, then a line cut in the middle (line 2)."""
    first = json.loads(CODE.read_text(encoding="utf-8").splitlines()[0])
    return (json.dumps(first) + "\n" + '{"messages": [{"role": "user", "content": "unterminated\n').encode()
