"""The benchmark harness and `python -m vtcore bench` on tiny random-weight Qwen3 models that
use the real bundled Qwen3 tokenizer, with prompts from samples/code.jsonl."""

import dataclasses
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from drafthelpers import tiny_pair, write_hf_draft
from vtcore import bench, benchtypes
from vtcore.errors import VTError
from vtcore.tokens import load_tokenizer
from vtcore.workspace import repo_root

pytestmark = pytest.mark.usefixtures("one_torch_thread")
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
    base = dict(target=str(tdir), draft=str(ddir), prompts=2, max_new_tokens=8, repeats=2, warmup=1, gamma=4,
                device="cpu", workspace=str(ws), threads=1, k_from="coverage", min_coverage=0.99)
    base.update(kw)
    return benchtypes.BenchConfig(**base)


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
        assert key in r.to_dict(), key   # the JSON the CLI prints and the store keeps
    assert r.device == "cpu" and r.identical_outputs is True
    for m in ("full", "trimmed"):
        for key in ("tokens_per_s", "accepted_per_step", "draft_ms_per_step", "lm_head_share", "target_ms_per_step"):
            assert getattr(r.methods()[m], key) is not None and getattr(r.methods()[m], key) >= 0, (m, key)
    assert r.target_only.tokens_per_s > 0
    # the default token map: smallest k with held-out coverage >= 0.99 of the code sample
    assert 1000 < r.k < 151669 and r.coverage_k >= 0.99
    assert r.full.accepted_per_step > 0     # the draft shares the target's first layer
    assert frac == sorted(frac) and frac[-1] == 1.0
    lines = (ws / "bench" / "results.jsonl").read_text().splitlines()
    assert len(lines) == before + 1 and json.loads(lines[-1])["k"] == r.k
    r2 = bench.run_bench(_cfg(pair, ws, k=512, repeats=1, warmup=0))
    assert r2.k == 512
    stored = bench.load_results(ws)
    assert [x.k for x in stored[before:]] == [r.k, 512]
    assert stored[-1].config["k"] == 512 and stored[-1].identical_outputs is True
    # a stored line reads back as the very result that was returned (every figure, typed)
    assert dataclasses.replace(stored[-2], time=None, config=None, results_file=r.results_file) == r
    # the CLI's human output reads the same result
    from vtcore.cmd.bench import human

    text = human(r)
    assert f"k {r.k:,}/151,936" in text and "trimmed vs full: " in text and text.endswith(f"appended to {r.results_file}")


def test_k_and_gamma_from_the_search_modules_speedup_optimum(pair, ws):
    r = bench.run_bench(_cfg(pair, ws, k_from="search", gamma=None, min_coverage=0.995, prompts=1, repeats=1,
                             save=False, acceptance_model="a0"))
    assert "vtcore.search speed-up optimum" in r.token_map
    assert "calibrated on 2 held-out prompts not benchmarked" in r.token_map
    assert r.coverage_k >= 0.995 and r.identical_outputs is True
    cal = r.calibration
    assert r.gamma_from == "search" and 1 <= r.gamma <= benchtypes.GAMMA_MAX
    assert len(cal.verify_costs) == benchtypes.GAMMA_MAX and all(v > 0 for v in cal.verify_costs)
    # the search's choice is the model's optimum for the measured costs: no other gamma predicts more
    from vtcore.search import predicted_speedup

    c = cal.draft_ms_per_token / cal.target_ms * (1 - cal.head_share * (1 - r.k / 151936))
    S = [float(predicted_speedup(cal.a0 * r.coverage_k, g, c, cal.verify_costs[g - 1]))
         for g in range(1, benchtypes.GAMMA_MAX + 1)]
    assert S[r.gamma - 1] == pytest.approx(max(S), rel=0.02)


def test_an_eagle3_checkpoint_is_benchmarked_full_vs_sub_trimmed(pair, ws, tmp_path):
    """The draft kind is read from the checkpoint; the sub-trimmed head keeps ids of the draft's own
    vocabulary; outputs stay the target's."""
    from drafthelpers import tiny_eagle3

    tdir, _, _ = pair
    draft_ids = set(range(0, 30000)) | {151643, 151645}
    for layout in ("speculators", "specforge"):
        edir = tiny_eagle3(tdir, tmp_path / layout, draft_ids, layout=layout)
        r = bench.run_bench(_cfg(pair, ws, draft=str(edir), prompts=1, repeats=1, save=False, min_coverage=0.9))
        assert r.draft_kind == "eagle3" and r.draft_vocab_size == len(draft_ids)
        assert r.identical_outputs is True and r.k < len(draft_ids)
        assert r.full.draft_ms_per_token > 0 and r.trimmed.lm_head_ms_per_token > 0
    with pytest.raises(VTError, match="30,002-token vocabulary covers at most 0.96"):
        bench.run_bench(_cfg(pair, ws, draft=str(edir), prompts=1, repeats=1, save=False))


def test_bench_stops_when_asked(pair, ws):
    before = len(bench.load_results(ws))
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    r = bench.run_bench(_cfg(pair, ws, prompts=3), should_stop=stop)
    assert r.stopped is True
    assert len(bench.load_results(ws)) == before   # a stopped run is not stored


@pytest.fixture(scope="module")
def sampled_on_auto(pair, ws):
    """One short run shared by the tests that read it: sample mode, on the device `auto` picks."""
    return bench.run_bench(_cfg(pair, ws, mode="sample", device="auto", prompts=1, repeats=1, warmup=0, save=False))


def test_sample_mode_runs_and_does_not_claim_identity(sampled_on_auto):
    r = sampled_on_auto
    assert r.identical_outputs is None and r.trimmed.tokens_per_s > 0


def test_hf_draft_directory_is_benchmarked_as_the_trimmed_draft(pair, ws, tmp_path):
    tdir, ddir, draft = pair
    kept = sorted(set(range(0, 4000)) | {151643, 151645})
    out = tmp_path / "hf-draft"
    write_hf_draft(draft, kept, out)
    load_tokenizer().save_pretrained(out)
    r = bench.run_bench(_cfg(pair, ws, draft=str(out), prompts=1, repeats=1, save=False))
    assert r.k == len(kept) and r.full is None and r.speedup_trimmed_vs_full is None
    assert r.verdict_trimmed_vs_full is None and r.verdict_trimmed_vs_target is not None
    assert r.identical_outputs is True and any("hf-draft" in n for n in r.notes)


def cli_json(capsys, *argv: str) -> dict:
    """`python -m vtcore ARGV --json` through the CLI's own entry in this process (the same parsing
    and JSON; test_the_pages_benchmark_... runs it in a process of its own): its last stdout line."""
    from vtcore.cli import main

    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_cli_with_a_token_map_prints_one_json_line(pair, ws, tmp_path, capsys):
    before = len(bench.load_results(ws))
    tdir, ddir, _ = pair
    ids = torch.tensor([151645, 151643] + list(range(100, 2100)), dtype=torch.long)
    torch.save(ids, tmp_path / "map.pt")
    r = cli_json(capsys, "bench", "--target", str(tdir), "--draft", str(ddir), "--token-map", str(tmp_path / "map.pt"),
                 "--prompts", "1", "--max-new-tokens", "6", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                 "--threads", "1", "--workspace", str(ws))
    assert r["k"] == 2002 and r["identical_outputs"] is True and r["token_map"].endswith("map.pt")
    assert len(bench.load_results(ws)) == before + 1


def test_cli_bad_inputs_exit_2_with_one_line(pair, ws, tmp_path, capsys):
    from vtcore.cli import main

    tdir, ddir, _ = pair
    torch.save(torch.tensor([1, 2, 200000]), tmp_path / "big.pt")
    common = ["bench", "--target", str(tdir), "--draft", str(ddir), "--prompts", "1", "--max-new-tokens", "2",
              "--repeats", "1", "--warmup", "0", "--workspace", str(ws)]
    codes = [main(common + ["--token-map", str(tmp_path / "big.pt")]),
             main(common + ["--device", "cuda"]) if not torch.cuda.is_available() else 2,
             main(["bench", "--target", str(tdir), "--prompts", "1"]),
             main(["bench", "--target", "some-org/some-model", "--draft", str(ddir)])]
    out, err = capsys.readouterr()
    assert codes == [2, 2, 2, 2] and out == "", err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, err                      # one line each
    assert any("token id 200000 is outside the draft's vocabulary (151936 rows" in e for e in errors), err
    if not torch.cuda.is_available():
        assert any("no CUDA device is available" in e for e in errors), err
    assert any("needs --draft" in e for e in errors), err
    assert any("some-org/some-model" in e and "local directory" in e for e in errors), err


def test_draft_with_a_different_tokenizer_is_refused(ws, tmp_path):
    tdir, ddir, _ = tiny_pair(tmp_path, extra_token=True)
    with pytest.raises(VTError, match=r"different tokenizers \(151670 vs 151669 tokens; first difference at id 151669"):
        bench.run_bench(_cfg((tdir, ddir, None), ws))


def test_auto_device_falls_back_to_cpu_and_says_so(sampled_on_auto):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: auto picks it")
    r = sampled_on_auto
    assert r.device == "cpu" and any("no CUDA device found" in n for n in r.notes)


# ---------------------------------------------------------------- the dashboard's benchmark: the CLI in a child


def test_bench_argv_is_the_cli_of_the_config(tmp_path):
    """The page runs `python -m vtcore bench` with bench_argv(cfg): parsed back, it is the same config;
    and the CLI's defaults are BenchConfig's."""
    from vtcore.cli import build_parser

    cfg = benchtypes.BenchConfig(target="/t", draft="/d", data="/x.jsonl", prompts=3, max_new_tokens=12, gamma=2,
                                 k=700, k_from="coverage", min_coverage=0.9, repeats=1, threads=1,
                                 workspace=str(tmp_path), save=False, mode="sample", temperature=0.7, seed=3)
    args = build_parser().parse_args(benchtypes.bench_argv(cfg))
    assert benchtypes.config_from_args(args) == cfg
    assert benchtypes.config_from_args(build_parser().parse_args(["bench"])) == benchtypes.BenchConfig()
    assert benchtypes.bench_argv(benchtypes.BenchConfig())[:5] == ["bench", "--prompts", "6", "--max-new-tokens", "32"]


def _wait(job, timeout=300):
    assert job.join(timeout), "the job did not end in time"
    return job.status()


def test_the_pages_benchmark_is_the_clis_run_in_a_child_process(pair, ws, tmp_path, capsys):
    """Same config, same figures' structure, same choices (k, gamma, outputs): the page's job runs
    the CLI in its own process, and its result is the CLI's JSON."""
    from vtapp.jobs import bench_job

    cfg = _cfg(pair, ws, prompts=2, repeats=1, save=False, k=900)
    job = bench_job(cfg).start()
    s = _wait(job)
    assert s["state"] == "finished", s
    page = job.result
    cli = cli_json(capsys, *benchtypes.bench_argv(cfg))
    assert set(page) == set(cli)
    for key in ("k", "gamma", "coverage_k", "identical_outputs", "draft_kind", "ci_method", "token_map"):
        assert page[key] == cli[key], key
    for m in ("target_only", "full", "trimmed"):
        assert [x["tokens"] for x in page[m]["runs"]] == [x["tokens"] for x in cli[m]["runs"]]
        assert page[m].get("accepted_per_step") == cli[m].get("accepted_per_step")
    assert job.meta["pid"] is not None and job.meta["pid"] != os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not running
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_ends_the_child_process_and_saves_nothing(pair, ws):
    import time

    from vtapp.jobs import bench_job

    before = len(bench.load_results(ws))
    job = bench_job(_cfg(pair, ws, prompts=6, repeats=3, max_new_tokens=24)).start()
    t0 = time.time()
    while (job.status()["fraction"] < 0.05 or job.meta["pid"] is None) and time.time() - t0 < 240:
        time.sleep(0.2)   # stop once it is measuring: models loaded, child busy
    pid = job.meta["pid"]
    assert pid is not None and _alive(pid)
    job.stop()
    s = _wait(job, 60)
    assert s["state"] == "stopped" and s["error"] is None
    assert not _alive(pid)
    assert len(bench.load_results(ws)) == before


def test_a_failing_child_reports_its_one_line_reason(pair, ws, tmp_path):
    from vtapp.jobs import bench_job

    job = bench_job(_cfg(pair, ws, token_map=str(tmp_path / "missing.pt"))).start()
    s = _wait(job)
    assert s["state"] == "error" and s["error"].endswith("missing.pt: token map not found"), s
    assert not _alive(job.meta["pid"])
