"""Frontier: the draft's cost, the exact coverage/latency frontier, and a live Optuna TPE study over it."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import engine as engine_ui
from vtapp import plots
from vtapp import state as vstate
from vtapp.acceptance_ui import frontier_acceptance, model_note
from vtcore import cost, problem, search
from vtcore import studies as study_files   # "studies" below is the list of names
from vtcore.errors import VTError
from vtcore.selection import Selection

s = ui.page("Frontier")
st.title("Frontier")
ui.context_line(s)
cf, cov = ui.counts_or_stop(s)
V_tok = cf.vocab_size

# ---- 1. the draft
st.subheader("1. Draft")
fits, presets_for = ui.presets_for_tokenizer(V_tok)   # the counted tokenizer's family, not only Qwen3
configs = [str(p) for p in vstate.list_uploads(folder="configs")]
c1, c2 = st.columns([2, 3])
with c1:
    kinds = ["Preset", "config.json"]
    kind = st.radio("Draft from", kinds, horizontal=True, key="draft_kind",
                    index=1 if s.draft and s.draft not in cost.PRESETS else 0)
    if kind == "Preset":
        default = s.draft if s.draft in fits else (fits or [None])[0]
        if not fits:
            st.error(f"No preset has a vocabulary as large as this tokenizer's ({V_tok:,}); upload the draft's config.json.")
            st.stop()
        spec_draft = st.selectbox("Preset", fits, index=fits.index(default) if default in fits else 0, key="draft_preset",
                                  help="presets for the counted tokenizer's models (sources in vtcore/cost.py); "
                                       "any other draft: its config.json")
        st.caption(presets_for)
    else:
        def keep_config() -> None:
            f = st.session_state.get("config_upload")
            st.session_state["config_error"] = None
            if f is not None:
                try:
                    st.session_state["draft_config"] = str(vstate.save_upload(f.name, f.getvalue(), folder="configs"))
                except VTError as e:   # e.g. an empty file: said in place, the page goes on
                    st.session_state["config_error"] = str(e)

        st.file_uploader("The draft's config.json (Hugging Face format)", type=["json"], key="config_upload",
                         on_change=keep_config)
        if st.session_state.get("config_error"):
            st.error(st.session_state["config_error"])
        configs = [str(p) for p in vstate.list_uploads(folder="configs")]
        if not configs:
            st.info("Upload a config.json to continue.")
            st.stop()
        if st.session_state.get("draft_config") not in configs:
            st.session_state["draft_config"] = s.draft if s.draft in configs else configs[0]
        spec_draft = st.selectbox("Uploaded configs", configs, key="draft_config", format_func=vstate.upload_label)
try:
    arch = ui.arch(spec_draft)
    cost.check_counts_vocab(V_tok, arch, "the counts")
except VTError as e:
    st.error(str(e))
    st.stop()
if spec_draft != s.draft:
    s = ui.save(draft=spec_draft)
with c2:
    st.markdown(f"**{arch.name}**: {arch.kind}, {arch.layers} layer(s), hidden {arch.hidden:,}, "
                f"vocabulary {arch.vocab:,} rows  \n<small>{arch.source}</small>", unsafe_allow_html=True)
    profiles = [str(p) for p in sorted(vstate.subdir("profiles").glob("*.json"))]
    measured = ui.registry().get("profile")
    if measured is not None and measured.state == "finished" and not measured.meta.get("shown"):
        measured.meta["shown"] = True   # a profile just measured becomes the latency model, once
        st.session_state["latency"] = measured.result["profile_path"]
    if st.session_state.get("latency") not in ["flops", "paper-flops"] + profiles:
        st.session_state["latency"] = s.latency if s.latency in ["flops", "paper-flops"] + profiles else "flops"
    latency = st.selectbox("Latency model", ["flops", "paper-flops"] + profiles, key="latency",
                           format_func=lambda x: {"flops": "FLOPs (every component)",
                                                  "paper-flops": "FLOPs, the seed paper's proxy"}.get(x, f"measured: {Path(x).name}"),
                           help="measured profiles come from `python -m vtcore profile` (saved in the workspace)")
    context = int(st.number_input("KV-cache context (tokens)", 0, 1 << 20, 1024, step=256, key="context"))
    profiling = ui.registry().get("profile")
    if st.button("Measure latency on this machine", key="run_profile",
                 disabled=profiling is not None and profiling.running,
                 help="times this draft's step (random weights) at a grid of k on the CPU, one thread, in a process "
                      "of its own (`python -m vtcore profile`); seconds for small drafts, minutes for 8B-class heads"):
        from vtapp.jobs import profile_job

        ui.start_job("profile", lambda: profile_job(spec_draft, device="cpu", threads=1, context=context))
    ui.job_panel("profile", "Latency profile")
if latency != s.latency:
    s = ui.save(latency=latency)


def use_paper() -> None:
    """The seed paper's reference run in one click (vtcore.problem.PAPER, PAPER_RUN)."""
    paper = {**problem.PAPER, "k_max": min(problem.PAPER["k_max"], arch.vocab), **problem.PAPER_RUN}
    st.session_state["latency"] = paper["latency"]   # the other widgets are seeded from the saved state
    ui.save(**paper)


# ---- 2. objective
st.subheader("2. Objective")
st.button("Paper settings", key="paper", on_click=use_paper,
          help="the seed paper's reference run: utility, α = 0.5, no coverage constraint, k in [50, 50,000] "
               "sampled linearly, 30 TPE trials, seed 42, in-sample coverage, its FLOPs proxy")
o1, o2, o3, o4 = st.columns([3, 3, 3, 2])
with o1:
    objective = st.selectbox("Objective", list(search.OBJECTIVES), **ui.persisted("objective"),
                             format_func={"utility": "utility α·C + (1−α)·R", "speedup": "predicted speed-up (k, γ)",
                                          "pareto": "Pareto: C and R together"}.get)
with o2:
    alpha = st.slider("α (weight of coverage)", 0.0, 1.0, step=0.01, **ui.persisted("alpha", cast=float))
with o3:
    min_coverage = ui.coverage_constraint("front_min_coverage")
with o4:
    curve = st.radio("Coverage curve", ["heldout", "insample"] if cov.heldout is not None else ["insample"],
                     format_func={"heldout": "held-out rows", "insample": "in-sample (all rows)"}.get,
                     **ui.persisted("front_curve", "curve",
                                    cast=lambda c: c if cov.heldout is not None else "insample"))
with st.expander("k range and sampling", expanded=False):
    r1, r2, r3 = st.columns(3)
    k_min = int(r1.number_input("k min", 1, arch.vocab,
                                **ui.persisted("k_min", cast=lambda v: max(1, min(int(v), arch.vocab)))))
    k_max = int(r2.number_input("k max", 1, arch.vocab,
                                **ui.persisted("k_max", cast=lambda v: min(int(v), arch.vocab), default=arch.vocab)))
    k_scale = r3.radio("TPE samples k", ["log", "linear"], horizontal=True, **ui.persisted("k_scale"))
a0, ratio = 0.7, None
acc_path, ranking = frontier_acceptance(s, objective)   # the replay when measured, else a0*C(k)
if objective == "speedup":
    p1, p2 = st.columns(2)
    if acc_path is None:
        a0 = p1.slider("a0: acceptance of the full-vocabulary draft", 0.05, 1.0, 0.7, 0.01, key="a0")
    if not arch.target:
        ratio = p2.number_input("draft/target cost ratio t_draft/t_target", 0.0001, 10.0, 0.05, key="ratio",
                                help="this draft names no target model")
spec = problem.SearchSpec(draft=spec_draft, latency=latency, context=context, objective=objective, alpha=alpha,
                          min_coverage=min_coverage, curve=curve, k_min=k_min, k_max=k_max, k_scale=k_scale, a0=a0,
                          cost_ratio=ratio)
spec = replace(spec, **engine_ui.engine_choice(objective))   # the serving engine's round (vtapp.engine)
try:
    setup, exact = ui.search_setup(s.counts_path, spec, acc_path, ranking)
except VTError as e:
    st.error(str(e))
    st.stop()
C, R = setup.problem.coverage, setup.problem.reduction
if objective == "speedup" and arch.target:
    st.metric("draft/target cost ratio (FLOPs)", f"{setup.problem.cost_ratio_full:.4f}", help=f"vs target {arch.target}")

sel = ui.selection(s)
e = st.columns(5)
e[0].metric("exact best k", f"{exact.best_k:,}", help=f"{exact.n_evaluated:,} points in {exact.seconds * 1e3:.0f} ms")
e[1].metric("coverage C", f"{exact.coverage:.4f}", help=f"{setup.spec.curve} curve")
e[2].metric("latency reduction R", f"{exact.latency_reduction:.4f}")
e[3].metric("utility U", f"{exact.utility:.4f}")
if exact.speedup is not None:
    e[4].metric("predicted speed-up", f"{exact.speedup:.3f}× (γ={exact.best_gamma})")
    engine_ui.show_engine_pick(exact, setup.problem)
else:
    if latency in cost.MODES:
        share, how = cost.lm_head_share(arch, context, setup.flops_mode), f"{latency} model, full vocabulary"
    else:   # the measured profile in use: its own head and step times at the full vocabulary
        prof_now = ui.profile(latency)
        share = float(prof_now.head_at(arch.vocab)) / max(float(prof_now.step_at(arch.vocab)), 1e-12)
        how = f"measured: {Path(latency).name}, full vocabulary"
    e[4].metric("LM head share of the draft", ui.fmt_pct(share, 1), help=f"the latency model in use ({how})")

model_note(setup, acc_path, ranking, a0)

k_show = int(sel.k) if sel else exact.best_k
with st.expander(f"Where the draft's cost goes (full vocabulary vs k = {k_show:,})", expanded=True):
    k_bar = min(k_show, arch.vocab)
    if latency in cost.MODES:
        fig = plots.breakdown_figure(cost.flops_breakdown(arch, None, context, latency),
                                     cost.flops_breakdown(arch, k_bar, context, latency), k_show, arch.vocab)
    else:   # measured: the step split into the head and everything else
        prof = ui.profile(latency)

        def split(k: int) -> dict:
            head, step = float(prof.head_at(k)), float(prof.step_at(k))
            return {"other": max(step - head, 0.0), "lm_head": head}

        fig = plots.breakdown_figure(split(arch.vocab), split(k_bar), k_show, arch.vocab, unit="ms", scale=1.0)
        st.caption(f"Measured on {prof.device_name} ({prof.dtype}, context {prof.context}); "
                   "'other' is the rest of the draft step.")
    st.plotly_chart(fig, key="breakdown", config={"displaylogo": False})

# ---- 3. TPE
st.subheader("3. Search (Optuna TPE)")
reg = ui.registry()
studies = sorted((p.stem for p in study_files.studies_dir().glob("*.journal")),
                 key=lambda n: study_files.study_path(n).stat().st_mtime, reverse=True)
# the study to show: the URL's (a refresh keeps it), else the saved one
known = lambda n: bool(n) and (n in studies or reg.get(f"study:{n}") is not None)  # noqa: E731
name = next((n for n in (st.query_params.get("study"), s.study) if known(n)), None)
if name and name != s.study:
    s = ui.save(study=name)
if name and st.query_params.get("study") != name:
    st.query_params["study"] = name
runner = reg.get(f"study:{name}") if name else None

t = st.columns([1, 1, 2, 2])
n_trials = int(t[0].number_input("Trials", 1, 5000, **ui.persisted("trials", cast=int)))
seed = int(t[1].number_input("Seed", 0, 2**31 - 1, **ui.persisted("seed", cast=int)))
if t[2].button("Run TPE", type="primary", key="run_tpe", disabled=runner is not None and runner.running):
    try:
        new = study_files.StudyRunner(setup.problem, None, n_trials=n_trials, seed=seed)
        reg.put(f"study:{new.study_name}", new)
        new.start()
        ui.save(study=new.study_name)
        st.query_params["study"] = new.study_name
        st.rerun()
    except VTError as err:
        st.error(str(err))
if studies:
    pick = t[3].selectbox("Show study", ["(none)"] + studies, index=studies.index(name) + 1 if name in studies else 0,
                          key=f"study_pick_{name}")
    if pick != (name or "(none)"):
        ui.save(study=None if pick == "(none)" else pick)
        if pick == "(none)":
            st.query_params.pop("study", None)
        else:
            st.query_params["study"] = pick
        st.rerun()


def study_rows() -> tuple[dict, list[dict], str, str | None]:
    """(settings, rows, state, error) of the shown study, live from its runner or from disk."""
    if runner is not None:
        return runner.problem.fingerprint(), runner.snapshot(), runner.state, runner.error
    if not name:
        return {}, [], "none", None
    try:
        settings, rows = study_files.load_study_rows(study_files.study_path(name))
    except VTError as err:
        return {}, [], "error", str(err)
    return settings, rows, "stored", None


def on_pick(front_C: np.ndarray, front_R: np.ndarray) -> None:
    """A click on the frontier plot: remember the point (session + saved state)."""
    ev = st.session_state.get("frontier_plot")
    pts = (ev or {}).get("selection", {}).get("points", [])
    if not pts or not pts[0].get("customdata"):
        return
    src, k, number = pts[0]["customdata"][:3]
    k, number = int(k), int(number)
    settings, rows = study_rows()[:2] if name else ({}, [])
    if src == "exact":   # an exact point a trial also tried: keep the study's provenance
        same = [r for r in rows if r["state"] == "COMPLETE" and r.get("k") == k]
        if same:
            src, number = "trial", same[0]["number"]
    if src == "trial":
        row = next((r for r in rows if r["number"] == number), {})
        # the trial's own figures and curve (a study made for other settings keeps what it measured)
        pick = Selection(k=k, source="trial", curve=settings.get("coverage_source", setup.spec.curve),
                         counts_path=s.counts_path, draft=spec_draft, study=name, trial=number, gamma=row.get("gamma"),
                         coverage=row.get("coverage", float(front_C[k])),
                         latency_reduction=row.get("latency_reduction", float(front_R[k])))
    else:
        pick = Selection(k=k, source="exact", curve=setup.spec.curve, counts_path=s.counts_path, draft=spec_draft,
                         coverage=float(front_C[k]), latency_reduction=float(front_R[k]))
    ui.select(pick)


def current_pick() -> Selection | None:
    """The saved selection if it belongs to these counts, with C and R filled in for this draft."""
    cur = ui.selection(vstate.load_state())
    if cur is None:
        return None
    k = min(cur.k, arch.vocab)
    return replace(cur, coverage=float(C[k]) if cur.coverage is None else cur.coverage,
                   latency_reduction=float(R[k]) if cur.latency_reduction is None else cur.latency_reduction)


front_k = search.thin_frontier(exact.frontier_k, 300, must=(exact.best_k,))
front = {"k": front_k, "coverage": C[front_k], "latency_reduction": R[front_k]}
exact_best = {"k": exact.best_k, "coverage": exact.coverage, "latency_reduction": exact.latency_reduction}
polling = runner is not None and runner.running


@st.fragment(run_every=ui.POLL_S if polling else None)
def live() -> None:
    settings, rows, state_, error = study_rows()
    if runner is not None:
        pr = runner.progress()
        if runner.running:
            st.progress(pr["fraction"], text=f"TPE {name}: {pr['done']}/{pr['n_trials']} trials")
            st.button("Stop", key="stop_tpe", on_click=runner.stop)
        elif polling:
            st.rerun()
    if state_ == "error" and error:
        st.error(f"Study {name} stopped on an error: {error}. The {len(rows)} trial(s) before it are kept in "
                 f"{study_files.study_path(name) if name else 'the study file'}.")
    study_obj = settings.get("objective", objective)
    best = study_files.best_trial(rows, study_obj)
    if name:
        fp = setup.problem.fingerprint()
        same = settings.get("coverage_sha") == fp["coverage_sha"] and settings.get("reduction_sha") == fp["reduction_sha"]
        finished = sum(1 for r in rows if r["state"] in ("COMPLETE", "PRUNED"))
        failed = sum(1 for r in rows if r["state"] == "FAIL")
        st.caption(f"Study **{name}** ({state_}): objective {study_obj}, α = {settings.get('alpha')}, "
                   f"coverage constraint {settings.get('min_coverage')} ({settings.get('coverage_source')}), "
                   f"{finished} trials" + (f" ({failed} failed, not counted)" if failed else "")
                   + ("" if same else " · made for another draft or settings: its points are not on this frontier"))
        made_for = settings.get("counts_sha256")
        if made_for and made_for != fp["counts_sha256"]:   # never silently: the counts changed under it
            st.warning(f"Study {name} was run on other counts (sha256 {made_for[:12]}…) than the current ones "
                       f"({ui.dataset_label(s)}): its trials are not on this frontier and it cannot be exported "
                       "with these counts. Run a new study, or count its dataset again.")
    for note in (runner.notes if runner is not None else []):
        st.info(note)
    picked = current_pick()    # read afresh: a click reruns only this fragment
    fig = plots.frontier_figure(front, rows, min_coverage, exact_best=exact_best, best_trial=best, selected=picked)
    st.plotly_chart(fig, key="frontier_plot", on_select=lambda: on_pick(C, R), selection_mode="points",
                    config={"displaylogo": False})
    if picked:
        st.success(f"Selected: {picked.label()}, R = {picked.latency_reduction:.4f}. "
                   "Export it on the Export page.")
    else:
        st.caption("Click a point (exact frontier or trial) to select it for export.")
    if rows:
        df = pd.DataFrame(rows)
        cols = [c for c in ["number", "k", "gamma", "coverage", "latency_reduction", "utility", "speedup", "feasible",
                            "state"] if c in df and (c not in ("gamma", "speedup") or df[c].notna().any())]
        st.dataframe(df[cols].sort_values("number", ascending=False), hide_index=True, width="stretch", height=260)


live()
