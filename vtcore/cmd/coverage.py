"""python -m vtcore coverage: coverage figures of a counts file (k for a coverage, C at k, OOD)."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import repeatable


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("coverage", help="coverage figures of a counts file",
                       description="C(k) on both curves (in-sample: ranked and measured on all rows; held-out: "
                                   "ranked on the fit rows, measured on the held-out rows), the k a coverage "
                                   "constraint needs, and out-of-domain coverage between two domains.")
    p.add_argument("--counts", required=True, metavar="FILE.npz")
    repeatable(p, "--k", type=int, default=[], help="report C(k) (repeatable)")
    repeatable(p, "--min-coverage", type=float, default=[], metavar="C",
               help="report the smallest k with coverage >= C on each curve (repeatable)")
    p.add_argument("--ood", default=None, metavar="A:B", help="rank on domain A, measure on domain B")
    repeatable(p, "--keep", type=int, default=[], metavar="ID", help="extra token ids to always keep (repeatable)")
    p.set_defaults(func=run)
    return p


def run(args) -> dict:
    from vtcore.countsfile import load_counts
    from vtcore.coverage import k_for_coverage, out_of_domain
    from vtcore.errors import VTError

    cf = load_counts(args.counts)
    cov = cf.coverage(extra_keep=args.keep)
    V = cf.vocab_size
    for k in args.k:
        if not 0 <= k <= V:
            raise VTError(f"--k {k} is outside 0..{V} (the counts file's vocabulary)")
    ks = args.k or [1024, 2048, 4096, 8192, 16384, 32768]
    targets = args.min_coverage or [0.9, 0.95, 0.99]
    result = {
        "counts": args.counts,
        "vocab_size": V,
        "assistant_tokens": int(cf.counts.sum()),
        "domains": cf.domain_names,
        "always_keep": cov.always_keep,
        "coverage_at": {str(k): float(cov.insample[min(k, V)]) for k in ks},
        "heldout_coverage_at": {str(k): float(cov.heldout[min(k, V)]) for k in ks} if cov.heldout is not None else None,
        "k_for": {str(t): k_for_coverage(cov.insample, t) for t in targets},
        "heldout_k_for": {str(t): k_for_coverage(cov.heldout, t) for t in targets} if cov.heldout is not None else None,
    }
    if args.ood:
        a, sep, b = args.ood.partition(":")
        if not sep:
            raise VTError("--ood takes A:B (rank on domain A, measure on domain B)")
        curve = out_of_domain(cf.domain_counts(a), cf.domain_counts(b), cov.always_keep)
        result["ood"] = {"rank_on": a, "measure_on": b,
                         "coverage_at": {str(k): float(curve[min(k, V)]) for k in ks},
                         "k_for": {str(t): k_for_coverage(curve, t) for t in targets}}
    return result
