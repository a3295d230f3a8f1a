"""Vocab Trim Studio: home page. Run with `streamlit run app.py`; the other pages are in pages/."""

import streamlit as st

from vtapp import common as ui
from vtcore.workspace import workspace_dir

s = ui.page("Home")
st.title("Vocab Trim Studio")
st.markdown(
    "Trim the LM head of a speculative-decoding **draft model** to the tokens your domain uses.  \n"
    "Count the assistant tokens of a dataset, see the coverage C(k) a k-token head keeps and the latency it saves, "
    "search the trade-off (exact frontier + Optuna TPE),  \n"
    "export the token map SGLang / EAGLE-3 / SpecForge read, and benchmark full vs trimmed drafts.")

if not s.counts_path:
    st.subheader("Start here")
    st.write("One click counts the bundled code sample (HumanEval, 164 rows) with the bundled Qwen3 tokenizer "
             "and opens its coverage curve.")
if st.button("Start with the sample data", type="primary", key="start_sample"):
    from vtapp.jobs import counting_job

    path = str(ui.SAMPLES["code"][0])
    st.session_state["counting_here"] = True
    with st.spinner("Counting samples/code.jsonl with the bundled Qwen3 tokenizer ..."):
        job = counting_job([path], tokenizer=None, mask="template")
        job.start().join()
    if job.state == "finished":
        st.switch_page(ui.PAGES["coverage"])
    st.error(f"Counting the sample failed: {job.error}")

st.subheader("Current workspace")
c1, c2 = st.columns(2)
with c1:
    st.markdown(f"**Workspace folder**  \n`{workspace_dir()}`")
    st.markdown(f"**Dataset**  \n{ui.dataset_label(s) if s.counts_path else 'none counted yet'}")
    st.markdown(f"**Tokenizer**  \n{s.tokenizer or 'bundled Qwen3'}")
with c2:
    st.markdown(f"**Draft**  \n{s.draft or 'not chosen (Frontier page)'}")
    st.markdown(f"**Study**  \n{s.study or 'none'}")
    sel = ui.selection(s)
    st.markdown(f"**Selected point**  \n{sel.label() if sel else 'none (pick one on Frontier)'}")

st.subheader("Pages")
cols = st.columns(5)
for col, (key, label, icon, what) in zip(cols, [
        ("data", "Data", ui.ICONS["data"], "upload or pick a dataset, count its tokens"),
        ("coverage", "Coverage", ui.ICONS["coverage"], "C(k), the k a coverage needs, dropped tokens"),
        ("frontier", "Frontier", ui.ICONS["frontier"], "draft cost, exact frontier, live TPE search"),
        ("export", "Export", ui.ICONS["export"], "token maps for SGLang, EAGLE-3, JSON, trimmed draft"),
        ("bench", "Benchmark", ui.ICONS["bench"], "full vs trimmed draft, real speculative decoding")]):
    with col:
        st.page_link(ui.PAGES[key], label=label, icon=icon)
        st.caption(what)
