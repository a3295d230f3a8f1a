"""Where the tool keeps what it makes: counts cache, studies, exports, benchmark results.

Default: $VTCORE_WORKSPACE, else ~/.cache/vocab-trim-studio. Everything a user made lives
here, so a browser refresh or a restart loses nothing.
"""

from __future__ import annotations

import os
from pathlib import Path


def workspace_dir(path: str | os.PathLike | None = None) -> Path:
    """The workspace root (created if missing)."""
    if path is None:
        path = os.environ.get("VTCORE_WORKSPACE") or Path.home() / ".cache" / "vocab-trim-studio"
    root = Path(path).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str, path: str | os.PathLike | None = None) -> Path:
    """A named folder inside the workspace: counts, studies, exports, bench, models, ..."""
    d = workspace_dir(path) / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def repo_root() -> Path:
    """The checkout this package runs from (samples/ and weights/ live there)."""
    return Path(__file__).resolve().parent.parent
