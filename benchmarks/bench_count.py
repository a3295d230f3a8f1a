"""Counting speed: `count` in each mask mode against the raw fast tokenizer, same rows, one run.

    python benchmarks/bench_count.py [--data samples/chat.jsonl.gz] [--repeats 3]
    python benchmarks/bench_count.py --engine ray [--data samples/chat.jsonl.gz] [--repeats 3]

With --engine ray: the local and the Ray engine side by side, each on the data once (1x) and
three times over in one file (3x), interleaved. The marginal rate (tokens per extra second from
1x to 3x) leaves the start-up out; the start-up is what the 1x run took beyond its tokens at
the marginal rate, and starting Ray itself (once per process) is timed apart. The goal: Ray's
marginal rate >= 0.7x the local engine's on this machine.

The raw baseline: tokenizers.Tokenizer.encode_batch on the
assistant contents alone, then np.bincount. The rows are read once beforehand for the
baseline; `count` is timed end to end (reading, rendering, encoding, counting), without
its disk cache. Prints the tokens/s of each and the ratio to the raw rate (medians).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vtcore.counts import count_dataset  # noqa: E402
from vtcore.data import read_dataset  # noqa: E402
from vtcore.raycount import RayConfig, connect  # noqa: E402
from vtcore.tokens import load_tokenizer  # noqa: E402


def raw_rate(tok, contents: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    encs = tok.backend_tokenizer.encode_batch(contents, add_special_tokens=False)
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype=np.int64)
    np.bincount(ids, minlength=len(tok))
    dt = time.perf_counter() - t
    return ids.size / dt, ids.size


def count_rate(data: str, tok, mask: str, ws: str) -> tuple[float, int]:
    t = time.perf_counter()
    cf, _ = count_dataset([data], tokenizer=tok, mask=mask, cache=False, workspace=ws)
    dt = time.perf_counter() - t
    return cf.counts.sum() / dt, int(cf.counts.sum())


def timed_count(data: str, tok, engine: str, ws: str, actors: int | None = None) -> tuple[float, int, np.ndarray]:
    t = time.perf_counter()
    cf, _ = count_dataset([data], tokenizer=tok, cache=False, workspace=ws, engine=engine,
                          ray=RayConfig(actors=actors))
    return time.perf_counter() - t, int(cf.counts.sum()), cf.counts


def tripled(data: str, folder: str) -> str:
    """The dataset's lines three times over, in one file (the rows' split and domains repeat)."""
    raw = gzip.open(data, "rb").read() if data.endswith(".gz") else Path(data).read_bytes()
    raw = raw if raw.endswith(b"\n") else raw + b"\n"
    out = Path(folder) / ("x3-" + Path(data).name)
    out.write_bytes(gzip.compress(raw * 3, compresslevel=1) if data.endswith(".gz") else raw * 3)
    return str(out)


def ray_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def engines(args) -> dict:
    """Local and Ray engines side by side: marginal rates (1x -> 3x), start-up costs, the ratio."""
    tok = load_tokenizer()
    t = time.perf_counter()
    connect(args.ray_address)
    ray_init = time.perf_counter() - t
    runs: dict[tuple[str, int], list[float]] = {(e, n): [] for e in ("local", "ray") for n in (1, 3)}
    tokens: dict[int, int] = {}
    reference: dict[int, np.ndarray] = {}   # the local engine's counts: Ray's must equal them
    with tempfile.TemporaryDirectory() as ws:
        data = {1: args.data, 3: tripled(args.data, ws)}
        timed_count(args.data, tok, "local", ws)  # warm-up: template compile, caches
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both engines alike
            for engine in ("local", "ray"):
                for n in (1, 3):
                    dt, tokens[n], counts = timed_count(data[n], tok, engine, ws, args.ray_actors)
                    runs[engine, n].append(dt)
                    if not np.array_equal(reference.setdefault(n, counts), counts):
                        raise SystemExit(f"{engine} counts differ from the local engine's on {data[n]}")
    med = {k: statistics.median(v) for k, v in runs.items()}
    marginal = {e: (tokens[3] - tokens[1]) / (med[e, 3] - med[e, 1]) for e in ("local", "ray")}
    startup = {e: med[e, 1] - tokens[1] / marginal[e] for e in ("local", "ray")}
    return {
        "data": args.data,
        "cpus": os.cpu_count(),
        "ray_cluster_cpus": ray_cpus(),
        "ray_actors": args.ray_actors or ray_cpus(),
        "tokens": {"1x": tokens[1], "3x": tokens[3]},
        "seconds_median": {f"{e}_{n}x": round(med[e, n], 2) for e, n in med},
        "seconds_all": {f"{e}_{n}x": [round(x, 2) for x in v] for (e, n), v in runs.items()},
        "marginal_tokens_per_s": {e: round(v) for e, v in marginal.items()},
        "ratio_ray_vs_local_marginal": round(marginal["ray"] / marginal["local"], 3),
        "startup_s": {e: round(v, 2) for e, v in startup.items()},
        "ray_init_s": round(ray_init, 2),
        "goal": "ratio_ray_vs_local_marginal >= 0.7",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="samples/chat.jsonl.gz")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="ray: the local and the Ray engine side by side (marginal rates, start-up)")
    ap.add_argument("--ray-address", default=None, help="with --engine ray: a running cluster (default: a local Ray)")
    ap.add_argument("--ray-actors", type=int, default=None, help="with --engine ray: tokenizer actors (default: one per CPU)")
    args = ap.parse_args()
    if args.engine == "ray":
        print(json.dumps(engines(args), indent=1))
        return
    tok = load_tokenizer()
    contents = [m["content"] for c in read_dataset(args.data) for m in c.messages if m["role"] == "assistant"]
    rates: dict[str, list[float]] = {"raw": [], "template": [], "content": []}
    tokens = {}
    with tempfile.TemporaryDirectory() as ws:
        count_rate(args.data, tok, "template", ws)  # warm-up: template compile, caches
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits all three alike
            for name in rates:
                r, n = raw_rate(tok, contents) if name == "raw" else count_rate(args.data, tok, name, ws)
                rates[name].append(r)
                tokens[name] = n
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "data": args.data,
        "cpus": os.cpu_count(),
        "tokens": tokens,
        "tokens_per_s": {k: round(v) for k, v in med.items()},
        "ratio_template_vs_raw": round(med["template"] / med["raw"], 3),
        "ratio_content_vs_raw": round(med["content"] / med["raw"], 3),
        "goal": "template >= 0.5, content >= 0.8",
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
