"""python -m vtcore <command> ...: the CLI over the same core the dashboard uses.

Contract (docs/design.md): every subcommand takes --json and then prints exactly one JSON
object as the last line of stdout; progress goes to stderr. Exit 0 on success, 2 on bad
input with a one-line reason on stderr.

Each subcommand lives in vtcore/cmd/<name>.py with `register(subparsers)` that adds its
parser and sets `func` (args -> dict, or a result with to_dict()) and optionally `human`
(result -> str). Those modules
import heavy libraries inside `func`, so `--help` and light commands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from vtcore.cmd.common import bar_open, check_flags, dumps, set_progress_file
from vtcore.errors import VTError
from vtcore.files import DISK_FULL, plain_json

COMMANDS = ["count", "coverage", "flops", "profile", "optimize", "export", "validate", "bench", "acceptance"]


def default_human(result: dict) -> str:
    lines = []
    for k, v in result.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(plain_json(v))
            if len(v) > 200:
                v = v[:197] + "..."
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vtcore",
                                     description="Vocab Trim Studio: trim a draft model's vocabulary for speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        p = importlib.import_module(f"vtcore.cmd.{name}").register(sub)
        p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
        p.add_argument("--progress-file", metavar="FILE", help=argparse.SUPPRESS)   # for vtcore.jobs.run_child
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):   # a file name that is not UTF-8 prints as its own bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    set_progress_file(args.progress_file)
    try:
        check_flags(args)
        result = args.func(args)
    except VTError as e:
        # the reason on a line of its own, not glued to an unfinished progress bar
        print(("\n" if bar_open() else "") + f"error: {e}".replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # Ctrl-C, or a command's own handler of SIGTERM/SIGINT (its reason)
        print(("\n" if bar_open() else "") + f"error: {str(e) or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except OSError as e:   # a write that no command-level check caught: a full disk is still one line
        if e.errno not in DISK_FULL:
            raise
        print(("\n" if bar_open() else "") + f"error: cannot write {e.filename or 'a file'}: the disk is full "
              f"({os.strerror(e.errno)}); free some space, or point --out / VTCORE_WORKSPACE elsewhere", file=sys.stderr)
        return 2
    if args.json:   # a typed result (vtcore.benchtypes) prints as its JSON
        sys.stdout.write(dumps(result.to_dict() if hasattr(result, "to_dict") else result) + "\n")
    else:
        human = getattr(args, "human", None) or default_human
        sys.stdout.write(human(result) + "\n")
    sys.stdout.flush()
    return 0
