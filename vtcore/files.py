"""Files the tool reads from users and writes for them: JSON read with errors that name the
file, and every write atomic (temp file + one rename), so a crash never leaves half a file."""

from __future__ import annotations

import json
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
