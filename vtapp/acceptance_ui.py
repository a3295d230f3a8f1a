"""The acceptance parts of the pages (Streamlit): the Coverage page's "Measure acceptance" job and
its C(k) / A(k) curves of both rankings, the Frontier's acceptance-model choice, the Export
page's ranking choice. The work is in vtapp.replays and vtcore.acceptance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import plots
from vtapp import state as vstate
from vtcore.coverage import k_for_coverage
from vtcore.errors import VTError

RANKINGS = ("frequency", "acceptance")

MODELS = {"replay": "replay: A(k, γ) measured by replaying the draft",
          "a0*C(k)": "a0·C(k): acceptance proportional to coverage (assumed)"}
RANKING_LABELS = {"frequency": "frequency (fit rows)", "acceptance": "acceptance-aware (replay's fit prompts first)"}


def current_replay(s: vstate.AppState, key: str) -> tuple[str, dict] | None:
    """The replay of the current counts the user looks at (the newest unless they pick another)."""
    found = ui.replays(s.counts_path)
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    paths = [p for p, _ in found]
    labels = {p: ui.replay_label(m) for p, m in found}
    pick = st.selectbox("Replay", paths, key=key, format_func=labels.get,
                        help="acceptance files made for these counts, newest first")
    return next(f for f in found if f[0] == pick)


def start_form(s: vstate.AppState, found: bool) -> None:
    """What to replay, and the button that starts the background job."""
    job = ui.registry().get("acceptance")
    with st.expander("Measure acceptance: replay a draft over this dataset's held-out rows", expanded=not found):
        st.caption("The target continues held-out prompts greedily (cached); one pass of the FULL draft over that "
                   "continuation then gives, exactly, the accepted tokens per step of a head trimmed to ANY k "
                   "(greedy decoding; `python -m vtcore acceptance` does the same). Fit-row prompts make the "
                   "acceptance-aware ranking. Minutes on a CPU for the default pair.")
        a, b = st.columns(2)
        target = a.text_input("Target model", key="acc_target", placeholder="default: SmolLM2-135M-Instruct",
                              help="a local model directory or hub id; empty: the embedded SmolLM2 pair").strip()
        draft = b.text_input("Draft", key="acc_draft", placeholder="default: its EAGLE-3 head",
                             help="an EAGLE-3 checkpoint or a standalone draft directory; with the default target "
                                  "also `standalone` (its 2-layer draft)").strip()
        data = st.selectbox("Prompts from", s.datasets, key="acc_data", format_func=vstate.upload_label,
                            help="a dataset of the current counts: its held-out rows are replayed, its fit rows rank")
        c = st.columns(4)
        n_held = int(c[0].number_input("held-out prompts", 1, 256, 8, key="acc_prompts"))
        n_fit = int(c[1].number_input("fit-row prompts", 0, 1024, 16, key="acc_fit",
                                      help="for the acceptance-aware ranking; 0: the frequency ranking only"))
        n_new = int(c[2].number_input("tokens per prompt", 2, 1024, 48, key="acc_new"))
        g_max = int(c[3].number_input("γ max", 1, 16, 8, key="acc_gmax"))
        if st.button("Measure acceptance", key="acc_run", type="primary", disabled=job is not None and job.running):
            from vtapp.jobs import acceptance_job
            from vtapp.replays import ReplayRequest

            req = ReplayRequest(target=target or None, draft=draft or None, data=data, prompts=n_held,
                                fit_prompts=n_fit, max_new_tokens=n_new, gamma_max=g_max)
            ui.start_job("acceptance", lambda: acceptance_job(req))
    ui.job_panel("acceptance", "Acceptance replay")


def acceptance_block(s: vstate.AppState, k_need: int, min_coverage: float) -> None:
    """Coverage page: measure acceptance, and both rankings' C(k) and A(k) with what each keeps at
    the constraint's k."""
    found = ui.replays(s.counts_path)
    start_form(s, bool(found))
    if not found:
        st.caption("No acceptance measured for these counts yet: the Frontier's speed-up then assumes "
                   "a0·C(k). Measure it above.")
        return
    path, man = current_replay(s, "acc_pick")
    g_max = int(man["gamma_max"])
    g = st.columns([1, 4])
    gamma = int(g[0].selectbox("γ (draft tokens per step)", list(range(1, g_max + 1)),
                               index=min(4, g_max) - 1, key="acc_gamma"))
    g[1].caption(f"Replay: {ui.replay_label(man)} · file `{Path(path).name}` · made for these counts "
                 f"(sha256 {man['counts_sha256'][:12]}…)")
    try:
        rep = ui.replay(path)
        cur = ui.acceptance_curves(path, man, gamma)
    except VTError as e:   # e.g. the ranking counts it names were removed: said, the page goes on
        st.error(f"{Path(path).name}: {e}. Measure acceptance again.")
        return
    if man.get("same_tokenizer"):
        k_at, where = k_need, f"the constraint's k = {k_need:,}"
    else:   # the rankings are over the target's tokenizer: its own k for the constraint
        k_at = int(k_for_coverage(cur.coverage["frequency"], min_coverage))
        where = f"k = {k_at:,}, the {man.get('ranking_tokenizer')} tokenizer's k for C(k) ≥ {min_coverage:.3f}"
        st.info(f"These counts were made with another tokenizer than the target's ({man.get('ranking_tokenizer')}, "
                f"{cur.vocab:,} tokens): the curves below rank the same data counted with the target's tokenizer, "
                "so their k are rows of that target's head.", icon=":material/info:")
    ks = plots.log_ks(cur.vocab, must=(k_at,))
    st.plotly_chart(plots.acceptance_figure(cur.coverage, cur.accepted, cur.full, gamma, k_at, ks=ks),
                    key="acceptance_plot", config={"displaylogo": False})
    rows = []
    for r in cur.coverage:
        c_k, a_k = cur.at(r, k_at)
        near = np.flatnonzero(cur.accepted[r] >= 0.95 * cur.full) if cur.full > 0 else np.zeros(0, dtype=int)
        rows.append({"ranking": RANKING_LABELS[r], "held-out C(k)": round(c_k, 4), "A(k) accepted/step": round(a_k, 3),
                     "of the full head's A": f"{a_k / cur.full:.1%}" if cur.full > 0 else "–",
                     "smallest k keeping 95% of A": f"{int(near[0]):,}" if near.size else "none"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    parts = [f"the {r} ranking keeps C = {cur.at(r, k_at)[0]:.4f} of the held-out tokens and "
             f"A = {cur.at(r, k_at)[1]:.3f} accepted tokens per step"
             + (f" ({cur.at(r, k_at)[1] / cur.full:.0%} of the full head's {cur.full:.3f})" if cur.full > 0 else "")
             for r in cur.coverage]
    st.markdown(f"At {where}: " + "; ".join(parts) + ".")
    over = rep.overflow_share()
    if over > 0:
        st.caption(f"{over:.1%} of the replayed positions had more than {rep.cap} ids scored above the target's "
                   "token: counted as rejected for every trimmed head.")


def frontier_acceptance(s: vstate.AppState, objective: str) -> tuple[str | None, str]:
    """Frontier: which acceptance model the speed-up objective uses. A replay of these counts made
    in their own tokenizer can be used (the default when there is one); else a0*C(k), said so.
    Returns (the acceptance file to attach or None, the ranking its table is of)."""
    if objective != "speedup":
        return None, "frequency"
    found = ui.replays(s.counts_path)
    usable = [(p, m) for p, m in found if m.get("same_tokenizer")]
    if not usable:
        why = ("the replay of these counts is over the target's tokenizer "
               f"({found[0][1].get('ranking_tokenizer')}), not theirs: count the data with that tokenizer to use it"
               if found else "no acceptance measured for these counts (Coverage page → Measure acceptance)")
        st.caption(f"**Acceptance model:** a0·C(k), assumed: {why}.")
        return None, "frequency"
    path, man = usable[0]
    rankings = ["frequency", "acceptance"] if int(man.get("prompts", 0)) > int(man.get("heldout_prompts", 0)) \
        else ["frequency"]
    c1, c2 = st.columns(2)
    model = c1.radio("Acceptance model", list(MODELS), format_func=MODELS.get, **ui.persisted(
        "front_acc_model", "acceptance_model", cast=lambda v: v if v in MODELS else "replay"))
    if model != "replay":
        return None, "frequency"
    ranking = c2.radio("Ranking the trimmed head keeps", rankings, format_func=RANKING_LABELS.get,
                       **ui.persisted("front_ranking", "ranking", cast=lambda v: v if v in rankings else "frequency"),
                       help="the replayed A(k, γ) is of this ranking's first k ids; Export exports the same ranking")
    st.caption(f"Replay used: {ui.replay_label(man)} (`{Path(path).name}`)")
    return path, ranking


def model_note(setup, path: str | None, ranking: str, a0: float) -> None:
    """Which acceptance model produced the Frontier's numbers, said under them."""
    if setup.problem.objective != "speedup":
        return
    if path is None:
        st.caption(f"Speed-up numbers from **a0·C(k)** (a0 = {a0:.2f}): acceptance assumed proportional to coverage.")
    else:
        st.caption(f"Speed-up numbers from the **replay** `{Path(path).name}`: the replayed accepted tokens per step "
                   f"A(k, γ) of the {ranking} ranking (coverage C is that ranking's, on the held-out rows).")


def export_ranking(s: vstate.AppState) -> str | None:
    """Export: the ranking the exported ids are a prefix of. The acceptance-aware one is offered
    when a replay of these counts (their own tokenizer, with fit prompts) exists; returns its file
    when chosen (`vtcore export --ranking acceptance --acceptance FILE --k K` exports the same)."""
    usable = [(p, m) for p, m in ui.replays(s.counts_path)
              if m.get("same_tokenizer") and int(m.get("prompts", 0)) > int(m.get("heldout_prompts", 0))]
    if not usable:
        return None
    path, man = usable[0]
    ranking = st.radio("Ranking the exported ids come from", ["frequency", "acceptance"], horizontal=True,
                       format_func=RANKING_LABELS.get,
                       **ui.persisted("export_ranking", "ranking", cast=lambda v: v if v in RANKINGS else "frequency"),
                       help=f"acceptance-aware: from the replay `{Path(path).name}` ({ui.replay_label(man)}); "
                            "the same choice as the Frontier's")
    return path if ranking == "acceptance" else None
