"""Benchmark harness: target alone vs target + full draft vs target + trimmed draft.

Prompts are the held-out rows of a dataset (vtcore.split), rendered with the target's chat
template up to the first assistant turn. Each method runs after a warm-up, several repeats per
prompt; per-prompt medians are aggregated. Greedy outputs of the three methods are compared
token for token. Results are appended to <workspace>/bench/results.jsonl.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from vtcore import models
from vtcore.counts import count_dataset
from vtcore.coverage import k_for_coverage
from vtcore.data import read_dataset
from vtcore.errors import VTError
from vtcore.files import plain_json
from vtcore.formats import read_token_ids
from vtcore.search import Problem, predicted_speedup, solve_exact
from vtcore.split import is_heldout
from vtcore.workspace import repo_root, subdir


@dataclass
class Prompt:
    ids: list[int]
    source: str          # "file:line"
    row: int             # record index in the file (the held-out split's numbering, as in counts)
    domain: str


def default_data() -> Path:
    return repo_root() / "samples" / "code.jsonl"


def prompt_messages(messages: list[dict]) -> list[dict]:
    """The conversation up to (not including) its first assistant turn."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            break
        out.append(m)
    return out


def render_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids the target sees before answering: its own chat template + generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    text = "\n\n".join(m["content"] for m in messages) + "\n\n"
    return tokenizer(text)["input_ids"]


def load_prompts(path: str | Path, tokenizer, heldout: bool = True, limit: int | None = None,
                 max_prompt_tokens: int = 1024) -> list[Prompt]:
    """Prompts from the held-out rows (heldout=True) or the other rows of a dataset, file order."""
    out: list[Prompt] = []
    for conv in read_dataset(path, skip_bad=True):
        row = conv.index
        if is_heldout(row) != heldout:
            continue
        msgs = prompt_messages(conv.messages)
        if not msgs or conv.text is not None:
            continue
        ids = render_prompt(tokenizer, msgs)
        if len(ids) > max_prompt_tokens:
            continue
        out.append(Prompt(ids, conv.source, row, conv.domain))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise VTError(f"{path}: no {'held-out ' if heldout else ''}prompts (rows with a user turn before the "
                      "first assistant turn)")
    return out


# ---------------------------------------------------------------- configuration and models


@dataclass
class BenchConfig:
    target: str | None = None        # None: the embedded SmolLM2-135M-Instruct
    draft: str | None = None         # None: the embedded 2-layer draft (with the default target)
    token_map: str | None = None     # None: the data's top-k at `coverage` (or `k`)
    data: str | None = None          # None: samples/code.jsonl
    ood_data: str | None = None      # optional out-of-domain prompts, measured the same way
    prompts: int = 8
    max_new_tokens: int = 64
    gamma: int = 4
    mode: str = "greedy"
    temperature: float = 1.0
    device: str = "auto"
    k: int | None = None             # default token map: keep exactly k ids, or else
    k_from: str = "search"           # "search": the k vtcore.search's speed-up model picks (calibrated), or
                                     # "coverage": the smallest k reaching `coverage` held out
    min_coverage: float = 0.95       # k_from="search": the coverage constraint C(k) >= this
    coverage: float = 0.99           # k_from="coverage"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    threads: int | None = None       # torch CPU threads (None: torch's default)
    workspace: str | None = None
    save: bool = True                # append to <workspace>/bench/results.jsonl


@dataclass
class Setup:
    target: Any
    tokenizer: Any
    full: Any                        # speculative.Draft over the whole vocabulary (None for an hf-draft)
    trimmed: Any                     # speculative.Draft over the kept ids
    target_name: str
    draft_name: str
    token_map: str                   # where the kept ids came from
    counts: Any = None               # CountsFile of the data (target tokenizer), for C(k)
    notes: list = field(default_factory=list)


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def load_models(cfg: BenchConfig, device, log=None) -> tuple[Any, Any, Any, str, str]:
    """(target, tokenizer, draft, target name, draft name): the embedded pair, or the user's
    models with their tokenizers checked to be the same."""
    from vtcore import speculative

    log = log or (lambda msg: None)
    default_target = cfg.target is None or str(cfg.target).lower() in models.DEFAULT_NAMES
    if cfg.draft is None:
        if not default_target:
            raise VTError(f"--target {cfg.target} needs --draft: the embedded draft belongs to SmolLM2-135M-Instruct")
        target_dir = models.default_target_dir(cfg.workspace, log)
        target = models.load_model(target_dir, device)
        draft_model = models.build_default_draft(target)
        tok = models.load_tokenizer_from(target_dir)
        draft = speculative.make_draft(draft_model, name=models.DEFAULT_DRAFT)
        return target, tok, draft, models.DEFAULT_TARGET, models.DEFAULT_DRAFT
    target_dir = Path(models.resolve_model(cfg.target, cfg.workspace))
    target = models.load_model(target_dir, device)
    tok = models.load_tokenizer_from(target_dir)
    draft_dir = Path(models.resolve_model(cfg.draft, cfg.workspace))
    if not _has_tokenizer(draft_dir):
        raise VTError(f"{draft_dir}: the draft has no tokenizer files, so it cannot be checked against the "
                      "target's; copy the tokenizer it was trained with into that directory")
    models.check_same_tokenizer(models.load_tokenizer_from(draft_dir), tok, f"draft {cfg.draft}",
                                f"target {cfg.target or models.DEFAULT_TARGET}")
    V = int(target.get_output_embeddings().weight.shape[0])
    draft = speculative.load_draft(draft_dir, device, vocab_size=V)
    tname = models.DEFAULT_TARGET if default_target else str(cfg.target)
    return target, tok, draft, tname, str(cfg.draft)


def count_data(path: str | Path, tokenizer, workspace=None):
    """Assistant-token counts of the data with the target's tokenizer (cached by vtcore.counts)."""
    cf, _ = count_dataset([str(path)], tokenizer=tokenizer, workspace=workspace)
    return cf


def default_kept_ids(cf, k: int | None, coverage: float, extra_keep=()) -> tuple[Any, int, str]:
    """Kept ids from the data's ranking (fit rows, so held-out prompts stay unseen): exactly k
    (given, or picked by search_k), or the smallest k whose held-out coverage reaches `coverage`."""
    cov = cf.coverage(extra_keep=list(extra_keep))
    if k is None:
        k = k_for_coverage(cov.curve("heldout"), coverage)
        how = f"smallest k with held-out coverage >= {coverage}"
    else:
        if not 1 <= k <= cov.vocab_size:
            raise VTError(f"--k must be between 1 and {cov.vocab_size}, got {k}")
        how = f"k = {k} given"
    return cov.kept("heldout", k), int(k), how


def kept_coverage(cf, kept) -> float:
    """Share of the data's held-out assistant tokens (all tokens when none are held out) in `kept`."""
    import numpy as np

    counts = cf.counts_heldout if int(cf.counts_heldout.sum()) > 0 else cf.counts
    kept = np.asarray(kept, dtype=np.int64)
    kept = kept[kept < counts.shape[0]]
    return float(counts[kept].sum() / max(int(counts.sum()), 1))


def prepare(cfg: BenchConfig, log=None) -> Setup:
    """Load models, build the trimmed draft and count the data: everything before timing."""
    import torch

    from vtcore import speculative

    log = log or (lambda msg: None)
    device, note = models.pick_device(cfg.device)
    notes = [note] if note else []
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    target, tok, draft, tname, dname = load_models(cfg, device, log)
    data = cfg.data or default_data()
    cf = count_data(data, tok, cfg.workspace)
    keep_always = eos_ids(target, tok)
    if draft.trimmed:  # an hf-draft directory is already trimmed; there is no full head to compare
        if cfg.token_map:
            raise VTError(f"{cfg.draft} is already trimmed; do not pass --token-map too")
        full, trimmed, source = None, draft, f"{cfg.draft} (d2t)"
        notes.append("the draft is an hf-draft (trimmed head only): no full-vocabulary draft to compare")
    elif cfg.token_map:
        kept = read_token_ids(cfg.token_map)
        full, trimmed, source = draft, speculative.make_draft(draft.model, kept, name=f"{dname} @ token map"), str(cfg.token_map)
    else:
        k_pick, how = cfg.k, None
        if cfg.k is None and cfg.k_from == "search":
            k_pick, how = search_k(cfg, target, tok, draft, cf, keep_always)
        elif cfg.k_from not in ("coverage", "search"):
            raise VTError(f"--k-from must be 'coverage' or 'search', got {cfg.k_from!r}")
        kept, k, how0 = default_kept_ids(cf, k_pick, cfg.coverage, keep_always)
        how = how or how0
        full = draft
        trimmed = speculative.make_draft(draft.model, kept, name=f"{dname} @ k={k}")
        source = f"{Path(data).name}: {how}"
    missing = [i for i in keep_always if int(i) not in set(trimmed.kept.tolist())]
    if missing:
        notes.append(f"the token map does not keep EOS id(s) {missing}: the trimmed draft can never propose them")
    return Setup(target, tok, full, trimmed, tname, dname, source, cf, notes)


def search_k(cfg: BenchConfig, target, tok, draft, cf, keep_always) -> tuple[int, str]:
    """k from vtcore.search's exact speed-up optimum, fed with a measured calibration: the full
    draft's acceptance a0, its cost ratio c = draft ms per token / target ms per token, and its
    LM-head share s, on two held-out prompts that the benchmark itself does not use (a draft may
    have been trained on the other rows, as the default one was: its a0 there would be too high).
    The latency model is linear in k: t_draft(k) = t_draft(V) (1 - s (1 - k/V))."""
    import numpy as np

    from vtcore import speculative as sp

    data = cfg.data or default_data()
    prompts = load_prompts(data, tok, heldout=True, limit=cfg.prompts + 2)[cfg.prompts:]
    where = "held-out prompts not benchmarked"
    if not prompts:
        prompts = load_prompts(data, tok, heldout=False, limit=2)
        where = "non-held-out prompts (too few held-out rows to spare)"
    c = sp.SpecConfig(gamma=cfg.gamma, max_new_tokens=cfg.max_new_tokens, eos_ids=keep_always)
    short = sp.SpecConfig(gamma=cfg.gamma, max_new_tokens=8, eos_ids=keep_always)
    sp.target_generate(target, prompts[0].ids, short)          # warm-up
    sp.speculative_generate(target, draft, prompts[0].ids, short)
    t_runs = [sp.target_generate(target, p.ids, c).stats for p in prompts]
    f_runs = [sp.speculative_generate(target, draft, p.ids, c).stats for p in prompts]
    a0 = _acceptance(f_runs)
    if not a0:
        raise VTError("--k-from search: the full draft accepted no token in calibration (a0 = 0); "
                      "pass --k or use --k-from coverage")
    t_target = _median([x for s in t_runs for x in s.target_s])
    per_token = [(d / g, h / g) for s in f_runs for d, h, g in zip(s.draft_s, s.head_s, s.drafted) if g]
    c_full = _median([d for d, _ in per_token]) / t_target
    share = _median([h / d for d, h in per_token if d > 0])
    cov = cf.coverage(extra_keep=list(keep_always))
    C = cov.curve("heldout")
    V = C.shape[0] - 1
    R = share * (1.0 - np.arange(V + 1) / V)
    best = solve_exact(Problem(coverage=C, reduction=R, objective="speedup", a0=a0, cost_ratio_full=c_full,
                               gamma_min=cfg.gamma, gamma_max=cfg.gamma, min_coverage=cfg.min_coverage,
                               k_min=max(len(cov.always_keep), 1), latency_source="measured"))
    return best.best_k, (f"vtcore.search speed-up optimum at C(k) >= {cfg.min_coverage} (calibrated on {len(prompts)} "
                         f"{where}: a0 {a0:.3f}, c {c_full:.3f}, head share {share:.2f}; predicted {best.speedup:.2f}x)")


# ---------------------------------------------------------------- measuring


def _median(xs) -> float:
    from statistics import median

    return median(xs)


def _acceptance(stats_list) -> float | None:
    """Per-token acceptance, geometric MLE: accepted / (accepted + rejections)."""
    acc = sum(sum(s.accepted) for s in stats_list)
    rej = sum(sum(1 for n, g in zip(s.accepted, s.drafted) if n < g) for s in stats_list)
    return acc / (acc + rej) if acc + rej else None


def _aggregate(runs: dict[int, list], method: str) -> dict:
    """Per-prompt medians over repeats, then totals over prompts."""
    from statistics import median

    stats = [s for reps in runs.values() for s in reps]
    walls = {p: median(s.wall_s for s in reps) for p, reps in runs.items()}
    tokens = {p: median(s.new_tokens for s in reps) for p, reps in runs.items()}
    draft_steps = [x for s in stats for x in s.draft_s]
    target_steps = [x for s in stats for x in s.target_s]
    drafted = sum(sum(s.drafted) for s in stats)
    # medians over steps: a busy shared CPU adds rare, long stalls that would swamp a mean
    per_token = [(d / g, h / g) for s in stats for d, h, g in zip(s.draft_s, s.head_s, s.drafted) if g]
    out = {
        "tokens_per_s": sum(tokens.values()) / sum(walls.values()),
        "latency_s": median(walls.values()),
        "new_tokens": sum(tokens.values()),
        "target_ms_per_step": 1000 * median(target_steps),
        "prefill_ms": 1000 * median(s.prefill_s for s in stats),
        "runs": len(stats),
    }
    if method != "target_only":
        steps = sum(s.steps for s in stats)
        out.update({
            "accepted_per_step": sum(sum(s.accepted) for s in stats) / steps,
            "tokens_per_step": sum(s.new_tokens for s in stats) / steps,
            "acceptance_rate": sum(sum(s.accepted) for s in stats) / max(drafted, 1),
            "acceptance": _acceptance(stats),
            "draft_ms_per_step": 1000 * median(draft_steps),
            "draft_ms_per_token": 1000 * median(d for d, _ in per_token) if per_token else None,
            "lm_head_ms_per_token": 1000 * median(h for _, h in per_token) if per_token else None,
            "lm_head_share": median(h / d for d, h in per_token if d > 0) if per_token else None,
        })
    return out


def measure(setup: Setup, prompts: list[Prompt], cfg: BenchConfig, progress, should_stop, done: list,
            total: int) -> dict | None:
    """Run the three methods over `prompts`, interleaved per repeat so load drifts hit all alike."""
    from vtcore import speculative as sp

    eos = eos_ids(setup.target, setup.tokenizer)
    methods = [("target_only", None), ("full", setup.full), ("trimmed", setup.trimmed)]
    methods = [(m, d) for m, d in methods if m == "target_only" or d is not None]

    def run(method, draft, ids, max_new, seed):
        c = sp.SpecConfig(gamma=cfg.gamma, max_new_tokens=max_new, mode=cfg.mode, temperature=cfg.temperature,
                          seed=seed, eos_ids=eos)
        if draft is None:
            return sp.target_generate(setup.target, ids, c)
        return sp.speculative_generate(setup.target, draft, ids, c, should_stop=should_stop)

    for _ in range(cfg.warmup):  # first calls pay for allocation and kernel selection
        for m, d in methods:
            run(m, d, prompts[0].ids, min(16, cfg.max_new_tokens), cfg.seed)
            done[0] += 1
            progress(done[0] / total, f"warm-up {m}")
    runs = {m: {} for m, _ in methods}
    outputs = {m: {} for m, _ in methods}
    for pi, p in enumerate(prompts):
        for r in range(cfg.repeats):
            for m, d in methods:
                if should_stop():
                    return None
                res = run(m, d, p.ids, cfg.max_new_tokens, cfg.seed + pi)
                runs[m].setdefault(pi, []).append(res.stats)
                outputs[m].setdefault(pi, []).append(res.tokens)
                done[0] += 1
                progress(done[0] / total, f"prompt {pi + 1}/{len(prompts)} repeat {r + 1} {m}: "
                                          f"{res.stats.tokens_per_s:.1f} tok/s")
    out = {m: _aggregate(runs[m], m) for m, _ in methods}
    if cfg.mode == "greedy":
        ref = outputs["target_only"]
        out["identical_outputs"] = all(o == ref[pi][0] for m, _ in methods for pi, outs in outputs[m].items()
                                       for o in outs)
    else:
        out["identical_outputs"] = None  # samples differ run to run; the distribution is tested in tests/
    out["prompts"] = len(prompts)
    out["sample_output"] = setup.tokenizer.decode(outputs["target_only"][0][0])
    return out


def _speedups(res: dict) -> dict:
    t = res["target_only"]["tokens_per_s"]
    full = res.get("full")
    trim = res["trimmed"]["tokens_per_s"]
    return {"speedup_trimmed_vs_full": trim / full["tokens_per_s"] if full else None,
            "speedup_trimmed_vs_target": trim / t,
            "speedup_full_vs_target": full["tokens_per_s"] / t if full else None}


def prediction(res: dict, gamma: int, coverage_k: float, a0_override: float | None = None) -> dict:
    """The search module's speed-up model fed with what was measured: a0 (full draft), a(k) =
    a0 C(k), c = draft ms per token / target ms per one-token step. Also the same model with
    the measured verify cost (a (gamma+1)-token target forward is not free on a CPU)."""
    t1 = res["target_only"]["target_ms_per_step"]
    full, trim = res.get("full"), res["trimmed"]
    a0 = a0_override if a0_override is not None else (full["acceptance"] if full else None)
    out = {"a0": a0, "coverage_k": coverage_k, "target_ms_per_token": t1,
           "a_trimmed_measured": trim["acceptance"], "gamma": gamma}
    if a0 is None:
        return out
    a_k = a0 * coverage_k
    c_full = full["draft_ms_per_token"] / t1 if full else None
    c_trim = trim["draft_ms_per_token"] / t1
    verify = trim["target_ms_per_step"] / t1

    def speedup(a: float, c: float, verify_cost: float = 1.0) -> float:
        return float(predicted_speedup(a, gamma, c, verify_cost))

    out.update({
        "a_k": a_k, "cost_ratio_full": c_full, "cost_ratio_trimmed": c_trim, "verify_cost_ratio": verify,
        "full_vs_target": speedup(a0, c_full) if full else None,
        "trimmed_vs_target": speedup(a_k, c_trim),
        "trimmed_vs_target_with_verify_cost": speedup(a_k, c_trim, verify),
        "full_vs_target_with_verify_cost": speedup(a0, c_full, verify) if full else None,
    })
    if full:
        out["trimmed_vs_full"] = out["trimmed_vs_target"] / out["full_vs_target"]
    return out


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def run_bench(cfg: BenchConfig, progress: Callable[[float, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None, log=None) -> dict:
    """Benchmark target alone, target + full draft and target + trimmed draft (see module doc).
    `progress(frac, text)` and `should_stop()` let a background thread report and be stopped."""
    import torch

    from vtcore.speculative import SpecConfig

    SpecConfig(gamma=cfg.gamma, max_new_tokens=cfg.max_new_tokens, mode=cfg.mode, temperature=cfg.temperature)
    if cfg.prompts < 1 or cfg.repeats < 1 or cfg.warmup < 0:
        raise VTError("--prompts and --repeats must be >= 1, --warmup >= 0")
    progress = progress or (lambda frac, text="": None)
    should_stop = should_stop or (lambda: False)
    t0 = time.perf_counter()
    progress(0.0, "loading models")
    setup = prepare(cfg, log)
    device = setup.target.get_output_embeddings().weight.device
    data = cfg.data or default_data()
    prompts = load_prompts(data, setup.tokenizer, heldout=True, limit=cfg.prompts)
    ood = load_prompts(cfg.ood_data, setup.tokenizer, heldout=True, limit=cfg.prompts) if cfg.ood_data else []
    n_methods = 3 if setup.full is not None else 2
    total = n_methods * (cfg.warmup + cfg.repeats * (len(prompts) + len(ood)))
    done = [0]
    res = measure(setup, prompts, cfg, progress, should_stop, done, total)
    if res is None:
        return {"stopped": True, "device": _device_name(device), "target": setup.target_name,
                "draft": setup.draft_name, "k": setup.trimmed.k}
    c_k = kept_coverage(setup.counts, setup.trimmed.kept.tolist())
    result = {
        "device": _device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "dtype": str(setup.target.dtype).replace("torch.", ""),
        "target": setup.target_name, "draft": setup.draft_name,
        "k": setup.trimmed.k, "vocab_size": int(setup.target.get_output_embeddings().weight.shape[0]),
        "token_map": setup.token_map, "coverage_k": c_k,
        "data": str(data), "prompts": res.pop("prompts"), "mode": cfg.mode, "gamma": cfg.gamma,
        "max_new_tokens": cfg.max_new_tokens, "repeats": cfg.repeats, "warmup": cfg.warmup,
        "target_only": res["target_only"], "full": res.get("full"), "trimmed": res["trimmed"],
        **_speedups(res),
        "identical_outputs": res["identical_outputs"],
    }
    pred = prediction(res, cfg.gamma, c_k)
    result["predicted_speedup"] = pred.get("trimmed_vs_target")
    result["prediction"] = pred
    if ood:
        o = measure(setup, ood, cfg, progress, should_stop, done, total)
        if o is not None:
            c_ood = kept_coverage(count_data(cfg.ood_data, setup.tokenizer, cfg.workspace), setup.trimmed.kept.tolist())
            result["ood"] = {"data": str(cfg.ood_data), "prompts": o.pop("prompts"), "coverage_k": c_ood,
                             "target_only": o["target_only"], "full": o.get("full"), "trimmed": o["trimmed"],
                             **_speedups(o), "identical_outputs": o["identical_outputs"],
                             "prediction": prediction(o, cfg.gamma, c_ood)}
    result["sample_output"] = res["sample_output"][:300]
    result["notes"] = setup.notes
    result["seconds"] = time.perf_counter() - t0
    progress(1.0, "done")
    if cfg.save:
        result["results_file"] = str(append_result(cfg, result))
    return result


def results_path(workspace=None) -> Path:
    return subdir("bench", workspace) / "results.jsonl"


def append_result(cfg: BenchConfig, result: dict) -> Path:
    """One JSON line per run, so runs compare across sessions (appends are atomic enough for
    one writer: a single write of one line)."""
    path = results_path(cfg.workspace)
    line = json.dumps(plain_json({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg), **result}))
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return path


def load_results(workspace=None) -> list[dict]:
    """Every stored run, oldest first; unreadable lines are skipped."""
    path = results_path(workspace)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
