"""The spread of a benchmark's figures: an interval beside every throughput and every ratio, and
a verdict that says when a difference is within noise.

A run is one (prompt, repeat) of one method: (new tokens, wall seconds). Methods are measured
interleaved per (prompt, repeat), so the runs of one unit are paired. Throughput is total
tokens / total seconds over the runs; a ratio is one method's throughput over another's.
Intervals: a 95% percentile bootstrap that resamples prompts (each with all its repeats: the
prompts differ more than the repeats do) when there are at least MIN_PROMPTS prompts, else the
min-max over the units, which says at least how far the runs disagree.
"""

from __future__ import annotations

import numpy as np

MIN_PROMPTS = 3
N_BOOT = 2000
LEVEL = 0.95

Runs = dict[tuple[int, int], tuple[float, float]]   # (prompt, repeat) -> (tokens, seconds)


def throughput(runs: Runs, units: list[tuple[int, int]] | None = None) -> float:
    units = list(runs) if units is None else units
    tokens = sum(runs[u][0] for u in units)
    seconds = sum(runs[u][1] for u in units)
    return tokens / seconds if seconds > 0 else 0.0


def _prompt_resamples(units: list[tuple[int, int]], seed: int) -> list[list[tuple[int, int]]]:
    """N_BOOT resamples of the prompts (with replacement), each prompt with all its repeats."""
    by_prompt: dict[int, list[tuple[int, int]]] = {}
    for u in units:
        by_prompt.setdefault(u[0], []).append(u)
    prompts = sorted(by_prompt)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(prompts), size=(N_BOOT, len(prompts)))
    return [[u for i in row for u in by_prompt[prompts[i]]] for row in picks]


def _interval(values: list[float]) -> tuple[float, float]:
    lo, hi = np.quantile(np.asarray(values), [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def method(n_prompts: int) -> str:
    return (f"{LEVEL:.0%} bootstrap over prompts" if n_prompts >= MIN_PROMPTS
            else f"min-max over runs (fewer than {MIN_PROMPTS} prompts)")


def throughput_ci(runs: Runs, seed: int = 0) -> tuple[float, float]:
    units = sorted(runs)
    if len({u[0] for u in units}) >= MIN_PROMPTS:
        return _interval([throughput(runs, s) for s in _prompt_resamples(units, seed)])
    each = [throughput(runs, [u]) for u in units]
    return min(each), max(each)


def ratio_ci(a: Runs, b: Runs, seed: int = 0) -> tuple[float, float]:
    """Interval of throughput(a) / throughput(b) over the units both measured (paired)."""
    units = sorted(set(a) & set(b))
    if len({u[0] for u in units}) >= MIN_PROMPTS:
        vals = []
        for s in _prompt_resamples(units, seed):
            den = throughput(b, s)
            vals.append(throughput(a, s) / den if den > 0 else np.inf)
        return _interval(vals)
    each = [throughput(a, [u]) / throughput(b, [u]) for u in units if throughput(b, [u]) > 0]
    return (min(each), max(each)) if each else (float("nan"), float("nan"))


def verdict(ci: tuple[float, float]) -> str:
    """'faster' / 'slower' when the whole interval is on one side of 1, else within noise."""
    lo, hi = ci
    if lo > 1.0:
        return "faster"
    if hi < 1.0:
        return "slower"
    return "no measurable difference"
