"""Search speed and quality, measured side by side in one run.

- the exact sweep over every k of a Qwen3 draft (151,936 values; and k x gamma for the speed-up);
- 100 TPE trials on the utility objective (study on disk, as the product runs it, and in memory);
- TPE regret against the exact optimum over several seeds, log-scale vs linear k sampling.

Coverage: held-out curves of the bundled samples (code: HumanEval, chat: chitchat) counted with
the bundled Qwen3 tokenizer. Usage: python benchmarks/bench_search.py [--trials 100] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vtcore import cost, search, studies  # noqa: E402


def counts_for(sample: str, work: Path):
    from vtcore.counts import count_dataset

    cf, info = count_dataset([str(ROOT / "samples" / sample)], cache=True, workspace=str(work))
    return cf, info


def timed(fn, repeat: int = 1):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def tpe(problem: search.Problem, trials: int, seed: int, ws: Path, name: str, in_memory: bool = False):
    """(best value, seconds) of one TPE run."""
    if in_memory:   # the runner's objective with no journal file: isolates the storage cost
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        def objective(trial):
            k = trial.suggest_int("k", problem.k_min, problem.k_max, log=problem.k_log)
            m = problem.evaluate(k)
            trial.set_constraint("min_coverage", problem.min_coverage - m["coverage"])
            trial.set_user_attr("metrics", {key: v for key, v in m.items() if key != "feasible"})
            return m["utility"]

        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
                                    direction="maximize")
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=trials)
        return study.best_value, time.perf_counter() - t0
    t0 = time.perf_counter()
    r = studies.StudyRunner(problem, name, n_trials=trials, seed=seed, workspace=ws).run()
    took = time.perf_counter() - t0
    best = r.best()
    return (None if best is None else best["utility"]), took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--min-coverage", type=float, default=0.9)
    args = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")   # optuna's ExperimentalWarning for multivariate TPE
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    arch = cost.preset("qwen3-0.6b")
    R = cost.latency_reduction(arch, np.arange(arch.vocab + 1))
    ratio = float(cost.total_flops(arch, arch.vocab)) / cost.target_flops(arch)
    print(f"draft {arch.name}: vocab {arch.vocab:,}, LM head {cost.lm_head_share(arch) * 100:.1f}% of FLOPs; "
          f"{os.cpu_count()} CPU(s)")

    for sample in ("code.jsonl", "chat.jsonl.gz"):
        cf, info = counts_for(sample, work)
        C = search.pad_curve(cf.coverage().curve("heldout"), arch.vocab)
        print(f"\n== {sample}: {info['assistant_tokens']:,} assistant tokens, {info['heldout_tokens']:,} held out, "
              f"held-out coverage")
        p = search.Problem(C, R, alpha=args.alpha, min_coverage=args.min_coverage)
        ex, t_exact = timed(lambda: search.solve_exact(p), repeat=7)
        ps = search.Problem(C, R, objective="speedup", a0=0.7, cost_ratio_full=ratio, gamma_max=8,
                            min_coverage=args.min_coverage)
        exs, t_exact_s = timed(lambda: search.solve_exact(ps), repeat=3)
        print(f"exact utility sweep : {p.k_max - p.k_min + 1:,} k in {t_exact * 1e3:.1f} ms (median of 7) -> "
              f"k={ex.best_k:,} U={ex.utility:.4f} C={ex.coverage:.4f} R={ex.latency_reduction:.4f}; "
              f"frontier {ex.frontier_k.size:,} points")
        print(f"exact speed-up sweep: {exs.n_evaluated:,} (k, gamma) in {t_exact_s * 1e3:.1f} ms -> "
              f"k={exs.best_k:,} gamma={exs.best_gamma} S={exs.speedup:.3f}")

        value, t_disk = tpe(p, args.trials, 42, work, f"{sample}-disk")
        value_mem, t_mem = tpe(p, args.trials, 42, work, "", in_memory=True)
        print(f"TPE {args.trials} trials  : {t_disk:.2f} s with the journal file, {t_mem:.2f} s in memory "
              f"(storage x{t_disk / t_mem:.2f}); regret {ex.utility - value:.2e}")
        print(f"ratio               : {args.trials} TPE trials take {t_disk / t_exact:,.0f}x the exact sweep of every k")

        for scale in (True, False):
            pr = search.Problem(C, R, alpha=args.alpha, min_coverage=args.min_coverage, k_log=scale)
            regrets = []
            for seed in range(args.seeds):
                v, _ = tpe(pr, args.trials, seed, work, f"{sample}-{'log' if scale else 'lin'}-{seed}")
                regrets.append(float("inf") if v is None else ex.utility - v)
            print(f"regret, {'log   ' if scale else 'linear'} k, {args.seeds} seeds: median {statistics.median(regrets):.2e}, "
                  f"max {max(regrets):.2e}")


if __name__ == "__main__":
    main()
