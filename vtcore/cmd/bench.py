"""python -m vtcore bench: real speculative decoding, target alone vs full draft vs trimmed draft."""

from __future__ import annotations

import argparse

DEFAULTS = {"prompts": 6, "max_new_tokens": 32, "repeats": 2, "min_coverage": 0.95}   # = BenchConfig's


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench", help="benchmark speculative decoding with a full and a trimmed draft",
        description="Speculative decoding, target alone vs target + full draft vs target + trimmed draft, on "
                    "held-out prompts of a dataset, every figure with an interval. With no arguments: the embedded "
                    "SmolLM2-135M-Instruct and its EAGLE-3 head on samples/code.jsonl, k and gamma from the search's "
                    "speed-up model after a calibration (about two minutes on a 2-core CPU). Results are appended "
                    "to <workspace>/bench/results.jsonl.")
    p.add_argument("--target", help="target model: local directory or hub id (default: embedded SmolLM2)")
    p.add_argument("--draft", help="draft: an EAGLE-3 checkpoint (SpecForge/SGLang or speculators layout), a "
                                   "standalone draft LM or hf-draft export directory, or hub id; 'standalone' is the "
                                   "embedded 2-layer SmolLM2 draft (default: the embedded EAGLE-3 head)")
    p.add_argument("--token-map", help="kept ids: SGLang .pt tensor, EAGLE-3 {d2t,t2d} .pt, or JSON "
                                       "(default: the data's top-k, k from --k-from)")
    p.add_argument("--data", help="dataset whose held-out rows give the prompts (default: samples/code.jsonl)")
    p.add_argument("--ood-data", help="also measure on held-out prompts of this out-of-domain dataset")
    p.add_argument("--prompts", type=int, default=DEFAULTS["prompts"],
                   help=f"number of held-out prompts (default {DEFAULTS['prompts']})")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULTS["max_new_tokens"],
                   help=f"default {DEFAULTS['max_new_tokens']}")
    p.add_argument("--gamma", type=int, default=None,
                   help="draft tokens per target step (default: the search's optimum for the measured costs)")
    p.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="sample mode only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA if present)")
    p.add_argument("--k", type=int, help="default token map: keep exactly k ids")
    p.add_argument("--k-from", choices=["search", "coverage"], default="search",
                   help="default token map: the k vtcore.search's speed-up model picks after a short calibration "
                        "of the full draft on held-out prompts it does not measure (default), or the smallest k "
                        "whose held-out coverage meets --min-coverage")
    p.add_argument("--min-coverage", type=float, default=DEFAULTS["min_coverage"],
                   help=f"the coverage constraint, held-out C(k) >= this (default {DEFAULTS['min_coverage']})")
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"],
                   help=f"runs per prompt and method (default {DEFAULTS['repeats']})")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workspace", help="workspace directory (default $VTCORE_WORKSPACE or ~/.cache/vocab-trim-studio)")
    p.add_argument("--no-save", action="store_true", help="do not append to the results store")
    p.add_argument("--acceptance-model", choices=["replay", "a0"], default="replay",
                   help="what the search scores acceptance with: the replayed A(k, gamma) of the full draft over the "
                        "target's continuation of held-out prompts not benchmarked (default; greedy only), or "
                        "a0 * C(k) under --min-coverage")
    p.add_argument("--ranking", choices=["frequency", "acceptance"], default="frequency",
                   help="the ranking the trimmed head keeps a prefix of: the fit rows' token frequency (default), or "
                        "acceptance-aware (tokens the full draft gets accepted on over --fit-prompts fit-row prompts "
                        "first, the rest by frequency)")
    p.add_argument("--fit-prompts", type=int, default=16, help="fit-row prompts replayed for --ranking acceptance")
    p.set_defaults(func=run, human=human)
    return p


def run(args) -> dict:
    import sys

    from vtcore.bench import BenchConfig, run_bench
    from vtcore.cmd.common import progress_printer

    cfg = BenchConfig(target=args.target, draft=args.draft, token_map=args.token_map, data=args.data,
                      ood_data=args.ood_data, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                      gamma=args.gamma, mode=args.mode, temperature=args.temperature, device=args.device,
                      k=args.k, k_from=args.k_from, min_coverage=args.min_coverage, repeats=args.repeats,
                      warmup=args.warmup, seed=args.seed, threads=args.threads, workspace=args.workspace,
                      save=not args.no_save, acceptance_model=args.acceptance_model, ranking=args.ranking,
                      fit_prompts=args.fit_prompts)
    return run_bench(cfg, progress=progress_printer("bench"), log=lambda m: print(m, file=sys.stderr, flush=True))


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def ratio(r: dict, name: str) -> str:
    """'1.16x [1.08, 1.25] faster' from the result's point value, interval and verdict."""
    x, ci = r.get(f"speedup_{name}"), r.get(f"speedup_{name}_ci")
    if x is None:
        return "-"
    return f"{x:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] {r[f'verdict_{name}']}"


def human(r: dict) -> str:
    if r.get("stopped"):
        return "bench stopped"
    lines = [f"device {r['device']}  target {r['target']}  draft {r['draft']} ({r['draft_kind']})  "
             f"k {r['k']:,}/{r['vocab_size']:,} (covers {r['coverage_k']:.3f} of held-out tokens)  "
             f"gamma {r['gamma']} ({r['gamma_from']})  {r['mode']}",
             f"{r['prompts']} prompts x {r['repeats']} repeats x {r['max_new_tokens']} new tokens; intervals: "
             f"{r['ci_method']}",
             f"{'':12} {'tok/s':>8} {'interval':>15} {'acc/step':>9} {'draft ms/step':>14} {'head share':>11} "
             f"{'target ms/step':>15}"]
    for m in ("target_only", "full", "trimmed"):
        x = r.get(m)
        if not x:
            continue
        lo, hi = x["tokens_per_s_ci"]
        lines.append(f"{m:12} {_f(x['tokens_per_s'], '{:.1f}'):>8} {f'[{lo:.1f}, {hi:.1f}]':>15} "
                     f"{_f(x.get('accepted_per_step')):>9} {_f(x.get('draft_ms_per_step')):>14} "
                     f"{_f(x.get('lm_head_share')):>11} {_f(x['target_ms_per_step']):>15}")
    if r.get("trimmed", {}).get("accepted_per_step_replayed") is not None:
        lines.append("accepted per step, replayed (vtcore.acceptance) vs measured: " + "; ".join(
            f"{m} {_f(r[m]['accepted_per_step_replayed'], '{:.3f}')} vs {_f(r[m]['accepted_per_step'], '{:.3f}')}"
            for m in ("full", "trimmed") if r.get(m)) + f" (ranking {r.get('ranking')})")
    if r.get("full"):
        by_pos = ", ".join(_f(p) for p in r["full"]["accepted_by_position"])
        lines.append(f"full draft acceptance by position: {by_pos}")
    lines.append(f"trimmed vs full: {ratio(r, 'trimmed_vs_full')}; trimmed vs target alone: "
                 f"{ratio(r, 'trimmed_vs_target')} (predicted {_f(r['predicted_speedup'])}x); "
                 f"identical outputs: {r['identical_outputs']}")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    if r.get("results_file"):
        lines.append(f"appended to {r['results_file']}")
    return "\n".join(lines)
