"""The Frontier page's engine-model block: which serving engine's round the speed-up objective
prices (vtcore.enginecost, search.Problem.engine) and what the search chose for it."""

from __future__ import annotations

from typing import Any

import streamlit as st


ENGINE_LABELS = {"paper": "the paper's formula (verify = 1 step)",
                 "sglang": "SGLang: tree (k, s, t, n)",
                 "vllm": "vLLM: chain (k, γ) + full-vocabulary scatter",
                 "chain": "chain (k, γ), priced per forward"}


def engine_choice(objective: str) -> dict[str, Any]:
    """The SearchSpec fields of the engine model (empty unless the objective is the speed-up)."""
    if objective != "speedup":
        return {}
    with st.expander("Serving engine", expanded=True):
        c1, c2, c3 = st.columns([3, 2, 2])
        pick = c1.selectbox("Engine model", list(ENGINE_LABELS), format_func=ENGINE_LABELS.get, key="engine_model",
                            help="SGLang drafts a tree of s steps, top-t children and n verified tokens (head rows "
                                 "bs·(1 + (s − 1)·t)); vLLM drafts chains and scatters each drafted token's k logits "
                                 "into the full vocabulary; see docs/design.md, 'Engine cost model'")
        if pick == "paper":
            return {}
        batch = int(c2.number_input("Batch size", 1, 4096, 1, key="engine_batch"))
        parallel = float(c3.number_input("Parallel tokens", 1, 65536, 128, key="engine_parallel",
                                         help="tokens one forward runs at the cost of one (memory-bound); "
                                              "128 is a GPU-like default, 1 prices every token (a CPU)"))
        out: dict[str, Any] = {"engine": pick, "batch": batch, "parallel_tokens": parallel}
        if pick == "sglang":
            d1, d2 = st.columns(2)
            out["topk_max"] = int(d1.number_input("t up to", 1, 8, 4, key="engine_topk_max"))
            out["tokens_max"] = int(d2.number_input("n up to", 2, 64, 16, key="engine_tokens_max"))
        if pick == "vllm":
            scatter = st.number_input("Scatter / target step (0: estimate from memory traffic)", 0.0, 1.0, 0.0,
                                      format="%.6f", key="engine_scatter")
            out["scatter_cost"] = float(scatter) if scatter > 0 else None
    return out


def show_engine_pick(exact, problem) -> None:
    """The engine model's choice under the exact metrics: the tree for SGLang."""
    if problem.engine is None or exact.speedup is None:
        return
    if exact.best_tree is not None:
        s, t, n = exact.best_tree
        st.caption(f"SGLang tree at k = {exact.best_k:,}: --speculative-num-steps {s} --speculative-eagle-topk {t} "
                   f"--speculative-num-draft-tokens {n} (head rows per round {problem.batch * (1 + (s - 1) * t):,} "
                   f"at batch {problem.batch}); acceptance: {problem.acceptance_model}")
    else:
        st.caption(f"{problem.engine} chain at k = {exact.best_k:,}: γ = {exact.best_gamma}, batch {problem.batch}; "
                   f"acceptance: {problem.acceptance_model}")
