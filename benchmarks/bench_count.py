"""Counting speed: `count` in each mask mode against the raw fast tokenizer, same rows, one run.

    python benchmarks/bench_count.py [--data samples/chat.jsonl.gz] [--repeats 3]

The raw baseline is what the issue defines: tokenizers.Tokenizer.encode_batch on the
assistant contents alone, then np.bincount. The rows are read once beforehand for the
baseline; `count` is timed end to end (reading, rendering, encoding, counting), without
its disk cache. Prints the tokens/s of each and the ratio to the raw rate (medians).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="samples/chat.jsonl.gz")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
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
