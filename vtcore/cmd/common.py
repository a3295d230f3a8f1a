"""What the subcommands share: flag helpers, the stderr progress bar, the JSON line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from vtcore.coverage import CURVES
from vtcore.errors import VTError
from vtcore.files import VOCAB_LIMIT, plain_json

_bar = [False]   # a progress bar line is on stderr without its newline yet
_progress_file: list[str | None] = [None]   # --progress-file: progress as JSON lines for a parent process


# Numeric flags and their stated limits, checked before a command allocates anything: far
# beyond real use, small enough that no value can ask for terabytes. (command or "*", flag)
FLAG_LIMITS: dict[tuple[str, str], tuple[int, int, str]] = {
    ("*", "vocab_size"): (1, VOCAB_LIMIT, "token ids"),
    ("*", "context"): (0, 1 << 20, "tokens"),
    ("profile", "context"): (0, 1 << 17, "tokens: the profile allocates a KV cache that long"),
    ("*", "gamma_min"): (1, 64, "draft tokens per step"),
    ("*", "gamma_max"): (1, 64, "draft tokens per step"),
    ("*", "gamma"): (1, 64, "draft tokens per step"),
    ("*", "trials"): (1, 1_000_000, "trials"),
    ("*", "repeats"): (1, 10_000, "repeats"),
    ("*", "max_new_tokens"): (1, 1 << 20, "tokens"),
}


def check_flags(args: argparse.Namespace) -> None:
    """Every numeric flag within its stated limit (FLAG_LIMITS); --threads within this machine's cores."""
    import os

    for name, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        flag = "--" + name.replace("_", "-")
        if name == "threads":
            cores = os.cpu_count() or 1
            if not 1 <= value <= cores:
                raise VTError(f"{flag} must be within 1..{cores} (this machine's cores), got {value}")
            continue
        limit = FLAG_LIMITS.get((args.command, name)) or FLAG_LIMITS.get(("*", name))
        if limit and not limit[0] <= value <= limit[1]:
            raise VTError(f"{flag} must be within {limit[0]:,}..{limit[1]:,} ({limit[2]}), got {value:,}")


def dumps(result: dict) -> str:
    return json.dumps(plain_json(result), sort_keys=False)


def repeatable(p: argparse.ArgumentParser, *flags: str, **kw: Any) -> None:
    """A flag that takes several values either way: `--k A --k B` and `--k A B`."""
    p.add_argument(*flags, action="extend", nargs="+", **kw)


def curve_arg(text: str) -> str:
    """--coverage names the coverage curve; a number there means the user wanted --min-coverage."""
    if text in CURVES:
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r}: --coverage names the coverage curve ({' or '.join(CURVES)}); "
        "for a coverage constraint use --min-coverage")


def progress_printer(label: str, stream=None) -> Callable[[float, str], None]:
    """A progress callback (fraction in [0, 1], short text) drawing a bar on stderr."""
    stream = stream or sys.stderr
    state = {"last": 0.0}

    def show(frac: float, text: str = "") -> None:
        now = time.monotonic()
        if frac < 1.0 and now - state["last"] < 0.2:
            return
        state["last"] = now
        frac = min(max(frac, 0.0), 1.0)
        bar = "#" * int(frac * 30)
        end = "\n" if frac >= 1.0 else ""
        stream.write(f"\r{label} [{bar:<30}] {frac * 100:5.1f}% {text}"[:160] + end)
        stream.flush()
        if _progress_file[0]:
            with open(_progress_file[0], "a", encoding="utf-8") as f:
                f.write(json.dumps({"fraction": frac, "text": str(text)}) + "\n")
        _bar[0] = frac < 1.0

    return show


def set_progress_file(path: str | None) -> None:
    """Progress also goes to this file, one JSON object a line (vtcore.jobs.run_child reads it)."""
    _progress_file[0] = path


def bar_open() -> bool:
    """A progress bar is on stderr without its closing newline (an error must start a new line)."""
    return _bar[0]
