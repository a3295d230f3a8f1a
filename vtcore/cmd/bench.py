"""python -m vtcore bench: real speculative decoding, target alone vs full draft vs trimmed draft."""

from __future__ import annotations

import argparse

from vtcore.benchtypes import BenchResult, BenchStopped


def register(subparsers) -> argparse.ArgumentParser:
    from vtcore.benchtypes import add_bench_args

    p = subparsers.add_parser(
        "bench", help="benchmark speculative decoding with a full and a trimmed draft",
        description="Speculative decoding, target alone vs target + full draft vs target + trimmed draft, on "
                    "held-out prompts of a dataset, every figure with an interval. With no arguments: the embedded "
                    "SmolLM2-135M-Instruct and its EAGLE-3 head on samples/code.jsonl, k and gamma from the search's "
                    "speed-up model after a calibration (about two minutes on a 2-core CPU). Results are appended "
                    "to <workspace>/bench/results.jsonl.")
    add_bench_args(p)
    p.set_defaults(func=run, human=human)
    return p


def run_tree(args, cfg) -> dict:
    import sys

    from vtcore.cmd.common import progress_printer
    from vtcore.tree import TreeShape
    from vtcore.treebench import DEFAULT_TREES, append_tree_result, run_tree_bench

    shapes = [TreeShape(*t) for x in cfg.tree for t in (DEFAULT_TREES if x == "grid" else [x])]
    r = run_tree_bench(cfg, list(dict.fromkeys(shapes)), [cfg.gamma] if cfg.gamma else None,
                       progress=progress_printer("bench"), log=lambda m: print(m, file=sys.stderr, flush=True))
    if cfg.save:
        r["results_file"] = str(append_tree_result(cfg, r))
    return r


def run(args) -> BenchResult | BenchStopped | dict:
    import sys

    from vtcore.bench import run_bench
    from vtcore.benchtypes import config_from_args
    from vtcore.cmd.common import progress_printer

    cfg = config_from_args(args)
    if cfg.tree:
        return run_tree(args, cfg)
    return run_bench(cfg, progress=progress_printer("bench"), log=lambda m: print(m, file=sys.stderr, flush=True))


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def ratio(r: BenchResult, name: str) -> str:
    """'1.16x [1.08, 1.25] faster' from the result's point value, interval and verdict."""
    x, ci, verdict = r.speedup(name)
    if x is None:
        return "-"
    return f"{x:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] {verdict}"


def human_tree(r: dict) -> str:
    lines = [f"device {r['device']}  target {r['target']}  draft {r['draft']} ({r['draft_kind']})  k {r['k']:,}/"
             f"{r['vocab_size']:,}  {r['prompts']} prompts x {r['repeats']} repeats x {r['max_new_tokens']} new tokens",
             f"{'method':22} {'tok/s':>7} {'vs target [interval]':>28} {'acc len':>7} {'head rows':>9} "
             f"{'head share':>10} {'predicted':>9}"]
    for name, m in r["methods"].items():
        if name == "target_only":
            lines.append(f"{name:22} {m['tokens_per_s']:7.2f}")
            continue
        lo, hi = m["speedup_vs_target_ci"]
        lines.append(f"{name:22} {m['tokens_per_s']:7.2f} {m['speedup_vs_target']:6.2f}x [{lo:.2f}, {hi:.2f}] "
                     f"{m['verdict_vs_target']:>7} {m['acceptance_length']:7.2f} {m['head_rows_per_round']:9.2f} "
                     f"{_f(m['head_share']):>10} {m['predicted_decode_speedup']:8.2f}x")
    lines.append(f"identical outputs: {r['identical_outputs']}")
    sc = r.get("search") or {}
    if sc.get("choice"):
        lines.append(f"engine model's pick (trimmed, acceptance modelled from a replay): {sc['choice']} measured "
                     f"{sc['choice_measured']:.2f}x, {sc['choice_vs_best']:.0%} of the grid's best "
                     f"({sc['measured_best']}, {sc['measured_best_speedup']:.2f}x)")
    lines += [f"note: {n}" for n in r.get("notes", [])]
    if r.get("results_file"):
        lines.append(f"appended to {r['results_file']}")
    return "\n".join(lines)


def human(r: BenchResult | BenchStopped | dict) -> str:
    if isinstance(r, BenchStopped):
        return "bench stopped"
    if isinstance(r, dict):   # a tree run (vtcore.treebench)
        return human_tree(r)
    lines = [f"device {r.device}  target {r.target}  draft {r.draft} ({r.draft_kind})  "
             f"k {r.k:,}/{r.vocab_size:,} (covers {r.coverage_k:.3f} of held-out tokens)  "
             f"gamma {r.gamma} ({r.gamma_from})  {r.mode}",
             f"{r.prompts} prompts x {r.repeats} repeats x {r.max_new_tokens} new tokens; intervals: "
             f"{r.ci_method}",
             f"{'':12} {'tok/s':>8} {'interval':>15} {'acc/step':>9} {'draft ms/step':>14} {'head share':>11} "
             f"{'target ms/step':>15}"]
    for m, x in r.methods().items():
        lo, hi = x.tokens_per_s_ci
        lines.append(f"{m:12} {_f(x.tokens_per_s, '{:.1f}'):>8} {f'[{lo:.1f}, {hi:.1f}]':>15} "
                     f"{_f(x.accepted_per_step):>9} {_f(x.draft_ms_per_step):>14} "
                     f"{_f(x.lm_head_share):>11} {_f(x.target_ms_per_step):>15}")
    if r.trimmed and r.trimmed.accepted_per_step_replayed is not None:
        lines.append("accepted per step, replayed (vtcore.acceptance) vs measured: " + "; ".join(
            f"{m} {_f(x.accepted_per_step_replayed, '{:.3f}')} vs {_f(x.accepted_per_step, '{:.3f}')}"
            for m, x in (("full", r.full), ("trimmed", r.trimmed)) if x) + f" (ranking {r.ranking}"
            + ("; sample mode: the expected replay" if r.mode != "greedy" else "") + ")")
    if r.full:
        lines.append(f"full draft acceptance by position: {', '.join(_f(p) for p in r.full.accepted_by_position)}")
    lines.append(f"trimmed vs full: {ratio(r, 'trimmed_vs_full')}; trimmed vs target alone: "
                 f"{ratio(r, 'trimmed_vs_target')} (predicted {_f(r.predicted_speedup)}x); "
                 f"identical outputs: {r.identical_outputs}")
    lines += [f"note: {n}" for n in r.notes]
    if r.results_file:
        lines.append(f"appended to {r.results_file}")
    return "\n".join(lines)
