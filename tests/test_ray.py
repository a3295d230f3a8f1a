"""The Ray engine: counts identical to the local engine's, token for token (samples, a hand-made
multi-file multi-format input with bad rows, an hf: folder), the same errors, the cache keyed by
the engine, stopping that keeps nothing, and the CLI joining a running cluster by its address.

One local Ray serves every test here (conftest.ray_local); each count starts a pool of actors."""

from __future__ import annotations

import gzip
import json
import time

import numpy as np
import pytest

from tests.clihelpers import last_json, run_vtcore
from tests.conftest import SAMPLES
from vtcore.counts import KEY_FIELDS, count_dataset
from vtcore.errors import VTError
from vtcore.raycount import RayConfig

pytestmark = pytest.mark.usefixtures("ray_local")

# what counting found, beside the arrays: must be equal between the engines
FOUND = ("rows", "rows_skipped", "skipped", "assistant_tokens", "assistant_turns", "schema_detected", "mask_path",
         "mask_mode_used", "warnings", "vocab_size", "always_keep")


def assert_same_counts(local, ray) -> None:
    assert ray.domain_names == local.domain_names
    for name in ("counts", "counts_fit", "counts_heldout", "counts_by_domain"):
        assert np.array_equal(getattr(ray, name), getattr(local, name)), name
    for field in KEY_FIELDS + FOUND:
        if field != "engine":
            assert ray.manifest[field] == local.manifest[field], field
    assert (local.manifest["engine"], ray.manifest["engine"]) == ("local", "ray")


def write_jsonl(path, rows, bad_every: int = 0):
    lines = [json.dumps(r) for r in rows]
    if bad_every:   # malformed lines and rows without an assistant turn, between good rows
        for i in range(len(lines) - 1, 0, -bad_every):
            lines.insert(i, "{oops" if i % 2 else json.dumps({"messages": [{"role": "user", "content": "u"}]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def chat_rows(n: int, tag: str, domain_every: int = 0) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"messages": [{"role": "user", "content": f"question {tag} {i}"},
                            {"role": "assistant", "content": f"answer {tag}{i} " + "word " * (i % 13)}]}
        if domain_every and i % domain_every == 3:
            row["domain"] = "shared"   # a domain first seen in the middle of a later file
        rows.append(row)
    return rows


def multi_file_input(tmp_path) -> list[str]:
    import datasets
    import pandas as pd

    a = write_jsonl(tmp_path / "alpha.jsonl", chat_rows(53, "a"), bad_every=7)
    gz = tmp_path / "gamma.jsonl.gz"
    gz.write_bytes(gzip.compress(write_jsonl(tmp_path / "g.jsonl", chat_rows(31, "g", domain_every=11),
                                             bad_every=5).read_bytes()))
    pq = tmp_path / "beta.parquet"
    pd.DataFrame([{"prompt": f"p{i}", "response": f"parquet reply {i} " * (1 + i % 3)} for i in range(41)]).to_parquet(pq)
    csv = tmp_path / "delta.csv"
    pd.DataFrame([{"instruction": f"do {i}", "input": "", "output": f"done {i}"} for i in range(23)]).to_csv(csv, index=False)
    arr = tmp_path / "eps.json"
    arr.write_text(json.dumps([{"prompt": f"q{i}", "completion": f"json {i}"} for i in range(17)]))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(chat_rows(19, "s", domain_every=4)).save_to_disk(str(saved))
    folder = tmp_path / "hubdir"
    folder.mkdir()
    pd.DataFrame([{"prompt": f"hp{i}", "response": f"hub {i}"} for i in range(12)]).to_parquet(folder / "train.parquet")
    return [str(a), f"second={gz}", str(pq), str(csv), str(arr), str(saved), f"hf:{folder}"]


def test_multi_file_multi_format_input_counts_identically(tmp_path, qwen_tok, workspace):
    data = multi_file_input(tmp_path)
    local, _ = count_dataset(data, tokenizer=qwen_tok, skip_bad=True, cache=False)
    # blocks of 7 rows: block edges fall inside groups of 5 (the held-out split)
    ray, _ = count_dataset(data, tokenizer=qwen_tok, skip_bad=True, cache=False, engine="ray",
                           ray=RayConfig(block_rows=7))
    assert local.manifest["rows_skipped"] > 0 and len(local.domain_names) == 8
    assert local.domain_names.index("shared") > local.domain_names.index("second")
    assert_same_counts(local, ray)


def test_the_first_bad_row_in_file_order_is_the_error(tmp_path, qwen_tok, workspace):
    first = write_jsonl(tmp_path / "first.jsonl", chat_rows(40, "f") + [{"messages": []}])
    second = write_jsonl(tmp_path / "second.jsonl", [{"oops": 1}] + chat_rows(5, "s"))
    data = [str(first), str(second)]
    with pytest.raises(VTError) as local:
        count_dataset(data, tokenizer=qwen_tok, cache=False)
    with pytest.raises(VTError) as ray:
        count_dataset(data, tokenizer=qwen_tok, cache=False, engine="ray", ray=RayConfig(block_rows=8))
    assert str(ray.value) == str(local.value) and "first.jsonl:41" in str(ray.value)


def test_stop_ends_promptly_and_keeps_nothing(workspace):
    """The dashboard's counting job on Ray: stopped once rows are counted, it ends within seconds,
    writes no counts file (not even to the cache) and leaves the current counts as they were."""
    from vtapp import state
    from vtapp.jobs import counting_job

    job = counting_job([str(SAMPLES / "chat.jsonl.gz")], engine="ray").start()
    deadline = time.monotonic() + 90
    while not job.status()["text"].endswith("actors") or job.status()["text"].startswith("0 rows"):
        assert time.monotonic() < deadline and job.running, job.status()
        time.sleep(0.05)
    frac = job.status()["fraction"]
    asked = time.monotonic()
    job.stop()
    assert job.join(30), "the Ray count did not stop"
    assert job.state == "stopped" and job.error is None and 0 < frac < 1
    assert time.monotonic() - asked < 15
    assert not list(workspace.rglob("*.npz")) and state.load_state().counts_path is None


def test_cli_joins_the_cluster_counts_both_samples_identically_and_caches_by_engine(tmp_path, ray_local, qwen_tok,
                                                                                     session_workspace):
    """`count --engine ray --ray-address ADDR` in a fresh process joins the session's Ray (the path
    a cluster takes: vtcore shipped to the workers) and gives the local engine's counts."""
    from vtcore.countsfile import load_counts

    ws, out = tmp_path / "ws", tmp_path / "c.npz"
    data = [str(SAMPLES / "code.jsonl"), str(SAMPLES / "chat.jsonl.gz")]
    local, _ = count_dataset(data, tokenizer=qwen_tok, workspace=str(session_workspace))   # shared: read only
    address = ray_local.get_runtime_context().gcs_address
    p = run_vtcore("count", "--data", *data, "--engine", "ray", "--ray-address", address, "--out", str(out),
                   "--json", ws=ws, subprocess_=True)   # a real process joins the cluster
    r = last_json(p)
    assert r["engine"] == "ray" and not r["cache_hit"]   # the local result is not the Ray one's cache
    assert "counting" in p.stderr and "100.0%" in p.stderr
    ray = load_counts(out)
    assert_same_counts(local, ray)
    assert ray.manifest["cache_key"] != local.manifest["cache_key"]
    _, again = count_dataset(data, tokenizer=qwen_tok, workspace=str(ws), engine="ray")
    assert again["cache_hit"]
