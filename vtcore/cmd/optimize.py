"""python -m vtcore optimize: choose the draft vocabulary k (and draft length gamma) for a counts file."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import curve_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("optimize", help="exact frontier + Optuna TPE search for the draft vocabulary size",
                       description="Maximise U(k) = alpha*C(k) + (1-alpha)*R(k) (utility), the predicted "
                                   "speculative-decoding speed-up over (k, gamma) (speedup), or C and R together "
                                   "(pareto), s.t. C(k) >= --min-coverage. Solved exactly over every k, and by a "
                                   "seeded TPE study stored in <workspace>/studies/<name>.journal (resumable).")
    p.add_argument("--counts", required=True, help="counts .npz (python -m vtcore count)")
    p.add_argument("--draft", required=True, help="preset name or path to an HF config.json (or its folder)")
    p.add_argument("--paper", action="store_true",
                   help="the seed paper's reference run: utility, alpha 0.5, --min-coverage 0, k in [50, 50000] "
                        "linear, 30 trials, seed 42, --coverage insample, --latency paper-flops (flags given "
                        "explicitly still win)")
    # None below means "not given": the default is SearchSpec's, or PAPER's with --paper
    p.add_argument("--objective", default=None, choices=["utility", "speedup", "pareto"],
                   help="default utility")
    p.add_argument("--alpha", type=float, default=None, help="weight of coverage in the utility (default 0.5)")
    p.add_argument("--min-coverage", type=float, default=None, help="the coverage constraint C(k) >= this (default 0)")
    p.add_argument("--k-min", type=int, default=None, help="default 1")
    p.add_argument("--k-max", type=int, default=None, help="default: the draft's vocabulary size")
    p.add_argument("--k-scale", default=None, choices=["log", "linear"],
                   help="TPE sampling of k (default log: coverage changes over orders of magnitude of k)")
    p.add_argument("--trials", type=int, default=None, help="TPE trials to run now, added to a resumed study "
                                                            "(default 100)")
    p.add_argument("--seed", type=int, default=None, help="default 42")
    p.add_argument("--coverage", type=curve_arg, default=None, metavar="CURVE",
                   help="heldout (default): ranked on the fit rows, measured on the held-out rows; insample: "
                        "ranked and measured on all rows")
    p.add_argument("--latency", default=None, help="flops (default), paper-flops, or a latency profile JSON "
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
    p.add_argument("--acceptance", metavar="FILE.npz",
                   help="speedup: score acceptance with the replayed A(k, gamma) of this acceptance file "
                        "(python -m vtcore acceptance) instead of a0 * C(k)")
    p.add_argument("--ranking", choices=["frequency", "acceptance"], default="frequency",
                   help="with --acceptance: the ranking whose prefixes are scored (acceptance: from the file's "
                        "fit-row replay)")
    p.add_argument("--engine-model", choices=["sglang", "vllm", "chain"], default=None,
                   help="speedup: price a round as this serving engine does (vtcore.enginecost): sglang searches "
                        "(k, s, t, n) with s in --gamma-min..--gamma-max, vllm and chain (k, gamma); default: "
                        "the paper's formula")
    p.add_argument("--batch-size", type=int, default=1, help="with --engine-model: requests per batch")
    p.add_argument("--parallel-tokens", type=float, default=128.0,
                   help="with --engine-model: tokens one forward runs at the cost of one (memory-bound; "
                        "default 128, a GPU; 1 prices every token, as on a CPU)")
    p.add_argument("--scatter-cost", type=float, default=None,
                   help="with --engine-model vllm: one full-vocabulary scatter / one target step (batch 1); "
                        "default from memory traffic")
    p.add_argument("--topk-max", type=int, default=4, help="with --engine-model sglang: t = 1..this")
    p.add_argument("--tokens-max", type=int, default=16, help="with --engine-model sglang: n = 2..this")
    p.set_defaults(func=run, human=human)
    return p


SPEC_FLAGS = {"objective": "objective", "alpha": "alpha", "min_coverage": "min_coverage", "k_min": "k_min",
              "k_max": "k_max", "k_scale": "k_scale", "coverage": "curve", "latency": "latency"}


def spec_from_args(args):
    """The SearchSpec (and the trials and seed) the flags ask for."""
    from vtcore import cost
    from vtcore.problem import PAPER_RUN, SearchSpec, paper_spec

    given = {field: getattr(args, flag) for flag, field in SPEC_FLAGS.items() if getattr(args, flag) is not None}
    given.update(context=args.context, a0=args.a0, cost_ratio=args.cost_ratio, t_target_ms=args.t_target_ms,
                 gamma_min=args.gamma_min, gamma_max=args.gamma_max, engine=args.engine_model,
                 batch=args.batch_size, parallel_tokens=args.parallel_tokens, scatter_cost=args.scatter_cost,
                 topk_max=args.topk_max, tokens_max=args.tokens_max)
    if args.paper:
        spec = paper_spec(args.draft, cost.resolve_draft(args.draft).vocab, **given)
        run = PAPER_RUN
    else:
        spec, run = SearchSpec(draft=args.draft, **given), {"trials": 100, "seed": 42}
    trials = args.trials if args.trials is not None else run["trials"]
    seed = args.seed if args.seed is not None else run["seed"]
    return spec, trials, seed


def run(args) -> dict:
    import sys
    import time

    from vtcore import cost, problem, search, studies
    from vtcore.cmd.common import progress_printer
    from vtcore.countsfile import load_counts
    from vtcore.errors import VTError

    if args.pareto_points < 1:   # checked before the study runs, not after
        raise VTError(f"--pareto-points must be >= 1, got {args.pareto_points}")
    spec, trials, seed = spec_from_args(args)
    cf = load_counts(args.counts)
    setup = problem.build(cf, spec)
    if args.acceptance:
        problem.attach_acceptance(setup, cf, args.acceptance, args.ranking)
        problem.attach_tree_ranks(setup, cf, args.acceptance, args.ranking)
    elif args.ranking != "frequency":
        raise VTError("--ranking acceptance needs --acceptance FILE")
    exact = search.solve_exact(setup.problem)
    runner = studies.StudyRunner(setup.problem, args.study, n_trials=trials, seed=seed)
    show = progress_printer(f"optimize {runner.study_name}", sys.stderr)
    for note in runner.notes:   # what opening the study repaired
        print(f"note: {note}", file=sys.stderr)
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

    out = studies.summarize(runner, exact, max_points=args.pareto_points)
    out["tpe_seconds"] = seconds
    out["paper"] = bool(args.paper)
    out["seed"] = seed
    if setup.notes:
        out["coverage_note"] = "; ".join(setup.notes)
    if spec.objective == "speedup":
        out["cost_ratio_source"] = setup.cost_ratio_source
        out["acceptance_model"] = setup.problem.acceptance_model
        out["ranking"] = args.ranking
        out.update(engine_model_summary(setup.problem, exact, out))
    arch = setup.arch
    best_k = out["best_k"] if out["best_k"] is not None else exact.best_k
    full = cost.flops_breakdown(arch, None, spec.context, setup.flops_mode)
    at_k = cost.flops_breakdown(arch, best_k, spec.context, setup.flops_mode)
    out["flops_breakdown"] = {c: {"at_V": full[c], "at_best_k": at_k[c]} for c in full}
    out["flops_model"] = setup.flops_mode
    out["lm_head_share"] = full["lm_head"] / sum(full.values())
    out["draft"] = arch.summary()
    out["vocab_size"] = arch.vocab
    out["counts"] = {"path": args.counts, "tokenizer_vocab": cf.vocab_size,
                     "tokens": int(cf.counts.sum()), "heldout_tokens": int(cf.counts_heldout.sum())}
    if runner.state == "error":
        raise VTError(f"study {runner.study_name} stopped on an error after {out['n_new_trials']} new trial(s) "
                      f"(kept in {runner.path}): {runner.error}")
    return out


def engine_model_summary(p, exact, out: dict) -> dict:
    """What the engine model adds to the result: the engine, its inputs, and for SGLang the tree
    (s, t, n) at the exact and the TPE best (the study samples k and s; t and n are the best at them)."""
    if p.engine is None:
        return {"engine_model": None}
    res = {"engine_model": p.engine, "batch_size": int(p.batch), "parallel_tokens": p.parallel_tokens}
    if p.engine == "vllm":
        res["scatter_cost"] = p.scatter_cost
    if p.engine == "sglang":
        res["exact_best_tree"] = list(exact.best_tree)
        if out.get("best_k") is not None and out.get("best_gamma") is not None:
            _, t, n = p.tree_speedup(int(out["best_k"]), int(out["best_gamma"]))
            res["best_tree"] = [int(out["best_gamma"]), int(t), int(n)]
    return res


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
    if r.get("engine_model"):
        eng = f"engine model {r['engine_model']}, batch {r['batch_size']}, parallel tokens {r['parallel_tokens']:g}"
        if r["engine_model"] == "sglang":
            eng += (f"; tree (s, t, n): exact {tuple(r['exact_best_tree'])}"
                    + (f", TPE {tuple(r['best_tree'])}" if r.get("best_tree") else ""))
        lines.append(eng)
    lines.append(f"LM head share {r['lm_head_share'] * 100:.1f}% of draft {r['flops_model']}; "
                 f"frontier {r['pareto_size']:,} points; study {r['study_path']}")
    lines += [f"note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)
