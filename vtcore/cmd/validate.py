"""python -m vtcore validate FILE: check an exported token map the way the engines read it."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "validate", help="check a token map / vocab mapping / trimmed draft (exit 2 when it is wrong)",
        description="Reads FILE without running code (torch.load weights_only=True; pickles with code are "
                    "refused) and checks: integer ids, all < V, no duplicates, size as declared, EOS / "
                    "end-of-turn kept (warning), d2t + arange = the sorted kept ids, t2d marks exactly them, "
                    "the manifest's tokenizer is the given one. Exit 0 when valid, 2 otherwise (with --json the "
                    "report is still printed as the last stdout line).")
    p.add_argument("file", metavar="FILE", help=".pt token map or vocab mapping, token_ids JSON, summary JSON, a "
                                                "d2t-{N}.npy / t2d-{N}.npy pair (or its folder), or a draft directory "
                                                "(hf-draft, EAGLE-3 in SpecForge / SGLang or speculators layout)")
    p.add_argument("--vocab-size", type=int, metavar="V", help="the target model's vocabulary size")
    p.add_argument("--target", metavar="CONFIG|DIR|HUB_ID|PRESET",
                   help="the target model for V: its config.json, model directory, hub id or a preset")
    p.add_argument("--tokenizer", metavar="NAME|DIR", help="tokenizer whose EOS / end-of-turn must be kept and whose hash the manifest must carry")
    p.add_argument("--k", type=int, metavar="N", help="expected number of kept tokens (default: from the _k{N} in the file name)")
    p.set_defaults(func=run, human=human)
    return p


def _sidecar(path) -> dict | None:
    """summary_k{K}.json written next to FILE by the export: its manifest and always-keep ids."""
    import json
    from pathlib import Path

    from vtcore.validate import k_from_name

    k = k_from_name(str(path))
    side = Path(path).parent / f"summary_k{k}.json" if k is not None else None
    if side is None or not side.is_file() or side == Path(path):
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError):
        return None


def run(args) -> dict:
    import sys

    from vtcore.cmd.common import dumps
    from vtcore.errors import VTError
    from vtcore.target import from_target
    from vtcore.validate import Expect, check_manifest, validate_path

    V = args.vocab_size
    if args.target is not None:
        Vc = from_target(args.target).size
        if V is not None and V != Vc:
            raise VTError(f"--vocab-size {V} disagrees with {args.target} (vocab_size {Vc})")
        V = Vc
    expect = Expect(vocab_size=V, n=args.k)
    checked = []
    if args.tokenizer is not None:
        from vtcore.validate import tokenizer_expectations

        tok = tokenizer_expectations(args.tokenizer)
        expect.keep_ids, expect.tokenizer_sha256 = tok["keep_ids"], tok["tokenizer_sha256"]
        expect.tokenizer_name = tok["tokenizer_name"]
        checked.append("tokenizer")
    side = _sidecar(args.file)
    if expect.vocab_size is None and side and isinstance(side.get("vocab_size"), int):
        expect.vocab_size = side["vocab_size"]   # the V the export was made for
        checked.append("vocab_size from summary")
    if expect.keep_ids is None and side and side.get("always_keep") is not None:
        expect.keep_ids = {int(i): "always-keep token (EOS / end-of-turn) from the summary" for i in side["always_keep"]}
    report = validate_path(args.file, expect)
    if side is not None:
        report.problems += check_manifest(side.get("manifest"), expect)
        checked.append(f"summary {side.get('k')}")
    if expect.keep_ids is None and report.format in ("sglang", "eagle3", "speculators-vocab", "hf-draft", "eagle3-draft",
                                                     "speculators"):
        report.warnings.append("EOS / end-of-turn not checked: pass --tokenizer")
    result = report.as_dict()
    result["checked_with"] = checked
    if not report.ok:
        # the report is the useful part: print it, then fail with exit 2 like any bad input
        sys.stdout.write((dumps(result) if args.json else human(result)) + "\n")
        sys.stdout.flush()
        what = "" if report.format == "refused" else f"invalid {report.format}: "   # the problem says "refused: ..."
        raise VTError(f"{args.file}: {what}{report.problems[0]}"
                      + (f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""))
    return result


def human(r: dict) -> str:
    lines = [f"{r['path']}: {r['format']}, {'valid' if r['valid'] else 'INVALID'}, N = {r['n']}, V = {r['vocab_size']}"]
    lines += [f"  problem: {p}" for p in r["problems"]]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
