"""Files the tool reads from users and writes for them: JSON read with errors that name the
file, and every write atomic (temp file + one rename), so a crash never leaves half a file."""

from __future__ import annotations

import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from vtcore.errors import VTError


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed file; a missing file or bad JSON is a VTError naming the path (`what` says
    what the file should have been: "config file", "latency profile", ...)."""
    path = Path(path)
    if not path.is_file():
        raise VTError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VTError(f"{path}: not valid JSON ({e})") from e


def tmp_sibling(target: Path) -> Path:
    """A fresh hidden name beside target (same filesystem, so the final rename is atomic)."""
    return target.parent / f".tmp-{target.name}-{os.getpid()}-{secrets.token_hex(4)}"


@contextmanager
def atomic_file(target: str | os.PathLike, fsync: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `target` when the block ends without error; on an error
    the temp file is removed and `target` is untouched. fsync=True also flushes it to disk
    first (exports; not the dashboard state written on every widget change)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(target)
    # os.open with 0o666 lets the umask decide the mode, as a plain open() would (mkstemp forces 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def plain_json(obj: Any) -> Any:
    """numpy scalars and arrays, paths and NaN / inf (as null) made plain JSON values."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):   # a torch scalar
        return plain_json(obj.item())
    return obj
