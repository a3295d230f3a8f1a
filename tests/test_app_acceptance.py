"""The dashboard's measured acceptance (AppTest): the Coverage page's "Measure acceptance" job on a
tiny random-weight EAGLE-3 pair of a real architecture (Qwen3 target, bundled tokenizer), its
C(k) and A(k) of both rankings, the Frontier's acceptance model and the Export page's ranking;
the Frontier's cached reruns and its presets per tokenizer."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import CODE, code_rows, count, metric, ok, open_app, settle
from drafthelpers import tiny_eagle3, tiny_pair
from vtapp import replays, state
from vtcore import acceptance as A
from vtcore import problem
from vtcore.countsfile import counts_sha256, load_counts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def page(path: str) -> AppTest:
    return open_app(path, timeout=90)


def acceptance_charts(at: AppTest) -> list[str]:
    """The Plotly specs of the acceptance figures on the page."""
    return [f.proto.spec for f in at.get("plotly_chart") if "replayed acceptance A(k)" in f.proto.spec]


def test_measure_acceptance_on_the_coverage_page_then_frontier_and_export_use_it(workspace, tmp_path,
                                                                                  one_torch_thread):
    tdir, _, _ = tiny_pair(tmp_path)
    e3 = tiny_eagle3(tdir, tmp_path / "e3")
    counts_path = count([CODE], tokenizer=str(tdir))     # counted with the target's own tokenizer
    cf = load_counts(counts_path)
    at = page("pages/2_Coverage.py")
    assert acceptance_charts(at) == []
    assert any("No acceptance measured for these counts yet" in c.value for c in at.caption)
    # a failing replay: said in place, nothing written
    at.text_input(key="acc_target").set_value(str(tmp_path / "no-such-target"))
    at.text_input(key="acc_draft").set_value(str(e3))
    at.number_input(key="acc_prompts").set_value(2)
    at.number_input(key="acc_fit").set_value(3)
    at.number_input(key="acc_new").set_value(8)
    at.number_input(key="acc_gmax").set_value(3)
    at.button(key="acc_run").click().run()
    settle(at, timeout=120)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Acceptance replay failed:") and "no-such-target" in errors[0]
    assert any(i.value.startswith("Kept: earlier acceptance files") for i in at.info)
    assert replays.replays_for(counts_sha256(cf)) == []
    # the real run, in the background, with its progress; the page then shows both rankings
    at.text_input(key="acc_target").set_value(str(tdir)).run()
    at.button(key="acc_run").click().run()
    settle(at, timeout=120)
    assert not at.error, [e.value for e in at.error]
    found = replays.replays_for(counts_sha256(cf))
    assert len(found) == 1
    path, man = found[0]
    assert man["counts_sha256"] == counts_sha256(cf) and man["same_tokenizer"] is True
    assert man["ranking_counts"] == counts_path and man["data"] == str(CODE)
    assert man["heldout_prompts"] == 2 and man["prompts"] == 5 and man["gamma_max"] == 3
    assert len(acceptance_charts(at)) == 1
    # the figures shown are vtcore.acceptance's, at the constraint's k, for both rankings
    rep = A.load_acceptance(path)
    k = int(metric(at, "k needed").replace(",", ""))
    table = at.dataframe[0].value
    assert len(table) == 2 and table["ranking"].str.startswith("frequency").iloc[0]
    for i, ranking in enumerate(("frequency", "acceptance")):
        order = A.ranking_for(rep, cf.counts_fit, cf.always_keep, ranking)
        a = A.acceptance_table(rep, order, [3], k_max=cf.vocab_size)[0]
        assert table["A(k) accepted/step"].iloc[i] == pytest.approx(round(a[k], 3))
        c = cf.counts_heldout[order[:k]].sum() / cf.counts_heldout.sum()
        assert table["held-out C(k)"].iloc[i] == pytest.approx(round(float(c), 4))
    full = A.for_set(rep, None, 3).accepted_per_step[0]
    assert any(m.value.startswith(f"At the constraint's k = {k:,}: the frequency ranking keeps") for m in at.markdown)
    assert f"full head {full:.3f} accepted tokens per step" in acceptance_charts(at)[0]
    # Frontier, speed-up objective: the replay by default, said; its numbers are attach_acceptance's
    fr = page("pages/3_Frontier.py")
    fr.selectbox(key="objective").set_value("speedup").run()
    ok(fr)
    assert fr.radio(key="front_acc_model").value == "replay"
    assert "a0" not in [s.key for s in fr.slider]
    assert any("Speed-up numbers from the **replay**" in c.value for c in fr.caption)
    spec = problem.SearchSpec(draft="eagle3-qwen3-8b", objective="speedup", min_coverage=0.95, context=1024,
                              gamma_max=3)
    setup = problem.attach_acceptance(problem.build(cf, spec), cf, path, "frequency")
    from vtcore import search

    best = search.solve_exact(setup.problem)
    assert metric(fr, "draft/target cost ratio (FLOPs)") == f"{setup.problem.cost_ratio_full:.4f}"
    assert metric(fr, "exact best k") == f"{best.best_k:,}"
    assert metric(fr, "predicted speed-up") == f"{best.speedup:.3f}× (γ={best.best_gamma})"
    fr.radio(key="front_acc_model").set_value("a0*C(k)").run()
    ok(fr)
    assert "a0" in [s.key for s in fr.slider]
    assert any("Speed-up numbers from **a0·C(k)**" in c.value for c in fr.caption)
    fr.radio(key="front_acc_model").set_value("replay").run()
    fr.radio(key="front_ranking").set_value("acceptance").run()
    ok(fr)
    assert state.load_state().ranking == "acceptance"
    # Export follows: the acceptance-aware ranking's first k ids, as `export --ranking acceptance` gives them
    ex_page = page("pages/4_Export.py")
    assert ex_page.radio(key="export_ranking").value == "acceptance"
    kk = int(ex_page.number_input(key="export_k").value)
    order = A.ranking_for(rep, cf.counts_fit, cf.always_keep, "acceptance")
    assert any(c.value.startswith("Chosen: k given, acceptance-aware ranking") for c in ex_page.caption)
    from vtapp.replays import acceptance_choice

    assert sorted(acceptance_choice(cf, path, kk).ids.tolist()) == sorted(order[:kk].tolist())
    # other counts: the replay is not theirs, no page shows it
    count([state.save_upload("mycode.jsonl", code_rows(30))])
    again = page("pages/2_Coverage.py")
    assert acceptance_charts(again) == []
    assert any("No acceptance measured for these counts yet" in c.value for c in again.caption)


def test_frontier_reruns_reuse_the_search_and_presets_follow_the_tokenizer(workspace_shared_counts, monkeypatch):
    from vtapp.common import presets_for_tokenizer

    count([CODE])
    calls = []
    real = problem.build
    monkeypatch.setattr(problem, "build", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    fr = page("pages/3_Frontier.py")
    n = len(calls)
    for c in (0.937, 0.941, 0.937, 0.941):   # key repeats back and forth: each value built once
        fr.slider(key="front_min_coverage").set_value(c).run()
        ok(fr)
    assert len(calls) == n + 2
    fr.run()                                 # a rerun that changes nothing builds nothing
    assert len(calls) == n + 2
    # the counted tokenizer (bundled Qwen3) offers its own presets, and says so
    assert set(fr.selectbox(key="draft_preset").options) == {"eagle3-qwen3-8b", "qwen3-0.6b"}
    assert fr.selectbox(key="draft_preset").value == "eagle3-qwen3-8b"
    assert any(c.value.startswith("Presets for the counted tokenizer (151,669 ids): drafts of qwen3-8b")
               for c in fr.caption)
    assert presets_for_tokenizer(49152)[0] == ["smollm2-135m-2l"]
    assert presets_for_tokenizer(128256)[0] == ["eagle3-llama3.1-8b", "llama3.2-1b"]
    few, note = presets_for_tokenizer(1000)
    assert len(few) == 5 and "for scale only" in note
