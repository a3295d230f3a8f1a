"""Tree drafting (vtcore.tree) measured side by side with chains and the target alone.

The models, the trimmed head (k) and the chain's gamma come from vtcore.bench.prepare (the search,
or --k / --gamma). Then, interleaved per (prompt, repeat) after a warm-up: the target alone, the
chain at each gamma and each tree shape (s, t, n), full head and trimmed. Each method reports
tokens/s with its interval against the target alone, the acceptance length (new tokens per
verify), accepted tokens by depth, head rows and draft forwards per round and the head's share of
draft time; greedy outputs are compared token for token. vtcore.enginecost predicts each
method's decode speed-up from unit costs measured on the chain (a draft-layer token, a head row,
the loop's work per round), the draft layer's and the head's cost at t tokens (rows) per forward
relative to one (`draft_ratios`), the target's verify cost at n tokens, the loop's own work per
round measured on the method itself (a tree's loop builds its mask and gathers the target's cache:
more work than a chain's) and the measured acceptance length, so the comparison with the measured
speed-up checks the cost model, not an acceptance model; each method also reports the three parts
of a round, predicted and measured (draft, verify, loop), to say which one is off.

The search's side (`search_check`): the full draft replayed over the target's own outputs of this
run (vtcore.acceptance) gives the per-depth ranks of the target's token among the kept rows, and
enginecost.tree_accepted turns them into a modelled acceptance length for every measured setting;
priced by the same cost model, the setting the engine model would choose (trimmed head) is compared
with the measured best.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import median
from typing import Any, Callable

from vtcore import bench, eagle3, enginecost, models, speculative, spread, tree
from vtcore.errors import VTError
from vtcore.files import plain_json
from vtcore.workspace import subdir

DEFAULT_TREES = ((3, 2, 4), (4, 2, 6), (5, 4, 8))   # a small grid, SGLang's Llama default last


def _run(setup, draft, shape, gamma: int, ids, max_new: int, eos, seed: int):
    c = speculative.SpecConfig(gamma=max(gamma, 1), max_new_tokens=max_new, eos_ids=eos, seed=seed)
    if draft is None:
        return speculative.target_generate(setup.target, ids, c)
    if shape is None:
        return speculative.speculative_generate(setup.target, draft, ids, c)
    return tree.tree_generate(setup.target, draft, ids, c, shape)


def _unit_costs(stats_list) -> tuple[float, float, float]:
    """(draft layer ms per token fed, head ms per row, loop ms per round) from chain runs."""
    per = bench.per_drafted_token(stats_list)
    layer = 1000 * median(d - h for d, h in per)
    head = 1000 * median(h for _, h in per)
    return layer, head, bench.overhead_ms_per_step(stats_list)


def draft_ratios(target, draft, prompt_ids, sizes, repeats: int = 7) -> tuple[dict[int, float], dict[int, float]]:
    """For each T in `sizes`: the median over rounds of (a tree-masked draft forward over T tokens,
    head excluded) / (one over 1 token), the draft's cache cropped back after each, and the same
    for its head on T rows in one matmul; ratios taken within a round, as
    speculative.verify_ratios does, so a slow spell cancels."""
    import torch

    with torch.inference_mode():
        prop = tree.make_tree_proposer(draft)
        device = target.get_output_embeddings().weight.device
        seq = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
        n = int(seq.numel())
        aux = eagle3.target_forward(target, seq[:-1], prop.aux_ids)[1] if prop.aux_ids is not None else None
        prop.prefill(seq, n, aux)
        _, h = prop.root(seq, n)
        L = prop.length
        clock = speculative.Clock(device)

        def crop():
            if isinstance(prop.cache, eagle3.Eagle3Cache):
                prop.cache.crop(L)
            else:
                models.crop_cache(prop.cache, L)

        rounds, heads = [], []
        for _ in range(repeats + 1):   # the first round warms up
            ms, hs = {}, {}
            for T in [1, *sizes]:
                tokens = seq[-1:].repeat(T)
                positions = torch.full((T,), L, device=device)
                visible = torch.ones(T, L + T, dtype=torch.bool, device=device)
                hidden = None if h is None else h[None].expand(T, -1)
                out = []
                ms[T] = clock.time_ms(lambda: out.append(prop.expand(tokens, hidden, positions, visible)[0]))
                hs[T] = clock.time_ms(lambda: prop.head(out[0]))
                crop()
            rounds.append({T: ms[T] / ms[1] for T in sizes})
            heads.append({T: hs[T] / hs[1] for T in sizes})
    return ({T: median(r[T] for r in rounds[1:]) for T in sizes},
            {T: median(r[T] for r in heads[1:]) for T in sizes})


def run_tree_bench(cfg: bench.BenchConfig, shapes: list[tree.TreeShape] | None = None,
                   gammas: list[int] | None = None, progress: Callable[[float, str], None] | None = None,
                   log=None) -> dict[str, Any]:
    """Measure target alone, chains and trees, full and trimmed head (module doc)."""
    import torch

    if cfg.mode != "greedy":
        raise VTError("the tree benchmark runs greedy only: lossless tree sampling is not implemented")
    progress = progress or (lambda frac, text="": None)
    shapes = shapes or [tree.TreeShape(*s) for s in DEFAULT_TREES]
    t0 = time.perf_counter()
    progress(0.0, "loading models")
    setup = bench.prepare(cfg, log)
    gammas = sorted(set(gammas or [setup.gamma]))
    eos = bench.eos_ids(setup.target, setup.tokenizer)
    notes: list[str] = []
    prompts = bench.measured_prompts(cfg.data or bench.default_data(), setup.tokenizer, cfg.prompts, notes)
    heads = [(h, d) for h, d in (("full", setup.full), ("trimmed", setup.trimmed)) if d is not None]
    methods: list[tuple[str, Any, Any, int]] = [("target_only", None, None, 0)]
    methods += [(f"chain {g} {h}", d, None, g) for g in gammas for h, d in heads]
    methods += [(f"tree {s.label} {h}", d, s, s.steps) for s in shapes for h, d in heads]
    total = len(methods) * (cfg.warmup + cfg.repeats * len(prompts))
    done = 0
    for _ in range(cfg.warmup):
        for name, d, s, g in methods:
            _run(setup, d, s, g, prompts[0].ids, min(16, cfg.max_new_tokens), eos, cfg.seed)
            done += 1
            progress(done / total, f"warm-up {name}")
    runs: dict[str, dict] = {m[0]: {} for m in methods}
    outs: dict[str, dict] = {m[0]: {} for m in methods}
    for pi, p in enumerate(prompts):
        for r in range(cfg.repeats):
            for name, d, s, g in methods:
                res = _run(setup, d, s, g, p.ids, cfg.max_new_tokens, eos, cfg.seed + pi)
                runs[name][(pi, r)] = res.stats
                outs[name][(pi, r)] = res.tokens
                done += 1
                progress(done / total, f"prompt {pi + 1} repeat {r + 1} {name}: {res.stats.tokens_per_s:.1f} tok/s")

    device = setup.target.get_output_embeddings().weight.device
    aux_ids = tuple(setup.full.aux_ids) if isinstance(setup.full, eagle3.Eagle3Draft) else None
    n_max = max([s.tokens for s in shapes] + [g + 1 for g in gammas])
    ratios = speculative.verify_ratios(setup.target, prompts[0].ids, n_max, aux_ids=aux_ids)
    sizes = sorted({s.topk for s in shapes} - {1})
    ratio_of, head_of = None, {}
    for h, d in heads:
        lr, hr = draft_ratios(setup.target, d, prompts[0].ids, sizes)
        ratio_of = ratio_of or {1: 1.0, **lr}   # the layer is the same under either head
        head_of[h] = {1: 1.0, **hr}
    tgt = list(runs["target_only"].values())
    t_forward = 1000 * sum(sum(s.target_s) for s in tgt) / sum(s.steps for s in tgt)
    t1 = bench.decode_ms_per_token(tgt)
    V = int(setup.target.get_output_embeddings().weight.shape[0])
    points = {m: {u: (s.new_tokens, s.wall_s) for u, s in rs.items()} for m, rs in runs.items()}
    result: dict[str, Any] = {
        "device": str(device), "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "target": setup.target_name, "draft": setup.draft_name, "draft_kind": setup.kind,
        "k": int(len(bench.proposable_ids(setup.trimmed))), "vocab_size": V, "gammas": gammas,
        "trees": [s.label for s in shapes], "prompts": len(prompts), "repeats": cfg.repeats,
        "max_new_tokens": cfg.max_new_tokens, "notes": notes, "target_ms_per_token": t1, "verify_ratios": ratios,
        "draft_layer_ratios": ratio_of, "head_ratios": head_of,
        "methods": {},
    }
    ref = outs["target_only"]
    full = setup.full if setup.full is not None else setup.trimmed
    k_full = int(len(bench.proposable_ids(full))) if bench.proposable_ids(full) is not None else V
    result["vllm_scatter_ms_per_token"] = enginecost.scatter_ms(result["k"], V)
    result["vllm_scatter_ms_per_token_full_head"] = enginecost.scatter_ms(k_full, V)
    units: dict[str, tuple] = {}
    for g in gammas:
        for h, _ in heads:
            if g == gammas[0]:
                units[h] = _unit_costs(list(runs[f"chain {g} {h}"].values()))
    for name, d, s, g in methods:
        stats = list(runs[name].values())
        m: dict[str, Any] = {
            "tokens_per_s": spread.throughput(points[name]),
            "decode_ms_per_token": bench.decode_ms_per_token(stats),
            "identical_outputs": all(o == ref[u] for u, o in outs[name].items()),
        }
        if name != "target_only":
            ci = spread.ratio_ci(points[name], points["target_only"])
            m.update({"speedup_vs_target": m["tokens_per_s"] / spread.throughput(points["target_only"]),
                      "speedup_vs_target_ci": list(ci), "verdict_vs_target": spread.verdict(ci),
                      "decode_speedup_vs_target": t1 / m["decode_ms_per_token"]})
            head = name.rsplit(" ", 1)[1]
            if s is not None:
                m.update(tree.summarize(stats, s.steps))
                shape = enginecost.round_shape("sglang", 1, steps=s.steps, topk=s.topk, tokens=s.tokens)
            else:
                rounds = sum(x.steps for x in stats)
                m.update({"acceptance_length": sum(x.new_tokens for x in stats) / rounds,
                          "accepted_by_depth": bench.accepted_by_position(stats, g),
                          "head_rows_per_round": sum(sum(x.drafted) for x in stats) / rounds,
                          "head_share": sum(sum(x.head_s) for x in stats) / max(sum(sum(x.draft_s) for x in stats), 1e-12),
                          "draft_ms_per_round": 1000 * sum(sum(x.draft_s) for x in stats) / rounds})
                shape = enginecost.round_shape("chain", 1, gamma=g)
            layer, head_row, _ = units[head]
            loop = bench.overhead_ms_per_step(stats)   # this method's own loop work per round
            u = enginecost.UnitCosts(layer, head_row, 0.0, loop, layer_ratio=ratio_of.__getitem__,
                                     head_ratio=head_of[head].__getitem__)
            verify = lambda n: ratios[n - 1] * t_forward   # noqa: E731
            rounds = sum(x.steps for x in stats)
            m.update(predicted_draft_ms_per_round=enginecost.draft_ms(shape, u),
                     predicted_verify_ms_per_round=verify(shape.verified), loop_ms_per_round=loop,
                     measured_verify_ms_per_round=1000 * sum(sum(x.target_s) for x in stats) / max(rounds, 1),
                     measured_draft_ms_per_round=1000 * sum(sum(x.draft_s) for x in stats) / max(rounds, 1))
            m["predicted_decode_speedup"] = enginecost.predicted_speedup(m["acceptance_length"], shape, u, verify, t1)
            m["round_shape"] = asdict(shape)
            if s is None:   # what vLLM would pay for this chain: the scatter per drafted token (not measurable here)
                vshape = enginecost.round_shape("vllm", 1, gamma=g, trimmed=head == "trimmed")
                vu = replace(u, scatter_ms=result["vllm_scatter_ms_per_token"])
                m["predicted_decode_speedup_vllm"] = enginecost.predicted_speedup(m["acceptance_length"], vshape, vu,
                                                                                  verify, t1)
        result["methods"][name] = m
    result["identical_outputs"] = all(m["identical_outputs"] for m in result["methods"].values())
    try:
        result["search"] = search_check(setup, prompts, outs["target_only"], result, shapes, gammas)
    except VTError as e:   # the check is an addition: a replay that cannot run says why, the run stands
        result["search"] = {"error": str(e)}
    result["seconds"] = time.perf_counter() - t0
    progress(1.0, "done")
    return result


def tree_results_path(workspace=None) -> Path:
    """Tree runs go to their own store: their results have another shape than bench's."""
    return subdir("bench", workspace) / "tree_results.jsonl"


def append_tree_result(cfg: bench.BenchConfig, result: dict) -> Path:
    path = tree_results_path(cfg.workspace)
    line = json.dumps(plain_json({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(cfg), **result}))
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return path


def search_check(setup, prompts, target_outs: dict, result: dict, shapes, gammas) -> dict[str, Any]:
    """The engine model's choice among the measured settings with MODELLED acceptance (replayed
    ranks, enginecost.tree_accepted) vs the measured best, trimmed head; and per method the
    modelled acceptance length next to the measured one."""
    import numpy as np

    from vtcore import acceptance

    depth = max([s.steps for s in shapes] + list(gammas))
    t_max = max([s.topk for s in shapes] + [1])
    conts = [acceptance.Continuation(prompt=list(p.ids), tokens=list(target_outs[(i, 0)]), eos_at=None)
             for i, p in enumerate(prompts)]
    rep = acceptance.replay(setup.target, setup.full if setup.full is not None else setup.trimmed, conts,
                            gamma_max=depth)
    full_ids = np.asarray(rep.proposable, dtype=np.int64)
    kept = bench.proposable_ids(setup.trimmed)
    kept = full_ids if kept is None else np.unique(np.asarray(kept, dtype=np.int64))
    order = np.concatenate([kept, np.setdiff1d(full_ids, kept)])
    ranks = enginecost.replay_ranks(rep, order, t_max, full_ids.size, depth)
    at = {"trimmed": kept.size, "full": full_ids.size}
    out: dict[str, Any] = {"modelled_acceptance_length": {},
                           "model": "chains: the replay (exact); trees: replayed ranks, SGLang's tree of a "
                                    "calibrated draft, depths independent (enginecost.tree_accepted)"}
    best_pred = None
    for name, m in result["methods"].items():
        if name == "target_only":
            continue
        label, head = name.rsplit(" ", 1)
        kind, setting = label.split(" ", 1)
        s, t, n = (tuple(int(x) for x in setting.split(",")) if kind == "tree"
                   else (int(setting), 1, int(setting) + 1))
        if kind == "chain":   # the chain's replay is exact (acceptance.for_set walks its greedy steps)
            modelled = 1.0 + float(acceptance.for_set(rep, kept if head == "trimmed" else None, s)
                                   .accepted_per_step[0])
        else:
            r = ranks[:, :, at[head]: at[head] + 1]
            modelled = 1.0 + float(enginecost.tree_accepted(r, t, s, n)[s - 1, n, 0])
        out["modelled_acceptance_length"][name] = modelled
        # the same cost model, acceptance modelled instead of measured
        pred = m["predicted_decode_speedup"] * modelled / m["acceptance_length"]
        m["search_predicted_decode_speedup"] = pred
        if head == "trimmed" and (best_pred is None or pred > best_pred[1]):
            best_pred = (name, pred)
    trimmed = {n: m for n, m in result["methods"].items() if n.endswith(" trimmed")}
    if best_pred and trimmed:
        best_meas = max(trimmed, key=lambda n: trimmed[n]["decode_speedup_vs_target"])
        out.update(choice=best_pred[0], choice_predicted=best_pred[1],
                   choice_measured=trimmed[best_pred[0]]["decode_speedup_vs_target"], measured_best=best_meas,
                   measured_best_speedup=trimmed[best_meas]["decode_speedup_vs_target"])
        out["choice_vs_best"] = out["choice_measured"] / out["measured_best_speedup"]
    return out
