"""Benchmark harness: target alone vs target + full draft vs target + trimmed draft.

Drafts are EAGLE-3 heads (vtcore.eagle3: they read the target's hidden states; the SpecForge /
SGLang and the speculators layouts) or standalone draft LMs; the kind is read from the
checkpoint. The default pair is SmolLM2-135M-Instruct with its EAGLE-3 head
(weights/smollm2-135m-eagle3); `--draft smollm2-135m-2l-draft` is its standalone 2-layer draft.
The trimmed draft keeps k ids: an EAGLE-3 head is sub-trimmed to rows of its own vocabulary.

k and gamma come from vtcore.search's speed-up model fed with a calibration of the full draft on
held-out prompts the benchmark does not measure: its per-token acceptance a0, its cost per
drafted token and LM-head share, and the target's verify cost for gamma + 1 tokens, measured
for every gamma. --k and --gamma fix them.

Prompts are the held-out rows of a dataset (vtcore.split), rendered with the target's chat
template up to the first assistant turn. The three methods run interleaved per (prompt, repeat)
after a warm-up; every figure carries an interval (vtcore.spread). Greedy outputs are compared
token for token. Results are appended to <workspace>/bench/results.jsonl.
"""

from __future__ import annotations

import json
import time
from statistics import median
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vtcore import acceptance, checkpoints, eagle3, models, speculative, spread
from vtcore.counts import count_dataset
from vtcore.coverage import k_for_coverage
from vtcore.data import read_dataset
from vtcore.errors import VTError
from vtcore.benchtypes import (GAMMA_MAX, SPEEDUPS, BenchConfig, BenchResult, BenchStopped, Calibration,
                               MethodResult, OodResult, Prediction, RunRecord)
from vtcore.files import plain_json
from vtcore.formats import read_config, read_token_ids
from vtcore.search import Problem, predicted_speedup, solve_exact
from vtcore.selection import ChosenIds, of_ids
from vtcore.split import is_heldout
from vtcore.validate import check_eagle3_dir
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


MAX_PROMPT_TOKENS = 1024   # a longer prompt is skipped (load_prompts)


def load_prompts(path: str | Path, tokenizer, heldout: bool = True, limit: int | None = None,
                 max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list[Prompt]:
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


def measured_prompts(data: str | Path, tokenizer, n: int, notes: list[str]) -> list[Prompt]:
    """The first `n` held-out prompts of `data` (load_prompts); when it has fewer, a note saying
    how many will run goes to `notes` (the run's human output and JSON): never silently fewer."""
    prompts = load_prompts(data, tokenizer, heldout=True, limit=n)
    if len(prompts) < n:
        notes.append(f"--prompts {n:,}: {data} has {len(prompts):,} usable held-out prompt(s) (a user turn first, "
                     f"at most {MAX_PROMPT_TOKENS:,} tokens); ran {len(prompts):,}")
    return prompts


# ---------------------------------------------------------------- configuration and models

CALIBRATION_PROMPTS = 2


@dataclass
class Setup:
    target: Any
    tokenizer: Any
    full: Any                        # the full-vocabulary draft (None for an already trimmed one)
    trimmed: Any                     # the draft over the kept ids
    kind: str                        # "eagle3" | "standalone"
    target_name: str
    draft_name: str
    token_map: str                   # where the kept ids came from
    gamma: int
    gamma_from: str                  # "search" | "given" | "default"
    counts: Any = None               # CountsFile of the data (target tokenizer), for C(k)
    calibration: Calibration | None = None
    predicted: float | None = None   # the search's predicted speed-up at (k, gamma)
    notes: list = field(default_factory=list)
    ranking: str = "frequency"       # the ranking the kept set is a prefix of
    acceptance_model: str = "a0*C(k)"   # what k and gamma were chosen on: "replay" | "a0*C(k)"


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


def _is_default(name: str | None, names: set[str]) -> bool:
    return name is not None and str(name).lower() in names


def load_models(cfg: BenchConfig, device, log=None) -> tuple[Any, Any, Any, str, str, str]:
    """(target, tokenizer, draft, target name, draft name, draft kind): the embedded pair, or the
    user's models (a standalone draft's tokenizer checked to be the target's; an EAGLE-3 head's
    vocabulary to be the target's)."""
    log = log or (lambda msg: None)
    default_target = cfg.target is None or str(cfg.target).lower() in models.DEFAULT_NAMES
    if cfg.draft is None or _is_default(cfg.draft, models.EAGLE3_NAMES | models.STANDALONE_NAMES):
        if not default_target:
            raise VTError(f"--target {cfg.target} needs --draft: the embedded drafts belong to SmolLM2-135M-Instruct")
        target_dir = models.default_target_dir(cfg.workspace, log)
        target = models.load_model(target_dir, device)
        tok = models.load_tokenizer_from(target_dir)
        if _is_default(cfg.draft, models.STANDALONE_NAMES):
            draft = speculative.make_draft(models.build_default_draft(target), name=models.DEFAULT_DRAFT)
            return target, tok, draft, models.DEFAULT_TARGET, models.DEFAULT_DRAFT, "standalone"
        return target, tok, eagle3.build_default_eagle3(target), models.DEFAULT_TARGET, models.DEFAULT_EAGLE3, "eagle3"
    target_dir = Path(models.resolve_model(cfg.target, cfg.workspace))
    draft_dir = Path(models.resolve_model(cfg.draft, cfg.workspace))
    if checkpoints.is_eagle3_checkpoint(draft_dir):   # the checks export and validate make, before the target loads
        check_eagle3_dir(draft_dir)
    check_context(cfg, read_config(target_dir))   # before the weights load
    target = models.load_model(target_dir, device)
    tok = models.load_tokenizer_from(target_dir)
    tname = models.DEFAULT_TARGET if default_target else str(cfg.target)
    V = int(target.get_output_embeddings().weight.shape[0])
    if checkpoints.is_eagle3_checkpoint(draft_dir):
        draft = eagle3.load_eagle3(draft_dir, device, target.dtype, target=target)
        if draft.cfg.vocab_size != V:
            raise VTError(f"{cfg.draft}: the EAGLE-3 head is for a {draft.cfg.vocab_size:,}-token vocabulary, "
                          f"the target has {V:,}")
        return target, tok, draft, tname, str(cfg.draft), "eagle3"
    if not _has_tokenizer(draft_dir):
        raise VTError(f"{draft_dir}: the draft has no tokenizer files, so it cannot be checked against the "
                      "target's; copy the tokenizer it was trained with into that directory")
    models.check_same_tokenizer(models.load_tokenizer_from(draft_dir), tok, f"draft {cfg.draft}", f"target {tname}")
    return target, tok, speculative.load_draft(draft_dir, device, vocab_size=V), tname, str(cfg.draft), "standalone"


def count_data(path: str | Path, tokenizer, workspace=None):
    """Assistant-token counts of the data with the target's tokenizer (cached by vtcore.counts)."""
    cf, _ = count_dataset([str(path)], tokenizer=tokenizer, workspace=workspace)
    return cf


def proposable_ids(draft) -> np.ndarray | None:
    """Target ids the draft's head scores (None: every id)."""
    if isinstance(draft, eagle3.Eagle3Draft):
        return draft.head_target_ids.cpu().numpy()
    return None if draft.kept is None else draft.kept.cpu().numpy()


def trim(draft, kept):
    """The draft over the kept ids: an EAGLE-3 head sub-trimmed, a standalone head cut."""
    if isinstance(draft, eagle3.Eagle3Draft):
        return eagle3.subtrim(draft, kept)
    return speculative.make_draft(draft.model, kept, name=f"{draft.name} @ k={len(kept)}")


def _measured_counts(cf) -> np.ndarray:
    """The counts coverage is measured on: the held-out rows' (all rows' when none are held out)."""
    return cf.counts_heldout if int(cf.counts_heldout.sum()) > 0 else cf.counts


def ranking(cf, keep, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The fit rows' ranking (held-out prompts stay unseen), restricted to the ids the draft can
    propose, and its held-out coverage C(k) for k = 0..len(ranking)."""
    order = cf.coverage(extra_keep=list(keep)).order("heldout")
    if allowed is not None:
        mask = np.zeros(order.size, dtype=bool)
        allowed = np.asarray(allowed)
        mask[allowed[allowed < order.size]] = True
        order = order[mask[order]]
    counts = _measured_counts(cf)
    return order, np.concatenate([[0.0], np.cumsum(counts[order]) / max(int(counts.sum()), 1)])


def kept_coverage(cf, kept) -> float:
    """Share of the data's held-out assistant tokens (all tokens when none are held out) in `kept`."""
    counts = _measured_counts(cf)
    kept = np.asarray(kept, dtype=np.int64)
    kept = kept[kept < counts.shape[0]]
    return float(counts[kept].sum() / max(int(counts.sum()), 1))


# ---------------------------------------------------------------- calibration and the search


def calibrate(cfg: BenchConfig, target, tok, draft, eos: tuple[int, ...]) -> Calibration:
    """The full draft's acceptance and costs and the target's verify costs, on held-out prompts
    the benchmark does not measure (a draft may have been trained on the other rows, as the
    default ones were: its acceptance there would be too high)."""
    data = cfg.data or default_data()
    prompts = load_prompts(data, tok, heldout=True, limit=cfg.prompts + CALIBRATION_PROMPTS)[cfg.prompts:]
    where = "held-out prompts not benchmarked"
    if not prompts:
        prompts = load_prompts(data, tok, heldout=False, limit=CALIBRATION_PROMPTS)
        where = "non-held-out prompts (too few held-out rows to spare)"
    gamma = cfg.gamma or 4
    c = speculative.SpecConfig(gamma=gamma, max_new_tokens=cfg.max_new_tokens, eos_ids=eos)
    short = speculative.SpecConfig(gamma=gamma, max_new_tokens=8, eos_ids=eos)
    speculative.target_generate(target, prompts[0].ids, short)          # warm-up
    speculative.speculative_generate(target, draft, prompts[0].ids, short)
    t_runs = [speculative.target_generate(target, p.ids, c).stats for p in prompts]
    f_runs = [speculative.speculative_generate(target, draft, p.ids, c).stats for p in prompts]
    a0 = _acceptance(f_runs)
    if not a0:
        raise VTError("the full draft accepted no token in calibration (a0 = 0); pass --k and --gamma, "
                      "or use --k-from coverage with --gamma")
    # means over every drafted token (the totals a run's time adds up), not medians over steps
    drafted = max(sum(sum(s.drafted) for s in f_runs), 1)
    draft_ms = 1000 * sum(sum(s.draft_s) for s in f_runs) / drafted
    head_share = sum(sum(s.head_s) for s in f_runs) / max(sum(sum(s.draft_s) for s in f_runs), 1e-12)
    aux_ids = tuple(draft.aux_ids) if isinstance(draft, eagle3.Eagle3Draft) else None
    ratios = speculative.verify_ratios(target, prompts[0].ids, GAMMA_MAX + 1, aux_ids=aux_ids)
    # the unit is a token of the target alone, its loop's own work included; a speculative step
    # costs its verify (the measured one-token forward times the verify's ratio to it) plus the
    # loop's work around it (measured, the same at every gamma)
    t_token = decode_ms_per_token(t_runs)
    t_forward = 1000 * sum(sum(s.target_s) for s in t_runs) / sum(s.steps for s in t_runs)
    overhead = overhead_ms_per_step(f_runs)
    return Calibration(a0=a0, draft_ms_per_token=draft_ms, head_share=head_share, target_ms=t_token,
                       verify_costs=[(r * t_forward + overhead) / t_token for r in ratios[1:]], gamma=gamma,
                       prompts=len(prompts), where=where,
                       prefill_ms_target=1000 * sum(s.prefill_s for s in t_runs) / len(t_runs),
                       prefill_ms_spec=1000 * sum(s.prefill_s for s in f_runs) / len(f_runs))


def with_prefill(cal: Calibration | None, decode_speedup: float | None, new_tokens: float) -> float | None:
    """A decode-only predicted speed-up (the search's) turned into the whole run's, as measured:
    (P_target + n) / (P_spec + n / S) in tokens of the target alone, with the calibration's mean
    prefills (the speculative one includes the draft's own pass over the prompt)."""
    if cal is None or decode_speedup is None or cal.prefill_ms_target is None or not decode_speedup > 0:
        return None
    t = cal.target_ms
    return (cal.prefill_ms_target / t + new_tokens) / (cal.prefill_ms_spec / t + new_tokens / decode_speedup)


def search_k_gamma(cfg: BenchConfig, cal: Calibration, C: np.ndarray, n_keep: int,
                   table: np.ndarray | None = None) -> tuple[int, int, float]:
    """(k, gamma, predicted speed-up): vtcore.search's exact speed-up optimum at C(k) >= min_coverage,
    the draft's time linear in k (t(k) = t(N) (1 - s (1 - k/N)), s its head share) and the verify
    cost measured for every gamma. A given --gamma fixes gamma. With a replayed acceptance table
    (vtcore.acceptance) the tokens per step are 1 + A(k, gamma) and no coverage constraint applies."""
    N = C.shape[0] - 1
    gammas = (cfg.gamma, cfg.gamma) if cfg.gamma else (1, GAMMA_MAX)
    best = solve_exact(Problem(coverage=C, reduction=cal.head_share * (1.0 - np.arange(N + 1) / N),
                               objective="speedup", a0=cal.a0, cost_ratio_full=cal.cost_ratio,
                               verify_costs=tuple(cal.verify_costs), gamma_min=gammas[0], gamma_max=gammas[1],
                               min_coverage=cfg.min_coverage if table is None else 0.0, k_min=max(n_keep, 1),
                               latency_source="measured", accepted=table,
                               acceptance_source=None if table is None else "replay"))
    return best.best_k, best.best_gamma, float(best.speedup)


def best_gamma_at(cal: Calibration, coverage_k: float, k: int, N: int) -> tuple[int, float]:
    """The speed-up model's best gamma for a fixed token set of k ids covering coverage_k."""
    gammas = np.arange(1, GAMMA_MAX + 1)
    c = cal.cost_ratio * (1.0 - cal.head_share * (1.0 - k / N))
    S = predicted_speedup(cal.a0 * coverage_k, gammas, c, np.asarray(cal.verify_costs))
    i = int(np.argmax(S))
    return int(gammas[i]), float(S[i])


def choose_tokens(cfg: BenchConfig, cf, keep: tuple[int, ...], allowed: np.ndarray | None,
                  cal: Calibration | None, data: str | Path, target=None, tok=None, draft=None,
                  notes: list | None = None) -> ChosenIds:
    """The kept ids: a given token map, a given k, the search's speed-up optimum (on the replayed
    A(k, gamma) by default, else a0 C(k)), or the smallest k whose held-out coverage meets
    min_coverage; a prefix of the frequency or the acceptance-aware ranking of the ids the draft
    can propose. The ChosenIds' curve names the ranking (frequency | acceptance | token map) and
    its `how` says where the ids came from."""
    if cfg.token_map:
        return of_ids(cf, np.asarray(read_token_ids(cfg.token_map)), "token map", str(cfg.token_map))
    notes = notes if notes is not None else []
    order, C = ranking(cf, keep, allowed)
    replayed = _replay_mode(cfg, notes)
    if cfg.ranking == "acceptance":
        order, C = acceptance_order(cfg, target, tok, draft, keep, allowed, cf)
    if cfg.k is None and C[-1] < cfg.min_coverage and not (replayed and cfg.k_from == "search"):
        raise VTError(f"the draft's {order.size:,}-token vocabulary covers at most {C[-1]:.4f} of the held-out "
                      f"tokens, below --min-coverage {cfg.min_coverage}")
    gamma = predicted = None
    chosen_on = "a0*C(k)"
    if cfg.k is not None:
        if not 1 <= cfg.k <= order.size:
            raise VTError(f"--k must be between 1 and {order.size} (the ids the draft can propose), got {cfg.k}")
        k, how = cfg.k, f"k = {cfg.k} given"
    elif cfg.k_from == "search" and replayed:
        table = calibration_table(cfg, target, tok, draft, keep, order)
        k, gamma, predicted = search_k_gamma(cfg, cal, C, len(keep), table)
        chosen_on = "replay"
        how = (f"vtcore.search speed-up optimum on the replayed A(k, gamma) of {cfg.ranking}-ranked sets "
               f"(replay over held-out prompts not benchmarked; costs calibrated on {cal.prompts} {cal.where})")
    elif cfg.k_from == "search":
        k, gamma, predicted = search_k_gamma(cfg, cal, C, len(keep))
        how = (f"vtcore.search speed-up optimum at held-out C(k) >= {cfg.min_coverage} (calibrated on "
               f"{cal.prompts} {cal.where}: a0 {cal.a0:.3f}, c {cal.cost_ratio:.3f}, head share "
               f"{cal.head_share:.2f}, verify cost at gamma {gamma} {cal.verify_costs[gamma - 1]:.2f})")
    else:
        k = max(k_for_coverage(C, cfg.min_coverage), len(keep), 1)
        how = f"smallest k with held-out coverage >= {cfg.min_coverage}"
    chosen = of_ids(cf, order[:k], cfg.ranking, f"{Path(data).name}: {how}", float(C[k]), list(keep))
    chosen.gamma, chosen.predicted_speedup, chosen.chosen_on = gamma, predicted, chosen_on
    return chosen


def choose_gamma(cfg: BenchConfig, cal: Calibration | None, cf, tokens: ChosenIds,
                 N: int) -> tuple[int, str, float | None]:
    """(gamma, where it came from, predicted speed-up): given, the search's (with k), or the speed-up
    model's best for the chosen token set; 4 when nothing was calibrated."""
    if cfg.gamma is not None:
        return cfg.gamma, "given", tokens.predicted_speedup
    if tokens.gamma is not None:
        return tokens.gamma, "search", tokens.predicted_speedup
    if cal is None:
        return 4, "default", None
    gamma, predicted = best_gamma_at(cal, kept_coverage(cf, tokens.ids), tokens.k, N)
    return gamma, "search", predicted


def check_context(cfg: BenchConfig, target_config: dict) -> None:
    """--max-new-tokens must fit the target's context (its max_position_embeddings)."""
    text = target_config.get("text_config") if isinstance(target_config.get("text_config"), dict) else target_config
    context = text.get("max_position_embeddings")
    if isinstance(context, int) and cfg.max_new_tokens >= context:
        raise VTError(f"--max-new-tokens {cfg.max_new_tokens:,} is past the target's context of {context:,} tokens")
# ---------------------------------------------------------------- the acceptance replay (vtcore.acceptance)

REPLAY_CALIBRATION_PROMPTS = 8   # held-out prompts after the measured ones, replayed to choose k and gamma
REPLAY_CAP = 256                 # ids recorded above the target's token (more: counted as rejected)


def _replay_mode(cfg: BenchConfig, notes: list) -> bool:
    """Whether k and gamma are chosen on the replayed A(k, gamma): greedy only (the replay does
    not model sampling)."""
    if cfg.acceptance_model not in ("replay", "a0"):
        raise VTError(f"--acceptance-model must be 'replay' or 'a0', got {cfg.acceptance_model!r}")
    if cfg.ranking not in ("frequency", "acceptance"):
        raise VTError(f"--ranking must be 'frequency' or 'acceptance', got {cfg.ranking!r}")
    if cfg.acceptance_model == "replay" and cfg.mode != "greedy":
        notes.append("the acceptance replay is greedy-only: in sample mode k and gamma come from a0 * C(k)")
        return False
    return cfg.acceptance_model == "replay"


def _replay(cfg: BenchConfig, target, tok, draft, prompts: list[Prompt], gamma_max: int, heldout: bool = True):
    eos = eos_ids(target, tok)
    conts = acceptance.target_continuations(target, prompts, eos=eos, max_new_tokens=cfg.max_new_tokens,
                                            heldout=heldout, workspace=cfg.workspace, draft=draft)
    return acceptance.replay(target, draft, conts, gamma_max, REPLAY_CAP)


def acceptance_order(cfg: BenchConfig, target, tok, draft, keep, allowed, cf) -> tuple[np.ndarray, np.ndarray]:
    """The acceptance-aware ranking (vtcore.acceptance.acceptance_ranking) from a replay of the full
    draft over fit-row prompts (the measured prompts stay unseen), and its held-out C(k)."""
    if cfg.fit_prompts < 1:
        raise VTError("--ranking acceptance needs --fit-prompts >= 1")
    fit = load_prompts(cfg.data or default_data(), tok, heldout=False, limit=cfg.fit_prompts)
    rep = _replay(cfg, target, tok, draft, fit, 1, heldout=False)
    order = acceptance.acceptance_ranking(rep, cf.counts_fit, keep, allowed)
    counts = _measured_counts(cf)
    return order, np.concatenate([[0.0], np.cumsum(counts[order]) / max(int(counts.sum()), 1)])


def calibration_table(cfg: BenchConfig, target, tok, draft, keep, order: np.ndarray) -> np.ndarray:
    """A[gamma - 1, k], gamma = 1..GAMMA_MAX, k = 0..len(order): the replayed accepted tokens per step
    of order[:k] over held-out prompts the benchmark does not measure."""
    data = cfg.data or default_data()
    prompts = load_prompts(data, tok, heldout=True, limit=cfg.prompts + REPLAY_CALIBRATION_PROMPTS)[cfg.prompts:]
    if not prompts:
        prompts = load_prompts(data, tok, heldout=False, limit=REPLAY_CALIBRATION_PROMPTS)
    rep = _replay(cfg, target, tok, draft, prompts, GAMMA_MAX)
    return acceptance.acceptance_table(rep, order, k_max=len(order))


def replayed_accepted(setup: Setup, prompts: list[Prompt], cfg: BenchConfig) -> dict | None:
    """For the full and the trimmed head: the replay's accepted tokens per step (and by position)
    over the measured prompts' target continuation at the run's gamma; None when there is no
    full draft to replay. In sample mode: the expected figures (vtcore.acceptance.expected_replay
    over a sampled continuation at the run's temperature)."""
    if setup.full is None:
        return None
    if cfg.mode != "greedy":
        return _expected_accepted(setup, prompts, cfg)
    rep = _replay(cfg, setup.target, setup.tokenizer, setup.full, prompts, setup.gamma)
    out = {}
    for m, kept in (("full", None), ("trimmed", proposable_ids(setup.trimmed))):
        sim = acceptance.for_set(rep, kept, setup.gamma)
        out[m] = {"accepted_per_step_replayed": float(sim.accepted_per_step[0]),
                  "tokens_per_step_replayed": rep.committed_tokens() / max(int(sim.steps[0]), 1),
                  "accepted_by_position_replayed": [None if np.isnan(x) else float(x) for x in sim.by_position[0]]}
    out["over_cap_share"] = rep.overflow_share()
    return out


def _expected_accepted(setup: Setup, prompts: list[Prompt], cfg: BenchConfig) -> dict:
    """replayed_accepted in sample mode: expected accepted tokens per step of the full and the
    trimmed head (Expected: depth 1 exact, deeper depths fed the target's sampled continuation)."""
    eos = eos_ids(setup.target, setup.tokenizer)
    conts = acceptance.target_continuations(setup.target, prompts, eos=eos, max_new_tokens=cfg.max_new_tokens,
                                            workspace=cfg.workspace, temperature=cfg.temperature, seed=cfg.seed)
    ex = acceptance.expected_replay(setup.target, setup.full, conts, [None, proposable_ids(setup.trimmed)],
                                    setup.gamma, cfg.temperature)
    acc, steps, tokens = acceptance.expected_steps(ex, setup.gamma)
    out: dict = {"over_cap_share": None}
    for i, m in enumerate(("full", "trimmed")):
        out[m] = {"accepted_per_step_replayed": float(acc[i] / steps[i]),
                  "tokens_per_step_replayed": float(tokens[i] / steps[i]),
                  "accepted_by_position_replayed": None}
    return out


def prepare(cfg: BenchConfig, log=None) -> Setup:
    """Load models, count the data, calibrate, build the trimmed draft: everything before timing."""
    import torch

    log = log or (lambda msg: None)
    device, note = models.pick_device(cfg.device)
    notes = [note] if note else []
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    target, tok, draft, tname, dname, kind = load_models(cfg, device, log)
    check_context(cfg, target.config.to_dict())   # before calibration generates any
    data = cfg.data or default_data()
    cf = count_data(data, tok, cfg.workspace)
    keep = eos_ids(target, tok)
    allowed = proposable_ids(draft)
    N = len(allowed) if allowed is not None else int(target.get_output_embeddings().weight.shape[0])
    cal = None
    if kind == "standalone" and draft.trimmed:   # an hf-draft export: no full head to compare
        if cfg.token_map:
            raise VTError(f"{cfg.draft} is already trimmed; do not pass --token-map too")
        notes.append("the draft is already trimmed (an hf-draft export): no full-vocabulary draft to compare")
        full, tokens = None, of_ids(cf, allowed, "frequency", f"{cfg.draft} (d2t)")
    else:
        if cfg.k_from not in ("coverage", "search"):
            raise VTError(f"--k-from must be 'coverage' or 'search', got {cfg.k_from!r}")
        needs_search = cfg.gamma is None or (cfg.k is None and cfg.k_from == "search" and not cfg.token_map)
        cal = calibrate(cfg, target, tok, draft, keep) if needs_search else None
        full, tokens = draft, choose_tokens(cfg, cf, keep, allowed, cal, data, target, tok, draft, notes)
    gamma, gamma_from, predicted = choose_gamma(cfg, cal, cf, tokens, N)
    missing = [i for i in keep if int(i) not in set(tokens.ids.tolist())]
    if missing:
        notes.append(f"the token map does not keep EOS id(s) {missing}: the trimmed draft can never propose them")
    return Setup(target=target, tokenizer=tok, full=full, trimmed=draft if full is None else trim(draft, tokens.ids),
                 kind=kind, target_name=tname, draft_name=dname, token_map=tokens.how, gamma=gamma,
                 gamma_from=gamma_from, counts=cf, calibration=cal, predicted=predicted, notes=notes,
                 ranking=tokens.curve, acceptance_model=tokens.chosen_on)


# ---------------------------------------------------------------- measuring


def _acceptance(stats_list) -> float | None:
    """Per-token acceptance, geometric MLE: accepted / (accepted + rejections)."""
    acc = sum(sum(s.accepted) for s in stats_list)
    rej = sum(sum(1 for n, g in zip(s.accepted, s.drafted) if n < g) for s in stats_list)
    return acc / (acc + rej) if acc + rej else None


def decode_ms_per_token(stats_list) -> float:
    """Milliseconds per new token after the prefill, over runs (the loop's own work included)."""
    return 1000 * sum(s.wall_s - s.prefill_s for s in stats_list) / max(sum(s.new_tokens for s in stats_list), 1)


def overhead_ms_per_step(stats_list) -> float:
    """The loop's own work per target step (RunStats.overhead_s), over runs."""
    return 1000 * sum(s.overhead_s for s in stats_list) / max(sum(s.steps for s in stats_list), 1)


def per_drafted_token(stats_list) -> list[tuple[float, float]]:
    """(draft seconds, LM-head seconds) per drafted token, one pair per step that drafted."""
    return [(d / g, h / g) for s in stats_list for d, h, g in zip(s.draft_s, s.head_s, s.drafted) if g]


def accepted_by_position(stats_list, gamma: int) -> list[float | None]:
    """For draft position j = 1..gamma: the share of steps that drafted j tokens whose j-th was
    accepted (so position 1 is the first token's acceptance)."""
    out = []
    for j in range(1, gamma + 1):
        steps = [(n, g) for s in stats_list for n, g in zip(s.accepted, s.drafted) if g >= j]
        out.append(sum(n >= j for n, _ in steps) / len(steps) if steps else None)
    return out


def _aggregate(runs: dict[tuple[int, int], Any], method: str, gamma: int) -> MethodResult:
    """Totals over every (prompt, repeat), per-run values kept, and intervals (vtcore.spread)."""
    stats = [runs[u] for u in sorted(runs)]
    points = {u: (s.new_tokens, s.wall_s) for u, s in runs.items()}
    # medians over steps: a busy shared CPU adds rare, long stalls that would swamp a mean
    out = MethodResult(
        tokens_per_s=spread.throughput(points),
        tokens_per_s_ci=list(spread.throughput_ci(points)),
        new_tokens=sum(s.new_tokens for s in stats),
        latency_s=median(s.wall_s for s in stats),
        target_ms_per_step=1000 * median(x for s in stats for x in s.target_s),
        prefill_ms=1000 * median(s.prefill_s for s in stats),
        target_ms_per_step_mean=1000 * sum(sum(s.target_s) for s in stats) / max(sum(s.steps for s in stats), 1),
        prefill_ms_mean=1000 * sum(s.prefill_s for s in stats) / len(stats),
        decode_ms_per_token=decode_ms_per_token(stats),
        overhead_ms_per_step=overhead_ms_per_step(stats),
        runs=[RunRecord(prompt=p, repeat=r, tokens=s.new_tokens, wall_s=s.wall_s, tokens_per_s=s.tokens_per_s,
                        accepted_per_step=s.accepted_per_step if s.drafted else None)
              for (p, r), s in sorted(runs.items())])
    if method == "target_only":
        return out
    steps = sum(s.steps for s in stats)
    accepted = sum(sum(s.accepted) for s in stats)
    per_token = per_drafted_token(stats)
    out.accepted_per_step = accepted / steps
    out.accepted_by_position = accepted_by_position(stats, gamma)
    out.tokens_per_step = sum(s.new_tokens for s in stats) / steps
    out.acceptance_rate = accepted / max(sum(sum(s.drafted) for s in stats), 1)
    out.acceptance = _acceptance(stats)
    out.draft_ms_per_step = 1000 * median(x for s in stats for x in s.draft_s)
    out.draft_ms_per_step_mean = 1000 * sum(sum(s.draft_s) for s in stats) / steps
    if per_token:
        out.draft_ms_per_token = 1000 * median(d for d, _ in per_token)
        out.lm_head_ms_per_token = 1000 * median(h for _, h in per_token)
        out.lm_head_share = median(h / d for d, h in per_token if d > 0)
    return out


@dataclass
class _Runs:
    """What measure() saw: each method's figures, the speed-ups, and the outputs compared."""

    methods: dict[str, MethodResult]
    speedups: dict[str, Any]
    identical_outputs: bool | None
    prompts: int
    sample_output: str
    replay_over_cap_share: float | None = None   # set by _add_replayed


def measure(setup: Setup, prompts: list[Prompt], cfg: BenchConfig, progress, should_stop, done: list,
            total: int) -> _Runs | None:
    """Run the three methods over `prompts`, interleaved per repeat so load drifts hit all alike."""
    eos = eos_ids(setup.target, setup.tokenizer)
    methods = [(m, d) for m, d in (("target_only", None), ("full", setup.full), ("trimmed", setup.trimmed))
               if m == "target_only" or d is not None]

    def run(draft, ids, max_new, seed):
        c = speculative.SpecConfig(gamma=setup.gamma, max_new_tokens=max_new, mode=cfg.mode, temperature=cfg.temperature,
                          seed=seed, eos_ids=eos)
        if draft is None:
            return speculative.target_generate(setup.target, ids, c)
        return speculative.speculative_generate(setup.target, draft, ids, c, should_stop=should_stop)

    for _ in range(cfg.warmup):  # first calls pay for allocation and kernel selection
        for m, d in methods:
            run(d, prompts[0].ids, min(16, cfg.max_new_tokens), cfg.seed)
            done[0] += 1
            progress(done[0] / total, f"warm-up {m}")
    runs: dict[str, dict] = {m: {} for m, _ in methods}
    outputs: dict[str, dict] = {m: {} for m, _ in methods}
    for pi, p in enumerate(prompts):
        for r in range(cfg.repeats):
            for m, d in methods:
                if should_stop():
                    return None
                res = run(d, p.ids, cfg.max_new_tokens, cfg.seed + pi)
                runs[m][(pi, r)] = res.stats
                outputs[m][(pi, r)] = res.tokens
                done[0] += 1
                progress(done[0] / total, f"prompt {pi + 1}/{len(prompts)} repeat {r + 1} {m}: "
                                          f"{res.stats.tokens_per_s:.1f} tok/s")
    if cfg.mode == "greedy":
        ref = outputs["target_only"]
        identical = all(o == ref[u] for m, _ in methods for u, o in outputs[m].items())
    else:
        identical = None  # samples differ run to run; the distribution is tested in tests/
    return _Runs(methods={m: _aggregate(runs[m], m, setup.gamma) for m, _ in methods},
                 speedups=_speedups({m: {u: (s.new_tokens, s.wall_s) for u, s in runs[m].items()} for m, _ in methods}),
                 identical_outputs=identical, prompts=len(prompts),
                 sample_output=setup.tokenizer.decode(outputs["target_only"][(0, 0)]))


def _speedups(points: dict[str, dict]) -> dict:
    """Each ratio with its interval and verdict (vtcore.spread), as Measured's fields."""
    out = {}
    for name, a, b in SPEEDUPS:
        if a not in points or b not in points:
            continue
        ci = spread.ratio_ci(points[a], points[b])
        out.update({f"speedup_{name}": spread.throughput(points[a]) / spread.throughput(points[b]),
                    f"speedup_{name}_ci": list(ci), f"verdict_{name}": spread.verdict(ci)})
    n_prompts = len({u[0] for u in points["target_only"]})
    out["ci_method"] = spread.method(n_prompts)
    return out


def prediction(methods: dict[str, MethodResult], gamma: int, coverage_k: float) -> Prediction:
    """The search module's speed-up model fed with what was measured: a0 (the full draft's
    per-token acceptance), a(k) = a0 C(k), and costs in units of a token of the target alone
    (t1: its decode time per new token, the loop's work included). Leviathan et al.'s form (verify
    cost 1, no loop work) is kept beside it; `trimmed_vs_target_with_verify_cost` also counts each
    method's prefill, so it is the figure to compare with the measured speed-up. Only the tokens
    per step come from a model; every cost is measured, as means over every step and run: the
    measured speed-up is a ratio of totals, so a median (a typical step on a noisy machine) would
    leave out the stalls that the totals, and t1, include.

    When the measured heads were replayed (vtcore.acceptance) the tokens per step are the replay's
    (`tokens_per_step_replayed`: the committed tokens over the replay's steps, so a last step cut by
    max_new_tokens or an EOS counts as it runs) and a step costs the draft's measured mean time per
    step (an EAGLE-3 head's first forward of a step re-reads every newly committed position, so a
    step is not gamma times a drafted token) plus the verify and the loop's work;
    `acceptance_model` says "replay". Without a replay the a0 C(k) model gives them."""
    tgt, full, trim_ = methods["target_only"], methods.get("full"), methods["trimmed"]
    t1 = tgt.decode_ms_per_token
    a0 = full.acceptance if full else None
    out = Prediction(a0=a0, coverage_k=coverage_k, target_ms_per_token=t1, a_trimmed_measured=trim_.acceptance,
                     gamma=gamma)
    if a0 is None:
        return out
    n = tgt.new_tokens / max(len(tgt.runs), 1)   # new tokens per run
    replay = trim_.accepted_per_step_replayed is not None
    out.acceptance_model = "replay" if replay else "a0*C(k)"

    def mean(m: MethodResult, name: str) -> float:
        x = getattr(m, f"{name}_mean")
        return x if x is not None else getattr(m, name)   # a result stored before the means were

    def speedups(m: MethodResult, a: float) -> tuple[float, float, float, float, float]:
        c = m.draft_ms_per_token / t1
        verify = (mean(m, "target_ms_per_step") + m.overhead_ms_per_step) / t1
        if replay:
            tokens = m.tokens_per_step_replayed or 1.0 + m.accepted_per_step_replayed
            classic = tokens / (gamma * c + 1.0)
            steady = tokens / (mean(m, "draft_ms_per_step") / t1 + verify)
        else:
            classic = float(predicted_speedup(a, gamma, c))
            steady = float(predicted_speedup(a, gamma, c, verify))
        # with prefill: (P_target + n) / (P_method + n / steady), in target tokens
        whole = (mean(tgt, "prefill_ms") / t1 + n) / (mean(m, "prefill_ms") / t1 + n / steady)
        return c, verify, classic, whole, t1 / steady

    out.a_k = a0 * coverage_k
    (out.cost_ratio_trimmed, out.verify_cost_ratio, out.trimmed_vs_target, out.trimmed_vs_target_with_verify_cost,
     out.decode_ms_trimmed) = speedups(trim_, out.a_k)
    out.decode_ms_trimmed_measured = trim_.decode_ms_per_token
    if full:
        out.cost_ratio_full, _, out.full_vs_target, out.full_vs_target_with_verify_cost, _ = speedups(full, a0)
        out.trimmed_vs_full = out.trimmed_vs_target / out.full_vs_target
        out.trimmed_vs_full_with_verify_cost = (out.trimmed_vs_target_with_verify_cost
                                                / out.full_vs_target_with_verify_cost)
    return out


def _add_replayed(res: _Runs, replayed: dict | None) -> None:
    """The replay's accepted tokens per step (and by position) on each draft method's figures."""
    if replayed is None:
        return
    for m in ("full", "trimmed"):
        if res.methods.get(m) is not None:
            res.methods[m].accepted_per_step_replayed = replayed[m]["accepted_per_step_replayed"]
            res.methods[m].accepted_by_position_replayed = replayed[m]["accepted_by_position_replayed"]
            res.methods[m].tokens_per_step_replayed = replayed[m].get("tokens_per_step_replayed")
    res.replay_over_cap_share = replayed["over_cap_share"]


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _measured(res: _Runs, setup: Setup, kept_cov: float) -> dict:
    """One measured set of prompts as Measured's fields."""
    return {"target_only": res.methods["target_only"], "full": res.methods.get("full"),
            "trimmed": res.methods["trimmed"], **res.speedups, "identical_outputs": res.identical_outputs,
            "prompts": res.prompts, "prediction": prediction(res.methods, setup.gamma, kept_cov),
            "replay_over_cap_share": res.replay_over_cap_share}


def run_bench(cfg: BenchConfig, progress: Callable[[float, str], None] | None = None,
              should_stop: Callable[[], bool] | None = None, log=None) -> BenchResult | BenchStopped:
    """Benchmark target alone, target + full draft and target + trimmed draft (see module doc).
    `progress(frac, text)` and `should_stop()` let a caller report and stop it."""
    import torch

    speculative.SpecConfig(gamma=cfg.gamma or 1, max_new_tokens=cfg.max_new_tokens, mode=cfg.mode, temperature=cfg.temperature)
    if cfg.prompts < 1 or cfg.repeats < 1 or cfg.warmup < 0:
        raise VTError("--prompts and --repeats must be >= 1, --warmup >= 0")
    progress = progress or (lambda frac, text="": None)
    should_stop = should_stop or (lambda: False)
    t0 = time.perf_counter()
    progress(0.0, "loading models and calibrating")
    setup = prepare(cfg, log)
    device = setup.target.get_output_embeddings().weight.device
    data = cfg.data or default_data()
    prompts = measured_prompts(data, setup.tokenizer, cfg.prompts, setup.notes)
    ood = measured_prompts(cfg.ood_data, setup.tokenizer, cfg.prompts, setup.notes) if cfg.ood_data else []
    n_methods = 3 if setup.full is not None else 2
    total = n_methods * (cfg.warmup + cfg.repeats * (len(prompts) + len(ood)))
    done = [0]
    kept = proposable_ids(setup.trimmed)
    res = measure(setup, prompts, cfg, progress, should_stop, done, total)
    if res is not None:
        _add_replayed(res, replayed_accepted(setup, prompts, cfg))
    if res is None:
        return BenchStopped(device=_device_name(device), target=setup.target_name, draft=setup.draft_name,
                            k=int(len(kept)))
    full_ids = None if setup.full is None else proposable_ids(setup.full)
    c_k = kept_coverage(setup.counts, kept)
    measured = _measured(res, setup, c_k)
    result = BenchResult(
        device=_device_name(device), threads=torch.get_num_threads() if device.type == "cpu" else None,
        dtype=str(setup.target.dtype).replace("torch.", ""),
        target=setup.target_name, draft=setup.draft_name, draft_kind=setup.kind,
        k=int(len(kept)), vocab_size=int(setup.target.get_output_embeddings().weight.shape[0]),
        draft_vocab_size=None if full_ids is None else int(len(full_ids)),
        token_map=setup.token_map, coverage_k=c_k, ranking=setup.ranking, k_gamma_chosen_on=setup.acceptance_model,
        data=str(data), mode=cfg.mode, gamma=setup.gamma, gamma_from=setup.gamma_from,
        max_new_tokens=cfg.max_new_tokens, repeats=cfg.repeats, warmup=cfg.warmup, **measured,
        calibration=setup.calibration, search_predicted_speedup=setup.predicted,
        search_predicted_speedup_with_prefill=with_prefill(
            setup.calibration, setup.predicted,
            res.methods["target_only"].new_tokens / max(res.prompts * cfg.repeats, 1)),
        predicted_speedup=measured["prediction"].trimmed_vs_target_with_verify_cost,
        sample_output=res.sample_output[:300], notes=setup.notes)
    if ood:
        o = measure(setup, ood, cfg, progress, should_stop, done, total)
        if o is not None:
            _add_replayed(o, replayed_accepted(setup, ood, cfg))
            c_ood = kept_coverage(count_data(cfg.ood_data, setup.tokenizer, cfg.workspace), kept)
            result.ood = OodResult(data=str(cfg.ood_data), coverage_k=c_ood, **_measured(o, setup, c_ood))
    result.seconds = time.perf_counter() - t0
    progress(1.0, "done")
    if cfg.save:
        result.results_file = str(append_result(cfg, result))
    return result


def results_path(workspace=None) -> Path:
    return subdir("bench", workspace) / "results.jsonl"


def append_result(cfg: BenchConfig, result: BenchResult) -> Path:
    """One JSON line per run, so runs compare across sessions (appends are atomic enough for
    one writer: a single write of one line)."""
    path = results_path(cfg.workspace)
    line = json.dumps(plain_json({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg),
                                  **result.to_dict()}))
    with open(path, "a+b") as f:
        torn = f.seek(0, 2) > 0 and f.seek(-1, 2) >= 0 and f.read(1) != b"\n"   # a run killed mid-write
        f.write((b"\n" if torn else b"") + line.encode("utf-8") + b"\n")   # so this record starts its own line
    return path


def read_results(workspace=None) -> tuple[list[dict], int]:
    """(every stored run, oldest first; how many lines could not be read: torn, not UTF-8, not a
    JSON object). Unreadable lines are skipped, never fatal."""
    path = results_path(workspace)
    if not path.is_file():
        return [], 0
    out, bad = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError too
            rec = None
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    return out, bad


def load_results(workspace=None) -> list[BenchResult]:
    """Every stored run, oldest first; unreadable lines, and records that are not a finished run,
    are skipped (read_results counts the unreadable ones)."""
    out = []
    for rec in read_results(workspace)[0]:
        try:
            out.append(BenchResult.from_dict(rec))
        except (TypeError, ValueError):
            continue
    return out
