"""Where the tool keeps what it makes: counts cache, studies, exports, benchmark results.

Default: $VTCORE_WORKSPACE, else ~/.cache/vocab-trim-studio. Everything a user made lives
here, so a browser refresh or a restart loses nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from vtcore.errors import VTError


FIX = "set VTCORE_WORKSPACE (or --workspace) to a folder you can write, or fix this one"


def workspace_dir(path: str | os.PathLike | None = None) -> Path:
    """The workspace root (created if missing). One that cannot be used is a VTError naming
    the path, the reason and the fix: the CLI prints it and exits 2, every page shows it."""
    if path is None:
        path = os.environ.get("VTCORE_WORKSPACE") or Path.home() / ".cache" / "vocab-trim-studio"
    root = Path(path).expanduser()
    _usable_folder(root, "workspace")
    return root


def subdir(name: str, path: str | os.PathLike | None = None) -> Path:
    """A named folder inside the workspace: counts, studies, exports, bench, models, ..."""
    d = workspace_dir(path) / name
    _usable_folder(d, "workspace folder")
    return d


def _usable_folder(d: Path, what: str) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise VTError(f"{what} {d} cannot be used: it exists and is not a folder; {FIX}") from None
    except OSError as e:
        raise VTError(f"{what} {d} cannot be used: cannot create it ({e.strerror or type(e).__name__}); "
                      f"{FIX}") from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise VTError(f"{what} {d} cannot be used: it is not writable; {FIX}")


def repo_root() -> Path:
    """The checkout this package runs from (samples/ and weights/ live there)."""
    return Path(__file__).resolve().parent.parent
