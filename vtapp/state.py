"""The dashboard's state in the workspace, persisted as JSON: which counts file, draft, study and
point the user is working on, and the last slider values. A browser refresh or a server
restart reads it back, so nothing the user chose is lost.

Also where uploads are kept: <workspace>/uploads/<sha12>-<name>, so an uploaded dataset or
config survives a refresh and the same bytes uploaded twice are stored once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vtcore.errors import VTError
from vtcore.files import atomic_file
from vtcore.workspace import subdir, workspace_dir

STATE_FILE = "state.json"
FORMAT = "vtcore-state/1"


@dataclass
class AppState:
    counts_path: str | None = None      # the counts .npz the pages show
    datasets: list[str] = field(default_factory=list)   # what it was counted from (paths)
    data_source: str | None = None      # the Data page's source: "Bundled sample" | "Upload"
    uploads: list[str] = field(default_factory=list)    # the uploaded files chosen on the Data page
    tokenizer: str | None = None        # None: the bundled Qwen3
    mask: str = "template"
    skip_bad: bool = False
    draft: str | None = None            # preset name or a config.json path
    target: str | None = None           # the target model for V (Export): config.json, directory, hub id, preset
    latency: str = "flops"              # flops | paper-flops | a latency profile path
    curve: str = "heldout"              # the coverage curve: heldout | insample
    min_coverage: float = 0.95          # the coverage constraint (Coverage and Frontier pages)
    alpha: float = 0.5
    objective: str = "utility"
    k_min: int = 1
    k_max: int | None = None            # None: the draft's vocabulary
    k_scale: str = "log"
    trials: int = 60
    seed: int = 42
    study: str | None = None            # the study the Frontier page shows
    selected: dict | None = None        # vtcore.selection.Selection.as_dict() of the chosen point
    bench: dict = field(default_factory=dict)   # the Benchmark page's last settings
    acceptance_model: str = "replay"    # the Frontier's speed-up: replay (when measured) | a0*C(k)
    ranking: str = "frequency"          # the ranking a trimmed head keeps: frequency | acceptance
    updated: str = ""
    format: str = FORMAT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_path(workspace: str | os.PathLike | None = None) -> Path:
    return workspace_dir(workspace) / STATE_FILE


def _from_dict(d: dict) -> AppState:
    known = {f.name: f for f in fields(AppState)}
    kept = {k: v for k, v in d.items() if k in known}   # fields of a newer version are ignored
    st = AppState(**kept)
    st.format = FORMAT
    return st


def load_state(workspace: str | os.PathLike | None = None) -> AppState:
    """The saved state, or a fresh one. An unreadable file is moved aside (never deleted) and
    a fresh state returned, so a bad file can never lock the user out of the dashboard."""
    path = state_path(workspace)
    if not path.is_file():
        return AppState()
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        return _from_dict(d)
    except (ValueError, TypeError, UnicodeDecodeError):
        aside = path.with_name(f"{STATE_FILE}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
        except OSError:
            pass
        return AppState()


def save_state(state: AppState, workspace: str | os.PathLike | None = None) -> Path:
    """Write atomically (temp file + rename): a crash mid-write keeps the previous state."""
    path = state_path(workspace)
    state.updated = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    data = json.dumps(state.as_dict(), indent=1, sort_keys=True)
    with atomic_file(path, force=True, flag="dashboard state") as f:
        f.write((data + "\n").encode())
    return path


def update_state(workspace: str | os.PathLike | None = None, **changes: Any) -> AppState:
    """Load, change the named fields, save; returns the new state."""
    known = {f.name for f in fields(AppState)}
    bad = sorted(set(changes) - known)
    if bad:
        raise VTError(f"unknown state field(s): {', '.join(bad)}")
    st = load_state(workspace)
    for k, v in changes.items():
        setattr(st, k, v)
    save_state(st, workspace)
    return st


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder: the base name, odd characters replaced."""
    base = Path(str(name).replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).lstrip(".") or "upload"
    return base[:120]


def save_upload(name: str, data: bytes, workspace: str | os.PathLike | None = None,
                folder: str = "uploads") -> Path:
    """Keep uploaded bytes in the workspace under <sha12>-<name>; the same bytes under the
    same name are stored once. The original extension is kept (the readers go by it)."""
    if not data:
        raise VTError(f"{name}: the uploaded file is empty")
    digest = hashlib.sha256(data).hexdigest()[:12]
    target = subdir(folder, workspace) / f"{digest}-{safe_name(name)}"
    if target.is_file() and target.stat().st_size == len(data):
        return target
    with atomic_file(target, force=True, flag="upload") as f:   # same hash and name: the same bytes
        f.write(data)
    return target


def list_uploads(workspace: str | os.PathLike | None = None, folder: str = "uploads") -> list[Path]:
    """Uploaded files, newest first."""
    d = subdir(folder, workspace)
    files = [p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


_HASHED = re.compile(r"^[0-9a-f]{12}-")


def upload_label(path: str | os.PathLike) -> str:
    """The name the user uploaded (without the hash prefix)."""
    name = Path(path).name
    return name[13:] if _HASHED.match(name) else name


def upload_domain(path: str | os.PathLike) -> str | None:
    """The domain an uploaded file names (its uploaded name without extensions: "pydocs" for
    <sha12>-pydocs.jsonl.gz), or None for a file that is not an upload (it names its own)."""
    name = Path(path).name
    return upload_label(name).split(".")[0] or None if _HASHED.match(name) else None
