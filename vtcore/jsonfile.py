"""Reading a JSON file the user gave, with errors that name the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
