"""python -m vtcore optimize: choose the draft vocabulary k (and draft length gamma) for a counts file."""

from __future__ import annotations

import argparse


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("optimize", help="exact frontier + Optuna TPE search for the draft vocabulary size",
                       description="Maximise U(k) = alpha*C(k) + (1-alpha)*R(k) (utility), the predicted "
                                   "speculative-decoding speed-up over (k, gamma) (speedup), or C and R together "
                                   "(pareto), s.t. C(k) >= --min-coverage. Solved exactly over every k, and by a "
                                   "seeded TPE study stored in <workspace>/studies/<name>.journal (resumable).")
    p.add_argument("--counts", required=True, help="counts .npz (python -m vtcore count)")
    p.add_argument("--draft", required=True, help="preset name or path to an HF config.json (or its folder)")
    p.add_argument("--objective", default="utility", choices=["utility", "speedup", "pareto"])
    p.add_argument("--alpha", type=float, default=0.5, help="weight of coverage in the utility (default 0.5)")
    p.add_argument("--min-coverage", type=float, default=0.0, help="constraint C(k) >= this (default 0)")
    p.add_argument("--k-min", type=int, default=1)
    p.add_argument("--k-max", type=int, default=None, help="default: the draft's vocabulary size")
    p.add_argument("--k-scale", default="log", choices=["log", "linear"],
                   help="TPE sampling of k (default log: coverage changes over orders of magnitude of k)")
    p.add_argument("--trials", type=int, default=100, help="TPE trials to run now (added to a resumed study)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--coverage", default="heldout", choices=["heldout", "insample"],
                   help="coverage curve: held-out rows (honest default) or the rows the ranking was made on")
    p.add_argument("--latency", default="flops", help="flops, paper-flops, or a latency profile JSON "
                                                      "(python -m vtcore profile)")
    p.add_argument("--context", type=int, default=1024, help="KV-cache length for the flops model (default 1024)")
    p.add_argument("--study", default=None, help="study name: resumes it if it exists (default: a new name)")
    p.add_argument("--a0", type=float, default=0.7, help="speedup: acceptance of the full-vocabulary draft")
    p.add_argument("--t-target-ms", type=float, default=None,
                   help="speedup: target step time in ms (with a latency profile: c = t_draft(k) / this)")
    p.add_argument("--cost-ratio", type=float, default=None,
                   help="speedup: t_draft / t_target at the full vocabulary (overrides the preset's target FLOPs)")
    p.add_argument("--gamma-min", type=int, default=1)
    p.add_argument("--gamma-max", type=int, default=8)
    p.add_argument("--pareto-points", type=int, default=200, help="at most this many exact frontier points in JSON")
    p.set_defaults(func=run, human=human)
    return p


def _reduction(args, arch):
    """R(k) for k = 0..V, its description, and the latency profile when one is used."""
    import numpy as np

    from vtcore import cost
    from vtcore.profile import load_profile

    ks = np.arange(arch.vocab + 1)
    if args.latency in cost.MODES:
        return cost.latency_reduction(arch, ks, args.context, args.latency), args.latency, None
    prof = load_profile(args.latency)
    prof.check_for(arch, args.latency)
    return prof.latency_reduction(ks), f"profile:{args.latency}", prof


def _cost_ratio(args, arch, prof):
    """t_draft(V) / t_target and where it came from (speed-up objective only)."""
    from vtcore import cost
    from vtcore.errors import VTError

    if args.cost_ratio is not None:
        return args.cost_ratio, "--cost-ratio"
    if args.t_target_ms is not None:
        if args.t_target_ms <= 0:
            raise VTError(f"--t-target-ms must be > 0, got {args.t_target_ms}")
        if prof is None:
            raise VTError("--t-target-ms needs measured draft times: give --latency PROFILE.json "
                          "(or give --cost-ratio instead)")
        return float(prof.step_at(prof.vocab_size)) / args.t_target_ms, "profile step(V) / --t-target-ms"
    mode = args.latency if args.latency in cost.MODES else "flops"
    tf = cost.target_flops(arch, args.context, mode)
    if tf is None:
        raise VTError(f"the speed-up objective needs the cost ratio: draft {arch.name} names no target model; "
                      "give --cost-ratio, or --t-target-ms with --latency PROFILE.json")
    return float(cost.total_flops(arch, arch.vocab, args.context, mode)) / tf, f"FLOPs vs target {arch.target}"


def run(args) -> dict:
    import sys
    import time

    from vtcore import cost, search
    from vtcore.cli import progress_printer
    from vtcore.countsfile import load_counts
    from vtcore.errors import VTError

    arch = cost.resolve_draft(args.draft)
    if args.context < 0:
        raise VTError(f"--context must be >= 0, got {args.context}")
    cf = load_counts(args.counts)
    cost.check_counts_vocab(cf.vocab_size, arch, f"{args.counts}")
    cov = cf.coverage()
    source = args.coverage
    note = None
    if source == "heldout" and cov.heldout is None:
        source, note = "insample", "the counts file has no held-out tokens: coverage is in-sample"
    curve = search.pad_curve(cov.curve(source), arch.vocab)
    reduction, latency_source, prof = _reduction(args, arch)
    ratio, ratio_source = (None, None)
    if args.objective == "speedup":
        ratio, ratio_source = _cost_ratio(args, arch, prof)
    problem = search.Problem(curve, reduction, objective=args.objective, alpha=args.alpha,
                             min_coverage=args.min_coverage, k_min=args.k_min,
                             k_max=args.k_max if args.k_max is not None else arch.vocab,
                             k_log=args.k_scale == "log", a0=args.a0, cost_ratio_full=ratio,
                             gamma_min=args.gamma_min, gamma_max=args.gamma_max,
                             coverage_source=source, latency_source=latency_source)
    exact = search.solve_exact(problem)
    runner = search.StudyRunner(problem, args.study, n_trials=args.trials, seed=args.seed)
    show = progress_printer(f"optimize {runner.study_name}", sys.stderr)
    t0 = time.perf_counter()
    runner.start()
    try:
        while not runner.join(0.2):
            pr = runner.progress()
            show(pr["fraction"], f"{pr['done']}/{pr['n_trials']}")
    except KeyboardInterrupt:   # keep what ran: the study is on disk, report it
        runner.stop()
        runner.join()
    show(1.0, runner.state)
    seconds = time.perf_counter() - t0

    out = search.summarize(runner, exact, max_points=args.pareto_points)
    out["tpe_seconds"] = seconds
    if note:
        out["coverage_note"] = note
    if args.objective == "speedup":
        out["cost_ratio_source"] = ratio_source
    best_k = out["best_k"] if out["best_k"] is not None else exact.best_k
    mode = args.latency if args.latency in cost.MODES else "flops"
    full = cost.flops_breakdown(arch, None, args.context, mode)
    at_k = cost.flops_breakdown(arch, best_k, args.context, mode)
    out["flops_breakdown"] = {c: {"at_V": full[c], "at_best_k": at_k[c]} for c in full}
    out["flops_model"] = mode
    out["lm_head_share"] = full["lm_head"] / sum(full.values())
    out["draft"] = arch.summary()
    out["vocab_size"] = arch.vocab
    out["counts"] = {"path": args.counts, "tokenizer_vocab": cf.vocab_size,
                     "tokens": int(cf.counts.sum()), "heldout_tokens": int(cf.counts_heldout.sum())}
    if runner.state == "error":
        raise VTError(f"study {runner.study_name} stopped on an error after {out['n_new_trials']} new trial(s) "
                      f"(kept in {runner.path}): {runner.error}")
    return out


def human(r: dict) -> str:
    lines = [f"objective {r['objective']} (coverage {r['coverage_source']}, latency {r['latency_source']}), "
             f"k in [{r['k_min']:,}, {r['k_max']:,}], C >= {r['min_coverage']}"]
    if r["best_k"] is None:
        lines.append(f"TPE: {r.get('note')}")
    else:
        lines.append(f"TPE   best k = {r['best_k']:,}: coverage {r['coverage']:.4f}, R {r['latency_reduction']:.4f}, "
                     f"utility {r['utility']:.4f}" + (f", gamma {r['best_gamma']}, speed-up {r['predicted_speedup']:.3f}"
                                                      if r["objective"] == "speedup" else ""))
    lines.append(f"exact best k = {r['exact_best_k']:,}: coverage {r['exact_coverage']:.4f}, "
                 f"R {r['exact_latency_reduction']:.4f}, utility {r['exact_utility']:.4f}"
                 + (f", gamma {r['exact_best_gamma']}, speed-up {r['exact_speedup']:.3f}"
                    if r["objective"] == "speedup" else ""))
    if r["regret"] is not None:
        lines.append(f"regret {r['regret']:.6f} after {r['n_trials']} trials ({r['n_new_trials']} new, "
                     f"{r['tpe_seconds']:.1f} s); exact sweep {r['exact_seconds'] * 1e3:.1f} ms")
    lines.append(f"LM head share {r['lm_head_share'] * 100:.1f}% of draft {r['flops_model']}; "
                 f"frontier {r['pareto_size']:,} points; study {r['study_path']}")
    return "\n".join(lines)
