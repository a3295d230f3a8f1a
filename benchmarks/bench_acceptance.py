"""Replayed vs measured acceptance of trimmed heads, side by side, on the default pair.

    python benchmarks/bench_acceptance.py [--prompts 4] [--max-new-tokens 32] [--gamma 4]
                                          [--fit-prompts 16] [--k 256 512 2144 8192]
                                          [--acceptance-k 128 256 512] [--temperature 0.7]

For the embedded SmolLM2-135M-Instruct + its EAGLE-3 head, greedy, in domain (held-out prompts of
samples/code.jsonl) and out of domain (held-out prompts of samples/chat.jsonl.gz), printed side by
side per (ranking, k):
- the accepted draft tokens per step that real speculative decoding (vtcore.speculative) measures
  with the trimmed head, the replay's (vtcore.acceptance) over the same prompts' target
  continuation, and a0 * C(k)'s. Rankings: frequency (code fit rows), acceptance-aware (a replay of
  the full head over --fit-prompts code fit-row prompts) and mixed (the acceptance-aware ranking of
  the code and chat fit-row replays merged, with both domains' fit counts: acceptance.merge_replays);
- the predicted speed-up over the target alone vs the measured one, per head: the prediction takes
  the tokens per step from the replay and every cost from the FULL head's run (its draft step with
  the LM head scaled to k rows by the head's measured share, its verify of gamma + 1 tokens, its
  loop's work per step, its prefill), so no trimmed head's timing enters it;
- the replay's cost (the full draft's pass, continuations already made) vs one target-alone pass
  over the same prompts, as a ratio;
- with --temperature: sample mode on the code prompts, measured accepted tokens per step vs the
  expected replay's (acceptance.expected_replay / expected_steps), same seeds for every head.
Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vtcore import acceptance as A  # noqa: E402
from vtcore import bench, speculative  # noqa: E402


def a0_model(a0: float, C: float, gamma: int) -> float:
    """Expected accepted draft tokens per step with per-token acceptance a = a0 C(k)."""
    a = a0 * C
    return a * (1 - a ** gamma) / (1 - a) if a < 1 else float(gamma)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_head(target, d, prompts, cfg_of) -> list:
    return [speculative.speculative_generate(target, d, p.ids, cfg_of(i)).stats for i, p in enumerate(prompts)]


def predicted_seconds(full_stats: list, sim: A.Simulated, k: int, n_rows: int) -> float:
    """A trimmed head's wall time over the prompts from the full head's costs and the replay's
    steps: prefill + steps x (draft step with the head at k rows + verify + the loop's work)."""
    steps = sum(s.steps for s in full_stats)
    draft = sum(sum(s.draft_s) for s in full_stats) / steps
    head = sum(sum(s.head_s) for s in full_stats) / steps
    verify = sum(sum(s.target_s) for s in full_stats) / steps
    loop = sum(s.overhead_s for s in full_stats) / steps
    step = draft - head * (1.0 - k / n_rows) + verify + loop
    return sum(s.prefill_s for s in full_stats) + int(sim.steps[0]) * step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--fit-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, nargs="+", default=[256, 512, 2144, 8192])
    ap.add_argument("--acceptance-k", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--temperature", type=float, default=None, help="also compare sample mode at this temperature")
    ap.add_argument("--sample-k", type=int, nargs="+", default=[256, 2144])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = bench.BenchConfig(workspace=args.workspace, device="cpu")
    target, tok, draft, *_ = bench.load_models(cfg, torch.device("cpu"))
    eos = bench.eos_ids(target, tok)
    code, chat = bench.default_data(), ROOT / "samples" / "chat.jsonl.gz"
    cf = bench.count_data(code, tok, args.workspace)
    allowed = bench.proposable_ids(draft)
    n_rows = int(allowed.size)
    freq, _ = bench.ranking(cf, eos, allowed)
    chat_cf = bench.count_data(chat, tok, args.workspace)

    t0 = time.perf_counter()
    fit_reps = {}
    for name, data in (("code", code), ("chat", chat)):
        fit = bench.load_prompts(data, tok, heldout=False, limit=args.fit_prompts)
        conts = A.target_continuations(target, fit, eos=eos, max_new_tokens=args.max_new_tokens, heldout=False,
                                       workspace=args.workspace, draft=draft)
        fit_reps[name] = A.replay(target, draft, conts, args.gamma, 256, manifest={"data": str(data)})
    acc_order = A.acceptance_ranking(fit_reps["code"], cf.counts_fit, eos, allowed)
    mixed = A.merge_replays([fit_reps["code"], fit_reps["chat"]])
    V = cf.counts_fit.shape[0]
    mixed_order = A.acceptance_ranking(mixed, cf.counts_fit + chat_cf.counts_fit[:V], eos, allowed)
    log(f"fit replays ({args.fit_prompts} prompts per domain): {time.perf_counter() - t0:.0f} s; tokens accepted: "
        f"code {int((A.accepted_scores(fit_reps['code']) > 0).sum())}, "
        f"union {int((A.accepted_scores(mixed) > 0).sum())}")
    heads = ([("full", None, None)] + [("frequency", k, freq[:k]) for k in args.k]
             + [("acceptance", k, acc_order[:k]) for k in args.acceptance_k]
             + [("mixed", k, mixed_order[:k]) for k in args.acceptance_k])
    out = {"command": " ".join(sys.argv), "threads": torch.get_num_threads(), "gamma": args.gamma,
           "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "fit_prompts": args.fit_prompts,
           "domains": {}}
    for name, data, dcf in (("code", code, cf), ("chat", chat, chat_cf)):
        counts = bench._measured_counts(dcf)
        total = int(counts.sum())
        prompts = bench.load_prompts(data, tok, heldout=True, limit=args.prompts)
        t = time.perf_counter()
        conts = A.target_continuations(target, prompts, eos=eos, max_new_tokens=args.max_new_tokens,
                                       workspace=args.workspace, draft=draft)
        t_cont = time.perf_counter() - t
        fresh = all(c.states is not None for c in conts)   # made now, not read from the cache
        # one target-alone pass over the prompts (what the replay is compared with), then the replay
        sc = speculative.SpecConfig(gamma=1, max_new_tokens=args.max_new_tokens, eos_ids=eos)
        t = time.perf_counter()
        t_stats = [speculative.target_generate(target, p.ids, sc).stats for p in prompts]
        t_target = time.perf_counter() - t
        t = time.perf_counter()
        rep = A.replay(target, draft, conts, args.gamma, 256)
        t_replay = time.perf_counter() - t
        # the target alone and every head interleaved per prompt, so a load drift of the shared
        # machine hits them alike (the speed-ups are ratios of these runs)
        drafts = [draft if kept is None else bench.trim(draft, kept) for _, _, kept in heads]
        sc_spec = speculative.SpecConfig(gamma=args.gamma, max_new_tokens=args.max_new_tokens, eos_ids=eos)
        alone, by_head = [], [[] for _ in heads]
        for p in prompts:
            alone.append(speculative.target_generate(target, p.ids, sc).stats)
            for i, d in enumerate(drafts):
                by_head[i].append(speculative.speculative_generate(target, d, p.ids, sc_spec).stats)
        target_wall = sum(s.wall_s for s in alone)
        rows, a0, full_stats = [], None, None
        for (rank, k, kept), stats in zip(heads, by_head):
            steps = sum(s.steps for s in stats)
            measured = sum(sum(s.accepted) for s in stats) / steps
            if kept is None:
                a0, full_stats = bench._acceptance(stats), stats
            C = 1.0 if kept is None else float(counts[np.asarray(kept)].sum() / total)
            sim = A.for_set(rep, kept, args.gamma)
            replayed = float(sim.accepted_per_step[0])
            wall = sum(s.wall_s for s in stats)
            pred_s = predicted_seconds(full_stats, sim, n_rows if k is None else k, n_rows)
            row = {"ranking": rank, "k": k, "C_k": C, "measured": measured, "replayed": replayed,
                   "replay_error": replayed / measured - 1 if measured else None,
                   "a0_C": a0_model(a0, C, args.gamma),
                   "a0_C_error": a0_model(a0, C, args.gamma) / measured - 1 if measured else None,
                   "steps_measured": steps, "steps_replayed": int(sim.steps[0]),
                   "speedup_measured": target_wall / wall, "speedup_predicted": target_wall / pred_s,
                   "speedup_error": wall / pred_s - 1}
            rows.append(row)
            log(f"{name} {rank} k={k}: C {C:.3f} measured {measured:.3f} replayed {replayed:.3f} "
                f"a0*C {row['a0_C']:.3f}; speed-up predicted {row['speedup_predicted']:.2f}x "
                f"measured {row['speedup_measured']:.2f}x")
        full = rows[0]["measured"]
        for r in rows:
            r["share_of_full_measured"] = r["measured"] / full if full else None
        out["domains"][name] = {"rows": rows, "a0": a0, "replay_s": t_replay, "target_alone_pass_s": t_target,
                                "continuation_s": t_cont, "continuation_fresh": fresh,
                                "replay_vs_target_pass": t_replay / t_target,
                                "first_replay_vs_target_pass": (t_cont + t_replay) / t_target if fresh else None,
                                "over_cap_share": rep.overflow_share()}
    if args.temperature:
        out["sample"] = sample_mode(args, target, tok, draft, eos, code, freq, acc_order)
    report(out)
    print(json.dumps(out))


def sample_mode(args, target, tok, draft, eos, code, freq, acc_order) -> dict:
    """Measured vs expected accepted tokens per step in sample mode on the code prompts."""
    T = args.temperature
    prompts = bench.load_prompts(code, tok, heldout=True, limit=args.prompts)
    conts = A.target_continuations(target, prompts, eos=eos, max_new_tokens=args.max_new_tokens,
                                   workspace=args.workspace, temperature=T)
    sets = [("full", None, None)] + [("frequency", k, freq[:k]) for k in args.sample_k] + \
           [("acceptance", k, acc_order[:k]) for k in args.acceptance_k[:1]]
    t = time.perf_counter()
    ex = A.expected_replay(target, draft, conts, [s for _, _, s in sets], args.gamma, T)
    acc, steps, _ = A.expected_steps(ex, args.gamma)
    t_ex = time.perf_counter() - t
    rows = []
    for i, (rank, k, kept) in enumerate(sets):
        d = draft if kept is None else bench.trim(draft, kept)
        stats = run_head(target, d, prompts, lambda j: speculative.SpecConfig(
            gamma=args.gamma, max_new_tokens=args.max_new_tokens, eos_ids=eos, mode="sample", temperature=T,
            seed=j))
        measured = sum(sum(s.accepted) for s in stats) / sum(s.steps for s in stats)
        expected = float(acc[i] / steps[i])
        rows.append({"ranking": rank, "k": k, "measured": measured, "expected": expected,
                     "error": expected / measured - 1 if measured else None,
                     "steps_measured": sum(s.steps for s in stats)})
        log(f"sample T={T} {rank} k={k}: measured {measured:.3f} expected {expected:.3f}")
    return {"temperature": T, "rows": rows, "expected_replay_s": t_ex}


def report(out: dict) -> None:
    code, chat = out["domains"]["code"], out["domains"]["chat"]
    print(f"\naccepted draft tokens per step, gamma {out['gamma']}, {out['prompts']} prompts x "
          f"{out['max_new_tokens']} tokens per domain (share of the full head's measured)")
    print(f"{'ranking':>10} {'k':>6} | {'code C(k)':>9} {'measured':>14} {'replayed':>8} {'a0*C':>6} | "
          f"{'chat C(k)':>9} {'measured':>14} {'replayed':>8} {'a0*C':>6}")
    for a, b in zip(code["rows"], chat["rows"]):
        cells = []
        for r in (a, b):
            cells.append(f"{r['C_k']:9.3f} {r['measured']:6.3f} ({r['share_of_full_measured']:4.0%}) "
                         f"{r['replayed']:8.3f} {r['a0_C']:6.3f}")
        print(f"{a['ranking']:>10} {str(a['k'] or 'all'):>6} | {cells[0]} | {cells[1]}")
    print("\nspeed-up over the target alone, predicted (replayed steps x the full head's costs, head at k) "
          "vs measured")
    for a, b in zip(code["rows"], chat["rows"]):
        print(f"{a['ranking']:>10} {str(a['k'] or 'all'):>6} | code {a['speedup_predicted']:.2f}x vs "
              f"{a['speedup_measured']:.2f}x ({a['speedup_error']:+.1%}) | chat {b['speedup_predicted']:.2f}x vs "
              f"{b['speedup_measured']:.2f}x ({b['speedup_error']:+.1%})")
    for name, d in (("code", code), ("chat", chat)):
        if d["continuation_fresh"]:
            how = (f"the continuation made now ({d['continuation_s']:.1f} s, the target's states kept) + the replay "
                   f"{d['replay_s']:.1f} s = {d['first_replay_vs_target_pass']:.2f}x")
        else:
            how = (f"the continuation read from the workspace cache, the replay (one target pass over prompt + "
                   f"continuation, then the draft) {d['replay_s']:.1f} s = {d['replay_vs_target_pass']:.2f}x")
        print(f"{name}: replay cost vs one target-alone pass over the same prompts "
              f"({d['target_alone_pass_s']:.1f} s): {how} (goal <= 1.2x); over the cap "
              f"{d['over_cap_share']:.1%} of records")
    if "sample" in out:
        s = out["sample"]
        print(f"\nsample mode, T {s['temperature']}, code prompts: measured vs expected accepted tokens per step "
              f"(expected replay {s['expected_replay_s']:.1f} s)")
        for r in s["rows"]:
            print(f"{r['ranking']:>10} {str(r['k'] or 'all'):>6}: measured {r['measured']:.3f} "
                  f"expected {r['expected']:.3f} ({r['error']:+.1%})")


if __name__ == "__main__":
    main()
