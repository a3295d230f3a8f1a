"""Shared test set-up: offline hub, a throwaway workspace, the bundled tokenizer."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Anything that reaches for the model hub fails fast; nothing lands in the user's workspace.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
_WS = Path(os.environ.get("VTCORE_TEST_WORKSPACE", "/tmp/vtcore-test-workspace"))
os.environ["VTCORE_WORKSPACE"] = str(_WS)

SAMPLES = ROOT / "samples"


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: slower tests on real models (up to a minute)")
    config.addinivalue_line("markers", "e2e: end-to-end tests in a real browser")


@pytest.fixture(scope="session")
def qwen_tok():
    from vtcore.tokens import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def code_counts(tmp_path_factory) -> Path:
    """The code sample counted once (bundled tokenizer, template mode, no cache), saved to a file:
    modules load it with countsfile.load_counts and never share the object."""
    from vtcore.counts import count_dataset
    from vtcore.countsfile import save_counts

    ws = tmp_path_factory.mktemp("code-counts")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VTCORE_WORKSPACE", str(ws))
        cf, _ = count_dataset([str(SAMPLES / "code.jsonl")], cache=False, workspace=str(ws))
    path = ws / "code.npz"
    save_counts(path, cf)
    return path


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace for tests that look at caching or on-disk results."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("VTCORE_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard) for the whole session's Ray tests, shut down at the end;
    skipped where ray[data] is not installed (bash scripts/setup.sh --dev installs it)."""
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (bash scripts/setup.sh --dev installs it)")
    from vtcore.raycount import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()
