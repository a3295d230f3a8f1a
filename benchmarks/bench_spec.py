"""Speculative decoding with the embedded SmolLM2 pair: the issue-5 goals, measured side by side.

    python benchmarks/bench_spec.py                      # code sample, greedy, gamma 4
    python benchmarks/bench_spec.py --ood                # also the chat sample (out of domain)
    python benchmarks/bench_spec.py --threads 2 --prompts 8 --max-new-tokens 96

Prints the ratios the goals are about, all measured in this one run:
- draft step: full head vs trimmed head (goal >= 2x), and the head matmul alone;
- speculative tokens/s: trimmed vs full (goal > 1), and trimmed vs the target alone;
- whether the three methods produced identical tokens (goal: yes);
- predicted vs measured speed-up.
The full result (the `python -m vtcore bench --json` object) is the last line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from vtcore.bench import BenchConfig, run_bench  # noqa: E402
from vtcore.cmd.common import dumps, progress_printer  # noqa: E402
from vtcore.workspace import repo_root  # noqa: E402


def head_micro(setup_draft, kept, iters: int = 200) -> dict:
    """The LM-head matmul alone, full [V, H] vs trimmed [k, H] (contiguous copy), same h."""
    W = setup_draft.get_output_embeddings().weight.detach()
    Wk = W.index_select(0, torch.as_tensor(kept)).contiguous()
    h = torch.randn(W.shape[1], dtype=W.dtype)
    out = {}
    with torch.inference_mode():
        for name, w in (("full", W), ("trimmed", Wk)):
            for _ in range(20):
                h @ w.t()
            t = time.perf_counter()
            for _ in range(iters):
                h @ w.t()
            out[name] = (time.perf_counter() - t) / iters * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k-from", choices=["search", "coverage"], default="search")
    ap.add_argument("--min-coverage", type=float, default=0.95)
    ap.add_argument("--coverage", type=float, default=0.99)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ood", action="store_true", help="also measure on samples/chat.jsonl.gz held-out prompts")
    args = ap.parse_args()

    cfg = BenchConfig(prompts=args.prompts, max_new_tokens=args.max_new_tokens, gamma=args.gamma,
                      repeats=args.repeats, coverage=args.coverage, k=args.k, k_from=args.k_from,
                      min_coverage=args.min_coverage, threads=args.threads,
                      device=args.device,
                      ood_data=str(repo_root() / "samples" / "chat.jsonl.gz") if args.ood else None)
    r = run_bench(cfg, progress=progress_printer("bench"))
    full, trim, tgt = r["full"], r["trimmed"], r["target_only"]

    from vtcore import models

    # the matmul's cost depends on k alone, not on which rows: time the first k rows
    micro = head_micro(models.load_model(models.default_target_dir(), "cpu"), torch.arange(r["k"]))

    p = r["prediction"]
    print(f"\ndevice {r['device']} ({r['threads']} threads), {r['prompts']} held-out code prompts x {r['repeats']} "
          f"repeats, {r['max_new_tokens']} new tokens, gamma {r['gamma']}, k = {r['k']:,} of {r['vocab_size']:,} "
          f"(held-out coverage {r['coverage_k']:.4f})")
    rows = [
        ("LM head matmul alone, ms", micro["full"], micro["trimmed"], micro["full"] / micro["trimmed"], ">= 2x"),
        ("draft ms per step (gamma tokens)", full["draft_ms_per_step"], trim["draft_ms_per_step"],
         full["draft_ms_per_step"] / trim["draft_ms_per_step"], ">= 2x"),
        ("draft ms per token", full["draft_ms_per_token"], trim["draft_ms_per_token"],
         full["draft_ms_per_token"] / trim["draft_ms_per_token"], ""),
        ("LM head share of the draft", full["lm_head_share"], trim["lm_head_share"], None, ""),
        ("accepted draft tokens per step", full["accepted_per_step"], trim["accepted_per_step"],
         trim["accepted_per_step"] / full["accepted_per_step"], ""),
        ("speculative tokens/s", full["tokens_per_s"], trim["tokens_per_s"], r["speedup_trimmed_vs_full"], "> 1x"),
    ]
    print(f"{'':36} {'full':>10} {'trimmed':>10} {'ratio':>8}  goal")
    for name, a, b, ratio, goal in rows:
        rt = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"{name:36} {a:10.3f} {b:10.3f} {rt:>8}  {goal}")
    print(f"target alone: {tgt['tokens_per_s']:.2f} tokens/s ({tgt['target_ms_per_step']:.1f} ms per token; a verify "
          f"of gamma+1 tokens: {trim['target_ms_per_step']:.1f} ms)")
    print(f"speed-up vs target alone: full {r['speedup_full_vs_target']:.2f}x, trimmed {r['speedup_trimmed_vs_target']:.2f}x "
          f"(predicted {p['trimmed_vs_target']:.2f}x by the Leviathan model with a0 = {p['a0']:.3f}, "
          f"a(k) = {p['a_k']:.3f}, c = {p['cost_ratio_trimmed']:.3f}; {p['trimmed_vs_target_with_verify_cost']:.2f}x "
          f"with the measured verify cost)")
    print(f"identical outputs (target alone, full, trimmed): {r['identical_outputs']}")
    if "ood" in r:
        o = r["ood"]
        print(f"out of domain ({Path(o['data']).name}, coverage at k {o['coverage_k']:.4f}): trimmed vs full "
              f"{o['speedup_trimmed_vs_full']:.2f}x, trimmed vs target {o['speedup_trimmed_vs_target']:.2f}x, "
              f"acceptance full {o['full']['acceptance']:.3f} / trimmed {o['trimmed']['acceptance']:.3f}, "
              f"identical {o['identical_outputs']}")
    r["head_micro_ms"] = micro
    print(dumps(r))


if __name__ == "__main__":
    main()
