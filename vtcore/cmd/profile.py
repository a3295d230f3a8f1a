"""python -m vtcore profile: measure a draft's step latency at a grid of head sizes k."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import repeatable


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("profile", help="measure draft step latency vs head size k (random weights)",
                       description="Build the draft with random weights, time one decoding step with a KV cache "
                                   "of --context tokens (and the LM head alone) at each k, save a latency profile "
                                   "that `optimize --latency PROFILE.json` uses instead of FLOPs. Quick for "
                                   "smollm2-135m-2l on a CPU (~10 s); the 1B-class and EAGLE-3 8B presets are heavy "
                                   "in float32 on a CPU (GBs of weights, minutes): prefer a GPU or a smaller --ks grid.")
    p.add_argument("--draft", required=True, help="preset name or path to an HF config.json (or its folder)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default float32 on cpu, bfloat16 on cuda")
    repeatable(p, "--ks", type=int, default=None,
                   help="head sizes to time (the full vocabulary is always added); default 256, 1024, ... , V")
    p.add_argument("--context", type=int, default=1024, help="KV-cache length (default 1024)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per k (default: fit --budget-s, 5..30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each k's timed block")
    p.add_argument("--budget-s", type=float, default=20.0, help="rough time budget when --repeats is not given")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--out", default=None, help="profile JSON path (default <workspace>/profiles/<draft>-<device>-"
                                                "<dtype>-L<context>.json, replaced by a new measurement)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(func=run, human=human)
    return p


def run(args) -> dict:
    import sys

    from vtcore import cost, profile
    from vtcore.cmd.common import progress_printer
    from vtcore.errors import VTError
    from vtcore.files import check_target
    from vtcore.workspace import subdir

    arch = cost.resolve_draft(args.draft)
    if args.out is not None:   # before measuring: a refusal should cost nothing
        check_target(args.out, args.force)
    if args.repeats is not None and args.repeats < 1:
        raise VTError(f"--repeats must be >= 1, got {args.repeats}")
    prof = profile.measure_profile(arch, device=args.device, dtype=args.dtype, ks=args.ks, context=args.context,
                                   repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                                   budget_s=args.budget_s, progress=progress_printer("profile", sys.stderr))
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in arch.name)
    out = args.out or subdir("profiles") / f"{safe}-{prof.device.replace(':', '')}-{prof.dtype}-L{prof.context}.json"
    # the default path is the workspace's latest measurement of this setting: replaced
    path = profile.save_profile(out, prof, force=args.force or args.out is None)
    effect = profile.cache_effect(prof, arch)
    # p90 / median per k: near 1 on a quiet machine; other load on the cores shows up here
    noise = max(p / m for p, m in zip(prof.step_ms_p90, prof.step_ms))
    warnings = []
    if noise > 1.5:
        warnings.append(f"noisy timings: a step's p90 is up to {noise:.1f}x its median (other load on this "
                        "machine?); rerun on a quiet machine, with --threads 1 on a shared CPU, or more --repeats")
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    return {"profile_path": str(path), "draft": arch.name, "vocab_size": prof.vocab_size, "device": prof.device,
            "device_name": prof.device_name, "dtype": prof.dtype, "threads": prof.threads,
            "torch_version": prof.torch_version, "context": prof.context, "repeats": prof.repeats,
            "ks": prof.ks, "step_ms": prof.step_ms, "head_ms": prof.head_ms, "step_ms_p90": prof.step_ms_p90,
            "cache_effect": effect["present"], "cache_effect_note": effect["note"],
            "per_row_speedup": effect["per_row_speedup"], "head_ns_per_row": effect["head_ns_per_row"],
            "latency_reduction_measured": effect["latency_reduction_measured"],
            "latency_reduction_flops": effect["latency_reduction_flops"], "noise": noise, "warnings": warnings}


def human(r: dict) -> str:
    lines = [f"{r['draft']} on {r['device']} ({r['device_name']}), {r['dtype']}, {r['threads']} thread(s), "
             f"context {r['context']}, {r['repeats']} repeats -> {r['profile_path']}",
             f"{'k':>8} {'step ms':>9} {'head ms':>9} {'ns/row':>8} {'R meas':>7} {'R flops':>7}"]
    for i, k in enumerate(r["ks"]):
        lines.append(f"{k:>8,} {r['step_ms'][i]:>9.3f} {r['head_ms'][i]:>9.3f} {r['head_ns_per_row'][k]:>8.3f} "
                     f"{r['latency_reduction_measured'][k]:>7.3f} {r['latency_reduction_flops'][k]:>7.3f}")
    lines.append(r["cache_effect_note"])
    lines += [f"warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)
