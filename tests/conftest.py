"""Shared test set-up: offline hub, a throwaway workspace, the bundled tokenizer."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Anything that reaches for the model hub fails fast; nothing lands in the user's workspace.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
# The session's workspace: a folder of its own, removed when the run ends, so nothing one run made
# (counts, converted models, studies) is read by the next; VTCORE_TEST_WORKSPACE names a folder to
# use (and keep) instead. Under pytest-xdist each worker has a folder of its own inside it, and
# the workers share its counts cache and converted models (both written atomically and keyed by
# what made them), so the chat sample is counted and the GGUF target converted once per run.
SHARED_CACHES = ("counts", "models")


def _session_workspace() -> tuple[Path, Path, bool]:
    """(the run's folder, this process's folder in it, whether this process removes the first at
    the end). This module runs twice in a process (as pytest's conftest and as
    tests.conftest, which test modules import): the second run finds the first one's folder. An
    xdist worker finds the controller's (the environment it was started with names it)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    pid, _, made = os.environ.get("_VTCORE_TEST_SESSION_WS", "").partition(":")
    if os.environ.get("VTCORE_TEST_WORKSPACE"):
        root, own = Path(os.environ["VTCORE_TEST_WORKSPACE"]), False
    elif made and (pid == str(os.getpid()) or worker):
        root, own = Path(made), not worker
    else:
        root, own = Path(tempfile.mkdtemp(prefix="vtcore-tests-")), True
        os.environ["_VTCORE_TEST_SESSION_WS"] = f"{os.getpid()}:{root}"
    if not worker:
        return root, root, own
    ws = root / worker
    ws.mkdir(parents=True, exist_ok=True)
    for sub in SHARED_CACHES:
        (root / sub).mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(ws / sub):   # (a kept VTCORE_TEST_WORKSPACE may hold its own)
            (ws / sub).symlink_to(root / sub)
    return root, ws, own


_ROOT_WS, _WS, _OWN_WS = _session_workspace()
os.environ["VTCORE_WORKSPACE"] = str(_WS)

SAMPLES = ROOT / "samples"


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: slower tests on real models (up to a minute)")
    config.addinivalue_line("markers", "e2e: end-to-end tests in a real browser")


# The longest modules first (in this order): pytest.ini's --dist loadfile hands whole modules to
# the workers in collection order, and a long module started last leaves the other workers idle.
LONGEST_FIRST = ("test_readme.py", "test_e2e.py", "test_speculative.py", "test_e2e_userdata.py",
                 "test_acceptance.py", "test_ray.py", "test_engines.py", "test_bench.py", "test_app.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: the rest keep their order


def pytest_unconfigure(config):
    if _OWN_WS:
        shutil.rmtree(_ROOT_WS, ignore_errors=True)


@pytest.fixture(scope="session")
def session_workspace() -> Path:
    """The session's workspace (VTCORE_WORKSPACE unless a test sets another): its counts cache and
    converted models are shared by every test that only reads them. Sharing is safe because a
    cache key holds everything that made the entry (the counts' key: data, tokenizer, mode and a
    hash of the counting code; tests/test_counts.py checks it)."""
    return _WS


@pytest.fixture
def torch_threads():
    """torch's CPU thread count put back after the test (a CLI line's --threads sets it)."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one CPU thread for a module's tiny models (many small ops: threads only cost), and
    the thread count put back after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


def share_session_caches(ws: Path) -> Path:
    """Make `ws` a workspace whose counts cache and converted models are the session's (its state,
    studies, exports and results stay its own): for tests that only read counts and models."""
    ws.mkdir(parents=True, exist_ok=True)
    for sub in SHARED_CACHES:
        (_WS / sub).mkdir(parents=True, exist_ok=True)
        (ws / sub).symlink_to(_WS / sub)
    return ws


@pytest.fixture
def workspace_shared_counts(workspace):
    """A fresh workspace sharing the session's counts cache and models (share_session_caches)."""
    return share_session_caches(workspace)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray (2 CPUs, no dashboard) for the whole session's Ray tests, shut down at the end;
    skipped where ray[data] is not installed (bash scripts/setup.sh --dev installs it)."""
    ray = pytest.importorskip("ray", reason="ray[data] is not installed (bash scripts/setup.sh --dev installs it)")
    from vtcore.raycount import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()
