"""python -m vtcore <command> ...: the CLI over the same core the dashboard uses.

Contract (DESIGN.md §4): every subcommand takes --json and then prints exactly one JSON
object as the last line of stdout; progress goes to stderr. Exit 0 on success, 2 on bad
input with a one-line reason on stderr.

Each subcommand lives in vtcore/cmd/<name>.py with `register(subparsers)` that adds its
parser and sets `func` (args -> dict) and optionally `human` (dict -> str). Those modules
import heavy libraries inside `func`, so `--help` and light commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from typing import Any, Callable

from vtcore.errors import VTError

_bar_open = False   # a progress bar line is on stderr without its newline yet

COMMANDS = ["count", "coverage", "flops", "profile", "optimize", "export", "validate", "bench"]


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, paths and NaN made plain JSON."""
    import numpy as np
    from pathlib import Path

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(result: dict) -> str:
    return json.dumps(_jsonable(result), sort_keys=False)


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
        global _bar_open
        _bar_open = frac < 1.0

    return show


def default_human(result: dict) -> str:
    lines = []
    for k, v in result.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(_jsonable(v))
            if len(v) > 200:
                v = v[:197] + "..."
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vtcore",
                                     description="Vocab Trim Studio: trim a draft model's vocabulary for speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"vtcore.cmd.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"vtcore.cmd.{name}":
                continue  # not built yet
            raise
        p = mod.register(sub)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except VTError as e:
        # the reason on a line of its own, not glued to an unfinished progress bar
        print(("\n" if _bar_open else "") + f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if args.json:
        sys.stdout.write(dumps(result) + "\n")
    else:
        human = getattr(args, "human", None) or default_human
        sys.stdout.write(human(result) + "\n")
    sys.stdout.flush()
    return 0
