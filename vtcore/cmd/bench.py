"""python -m vtcore bench: real speculative decoding, target alone vs full draft vs trimmed draft."""

from __future__ import annotations


def register(subparsers):
    p = subparsers.add_parser(
        "bench", help="benchmark speculative decoding with a full and a trimmed draft",
        description="Speculative decoding, target alone vs target + full draft vs target + trimmed draft, on "
                    "held-out prompts of a dataset. With no arguments: the embedded SmolLM2-135M-Instruct and its "
                    "2-layer draft on samples/code.jsonl. Results are appended to <workspace>/bench/results.jsonl.")
    p.add_argument("--target", help="target model: local directory or cached hub id (default: embedded SmolLM2)")
    p.add_argument("--draft", help="draft model: local directory, cached hub id or hf-draft export directory")
    p.add_argument("--token-map", help="kept ids: SGLang .pt tensor, EAGLE-3 {d2t,t2d} .pt, or JSON "
                                       "(default: the data's top-k, k from --k-from)")
    p.add_argument("--data", help="dataset whose held-out rows give the prompts (default: samples/code.jsonl)")
    p.add_argument("--ood-data", help="also measure on held-out prompts of this out-of-domain dataset")
    p.add_argument("--prompts", type=int, default=8, help="number of held-out prompts (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gamma", type=int, default=4, help="draft tokens per target step (default 4)")
    p.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    p.add_argument("--temperature", type=float, default=1.0, help="sample mode only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA if present)")
    p.add_argument("--k", type=int, help="default token map: keep exactly k ids")
    p.add_argument("--coverage", type=float, default=0.99,
                   help="--k-from coverage: smallest k with this held-out coverage (default 0.99)")
    p.add_argument("--k-from", choices=["search", "coverage"], default="search",
                   help="default token map: the k vtcore.search's speed-up model picks after a short calibration "
                        "of the full draft on two held-out prompts it does not measure (a0, cost ratio, head share) (default), or "
                        "the smallest k reaching --coverage")
    p.add_argument("--min-coverage", type=float, default=0.95,
                   help="--k-from search: held-out coverage constraint C(k) >= this (default 0.95)")
    p.add_argument("--repeats", type=int, default=3, help="runs per prompt and method; medians are reported")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workspace", help="workspace directory (default $VTCORE_WORKSPACE or ~/.cache/vocab-trim-studio)")
    p.add_argument("--no-save", action="store_true", help="do not append to the results store")
    p.set_defaults(func=run, human=human)
    return p


def run(args) -> dict:
    import sys

    from vtcore.bench import BenchConfig, run_bench
    from vtcore.cmd.common import progress_printer

    cfg = BenchConfig(target=args.target, draft=args.draft, token_map=args.token_map, data=args.data,
                      ood_data=args.ood_data, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                      gamma=args.gamma, mode=args.mode, temperature=args.temperature, device=args.device,
                      k=args.k, coverage=args.coverage, k_from=args.k_from, min_coverage=args.min_coverage,
                      repeats=args.repeats, warmup=args.warmup, seed=args.seed,
                      threads=args.threads, workspace=args.workspace, save=not args.no_save)
    return run_bench(cfg, progress=progress_printer("bench"), log=lambda m: print(m, file=sys.stderr, flush=True))


def _f(x, fmt="{:.2f}"):
    return "-" if x is None else fmt.format(x)


def human(r: dict) -> str:
    if r.get("stopped"):
        return "bench stopped"
    lines = [f"device {r['device']}  target {r['target']}  draft {r['draft']}  k {r['k']:,}/{r['vocab_size']:,} "
             f"(covers {r['coverage_k']:.3f} of held-out tokens)  gamma {r['gamma']}  {r['mode']}",
             f"{'':12} {'tok/s':>8} {'acc/step':>9} {'draft ms/step':>14} {'head share':>11} {'target ms/step':>15}"]
    for m in ("target_only", "full", "trimmed"):
        x = r.get(m)
        if not x:
            continue
        lines.append(f"{m:12} {_f(x['tokens_per_s'], '{:.1f}'):>8} {_f(x.get('accepted_per_step')):>9} "
                     f"{_f(x.get('draft_ms_per_step')):>14} {_f(x.get('lm_head_share')):>11} "
                     f"{_f(x['target_ms_per_step']):>15}")
    lines.append(f"speed-up trimmed vs full {_f(r['speedup_trimmed_vs_full'])}x, vs target alone "
                 f"{_f(r['speedup_trimmed_vs_target'])}x (predicted {_f(r['predicted_speedup'])}x); "
                 f"identical outputs: {r['identical_outputs']}")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    if r.get("results_file"):
        lines.append(f"appended to {r['results_file']}")
    return "\n".join(lines)
