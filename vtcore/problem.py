"""One path from a user's choices to a search problem, shared by `vtcore optimize` and the
Frontier page: counts + draft + latency model + context + objective, alpha, min_coverage, the
coverage curve, the k range and scale, the gamma range -> a `search.Problem` with C(k) and R(k)
over the draft's whole vocabulary.

`PAPER` is the seed paper's reference run (arXiv 2603.05210) in one switch: utility with
alpha 0.5, no coverage constraint, k in [50, 50000] sampled linearly, 30 TPE trials with seed
42, coverage in-sample (the ranking is made and measured on all rows) and its FLOPs proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vtcore import cost
from vtcore.countsfile import CountsFile, counts_sha256
from vtcore.coverage import Coverage
from vtcore.errors import VTError
from vtcore.profile import LatencyProfile, load_profile
from vtcore.search import Problem, pad_curve


@dataclass(frozen=True)
class SearchSpec:
    """Everything a user chooses about the search (flags of `optimize`, widgets of Frontier)."""

    draft: str                       # preset name or a config.json path
    latency: str = "flops"           # flops | paper-flops | a latency profile JSON
    context: int = cost.DEFAULT_CONTEXT
    objective: str = "utility"       # utility | speedup | pareto
    alpha: float = 0.5               # weight of coverage in the utility
    min_coverage: float = 0.0        # the coverage constraint C(k) >= min_coverage
    curve: str = "heldout"           # the coverage curve: heldout | insample
    k_min: int = 1
    k_max: int | None = None         # None: the draft's vocabulary
    k_scale: str = "log"             # TPE sampling of k: log | linear
    a0: float = 0.7                  # speedup: acceptance of the full-vocabulary draft
    cost_ratio: float | None = None  # speedup: t_draft(V) / t_target; None: from the preset's FLOPs
    t_target_ms: float | None = None # speedup with a latency profile: c = step(V) / this
    gamma_min: int = 1
    gamma_max: int = 8
    engine: str | None = None        # speedup per serving engine: sglang | vllm | chain (vtcore.enginecost)
    batch: int = 1
    parallel_tokens: float = 128.0   # tokens a forward runs at the cost of one (1: a CPU, linear)
    scatter_cost: float | None = None   # vLLM: one scatter / one target step; None: from memory traffic
    topk_max: int = 4
    tokens_max: int = 16


PAPER: dict[str, Any] = {"objective": "utility", "alpha": 0.5, "min_coverage": 0.0, "k_min": 50, "k_max": 50000,
                         "k_scale": "linear", "curve": "insample", "latency": "paper-flops"}
PAPER_RUN: dict[str, int] = {"trials": 30, "seed": 42}


def paper_spec(draft: str, vocab: int, **overrides: Any) -> SearchSpec:
    """The paper's settings for a draft with `vocab` rows (k_max capped at it); explicit
    overrides win."""
    return SearchSpec(draft=draft, **{**PAPER, "k_max": min(PAPER["k_max"], vocab), **overrides})


@dataclass
class SearchSetup:
    spec: SearchSpec
    problem: Problem
    arch: cost.DraftArch
    profile: LatencyProfile | None   # the measured profile, when the latency model is one
    flops_mode: str                  # FLOPs model for breakdowns (flops when a profile is used)
    cost_ratio_source: str | None = None
    notes: list[str] = field(default_factory=list)


def latency_reduction(arch: cost.DraftArch, latency: str, context: int) -> tuple[np.ndarray, str, LatencyProfile | None]:
    """R(k) for k = 0..V, the name of the latency model, and the profile when one is used."""
    if context < 0:
        raise VTError(f"--context must be >= 0, got {context}")
    ks = np.arange(arch.vocab + 1)
    if latency in cost.MODES:
        return cost.latency_reduction(arch, ks, context, latency), latency, None
    prof = load_profile(latency)
    prof.check_for(arch, latency)
    return prof.latency_reduction(ks), f"profile:{latency}", prof


def cost_ratio(spec: SearchSpec, arch: cost.DraftArch, prof: LatencyProfile | None) -> tuple[float, str]:
    """t_draft(V) / t_target for the speed-up objective, and where it came from."""
    if spec.cost_ratio is not None:
        if not spec.cost_ratio > 0:
            raise VTError(f"--cost-ratio must be > 0, got {spec.cost_ratio}")
        return spec.cost_ratio, "--cost-ratio"
    if spec.t_target_ms is not None:
        if spec.t_target_ms <= 0:
            raise VTError(f"--t-target-ms must be > 0, got {spec.t_target_ms}")
        if prof is None:
            raise VTError("--t-target-ms needs measured draft times: give --latency PROFILE.json "
                          "(or give --cost-ratio instead)")
        return float(prof.step_at(prof.vocab_size)) / spec.t_target_ms, "profile step(V) / --t-target-ms"
    mode = spec.latency if spec.latency in cost.MODES else "flops"
    tf = cost.target_flops(arch, spec.context, mode)
    if tf is None:
        raise VTError(f"the speed-up objective needs the cost ratio: draft {arch.name} names no target model; "
                      "give --cost-ratio, or --t-target-ms with --latency PROFILE.json")
    return float(cost.total_flops(arch, arch.vocab, spec.context, mode)) / tf, f"FLOPs vs target {arch.target}"


def build(cf: CountsFile, spec: SearchSpec, cov: Coverage | None = None,
          arch: cost.DraftArch | None = None) -> SearchSetup:
    """The search problem of these counts under these choices (`cov` and `arch` may be passed
    when the caller already holds them)."""
    arch = arch or cost.resolve_draft(spec.draft)
    cost.check_counts_vocab(cf.vocab_size, arch, "the counts file")
    cov = cov or cf.coverage()
    notes: list[str] = []
    curve = cov.resolve(spec.curve)
    if curve != spec.curve:
        notes.append("the counts file has no held-out tokens: coverage is in-sample")
    k_max = arch.vocab if spec.k_max is None else spec.k_max
    reduction, latency_source, prof = latency_reduction(arch, spec.latency, spec.context)
    ratio, ratio_source = (None, None)
    if spec.objective == "speedup":
        ratio, ratio_source = cost_ratio(spec, arch, prof)
    if spec.k_scale not in ("log", "linear"):
        raise VTError(f"k scale must be 'log' or 'linear', got {spec.k_scale!r}")
    scatter, scatter_source = engine_scatter_cost(spec, arch)
    if scatter_source:
        notes.append(scatter_source)
    problem = Problem(pad_curve(cov.curve(curve), arch.vocab), reduction, objective=spec.objective,
                      alpha=spec.alpha, min_coverage=spec.min_coverage, k_min=spec.k_min, k_max=k_max,
                      k_log=spec.k_scale == "log", a0=spec.a0, cost_ratio_full=ratio, gamma_min=spec.gamma_min,
                      gamma_max=spec.gamma_max, coverage_source=curve, latency_source=latency_source,
                      counts_sha256=counts_sha256(cf), engine=spec.engine, batch=spec.batch,
                      parallel_tokens=spec.parallel_tokens, scatter_cost=scatter, topk_max=spec.topk_max,
                      tokens_max=spec.tokens_max)
    return SearchSetup(spec=replace(spec, curve=curve), problem=problem, arch=arch, profile=prof,
                       flops_mode=spec.latency if spec.latency in cost.MODES else "flops",
                       cost_ratio_source=ratio_source, notes=notes)


def attach_acceptance(setup: SearchSetup, cf: CountsFile, path: str, ranking: str = "frequency") -> SearchSetup:
    """The speed-up objective on the replayed A(k, gamma) of an acceptance file (vtcore.acceptance)
    instead of a0 * C(k): the table of `ranking`'s prefixes for gamma = gamma_min..gamma_max, and
    the coverage curve of that same ranking (held-out rows), so C(k) describes the set scored."""
    from vtcore import acceptance

    p = setup.problem
    if p.objective != "speedup":
        raise VTError("--acceptance scores the speed-up objective: give --objective speedup")
    rep = acceptance.load_acceptance(path)
    if rep.gamma_max < p.gamma_max:
        raise VTError(f"{path}: replayed up to gamma {rep.gamma_max}, the search goes to --gamma-max {p.gamma_max}")
    try:
        order = acceptance.ranking_for(rep, cf.counts_fit, cf.always_keep, ranking)
    except VTError as e:
        raise VTError(f"{path}: {e}") from None
    V = p.vocab
    table = acceptance.acceptance_table(rep, order, range(1, p.gamma_max + 1), k_max=V)
    if ranking == "acceptance":
        held = cf.counts_heldout if int(cf.counts_heldout.sum()) else cf.counts
        curve = np.concatenate([[0.0], np.cumsum(held[order]) / max(int(held.sum()), 1)])
        p.coverage = pad_curve(curve, V)
    p.accepted = table
    p.acceptance_source = f"replay:{path}"
    p.validate()
    setup.notes.append(f"acceptance: replayed A(k, gamma) of the {ranking} ranking from {path} "
                       f"({int(rep.heldout.sum())} held-out prompts, {rep.manifest.get('draft')})")
    return setup



# Memory traffic of vLLM's scatter next to a target step: new_full writes V logits and the
# indexed copy moves k more, at about 5x a plain copy's time (measured in vLLM's PR on the
# scatter); a memory-bound target step reads its ~F/2 parameters. Both at 2 bytes an element.
SCATTER_TRAFFIC = 20.0


def engine_scatter_cost(spec: SearchSpec, arch: cost.DraftArch) -> tuple[float, str | None]:
    """vLLM's full-vocabulary scatter per drafted token in target steps (batch 1), and a note
    on where it came from (None when no engine model needs it)."""
    if spec.engine != "vllm":
        return 0.0, None
    if spec.scatter_cost is not None:
        return float(spec.scatter_cost), f"vLLM scatter: {spec.scatter_cost:g} target steps per drafted token (given)"
    tf = cost.target_flops(arch, spec.context, "flops")
    if tf is None:
        return 0.0, f"vLLM scatter: not priced (draft {arch.name} names no target; give --scatter-cost)"
    value = SCATTER_TRAFFIC * cost.preset(arch.target).vocab / tf
    return value, (f"vLLM scatter: {value:.2e} target steps per drafted token (memory traffic of V = "
                   f"{cost.preset(arch.target).vocab:,} logits vs {arch.target}'s weights; --scatter-cost to measure)")


def attach_tree_ranks(setup: SearchSetup, cf: CountsFile, path: str, ranking: str = "frequency") -> SearchSetup:
    """The SGLang engine model on an acceptance file's replay: per depth, the probability that the
    target's token is the r-th best kept row of `ranking`'s prefix order[:k], for every k
    (enginecost.replay_ranks), in place of geometric ranks from a0 * C(k)."""
    from vtcore import acceptance, enginecost

    p = setup.problem
    if p.engine != "sglang":
        return setup
    rep = acceptance.load_acceptance(path)
    if rep.gamma_max < p.gamma_max:
        raise VTError(f"{path}: replayed up to depth {rep.gamma_max}, the tree search goes to --gamma-max "
                      f"{p.gamma_max} (the tree's steps)")
    try:
        order = acceptance.ranking_for(rep, cf.counts_fit, cf.always_keep, ranking)
    except VTError as e:
        raise VTError(f"{path}: {e}") from None
    p.ranks = enginecost.replay_ranks(rep, order, p.topk_max, p.vocab, p.gamma_max)
    p.validate()
    setup.notes.append(f"tree acceptance: per-depth ranks of the target's token among the kept rows, replayed "
                       f"from {path} (SGLang's tree of a calibrated draft, depths independent: docs/design.md)")
    return setup
