"""One path from a choice to k: the curves mean one thing everywhere, `optimize --coverage insample`
is the exact optimum over all rows, and every k returned or exported meets the constraint on the
curve it names. A hand-made counts file makes the fit-rows and all-rows rankings disagree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.clihelpers import last_json, run_vtcore
from vtcore import cost, problem, studies
from vtcore.countsfile import CountsFile, save_counts

V = 4096


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """Zipf-like fit rows; the held-out rows favour a different set of tokens (ids 3000..3499), so
    ranking on the fit rows and ranking on all rows give different sets and different optima."""
    rng = np.random.default_rng(7)
    fit = (4000.0 / np.arange(1, V + 1) ** 1.1).astype(np.int64)
    rng.shuffle(fit)
    held = np.zeros(V, dtype=np.int64)
    held[3000:3500] = rng.integers(5, 60, size=500)
    held[:200] += fit[:200] // 4
    root = tmp_path_factory.mktemp("handmade")
    cf = CountsFile(counts=fit + held, manifest={"format": "vtcore-counts/1", "always_keep": [7], "rows": 10,
                                                 "tokenizer": "handmade", "dataset_sha256": "x" * 64},
                    counts_fit=fit, counts_heldout=held, domain_names=["d"],
                    counts_by_domain=(fit + held)[None, :])
    path = save_counts(root / "handmade.npz", cf)
    draft = root / "draft.json"   # a small Llama draft whose vocabulary is the counts' V
    draft.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512,
                                 "intermediate_size": 1024, "num_attention_heads": 8, "num_key_value_heads": 8,
                                 "num_hidden_layers": 2, "vocab_size": V}))
    return cf, path, draft


def independent_optimum(counts: np.ndarray, keep: list[int], R: np.ndarray, alpha: float, min_cov: float) -> int:
    """argmax of alpha C + (1 - alpha) R over k >= 1 with C >= min_cov, written from scratch."""
    rest = [i for i in np.argsort(-counts, kind="stable") if i not in keep]
    order = np.array(keep + rest)
    C = np.concatenate([[0.0], np.cumsum(counts[order]) / counts.sum()])
    U = alpha * C + (1 - alpha) * R
    U[0] = -np.inf
    U[C < min_cov - 1e-12] = -np.inf
    return int(np.argmax(U))


def test_insample_optimum_is_the_all_rows_optimum_and_differs_from_fit_rows(handmade, tmp_path):
    cf, path, draft = handmade
    arch = cost.arch_from_config(draft)
    R = cost.latency_reduction(arch, np.arange(V + 1))
    truth = independent_optimum(cf.counts, [7], R, 0.5, 0.0)
    fit_only = independent_optimum(cf.counts_fit, [7], R, 0.5, 0.0)
    assert truth != fit_only   # the fixture does what it says
    r = last_json(run_vtcore("optimize", "--counts", str(path), "--draft", str(draft), "--coverage", "insample",
                             "--trials", "5", "--json", ws=tmp_path))
    assert r["coverage_source"] == "insample" and r["exact_best_k"] == truth


@pytest.mark.parametrize("curve", ["insample", "heldout"])
def test_every_returned_and_exported_k_meets_the_constraint_on_its_curve(handmade, tmp_path, curve):
    cf, path, draft = handmade
    rows = {"insample": cf.counts, "heldout": cf.counts_heldout}[curve]
    min_cov = 0.9
    r = last_json(run_vtcore("optimize", "--counts", str(path), "--draft", str(draft), "--coverage", curve,
                             "--min-coverage", str(min_cov), "--trials", "25", "--study", f"s-{curve}", "--json",
                             ws=tmp_path))
    assert r["coverage_source"] == curve and r["exact_coverage"] >= min_cov and r["coverage"] >= min_cov
    for how in (["--from-study", f"s-{curve}", "--trial", "best"], ["--min-coverage", str(min_cov), "--coverage", curve],
                ["--k", str(r["exact_best_k"]), "--coverage", curve]):
        out = tmp_path / f"out-{len(how)}-{how[1]}"
        e = last_json(run_vtcore("export", "--counts", str(path), *how, "--format", "json", "--vocab-size", str(V),
                                 "--out", str(out), "--json", ws=tmp_path))
        assert e["coverage"]["curve"] == curve and e["coverage"]["at_k"] >= min_cov
        ids = json.loads((out / f"token_ids_k{e['k']}.json").read_text())["token_ids"]
        # the exported ids cover exactly what the curve says, on the rows it names
        assert rows[ids].sum() / rows.sum() == pytest.approx(e["coverage"]["at_k"])
        summary = json.loads((out / f"summary_k{e['k']}.json").read_text())
        assert summary["coverage"]["curve"] == curve and summary["coverage"]["at_k"] == e["coverage"]["at_k"]
    # `coverage` reports the same k for the same constraint on the same curve
    c = last_json(run_vtcore("coverage", "--counts", str(path), "--min-coverage", str(min_cov), "--json", ws=tmp_path))
    k_cov = c["k_for" if curve == "insample" else "heldout_k_for"][str(min_cov)]
    e = last_json(run_vtcore("export", "--counts", str(path), "--min-coverage", str(min_cov), "--coverage", curve,
                             "--format", "json", "--vocab-size", str(V), "--out", str(tmp_path / "again"), "--json",
                             ws=tmp_path))
    assert e["k"] == k_cov


def test_paper_switch_sets_the_reference_run(handmade, tmp_path):
    cf, path, draft = handmade
    r = last_json(run_vtcore("optimize", "--counts", str(path), "--draft", str(draft), "--paper", "--json",
                             ws=tmp_path))
    assert (r["objective"], r["alpha"], r["min_coverage"], r["k_min"], r["k_max"], r["k_sampling"]) == \
        ("utility", 0.5, 0.0, 50, V, "linear")   # k_max: 50,000 capped at this draft's vocabulary
    assert (r["coverage_source"], r["latency_source"], r["n_trials"], r["seed"]) == ("insample", "paper-flops", 30, 42)
    # an explicit flag still wins over the switch
    r = last_json(run_vtcore("optimize", "--counts", str(path), "--draft", str(draft), "--paper", "--alpha", "0.8",
                             "--trials", "3", "--json", ws=tmp_path))
    assert r["alpha"] == 0.8 and r["n_trials"] == 3 and r["k_sampling"] == "linear"


def test_the_cli_and_the_page_build_the_same_problem(handmade):
    """The Frontier page and `optimize` both go through problem.build: same spec, same arrays."""
    cf, _, draft = handmade
    spec = problem.SearchSpec(draft=str(draft), curve="heldout", min_coverage=0.5, alpha=0.3)
    a, b = problem.build(cf, spec), problem.build(cf, spec, cov=cf.coverage(), arch=cost.arch_from_config(draft))
    assert a.problem.fingerprint() == b.problem.fingerprint()
    assert np.array_equal(a.problem.coverage, cf.coverage().heldout)


def test_one_best_trial_rule():
    rows = [{"number": 0, "state": "COMPLETE", "feasible": True, "k": 5, "utility": 0.7, "speedup": 1.1},
            {"number": 1, "state": "COMPLETE", "feasible": False, "k": 6, "utility": 0.9, "speedup": 1.9},
            {"number": 2, "state": "COMPLETE", "feasible": True, "k": 7, "utility": 0.7, "speedup": 1.3},
            {"number": 3, "state": "FAIL", "feasible": None, "k": 8, "utility": None, "speedup": None}]
    assert studies.best_trial(rows, "utility")["number"] == 0      # tie: the earlier trial
    assert studies.best_trial(rows, "pareto")["number"] == 0       # Pareto's pick is its utility optimum
    assert studies.best_trial(rows, "speedup")["number"] == 2      # the infeasible 1.9 never wins
    assert studies.best_trial(rows[3:], "utility") is None
