"""Objectives, the exact frontier, and the background TPE study runner (vtcore.search,
`python -m vtcore optimize`). Coverage comes from real counts of samples/code.jsonl."""

import gzip
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clihelpers import last_json, run_vtcore
from vtcore import cost, search, studies  # noqa: E402
from vtcore.countsfile import CountsFile, load_counts, save_counts  # noqa: E402
from vtcore.errors import VTError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _count_code_sample(out: Path) -> Path:
    """Counts of the assistant turns of samples/code.jsonl with the bundled Qwen3 tokenizer."""
    try:
        from vtcore.counts import count_dataset
    except ImportError:
        count_dataset = None
    if count_dataset is not None:
        cf, _ = count_dataset([str(ROOT / "samples" / "code.jsonl")], cache=False, workspace=str(out.parent))
        return save_counts(out, cf)
    import tokenizers

    from vtcore.split import is_heldout

    raw = gzip.decompress((ROOT / "vtcore/assets/qwen3/tokenizer.json.gz").read_bytes()).decode()
    tok = tokenizers.Tokenizer.from_str(raw)
    V = tok.get_vocab_size(with_added_tokens=True)
    rows = [json.loads(line) for line in (ROOT / "samples/code.jsonl").read_text().splitlines() if line.strip()]
    texts = ["".join(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in rows]
    fit, held = np.zeros(V, np.int64), np.zeros(V, np.int64)
    for i, enc in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        np.add.at(held if is_heldout(i) else fit, enc.ids, 1)
    return save_counts(out, CountsFile(counts=fit + held, manifest={"source": "samples/code.jsonl"},
                                       counts_fit=fit, counts_heldout=held))


@pytest.fixture(scope="module")
def counts_path(tmp_path_factory) -> Path:
    return _count_code_sample(tmp_path_factory.mktemp("counts") / "code.npz")


@pytest.fixture(scope="module")
def qwen_problem_parts(counts_path):
    cf = load_counts(counts_path)
    arch = cost.preset("qwen3-0.6b")
    cov = cf.coverage()
    C = search.pad_curve(cov.curve("heldout"), arch.vocab)
    R = cost.latency_reduction(arch, np.arange(arch.vocab + 1))
    return C, R, arch


@pytest.fixture()
def ws(tmp_path, monkeypatch):
    monkeypatch.setenv("VTCORE_WORKSPACE", str(tmp_path))
    return tmp_path


# --- objective functions ----------------------------------------------------------------------

def test_predicted_speedup_formula_and_limits():
    a, g, c = 0.8, 4, 0.1
    assert float(search.predicted_speedup(a, g, c)) == pytest.approx((1 - a ** 5) / ((1 - a) * (g * c + 1)))
    assert float(search.predicted_speedup(1.0, 4, 0.1)) == pytest.approx(5 / 1.4)
    assert float(search.predicted_speedup(1 - 1e-9, 4, 0.1)) == pytest.approx(5 / 1.4, rel=1e-6)   # continuous
    assert float(search.predicted_speedup(0.0, 3, 0.2)) == pytest.approx(1 / 1.6)   # nothing accepted: slower
    assert float(search.predicted_speedup(0.0, 4, 0.1)) == pytest.approx(1 / 1.4)
    assert float(search.predicted_speedup(1.0, 4, 0.0)) == pytest.approx(5.0)
    # a verify of gamma+1 tokens that costs 1.75 target steps (as measured on a CPU)
    assert float(search.predicted_speedup(a, g, c, verify_cost=1.75)) == pytest.approx(
        (1 - a ** 5) / ((1 - a) * (g * c + 1.75)))
    S = search.predicted_speedup(np.array([0.5, 0.7, 0.9])[None, :], np.arange(1, 5)[:, None], 0.05)
    assert S.shape == (4, 3) and np.all(np.diff(S, axis=1) > 0)   # higher acceptance, faster


def test_pareto_mask_equals_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 60))
        C = rng.integers(0, 8, n) / 8.0   # coarse values: many ties and flat stretches
        R = rng.integers(0, 8, n) / 8.0
        brute = []
        for i in range(n):
            dominated = any((C[j] >= C[i] and R[j] >= R[i] and (C[j] > C[i] or R[j] > R[i])) for j in range(n))
            duplicate_before = any(C[j] == C[i] and R[j] == R[i] for j in range(i))
            brute.append(not dominated and not duplicate_before)
        assert search.pareto_mask(C, R).tolist() == brute


def test_flat_coverage_keeps_only_the_smallest_k():
    # C rises, is flat over k = 3..6, rises again; R falls with k: k = 4, 5, 6 are dominated by k = 3
    C = np.array([0.1, 0.3, 0.5, 0.5, 0.5, 0.5, 0.9])
    R = np.linspace(0.9, 0.0, 7)
    assert np.flatnonzero(search.pareto_mask(C, R)).tolist() == [0, 1, 2, 6]


def _random_curves(rng, V=400):
    counts = np.sort(rng.zipf(1.3, V).astype(float))[::-1]
    counts[rng.random(V) < 0.3] = 0   # unseen tokens make flat stretches
    C = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    R = 0.6 * (1 - np.arange(V + 1) / V)
    return C, R


def _random_problem(rng, V=400, objective="utility", **kw):
    C, R = _random_curves(rng, V)
    return search.Problem(C, R, objective=objective, **kw)


def test_exact_equals_brute_force_loop():
    rng = np.random.default_rng(1)
    for trial in range(20):
        C, R = _random_curves(rng)
        alpha = float(rng.uniform(0, 1))
        kmin = int(rng.integers(1, 100))
        kmax = int(rng.integers(kmin, 401))
        cmin = float(rng.uniform(0, C[kmax]))
        p = search.Problem(C, R, alpha=alpha, min_coverage=cmin, k_min=kmin, k_max=kmax)
        best_k, best_u = None, -np.inf
        for k in range(kmin, kmax + 1):
            c, r = C[k], R[k]
            u = alpha * c + (1 - alpha) * r
            if c >= cmin and u > best_u:
                best_k, best_u = k, u
        ex = search.solve_exact(p)
        assert ex.best_k == best_k and ex.utility == pytest.approx(best_u)
        assert ex.coverage >= cmin
        assert all(C[k] >= cmin for k in ex.frontier_k)
        assert kmin <= ex.frontier_k.min() and ex.frontier_k.max() <= kmax
        # the frontier is exactly the brute-force non-dominated feasible set
        feas = [k for k in range(kmin, kmax + 1) if C[k] >= cmin]
        brute = [k for k in feas if not any((C[j] >= C[k] and R[j] >= R[k] and (C[j] > C[k] or R[j] > R[k]))
                                            for j in feas)]
        assert ex.frontier_k.tolist() == brute


def test_exact_speedup_equals_brute_force_loop():
    rng = np.random.default_rng(2)
    p = _random_problem(rng, objective="speedup", a0=0.8, cost_ratio_full=0.3, gamma_min=1, gamma_max=6,
                        min_coverage=0.5)
    best = (None, None, -np.inf)
    for k in range(p.k_min, p.k_max + 1):
        if p.coverage[k] < p.min_coverage:
            continue
        a = 0.8 * p.coverage[k]
        c = 0.3 * (1 - p.reduction[k])
        for g in range(1, 7):
            s = (1 - a ** (g + 1)) / ((1 - a) * (g * c + 1))
            if s > best[2]:
                best = (k, g, s)
    ex = search.solve_exact(p)
    assert (ex.best_k, ex.best_gamma) == best[:2] and ex.speedup == pytest.approx(best[2])
    assert p.evaluate(ex.best_k, ex.best_gamma)["speedup"] == pytest.approx(best[2])


def test_problem_rejects_bad_input():
    rng = np.random.default_rng(3)
    with pytest.raises(VTError, match="alpha must be in"):
        _random_problem(rng, alpha=1.5)
    with pytest.raises(VTError, match="larger than --k-max"):
        _random_problem(rng, k_min=300, k_max=200)
    with pytest.raises(VTError, match="best reachable is"):
        _random_problem(rng, k_max=5, min_coverage=0.999)
    with pytest.raises(VTError, match="cost ratio"):
        _random_problem(rng, objective="speedup")
    with pytest.raises(VTError, match="exceeds the draft"):
        _random_problem(rng, k_max=10_000)


def test_padded_vocab_counts_as_unused(counts_path):
    cf = load_counts(counts_path)
    q = cost.preset("qwen3-0.6b")
    curve = cf.coverage().curve("insample")
    padded = search.pad_curve(curve, q.vocab)
    assert cf.vocab_size == 151669 and padded.shape == (151937,)
    assert np.array_equal(padded[:151670], curve) and np.all(padded[151669:] == 1.0)
    with pytest.raises(VTError, match="49,152"):
        search.pad_curve(curve, cost.preset("smollm2-135m-2l").vocab)


# --- the runner on real coverage -----------------------------------------------------------------

def test_tpe_regret_small_and_constraint_holds(qwen_problem_parts, ws):
    C, R, arch = qwen_problem_parts
    p = search.Problem(C, R, alpha=0.5, min_coverage=0.9)
    ex = search.solve_exact(p)
    runner = studies.StudyRunner(p, "regret", n_trials=100, seed=42)
    runner.run()
    s = studies.summarize(runner, ex)
    assert s["state"] == "finished" and s["n_trials"] == 100
    assert s["coverage"] >= 0.9 and ex.coverage >= 0.9
    assert 0 <= s["regret"] < 0.005, s
    assert all(pt["coverage"] >= 0.9 for pt in s["pareto"])
    assert s["coverage_source"] == "heldout"
    for row in runner.snapshot():   # a trial is feasible exactly when its coverage meets the constraint
        assert row["feasible"] == (row["coverage"] >= 0.9)


def test_speedup_search_close_to_exact(qwen_problem_parts, ws):
    C, R, arch = qwen_problem_parts
    ratio = float(cost.total_flops(arch, arch.vocab)) / cost.target_flops(arch)
    p = search.Problem(C, R, objective="speedup", a0=0.7, cost_ratio_full=ratio, gamma_max=8)
    ex = search.solve_exact(p)
    runner = studies.StudyRunner(p, "speed", n_trials=80, seed=1).run()
    s = studies.summarize(runner, ex)
    assert s["best_gamma"] is not None and 1 <= s["best_gamma"] <= 8
    assert s["predicted_speedup"] <= ex.speedup + 1e-12
    assert s["regret"] / ex.speedup < 0.02
    assert s["predicted_speedup"] == pytest.approx(p.evaluate(s["best_k"], s["best_gamma"])["speedup"])


def test_pareto_study_front_is_nondominated(qwen_problem_parts, ws):
    C, R, arch = qwen_problem_parts
    p = search.Problem(C, R, objective="pareto", min_coverage=0.8)
    runner = studies.StudyRunner(p, "front", n_trials=60, seed=0).run()
    s = studies.summarize(runner, search.solve_exact(p))
    front = s["trial_pareto"]
    assert front and all(pt["coverage"] >= 0.8 for pt in front)
    # optuna's own Pareto front (constraint-aware) agrees with ours
    assert sorted(t.number for t in runner.study.best_trials) == sorted(pt["number"] for pt in front)
    assert 0 < s["hypervolume_ratio"] <= 1 + 1e-9


def test_stop_works_mid_run(qwen_problem_parts, ws):
    C, R, _ = qwen_problem_parts
    p = search.Problem(C, R)
    calls = []

    def slow(k, gamma):   # the real objective, paced so the run outlasts the test's patience
        calls.append(k)
        time.sleep(0.01)
        return p.evaluate(k, gamma)

    runner = studies.StudyRunner(p, "stopme", n_trials=100_000, evaluate=slow).start()
    seen = []
    while len(runner.snapshot()) < 5:
        seen.append(len(runner.snapshot()))
        time.sleep(0.02)
    runner.stop()
    assert runner.join(timeout=20)
    assert runner.state == "stopped" and runner.error is None
    n = len(runner.snapshot())
    assert 5 <= n < 1000 and n == len(calls) == runner.progress()["done"]
    assert seen == sorted(seen)   # snapshots only grow
    settings, rows = studies.load_study_rows(runner.path)
    assert len(rows) == n and settings == json.loads(json.dumps(p.fingerprint()))


def test_objective_error_is_reported_and_trials_kept(qwen_problem_parts, ws):
    C, R, _ = qwen_problem_parts
    p = search.Problem(C, R)

    def breaks_on_eighth(k, gamma):
        if len(done) == 7:
            raise RuntimeError("latency service went away")
        done.append(k)
        return p.evaluate(k, gamma)

    done = []
    runner = studies.StudyRunner(p, "broken", n_trials=50, evaluate=breaks_on_eighth).run()
    assert runner.state == "error" and "latency service went away" in runner.error
    rows = runner.snapshot()
    assert [r["state"] for r in rows] == ["COMPLETE"] * 7 + ["FAIL"]
    assert [r["k"] for r in rows[:7]] == done
    assert runner.best() is not None and runner.progress()["error"] == runner.error
    _, stored = studies.load_study_rows(runner.path)
    assert [r["state"] for r in stored] == [r["state"] for r in rows]


def test_snapshot_is_safe_while_running(qwen_problem_parts, ws):
    C, R, _ = qwen_problem_parts
    runner = studies.StudyRunner(search.Problem(C, R), "poll", n_trials=60).start()
    bad = []

    def poll():
        while runner.running:
            rows = runner.snapshot()
            numbers = [r["number"] for r in rows]
            if numbers != list(range(len(numbers))):
                bad.append(numbers)

    threads = [threading.Thread(target=poll) for _ in range(3)]
    for t in threads:
        t.start()
    runner.join()
    for t in threads:
        t.join()
    assert not bad and len(runner.snapshot()) == 60 and runner.progress()["fraction"] == 1.0


def test_resume_refuses_a_different_problem(qwen_problem_parts, ws):
    C, R, _ = qwen_problem_parts
    studies.StudyRunner(search.Problem(C, R, alpha=0.5), "same", n_trials=3).run()
    again = studies.StudyRunner(search.Problem(C, R, alpha=0.5), "same", n_trials=2).run()
    assert len(again.snapshot()) == 5
    with pytest.raises(VTError, match="differs in: alpha"):
        studies.StudyRunner(search.Problem(C, R, alpha=0.7), "same", n_trials=2)
    with pytest.raises(VTError, match="plain file name"):
        studies.StudyRunner(search.Problem(C, R), "../escape", n_trials=2)


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_study_resumes_in_a_new_process(counts_path, tmp_path):
    args = ["optimize", "--counts", str(counts_path), "--draft", "qwen3-0.6b", "--study", "resume-me", "--json"]
    first = last_json(run_vtcore(*args, "--trials", "15", ws=tmp_path))
    assert first["n_trials"] == 15 and first["n_new_trials"] == 15
    second = last_json(run_vtcore(*args, "--trials", "10", ws=tmp_path))
    assert second["n_trials"] == 25 and second["n_new_trials"] == 10
    assert second["study_path"] == first["study_path"] and Path(second["study_path"]).is_file()
    _, rows = studies.load_study_rows(second["study_path"])
    assert [r["number"] for r in rows] == list(range(25))
    assert second["utility"] >= first["utility"]   # the best so far can only improve
    p = run_vtcore(*args, "--trials", "5", "--alpha", "0.9", ws=tmp_path)
    assert p.returncode == 2 and "different problem" in p.stderr


def test_cli_optimize_json_keys(counts_path, tmp_path):
    r = last_json(run_vtcore("optimize", "--counts", str(counts_path), "--draft", "qwen3-0.6b", "--trials", "30",
                             "--min-coverage", "0.9", "--json", ws=tmp_path))
    for key in ("best_k", "coverage", "latency_reduction", "utility", "exact_best_k", "exact_utility", "regret",
                "n_trials", "pareto", "flops_breakdown", "lm_head_share", "study_path", "coverage_source"):
        assert key in r, key
    assert r["coverage_source"] == "heldout" and r["coverage"] >= 0.9
    assert 0 < len(r["pareto"]) <= 200 + 2
    assert r["exact_best_k"] in [pt["k"] for pt in r["pareto"]]
    fb = r["flops_breakdown"]["lm_head"]
    assert fb["at_V"] == 2 * 1024 * 151936 and fb["at_best_k"] == 2 * 1024 * r["best_k"]
    s = last_json(run_vtcore("optimize", "--counts", str(counts_path), "--draft", "eagle3-qwen3-8b",
                             "--objective", "speedup", "--trials", "30", "--coverage", "insample",
                             "--latency", "paper-flops", "--json", ws=tmp_path))
    assert s["coverage_source"] == "insample" and s["latency_source"] == "paper-flops"
    assert s["best_gamma"] >= 1 and s["predicted_speedup"] > 1
    assert s["cost_ratio_source"] == "FLOPs vs target qwen3-8b"


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "1.5"], "alpha must be in"),
    (["--k-min", "5000", "--k-max", "100"], "larger than --k-max"),
    (["--min-coverage", "1.0", "--k-max", "500"], "best reachable is"),
    (["--latency", "nope.json"], "latency profile not found"),
])
def test_cli_optimize_bad_input_exits_2(counts_path, tmp_path, extra, message):
    p = run_vtcore("optimize", "--counts", str(counts_path), "--draft", "qwen3-0.6b", "--trials", "5", *extra, "--json",
                   ws=tmp_path)
    assert p.returncode == 2 and message in p.stderr and p.stdout == "", p.stderr
    assert len(p.stderr.strip().splitlines()[-1]) > 0


def test_cli_optimize_foreign_tokenizer_and_custom_draft(counts_path, tmp_path):
    p = run_vtcore("optimize", "--counts", str(counts_path), "--draft", "smollm2-135m-2l", "--json", ws=tmp_path)
    assert p.returncode == 2 and "does not belong" in p.stderr
    cfg = tmp_path / "draft" / "config.json"   # a config.json draft has no known target: speed-up needs a ratio
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(cost.PRESETS["qwen3-0.6b"]["config"]))
    p = run_vtcore("optimize", "--counts", str(counts_path), "--draft", str(cfg.parent), "--objective", "speedup",
                   "--json", ws=tmp_path)
    assert p.returncode == 2 and "--cost-ratio" in p.stderr
    r = last_json(run_vtcore("optimize", "--counts", str(counts_path), "--draft", str(cfg.parent),
                             "--objective", "speedup", "--cost-ratio", "0.1", "--trials", "10", "--json", ws=tmp_path))
    assert r["cost_ratio_full"] == 0.1 and r["cost_ratio_source"] == "--cost-ratio"


def test_cli_optimize_with_a_measured_profile(counts_path, tmp_path):
    from vtcore import profile

    # a Qwen3-shaped draft small enough to profile in a test, with Qwen3's padded vocabulary
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2,
           "vocab_size": 151936}
    path = tmp_path / "draft" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    arch = cost.arch_from_config(path)
    prof = profile.measure_profile(arch, ks=[4096, 32768], context=64, repeats=3, warmup=1, threads=1)
    prof_path = profile.save_profile(tmp_path / "prof.json", prof)
    o = last_json(run_vtcore("optimize", "--counts", str(counts_path), "--draft", str(path),
                             "--latency", str(prof_path), "--objective", "speedup", "--t-target-ms", "50",
                             "--trials", "20", "--json", ws=tmp_path))
    assert o["latency_source"] == f"profile:{prof_path}"
    assert o["cost_ratio_full"] == pytest.approx(prof.step_ms[-1] / 50)
    assert o["cost_ratio_source"] == "profile step(V) / --t-target-ms"
    assert o["exact_latency_reduction"] == pytest.approx(float(prof.latency_reduction(o["exact_best_k"])))
    # the profile cannot stand in for another draft, and milliseconds need a profile
    p = run_vtcore("optimize", "--counts", str(counts_path), "--draft", "qwen3-0.6b", "--latency", str(prof_path),
                   "--json", ws=tmp_path)
    assert p.returncode == 2 and "was measured for" in p.stderr
    p = run_vtcore("optimize", "--counts", str(counts_path), "--draft", "qwen3-0.6b", "--objective", "speedup",
                   "--t-target-ms", "50", "--json", ws=tmp_path)
    assert p.returncode == 2 and "needs measured draft times" in p.stderr
