"""Token counts over a dataset: assistant-only ids -> np.bincount, split by domain and by
the held-out rows, with a provenance manifest and a disk cache keyed by all of it.

Speed: rows are read and rendered (Python) in batches while the previous batch is being
encoded by the Rust tokenizer, which releases the GIL and uses both cores.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

import vtcore
from vtcore.countsfile import FORMAT, CountsFile, load_counts, save_counts
from vtcore.coverage import k_for_coverage
from vtcore.data import (MAX_ROW_BYTES, ReadStats, dataset_path, dropped_parts_warning, hub_revision, parse_data_arg,
                         parse_hub, read_dataset)
from vtcore.errors import VTError
from vtcore.files import check_target, same_file
from vtcore.mask import PIECE_CHARS, AssistantTokens
from vtcore.raycount import ENGINES, RayConfig, count_ray
from vtcore.split import HELDOUT_EVERY, is_heldout
from vtcore.tally import DataSource, Tally
from vtcore.tokens import always_keep_ids, load_tokenizer, sha256_bytes, sha256_file, tokenizer_info
from vtcore.workspace import subdir

Progress = Callable[[float, str], None]
BATCH_ROWS = 1024  # rows per batch: big enough that the tokenizer call dominates, small enough to overlap
FIRST_BATCH_ROWS = 128

# manifest fields that decide the result: a cache hit needs every one to match. "engine" is
# one though the engines' counts are equal (tests/test_ray.py); "code_sha256" is the code that
# counted, so a cache made by other code (an edit to the mask, say) is never reused.
KEY_FIELDS = ("format", "datasets", "dataset_sha256", "schema", "tokenizer", "tokenizer_sha256",
              "chat_template_sha256", "mask_mode", "heldout_every", "skip_bad", "max_row_bytes", "vtcore_version",
              "engine", "code_sha256", "mode", "generate")


def counting_modules(package: Path | None = None, root: str = "counts") -> list[str]:
    """vtcore.<root> (counts) and every vtcore module it imports, directly or not: the code that makes counts."""
    package = package or Path(vtcore.__file__).parent
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or not (package / f"{name}.py").is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "vtcore":
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vtcore."):
                todo.append(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("vtcore.")]
    return sorted(seen)


def code_sha256(package: Path | None = None, root: str = "counts") -> str:
    """sha256 of the source of counting_modules(): part of every count's cache key. Of vtcore's
    own package (the default) it is read once per process. `root`: the module that counts
    ("gencount" for counts of the target's generations)."""
    if package is None:
        return _own_code_sha256(root)
    return sha256_bytes(b"".join(name.encode() + b"\0" + (package / f"{name}.py").read_bytes() + b"\0"
                                 for name in counting_modules(package, root)))


@functools.lru_cache(maxsize=4)
def _own_code_sha256(root: str = "counts") -> str:
    return code_sha256(Path(vtcore.__file__).parent, root)


def data_sources(paths: Iterable[str | DataSource | tuple]) -> list[DataSource]:
    """DataSources from --data arguments ([DOMAIN=]PATH), (path, domain) pairs or DataSources."""
    out = []
    for p in paths:
        if isinstance(p, DataSource):
            out.append(p)
        elif isinstance(p, tuple):
            out.append(DataSource(str(p[0]), p[1]))
        else:
            path, domain = parse_data_arg(str(p))
            out.append(DataSource(path, domain))
    if not out:
        raise VTError("no dataset given (--data PATH)")
    return out


def unique_sources(sources: list[DataSource]) -> tuple[list[DataSource], list[str]]:
    """The sources with a file given twice (same file, or one linked to another) kept once,
    and a warning for each one dropped: counting it twice would double its tokens."""
    kept: list[DataSource] = []
    warnings: list[str] = []
    for s in sources:
        if parse_hub(s.path) is None:
            dataset_path(s.path)
            first = next((k for k in kept if parse_hub(k.path) is None and same_file(k.path, s.path)), None)
        else:   # an hf: id: the same id twice
            first = next((k for k in kept if k.path == s.path), None)
        if first is None:
            kept.append(s)
        else:
            warnings.append(f"{s.path} was given more than once (as {first.path}): counted once")
    return kept, warnings


def dataset_sha256(path: str | Path) -> tuple[str, int]:
    """sha256 and size of a file's bytes, or of every file under a saved-dataset folder; of an
    hf: id, its local folder's files or the hub's revision, with its config and split."""
    spec = parse_hub(path)
    if spec is not None:
        if spec.local:
            sha, size = dataset_sha256(Path(spec.name).expanduser())
        else:
            sha, size = f"{spec.name}@{hub_revision(spec, str(path))}", 0
        return sha256_bytes(f"{sha}:{spec.config}:{spec.split}".encode()), size
    path = dataset_path(path)   # not found, a FIFO or a device: refused before hashing reads it
    if path.is_file():
        return sha256_file(path), path.stat().st_size
    parts, size = [], 0
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        parts.append(f"{f.relative_to(path).as_posix()}:{sha256_file(f)}")
        size += f.stat().st_size
    return sha256_bytes("\n".join(parts).encode()), size


def manifest_key(manifest: dict) -> str:
    """The cache key: a hash of the manifest's KEY_FIELDS."""
    key = {k: manifest[k] for k in KEY_FIELDS}
    return sha256_bytes(json.dumps(key, sort_keys=True).encode())[:24]


def dataset_manifest(sources: list[DataSource], tinfo, schema: str, mask: str, skip_bad: bool,
                     engine: str = "local", max_row_bytes: int = MAX_ROW_BYTES) -> tuple[dict, list[dict]]:
    """The manifest fields that decide the result (KEY_FIELDS), and each dataset's path, hash and size."""
    datasets = []
    for s in sources:
        sha, size = dataset_sha256(s.path)
        datasets.append({"path": str(s.path), "domain": s.domain, "sha256": sha, "bytes": size})
    manifest = {
        "format": FORMAT,
        "datasets": [{"sha256": d["sha256"], "domain": d["domain"]} for d in datasets],
        "dataset_sha256": sha256_bytes("".join(d["sha256"] for d in datasets).encode()),
        "schema": schema,
        "tokenizer": tinfo.name,
        "tokenizer_sha256": tinfo.sha256,
        "chat_template_sha256": tinfo.chat_template_sha256,
        "mask_mode": mask,
        "heldout_every": HELDOUT_EVERY,
        "skip_bad": bool(skip_bad),
        "max_row_bytes": int(max_row_bytes),   # decides which rows are read (or skipped as too long)
        "vtcore_version": vtcore.__version__,
        "engine": engine,
        "code_sha256": code_sha256(),
        "mode": "dataset",     # "generate": the target's responses counted (vtcore.gencount)
        "generate": None,      # then: the target, its weights' fingerprint, max_new_tokens, rows
    }
    return manifest, datasets


def cached_counts(path: Path, manifest: dict) -> CountsFile | None:
    """The cached counts file at `path` when its manifest matches on every KEY_FIELDS entry."""
    if not path.is_file():
        return None
    try:
        cf = load_counts(path)
    except VTError:
        return None   # unreadable cache entry: count again and overwrite it
    return cf if all(cf.manifest.get(k) == manifest[k] for k in KEY_FIELDS) else None


def reuse_cached(manifest: dict, workspace, cache: bool, out, force: bool, inputs: list[str], progress: Progress,
                 t0: float, warnings: list[str]) -> tuple[Path, tuple[CountsFile, dict] | None]:
    """The cache path for `manifest`, and on a hit the cached counts with their summary (written to
    `out` too when asked): the one cache lookup of every way of counting."""
    cache_path = subdir("counts", workspace) / f"{manifest_key(manifest)}.npz"
    cf = cached_counts(cache_path, manifest) if cache else None
    if cf is None:
        return cache_path, None
    progress(1.0, "cached")
    if out is not None and not same_file(out, cache_path):
        save_counts(out, cf, force=force, inputs=inputs)
    return cache_path, (cf, count_summary(cf, time.perf_counter() - t0, out or cache_path, cache_hit=True,
                                          warnings=warnings))


def count_local(sources: list[DataSource], datasets: list[dict], assistant: AssistantTokens, vocab_size: int,
                schema: str, skip_bad: bool, progress: Progress, should_stop: Callable[[], bool] | None,
                max_row_bytes: int = MAX_ROW_BYTES) -> Tally:
    """Count on this machine: rows are read and rendered (Python) in batches while the previous
    batch is encoded by the Rust tokenizer, which releases the GIL and uses both cores."""
    tally = Tally(vocab_size)
    total_bytes = sum(d["bytes"] for d in datasets) or 1
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vtcore-encode") as pool:
        pending = None  # (encoding future, keys, plan) of the batch being encoded
        for ds, src in zip(datasets, sources):
            stats = ReadStats()
            tally.reads.append(stats)
            rows = read_dataset(src.path, schema=schema, domain=src.domain, skip_bad=skip_bad, stats=stats,
                                max_row_bytes=max_row_bytes)
            size = FIRST_BATCH_ROWS
            while True:
                # small first batches: the tokenizer starts sooner, so less planning runs alone
                batch = list(itertools.islice(rows, size))
                size = min(2 * size, BATCH_ROWS)
                if not batch:
                    break
                if should_stop is not None and should_stop():
                    raise VTError("counting stopped")
                keys = [(tally.domain_index(c.domain), is_heldout(c.index)) for c in batch]
                plan = assistant.plan(batch)
                encoding = pool.submit(assistant.encode_texts, plan)
                if pending is not None:  # collect the last batch while this one encodes
                    tally.add(pending[1], assistant.collect(pending[2], pending[0].result()))
                pending = (encoding, keys, plan)
                frac = stats.position.fraction if stats.position else 0.0
                progress(min((done_bytes + frac * ds["bytes"]) / total_bytes, 0.999),
                         f"{sum(r.rows for r in tally.reads):,} rows")
            done_bytes += ds["bytes"]
        if pending is not None:
            tally.add(pending[1], assistant.collect(pending[2], pending[0].result()))
    return tally


def counts_file(tally: Tally, manifest: dict, datasets: list[dict], tok, tinfo, assistant: AssistantTokens,
                seconds: float) -> CountsFile:
    """The counts file of a finished tally, its manifest completed with what counting found."""
    rows = sum(s.rows for s in tally.reads)
    skipped: dict[str, int] = {}
    for s in tally.reads:
        for reason, n in s.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    if rows == 0:
        raise VTError("no rows to count" + (f" (all skipped: {skipped})" if skipped else ""))
    fit, held = np.sum(tally.fit, axis=0), np.sum(tally.held, axis=0)
    counts = fit + held
    warnings = [w for s in tally.reads for w in s.warnings] + assistant.stats.warnings
    warnings += [w for d, s in zip(datasets, tally.reads) if (w := dropped_parts_warning(d["path"], s.dropped_parts))]
    if assistant.stats.cuts_inside_words:
        warnings.append(f"{assistant.stats.cuts_inside_words} cuts of long texts fell inside a run of over "
                        f"{PIECE_CHARS // 2:,} characters without a space or line break: a token or two there may "
                        "differ from encoding the text whole")
    if assistant.stats.turns_unlocated:
        warnings.append(f"{assistant.stats.turns_unlocated} assistant turns were not found verbatim in the "
                        "rendered template: counted content-only")
    manifest = dict(manifest)
    manifest.update({
        "datasets_detail": datasets,
        "schema_detected": sorted({s.schema for s in tally.reads if s.schema}),
        "tokenizer_sha256_of": tinfo.sha256_of,
        "vocab_size": tally.vocab_size,
        "eos_token_id": tinfo.eos_token_id,
        "end_of_turn_id": tinfo.end_of_turn_id,
        "always_keep": always_keep_ids(tok),
        "rows": rows,
        "rows_skipped": sum(skipped.values()),
        "skipped": skipped,
        "assistant_tokens": int(counts.sum()),
        "assistant_turns": assistant.stats.turns,
        "mask_path": assistant.stats.path if assistant.mode == "template" else "content",
        "mask_mode_used": assistant.mode,
        "warnings": warnings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cache_key": manifest_key(manifest),
        "count_seconds": round(seconds, 4),
    })
    return CountsFile(counts=counts, manifest=manifest, counts_fit=fit, counts_heldout=held,
                      domain_names=list(tally.domains),
                      counts_by_domain=np.stack([f + h for f, h in zip(tally.fit, tally.held)]))


def count_dataset(paths: Sequence[str | DataSource | tuple], tokenizer=None, mask: str = "template",
                  schema: str = "auto", skip_bad: bool = False, progress: Progress | None = None,
                  cache: bool = True, workspace: str | None = None, out: str | Path | None = None,
                  should_stop: Callable[[], bool] | None = None, force: bool = False,
                  max_row_bytes: int = MAX_ROW_BYTES, engine: str = "local",
                  ray: RayConfig | None = None) -> tuple[CountsFile, dict]:
    """Count assistant-only tokens of one or more datasets.

    `tokenizer`: None (bundled Qwen3), a hub id / local dir, or a loaded fast tokenizer.
    `cache`: reuse a cached result whose manifest matches; the result is cached either way.
    `out`: also write the counts there; an existing file only with `force`, a dataset never
    (checked before counting, so a refusal costs nothing).
    `max_row_bytes`: a longer row is a bad row (memory stays bounded whatever the file holds).
    `engine`: "local" (this process) or "ray" (Ray Data, `ray` says where); equal counts.
    A file given twice is counted once, with a warning.
    Returns the counts file and a summary (rows, skipped rows and why, tokens, speed, cache hit).
    """
    t0 = time.perf_counter()
    progress = progress or (lambda frac, text="": None)
    if engine not in ENGINES:
        raise VTError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    sources, repeated = unique_sources(data_sources(paths))
    inputs = [s.path for s in sources if parse_hub(s.path) is None]   # files this command must not replace
    if out is not None:
        check_target(out, force, inputs)
    tok = tokenizer if hasattr(tokenizer, "backend_tokenizer") else load_tokenizer(tokenizer)
    tinfo = tokenizer_info(tok)
    manifest, datasets = dataset_manifest(sources, tinfo, schema, mask, skip_bad, engine, max_row_bytes)
    cache_path, hit = reuse_cached(manifest, workspace, cache, out, force, inputs, progress, t0, repeated)
    if hit is not None:
        return hit
    assistant = AssistantTokens(tok, mask)
    if engine == "ray":
        tally = count_ray(sources, datasets, tok, assistant, tinfo.vocab_size, schema, skip_bad, progress,
                          should_stop, ray, max_row_bytes)
    else:
        tally = count_local(sources, datasets, assistant, tinfo.vocab_size, schema, skip_bad, progress, should_stop,
                            max_row_bytes)
    cf = counts_file(tally, manifest, datasets, tok, tinfo, assistant, time.perf_counter() - t0)
    cf.manifest["warnings"] = repeated + cf.manifest["warnings"]
    save_counts(cache_path, cf, force=True, flag="counts cache")   # the tool's own cache entry
    if out is not None and not same_file(out, cache_path):
        save_counts(out, cf, force=force, inputs=inputs)
    progress(1.0, f"{cf.manifest['rows']:,} rows")
    return cf, count_summary(cf, time.perf_counter() - t0, out or cache_path, cache_hit=False)


SUMMARY_KS = (1024, 2048, 4096, 8192, 16384, 32768)
SUMMARY_TARGETS = (0.9, 0.95, 0.99)


def coverage_summary(cf: CountsFile) -> dict:
    """Coverage at the standard ks and the k for the standard coverage constraints, on both curves."""
    cov = cf.coverage()
    V = cf.vocab_size
    out = {
        "coverage_at": {str(k): float(cov.insample[min(k, V)]) for k in SUMMARY_KS},
        "k_for": {str(t): k_for_coverage(cov.insample, t) for t in SUMMARY_TARGETS},
        "heldout_coverage_at": ({str(k): float(cov.heldout[min(k, V)]) for k in SUMMARY_KS}
                                if cov.heldout is not None else None),
        "heldout_k_for": ({str(t): k_for_coverage(cov.heldout, t) for t in SUMMARY_TARGETS}
                          if cov.heldout is not None else None),
        "always_keep": cov.always_keep,
    }
    return out


def count_summary(cf: CountsFile, seconds: float, path, cache_hit: bool, warnings: list[str] = ()) -> dict:
    m = cf.manifest
    tokens = int(cf.counts.sum())
    info = {
        "rows": m["rows"],
        "rows_skipped": m["rows_skipped"],
        "skipped": m["skipped"],
        "assistant_tokens": tokens,
        "unique_tokens": int(np.count_nonzero(cf.counts)),
        "vocab_size": cf.vocab_size,
        "domains": {name: int(cf.counts_by_domain[i].sum()) for i, name in enumerate(cf.domain_names)},
        "heldout_tokens": int(cf.counts_heldout.sum()),
        "mask": m["mask_mode_used"],
        "tokenizer": m["tokenizer"],
        "engine": m.get("engine", "local"),
        "mode": m.get("mode", "dataset"),
    }
    info.update(coverage_summary(cf))
    info.update({
        "seconds": round(seconds, 4),
        # on a cache hit: the speed of the run that made the file
        "tokens_per_second": round(tokens / (m.get("count_seconds") if cache_hit else seconds), 1)
        if (m.get("count_seconds") if cache_hit else seconds) else None,
        "counts_path": str(path) if path is not None else None,
        "cache_hit": cache_hit,
        "warnings": [w for w in warnings if w not in m.get("warnings", [])] + m.get("warnings", []),
    })
    return info
