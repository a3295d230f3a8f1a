"""python -m vtcore export: write the chosen token set in the formats engines read."""

from __future__ import annotations

import argparse

from vtcore.cmd.common import curve_arg, repeatable


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="export a trimmed vocabulary (SGLang token map, EAGLE-3 d2t/t2d, speculators, JSON, drafts)",
        description="Choose the kept tokens from a counts file (--k, --min-coverage or a study trial) and write them "
                    "in each requested format under --out, validated. Names are built by the tool: "
                    "token_map_sglang_k{K}.pt (sglang), vocab_mapping_eagle3_k{K}.pt (eagle3), "
                    "speculators_vocab_k{K}/d2t-{K}.npy + t2d-{K}.npy (speculators-vocab), token_ids_k{K}.json "
                    "(json), hf_draft_k{K}/ (hf-draft of a standalone draft) or eagle3_draft_k{K}/ (hf-draft of an "
                    "EAGLE-3 draft, SpecForge / SGLang layout), speculators_draft_k{K}/ (speculators: an EAGLE-3 "
                    "draft in speculators' layout, what vLLM serves), summary_k{K}.json. V, the target model's "
                    "vocabulary size, comes from --vocab-size, --target, the draft's config or a known tokenizer; "
                    "eagle3, speculators-vocab and the drafts refuse a V that is only len(tokenizer). Existing "
                    "files are kept unless --force.")
    p.add_argument("--counts", required=True, metavar="FILE.npz", help="counts file from `python -m vtcore count`")
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--k", type=int, help="keep the first k tokens of the --coverage curve's ranking "
                                            "(always-keep tokens first)")
    pick.add_argument("--min-coverage", type=float, metavar="C",
                      help="keep the smallest k whose coverage on the --coverage curve is >= C")
    pick.add_argument("--from-study", metavar="NAME", help="take k from a trial of a saved study (with --trial); "
                                                           "the curve is the study's")
    p.add_argument("--trial", type=_trial, metavar="T|best",
                   help="trial number in --from-study, or 'best' (the best feasible trial)")
    p.add_argument("--coverage", type=curve_arg, default="heldout", metavar="CURVE",
                   help="heldout (default): rank on the fit rows, coverage measured on the held-out rows; "
                        "insample: rank and measure on all rows. The exported ids are that curve's ranking")
    repeatable(p, "--format", metavar="FMT",
               help="sglang | eagle3 | speculators-vocab | json | hf-draft | speculators | all (repeatable; default "
                    "all: hf-draft only with a --draft directory, speculators only with an EAGLE-3 --draft and a "
                    "verifier)")
    p.add_argument("--vocab-size", type=int, metavar="V",
                   help="the target model's vocabulary size (its config's vocab_size, e.g. 151936 for Qwen3)")
    p.add_argument("--target", metavar="CONFIG|DIR|HUB_ID|PRESET",
                   help="the target model, for V: its config.json, model directory, hub id (only its config.json is "
                        "read) or a preset; a directory or hub id is also the verifier of --format speculators")
    p.add_argument("--draft", metavar="DIR|HUB_ID|PRESET|default",
                   help="the draft: a model directory or hub id to trim (hf-draft; an EAGLE-3 draft in SpecForge / "
                        "SGLang or speculators layout is sub-trimmed, and --format speculators writes it in "
                        "speculators' layout), 'default' (the bundled EAGLE-3 head for SmolLM2-135M-Instruct, its "
                        "tied head cut from the target's embedding), 'standalone' (the bundled 2-layer SmolLM2 "
                        "draft), or a cost preset / config.json (for V and the FLOPs latency estimate only). A bundled "
                        "draft brings the default target when --target is not given. When the draft cannot be "
                        "exported the token maps are still written and the command exits 2 with the reason")
    p.add_argument("--tokenizer", metavar="NAME|DIR",
                   help="check the set keeps this tokenizer's EOS / end-of-turn and that the counts were made with it")
    repeatable(p, "--keep", type=int, metavar="ID", help="extra token ids to always keep (repeatable)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <workspace>/exports)")
    p.add_argument("--force", action="store_true", help="overwrite existing files of the same names")
    p.add_argument("--ranking", choices=["frequency", "acceptance"], default="frequency",
                   help="frequency (default): the --coverage curve's ranking; acceptance: tokens the full draft gets "
                        "accepted on in --acceptance FILE's fit-row replay first, the rest by fit-row frequency "
                        "(with --k)")
    p.add_argument("--acceptance", metavar="FILE.npz", help="acceptance file (python -m vtcore acceptance)")
    p.set_defaults(func=run, human=human)
    return p


def _trial(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a trial number or 'best', not {text!r}") from None


def run(args) -> dict:
    from vtcore import export as ex
    from vtcore import selection as pick
    from vtcore.countsfile import load_counts
    from vtcore.errors import VTError
    from vtcore.workspace import subdir

    if args.from_study is not None and args.trial is None:
        raise VTError("--from-study needs --trial T (the trial number to export)")
    if args.trial is not None and args.from_study is None:
        raise VTError("--trial only goes with --from-study NAME")
    cf = load_counts(args.counts)
    if args.ranking == "acceptance":
        choice = _acceptance_choice(cf, args)
    elif args.k is not None:
        choice = pick.choose_k(cf, args.k, args.coverage, args.keep)
    elif args.min_coverage is not None:
        choice = pick.choose_min_coverage(cf, args.min_coverage, args.coverage, args.keep)
    else:
        choice = pick.choose_from_study(cf, args.from_study, args.trial, extra_keep=args.keep)
    tok = {}
    if args.tokenizer is not None:
        from vtcore.validate import tokenizer_expectations

        tok = tokenizer_expectations(args.tokenizer)
        if tok["tokenizer_vocab"] != cf.vocab_size:
            raise VTError(f"tokenizer {args.tokenizer} has {tok['tokenizer_vocab']} tokens but the counts file "
                          f"{args.counts} was made with a {cf.vocab_size}-token tokenizer")
        tok.pop("tokenizer_vocab")
    bundle = ex.export(choice, args.format, vocab_size=args.vocab_size, target=args.target, draft=args.draft, **tok)
    out = args.out if args.out is not None else subdir("exports")
    paths = ex.write_bundle(bundle, out, force=args.force, inputs=[args.counts])
    if bundle.draft_error is not None:
        # the token maps are written; the draft the user asked for is not: a failure, said in one line
        raise VTError(f"the draft was not exported ({bundle.draft_error}); the token maps were written: "
                      + ", ".join(str(p) for p in paths.values()))
    warnings = list(bundle.warnings)
    if choice.extra.get("counts_checked") is False:
        warnings.append(f"study {args.from_study} does not record which counts it was run on (made before vtcore "
                        "recorded it): check it was made with these")
    if choice.extra.get("feasible") is False:
        warnings.append(f"{choice.how} violates the study's constraint (coverage >= {choice.extra.get('min_coverage')}); "
                        "'--trial best' picks the best feasible trial")
    return {
        "files": {fmt: str(p) for fmt, p in paths.items()},
        "k": choice.k,
        "coverage": ex.coverage_doc(choice),
        "vocab_size": bundle.vocab_size,
        "vocab_size_from": bundle.vocab_source,
        "vocab_size_guessed": bundle.vocab.guessed,
        "chosen_by": choice.how,
        "latency_reduction": bundle.choice.extra.get("latency_reduction"),
        "latency_estimate": bundle.choice.extra.get("latency_estimate"),
        "validated": bundle.validated,
        "problems": bundle.problems,
        "warnings": warnings,
        "notes": bundle.notes,
        "retrain_needed": bundle.retrain_needed,
        "reports": [a.report.as_dict() for a in bundle.artifacts.values()],
    }


def _acceptance_choice(cf, args):
    """The first --k ids of the acceptance-aware ranking of --acceptance FILE."""
    from vtcore import acceptance
    from vtcore import selection as pick
    from vtcore.errors import VTError

    if not args.acceptance or args.k is None:
        raise VTError("--ranking acceptance needs --acceptance FILE and --k K")
    rep = acceptance.load_acceptance(args.acceptance)
    try:
        order = acceptance.ranking_for(rep, cf.counts_fit, cf.always_keep + list(args.keep or []), "acceptance")
    except VTError as e:
        raise VTError(f"{args.acceptance}: {e}") from None
    if not 1 <= args.k <= order.size:
        raise VTError(f"--k must be between 1 and {order.size}, got {args.k}")
    how = f"k given, acceptance-aware ranking ({args.acceptance}: {int((~rep.heldout).sum())} fit-row prompts replayed)"
    return pick.choose_ranked(cf, order, args.k, "acceptance", how=how)


def human(r: dict) -> str:
    cov = r["coverage"]
    at_k = "" if cov["at_k"] is None else f"{cov['curve']} C(k) {cov['at_k']:.4f}, "
    held = "n/a" if cov["heldout_rows"] is None else f"{cov['heldout_rows']:.4f}"
    lat = "" if r["latency_reduction"] is None else f", latency reduction {r['latency_reduction']:.3f}"
    lines = [f"k = {r['k']} ({r['chosen_by']}), {at_k}covers {cov['all_rows']:.4f} of all rows and {held} of the "
             f"held-out rows{lat}, V = {r['vocab_size']} ({r['vocab_size_from']})"]
    lines += [f"  {fmt:8s} {path}" for fmt, path in r["files"].items()]
    lines.append("validated: " + ("yes" if r["validated"] else "NO"))
    lines += [f"  problem: {p}" for p in r["problems"]]
    lines += [f"  warning: {w}" for w in r["warnings"]]
    lines += [f"  note: {n}" for n in r["notes"]]
    return "\n".join(lines)
