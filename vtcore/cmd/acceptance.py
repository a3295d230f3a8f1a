"""python -m vtcore acceptance: replay the full draft over the target's continuation and write the
acceptance file (vtcore.acceptance) that optimize, export and bench read."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class AcceptanceConfig:
    target: str | None = None      # None: the embedded SmolLM2-135M-Instruct
    draft: str | None = None       # None: its EAGLE-3 head; "standalone": its 2-layer draft
    data: str | None = None        # None: samples/code.jsonl
    gamma_max: int = 8
    prompts: int = 8               # held-out prompts: what A(k, gamma) is measured on
    fit_prompts: int = 32          # fit-row prompts: what the acceptance-aware ranking is made from (0: none)
    max_new_tokens: int = 48
    cap: int = 64
    temperature: float | None = None   # also the sample-mode expected replay at this temperature
    device: str = "auto"
    workspace: str | None = None


def register(subparsers) -> argparse.ArgumentParser:
    c = AcceptanceConfig()
    p = subparsers.add_parser(
        "acceptance", help="measure a draft's acceptance for every k (replay of the full draft)",
        description="The target's greedy continuation of held-out prompts (and of fit-row prompts, for the "
                    "acceptance-aware ranking), cached in the workspace, then one replay of the FULL draft over it "
                    "that records, per position and draft depth, the target's token and the ids the draft scores "
                    "above it. From that file A(k, gamma), the trimmed head's accepted tokens per step, follows "
                    "exactly for any kept set (greedy decoding). With no arguments: the embedded SmolLM2 pair on "
                    "samples/code.jsonl.")
    p.add_argument("--target", help="target model: local directory or hub id (default: embedded SmolLM2)")
    p.add_argument("--draft", help="draft: EAGLE-3 checkpoint or standalone draft LM (default: the embedded EAGLE-3 "
                                   "head; 'standalone': the embedded 2-layer draft)")
    p.add_argument("--data", help="dataset (default: samples/code.jsonl)")
    p.add_argument("--gamma-max", type=int, default=c.gamma_max, help=f"deepest draft position (default {c.gamma_max})")
    p.add_argument("--prompts", type=int, default=c.prompts, help=f"held-out prompts (default {c.prompts})")
    p.add_argument("--fit-prompts", type=int, default=c.fit_prompts,
                   help=f"fit-row prompts for the acceptance-aware ranking (default {c.fit_prompts}; 0: none)")
    p.add_argument("--max-new-tokens", type=int, default=c.max_new_tokens,
                   help=f"continuation length (default {c.max_new_tokens})")
    p.add_argument("--cap", type=int, default=c.cap,
                   help=f"ids recorded above the target's token; more counts as rejected (default {c.cap})")
    p.add_argument("--temperature", type=float, default=None,
                   help="also replay sample mode at this temperature: the expected accepted tokens per step of the "
                        "full head and of frequency-ranked heads (k = 256 ... 8192), for every gamma (a second pass "
                        "over a sampled continuation; not written to the file)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--workspace", help="workspace directory (default $VTCORE_WORKSPACE or ~/.cache/vocab-trim-studio)")
    p.add_argument("--out", required=True, help="the acceptance file to write (.npz)")
    p.set_defaults(func=run, human=human)
    return p


def run_acceptance(cfg: AcceptanceConfig, out: str | Path | None = None, progress=None, log=None):
    """Load the pair, continue the prompts with the target (cached), replay the full draft, write
    the acceptance file; (Replay, summary dict)."""
    import torch

    from vtcore import acceptance as A
    from vtcore import bench, models
    from vtcore.errors import VTError
    from vtcore.tokens import sha256_file

    progress = progress or (lambda f, t="": None)
    if cfg.prompts < 1 or cfg.fit_prompts < 0 or cfg.max_new_tokens < 1 or cfg.gamma_max < 1 or cfg.cap < 1:
        raise VTError("--prompts, --max-new-tokens, --gamma-max and --cap must be >= 1, --fit-prompts >= 0")
    device, _ = models.pick_device(cfg.device)
    progress(0.0, "loading models")
    target, tok, draft, tname, dname, kind = bench.load_models(
        bench.BenchConfig(target=cfg.target, draft=cfg.draft, device=cfg.device, workspace=cfg.workspace),
        device, log)
    if kind == "standalone" and draft.trimmed:
        raise VTError(f"{cfg.draft} is already trimmed: the replay needs the full-vocabulary draft")
    data = Path(cfg.data or bench.default_data())
    eos = bench.eos_ids(target, tok)
    held = bench.load_prompts(data, tok, heldout=True, limit=cfg.prompts)
    fit = bench.load_prompts(data, tok, heldout=False, limit=cfg.fit_prompts) if cfg.fit_prompts else []
    share = 0.6 * len(held) / (len(held) + len(fit))

    def part(lo: float, hi: float):
        return lambda f, t="": progress(lo + (hi - lo) * f, t)

    t0 = time.perf_counter()
    conts = A.target_continuations(target, held, eos=eos, max_new_tokens=cfg.max_new_tokens, heldout=True,
                                   workspace=cfg.workspace, progress=part(0.0, share), draft=draft)
    conts += A.target_continuations(target, fit, eos=eos, max_new_tokens=cfg.max_new_tokens, heldout=False,
                                    workspace=cfg.workspace, progress=part(share, 0.6), draft=draft)
    t_cont = time.perf_counter() - t0
    man = {"target": tname, "draft": dname, "data": str(data), "data_sha256": sha256_file(data),
           "max_new_tokens": cfg.max_new_tokens, "dtype": str(target.dtype).replace("torch.", ""),
           "target_fingerprint": A.model_fingerprint(target), "eos_ids": list(eos),
           "code": f"vtcore.acceptance v{A.ACCEPTANCE_VERSION}"}
    t1 = time.perf_counter()
    rep = A.replay(target, draft, conts, cfg.gamma_max, cfg.cap, part(0.6, 1.0), man)
    t_rep = time.perf_counter() - t1
    if out is not None:
        A.save_acceptance(out, rep)
    extra = {"continuation_s": t_cont, "replay_s": t_rep, "threads": torch.get_num_threads()}
    if cfg.temperature is not None:
        extra["sample"] = sample_summary(cfg, target, tok, draft, held, eos, data)
    progress(1.0, "done")
    return rep, A.summarize(rep, extra)


def sample_summary(cfg: AcceptanceConfig, target, tok, draft, held, eos, data) -> dict:
    """Sample mode: the expected accepted tokens per step (vtcore.acceptance.expected_replay) of the
    full head and of prefixes of the fit rows' frequency ranking, over a sampled continuation of
    the held-out prompts, for gamma = 1..gamma_max."""
    from vtcore import acceptance as A
    from vtcore import bench

    t = time.perf_counter()
    conts = A.target_continuations(target, held, eos=eos, max_new_tokens=cfg.max_new_tokens, workspace=cfg.workspace,
                                   temperature=cfg.temperature)
    allowed = bench.proposable_ids(draft)
    order, _ = bench.ranking(bench.count_data(data, tok, cfg.workspace), eos, allowed)
    ks = [k for k in (256, 512, 1024, 2048, 4096, 8192) if k < order.size]
    ex = A.expected_replay(target, draft, conts, [None] + [order[:k] for k in ks], cfg.gamma_max, cfg.temperature)
    table = {}
    for g in range(1, cfg.gamma_max + 1):
        acc, steps, _ = A.expected_steps(ex, g)
        table[g] = [float(a / s) for a, s in zip(acc, steps)]
    return {"temperature": cfg.temperature, "k": [None] + ks, "ranking": "frequency (fit rows)",
            "expected_accepted_per_step": table, "seconds": time.perf_counter() - t}


def run(args) -> dict:
    import sys

    from vtcore.cmd.common import progress_printer

    cfg = AcceptanceConfig(target=args.target, draft=args.draft, data=args.data, gamma_max=args.gamma_max,
                           prompts=args.prompts, fit_prompts=args.fit_prompts, max_new_tokens=args.max_new_tokens,
                           cap=args.cap, temperature=args.temperature, device=args.device, workspace=args.workspace)
    _, summary = run_acceptance(cfg, args.out, progress=progress_printer("acceptance"),
                                log=lambda m: print(m, file=sys.stderr, flush=True))
    return {"out": str(args.out), **summary}


def human(r: dict) -> str:
    m = r["manifest"]
    full = ", ".join(f"g={g}: {a:.3f}" for g, a in r["full_accepted_per_step"].items())
    return "\n".join([
        f"target {m['target']}  draft {m['draft']} ({m['draft_kind']})  data {m['data']}",
        f"{r['heldout_prompts']} held-out + {r['fit_prompts']} fit prompts x {m['max_new_tokens']} tokens; "
        f"gamma_max {m['gamma_max']}, cap {m['cap']} (over the cap: {r['over_cap_share']:.1%} of records)",
        f"full head, replayed accepted tokens per step: {full}",
        f"continuations {r['continuation_s']:.1f} s, replay {r['replay_s']:.1f} s",
        *([f"sample mode, T {r['sample']['temperature']}, expected accepted tokens per step (k: "
           + ", ".join(str(k or 'full') for k in r['sample']['k']) + "): "
           + "; ".join(f"g={g}: " + " ".join(f"{a:.3f}" for a in row)
                       for g, row in r['sample']['expected_accepted_per_step'].items())] if r.get("sample") else []),
        f"wrote {r['out']}"])
