"""Every dashboard page through streamlit.testing.v1.AppTest, on the real samples and the bundled
tokenizer: the one-click sample flow, the coverage slider, an upload, a malformed upload, a TPE
study's results (and finding them again after a refresh), the exports, a benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import CODE, ROOT, code_rows, count, malformed_rows, metric, ok, open_app, record_jobs, settle
from drafthelpers import tiny_pair
from vtapp import state
from vtapp.jobs import counting_job
from vtcore import search, studies
from vtcore.countsfile import load_counts
from vtcore.coverage import k_for_coverage

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def as_int(text: str) -> int:
    return int(text.replace(",", ""))


def count_sample() -> str:
    return count([CODE], timeout=60)


def test_start_with_the_sample_then_the_slider_moves_k(workspace):
    at = open_app()
    assert any(b.label == "Start with the sample data" for b in at.button)
    at.button(key="start_sample").click().run()
    ok(at)
    # one click: counted and on the Coverage page
    s = state.load_state()
    cov = load_counts(s.counts_path).coverage()
    curve = cov.curve("heldout")
    assert as_int(metric(at, "k needed")) == k_for_coverage(curve, 0.95)
    ks = {}
    for c in (0.8, 0.9, 0.99):
        at.slider(key="cov_min_coverage").set_value(c).run()
        ok(at)
        ks[c] = as_int(metric(at, "k needed"))
        assert ks[c] == k_for_coverage(curve, c)
    assert ks[0.8] < ks[0.9] < ks[0.99]
    assert state.load_state().min_coverage == 0.99          # the slider's value survives a refresh
    again = open_app("pages/2_Coverage.py")
    assert again.slider(key="cov_min_coverage").value == 0.99
    # "Select k" makes it the selected point for export
    at.button(key="use_k").click().run()
    sel = state.load_state().selected
    assert sel["source"] == "coverage" and sel["k"] == ks[0.99] and sel["counts_path"] == s.counts_path
    assert sel["curve"] == "heldout" and sel["coverage"] == pytest.approx(curve[ks[0.99]])
    # the Frontier and Export pages show that selection, and Export exports the set whose coverage was shown
    fr = open_app("pages/3_Frontier.py")
    assert any(x.value.startswith(f"Selected: k = {ks[0.99]:,} (coverage constraint") for x in fr.success)
    ex_page = open_app("pages/4_Export.py")
    assert as_int(metric(ex_page, "kept tokens k")) == ks[0.99]
    assert float(metric(ex_page, "held-out C(k)")) == pytest.approx(curve[ks[0.99]], abs=1e-4)


def test_coverage_page_shows_out_of_domain_with_two_domains(workspace_shared_counts):
    job = counting_job([str(CODE), str(ROOT / "samples" / "chat.jsonl.gz")]).start()
    job.join(120)
    assert job.state == "finished", job.error
    at = open_app("pages/2_Coverage.py")
    cf = load_counts(state.load_state().counts_path)
    assert at.selectbox(key="ood_a").value == "code" and at.selectbox(key="ood_b").value == "chat"
    expect = k_for_coverage(cf.ood_curve("code", "chat"), 0.95)
    assert as_int(metric(at, "k needed out of domain")) == expect
    at.selectbox(key="ood_a").set_value("chat").run()
    ok(at)
    assert as_int(metric(at, "k needed out of domain")) == k_for_coverage(cf.ood_curve("chat", "code"), 0.95)


def test_data_page_counts_an_uploaded_jsonl(workspace):
    at = open_app("pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload").run()
    ok(at)
    at.file_uploader(key="uploader").set_value(("mine.jsonl", code_rows(12), "application/jsonl")).run()
    ok(at)
    chosen = at.multiselect(key="uploads_chosen").value
    assert len(chosen) == 1 and chosen[0].endswith("-mine.jsonl")
    assert state.list_uploads()[0].read_bytes() == code_rows(12)   # kept in the workspace
    at.button(key="count_btn").click().run()
    settle(at)
    assert metric(at, "Rows") == "12"
    s = state.load_state()
    cf = load_counts(s.counts_path)
    assert as_int(metric(at, "Assistant tokens")) == int(cf.counts.sum())
    assert as_int(metric(at, "Unique tokens")) == int(np.count_nonzero(cf.counts))
    top = at.dataframe[0].value            # the ranking vtcore exports from: always-keep first, then by count
    order = [int(i) for i in cf.coverage().order_all[:30] if cf.counts[i] > 0]
    assert list(top["id"]) == order and list(top["count"]) == [int(cf.counts[i]) for i in order]
    assert s.datasets == chosen


def test_data_page_passes_the_engine_choice_to_the_counting_job(workspace, monkeypatch):
    calls = record_jobs(monkeypatch, "counting_job", "count")   # the Ray engine itself: test_ray.py
    at = open_app("pages/1_Data.py")
    assert "ray_address" not in [t.key for t in at.text_input]   # only for the Ray engine
    at.radio(key="engine").set_value("ray").run()
    at.text_input(key="ray_address").set_value("127.0.0.1:6379").run()
    at.button(key="count_btn").click().run()
    ok(at)
    assert calls[-1]["engine"] == "ray" and calls[-1]["ray_address"] == "127.0.0.1:6379"
    at.radio(key="engine").set_value("local").run()
    at.button(key="count_btn").click().run()
    ok(at)
    assert calls[-1]["engine"] == "local" and calls[-1]["ray_address"] is None


def test_a_malformed_upload_shows_the_error_and_the_app_keeps_working(workspace_shared_counts):
    before = count_sample()
    at = open_app("pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload").run()
    at.file_uploader(key="uploader").set_value(("broken.jsonl", malformed_rows(), "application/jsonl")).run()
    at.button(key="count_btn").click().run()
    settle(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "broken.jsonl:2: malformed JSON" in errors[0], errors
    assert any(i.value.startswith("Kept:") for i in at.info)
    assert metric(at, "Rows") == "164"                       # the previous counts are still shown
    assert state.load_state().counts_path == before
    cov = ok(open_app("pages/2_Coverage.py"))                # and every page still works
    ok(open_app("pages/3_Frontier.py"))
    # the sidebar says the count failed, and no longer that it runs
    side = [c.value for c in cov.sidebar.caption]
    assert not any(c.startswith("Running:") for c in side), side
    assert any(c.startswith(":red[count failed]:") and "malformed JSON" in c for c in side), side


def test_a_tpe_study_fills_the_frontier_and_survives_a_refresh(workspace_shared_counts):
    count_sample()
    at = open_app("pages/3_Frontier.py")
    exact_k = as_int(metric(at, "exact best k"))
    at.number_input(key="trials").set_value(15).run()
    at.button(key="run_tpe").click().run()
    settle(at)
    name = state.load_state().study
    assert name and at.query_params["study"] in (name, [name])
    trials = at.dataframe[0].value
    assert len(trials) == 15 and set(trials["state"]) == {"COMPLETE"}
    assert any(f"Study **{name}** (finished)" in c.value for c in at.caption)
    # the exact optimum on the page is vtcore's, for the same settings
    _, rows = studies.load_study_rows(studies.study_path(name))
    assert len(rows) == 15
    assert exact_k == as_int(metric(at, "exact best k"))
    # every trial sits at its own coverage (none clipped onto the axis) and its hover shows U
    spec = json.loads(next(c for c in at.get("plotly_chart") if "exact frontier" in c.proto.spec).proto.spec)
    drawn = {}
    for trace in spec["data"]:
        if trace.get("name") in ("trials", "infeasible trials"):
            assert "U=%{customdata[4]}" in trace["hovertemplate"]
            drawn.update({cd[2]: (y, cd[4]) for cd, y in zip(trace["customdata"], trace["y"])})
    by_number = {r["number"]: r for r in rows}
    assert drawn and all(y == by_number[n]["coverage"] and u == f"{by_number[n]['utility']:.4f}"
                         for n, (y, u) in drawn.items())
    assert any(not r["feasible"] for r in rows)   # the log-sampled k also tried some under the constraint
    lo = spec["layout"]["yaxis"]["range"][0]
    below = sum(1 for r in rows if r["coverage"] < lo)   # off the plot, and said so
    notes = [a["text"] for a in spec["layout"].get("annotations", []) if "off this plot" in a["text"]]
    assert notes == ([f"{below} infeasible trial(s) below C = {lo:.3f}, off this plot (see the table)"] if below
                     else [])
    # a new browser session with the study in the URL finds it; so does one without (saved state)
    for query in ({"study": name}, {}):
        again = open_app("pages/3_Frontier.py", query=query)
        assert len(again.dataframe[0].value) == 15
    # moving alpha changes the exact optimum at once, without touching the study
    at.slider(key="alpha").set_value(0.9).run()
    ok(at)
    assert as_int(metric(at, "exact best k")) > exact_k
    assert len(at.dataframe[0].value) == 15


def test_export_page_offers_each_format_validated(workspace_shared_counts):
    counts_path = count_sample()
    cf = load_counts(counts_path)
    cov = cf.coverage()
    from vtcore import cost

    arch = cost.preset("eagle3-qwen3-8b")
    problem = search.Problem(search.pad_curve(cov.curve("heldout"), arch.vocab),
                             cost.latency_reduction(arch, np.arange(arch.vocab + 1)), min_coverage=0.9)
    runner = studies.StudyRunner(problem, "export-test", n_trials=6, seed=1).run()
    row = runner.best()
    state.update_state(draft="eagle3-qwen3-8b", study="export-test",
                       selected={"source": "trial", "k": row["k"], "study": "export-test", "trial": row["number"],
                                 "curve": "heldout", "counts_path": counts_path, "coverage": row["coverage"],
                                 "latency_reduction": row["latency_reduction"]})
    at = open_app("pages/4_Export.py")
    assert as_int(metric(at, "kept tokens k")) == row["k"]
    assert any(f"study export-test trial {row['number']}" in c.value for c in at.caption)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == [f"token_map_sglang_k{row['k']}.pt", f"vocab_mapping_eagle3_k{row['k']}.pt",
                      f"speculators_vocab_k{row['k']}.zip", f"token_ids_k{row['k']}.json", f"summary_k{row['k']}.json"]
    assert len(at.success) == 5 and all(s.value.startswith("valid") for s in at.success)
    assert metric(at, "target vocabulary V") == "151,936"      # from the draft preset chosen on the Frontier
    assert float(metric(at, "latency reduction")) == pytest.approx(row["latency_reduction"], abs=1e-4)
    at.button(key="save_exports").click().run()
    ok(at)
    out = state.subdir("exports") / f"{load_counts(counts_path).manifest['cache_key']}-k{row['k']}"
    assert sorted(p.name for p in out.iterdir()) == sorted(n.removesuffix(".zip") for n in labels)


def test_export_page_without_a_selection_exports_any_k(workspace_shared_counts):
    count_sample()
    at = open_app("pages/4_Export.py")
    assert any("No point selected" in i.value for i in at.info)
    at.number_input(key="export_k").set_value(512).run()
    ok(at)
    assert metric(at, "kept tokens k") == "512"
    assert len(at.success) == 5
    # each figure once, under its own name: the held-out curve's C(k), then the other measure
    cov = load_counts(state.load_state().counts_path).coverage()
    labels = [m.label for m in at.metric]
    assert labels == ["kept tokens k", "held-out C(k)", "covers all rows", "latency reduction",
                      "target vocabulary V"]
    assert float(metric(at, "held-out C(k)")) == pytest.approx(cov.heldout[512], abs=1e-4)
    assert any(c.value.startswith("Chosen: k typed in on this page.") for c in at.caption)


def test_benchmark_page_runs_a_tiny_pair_in_the_background(workspace, tmp_path):
    tdir, ddir, _ = tiny_pair(tmp_path)
    # the user's own upload, counted: the benchmark's prompts follow it (not the bundled sample)
    upload = str(state.save_upload("mycode.jsonl", code_rows(40)))
    job = counting_job([upload]).start()
    job.join(60)
    assert job.state == "finished", job.error
    at = open_app("pages/5_Benchmark.py")
    assert any("CPU" in c.value or "CUDA" in c.value for c in at.caption)
    assert at.selectbox(key="bench_data_pick").value == upload
    assert any("**Dataset:** mycode.jsonl" in c.value for c in at.caption)   # at the top of the page
    # why its k is not the Frontier's
    assert any("target's** tokenizer" in i.value and "its k is its own" in i.value for i in at.info)
    at.text_input(key="bench_target").set_value(str(tdir))
    at.text_input(key="bench_draft").set_value(str(ddir))
    at.number_input(key="bench_prompts").set_value(1)
    at.number_input(key="bench_new").set_value(8)
    at.number_input(key="bench_repeats").set_value(1)
    at.number_input(key="bench_gamma").set_value(4)
    at.selectbox(key="bench_device").set_value("cpu")
    at.selectbox(key="bench_k_from").set_value("k").run()
    at.number_input(key="bench_k").set_value(2048)
    at.run()
    at.button(key="bench_run").click().run()
    settle(at, timeout=180)
    assert not at.error, [e.value for e in at.error]
    assert any(h.value == "Result" for h in at.subheader)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["target only", "target + full draft", "target + trimmed draft"]
    assert all(float(v.split(" [")[0]) > 0 and "[" in v for v in table["tokens/s"])   # each with its interval
    assert metric(at, "trimmed draft vs target alone").endswith("×")
    assert any("1 held-out prompts × 1 repeats × 8 new tokens" in c.value for c in at.caption)
    from vtcore.bench import load_results

    runs = load_results()
    assert len(runs) == 1 and runs[0].target == str(tdir) and runs[0].identical_outputs is True
    assert runs[0].k == 2048 and runs[0].data == upload
    assert any(c.value.startswith("Prompts: held-out rows of **mycode.jsonl**") and c.value.endswith(
        "mycode.jsonl: k = 2048 given") for c in at.caption)
    # the verdict badges carry the verdict's own arrow
    arrows = {"faster": "UP", "slower": "DOWN", "no measurable difference": "NONE"}
    for m in at.metric:
        if m.label in ("trimmed draft vs target alone", "trimmed vs full draft") and m.proto.delta:
            verdict = m.proto.delta
            assert type(m.proto).MetricDirection.Name(m.proto.direction) == arrows[verdict], (verdict, m.proto)
    # a random-weight draft accepts little: the page says it does not pay and what to do
    acc = runs[0].full.accepted_per_step
    if acc < 1.0:
        assert any("does not pay here" in w.value and "bring a draft trained for your domain" in w.value
                   and "the draft was not trained on data like this" in w.value for w in at.warning)
    # the figures' value labels sit at the bars' base, clear of the run dots and error bars at
    # their tops, and the Plotly toolbar stands in a right margin, never over a left-aligned title
    from vtapp import plots

    figs = [plots.bench_throughput_figure(runs[0]), plots.bench_acceptance_figure(runs[0]),
            plots.bench_speedup_figure(runs[0]), plots.bench_draft_split_figure(runs[0])]
    labelled = [t for f in figs for t in f.data if t.type == "bar" and t.text is not None]
    assert len(labelled) >= 3
    assert all(t.textposition == "inside" and t.insidetextanchor == "start" for t in labelled)
    assert any(t.type == "scatter" and t.mode == "markers" for t in figs[0].data)   # the runs, drawn as dots
    for f in figs:
        assert f.layout.title.x == 0 and f.layout.title.xanchor == "left"
        assert f.layout.modebar.orientation == "v" and f.layout.margin.r >= 40 and f.layout.margin.t >= 40
    history = [d for d in at.dataframe if "dataset" in d.value.columns]
    assert len(history) == 1 and history[0].value["dataset"].tolist() == ["mycode.jsonl"]
    assert {"draft", "k", "γ", "verdict vs target", "verdict vs full"} <= set(history[0].value.columns)
    assert state.load_state().bench["target"] == str(tdir)      # the settings survive a refresh
    again = open_app("pages/5_Benchmark.py")
    assert any(h.value == "History" for h in again.subheader)
    assert again.text_input(key="bench_target").value == str(tdir)


def test_benchmark_failure_is_a_clear_error(workspace, tmp_path):
    at = open_app("pages/5_Benchmark.py")
    at.text_input(key="bench_target").set_value(str(tmp_path / "no-such-model"))
    at.text_input(key="bench_draft").set_value(str(tmp_path / "no-such-draft"))
    at.run()
    at.button(key="bench_run").click().run()
    settle(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Benchmark failed:") and "no-such-model" in errors[0]
    assert any(i.value.startswith("Kept:") for i in at.info)


def test_a_running_study_survives_a_refresh_and_stops(workspace_shared_counts):
    count_sample()
    at = open_app("pages/3_Frontier.py")
    at.number_input(key="trials").set_value(5000).run()
    at.button(key="run_tpe").click().run()
    ok(at)
    name = state.load_state().study
    # a new browser session (a refresh) finds the running study through the URL
    again = open_app("pages/3_Frontier.py", query={"study": name})
    assert any(p.proto.text.startswith(f"TPE {name}:") for p in again.get("progress"))
    again.button(key="stop_tpe").click().run()
    settle(again)
    _, rows = studies.load_study_rows(studies.study_path(name))
    assert 0 < len(rows) < 5000                                   # stopped early, trials kept on disk
    assert any(f"Study **{name}** (stopped)" in c.value for c in again.caption)
    assert len(again.dataframe[0].value) == len(rows)


def test_counting_can_be_stopped_from_the_page(workspace):
    at = open_app("pages/1_Data.py")
    at.multiselect(key="samples").set_value(["code", "chat"]).run()
    at.button(key="count_btn").click().run()
    ok(at)
    at.button(key="stop-count").click().run()
    settle(at)
    assert any(w.value.startswith("Counting stopped") for w in at.warning)
    assert state.load_state().counts_path is None and not at.error


def frontier_with_a_tiny_config(hidden: int) -> AppTest:
    """The Frontier page with an uploaded config.json of a one-layer Qwen3-shaped draft (Qwen3's
    padded vocabulary, so the bundled tokenizer's counts fit)."""
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": hidden,
              "intermediate_size": 2 * hidden, "num_attention_heads": hidden // 16, "num_key_value_heads": 1,
              "head_dim": 16, "num_hidden_layers": 1, "vocab_size": 151936, "tie_word_embeddings": True}
    at = open_app("pages/3_Frontier.py")
    at.radio(key="draft_kind").set_value("config.json").run()
    at.file_uploader(key="config_upload").set_value(("tiny-draft.json", json.dumps(config).encode(),
                                                     "application/json")).run()
    return at


def test_frontier_with_an_uploaded_config_and_a_measured_profile(workspace_shared_counts):
    from vtcore import cost
    from vtcore.profile import measure_profile, save_profile

    counts_path = count_sample()
    at = frontier_with_a_tiny_config(hidden=64)
    ok(at)
    spec = state.load_state().draft
    assert spec.endswith("-tiny-draft.json")
    arch = cost.resolve_draft(spec)
    assert any("vocabulary 151,936 rows" in m.value for m in at.markdown)
    prof = measure_profile(arch, ks=[1024, 16384, 151936], context=32, repeats=2, warmup=1, rounds=1, threads=1)
    path = save_profile(state.subdir("profiles") / "tiny.json", prof)
    at.run()
    at.selectbox(key="latency").set_value(str(path)).run()
    ok(at)
    C = search.pad_curve(load_counts(counts_path).coverage().curve("heldout"), arch.vocab)
    exact = search.solve_exact(search.Problem(C, prof.latency_reduction(np.arange(arch.vocab + 1)),
                                              alpha=0.5, min_coverage=state.load_state().min_coverage))
    assert as_int(metric(at, "exact best k")) == exact.best_k
    assert state.load_state().latency == str(path)
    # the head share is the measured profile's, not the FLOPs model's
    measured = float(prof.head_at(arch.vocab)) / float(prof.step_at(arch.vocab))
    assert metric(at, "LM head share of the draft") == f"{100 * measured:.1f}%"
    at.selectbox(key="latency").set_value("flops").run()
    flops = cost.lm_head_share(arch, 1024, "flops")
    assert metric(at, "LM head share of the draft") == f"{100 * flops:.1f}%"


def test_export_page_trims_a_draft_directory_into_a_zip(workspace_shared_counts, tmp_path):
    count_sample()
    _, ddir, _ = tiny_pair(tmp_path)        # a Qwen3-architecture draft with the counts' tokenizer
    at = open_app("pages/4_Export.py")
    at.number_input(key="export_k").set_value(512).run()
    assert "hf_draft_k512.zip" not in [b.proto.label for b in at.get("download_button")]
    at.text_input(key="hf_dir").set_value(str(ddir)).run()
    ok(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[0] == "hf_draft_k512.zip" and len(labels) == 6, labels
    assert [s.value.split(":")[0] for s in at.success] == ["valid hf-draft", "valid sglang", "valid eagle3",
                                                           "valid speculators-vocab", "valid json", "valid summary"]
    at.text_input(key="hf_dir").set_value(str(tmp_path / "missing")).run()
    assert any("no such directory" in e.value for e in at.error) and len(at.success) == 5
    # a folder that is not a draft: its reason in place, every token map still offered
    (tmp_path / "broken").mkdir()
    at.text_input(key="hf_dir").set_value(str(tmp_path / "broken")).run()
    assert any("not exported" in e.value and "config.json: missing" in e.value for e in at.error)
    assert [b.proto.label for b in at.get("download_button")] == [
        "token_map_sglang_k512.pt", "vocab_mapping_eagle3_k512.pt", "speculators_vocab_k512.zip",
        "token_ids_k512.json", "summary_k512.json"]


def test_export_page_shows_v_and_where_it_came_from(workspace_shared_counts, tmp_path):
    import dataclasses

    from drafthelpers import eagle3_checkpoint, tiny_target_config
    from vtcore.countsfile import save_counts

    counts_path = count_sample()
    at = open_app("pages/4_Export.py")
    at.number_input(key="export_k").set_value(300).run()
    assert metric(at, "target vocabulary V") == "151,936"                 # the bundled tokenizer's models
    assert any("bundled Qwen3 tokenizer" in c.value for c in at.caption)
    # a target named on the page: its config's V, remembered in the dashboard state
    target = tiny_target_config(tmp_path / "target", vocab=152064)
    at.text_input(key="export_target").set_value(str(target)).run()
    ok(at)
    assert metric(at, "target vocabulary V") == "152,064" and state.load_state().target == str(target)
    # with an EAGLE-3 draft and that target as its verifier, the speculators layout for vLLM too
    cf = load_counts(counts_path)
    eagle3_checkpoint(tmp_path / "eagle3", 152064, np.sort(cf.coverage().kept("heldout", 2000)))
    at.text_input(key="hf_dir").set_value(str(tmp_path / "eagle3")).run()
    ok(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:2] == ["eagle3_draft_k300.zip", "speculators_draft_k300.zip"], labels
    # counts from a tokenizer vtcore does not know, no target: V is a guess, only the SGLang map and JSON
    other = tmp_path / "other.npz"
    save_counts(other, dataclasses.replace(cf, manifest={**cf.manifest, "tokenizer_sha256": "0" * 64}))
    state.update_state(counts_path=str(other), target=None)
    at = open_app("pages/4_Export.py")
    at.number_input(key="export_k").set_value(300).run()
    ok(at)
    assert metric(at, "target vocabulary V") == "151,669" and any("a guess" in w.value for w in at.warning)
    assert [b.proto.label for b in at.get("download_button")] == ["token_map_sglang_k300.pt", "token_ids_k300.json",
                                                                  "summary_k300.json"]


def test_frontier_measures_a_latency_profile_in_a_child_process(workspace_shared_counts):
    """The button runs `python -m vtcore profile` out of the server; its profile becomes the latency model."""
    count_sample()
    at = frontier_with_a_tiny_config(hidden=32)
    at.number_input(key="context").set_value(64).run()
    at.button(key="run_profile").click().run()
    settle(at, timeout=180)
    assert not at.error, [e.value for e in at.error]
    latency = state.load_state().latency
    assert latency.endswith(".json") and "L64" in latency
    assert any("Measured on" in c.value for c in at.caption)   # the breakdown now shows measured ms


def test_frontier_paper_settings_are_the_clis_paper_switch(workspace_shared_counts):
    from vtcore import problem

    counts_path = count_sample()
    state.update_state(draft="eagle3-qwen3-8b")
    at = open_app("pages/3_Frontier.py")
    at.button(key="paper").click().run()
    ok(at)
    s = state.load_state()
    assert (s.objective, s.alpha, s.min_coverage, s.curve, s.latency, s.k_min, s.k_max, s.k_scale, s.trials,
            s.seed) == ("utility", 0.5, 0.0, "insample", "paper-flops", 50, 50000, "linear", 30, 42)
    setup = problem.build(load_counts(counts_path), problem.paper_spec("eagle3-qwen3-8b", 151936))
    assert as_int(metric(at, "exact best k")) == search.solve_exact(setup.problem).best_k


def test_one_coverage_constraint_on_every_page_and_after_a_reload(workspace):
    """Coverage and Frontier set the same saved constraint: moved on one, it is the value of the
    other (never the slider's minimum), after any number of page switches and after a reload;
    the Frontier's optimum then meets it."""
    counts_path = count_sample()
    curve = load_counts(counts_path).coverage().curve("heldout")
    at = open_app("pages/2_Coverage.py")
    cov_slider, front_slider = at.slider(key="cov_min_coverage"), None
    assert cov_slider.value == 0.95
    cov_slider.set_value(0.9).run()
    for _ in range(2):   # Coverage -> Frontier -> Coverage -> Frontier in one session
        at.switch_page("pages/3_Frontier.py").run()
        ok(at)
        front_slider = at.slider(key="front_min_coverage")
        assert front_slider.value == 0.9
        assert float(metric(at, "coverage C")) >= 0.9
        at.switch_page("pages/2_Coverage.py").run()
        ok(at)
        assert at.slider(key="cov_min_coverage").value == 0.9
        assert as_int(metric(at, "k needed")) == k_for_coverage(curve, 0.9)
    # one step on both pages
    assert at.slider(key="cov_min_coverage").step == front_slider.step == 0.001
    # set on the Frontier, shown on Coverage, also in a new session (a reload)
    at.switch_page("pages/3_Frontier.py").run()
    at.slider(key="front_min_coverage").set_value(0.97).run()
    ok(at)
    assert float(metric(at, "coverage C")) >= 0.97
    at.switch_page("pages/2_Coverage.py").run()
    assert at.slider(key="cov_min_coverage").value == 0.97
    reloaded = open_app("pages/3_Frontier.py")
    assert reloaded.slider(key="front_min_coverage").value == 0.97
    reloaded.switch_page("pages/2_Coverage.py").run()
    assert reloaded.slider(key="cov_min_coverage").value == 0.97
    assert as_int(metric(reloaded, "k needed")) == k_for_coverage(curve, 0.97)


def test_every_benchmark_verdict_badge_points_its_own_way(workspace):
    """Each verdict the benchmark can give (vtcore.spread.verdict) is drawn with its own arrow:
    faster up, slower down, no measurable difference none."""
    from vtapp.common import VERDICT_BADGE
    from vtcore.spread import verdict

    drawn = {}
    for ci in ((1.1, 1.3), (0.6, 0.9), (0.9, 1.1)):
        v = verdict(ci)
        script = ("import streamlit as st\nfrom vtapp.common import VERDICT_BADGE\n"
                  f"st.metric('x', '1×', delta={v!r}, **VERDICT_BADGE[{v!r}])\n")
        at = AppTest.from_string(script).run()
        ok(at)
        m = at.metric[0].proto
        drawn[v] = type(m).MetricDirection.Name(m.direction)
    assert drawn == {"faster": "UP", "slower": "DOWN", "no measurable difference": "NONE"}
    assert set(VERDICT_BADGE) == set(drawn)


def qa_csv(n: int, sep: str = ";") -> bytes:
    """The first n HumanEval rows as a question/answer table (column names no schema knows)."""
    import pandas as pd

    rows = [json.loads(line) for line in CODE.read_text(encoding="utf-8").splitlines()[:n]]
    df = pd.DataFrame({"question": [r["messages"][0]["content"] for r in rows],
                       "answer": [r["messages"][-1]["content"] for r in rows]})
    return df.to_csv(index=False, sep=sep).encode()


def test_uploads_mapped_chosen_and_counted_as_named_domains(workspace):
    """A semicolon CSV with question/answer columns is mapped and counted beside a JSONL; a bad
    upload the user took out is not chosen again by the next upload; the domains carry the
    uploaded names; the top tokens say the always-kept ones rank first."""
    at = open_app("pages/1_Data.py")
    at.radio(key="data_source").set_value("Upload").run()
    at.file_uploader(key="uploader").set_value(("broken.jsonl", malformed_rows(), "application/jsonl")).run()
    ok(at)
    broken = at.multiselect(key="uploads_chosen").value
    assert [state.upload_label(p) for p in broken] == ["broken.jsonl"]
    at.multiselect(key="uploads_chosen").set_value([]).run()          # the user takes it out
    at.file_uploader(key="uploader").set_value([("broken.jsonl", malformed_rows(), "application/jsonl"),
                                                ("mycode.jsonl", code_rows(20), "application/jsonl"),
                                                ("pydocs.csv", qa_csv(20), "text/csv")]).run()
    ok(at)
    chosen = at.multiselect(key="uploads_chosen").value
    assert sorted(state.upload_label(p) for p in chosen) == ["mycode.jsonl", "pydocs.csv"]
    # the semicolon CSV is read as columns; no schema knows them: the mapping is offered, guessed
    csv_path = next(p for p in chosen if p.endswith("pydocs.csv"))
    assert at.selectbox(key=f"map_user_{csv_path}").value == "question"
    assert at.selectbox(key=f"map_answer_{csv_path}").value == "answer"
    at.button(key=f"map_use_{csv_path}").click().run()
    ok(at)
    chosen = at.multiselect(key="uploads_chosen").value
    assert sorted(state.upload_label(p) for p in chosen) == ["mycode.jsonl", "pydocs.jsonl"]
    at.button(key="count_btn").click().run()
    settle(at)
    assert not at.error, [e.value for e in at.error]
    assert metric(at, "Rows") == "40"
    cf = load_counts(state.load_state().counts_path)
    # the table's domain is its uploaded name, no hash prefix (the code rows name theirs: "code")
    assert sorted(cf.domain_names) == ["code", "pydocs"]
    assert any(c.value.startswith("Domains: ") and "pydocs (" in c.value for c in at.caption)
    top = at.dataframe[0].value
    keep = set(cf.coverage().always_keep)
    assert list(top["always kept"]) == [int(i) in keep for i in top["id"]] and top["always kept"].iloc[0]
    assert any("always-kept tokens" in c.value and "rank first" in c.value for c in at.caption)
    cov = open_app("pages/2_Coverage.py")
    assert sorted(cov.selectbox(key="ood_a").options) == ["code", "pydocs"]


def test_coverage_page_dropped_tokens_by_count_and_the_never_seen_note(workspace):
    counts_path = count_sample()
    cf = load_counts(counts_path)
    cov = cf.coverage()
    n_fit = int(np.count_nonzero(cf.counts_fit))
    at = open_app("pages/2_Coverage.py")
    k = as_int(metric(at, "k needed"))
    assert k == k_for_coverage(cov.heldout, 0.95) > n_fit    # the sample's held-out rows need unseen tokens
    notes = [i.value for i in at.info if "never seen in the fit rows" in i.value]
    assert len(notes) == 1 and f"the {n_fit:,} distinct tokens" in notes[0] and f"to {k:,}" in notes[0]
    # what a k drops, most frequent first: the dropped ids the data uses, by count
    rest = cov.order("heldout")[k:]
    seen = rest[cf.counts[rest] > 0]
    drop = at.dataframe[0].value
    assert list(drop["count"]) == sorted((int(c) for c in cf.counts[seen]), reverse=True)[:len(drop)]
    assert set(drop["id"]) <= {int(i) for i in seen} and len(drop) == min(25, seen.size)
    # a constraint the fit rows' tokens meet: no note
    at.slider(key="cov_min_coverage").set_value(0.8).run()
    assert as_int(metric(at, "k needed")) <= n_fit
    assert not any("never seen" in i.value for i in at.info)


def test_data_page_offers_counting_the_targets_own_responses(workspace, monkeypatch):
    calls = record_jobs(monkeypatch, "counting_job", "count")   # generated counting: test_gencount.py
    at = open_app("pages/1_Data.py")
    assert "gen_max_new" not in [n.key for n in at.number_input]   # only when generating
    at.radio(key="count_what").set_value("generate").run()
    at.number_input(key="gen_max_new").set_value(16).run()
    at.number_input(key="gen_rows").set_value(7).run()
    at.button(key="count_btn").click().run()
    ok(at)
    assert calls[-1]["generate"] == {"target": None, "max_new_tokens": 16, "rows": 7}
    at.radio(key="count_what").set_value("dataset").run()
    at.button(key="count_btn").click().run()
    ok(at)
    assert calls[-1]["generate"] is None
