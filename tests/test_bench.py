"""The benchmark harness and `python -m vtcore bench` on tiny random-weight Qwen3 models that
use the real bundled Qwen3 tokenizer, with prompts from samples/code.jsonl."""

import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from clihelpers import last_json, run_vtcore
from drafthelpers import tiny_pair, write_hf_draft
from vtcore import bench
from vtcore.errors import VTError
from vtcore.tokens import load_tokenizer
from vtcore.workspace import repo_root

torch.set_num_threads(1)
REPO = repo_root()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return tiny_pair(tmp_path_factory.mktemp("pair"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """One workspace for the module: the code sample is counted once (vtcore.counts caches it)."""
    return tmp_path_factory.mktemp("ws")


def _cfg(pair, ws, **kw):
    tdir, ddir, _ = pair
    base = dict(target=str(tdir), draft=str(ddir), prompts=2, max_new_tokens=8, repeats=2, warmup=1,
                device="cpu", workspace=str(ws), threads=1, k_from="coverage")
    base.update(kw)
    return bench.BenchConfig(**base)


def test_held_out_prompts_use_the_targets_chat_template():
    tok = load_tokenizer()
    prompts = bench.load_prompts(REPO / "samples" / "code.jsonl", tok, heldout=True, limit=3)
    assert [p.row for p in prompts] == [4, 9, 14]   # every fifth row is held out
    text = tok.decode(prompts[0].ids)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "Reply with the function body only" in text
    train = bench.load_prompts(REPO / "samples" / "code.jsonl", tok, heldout=False, limit=5)
    assert [p.row for p in train] == [0, 1, 2, 3, 5]


def test_bench_default_token_map_and_results_store(pair, ws):
    before = len(bench.load_results(ws))
    frac = []
    r = bench.run_bench(_cfg(pair, ws), progress=lambda f, t="": frac.append(f))
    for key in ("device", "target", "draft", "k", "target_only", "full", "trimmed", "speedup_trimmed_vs_full",
                "speedup_trimmed_vs_target", "predicted_speedup", "identical_outputs"):
        assert key in r, key
    assert r["device"] == "cpu" and r["identical_outputs"] is True
    for m in ("full", "trimmed"):
        for key in ("tokens_per_s", "accepted_per_step", "draft_ms_per_step", "lm_head_share", "target_ms_per_step"):
            assert r[m][key] is not None and r[m][key] >= 0, (m, key)
    assert r["target_only"]["tokens_per_s"] > 0
    # the default token map: smallest k with held-out coverage >= 0.99 of the code sample
    assert 1000 < r["k"] < 151669 and r["coverage_k"] >= 0.99
    assert r["full"]["accepted_per_step"] > 0     # the draft shares the target's first layer
    assert frac == sorted(frac) and frac[-1] == 1.0
    lines = (ws / "bench" / "results.jsonl").read_text().splitlines()
    assert len(lines) == before + 1 and json.loads(lines[-1])["k"] == r["k"]
    r2 = bench.run_bench(_cfg(pair, ws, k=512, repeats=1, warmup=0))
    assert r2["k"] == 512
    stored = bench.load_results(ws)
    assert [x["k"] for x in stored[before:]] == [r["k"], 512]
    assert stored[-1]["config"]["k"] == 512 and stored[-1]["identical_outputs"] is True


def test_k_from_the_search_modules_speedup_optimum(pair, ws):
    r = bench.run_bench(_cfg(pair, ws, k_from="search", min_coverage=0.995, prompts=1, repeats=1, save=False))
    assert "vtcore.search speed-up optimum" in r["token_map"]
    assert "calibrated on 2 held-out prompts not benchmarked" in r["token_map"]
    assert r["coverage_k"] >= 0.995 and r["identical_outputs"] is True


def test_bench_stops_when_asked(pair, ws):
    before = len(bench.load_results(ws))
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    r = bench.run_bench(_cfg(pair, ws, prompts=3), should_stop=stop)
    assert r["stopped"] is True
    assert len(bench.load_results(ws)) == before   # a stopped run is not stored


def test_sample_mode_runs_and_does_not_claim_identity(pair, ws):
    r = bench.run_bench(_cfg(pair, ws, mode="sample", prompts=1, repeats=1, save=False))
    assert r["identical_outputs"] is None and r["trimmed"]["tokens_per_s"] > 0


def test_hf_draft_directory_is_benchmarked_as_the_trimmed_draft(pair, ws, tmp_path):
    tdir, ddir, draft = pair
    kept = sorted(set(range(0, 4000)) | {151643, 151645})
    out = tmp_path / "hf-draft"
    write_hf_draft(draft, kept, out)
    load_tokenizer().save_pretrained(out)
    r = bench.run_bench(_cfg(pair, ws, draft=str(out), prompts=1, repeats=1, save=False))
    assert r["k"] == len(kept) and r["full"] is None and r["speedup_trimmed_vs_full"] is None
    assert r["identical_outputs"] is True and any("hf-draft" in n for n in r["notes"])


def test_cli_with_a_token_map_prints_one_json_line(pair, ws, tmp_path):
    before = len(bench.load_results(ws))
    tdir, ddir, _ = pair
    ids = torch.tensor([151645, 151643] + list(range(100, 2100)), dtype=torch.long)
    torch.save(ids, tmp_path / "map.pt")
    p = run_vtcore("bench", "--target", str(tdir), "--draft", str(ddir), "--token-map", str(tmp_path / "map.pt"),
                   "--prompts", "1", "--max-new-tokens", "6", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                   "--threads", "1", "--json", ws=ws)
    r = last_json(p)
    assert r["k"] == 2002 and r["identical_outputs"] is True and r["token_map"].endswith("map.pt")
    assert len(bench.load_results(ws)) == before + 1


def test_cli_bad_inputs_exit_2_with_one_line(pair, ws, tmp_path):
    tdir, ddir, _ = pair
    torch.save(torch.tensor([1, 2, 200000]), tmp_path / "big.pt")
    # several bad inputs in one process (each a fresh main() call): startup is the slow part
    code = f"""
import sys, json
from vtcore.cli import main
common = ["bench", "--target", {str(tdir)!r}, "--draft", {str(ddir)!r}, "--prompts", "1", "--max-new-tokens", "2",
          "--repeats", "1", "--warmup", "0", "--workspace", {str(ws)!r}]
print(json.dumps([main(common + ["--token-map", {str(tmp_path / 'big.pt')!r}]),
                  main(common + ["--device", "cuda"]) if not __import__("torch").cuda.is_available() else 2,
                  main(["bench", "--target", {str(tdir)!r}, "--prompts", "1"]),
                  main(["bench", "--target", "some-org/some-model", "--draft", {str(ddir)!r}])]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [2, 2, 2, 2], p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert any("token id 200000 is outside the draft's vocabulary (151936 rows" in e for e in errors), p.stderr
    if not torch.cuda.is_available():
        assert any("no CUDA device is available" in e for e in errors), p.stderr
    assert any("needs --draft" in e for e in errors), p.stderr
    assert any("some-org/some-model" in e and "local directory" in e for e in errors), p.stderr


def test_draft_with_a_different_tokenizer_is_refused(ws, tmp_path):
    tdir, ddir, _ = tiny_pair(tmp_path, extra_token=True)
    with pytest.raises(VTError, match=r"different tokenizers \(151670 vs 151669 tokens; first difference at id 151669"):
        bench.run_bench(_cfg((tdir, ddir, None), ws))


def test_auto_device_falls_back_to_cpu_and_says_so(pair, ws):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: auto picks it")
    r = bench.run_bench(_cfg(pair, ws, device="auto", prompts=1, repeats=1, warmup=0, save=False))
    assert r["device"] == "cpu" and any("no CUDA device found" in n for n in r["notes"])
