"""python -m vtcore flops: where a draft's FLOPs go, and R(k) for chosen head sizes."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import repeatable


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("flops", help="FLOPs per draft token by component, LM head share, R(k)",
                       description="FLOPs per generated draft token by component at the full vocabulary, the "
                                   "LM head's share, and the latency reduction R(k) = 1 - F(k)/F(V) for each --k.")
    p.add_argument("--draft", required=True, help="preset name or path to an HF config.json (or its folder)")
    repeatable(p, "--k", type=int, default=[], metavar="K", help="trimmed head sizes to report R(k) for (repeatable)")
    p.add_argument("--latency", default="flops", choices=["flops", "paper-flops"],
                   help="flops: every component incl. attention over --context; paper-flops: the seed paper's proxy")
    p.add_argument("--context", type=int, default=1024, help="KV-cache length for attention scores (default 1024)")
    p.set_defaults(func=run, human=human)
    return p


def run(args) -> dict:
    from vtcore import cost
    from vtcore.errors import VTError

    arch = cost.resolve_draft(args.draft)
    if args.context < 0:
        raise VTError(f"--context must be >= 0, got {args.context}")
    bad = [k for k in args.k if not 1 <= k <= arch.vocab]
    if bad:
        raise VTError(f"--k must be between 1 and the draft's vocabulary {arch.vocab:,}: got {bad}")
    b = cost.flops_breakdown(arch, None, args.context, args.latency)
    total = sum(b.values())
    out = {
        "draft": arch.summary(), "vocab_size": arch.vocab, "latency_model": args.latency, "context": args.context,
        "breakdown": b, "breakdown_share": {c: v / total for c, v in b.items()},
        "lm_head_share": b["lm_head"] / total, "total_flops": total,
        "latency_reduction": {str(k): float(cost.latency_reduction(arch, k, args.context, args.latency))
                              for k in args.k},
        "total_flops_at_k": {str(k): float(cost.total_flops(arch, k, args.context, args.latency)) for k in args.k},
    }
    tf = cost.target_flops(arch, args.context, args.latency)
    if tf:
        out["target"] = arch.target
        out["target_flops"] = tf
        out["cost_ratio_full"] = total / tf   # draft step / target step, FLOPs
    return out


def human(r: dict) -> str:
    d = r["draft"]
    lines = [f"{d['name']} ({d['kind']}, hidden {d['hidden']}, {d['layers']} layer(s), vocab {r['vocab_size']:,}); "
             f"{r['latency_model']}, context {r['context']}",
             f"{'component':<12} {'MFLOPs':>12} {'share':>7}"]
    for c, v in r["breakdown"].items():
        lines.append(f"{c:<12} {v / 1e6:>12.1f} {r['breakdown_share'][c] * 100:>6.2f}%")
    lines.append(f"{'total':<12} {r['total_flops'] / 1e6:>12.1f}   LM head {r['lm_head_share'] * 100:.2f}%")
    for k, v in r["latency_reduction"].items():
        lines.append(f"R({int(k):,}) = {v:.4f}")
    if "target" in r:
        lines.append(f"cost ratio vs {r['target']} (FLOPs): {r['cost_ratio_full']:.4f}")
    return "\n".join(lines)
