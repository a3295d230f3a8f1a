"""Benchmark: real speculative decoding, target alone vs full draft vs trimmed draft, run as
`python -m vtcore bench` in a child process (the server times nothing itself)."""

import json
import os

import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import plots
from vtapp import state as vstate
from vtcore import export as ex
from vtcore.bench import load_results, read_results, results_path
from vtcore.benchtypes import BenchConfig, BenchResult
from vtcore.models import DEFAULT_DRAFT, DEFAULT_EAGLE3
from vtcore.files import atomic_file
from vtcore.selection import choose

s = ui.page("Benchmark")
DEFAULT_THREADS = max(1, (os.cpu_count() or 2) // 2)
D = BenchConfig()   # the CLI's defaults: the page measures what `python -m vtcore bench` measures
st.title("Benchmark")
ui.context_line(s)


@st.cache_resource(show_spinner=False)
def device_found() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s))"
    return f"CPU ({os.cpu_count()} cores; no CUDA device found)"


st.caption(f"Device: **{device_found()}** · each benchmark runs `python -m vtcore bench` in a process of its own")
b = dict(s.bench)
st.markdown("Target and draft: `default` is the bundled pair, SmolLM2-135M-Instruct and its EAGLE-3 head (converted "
            "on first use, about half a minute); `standalone` is its 2-layer standalone draft. Or give local model "
            "directories (an EAGLE-3 checkpoint in the SpecForge or speculators layout, or a draft LM with the "
            "target's tokenizer).")
c1, c2 = st.columns(2)
target = c1.text_input("Target model", value=b.get("target") or "default", key="bench_target").strip()
draft = c2.text_input("Draft model", value=b.get("draft") or "default", key="bench_draft").strip()
# the prompts follow the current counts: the dataset counted last, unless the user picked
# another one for these counts (a pick made for earlier counts does not carry over)
counted = [d for d in s.datasets if d]
sample_default = str(ui.SAMPLES["code"][0])
picked = b.get("data") if b.get("data_for") == s.counts_path else None
OTHER = "another file …"
options = list(dict.fromkeys(counted + ([picked] if picked else []) + [sample_default])) + [OTHER]
start = picked or (counted[0] if counted else sample_default)
data_pick = st.selectbox("Prompts: held-out rows of", options, index=options.index(start), key="bench_data_pick",
                         format_func=lambda d: d if d == OTHER else vstate.upload_label(d)
                         + (" (the counted dataset)" if d in counted else ""),
                         help="the token map is the top-k of this data's assistant tokens (counted with the target's "
                              "tokenizer); prompts are its held-out rows, never used for the ranking")
if data_pick == OTHER:
    data = st.text_input("Dataset path", value="", key="bench_data", placeholder="/data/my.jsonl").strip()
else:
    data = data_pick
if len(counted) > 1 and data in counted:
    st.caption(f"The counts are of {len(counted)} files; the benchmark measures one file's held-out prompts "
               "(pick which above).")
p = st.columns(6)
prompts = int(p[0].number_input("prompts", 1, 64, int(b.get("prompts", D.prompts)), key="bench_prompts"))
max_new = int(p[1].number_input("new tokens", 4, 1024, int(b.get("max_new_tokens", D.max_new_tokens)), step=8,
                                key="bench_new"))
repeats = int(p[2].number_input("repeats", 1, 10, int(b.get("repeats", D.repeats)), key="bench_repeats"))
gamma = int(p[3].number_input("γ (0: from the search)", 0, 16, int(b.get("gamma") or 0), key="bench_gamma",
                              help="draft tokens per target step; 0 lets the search pick it from the measured costs "
                                   "(acceptance, draft cost, and the target's verify cost for every γ)"))
device = p[4].selectbox("device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(b.get("device", "auto")),
                        key="bench_device")
threads = int(p[5].number_input("CPU threads", 1, os.cpu_count() or 1, int(b.get("threads", DEFAULT_THREADS)),
                                key="bench_threads",
                                help="torch threads on CPU. Half the cores by default: the dashboard needs the rest, "
                                     "and more threads than free cores makes every step many times slower"))
DRAFTING = {"chain": "chain (γ tokens per target step)", "tree": "tree, as SGLang drafts (steps s, top-t, n tokens)"}
t1, t2 = st.columns([2, 3])
drafting = t1.radio("Drafting", list(DRAFTING), format_func=DRAFTING.get, horizontal=True, key="bench_drafting",
                    index=list(DRAFTING).index(b.get("drafting", "chain")) if b.get("drafting") in DRAFTING else 0)
tree_text = b.get("trees") or "grid"
trees: list = []
if drafting == "tree":
    tree_text = t2.text_input("Trees s,t,n (space-separated; grid: 3,2,4 4,2,6 5,4,8)", value=tree_text,
                              key="bench_trees", help="SGLang's --speculative-num-steps, --speculative-eagle-topk and "
                                                      "--speculative-num-draft-tokens; chains at γ (or the search's) "
                                                      "and the target alone run beside them, greedy, full and trimmed "
                                                      "head; `python -m vtcore bench --tree`").strip()
    from argparse import ArgumentTypeError

    from vtcore.benchtypes import tree_arg

    try:
        trees = [tree_arg(x) for x in tree_text.replace(";", " ").split()]
    except ArgumentTypeError as e:   # the tree's own message (vtcore.tree.parse_tree)
        t2.error(str(e))
        trees = []
    if not trees:
        t2.caption("Give at least one tree, e.g. 5,4,8.")
sel = ui.selection(s)
K_FROM = {"search": "speed-up optimum (vtcore.search, calibrated on 2 other prompts)",
          "coverage": "smallest k with a held-out coverage", "k": "a fixed k"}
if sel is not None:
    K_FROM["selected"] = f"the selected point: {sel.label()}"
q = st.columns([2, 1, 3])
k_from = q[0].selectbox("Trimmed draft keeps", list(K_FROM), format_func=K_FROM.get, key="bench_k_from",
                        index=list(K_FROM).index(b.get("k_from")) if b.get("k_from") in K_FROM else 0)
k_fixed, min_coverage = None, float(b.get("min_coverage", D.min_coverage))
if k_from in ("search", "coverage"):
    min_coverage = ui.coverage_constraint("bench_min_cov", q[1])   # the constraint of every page
elif k_from == "k":
    k_fixed = int(q[1].number_input("k", 1, 1 << 20, int(b.get("k") or 8192), step=1024, key="bench_k"))
else:
    q[1].caption("its token set, exported as a JSON token map (the target must use the counts' tokenizer)")
if k_from != "selected":
    # the Frontier's k is a k of the counts' tokenizer; this run ranks the prompts' dataset itself
    counts_tok = "the counts' tokenizer"
    if s.counts_path and os.path.isfile(s.counts_path):
        cf_now = ui.counts(s.counts_path)
        counts_tok = f"{cf_now.manifest.get('tokenizer') or 'bundled Qwen3'} ({cf_now.vocab_size:,} ids)"
    st.info(("Your selection on the Frontier, " + sel.label() + ", is" if sel else "A Frontier selection is")
            + f" a k of {counts_tok}. This run counts the prompts' dataset again with the **target's** tokenizer "
            "(SmolLM2's, 49,152 ids, for the bundled pair) and keeps "
            + {"search": "the k the speed-up model finds best", "coverage": "the smallest k meeting the held-out "
               "constraint", "k": "the k typed in"}[k_from]
            + ", so its k is its own. To benchmark the selected point itself choose “the selected point” above: "
              "it applies when the target uses the counts' tokenizer.", icon=":material/info:")
runs = prompts * repeats
q[2].caption(f"One click runs {prompts} held-out prompts × {repeats} repeats × {max_new} new tokens for each of "
             f"target alone, full draft and trimmed draft ({runs} runs each, interleaved), after a calibration; "
             "about two minutes on a 2-core CPU with the defaults. Every figure comes with an interval.")


def selected_token_map() -> str:
    """The selected point's token set as a JSON token map in the workspace (its path)."""
    choice = choose(ui.counts(s.counts_path), sel)
    path = vstate.subdir("bench") / f"selected-{choice.curve}-k{choice.k}.json"
    with atomic_file(path, force=True, flag="the selected point's token map") as f:   # the tool's own file
        f.write(json.dumps(ex.json_doc(choice, choice.tokenizer_vocab)).encode())
    return str(path)


job = ui.registry().get("bench")
if st.button("Benchmark", type="primary", key="bench_run",
             disabled=(job is not None and job.running) or (drafting == "tree" and not trees)):
    from vtapp.jobs import bench_job

    settings = dict(target=target, draft=draft, data=data, data_for=s.counts_path, prompts=prompts, max_new_tokens=max_new,
                    gamma=gamma or None, repeats=repeats, device=device, threads=threads, k_from=k_from, k=k_fixed,
                    min_coverage=min_coverage, drafting=drafting, trees=tree_text)
    ui.save(bench=settings)
    default = {"default", "smollm2", ""}

    def config() -> BenchConfig:
        return BenchConfig(target=None if target.lower() in default else target,
                           draft=None if draft.lower() in default else draft, data=data or None, prompts=prompts,
                           max_new_tokens=max_new, gamma=gamma or None, repeats=repeats, device=device,
                           threads=threads, k=k_fixed, k_from="coverage" if k_from == "coverage" else "search",
                           min_coverage=min_coverage,
                           token_map=selected_token_map() if k_from == "selected" else None,
                           tree=trees if drafting == "tree" else [])

    ui.start_job("bench", lambda: bench_job(config()))
ui.job_panel("bench", "Benchmark")


def with_ci(x: float | None, ci: list | None, fmt: str = "{:.2f}") -> str:
    if x is None:
        return "–"
    return fmt.format(x) + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci else "")


LOW_ACCEPTANCE = 1.0   # accepted draft tokens per target step under which speculation rarely pays


def does_not_pay(r: BenchResult) -> str | None:
    """Why this draft does not pay on this data, and what to do, or None."""
    full = r.full or r.trimmed
    acc = full.accepted_per_step if full else None
    if acc is None or (acc >= LOW_ACCEPTANCE and r.verdict_trimmed_vs_target != "slower"):
        return None
    bundled = r.draft in (DEFAULT_DRAFT, DEFAULT_EAGLE3)   # the names the bundled drafts run under
    why = ("the bundled head was trained on code and chat (HumanEval-style solutions and chitchat), not on this "
           "data" if bundled else "the draft was not trained on data like this")
    return (f"This draft does not pay here: it gets {acc:.2f} accepted tokens per target step on these prompts, "
            f"because {why}. Trimming its head cannot raise acceptance; bring a draft trained for your domain "
            "(Draft model above), or fine-tune one on this data.")


def show(r: BenchResult) -> None:
    st.markdown(f"**{r.target}** + **{r.draft}** ({r.draft_kind}) on {r.device} · "
                f"k = {r.k:,} of {r.vocab_size:,} (covers {r.coverage_k:.3f} of held-out tokens) · "
                f"γ = {r.gamma} ({'chosen by the search' if r.gamma_from == 'search' else r.gamma_from})"
                f" · {r.prompts} prompts × {r.repeats} repeats × {r.max_new_tokens} tokens · "
                f"identical outputs: {r.identical_outputs}")
    cfg = r.config or {}
    st.caption(f"Prompts: held-out rows of **{vstate.upload_label(r.data or '?')}** · k = {r.k:,} is a k of "
               f"the target's tokenizer ({r.vocab_size:,} ids), ranked on this dataset"
               + ({"search": ", the speed-up optimum", "coverage": ", the smallest k meeting the constraint"}.get(
                   cfg.get("k_from"), "") if not cfg.get("token_map") and not cfg.get("k") else "")
               + f" · kept tokens: {r.token_map}")
    rows = []
    for m, x in r.methods().items():
        rows.append({"method": plots.METHOD_LABELS[m],
                     "tokens/s": with_ci(x.tokens_per_s, x.tokens_per_s_ci, "{:.1f}"),
                     "accepted/step": x.accepted_per_step, "draft ms/step": x.draft_ms_per_step,
                     "LM head ms/token": x.lm_head_ms_per_token, "LM head share": x.lm_head_share,
                     "target ms/step": x.target_ms_per_step})
    table = pd.DataFrame(rows)
    # target-only has no draft figures: Streamlit shows a missing cell as "None", so those columns are text
    for c in ("accepted/step", "draft ms/step", "LM head ms/token", "LM head share"):
        f = "{:.1%}" if c == "LM head share" else "{:.4g}"
        table[c] = ["–" if pd.isna(v) else f.format(v) for v in table[c]]
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"target ms/step": st.column_config.NumberColumn(format="%.4g")})
    m = st.columns(3)
    for col, name, label in ((m[0], "trimmed_vs_target", "trimmed draft vs target alone"),
                             (m[1], "trimmed_vs_full", "trimmed vs full draft")):
        x, ci, verdict = r.speedup(name)
        col.metric(label, "–" if x is None else f"{x:.2f}×", delta=verdict, **ui.VERDICT_BADGE.get(verdict, {}),
                   help=f"interval {with_ci(x, ci)} ({r.ci_method})")
    pred = r.predicted_speedup
    m[2].metric("predicted, trimmed vs target", "–" if pred is None else f"{pred:.2f}×",
                help="the search module's model fed with the measured acceptance, C(k), draft and target costs and "
                     "the verify cost")
    g = st.columns(2)
    g[0].plotly_chart(plots.bench_throughput_figure(r), key="b_tps", config={"displaylogo": False})
    g[1].plotly_chart(plots.bench_acceptance_figure(r), key="b_acc", config={"displaylogo": False})
    g = st.columns(2)
    g[0].plotly_chart(plots.bench_draft_split_figure(r), key="b_split", config={"displaylogo": False})
    g[1].plotly_chart(plots.bench_speedup_figure(r), key="b_speed", config={"displaylogo": False})
    for n in r.notes:
        st.caption(f"note: {n}")
    why = does_not_pay(r)
    if why:
        st.warning(why, icon=":material/trending_down:")


def show_tree(r: dict) -> None:
    """A tree run (vtcore.treebench): every method side by side, measured and predicted."""
    g = lambda key: r.get(key, "?")   # noqa: E731  (a stored line from an older run may lack a field)
    st.markdown(f"**{g('target')}** + **{g('draft')}** ({g('draft_kind')}) on {g('device')} · k = {g('k')} of "
                f"{g('vocab_size')} · trees (s,t,n) {', '.join(r.get('trees', []))} · chains γ = "
                f"{', '.join(map(str, r.get('gammas', [])))} · {g('prompts')} prompts × {g('repeats')} repeats × "
                f"{g('max_new_tokens')} tokens · identical outputs: {g('identical_outputs')}")
    table = pd.DataFrame(plots.tree_result_rows(r))
    table["interval"] = ["–" if not isinstance(ci, list) else f"[{ci[0]:.2f}, {ci[1]:.2f}]" for ci in table["interval"]]
    num = st.column_config.NumberColumn(format="%.3g")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: num for c in ("tokens/s", "vs target", "acceptance length", "head rows/round",
                                                 "head share", "decode speed-up", "predicted")})
    st.plotly_chart(plots.tree_speedup_figure(r), key="b_tree", config={"displaylogo": False})
    sc = r.get("search") or {}
    if sc.get("choice"):
        st.caption(f"The engine model's choice (trimmed head, acceptance modelled from a replay): {sc['choice']}, "
                   f"measured {sc['choice_measured']:.2f}× vs the grid's best {sc['measured_best']} "
                   f"{sc['measured_best_speedup']:.2f}× ({sc['choice_vs_best']:.0%} of it)")
    if r.get("vllm_scatter_ms_per_token") is not None:
        st.caption(f"vLLM's full-vocabulary scatter on this machine: {r['vllm_scatter_ms_per_token']:.4f} ms per "
                   f"drafted token at k = {r['k']:,} (an O(V) cost trimming does not remove)")


def tree_history() -> list[dict]:
    from vtcore.treebench import tree_results_path

    path = tree_results_path()
    out = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:   # a line torn by a killed run
            continue
    return out


tree_runs = tree_history()
if job is not None and job.state == "finished" and job.result and "trees" in job.result:
    st.subheader("Result (tree)")
    show_tree(job.result)
    job = None   # shown: the chain result below is the stored one
elif drafting == "tree" and tree_runs:
    st.subheader("Latest tree result")
    show_tree(tree_runs[-1])

history = [r for r in load_results() if r.trimmed]
if (unreadable := read_results()[1]):
    st.caption(f"{unreadable} unreadable line(s) in {results_path()} skipped (torn by a killed run, or edited)")
if drafting == "tree":
    pass   # the tree's result is above; chain runs stay in the history below
elif job is not None and job.state == "finished" and job.result and not job.result.get("stopped"):
    st.subheader("Result")
    show(BenchResult.from_dict(job.result))
elif history:
    st.subheader("Latest result")
    show(history[-1])

def history_row(r: BenchResult) -> dict:
    """One benchmark run as a history row: what was measured on what, and the verdicts."""
    return {"time": r.time, "dataset": vstate.upload_label(r.data or ""),
            "target": r.target, "draft": r.draft, "kind": r.draft_kind,
            "k": r.k, "of V": r.vocab_size, "γ": r.gamma, "prompts": r.prompts,
            "target tok/s": r.target_only.tokens_per_s,
            "full tok/s": r.full.tokens_per_s if r.full else None, "trimmed tok/s": r.trimmed.tokens_per_s,
            "trimmed vs target": r.speedup_trimmed_vs_target, "verdict vs target": r.verdict_trimmed_vs_target,
            "trimmed vs full": r.speedup_trimmed_vs_full, "verdict vs full": r.verdict_trimmed_vs_full,
            "predicted": r.predicted_speedup, "accepted/step": r.trimmed.accepted_per_step,
            "identical": r.identical_outputs, "device": r.device}


if history:
    st.subheader("History")
    df = pd.DataFrame([history_row(r) for r in reversed(history)])
    wide = st.column_config.TextColumn(width="medium")
    num = st.column_config.NumberColumn(format="%.3g")
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"time": wide, "dataset": wide, "target": wide, "draft": wide,
                                "verdict vs target": wide, "verdict vs full": wide, "device": wide,
                                **{c: num for c in ("target tok/s", "full tok/s", "trimmed tok/s", "trimmed vs target",
                                                    "trimmed vs full", "predicted", "accepted/step")}})
    store = vstate.subdir("bench") / "results.jsonl"
    d1, d2, d3 = st.columns([1, 1, 4])
    d1.download_button("results.jsonl", data=store.read_bytes() if store.is_file() else b"",
                       file_name="bench-results.jsonl", mime="application/jsonl", icon=":material/download:",
                       key="dl_bench_jsonl", help="every run, as the benchmark stored it (one JSON object a line)")
    d2.download_button("results.csv", data=df.to_csv(index=False).encode(), file_name="bench-results.csv",
                       mime="text/csv", icon=":material/download:", key="dl_bench_csv",
                       help="the history table above")
    d3.caption(f"Stored in `{store}`")

if tree_runs:
    st.subheader("Tree runs")
    st.dataframe(pd.DataFrame([plots.tree_history_row(r) for r in reversed(tree_runs)]), hide_index=True,
                 width="stretch")
    st.caption("Stored in `bench/tree_results.jsonl` of the workspace, one run a line with its settings")
