"""The benchmark's options and its result as types, without torch: `python -m vtcore bench`'s
flags are made from BenchConfig's fields (its parser is built on every CLI start), and a
BenchResult is what vtcore.bench returns, the CLI prints, the results store holds and the
dashboard reads."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

GAMMA_MAX = 8             # the search's gamma range is 1..GAMMA_MAX


def _opt(default: Any, help: str, **argparse_kw: Any) -> Any:
    """A BenchConfig field with the `python -m vtcore bench` flag's help (and choices)."""
    return field(default=default, metadata={"help": help, **argparse_kw})


@dataclass
class BenchConfig:
    """Every option of the benchmark, once: the CLI's flags, their defaults and bench_argv are
    made from these fields (a field `x_y` is the flag `--x-y`; `save` is `--no-save`)."""

    target: str | None = _opt(None, "target model: local directory or hub id (default: embedded SmolLM2)")
    draft: str | None = _opt(None, "draft: an EAGLE-3 checkpoint (SpecForge/SGLang or speculators layout), a "
                                   "standalone draft LM or hf-draft export directory, or hub id; 'standalone' is "
                                   "the embedded 2-layer SmolLM2 draft (default: the embedded EAGLE-3 head)")
    token_map: str | None = _opt(None, "kept ids: SGLang .pt tensor, EAGLE-3 {d2t,t2d} .pt, or JSON "
                                       "(default: the data's top-k, k from --k-from)")
    data: str | None = _opt(None, "dataset whose held-out rows give the prompts (default: samples/code.jsonl)")
    ood_data: str | None = _opt(None, "also measure on held-out prompts of this out-of-domain dataset")
    prompts: int = _opt(6, "number of held-out prompts")
    max_new_tokens: int = _opt(32, "new tokens per run")
    gamma: int | None = _opt(None, "draft tokens per target step (default: the search's optimum for the "
                                   "measured costs)")
    mode: str = _opt("greedy", "greedy, or sample at --temperature", choices=["greedy", "sample"])
    temperature: float = _opt(1.0, "sample mode only")
    device: str = _opt("auto", "auto | cpu | cuda (auto: CUDA if present)")
    k: int | None = _opt(None, "default token map: keep exactly k ids")
    k_from: str = _opt("search", "default token map: the k vtcore.search's speed-up model picks after a short "
                                 "calibration of the full draft on held-out prompts it does not measure, or the "
                                 "smallest k whose held-out coverage meets --min-coverage",
                       choices=["search", "coverage"])
    min_coverage: float = _opt(0.95, "the coverage constraint, held-out C(k) >= this (for --k-from search and "
                                     "coverage)")
    repeats: int = _opt(2, "runs per prompt and method")
    warmup: int = _opt(1, "warm-up runs per method before timing")
    seed: int = _opt(0, "sampling seed (sample mode)")
    threads: int | None = _opt(None, "torch CPU threads (default: torch's choice)")
    workspace: str | None = _opt(None, "workspace directory (default $VTCORE_WORKSPACE or "
                                       "~/.cache/vocab-trim-studio)")
    save: bool = _opt(True, "append the result to <workspace>/bench/results.jsonl")
    acceptance_model: str = _opt("replay", "what the search scores acceptance with: the replayed A(k, gamma) of the "
                                           "full draft over the target's continuation of held-out prompts not "
                                           "benchmarked (greedy only), or a0 * C(k) under --min-coverage",
                                 choices=["replay", "a0"])
    ranking: str = _opt("frequency", "the ranking the trimmed head keeps a prefix of: the fit rows' token frequency, "
                                     "or acceptance-aware (tokens the full draft gets accepted on over --fit-prompts "
                                     "fit-row prompts first, the rest by frequency)", choices=["frequency", "acceptance"])
    fit_prompts: int = _opt(16, "fit-row prompts replayed for --ranking acceptance")
    tree: list = field(default_factory=list, metadata={
        "help": "measure SGLang-style tree drafting instead (repeatable): S draft steps, top-T children per node, "
                "N tokens verified per round (the root included), e.g. 5,4,8; 'grid' for a small default grid. "
                "Chains at --gamma (or the search's) and the target alone run beside it, full and trimmed head; "
                "greedy only. Saved to <workspace>/bench/tree_results.jsonl",
        "metavar": "S,T,N"})


def tree_arg(text: str) -> tuple[int, int, int] | str:
    """'s,t,n' -> (s, t, n), or 'grid'."""
    if text.strip().lower() == "grid":
        return "grid"
    from vtcore.errors import VTError
    from vtcore.tree import parse_tree

    try:
        t = parse_tree(text)
    except VTError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return (t.steps, t.topk, t.tokens)


def _flag(f) -> str:
    return "--no-save" if f.name == "save" else "--" + f.name.replace("_", "-")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """The `python -m vtcore bench` flags, one per BenchConfig field, with its default and type."""
    for f in fields(BenchConfig):
        if f.type == "bool":
            p.add_argument(_flag(f), dest=f.name, action="store_false", help=f"do not {f.metadata['help']}")
            continue
        if f.type == "list":   # repeatable
            p.add_argument(_flag(f), dest=f.name, action="append", type=tree_arg, default=[],
                           metavar=f.metadata["metavar"], help=f.metadata["help"])
            continue
        kind = {"int": int, "float": float}.get(f.type.split(" |")[0], str)
        default = "" if f.default is None else f" (default {f.default})"
        p.add_argument(_flag(f), dest=f.name, type=kind, default=f.default, choices=f.metadata.get("choices"),
                       help=f.metadata["help"] + default)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig that parsed `bench` arguments stand for."""
    return BenchConfig(**{f.name: (list(getattr(args, f.name)) if f.type == "list" else getattr(args, f.name))
                          for f in fields(BenchConfig)})


def bench_argv(cfg: BenchConfig) -> list[str]:
    """The `python -m vtcore bench` arguments that run `cfg` (the dashboard runs the CLI in a
    child process: one code path for both)."""
    argv = ["bench"]
    for f in fields(BenchConfig):
        v = getattr(cfg, f.name)
        if f.type == "bool":
            argv += [] if v else [_flag(f)]
        elif f.type == "list":
            argv += [x for t in v for x in (_flag(f), t if isinstance(t, str) else ",".join(map(str, t)))]
        elif v is not None:
            argv += [_flag(f), str(v)]
    return argv


@dataclass
class Calibration:
    """What the speed-up model needs, measured with the full draft."""

    a0: float                        # per-token acceptance of the full draft
    draft_ms_per_token: float
    head_share: float                # share of the draft's time spent in its LM head
    target_ms: float                 # a token of the target alone (its forward and its loop's work)
    verify_costs: list[float]        # a verify of gamma + 1 tokens and the loop's work per step, in
                                     # target_ms, gamma = 1..GAMMA_MAX
    gamma: int                       # the gamma the acceptance was measured at
    prompts: int
    where: str
    prefill_ms_target: float | None = None   # mean prefill of the target alone (calibration runs)
    prefill_ms_spec: float | None = None     # mean prefill of target + draft (the draft's own over the prompt)

    @property
    def cost_ratio(self) -> float:
        return self.draft_ms_per_token / self.target_ms


# ---------------------------------------------------------------- the result


def _build(cls, d: dict, **nested: Callable[[Any], Any]):
    """cls from a dict (a stored line or the CLI's JSON): unknown keys ignored, missing ones at their
    default (older lines lack newer fields), the `nested` fields converted."""
    kw = {}
    for f in fields(cls):
        if f.name in d:
            v = d[f.name]
            kw[f.name] = nested[f.name](v) if f.name in nested and v is not None else v
    return cls(**kw)


@dataclass(kw_only=True)
class RunRecord:
    """One (prompt, repeat) run of a method."""

    prompt: int
    repeat: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    accepted_per_step: float | None = None


@dataclass(kw_only=True)
class MethodResult:
    """One method's figures over every (prompt, repeat); the draft ones are None for the target alone."""

    tokens_per_s: float
    tokens_per_s_ci: list[float]
    new_tokens: int = 0
    latency_s: float | None = None
    target_ms_per_step: float | None = None
    prefill_ms: float | None = None
    decode_ms_per_token: float | None = None
    overhead_ms_per_step: float | None = None
    runs: list[RunRecord] = field(default_factory=list)
    accepted_per_step: float | None = None
    accepted_by_position: list[float | None] | None = None
    tokens_per_step: float | None = None
    acceptance_rate: float | None = None        # accepted / drafted tokens
    acceptance: float | None = None             # per-token acceptance, geometric MLE (_acceptance)
    draft_ms_per_step: float | None = None
    draft_ms_per_token: float | None = None
    lm_head_ms_per_token: float | None = None
    lm_head_share: float | None = None
    accepted_per_step_replayed: float | None = None     # vtcore.acceptance over the same prompts' continuation
    accepted_by_position_replayed: list[float | None] | None = None
    tokens_per_step_replayed: float | None = None       # committed tokens / the replay's steps (truncation, EOS)
    # means over every step (what totals, and so the measured tokens/s, add up); the medians above
    # describe a typical step on a noisy machine
    target_ms_per_step_mean: float | None = None
    draft_ms_per_step_mean: float | None = None
    prefill_ms_mean: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> MethodResult:
        return _build(cls, d, runs=lambda rs: [_build(RunRecord, r) for r in rs])


@dataclass(kw_only=True)
class Prediction:
    """The speed-up model fed with what was measured (see `prediction`); the model's figures are
    None when no a0 was measured."""

    a0: float | None
    coverage_k: float
    target_ms_per_token: float | None
    a_trimmed_measured: float | None
    gamma: int
    a_k: float | None = None
    cost_ratio_trimmed: float | None = None
    verify_cost_ratio: float | None = None
    trimmed_vs_target: float | None = None
    trimmed_vs_target_with_verify_cost: float | None = None
    cost_ratio_full: float | None = None
    full_vs_target: float | None = None
    full_vs_target_with_verify_cost: float | None = None
    trimmed_vs_full: float | None = None
    trimmed_vs_full_with_verify_cost: float | None = None
    acceptance_model: str | None = None         # "replay" | "a0*C(k)": what gave the tokens per step
    decode_ms_trimmed: float | None = None      # predicted ms per new token after the prefill (means of the run)
    decode_ms_trimmed_measured: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Prediction:
        return _build(cls, d)


SPEEDUPS = (("trimmed_vs_full", "trimmed", "full"), ("trimmed_vs_target", "trimmed", "target_only"),
            ("full_vs_target", "full", "target_only"))
METHODS = ("target_only", "full", "trimmed")


@dataclass(kw_only=True)
class Measured:
    """One measured set of prompts: each method, the speed-ups (point, interval, verdict) and the
    prediction. `full` is None for an already trimmed draft."""

    target_only: MethodResult
    full: MethodResult | None
    trimmed: MethodResult
    speedup_trimmed_vs_full: float | None = None
    speedup_trimmed_vs_full_ci: list[float] | None = None
    verdict_trimmed_vs_full: str | None = None
    speedup_trimmed_vs_target: float | None = None
    speedup_trimmed_vs_target_ci: list[float] | None = None
    verdict_trimmed_vs_target: str | None = None
    speedup_full_vs_target: float | None = None
    speedup_full_vs_target_ci: list[float] | None = None
    verdict_full_vs_target: str | None = None
    ci_method: str | None = None
    identical_outputs: bool | None = None        # None in sample mode
    prompts: int = 0
    prediction: Prediction | None = None
    replay_over_cap_share: float | None = None   # share of replay records past the cap (counted as rejected)

    def methods(self) -> dict[str, MethodResult]:
        """The methods that ran, in order."""
        return {m: getattr(self, m) for m in METHODS if getattr(self, m) is not None}

    def speedup(self, name: str) -> tuple[float | None, list[float] | None, str | None]:
        """(point, interval, verdict) of a SPEEDUPS name such as "trimmed_vs_target"."""
        return (getattr(self, f"speedup_{name}"), getattr(self, f"speedup_{name}_ci"),
                getattr(self, f"verdict_{name}"))

    _NESTED = {"target_only": MethodResult.from_dict, "full": MethodResult.from_dict,
               "trimmed": MethodResult.from_dict, "prediction": Prediction.from_dict}


@dataclass(kw_only=True)
class OodResult(Measured):
    data: str
    coverage_k: float

    @classmethod
    def from_dict(cls, d: dict) -> OodResult:
        return _build(cls, d, **Measured._NESTED)


# keys a result has only sometimes: left out of its JSON when None (as they always were)
_ABSENT_WHEN_NONE = ("ood", "results_file", "time", "config")


@dataclass(kw_only=True)
class BenchResult(Measured):
    """A finished benchmark: what run_bench returns, the CLI prints as JSON (to_dict), the results
    store holds one per line (with `time` and `config`) and the dashboard reads (from_dict)."""

    device: str
    threads: int | None = None
    dtype: str | None = None
    target: str
    draft: str
    draft_kind: str = "standalone"
    k: int
    vocab_size: int
    draft_vocab_size: int | None = None
    token_map: str | None = None
    coverage_k: float
    ranking: str = "frequency"                  # the ranking the kept set is a prefix of
    k_gamma_chosen_on: str = "a0*C(k)"          # "replay" | "a0*C(k)"
    data: str | None = None
    mode: str = "greedy"
    gamma: int
    gamma_from: str = "given"
    max_new_tokens: int
    repeats: int
    warmup: int = 1
    calibration: Calibration | None = None
    search_predicted_speedup: float | None = None
    search_predicted_speedup_with_prefill: float | None = None   # the same with the calibration's prefills
    predicted_speedup: float | None = None      # prediction.trimmed_vs_target_with_verify_cost
    ood: OodResult | None = None
    sample_output: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    results_file: str | None = None
    time: str | None = None                     # stored runs: when, and the BenchConfig that ran
    config: dict | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if not (k in _ABSENT_WHEN_NONE and v is None)}

    @classmethod
    def from_dict(cls, d: dict) -> BenchResult:
        return _build(cls, d, calibration=_calibration, ood=OodResult.from_dict, **Measured._NESTED)


def _calibration(d: dict) -> Calibration | None:
    try:
        return _build(Calibration, d)
    except TypeError:   # a stored line without one of its fields: the run is still shown
        return None


@dataclass(kw_only=True)
class BenchStopped:
    """What a run stopped by its caller reports (nothing is stored)."""

    device: str
    target: str
    draft: str
    k: int
    stopped: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
