"""Export: the selected point as token maps (SGLang, EAGLE-3, speculators, JSON, trimmed drafts), each
validated, sized by the target model's vocabulary V (shown with where it came from)."""

from pathlib import Path

import streamlit as st

from vtapp import common as ui
from vtapp.acceptance_ui import export_ranking
from vtapp.replays import acceptance_choice
from vtcore import export as ex
from vtcore import models
from vtcore.errors import VTError
from vtcore.selection import Selection, choose
from vtcore.workspace import subdir

s = ui.page("Export")
st.title("Export")
ui.context_line(s)
cf, cov = ui.counts_or_stop(s)
sel = ui.selection(s)
if s.selected and sel is None:
    st.warning("The saved selection was made for other counts; pick a point again.")
if sel is None:
    st.info("No point selected: click one on the Frontier page, or press “Select k” on the Coverage page. "
            "Meanwhile you can export any k here.")
    c = st.columns([1, 1, 2])
    k = int(c[0].number_input("k", 1, cf.vocab_size, value=min(4096, cf.vocab_size), step=256, key="export_k"))
    curve = c[1].radio("ranking", ["heldout", "insample"] if cov.heldout is not None else ["insample"],
                       format_func={"heldout": "fit rows (held-out curve)", "insample": "all rows (in-sample)"}.get,
                       key="export_curve")
    sel = Selection(k=k, curve=curve, source="manual", counts_path=s.counts_path)
    c[2].page_link(ui.PAGES["frontier"], label="Pick on the Frontier", icon=ui.ICONS["frontier"])


acc_path = export_ranking(s)   # the acceptance-aware ranking when a replay of these counts exists and is chosen


@st.cache_resource(max_entries=8, show_spinner="Rendering and validating the exports ...")
def make_bundle(counts_path: str, mtime: float, sel: Selection, draft: str | None, hf_dir: str | None,
                target: str | None, acc_path: str | None = None, acc_mtime: float = -1.0):
    cf = ui.counts(counts_path)
    choice = choose(cf, sel) if acc_path is None else acceptance_choice(cf, acc_path, int(sel.k))
    # a V that is only len(tokenizer): the formats whose readers check V are left out (the CLI refuses them);
    # a draft that cannot be exported leaves every token map on the page, its reason in bundle.draft_error
    return ex.export(choice, "all", target=target, draft=hf_dir or draft, strict_vocab=False)


draft = s.draft if s.draft else None
with st.expander("Target model and trimmed draft", expanded=not s.target or bool(st.session_state.get("hf_dir"))):
    target = (st.text_input("Target model, for its vocabulary size V (config.json, model directory, hub id or "
                            "preset)", placeholder="Qwen/Qwen3-8B, /models/target, qwen3-8b",
                            **ui.persisted("export_target", "target")) or "").strip() or None
    st.caption("Without it V comes from the draft chosen on the Frontier page "
               f"({draft or 'none'}), or from the tokenizer when vtcore knows its models.")
    hf_dir = st.text_input("Draft model directory to trim (a standalone draft, or an EAGLE-3 draft in SpecForge / "
                           "SGLang or speculators layout; same tokenizer). `default`: the bundled EAGLE-3 head, "
                           "`standalone`: the bundled 2-layer draft (both for SmolLM2, the default target)",
                           key="hf_dir", placeholder="/models/my-draft, default, standalone").strip() or None
    draft_box = st.empty()   # the draft export's error, shown here in place
    if hf_dir and not Path(hf_dir).is_dir() and models.bundled_draft(hf_dir) is None:
        draft_box.error(f"{hf_dir}: no such directory")
        hf_dir = None

try:
    bundle = make_bundle(s.counts_path, ui.mtime(s.counts_path), sel, draft, hf_dir, target, acc_path,
                         ui.mtime(acc_path) if acc_path else -1.0)
except VTError as e:
    st.error(str(e))
    st.stop()

ch = bundle.choice
st.subheader(f"Selected: k = {ch.k:,} of {bundle.vocab_size:,}")
m = st.columns(5)
m[0].metric("kept tokens k", f"{ch.k:,}", help=ch.how)
m[1].metric(f"{ui.curve_label('heldout' if ch.curve == 'acceptance' else ch.curve)} C(k)", "–" if ch.coverage is None else f"{ch.coverage:.4f}",
            help=f"the coverage shown for this k; the ids are the ranking made on {ex.RANKED_ON[ch.curve]}")
# the other measure of the same ids (the chosen curve's own is the one above)
if ch.curve in ("heldout", "acceptance"):   # both show held-out C(k) above
    m[2].metric("covers all rows", f"{ch.coverage_all_rows:.4f}", help="these k ids' share of every row's tokens")
else:
    m[2].metric("covers held-out rows", "–" if ch.coverage_heldout_rows is None else
                f"{ch.coverage_heldout_rows:.4f}", help="these k ids' share of the held-out rows' tokens")
lat = ch.extra.get("latency_reduction")
m[3].metric("latency reduction", "–" if lat is None else f"{lat:.4f}", help=ch.extra.get("latency_estimate") or "")
m[4].metric("target vocabulary V", f"{bundle.vocab_size:,}", help=bundle.vocab_source)
how = "k typed in on this page" if sel.source == "manual" and ch.curve != "acceptance" else ch.how
st.caption(f"Chosen: {how}. V = {bundle.vocab_size:,} from {bundle.vocab_source}.")
if bundle.vocab.guessed:
    st.warning(f"V = {bundle.vocab_size:,} is only the tokenizer's size, a guess: the EAGLE-3, speculators and "
               "draft exports need the target model's vocab_size (their readers check it), so only the SGLang map "
               "and the JSON are offered. Name the target model above.", icon=":material/warning:")
if bundle.draft_error is not None:
    draft_box.error(f"The draft was not exported: {bundle.draft_error}. The token maps below are.",
                    icon=":material/error:")
for n in bundle.notes:
    if not n.startswith("the draft was not exported"):
        st.info(n)
offer_speculators = (hf_dir and not bundle.retrain_needed and bundle.draft_error is None
                     and ex.draft_is_eagle3(ex.draft_dir(hf_dir)))
if offer_speculators and "speculators" not in bundle.artifacts:
    st.info("Name the target model as a hub id or directory to export this EAGLE-3 draft in speculators' layout "
            "too: vLLM serves it with that model as the verifier.")

DESCRIBE = {"sglang": "SGLang `--speculative-token-map`: int64 tensor of target ids, frequency order",
            "eagle3": "EAGLE-3 / SpecForge vocab mapping: {d2t, t2d}",
            "speculators-vocab": "speculators training: d2t-{k}.npy + t2d-{k}.npy (zip)",
            "json": "JSON: token_ids + vocab_size + manifest",
            "hf-draft": "trimmed draft (zip): lm_head cut to k rows + d2t/t2d; an EAGLE-3 draft in SpecForge / "
                        "SGLang layout, a standalone one for vtcore bench only",
            "speculators": "EAGLE-3 draft in speculators' layout (zip): what `vllm serve` reads",
            "summary": "summary of the choice (coverage, latency, provenance)"}
MIME = {"json": "application/json", "summary": "application/json", "hf-draft": "application/zip",
        "speculators": "application/zip", "speculators-vocab": "application/zip"}
for fmt, art in bundle.artifacts.items():
    c1, c2, c3 = st.columns([2, 3, 3])
    c1.markdown(f"**{fmt}**  \n<small>{DESCRIBE.get(fmt, '')}</small>", unsafe_allow_html=True)
    c2.download_button(art.download_name, data=art.data(), file_name=art.download_name, icon=":material/download:",
                       mime=MIME.get(fmt, "application/octet-stream"), key=f"dl_{fmt}")
    r = art.report
    if r.ok:
        c3.success(f"valid {r.format}" + (f": {r.n:,} ids" if r.n else "")
                   + (f" · {len(r.warnings)} warning(s)" if r.warnings else ""), icon=":material/check_circle:")
    else:
        c3.error("invalid: " + "; ".join(r.problems), icon=":material/error:")
    for w in r.warnings:
        c3.caption(f"warning: {w}")

st.divider()
out = subdir("exports") / f"{Path(s.counts_path).stem}-k{ch.k}"
if st.button(f"Save all to the workspace ({out})", key="save_exports"):
    try:
        written = ex.write_bundle(bundle, out, force=False)
        st.success(f"Wrote {len(written)} files to {out}")
    except VTError as e:
        st.error(str(e))
