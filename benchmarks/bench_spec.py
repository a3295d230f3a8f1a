"""Speculative decoding with the embedded pair: the EAGLE-3 benchmark's goals, measured side by side.

    python benchmarks/bench_spec.py --threads 1 --ood          # default: SmolLM2 + its EAGLE-3 head
    python benchmarks/bench_spec.py --draft standalone          # its 2-layer standalone draft instead
    python benchmarks/bench_spec.py --gamma 4 --prompts 10 --repeats 3

Prints, all measured in this one run (held-out code prompts; --ood adds the chat sample):
- outputs identical: target alone, full head, trimmed head (goal: yes);
- draft step, full head vs trimmed head (goal >= 2x), and the head matmul alone;
- speculative tokens/s: trimmed vs full (goal >= 1.15x) and trimmed vs the target alone at the gamma the
  search chose (goal >= 1.1x), each with its interval and verdict;
- predicted speed-up (the replayed tokens per step with the run's mean costs) vs measured (goal: within 5%),
  its parts (ms per token, tokens per step, draft / verify / loop per step, prefill), and the search's own
  prediction from the calibration before the run;
- the full head's acceptance per draft position and accepted tokens per step (aim >= 1.5 at gamma 4).
The full result (the `python -m vtcore bench --json` object) is the last line.

    python benchmarks/bench_spec.py --tree 3,2,4 --tree 5,4,8 --chain-gamma 4   # trees (s,t,n) vs chains
    python benchmarks/bench_spec.py --tree grid                                 # the small default grid

With --tree (vtcore.treebench): target alone, chains and SGLang-style trees, full and trimmed head,
side by side: outputs identical (goal: yes), acceptance length (tokens per verify), tokens/s vs the
target alone (aim: trimmed tree >= 1.2x; trimmed >= 1.15x full at the same tree), head rows per
round (= 1 + (s-1)t), the engine cost model's predicted decode speed-up vs measured (goal: 10%) with
the round's parts (draft, verify, loop) predicted vs measured, the best tree vs the best chain, and
the engine model's choice among the measured settings (acceptance modelled from a replay) vs the
measured best.
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

from vtcore.bench import run_bench  # noqa: E402
from vtcore.benchtypes import BenchConfig  # noqa: E402
from vtcore.cmd.common import dumps, progress_printer  # noqa: E402
from vtcore.workspace import repo_root  # noqa: E402


def head_micro(W: torch.Tensor, k: int, iters: int = 200) -> dict:
    """The LM-head matmul alone, full [N, H] vs trimmed [k, H] (a contiguous copy), same h."""
    W = W.detach()
    Wk = W[:k].clone().contiguous()   # the cost depends on k alone, not on which rows
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


def ratio(r: dict, name: str) -> str:
    x, ci = r.get(f"speedup_{name}"), r.get(f"speedup_{name}_ci")
    return "-" if x is None else f"{x:.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] {r[f'verdict_{name}']}"


def _g(m: dict, key: str) -> str:
    x = m.get(key)
    return "-" if x is None else f"{x:.2f}"


def report(r: dict, label: str) -> None:
    full, trim, tgt, p = r["full"], r["trimmed"], r["target_only"], r["prediction"]
    print(f"\n[{label}] {r['prompts']} prompts x {r['repeats'] if 'repeats' in r else '?'} repeats; "
          f"held-out coverage at k {r['coverage_k']:.4f}; intervals: {r['ci_method']}")
    rows = [("draft ms per step", full["draft_ms_per_step"], trim["draft_ms_per_step"], ">= 2x"),
            ("draft ms per drafted token", full["draft_ms_per_token"], trim["draft_ms_per_token"], ""),
            ("LM head ms per drafted token", full["lm_head_ms_per_token"], trim["lm_head_ms_per_token"], ""),
            ("LM head share of the draft", full["lm_head_share"], trim["lm_head_share"], ""),
            ("accepted draft tokens per step", full["accepted_per_step"], trim["accepted_per_step"], ""),
            ("tokens/s", full["tokens_per_s"], trim["tokens_per_s"], "")]
    print(f"{'':32} {'full':>10} {'trimmed':>10} {'full/trimmed':>13}  goal")
    for name, a, b, goal in rows:
        print(f"{name:32} {a:10.3f} {b:10.3f} {a / b if b else float('nan'):12.2f}x  {goal}")
    print(f"target alone: {tgt['tokens_per_s']:.2f} tokens/s ({tgt['target_ms_per_step']:.1f} ms per token); "
          f"verify of gamma+1 tokens {trim['target_ms_per_step']:.1f} ms")
    print(f"trimmed vs full:         {ratio(r, 'trimmed_vs_full')}   (goal >= 1.15x)")
    print(f"trimmed vs target alone: {ratio(r, 'trimmed_vs_target')}   (goal >= 1.1x)")
    print(f"full vs target alone:    {ratio(r, 'full_vs_target')}")
    pred = p.get("trimmed_vs_target_with_verify_cost")
    measured = r["speedup_trimmed_vs_target"]
    if pred is not None:
        print(f"predicted ({p.get('acceptance_model')} tokens per step, the run's mean costs): {pred:.2f}x vs measured "
              f"{measured:.2f}x: {abs(pred - measured) / measured:.0%} apart (goal <= 5%)")
    if p.get("decode_ms_trimmed") is not None:
        print(f"trimmed head, ms per new token after the prefill: predicted {p['decode_ms_trimmed']:.2f} vs measured "
              f"{p['decode_ms_trimmed_measured']:.2f} (tokens per step from {p.get('acceptance_model')}: "
              f"{_g(trim, 'tokens_per_step_replayed')} vs measured {_g(trim, 'tokens_per_step')}; mean draft "
              f"{_g(trim, 'draft_ms_per_step_mean')} ms, verify {_g(trim, 'target_ms_per_step_mean')} ms, loop "
              f"{_g(trim, 'overhead_ms_per_step')} ms per step; prefill {_g(trim, 'prefill_ms_mean')} ms vs the "
              f"target's {_g(tgt, 'prefill_ms_mean')} ms)")
    if r.get("search_predicted_speedup") is not None:
        sp_ = r["search_predicted_speedup"]
        print(f"the search's own prediction before the run (calibration prompts, decode only): "
              f"{sp_:.2f}x at gamma {r.get('gamma', '?')} vs measured {measured:.2f}x: "
              f"{abs(sp_ - measured) / measured:.0%} apart")
    if r.get("search_predicted_speedup_with_prefill") is not None:
        w = r["search_predicted_speedup_with_prefill"]
        print(f"the same with the calibration's prefills (target alone vs target + draft): {w:.2f}x vs measured "
              f"{measured:.2f}x: {abs(w - measured) / measured:.0%} apart")
    print("full head acceptance by position: " + ", ".join(f"{x:.2f}" for x in full["accepted_by_position"] if x is not None)
          + f"; accepted per step {full['accepted_per_step']:.2f} at gamma {r.get('gamma', '?')} (aim >= 1.5 at 4)")
    print(f"identical outputs (target alone, full, trimmed): {r['identical_outputs']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = BenchConfig()
    ap.add_argument("--draft", default=None, help="default: the embedded EAGLE-3 head; 'standalone' its 2-layer draft")
    ap.add_argument("--prompts", type=int, default=d.prompts)
    ap.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    ap.add_argument("--gamma", type=int, default=None, help="default: the search's choice")
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--k-from", choices=["search", "coverage"], default="search")
    ap.add_argument("--min-coverage", type=float, default=d.min_coverage)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ood", action="store_true", help="also measure on samples/chat.jsonl.gz held-out prompts")
    ap.add_argument("--tree", action="append", default=None,
                    help="s,t,n: measure this SGLang-style tree (repeatable); 'grid': the default small grid")
    ap.add_argument("--chain-gamma", type=int, action="append", default=None,
                    help="with --tree: the chains to compare (repeatable; default: the search's gamma)")
    args = ap.parse_args()
    if args.tree:
        return tree_main(args)

    cfg = BenchConfig(draft=args.draft, prompts=args.prompts, max_new_tokens=args.max_new_tokens, gamma=args.gamma,
                      repeats=args.repeats, k=args.k, k_from=args.k_from, min_coverage=args.min_coverage,
                      threads=args.threads, device=args.device,
                      ood_data=str(repo_root() / "samples" / "chat.jsonl.gz") if args.ood else None)
    r = run_bench(cfg, progress=progress_printer("bench")).to_dict()   # read as the CLI's JSON
    from vtcore import models

    target = models.load_model(models.default_target_dir(), "cpu")
    n = r["draft_vocab_size"] or r["vocab_size"]
    micro = head_micro(target.get_output_embeddings().weight[:n], r["k"])
    print(f"\ndevice {r['device']} ({r['threads']} threads), draft {r['draft']} ({r['draft_kind']}), "
          f"{r['max_new_tokens']} new tokens, gamma {r['gamma']} ({r['gamma_from']}), k = {r['k']:,} of "
          f"{n:,} head rows")
    print(f"LM head matmul alone: full {micro['full']:.3f} ms, trimmed {micro['trimmed']:.3f} ms: "
          f"{micro['full'] / micro['trimmed']:.2f}x")
    report(r, "in domain: held-out code prompts")
    if "ood" in r:
        report({**r["ood"], "gamma": r["gamma"], "repeats": r["repeats"]},
               f"out of domain: {Path(r['ood']['data']).name} held-out prompts")
    r["head_micro_ms"] = micro
    print(dumps(r))


def tree_main(args) -> None:
    from vtcore.tree import parse_tree
    from vtcore.treebench import DEFAULT_TREES, run_tree_bench

    shapes = [parse_tree(",".join(map(str, t))) for t in DEFAULT_TREES] if args.tree == ["grid"] else \
        [parse_tree(t) for t in args.tree]
    cfg = BenchConfig(draft=args.draft, prompts=args.prompts, max_new_tokens=args.max_new_tokens, gamma=args.gamma,
                      repeats=args.repeats, k=args.k, k_from=args.k_from, min_coverage=args.min_coverage,
                      threads=args.threads, device=args.device, save=False)
    r = run_tree_bench(cfg, shapes, args.chain_gamma, progress=progress_printer("bench"))
    print(f"\ndevice {r['device']} ({r['threads']} threads), draft {r['draft']} ({r['draft_kind']}), k = {r['k']:,}, "
          f"{r['prompts']} prompts x {r['repeats']} repeats, {r['max_new_tokens']} new tokens; "
          f"target alone {r['target_ms_per_token']:.1f} ms per token")
    print(f"outputs identical to the target alone (every method): {r['identical_outputs']}")
    hdr = f"{'method':22} {'tok/s':>7} {'vs target [interval]':>26} {'acc len':>7} {'head rows':>9} " \
          f"{'head share':>10} {'pred':>6} {'meas':>6} {'gap':>5}  accepted by depth"
    print(hdr)
    for name, m in r["methods"].items():
        if name == "target_only":
            print(f"{name:22} {m['tokens_per_s']:7.2f}")
            continue
        ci = m["speedup_vs_target_ci"]
        pred, meas = m["predicted_decode_speedup"], m["decode_speedup_vs_target"]
        depth = " ".join(f"{x:.2f}" for x in m["accepted_by_depth"] if x is not None)
        print(f"{name:22} {m['tokens_per_s']:7.2f} {m['speedup_vs_target']:6.2f}x [{ci[0]:.2f}, {ci[1]:.2f}] "
              f"{m['verdict_vs_target']:>7} {m['acceptance_length']:7.2f} {m['head_rows_per_round']:9.2f} "
              f"{m['head_share']:10.2f} {pred:5.2f}x {meas:5.2f}x {abs(pred - meas) / meas:4.0%}  {depth}")
    print("\nthe round, predicted vs measured (ms): draft | verify | loop (the loop is measured on the method)")
    for name, m in r["methods"].items():
        if name == "target_only":
            continue
        print(f"{name:22} draft {m['predicted_draft_ms_per_round']:7.2f} / {m['measured_draft_ms_per_round']:7.2f}  "
              f"verify {m['predicted_verify_ms_per_round']:7.2f} / {m['measured_verify_ms_per_round']:7.2f}  "
              f"loop {m['loop_ms_per_round']:6.2f}"
              + (f"  (vLLM would pay its scatter: predicted {m['predicted_decode_speedup_vllm']:.2f}x)"
                 if "predicted_decode_speedup_vllm" in m else ""))
    methods = r["methods"]
    for head in ("full", "trimmed"):
        chains = {n: m for n, m in methods.items() if n.startswith("chain ") and n.endswith(head)}
        trees = {n: m for n, m in methods.items() if n.startswith("tree ") and n.endswith(head)}
        if chains and trees:
            bc = max(chains, key=lambda n: chains[n]["tokens_per_s"])
            bt = max(trees, key=lambda n: trees[n]["tokens_per_s"])
            print(f"{head}: best tree {bt} {trees[bt]['tokens_per_s']:.2f} tok/s, acceptance length "
                  f"{trees[bt]['acceptance_length']:.2f} vs best chain {bc} {chains[bc]['tokens_per_s']:.2f} tok/s, "
                  f"{chains[bc]['acceptance_length']:.2f}: {trees[bt]['tokens_per_s'] / chains[bc]['tokens_per_s']:.2f}x"
                  + (f"; vs the target alone {trees[bt]['speedup_vs_target']:.2f}x (aim >= 1.2x)"
                     if head == "trimmed" else ""))
    for s in r["trees"]:
        f, t = methods.get(f"tree {s} full"), methods.get(f"tree {s} trimmed")
        if f and t:
            print(f"tree {s}: trimmed vs full {t['tokens_per_s'] / f['tokens_per_s']:.2f}x (aim >= 1.15x)")
    sc = r.get("search") or {}
    if sc.get("error"):
        print(f"search check: not run ({sc['error']})")
    elif sc:
        print(f"acceptance length, modelled ({sc['model']}) vs measured:")
        for name, a in sc["modelled_acceptance_length"].items():
            print(f"  {name:22} {a:5.2f} vs {methods[name]['acceptance_length']:5.2f}")
        if sc.get("choice"):
            print(f"the engine model's choice (trimmed, modelled acceptance): {sc['choice']} predicted "
                  f"{sc['choice_predicted']:.2f}x, measured {sc['choice_measured']:.2f}x; the grid's measured best "
                  f"{sc['measured_best']} {sc['measured_best_speedup']:.2f}x: {sc['choice_vs_best']:.2f} of the best")
    print(f"vLLM-style full-vocabulary scatter per drafted token (CPU): {r['vllm_scatter_ms_per_token']:.3f} ms at "
          f"k = {r['k']:,} of V = {r['vocab_size']:,}")
    print(dumps(r))


if __name__ == "__main__":
    main()
