"""Replayed vs measured acceptance of trimmed heads, side by side, on the default pair.

    python benchmarks/bench_acceptance.py [--prompts 4] [--max-new-tokens 32] [--gamma 4]
                                          [--fit-prompts 16] [--k 256 512 2144 8192]

For the embedded SmolLM2-135M-Instruct + its EAGLE-3 head, greedy, in domain (held-out prompts of
samples/code.jsonl) and out of domain (held-out prompts of samples/chat.jsonl.gz, a dataset the
head's ranking never saw):
- per k, for the frequency ranking (code fit rows) and the acceptance-aware ranking (a replay of
  the full head over --fit-prompts code fit-row prompts): the accepted draft tokens per step that
  real speculative decoding (vtcore.speculative) measures with the trimmed head, the replay's
  prediction (vtcore.acceptance) over the same prompts' target continuation, and a0 * C(k)'s;
- the replay's cost (the full draft's pass, continuations already made) vs one target-alone pass
  over the same prompts (vtcore.speculative.target_generate).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--fit-prompts", type=int, default=16)
    ap.add_argument("--k", type=int, nargs="+", default=[256, 512, 2144, 8192])
    ap.add_argument("--acceptance-k", type=int, nargs="+", default=[128, 256, 512])
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
    freq, C_code = bench.ranking(cf, eos, allowed)
    chat_cf = bench.count_data(chat, tok, args.workspace)
    chat_counts = chat_cf.counts_heldout if int(chat_cf.counts_heldout.sum()) else chat_cf.counts

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    fit = bench.load_prompts(code, tok, heldout=False, limit=args.fit_prompts)
    fit_c = A.target_continuations(target, fit, eos=eos, max_new_tokens=args.max_new_tokens, heldout=False,
                                   workspace=args.workspace)
    fit_rep = A.replay(target, draft, fit_c, args.gamma, 256)
    acc_order = A.acceptance_ranking(fit_rep, cf.counts_fit, eos, allowed)
    log(f"fit replay ({len(fit)} prompts): {time.perf_counter() - t0:.0f} s; "
        f"{int((A.accepted_scores(fit_rep) > 0).sum())} tokens accepted")
    out = {"command": " ".join(sys.argv), "threads": torch.get_num_threads(), "gamma": args.gamma,
           "prompts": args.prompts, "max_new_tokens": args.max_new_tokens, "fit_prompts": args.fit_prompts,
           "domains": {}}
    for name, data, counts in (("code (in domain)", code, bench._measured_counts(cf)), ("chat (out of domain)", chat, chat_counts)):
        prompts = bench.load_prompts(data, tok, heldout=True, limit=args.prompts)
        conts = A.target_continuations(target, prompts, eos=eos, max_new_tokens=args.max_new_tokens,
                                       workspace=args.workspace)
        # cost: one target-alone pass over the prompts vs the replay of the full draft
        sc = speculative.SpecConfig(gamma=1, max_new_tokens=args.max_new_tokens)
        t = time.perf_counter()
        for p in prompts:
            speculative.target_generate(target, p.ids, sc)
        t_target = time.perf_counter() - t
        t = time.perf_counter()
        rep = A.replay(target, draft, conts, args.gamma, 256)
        t_replay = time.perf_counter() - t
        heads = [("full", None, None)] + [("frequency", k, freq[:k]) for k in args.k] + \
                [("acceptance", k, acc_order[:k]) for k in args.acceptance_k]
        rows, a0 = [], None
        total = int(counts.sum())
        for rank, k, kept in heads:
            d = draft if kept is None else bench.trim(draft, kept)
            stats = []
            for p in prompts:
                r = speculative.speculative_generate(target, d, p.ids, speculative.SpecConfig(
                    gamma=args.gamma, max_new_tokens=args.max_new_tokens, eos_ids=eos))
                stats.append(r.stats)
            steps = sum(s.steps for s in stats)
            measured = sum(sum(s.accepted) for s in stats) / steps
            if kept is None:
                a0 = bench._acceptance(stats)
            C = 1.0 if kept is None else float(counts[np.asarray(kept)].sum() / total)
            replayed = float(A.for_set(rep, kept, args.gamma).accepted_per_step[0])
            row = {"ranking": rank, "k": k, "C_k": C, "measured": measured, "replayed": replayed,
                   "replay_error": replayed / measured - 1 if measured else None,
                   "a0_C": a0_model(a0, C, args.gamma), "a0_C_error": a0_model(a0, C, args.gamma) / measured - 1
                   if measured else None}
            rows.append(row)
            log(f"{name} {rank} k={k}: C {C:.3f} measured {measured:.3f} replayed {replayed:.3f} "
                f"a0*C {row['a0_C']:.3f}")
        full = rows[0]["measured"]
        for r in rows:
            r["share_of_full_measured"] = r["measured"] / full if full else None
        out["domains"][name] = {"rows": rows, "a0": a0, "replay_s": t_replay, "target_alone_pass_s": t_target,
                                "replay_vs_target_pass": t_replay / t_target, "over_cap_share": rep.overflow_share()}
        log(f"{name}: replay {t_replay:.1f} s vs target-alone pass {t_target:.1f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
