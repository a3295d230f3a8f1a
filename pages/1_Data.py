"""Data: pick or upload a dataset, pick the tokenizer and mask, count in the background, see what was counted."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import state as vstate
from vtcore.data import SCHEMAS
from vtcore.errors import DataError, VTError
from vtapp.jobs import counting_job

s = ui.page("Data")
st.title("Data")

# ---- dataset
st.subheader("1. Dataset")
if "data_source" not in st.session_state:   # a new session (a refresh): the saved choice
    counted_upload = s.datasets and not any(str(ui.REPO / "samples") in p for p in s.datasets)
    st.session_state["data_source"] = s.data_source or ("Upload" if counted_upload else "Bundled sample")
source = st.radio("Source", ["Bundled sample", "Upload"], horizontal=True, key="data_source",
                  on_change=lambda: ui.save(data_source=st.session_state["data_source"]))
paths: list[str] = []
if source == "Bundled sample":
    counted = [n for n, (p, _) in ui.SAMPLES.items() if str(p) in s.datasets]
    picked = st.multiselect("Samples (pick two to see out-of-domain coverage)", list(ui.SAMPLES),
                            default=counted or ["code"], format_func=lambda n: ui.SAMPLES[n][1], key="samples")
    paths = [str(ui.SAMPLES[n][0]) for n in picked]
else:
    limit = st.get_option("server.maxUploadSize")

    def keep_uploads() -> None:
        """Save the uploader's files into the workspace; only files new to it join the files to
        count (one the user took out, or a bad one, is not chosen again by the next upload)."""
        seen = st.session_state.setdefault("uploads_seen", set())
        stored = {str(p) for p in vstate.list_uploads()}
        chosen = [p for p in vstate.load_state().uploads]
        errors = []
        for f in st.session_state.get("uploader") or []:
            if f.file_id in seen:   # the uploader lists every file of this session each time
                continue
            seen.add(f.file_id)
            try:
                path = str(vstate.save_upload(f.name, f.getvalue()))
            except VTError as e:   # e.g. an empty file: said next to the uploader, the page goes on
                errors.append(str(e))
                continue
            if path not in stored and path not in chosen:   # bytes already stored keep the user's choice
                chosen.append(path)
        st.session_state["upload_errors"] = errors
        ui.save(uploads=chosen)

    st.file_uploader(f"JSONL, JSON, Parquet or CSV (optionally .gz); up to {limit:,} MB per file",
                     type=["jsonl", "ndjson", "json", "parquet", "pq", "csv", "gz"], accept_multiple_files=True,
                     key="uploader", on_change=keep_uploads,
                     help="Chat rows: OpenAI `messages` / ShareGPT `conversations` / Alpaca / prompt+response / "
                          "text; a CSV or Parquet file with other column names gets a column mapping below. "
                          "Uploads are kept in the workspace, so a refresh loses nothing.")
    for err in st.session_state.get("upload_errors", []):
        st.error(err)
    uploads = [str(p) for p in vstate.list_uploads()]
    # the saved choice (it survives a refresh), without files no longer in the workspace
    chosen = ui.persisted("uploads_chosen", field="uploads", cast=lambda ps: [p for p in ps if p in uploads])
    paths = st.multiselect("Uploaded files to count", uploads, format_func=vstate.upload_label, **chosen,
                           help="only the files chosen here are counted; each names its domain")
    st.caption(f"Stored under `{vstate.subdir('uploads')}`; each file's name (or a `domain` field per row) "
               "names its domain.")

    @st.cache_data(max_entries=32, show_spinner=False)
    def table_info(path: str, mtime: float) -> tuple[list[str], str | None]:
        """A table's columns and whether a schema reads it ("" when none does)."""
        from vtcore.data import columns, detect_schema, iter_records

        try:
            cols = columns(path)
        except DataError as e:   # unreadable: its one-line reason
            return [], str(e)
        try:
            return cols, detect_schema(next(rec for _, rec in iter_records(path)), path)
        except DataError:
            return cols, ""

    def use_columns(path: str, user: str, answer: str) -> None:
        """Write the mapped rows as a JSONL upload named like the table and count it instead."""
        from vtcore.data import map_columns

        try:
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in map_columns(path, user, answer))
            mapped = str(vstate.save_upload(vstate.upload_label(path).split(".")[0] + ".jsonl", body.encode()))
        except VTError as e:
            st.session_state["upload_errors"] = [str(e)]
            return
        ui.save(uploads=[mapped if p == path else p for p in vstate.load_state().uploads])

    for p in paths:
        if not p.lower().endswith((".csv", ".csv.gz", ".parquet", ".pq")):
            continue
        cols, read_as = table_info(p, ui.mtime(p))
        if not cols:
            st.error(read_as)
            continue
        with st.expander(f"Columns of {vstate.upload_label(p)}" + (f" (read as {read_as})" if read_as else
                                                                    ": map them to the user turn and the answer"),
                         expanded=not read_as):
            m1, m2, m3 = st.columns([2, 2, 1])
            guess = lambda names: next((c for c in cols if c.lower() in names), None)  # noqa: E731
            user = m1.selectbox("User turn (prompt)", cols, key=f"map_user_{p}",
                                index=cols.index(guess(("question", "prompt", "input", "query", "instruction"))
                                                 or cols[0]))
            answer = m2.selectbox("Assistant answer (counted)", cols, key=f"map_answer_{p}",
                                  index=cols.index(guess(("answer", "response", "output", "completion", "reply"))
                                                   or cols[-1]))
            m3.button("Use these columns", key=f"map_use_{p}", on_click=use_columns, args=(p, user, answer),
                      disabled=user == answer, help="writes the rows as prompt/response JSONL in the workspace "
                                                    "and counts that file instead")

# ---- tokenizer and mask
st.subheader("2. Tokenizer and mask")
c1, c2 = st.columns(2)
with c1:
    kinds = ["Bundled Qwen3", "Hub id", "Local directory"]
    tk = s.tokenizer
    kind = st.radio("Tokenizer", kinds, horizontal=True, key="tok_kind",
                    index=0 if not tk or tk.startswith("bundled") else (2 if Path(tk).is_dir() else 1))
    tok_name = None
    if kind != "Bundled Qwen3":
        tok_name = st.text_input("Hub id" if kind == "Hub id" else "Directory with tokenizer.json",
                                 value="" if not tk or tk.startswith("bundled") else tk, key="tok_name",
                                 placeholder="Qwen/Qwen3-8B" if kind == "Hub id" else "/models/my-target").strip() or None
        if kind == "Hub id":
            st.caption("Hub ids load only if already in the local Hugging Face cache (no downloads here).")
with c2:
    mask = st.radio("Count", ["template", "content"], horizontal=True, key="mask",
                    index=1 if s.mask == "content" else 0,
                    format_func={"template": "assistant tokens via the chat template",
                                 "content": "assistant message text only"}.get)
    schema = st.selectbox("Schema", SCHEMAS, key="schema")
    skip_bad = st.checkbox("Skip malformed rows (count them instead of stopping)", value=s.skip_bad, key="skip_bad")
    engine = st.radio("Engine", ["local", "ray"], horizontal=True, key="engine",
                      format_func={"local": "this machine", "ray": "Ray Data"}.get,
                      help="Ray Data counts on a local Ray, or on a running Ray cluster; the counts are "
                           "identical (needs ray[data]: bash scripts/setup.sh --with-ray).")
    ray_address = None
    if engine == "ray":
        ray_address = st.text_input("Ray cluster address (empty: start a local Ray)", key="ray_address",
                                    placeholder="auto or HOST:PORT").strip() or None

# ---- what to count: the dataset's answers, or the target's own (VocabTrim: its generations rank better)
what = st.radio("What to count", ["dataset", "generate"], horizontal=True, key="count_what",
                format_func={"dataset": "the dataset's assistant turns",
                             "generate": "count the target's own responses (generate)"}.get,
                help="generate: the target answers each row's prompt (greedy, cached); its responses are "
                     "counted with its own tokenizer, and the result compares both rankings on held-out rows")
generate = None
if what == "generate":
    g1, g2, g3 = st.columns([2, 1, 1])
    generate = {"target": g1.text_input("Target (empty: the embedded SmolLM2-135M-Instruct)", key="gen_target",
                                        placeholder="local model directory").strip() or None,
                "max_new_tokens": g2.number_input("Max new tokens", 1, 4096, 128, key="gen_max_new"),
                "rows": g3.number_input("Rows (prompts per dataset)", 1, 100_000, 100, key="gen_rows")}

# ---- count
job = ui.registry().get("count")
busy = job is not None and job.running
if st.button("Count tokens", type="primary", key="count_btn",
             disabled=busy or not paths or (what == "dataset" and kind != "Bundled Qwen3" and not tok_name)):
    st.session_state["counting_here"] = True
    try:
        ui.registry().start("count", counting_job(paths, tokenizer=tok_name, mask=mask, schema=schema,
                                                  skip_bad=skip_bad, engine=engine, ray_address=ray_address,
                                                  generate=generate))
    except VTError as e:
        st.error(str(e))
    st.rerun()
ui.job_panel("count", "Counting")

# ---- what was counted
s = vstate.load_state()
if not s.counts_path or not Path(s.counts_path).is_file():
    st.info("Nothing counted yet.")
    st.stop()
cf, cov = ui.counts(s.counts_path), ui.coverage(s.counts_path)
m = cf.manifest
st.subheader("3. Counted")
st.caption(f"{ui.dataset_label(s)} · counts file `{s.counts_path}`")
c = st.columns(5)
c[0].metric("Rows", f"{m.get('rows', 0):,}")
c[1].metric("Assistant tokens", f"{int(cf.counts.sum()):,}")
c[2].metric("Unique tokens", f"{int(np.count_nonzero(cf.counts)):,}", help=f"of {cf.vocab_size:,} in the tokenizer")
c[3].metric("Skipped rows", f"{m.get('rows_skipped', 0):,}")
c[4].metric("Held-out tokens", f"{int(cf.counts_heldout.sum()):,}", help="every 5th row, for honest coverage")
if m.get("skipped"):
    st.warning("Skipped rows by reason: " + ", ".join(f"{r}: {n:,}" for r, n in m["skipped"].items()))
if m.get("mode") == "generate":
    g = m["generate"]
    st.caption(f"Counted the responses of {g['target']} (greedy, at most {g['max_new_tokens']} tokens) to "
               f"{m['rows']:,} prompts, with its tokenizer.")
for w in m.get("warnings", [])[:5]:
    st.caption(f"warning: {w}")
if len(cf.domain_names) > 1:
    st.caption("Domains: " + ", ".join(f"{d} ({int(cf.counts_by_domain[i].sum()):,} tokens)"
                                       for i, d in enumerate(cf.domain_names)))

st.markdown("**Top tokens**")
st.caption("The always-kept tokens (end-of-turn / EOS: a trimmed draft must be able to end a turn) rank first "
           "whatever their count; every other token ranks by its count.")
top_n = 30
order = cov.order_all   # the in-sample ranking: all rows
total = max(int(cf.counts.sum()), 1)
ids = [int(i) for i in order[:top_n] if cf.counts[i] > 0]
keep = set(int(i) for i in cov.always_keep)
tok = ui.tokenizer_or_none(m)
if tok is None:
    st.caption(f"Tokenizer {m.get('tokenizer')} cannot be loaded here: ids only.")
cum = np.cumsum(cf.counts[order[:top_n]]) / total
st.dataframe(pd.DataFrame({
    "rank": range(1, len(ids) + 1), "id": ids, "always kept": [i in keep for i in ids],
    "token": [ui.show_token(tok, i) for i in ids],
    "count": [int(cf.counts[i]) for i in ids],
    "share": [cf.counts[i] / total for i in ids],
    "cumulative": cum[:len(ids)]}),
    hide_index=True, width="stretch", height=300,
    column_config={"share": st.column_config.NumberColumn(format="percent"),
                   "cumulative": st.column_config.NumberColumn(format="percent")})
st.page_link(ui.PAGES["coverage"], label="Next: coverage curve", icon=ui.ICONS["coverage"])
