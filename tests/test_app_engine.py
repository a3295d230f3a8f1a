"""The dashboard's engine choices: the Frontier's serving-engine block prices the speed-up as the
engine does (the same problem `optimize --engine-model` solves), and the Benchmark page's tree
choice reaches the benchmark job and its history."""

from __future__ import annotations

import pytest

from apphelpers import metric, ok, open_app, record_jobs
from test_app import count_sample
from vtapp import state
from vtcore import problem, search
from vtcore.countsfile import load_counts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_frontier_engine_model_is_the_cli_problem(workspace_shared_counts):
    counts_path = count_sample()
    at = open_app("pages/3_Frontier.py")
    at.selectbox(key="objective").set_value("speedup").run()
    ok(at)
    at.selectbox(key="engine_model").set_value("sglang").run()
    ok(at)
    caps = [c.value for c in at.caption if c.value.startswith("SGLang tree at k =")]
    assert len(caps) == 1 and "--speculative-eagle-topk" in caps[0]
    draft = at.selectbox(key="draft_preset").value
    spec = problem.SearchSpec(draft=draft, objective="speedup", curve="heldout", engine="sglang",
                              min_coverage=state.load_state().min_coverage)
    exact = search.solve_exact(problem.build(load_counts(counts_path), spec).problem)
    s, t, n = exact.best_tree
    assert f"k = {exact.best_k:,}: --speculative-num-steps {s} --speculative-eagle-topk {t} " \
           f"--speculative-num-draft-tokens {n}" in caps[0]
    assert metric(at, "predicted speed-up").startswith(f"{exact.speedup:.3f}×")
    at.selectbox(key="engine_model").set_value("paper").run()
    assert not [c for c in at.caption if c.value.startswith("SGLang tree")]


def test_benchmark_page_tree_choice_reaches_the_job_and_the_history(workspace, monkeypatch):
    from vtcore.benchtypes import BenchConfig
    from vtcore.treebench import append_tree_result

    seen = record_jobs(monkeypatch, "bench_job", "bench")   # the tree benchmark itself: tests/test_tree.py
    at = open_app("pages/5_Benchmark.py")
    assert "bench_trees" not in [t.key for t in at.text_input]    # chains by default
    at.radio(key="bench_drafting").set_value("tree").run()
    at.text_input(key="bench_trees").set_value("3,2,4 5,4,8").run()
    at.button(key="bench_run").click().run()
    ok(at)
    assert seen[-1]["cfg"].tree == [(3, 2, 4), (5, 4, 8)]
    assert state.load_state().bench["trees"] == "3,2,4 5,4,8"
    at.text_input(key="bench_trees").set_value("3,2").run()        # a bad tree: said in place, no run
    assert any("expected s,t,n" in e.value for e in at.error) and at.button(key="bench_run").disabled
    # a stored tree run is listed with its setting
    append_tree_result(BenchConfig(tree=[(3, 2, 4)]), {
        "target": "t", "draft": "d", "k": 100, "vocab_size": 1000, "trees": ["3,2,4"], "gammas": [2], "prompts": 1,
        "identical_outputs": True, "device": "cpu",
        "methods": {"tree 3,2,4 trimmed": {"tokens_per_s": 5.0, "speedup_vs_target": 1.1, "acceptance_length": 1.5}}})
    again = open_app("pages/5_Benchmark.py")
    runs = [d.value for d in again.dataframe if "trees (s,t,n)" in d.value.columns]
    assert len(runs) == 1 and runs[0]["trees (s,t,n)"].tolist() == ["3,2,4"]
    assert runs[0]["best trimmed tree"].tolist() == ["3,2,4"]
