"""What every page shares: cached loads keyed by file path + mtime, the worker registry, the
persisted selection, widgets whose values survive a refresh, and the job progress panel.

Caching: arrays go in st.cache_resource (one shared object, no copy per rerun; callers never
mutate them), keyed by (path, mtime) so a recount invalidates them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from vtapp import state as vstate
from vtapp.jobs import Registry
from vtcore.errors import VTError
from vtcore.selection import Selection
from vtcore.workspace import repo_root, workspace_dir

REPO = repo_root()
SAMPLES = {
    "code": (REPO / "samples" / "code.jsonl", "code: HumanEval, 164 prompts with solutions"),
    "chat": (REPO / "samples" / "chat.jsonl.gz", "chat: chitchat, 4,018 conversations (second speaker = assistant)"),
}
PAGES = {"home": "app.py", "data": "pages/1_Data.py", "coverage": "pages/2_Coverage.py",
         "frontier": "pages/3_Frontier.py", "export": "pages/4_Export.py", "bench": "pages/5_Benchmark.py"}
ICONS = {"home": ":material/home:", "data": ":material/description:", "coverage": ":material/show_chart:",
         "frontier": ":material/scatter_plot:", "export": ":material/download:", "bench": ":material/speed:"}
NAV = [("home", "Home"), ("data", "Data"), ("coverage", "Coverage"), ("frontier", "Frontier"), ("export", "Export"),
       ("bench", "Benchmark")]
POLL_S = 0.7


# ---------------------------------------------------------------- page frame

def page(title: str) -> vstate.AppState:
    """Page config + sidebar summary; returns the saved state."""
    st.set_page_config(page_title=f"{title} · Vocab Trim Studio", page_icon=":material/content_cut:", layout="wide")
    with st.sidebar:
        # our own navigation (client.showSidebarNavigation = false): the home page is "Home", not "app"
        for key, label in NAV:
            st.page_link(PAGES[key], label=label, icon=ICONS[key])
        st.divider()
    try:
        s = vstate.load_state()
        ws = workspace_dir()
    except VTError as e:   # every page says which folder, why, and what to do; nothing else can work
        st.title(title)
        st.error(str(e), icon=":material/folder_off:")
        st.stop()
    counts_changed_elsewhere(s)
    with st.sidebar:
        st.caption(f"Workspace: `{ws}`")
        if s.counts_path:
            st.caption(f"Counts: {dataset_label(s)}")
        sel = selection(s)
        if sel:
            st.caption(f"Selected: {sel.label()}")
        jobs_status(title)
    return s


# the jobs a page follows with a progress panel of its own (that panel polls and reruns the page)
PANELS = {"Data": ("count",), "Coverage": ("acceptance",), "Frontier": ("profile", "study:"), "Benchmark": ("bench",)}


def jobs_status(title: str) -> None:
    """The sidebar's job lines: what runs, what failed last. While a job runs that this page has
    no panel for, it polls, and when that job ends it reruns the whole page, so a count finished
    (or failed) while the user is on another page shows there at once, not on the next click.
    One poller per job: two fragments polling together keep interrupting each other's reruns."""
    watching = [n for n in registry().running() if not n.startswith(PANELS.get(title, ()))]

    @st.fragment(run_every=POLL_S if watching else None)
    def status() -> None:
        running = registry().running()
        if watching and not set(watching) <= set(running):
            st.rerun(scope="app")
        if running:
            st.caption("Running: " + ", ".join(running))
        for name, error in registry().failed().items():
            st.caption(f":red[{name} failed]: {error[:160]}")

    status()


def counts_changed_elsewhere(s: vstate.AppState) -> None:
    """Say so when the current counts changed since this browser tab last drew a page and this
    tab did not count them: another tab or window did, and every page now shows those."""
    changed = "counts_seen" in st.session_state and st.session_state["counts_seen"] != s.counts_path
    here = st.session_state.get("counting_here", False)   # set when this tab starts a count
    if changed and not here:
        st.warning(f"The current counts changed to {dataset_label(s)} (counted in another tab or window): "
                   "this page now shows those.", icon=":material/sync_problem:")
    job = registry().get("count")
    if here and (changed or job is None or not job.running):
        st.session_state["counting_here"] = False
    st.session_state["counts_seen"] = s.counts_path


def context_line(s: vstate.AppState) -> None:
    """What every page follows, at its top: the current dataset, the coverage constraint and
    the selected point (all from the saved state)."""
    sel = selection(s)
    st.caption(f"**Dataset:** {dataset_label(s) if s.counts_path else 'none counted yet'} · "
               f"**coverage constraint:** C(k) ≥ {s.min_coverage:.3f} · "
               f"**selected:** {sel.label() if sel else 'none'}")


def dataset_label(s: vstate.AppState) -> str:
    names = [vstate.upload_label(p) for p in s.datasets] or ["?"]
    tok = "bundled Qwen3" if not s.tokenizer or s.tokenizer.startswith("bundled") else s.tokenizer
    return f"{', '.join(names)} · {tok} · {s.mask}"


def selection(s: vstate.AppState) -> Selection | None:
    """The saved selected point, if it belongs to the current counts."""
    sel = Selection.from_dict(s.selected)
    return sel if sel is not None and sel.counts_path == s.counts_path else None


def select(sel: Selection) -> None:
    save(selected=sel.as_dict())


def save(**changes: Any) -> vstate.AppState:
    return vstate.update_state(**changes)


def persisted(key: str, field: str | None = None, cast: Callable | None = None, default: Any = None) -> dict:
    """kwargs for a widget whose value lives in the saved state, the one source of truth: the
    widget is seeded from it on every run (so a value set on another page, in another tab or
    before a reload shows here), and every change is written back.

    `key` must be unique to one page: two pages' widgets under one key are two different
    widgets to Streamlit (their parameters differ), and the second finds no value of its own
    under the key and falls back to its minimum (a coverage constraint of 0.000).
    `default` stands for a saved None; `cast` fixes the saved value up for this widget."""
    field = field or key
    v = getattr(vstate.load_state(), field)
    v = default if v is None else v
    st.session_state[key] = cast(v) if cast and v is not None else v
    return {"key": key, "on_change": _persist, "args": (key, field)}


def _persist(key: str, field: str) -> None:
    save(**{field: st.session_state[key]})


COVERAGE_STEP = 0.001   # one step for the coverage constraint wherever it is set


def coverage_constraint(key: str, where: Any = st) -> float:
    """The coverage constraint's slider: the same widget (range, step, format) on every page
    that sets it, its value the saved state's min_coverage. `key` is the page's own."""
    return float(where.slider("Coverage constraint: C(k) ≥", 0.0, 1.0, step=COVERAGE_STEP, format="%.3f",
                              help="the same constraint on the Coverage and Frontier pages (saved in the workspace)",
                              **persisted(key, "min_coverage", cast=float)))


# ---------------------------------------------------------------- registry and cached loads

@st.cache_resource
def registry() -> Registry:
    """Workers (count / bench jobs, study runners) shared by every session of this server."""
    return Registry()


def start_job(name: str, make: Callable[[], Any]) -> None:
    """Start the job `make()` builds under `name` and rerun the page into its panel; a VTError
    while building or starting it is shown in place as one line."""
    try:
        registry().start(name, make())
    except VTError as e:
        st.error(str(e))
    else:
        st.rerun()


def mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return -1.0


@st.cache_resource(max_entries=4, show_spinner=False)
def _counts(path: str, mtime: float):
    from vtcore.countsfile import load_counts

    return load_counts(path)


@st.cache_resource(max_entries=4, show_spinner=False)
def _coverage(path: str, mtime: float):
    return _counts(path, mtime).coverage()


def counts(path: str):
    return _counts(path, mtime(path))


def coverage(path: str):
    return _coverage(path, mtime(path))


def counts_or_stop(s: vstate.AppState):
    """(counts file, coverage) of the current selection, or a pointer to the Data page."""
    if not s.counts_path or not Path(s.counts_path).is_file():
        st.info("No counted dataset yet. Count one on the Data page, or start with the sample data on the home page.")
        st.page_link(PAGES["data"], label="Go to Data", icon=ICONS["data"])
        st.stop()
    try:
        return counts(s.counts_path), coverage(s.counts_path)
    except VTError as e:
        st.error(str(e))
        st.page_link(PAGES["data"], label="Count the data again", icon=ICONS["data"])
        st.stop()


@st.cache_resource(max_entries=4, show_spinner="Loading the tokenizer ...")
def tokenizer(name: str | None):
    from vtcore.tokens import load_tokenizer

    return load_tokenizer(name)


def tokenizer_or_none(manifest: dict):
    """The tokenizer the counts were made with, or None when it cannot be loaded here."""
    try:
        return tokenizer(manifest.get("tokenizer"))
    except VTError:
        return None


def show_token(tok, token_id: int) -> str:
    """A token's text for tables, spaces made visible (a space-only token is otherwise blank)."""
    if tok is None:
        return ""
    from vtcore.tokens import describe_token

    return describe_token(tok, token_id).replace(" ", "␣")


@st.cache_resource(max_entries=8, show_spinner=False)
def _ood(path: str, mtime: float, a: str, b: str) -> np.ndarray:
    return _counts(path, mtime).ood_curve(a, b)


def ood_curve(path: str, a: str, b: str) -> np.ndarray:
    return _ood(path, mtime(path), a, b)


@st.cache_resource(max_entries=8, show_spinner=False)
def _profile(path: str, mtime: float):
    from vtcore.profile import load_profile

    return load_profile(path)


def profile(path: str):
    """A measured latency profile (python -m vtcore profile)."""
    return _profile(path, mtime(path))


@st.cache_resource(max_entries=8, show_spinner=False)
def _arch(draft: str, mtime: float):
    from vtcore import cost

    return cost.resolve_draft(draft)


def arch(draft: str):
    return _arch(draft, mtime(draft))


@st.cache_resource(max_entries=8, show_spinner=False)
def _counts_sha(path: str, mtime: float) -> str:
    from vtcore.countsfile import counts_sha256

    return counts_sha256(_counts(path, mtime))


def counts_sha(path: str) -> str:
    """The identity of the counts at `path` (vtcore.countsfile.counts_sha256), cached."""
    return _counts_sha(path, mtime(path))


def replays(counts_path: str) -> list[tuple[str, dict]]:
    """The acceptance replays made for these counts (vtapp.replays), newest first; read afresh
    each run (a folder of a few small manifests) so a replay just written shows at once."""
    from vtapp import replays as rp

    return [(str(p), m) for p, m in rp.replays_for(counts_sha(counts_path))]


@st.cache_resource(max_entries=4, show_spinner=False)
def _replay(path: str, mtime: float):
    from vtcore.acceptance import load_acceptance

    return load_acceptance(path)


def replay(path: str):
    return _replay(path, mtime(path))


@st.cache_resource(max_entries=8, show_spinner="Simulating the trimmed heads over the replay ...")
def _acceptance_curves(path: str, mtime: float, rank_path: str, rank_mtime: float, gamma: int):
    from vtapp.replays import acceptance_curves as curves

    return curves(_replay(path, mtime), _counts(rank_path, rank_mtime), gamma)


def acceptance_curves(path: str, manifest: dict, gamma: int):
    """C(k) and the replayed A(k) of both rankings (vtapp.replays.acceptance_curves), cached."""
    rank = manifest["ranking_counts"]
    return _acceptance_curves(path, mtime(path), rank, mtime(rank), int(gamma))


def replay_label(manifest: dict) -> str:
    """One line naming a replay: pair, data, prompts and tokens."""
    return (f"{manifest.get('draft')} → {manifest.get('target')} on {vstate.upload_label(manifest.get('data', '?'))}"
            f" · {manifest.get('heldout_prompts')} held-out + {int(manifest.get('prompts', 0)) - int(manifest.get('heldout_prompts', 0))}"
            f" fit prompts × {manifest.get('max_new_tokens')} tokens, γ ≤ {manifest.get('gamma_max')}")


@st.cache_resource(max_entries=16, show_spinner=False)
def _search_setup(counts_path: str, counts_mtime: float, spec_json: str, draft_mtime: float, latency_mtime: float,
                  acc_path: str | None, acc_mtime: float, ranking: str):
    import json
    from dataclasses import replace

    from vtcore import problem, search

    spec = problem.SearchSpec(**json.loads(spec_json))
    if acc_path is not None:   # the search goes as deep in gamma as the replay does
        spec = replace(spec, gamma_max=min(spec.gamma_max, _replay(acc_path, acc_mtime).gamma_max))
    cf = _counts(counts_path, counts_mtime)
    setup = problem.build(cf, spec, cov=_coverage(counts_path, counts_mtime), arch=_arch(spec.draft, draft_mtime))
    if acc_path is not None:
        setup = problem.attach_acceptance(setup, cf, acc_path, ranking)
        setup = problem.attach_tree_ranks(setup, cf, acc_path, ranking)   # SGLang's tree on the same replay
    return setup, search.solve_exact(setup.problem)


def search_setup(counts_path: str, spec: Any, acc_path: str | None = None, ranking: str = "frequency"):
    """(SearchSetup, exact solution) of these counts under `spec` (vtcore.problem.SearchSpec), with
    the replay at `acc_path` scoring the speed-up when given; cached on everything that decides
    them (files by path and mtime), so a rerun that changes none of it (a key repeat, a click on
    a plot) costs nothing. Callers never mutate the result."""
    import json
    from dataclasses import asdict

    return _search_setup(counts_path, mtime(counts_path), json.dumps(asdict(spec), sort_keys=True),
                         mtime(spec.draft), mtime(spec.latency), acc_path, mtime(acc_path) if acc_path else -1.0,
                         ranking)


PRESET_PADDING = 2048   # head rows a model adds past its tokenizer's ids (Qwen3: 151,936 rows, 151,669 ids)


def presets_for_tokenizer(vocab: int) -> tuple[list[str], str]:
    """The draft presets for a tokenizer of `vocab` ids, EAGLE-3 heads first, and a line that says
    which model family they are for: those whose head has the tokenizer's rows (up to padding);
    when none is, every preset large enough, said to be for other models."""
    from vtcore import cost

    def rows(p: str) -> int:
        return int(cost.PRESETS[p]["config"]["vocab_size"])

    order = sorted(cost.DRAFT_PRESETS, key=lambda p: (not p.startswith("eagle3"), p))
    same = [p for p in order if vocab <= rows(p) < vocab + PRESET_PADDING]
    if same:
        targets = sorted({cost.PRESETS[p]["target"] for p in same})
        return same, (f"Presets for the counted tokenizer ({vocab:,} ids): drafts of {', '.join(targets)}. "
                      "Another model: upload its config.json.")
    larger = [p for p in order if rows(p) >= vocab]
    return larger, (f"No preset is for a {vocab:,}-id tokenizer: these are drafts of other models with larger "
                    "vocabularies, shown for scale only. Upload your draft's config.json for its own figures.")


# ---------------------------------------------------------------- jobs

def job_panel(name: str, label: str) -> Any:
    """Progress, Stop and the outcome of the job registered under `name`; polls (fragment
    run_every) only while it runs and reruns the whole page once when it ends. Returns the job."""
    job = registry().get(name)
    if job is None:
        return None
    polling = job.running

    @st.fragment(run_every=POLL_S if polling else None)
    def panel() -> None:
        s = job.status()
        if s["running"]:
            st.progress(s["fraction"], text=f"{label}: {s['text'] or s['state']} · {s['elapsed']:.0f} s")
            st.button("Stop", key=f"stop-{name}", on_click=job.stop, disabled=s["state"] == "stopping")
            return
        if polling:            # it ended while we watched: redraw the page with the result
            st.rerun()
        if s["state"] == "error":
            st.error(f"{label} failed: {s['error']}")
            if s["kept"]:
                st.info(f"Kept: {s['kept']}")
        elif s["state"] == "stopped":
            st.warning(f"{label} stopped after {s['elapsed']:.1f} s" + (f"; kept: {s['kept']}" if s["kept"] else ""))

    panel()
    return job


# a benchmark verdict's badge (st.metric delta): its arrow and colour say the verdict itself
# (the text alone would get an up arrow whatever it says)
VERDICT_BADGE = {"faster": {"delta_arrow": "up", "delta_color": "green"},
                 "slower": {"delta_arrow": "down", "delta_color": "red"},
                 "no measurable difference": {"delta_arrow": "off", "delta_color": "gray"}}

CURVE_LABELS = {"heldout": "held-out", "insample": "in-sample"}


def curve_label(curve: str) -> str:
    """A coverage curve's name as the pages write it ("heldout" -> "held-out")."""
    return CURVE_LABELS.get(curve, curve)


def fmt_pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"
