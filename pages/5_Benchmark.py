"""Benchmark: real speculative decoding, target alone vs full draft vs trimmed draft, in the background."""

import os

import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import plots
from vtapp import state as vstate
from vtcore.errors import VTError

s = ui.page("Benchmark")
DEFAULT_THREADS = max(1, (os.cpu_count() or 2) // 2)
st.title("Benchmark")


@st.cache_resource(show_spinner=False)
def device_found() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s))"
    return f"CPU ({torch.get_num_threads()} threads; no CUDA device found)"


st.caption(f"Device: **{device_found()}**")
b = dict(s.bench)
st.markdown("Target and draft: `default` is the bundled pair, SmolLM2-135M-Instruct and its 2-layer draft "
            "(converted on first use, about half a minute). Or give local model directories with the same tokenizer.")
c1, c2 = st.columns(2)
target = c1.text_input("Target model", value=b.get("target") or "default", key="bench_target").strip()
draft = c2.text_input("Draft model", value=b.get("draft") or "default", key="bench_draft").strip()
sample_default = str(ui.SAMPLES["code"][0])
data = st.text_input("Prompts: held-out rows of this dataset", value=b.get("data") or sample_default, key="bench_data",
                     help="the token map is the top-k of this data's assistant tokens (counted with the target's "
                          "tokenizer); prompts are its held-out rows, never used for the ranking").strip()
p = st.columns(6)
prompts = int(p[0].number_input("prompts", 1, 64, int(b.get("prompts", 2)), key="bench_prompts"))
max_new = int(p[1].number_input("new tokens", 4, 1024, int(b.get("max_new_tokens", 32)), step=8, key="bench_new"))
gamma = int(p[2].number_input("γ (draft length)", 1, 16, int(b.get("gamma", 4)), key="bench_gamma"))
repeats = int(p[3].number_input("repeats", 1, 10, int(b.get("repeats", 1)), key="bench_repeats"))
device = p[4].selectbox("device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(b.get("device", "auto")),
                        key="bench_device")
threads = int(p[5].number_input("CPU threads", 1, os.cpu_count() or 1, int(b.get("threads", DEFAULT_THREADS)),
                                key="bench_threads",
                                help="torch threads on CPU. Half the cores by default: on a machine that is busy "
                                     "with other work, more threads than free cores makes every step many times slower"))
K_FROM = {"search": "speed-up optimum (vtcore.search, calibrated on 2 other prompts)",
          "coverage": "smallest k with a held-out coverage", "k": "a fixed k"}
q = st.columns([2, 1, 3])
k_from = q[0].selectbox("Trimmed draft keeps", list(K_FROM), index=list(K_FROM).index(b.get("k_from", "search")),
                        format_func=K_FROM.get, key="bench_k_from")
k_fixed, coverage, min_coverage = None, float(b.get("coverage", 0.99)), float(b.get("min_coverage", 0.95))
if k_from == "search":
    min_coverage = float(q[1].number_input("with C(k) ≥", 0.0, 1.0, min_coverage, step=0.01, format="%.3f",
                                           key="bench_min_cov"))
elif k_from == "coverage":
    coverage = float(q[1].number_input("coverage", 0.5, 1.0, coverage, step=0.01, format="%.3f", key="bench_cov"))
else:
    k_fixed = int(q[1].number_input("k", 1, 1 << 20, int(b.get("k") or 8192), step=1024, key="bench_k"))
q[2].caption("Defaults are quick (2 prompts × 32 tokens); raise them for steadier numbers.")

job = ui.registry().get("bench")
if st.button("Benchmark", type="primary", key="bench_run", disabled=job is not None and job.running):
    from vtcore.bench import BenchConfig
    from vtapp.jobs import bench_job

    settings = dict(target=target, draft=draft, data=data, prompts=prompts, max_new_tokens=max_new, gamma=gamma,
                    repeats=repeats, device=device, threads=threads, k_from=k_from, k=k_fixed, coverage=coverage,
                    min_coverage=min_coverage)
    ui.save(bench=settings)
    default = {"default", "smollm2", ""}
    cfg = BenchConfig(target=None if target.lower() in default else target,
                      draft=None if draft.lower() in default else draft,
                      data=data or None, prompts=prompts, max_new_tokens=max_new, gamma=gamma, repeats=repeats,
                      warmup=1, device=device, threads=threads, k=k_fixed,
                      k_from="coverage" if k_from == "coverage" else "search", coverage=coverage,
                      min_coverage=min_coverage)
    try:
        ui.registry().start("bench", bench_job(cfg))
    except VTError as e:
        st.error(str(e))
    st.rerun()
ui.job_panel("bench", "Benchmark")


def show(r: dict) -> None:
    st.markdown(f"**{r['target']}** + **{r['draft']}** on {r['device']} · k = {r['k']:,} of {r['vocab_size']:,} "
                f"(covers {r['coverage_k']:.3f} of held-out tokens) · γ = {r['gamma']} · {r['prompts']} prompts × "
                f"{r['max_new_tokens']} tokens · identical outputs: {r['identical_outputs']}")
    st.caption(f"Kept tokens: {r.get('token_map')}")
    rows = []
    for m in ("target_only", "full", "trimmed"):
        x = r.get(m)
        if x:
            rows.append({"method": plots.METHOD_LABELS[m], "tokens/s": x["tokens_per_s"],
                         "accepted/step": x.get("accepted_per_step"), "draft ms/step": x.get("draft_ms_per_step"),
                         "LM head ms/token": x.get("lm_head_ms_per_token"), "LM head share": x.get("lm_head_share"),
                         "target ms/step": x["target_ms_per_step"]})
    table = pd.DataFrame(rows)
    # target-only has no draft figures: Streamlit shows a missing cell as "None", so those columns are text
    for c in ("accepted/step", "draft ms/step", "LM head ms/token", "LM head share"):
        f = "{:.1%}" if c == "LM head share" else "{:.4g}"
        table[c] = ["–" if pd.isna(v) else f.format(v) for v in table[c]]
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4g")
                                for c in ("tokens/s", "target ms/step")})
    m = st.columns(3)
    m[0].metric("measured speed-up vs target", f"{r['speedup_trimmed_vs_target']:.2f}×")
    pred = r.get("predicted_speedup")
    m[1].metric("predicted speed-up vs target", "–" if pred is None else f"{pred:.2f}×",
                help="the search module's model fed with the measured a0, C(k) and draft/target costs")
    tvf = r.get("speedup_trimmed_vs_full")
    m[2].metric("trimmed vs full draft", "–" if tvf is None else f"{tvf:.2f}×")
    g = st.columns(2)
    g[0].plotly_chart(plots.bench_throughput_figure(r), key="b_tps", config={"displaylogo": False})
    g[1].plotly_chart(plots.bench_acceptance_figure(r), key="b_acc", config={"displaylogo": False})
    g = st.columns(2)
    g[0].plotly_chart(plots.bench_draft_split_figure(r), key="b_split", config={"displaylogo": False})
    g[1].plotly_chart(plots.bench_speedup_figure(r), key="b_speed", config={"displaylogo": False})
    for n in r.get("notes", []):
        st.caption(f"note: {n}")


from vtcore.bench import load_results  # noqa: E402

history = [r for r in load_results() if not r.get("stopped") and r.get("trimmed")]
if job is not None and job.state == "finished" and job.result and not job.result.get("stopped"):
    st.subheader("Result")
    show(job.result)
elif history:
    st.subheader("Latest result")
    show(history[-1])

if history:
    st.subheader("History")
    st.dataframe(pd.DataFrame([{
        "time": r.get("time"), "device": r.get("device"), "target": r.get("target"), "draft": r.get("draft"),
        "k": r.get("k"), "γ": r.get("gamma"), "prompts": r.get("prompts"),
        "target tok/s": r["target_only"]["tokens_per_s"],
        "full tok/s": (r.get("full") or {}).get("tokens_per_s"), "trimmed tok/s": r["trimmed"]["tokens_per_s"],
        "speed-up": r.get("speedup_trimmed_vs_target"), "predicted": r.get("predicted_speedup"),
        "identical": r.get("identical_outputs")} for r in reversed(history)]), hide_index=True, width="stretch")
    st.caption(f"Stored in `{vstate.subdir('bench') / 'results.jsonl'}`")
