"""python -m vtcore count: assistant-only token counts of a dataset, with coverage figures."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import repeatable


def register(sub) -> argparse.ArgumentParser:
    from vtcore.data import SCHEMAS

    p = sub.add_parser("count", help="count assistant-only tokens of a dataset",
                       description="Count the tokens a draft must predict (assistant turns + end-of-turn) "
                                   "over one or more datasets, cache the counts, print coverage figures.")
    repeatable(p, "--data", required=True, metavar="[DOMAIN=]PATH",
                   help="dataset file (.jsonl/.json/.parquet/.csv, .gz ok), saved-dataset folder, or "
                        "hf:ORG/NAME[:CONFIG][:SPLIT] (a hub dataset, streamed; online only) or hf:FOLDER "
                        "(a local folder of data files); repeat for several; DOMAIN= names its domain when "
                        "rows have no 'domain' field")
    p.add_argument("--tokenizer", default=None, metavar="NAME|DIR",
                   help="hub id or local directory (default: the bundled Qwen3 tokenizer)")
    p.add_argument("--schema", default="auto", choices=SCHEMAS)
    p.add_argument("--mask", default="template", choices=["template", "content"],
                   help="template: exactly as the chat template renders the assistant turns (default); "
                        "content: assistant contents encoded alone + one end-of-turn (faster)")
    p.add_argument("--out", default=None, metavar="FILE.npz", help="also write the counts file here (an existing "
                                                                    "file only with --force; never a --data file)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows (and count them) instead of failing")
    p.add_argument("--max-row-mb", type=float, default=64.0, metavar="MB",
                   help="a row (JSONL line, JSON value, CSV line) larger than this is a bad row (default 64): "
                        "memory stays bounded whatever a file holds")
    p.add_argument("--no-cache", action="store_true", help="count again even when a cached result matches")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process (default); ray: Ray Data, on a local Ray or the cluster at "
                        "--ray-address (needs ray[data], docs/scale.md); the counts are identical")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: join the running cluster at ADDR ('auto', HOST:PORT); "
                        "without it a local Ray starts on this machine")
    p.add_argument("--workspace", default=None, help="workspace folder (default $VTCORE_WORKSPACE or "
                                                     "~/.cache/vocab-trim-studio)")
    g = p.add_argument_group("counting the target's own responses (--generate)")
    g.add_argument("--generate", action="store_true",
                   help="count the TARGET's greedy responses to the dataset's prompts (each row's conversation up "
                        "to its last assistant turn) instead of the dataset's assistant turns, with the target's "
                        "tokenizer; also reports held-out C(k) of that ranking beside the dataset's")
    g.add_argument("--target", default=None, metavar="NAME|DIR",
                   help="with --generate: local model directory or hub id in the local cache (default: the "
                        "embedded SmolLM2-135M-Instruct)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="with --generate: tokens per response at most "
                                                                  "(default 128)")
    g.add_argument("--generate-rows", type=int, default=100, metavar="R",
                   help="with --generate: prompts from the first R rows of each dataset (default 100)")
    g.add_argument("--device", default="auto", help="with --generate: auto | cpu | cuda")
    p.set_defaults(func=run, human=human)
    return p


def run(args) -> dict:
    from vtcore.cmd.common import progress_printer
    from vtcore.counts import count_dataset
    from vtcore.errors import VTError
    from vtcore.raycount import RayConfig

    if args.ray_address and args.engine != "ray":
        raise VTError("--ray-address needs --engine ray")
    if not args.max_row_mb > 0:
        raise VTError(f"--max-row-mb must be > 0, got {args.max_row_mb}")
    if args.generate:
        return run_generate(args)
    if args.target:
        raise VTError("--target needs --generate (the target's responses are counted only then)")
    _, info = count_dataset(args.data, tokenizer=args.tokenizer, mask=args.mask, schema=args.schema,
                            skip_bad=args.skip_bad, progress=progress_printer("counting"),
                            cache=not args.no_cache, workspace=args.workspace, out=args.out, force=args.force,
                            max_row_bytes=int(args.max_row_mb * (1 << 20)), engine=args.engine,
                            ray=RayConfig(address=args.ray_address))
    return info


def run_generate(args) -> dict:
    from vtcore.cmd.common import progress_printer
    from vtcore.errors import VTError
    from vtcore.gencount import count_and_compare

    if args.tokenizer:
        raise VTError("--tokenizer does not apply with --generate: the target's own tokenizer counts its responses")
    if args.engine != "local":
        raise VTError("--generate counts on this machine only (--engine local)")
    if args.generate_rows < 1:
        raise VTError(f"--generate-rows must be >= 1, got {args.generate_rows}")
    _, info = count_and_compare(args.data, args.target, mask=args.mask, max_new_tokens=args.max_new_tokens,
                                rows=args.generate_rows, schema=args.schema, skip_bad=args.skip_bad,
                                device=args.device, progress=progress_printer("generating"),
                                cache=not args.no_cache, workspace=args.workspace, out=args.out, force=args.force,
                                max_row_bytes=int(args.max_row_mb * (1 << 20)))
    return info


def human(r: dict) -> str:
    lines = [f"rows {r['rows']:,} (skipped {r['rows_skipped']:,}), assistant tokens {r['assistant_tokens']:,}, "
             f"unique {r['unique_tokens']:,} of V = {r['vocab_size']:,}",
             "counts: {} ({})".format(r["counts_path"], "cache hit" if r["cache_hit"] else
                                      f"{r['seconds']:.2f} s, {r['tokens_per_second']:,.0f} tokens/s")]
    lines.append("k       coverage  held-out")
    for k, c in r["coverage_at"].items():
        h = r["heldout_coverage_at"][k] if r["heldout_coverage_at"] else float("nan")
        lines.append(f"{int(k):<7} {c:8.4f}  {h:8.4f}")
    lines.append("k for coverage: " + ", ".join(f"{t}: {k:,}" for t, k in r["k_for"].items()))
    if r.get("generate"):
        g = r["generate"]
        lines.append(f"counted the responses of {g['target']} to {g['prompts']} prompts ({g['heldout_prompts']} "
                     f"held out), at most {g['max_new_tokens']} tokens, {g['ended']} ended with an end of turn")
    for where, label in (("on_dataset_heldout", "the dataset's held-out answers"),
                         ("on_generated_heldout", "the target's held-out responses")):
        c = (r.get("compare") or {}).get(where)
        if c:
            lines.append(f"held-out C(k) on {label}: k  ranked on the target's responses / on the dataset")
            lines += [f"  {int(k):<7} {c['generated_ranking'][k]:.4f} / {c['dataset_ranking'][k]:.4f}"
                      for k in c["generated_ranking"]]
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
