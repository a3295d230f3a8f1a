"""Counts on the target's own outputs: the tokens the target answers the dataset's prompts with,
counted as the assistant tokens (VocabTrim: the target's own generations rank better than the
dataset's answers, and they exist before any draft does).

Each row's prompt is its conversation up to its last assistant turn (the whole conversation when
it ends on a user turn), rendered with the target's chat template and generation prompt; the
target's greedy response (vtcore.acceptance.target_continuations, cached in the workspace) is
counted up to and including its first EOS, so the always-kept end-of-turn is counted as the
dataset count counts it. Tokens are the target's tokenizer's; rows keep their split (fit rows
into counts_fit, held-out rows into counts_heldout) and domain, so the result is an ordinary
counts file, cached under a key that holds the target's weights and the generation settings.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vtcore.countsfile import CountsFile, save_counts
from vtcore.counts import (code_sha256, count_dataset, count_summary, data_sources, dataset_manifest,
                           manifest_key, reuse_cached, unique_sources)
from vtcore.coverage import coverage_curve, rank_tokens
from vtcore.data import MAX_ROW_BYTES, ReadStats, parse_hub, read_dataset
from vtcore.errors import VTError
from vtcore.files import check_target, same_file
from vtcore.split import is_heldout
from vtcore.tally import DataSource, Tally
from vtcore.tokens import always_keep_ids, tokenizer_info

Progress = Callable[[float, str], None]
GENERATE_VERSION = 1           # how prompts are made and responses counted (bump when that changes)
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_ROWS = 100             # prompts per dataset
MAX_PROMPT_TOKENS = 1024       # a longer prompt is skipped (as the benchmark's prompts are)
COMPARE_KS = (256, 512, 1024, 2048, 4096, 8192)


def prompt_turns(messages: list[dict]) -> list[dict]:
    """The conversation up to its last assistant turn (all of it when none); [] without a user turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    turns = messages[:last]
    return turns if any(m["role"] == "user" for m in turns) else []


def generation_prompts(source: DataSource, tok, rows: int, schema: str = "auto", skip_bad: bool = False,
                       max_row_bytes: int = MAX_ROW_BYTES, stats: ReadStats | None = None,
                       max_prompt_tokens: int = MAX_PROMPT_TOKENS) -> list:
    """The first `rows` prompts of one dataset (vtcore.bench.Prompt each, its row and domain kept);
    rows without one (text rows, no user turn) or with a prompt over max_prompt_tokens are counted
    in `stats.skipped`."""
    from vtcore.bench import Prompt, render_prompt

    stats = stats if stats is not None else ReadStats()
    out = []
    for conv in read_dataset(source.path, schema=schema, domain=source.domain, skip_bad=skip_bad, stats=stats,
                             max_row_bytes=max_row_bytes):
        if len(out) >= rows:
            break
        turns = [] if conv.text is not None else prompt_turns(conv.messages)
        if not turns:
            stats.skip("no user turn to answer")
            continue
        ids = render_prompt(tok, turns)
        if len(ids) > max_prompt_tokens:
            stats.skip(f"prompt over {max_prompt_tokens:,} tokens")
            continue
        out.append(Prompt(ids, conv.source, conv.index, conv.domain))
    return out


def target_name(target: str | None) -> str:
    from vtcore import models

    return models.DEFAULT_TARGET if target is None or str(target).lower() in models.DEFAULT_NAMES else str(target)


def count_generated(paths: Sequence[str | DataSource | tuple], target: str | None = None, *,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, rows: int = DEFAULT_ROWS, schema: str = "auto",
                    skip_bad: bool = False, device: str = "auto", progress: Progress | None = None,
                    should_stop: Callable[[], bool] | None = None, cache: bool = True,
                    workspace: str | None = None, out: str | Path | None = None, force: bool = False,
                    max_row_bytes: int = MAX_ROW_BYTES, log: Callable[[str], None] | None = None
                    ) -> tuple[CountsFile, dict, object]:
    """Count the target's greedy responses to the first `rows` prompts of each dataset (at most
    max_new_tokens each). `target`: None (the embedded SmolLM2-135M-Instruct), a local model
    directory or a hub id already in the local cache. Cached in <workspace>/counts/ like any count
    (manifest "mode": "generate"). Returns the counts file, count_summary's dict with a
    "generate" entry, and the target's tokenizer (for counting the dataset with it)."""
    from vtcore import models
    from vtcore.acceptance import model_fingerprint, target_continuations
    from vtcore.bench import eos_ids

    t0 = time.perf_counter()
    progress = progress or (lambda frac, text="": None)
    if max_new_tokens < 1 or rows < 1:
        raise VTError(f"--max-new-tokens and --generate-rows must be >= 1, got {max_new_tokens} and {rows}")
    sources, repeated = unique_sources(data_sources(paths))
    inputs = [s.path for s in sources if parse_hub(s.path) is None]
    if out is not None:
        check_target(out, force, inputs)
    name = target_name(target)
    target_dir = models.resolve_model(target, workspace)   # a hub id not cached, offline: a clear error
    dev, _ = models.pick_device(device)
    progress(0.0, f"loading {name}")
    model = models.load_model(target_dir, dev)
    tok = models.load_tokenizer_from(target_dir)
    eos = eos_ids(model, tok)
    tinfo = tokenizer_info(tok)
    manifest, datasets = dataset_manifest(sources, tinfo, schema, "generate", skip_bad, "local", max_row_bytes)
    manifest.update({
        "mode": "generate",
        "generate": {"target": name, "target_fingerprint": model_fingerprint(model),
                     "max_new_tokens": int(max_new_tokens), "rows": int(rows), "greedy": True,
                     "eos_ids": list(eos), "max_prompt_tokens": MAX_PROMPT_TOKENS,
                     "dtype": str(model.dtype).replace("torch.", ""), "device": dev.type,
                     "version": GENERATE_VERSION},
        "code_sha256": code_sha256(root="gencount"),
    })
    cache_path, hit = reuse_cached(manifest, workspace, cache, out, force, inputs, progress, t0, repeated)
    if hit is not None:
        cf, info = hit
        return cf, {**info, "generate": generate_info(cf)}, tok

    tally = Tally(tinfo.vocab_size)
    prompts = []
    for src in sources:
        stats = ReadStats()
        tally.reads.append(stats)
        prompts += generation_prompts(src, tok, rows, schema, skip_bad, max_row_bytes, stats)
    if not prompts:
        raise VTError("no prompts to answer (rows need a user turn before their last assistant turn)")
    responses, beyond, ended = [], 0, 0
    for i, p in enumerate(prompts):
        if should_stop is not None and should_stop():
            raise VTError("counting stopped")
        c = target_continuations(model, [p], eos=eos, max_new_tokens=max_new_tokens, stop_at_eos=True,
                                 heldout=is_heldout(p.row), workspace=workspace)[0]
        ids = [t for t in c.response if t < tinfo.vocab_size]
        beyond += len(c.response) - len(ids)   # padding rows of the head: no token of the tokenizer
        ended += c.eos_at is not None
        tally.add([(tally.domain_index(p.domain), c.heldout)], [ids])
        responses.append(len(c.response))
        progress(min((i + 1) / len(prompts), 0.999), f"target response {i + 1}/{len(prompts)}")
    warnings = [w for s in tally.reads for w in s.warnings]
    if ended < len(prompts):
        warnings.append(f"{len(prompts) - ended} of {len(prompts)} responses reached --max-new-tokens "
                        f"{max_new_tokens} before an end of turn: counted cut there")
    if beyond:
        warnings.append(f"{beyond} generated tokens had ids beyond the tokenizer's {tinfo.vocab_size:,} "
                        "(the head's padding rows): not counted")
    fit, held = np.sum(tally.fit, axis=0), np.sum(tally.held, axis=0)
    skipped: dict[str, int] = {}
    for s in tally.reads:
        for reason, n in s.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    manifest.update({
        "datasets_detail": datasets, "schema_detected": sorted({s.schema for s in tally.reads if s.schema}),
        "tokenizer_sha256_of": tinfo.sha256_of, "vocab_size": tally.vocab_size,
        "eos_token_id": tinfo.eos_token_id, "end_of_turn_id": tinfo.end_of_turn_id,
        "always_keep": always_keep_ids(tok), "rows": len(prompts), "rows_skipped": sum(skipped.values()),
        "skipped": skipped, "assistant_tokens": int((fit + held).sum()), "assistant_turns": len(prompts),
        "mask_path": "generated", "mask_mode_used": "generate",
        "responses": {"prompts": len(prompts), "heldout_prompts": sum(is_heldout(p.row) for p in prompts),
                      "ended": ended, "mean_tokens": round(float(np.mean(responses)), 2)},
        "warnings": repeated + warnings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cache_key": manifest_key(manifest), "count_seconds": round(time.perf_counter() - t0, 4),
    })
    cf = CountsFile(counts=fit + held, manifest=manifest, counts_fit=fit, counts_heldout=held,
                    domain_names=list(tally.domains),
                    counts_by_domain=np.stack([f + h for f, h in zip(tally.fit, tally.held)]))
    save_counts(cache_path, cf, force=True, flag="counts cache")
    if out is not None and not same_file(out, cache_path):
        save_counts(out, cf, force=force, inputs=inputs)
    progress(1.0, f"{len(prompts):,} responses")
    info = count_summary(cf, time.perf_counter() - t0, out or cache_path, cache_hit=False)
    return cf, {**info, "generate": generate_info(cf)}, tok


def generate_info(cf: CountsFile) -> dict:
    """What was generated: the target, the settings and the responses' figures."""
    return {**cf.manifest["generate"], **cf.manifest.get("responses", {})}


def compare_heldout(generated: CountsFile, dataset: CountsFile, ks: Sequence[int] = COMPARE_KS) -> dict:
    """Held-out C(k) of the ranking made from the target's responses to the fit rows beside the
    ranking made from the dataset's fit rows, measured on the dataset's held-out assistant turns
    and on the target's held-out responses (same tokenizer: same ids)."""
    if generated.vocab_size != dataset.vocab_size:
        raise VTError(f"the generated counts have {generated.vocab_size:,} ids, the dataset's {dataset.vocab_size:,}: "
                      "count both with the target's tokenizer")
    keep = generated.always_keep
    orders = {"generated_ranking": rank_tokens(generated.counts_fit, keep),
              "dataset_ranking": rank_tokens(dataset.counts_fit, keep)}
    V = generated.vocab_size
    out: dict = {"ks": [int(k) for k in ks]}
    for where, counts in (("on_dataset_heldout", dataset.counts_heldout),
                          ("on_generated_heldout", generated.counts_heldout)):
        if not counts.sum():
            out[where] = None
            continue
        out[where] = {name: {str(k): round(float(coverage_curve(counts, order)[min(k, V)]), 4) for k in ks}
                      for name, order in orders.items()}
    out["rank_tokens"] = {"generated_ranking": int(generated.counts_fit.sum()),
                          "dataset_ranking": int(dataset.counts_fit.sum())}
    return out


def count_and_compare(paths: Sequence[str | DataSource | tuple], target: str | None = None, *,
                      compare: bool = True, mask: str = "template", **kw) -> tuple[CountsFile, dict]:
    """count_generated, then (compare) the dataset counted with the target's tokenizer (cached)
    and compare_heldout of the two in the summary's "compare" entry (None when the dataset has no
    assistant turns to count)."""
    cf, info, tok = count_generated(paths, target, **kw)
    if compare:
        try:
            data_cf, _ = count_dataset(paths, tokenizer=tok, mask=mask, schema=kw.get("schema", "auto"),
                                       skip_bad=kw.get("skip_bad", False), workspace=kw.get("workspace"),
                                       max_row_bytes=kw.get("max_row_bytes", MAX_ROW_BYTES))
            info["compare"] = compare_heldout(cf, data_cf)
        except VTError as e:
            info["compare"] = None
            info["warnings"] = info["warnings"] + [f"no comparison with the dataset's counts: {e}"]
    return cf, info
