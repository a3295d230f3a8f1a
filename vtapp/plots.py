"""Plotly figures of the dashboard, built from plain arrays and dicts (no Streamlit here, so
they are testable and reusable; a benchmark's figures read its typed BenchResult). Curves of length V + 1 are drawn at a few hundred log-spaced
k: the figure stays small (fast reruns) and the log axis looks the same."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from vtcore.benchtypes import BenchResult
from vtcore.cost import COMPONENTS
from vtcore.selection import Selection

COLORS = {"insample": "#1f77b4", "heldout": "#ff7f0e", "ood": "#2ca02c", "exact": "#444444",
          "trial": "#1f77b4", "infeasible": "#c7c7c7", "best": "#d62728", "selected": "#9467bd"}
COMPONENT_COLORS = {"embedding": "#aec7e8", "fc": "#ffbb78", "attn_proj": "#98df8a", "attn_scores": "#c5b0d5",
                    "mlp": "#c49c94", "norms": "#f7b6d2", "other": "#dbdb8d", "lm_head": "#d62728"}
# the title starts at the left and the Plotly toolbar stands upright in the right margin, so
# the toolbar never covers a title
_MARGIN = dict(l=10, r=44, t=48, b=10)
_FRAME = dict(title_x=0.0, title_xanchor="left", modebar=dict(orientation="v"))


def _rule(fig: go.Figure, h: tuple | None = None, v: tuple | None = None, log_x: bool = False) -> None:
    """Dotted/dashed reference lines with their labels, h = (y, color, dash, text, "left"|"right")
    across the plot and v = (x, color, dash, text) at the top, as layout shapes and annotations
    set in one update: fig.add_hline / add_vline validate twice as much per call, a third of a
    coverage figure's build time, paid on every slider step."""
    shapes, notes = [], []
    if h is not None:
        y, color, dash, text, side = h
        shapes.append(dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=y, y1=y,
                           line=dict(color=color, dash=dash)))
        if text:
            notes.append(dict(text=text, xref="x domain", x=1 if side == "right" else 0, xanchor=side, yref="y",
                              y=y, yanchor="top", showarrow=False))
    if v is not None:
        x, color, dash, text = v
        shapes.append(dict(type="line", xref="x", x0=x, x1=x, yref="y domain", y0=0, y1=1,
                           line=dict(color=color, dash=dash)))
        if text:   # an annotation on a log axis is placed at log10 of its value (a shape at the value)
            notes.append(dict(text=text, xref="x", x=float(np.log10(x)) if log_x else x, xanchor="right",
                              yref="y domain", y=1, yanchor="top", showarrow=False))
    fig.update_layout(shapes=list(fig.layout.shapes) + shapes, annotations=list(fig.layout.annotations) + notes)


def log_ks(V: int, n: int = 400, must: Sequence[int] = ()) -> np.ndarray:
    """About n distinct k in [1, V], log-spaced, always with 1, V and `must`."""
    ks = np.unique(np.round(np.geomspace(1, max(V, 1), n)).astype(np.int64))
    extra = [int(k) for k in must if 1 <= int(k) <= V]
    return np.unique(np.concatenate([ks, [1, V], extra]).astype(np.int64))


def coverage_figure(curves: dict[str, np.ndarray], k_mark: int | None, min_coverage: float | None,
                    ks: np.ndarray | None = None, title: str = "Coverage C(k)") -> go.Figure:
    """C(k) curves on a log k axis; a vertical line at k_mark and a horizontal one at the coverage
    constraint."""
    first = next(iter(curves.values()))
    V = first.shape[0] - 1
    ks = log_ks(V) if ks is None else ks
    fig = go.Figure()
    for name, curve in curves.items():
        color = COLORS.get(name.split(" ")[0].replace("-", ""), None)
        fig.add_trace(go.Scatter(x=ks, y=curve[ks], mode="lines", name=name, line=dict(width=2, color=color),
                                 hovertemplate="k=%{x:,}<br>C=%{y:.4f}<extra>" + name + "</extra>"))
    _rule(fig, h=None if min_coverage is None else (min_coverage, "#888", "dot", f"C ≥ {min_coverage:.3f}", "right"),
          v=None if k_mark is None else (max(k_mark, 1), COLORS["best"], "dash", f"k = {k_mark:,}"), log_x=True)
    fig.update_layout(title=title, xaxis=dict(type="log", title="draft vocabulary k (log)"),
                      yaxis=dict(title="coverage", range=[0, 1.02]), margin=_MARGIN, **_FRAME, height=420,
                      legend=dict(orientation="h", y=-0.2))
    return fig


RANKING_COLORS = {"frequency": "#ff7f0e", "acceptance": "#2ca02c"}


def acceptance_figure(coverage: dict[str, np.ndarray], accepted: dict[str, np.ndarray], full: float, gamma: int,
                      k_mark: int | None, ks: np.ndarray | None = None,
                      title: str = "Held-out coverage C(k) and replayed acceptance A(k)") -> go.Figure:
    """Per ranking: C(k) (dotted) and A(k) as a share of the full head's accepted tokens per step
    (solid), on a log k axis; the hover gives A(k) in accepted tokens per step too."""
    first = next(iter(coverage.values()))
    V = first.shape[0] - 1
    ks = log_ks(V) if ks is None else ks[ks <= V]
    fig = go.Figure()
    for r in coverage:
        color = RANKING_COLORS.get(r)
        a = accepted[r][ks]
        share = a / full if full > 0 else np.zeros_like(a)
        fig.add_trace(go.Scatter(x=ks, y=share, mode="lines", name=f"A(k) / A(full), {r} ranking",
                                 line=dict(width=2.5, color=color), customdata=a,
                                 hovertemplate="k=%{x:,}<br>A=%{customdata:.3f} accepted/step (%{y:.1%} of the full "
                                               "head)<extra>" + r + "</extra>"))
        fig.add_trace(go.Scatter(x=ks, y=coverage[r][ks], mode="lines", name=f"C(k), {r} ranking",
                                 line=dict(width=1.5, color=color, dash="dot"),
                                 hovertemplate="k=%{x:,}<br>C=%{y:.4f}<extra>" + r + "</extra>"))
    if k_mark is not None:
        _rule(fig, v=(max(k_mark, 1), COLORS["best"], "dash", f"k = {k_mark:,}"), log_x=True)
    top = max(1.02, max(float(np.nanmax(accepted[r][ks])) / full for r in accepted) + 0.02 if full > 0 else 1.02)
    fig.update_layout(title=f"{title} (γ = {gamma}; full head {full:.3f} accepted tokens per step)",
                      xaxis=dict(type="log", title="draft vocabulary k (log)"),
                      yaxis=dict(title="C(k) and A(k) / A(full)", range=[0, top]),
                      margin=_MARGIN, **_FRAME, height=440, legend=dict(orientation="h", y=-0.2))
    return fig


def breakdown_figure(full: dict[str, float], at_k: dict[str, float], k: int, V: int,
                     unit: str = "MFLOPs", scale: float = 1e-6) -> go.Figure:
    """Stacked bars: draft cost per token by component at the full vocabulary and at k."""
    labels = [f"full V = {V:,}", f"k = {k:,}"]
    fig = go.Figure()
    for comp in COMPONENTS:
        vals = [full.get(comp, 0.0) * scale, at_k.get(comp, 0.0) * scale]
        if not any(vals):
            continue
        fig.add_trace(go.Bar(name=comp, x=labels, y=vals, marker_color=COMPONENT_COLORS.get(comp),
                             hovertemplate="%{x}<br>" + comp + ": %{y:,.4g} " + unit + "<extra></extra>"))
    total_full, total_k = sum(full.values()) * scale, sum(at_k.values()) * scale
    fig.update_layout(barmode="stack", title=f"Draft cost per token ({unit}): {total_full:,.4g} → {total_k:,.4g}",
                      yaxis=dict(title=unit), margin=_MARGIN, **_FRAME, height=380, legend=dict(orientation="h", y=-0.15))
    return fig


def frontier_figure(front: dict[str, np.ndarray], trials: list[dict], min_coverage: float,
                    exact_best: dict | None = None, best_trial: dict | None = None,
                    selected: Selection | None = None, title: str = "Coverage vs latency reduction") -> go.Figure:
    """The exact Pareto frontier (line), TPE trials over it (feasible coloured, infeasible grey),
    the best trial and the exact optimum highlighted, the selected point ringed.
    customdata of every clickable point is a plain list [source, k, trial number or -1]."""
    fig = go.Figure()
    fk = np.asarray(front["k"])
    done = [r for r in trials if r.get("state") == "COMPLETE" and r.get("k") is not None]
    # once trials are drawn, a click is for them: the frontier's markers (under the trials) stop
    # taking hovers and clicks, so a click on a trial never lands on the line beneath it
    fig.add_trace(go.Scatter(
        x=np.asarray(front["latency_reduction"]), y=np.asarray(front["coverage"]),
        mode="lines" if done else "lines+markers",
        name="exact frontier", line=dict(color=COLORS["exact"], width=1.5), marker=dict(size=5),
        customdata=[["exact", int(k), -1] for k in fk], hoverinfo="skip" if done else None,
        hovertemplate=None if done else "exact k=%{customdata[1]:,}<br>R=%{x:.4f}<br>C=%{y:.4f}<extra></extra>"))
    # the y axis starts just below the frontier and the constraint; every trial is drawn at its
    # own coverage, so one far under it is off the plot (said in a note), never pinned to the axis
    front_c = np.asarray(front["coverage"], dtype=np.float64)
    lo = max(0.0, min(min_coverage, float(front_c.min()) if front_c.size else min_coverage) - 0.02)
    below = sum(1 for r in done if r["coverage"] < lo)
    if below:
        fig.add_annotation(text=f"{below} infeasible trial(s) below C = {lo:.3f}, off this plot (see the table)",
                           xref="paper", yref="paper", x=0.0, y=0.0, xanchor="left", yanchor="bottom",
                           showarrow=False, font=dict(size=11, color="#666"))
    for feasible in (False, True):
        rows = [r for r in done if bool(r.get("feasible")) == feasible]
        if not rows:
            continue
        utility = [r.get("utility") for r in rows]
        fig.add_trace(go.Scatter(
            x=[r["latency_reduction"] for r in rows], y=[r["coverage"] for r in rows], mode="markers",
            name="trials" if feasible else "infeasible trials",
            marker=dict(size=9, color=COLORS["trial"] if feasible else COLORS["infeasible"],
                        symbol="circle" if feasible else "x", line=dict(width=1, color="white")),
            customdata=[["trial", int(r["k"]), int(r["number"]), float(r["coverage"]),
                         "–" if u is None else f"{u:.4f}"] for r, u in zip(rows, utility)],
            hovertemplate="trial %{customdata[2]}" + ("" if feasible else " (infeasible)")
                          + ": k=%{customdata[1]:,}<br>R=%{x:.4f}<br>C=%{customdata[3]:.4f}"
                            "<br>U=%{customdata[4]}<extra></extra>"))
    if exact_best is not None:
        fig.add_trace(go.Scatter(
            x=[exact_best["latency_reduction"]], y=[exact_best["coverage"]], mode="markers", name="exact optimum",
            marker=dict(size=14, symbol="diamond-open", color=COLORS["exact"], line=dict(width=2)),
            customdata=[["exact", int(exact_best["k"]), -1]],
            hovertemplate="exact optimum k=%{customdata[1]:,}<extra></extra>"))
    if best_trial is not None:
        fig.add_trace(go.Scatter(
            x=[best_trial["latency_reduction"]], y=[best_trial["coverage"]], mode="markers", name="best trial",
            marker=dict(size=16, symbol="star", color=COLORS["best"], line=dict(width=1, color="white")),
            customdata=[["trial", int(best_trial["k"]), int(best_trial["number"])]],
            hovertemplate="best trial %{customdata[2]}: k=%{customdata[1]:,}<extra></extra>"))
    if selected is not None and selected.coverage is not None and selected.latency_reduction is not None:
        fig.add_trace(go.Scatter(
            x=[selected.latency_reduction], y=[selected.coverage], mode="markers", name="selected",
            marker=dict(size=22, symbol="circle-open", color=COLORS["selected"], line=dict(width=3)),
            hoverinfo="skip"))
    _rule(fig, h=(min_coverage, "#888", "dot", f"C ≥ {min_coverage:.3f}", "left"))
    fig.update_layout(title=title, xaxis=dict(title="latency reduction R(k)"),
                      yaxis=dict(title="coverage C(k)", range=[lo, 1.0 + 0.03 * (1.0 - lo)]),
                      margin=_MARGIN, **_FRAME, height=460, legend=dict(orientation="h", y=-0.18), clickmode="event+select")
    return fig


METHOD_LABELS = {"target_only": "target only", "full": "target + full draft", "trimmed": "target + trimmed draft"}


def bench_throughput_figure(result: BenchResult) -> go.Figure:
    """Tokens per second of each method with its interval (whiskers) and every run (dots)."""
    ms = result.methods()
    x = [METHOD_LABELS[m] for m in ms]
    y = [r.tokens_per_s for r in ms.values()]
    ci = [r.tokens_per_s_ci or [v, v] for r, v in zip(ms.values(), y)]
    fig = go.Figure(go.Bar(x=x, y=y, marker_color=["#7f7f7f", "#1f77b4", "#d62728"][:len(ms)] if len(ms) == 3 else None,
                           text=[f"{v:.1f}" for v in y], textposition="inside", insidetextanchor="start", name="tokens/s",
                           error_y=dict(type="data", symmetric=False, array=[hi - v for v, (_, hi) in zip(y, ci)],
                                        arrayminus=[v - lo for v, (lo, _) in zip(y, ci)], color="#222")))
    runs = [(METHOD_LABELS[m], run.tokens_per_s) for m, r in ms.items() for run in r.runs]
    if runs:
        fig.add_trace(go.Scatter(x=[a for a, _ in runs], y=[b for _, b in runs], mode="markers", name="runs",
                                 marker=dict(size=6, color="rgba(0,0,0,0.45)")))
    fig.update_layout(title="Tokens per second (interval and runs)", yaxis=dict(title="tokens/s"), margin=_MARGIN, **_FRAME,
                      height=320, showlegend=False)
    return fig


def _drafts(result: BenchResult) -> dict:
    return {m: r for m, r in result.methods().items() if m != "target_only"}


def bench_acceptance_figure(result: BenchResult) -> go.Figure:
    """Per draft position j: the share of drafted j-th tokens accepted, full vs trimmed head."""
    ms = _drafts(result)
    fig = go.Figure()
    for (m, r), color in zip(ms.items(), ["#1f77b4", "#d62728"][-len(ms):]):
        by_pos = r.accepted_by_position or []
        fig.add_trace(go.Bar(name=f"{METHOD_LABELS[m]}: {r.accepted_per_step:.2f} per step",
                             x=[f"position {j + 1}" for j in range(len(by_pos))], y=by_pos, marker_color=color,
                             text=[f"{p:.2f}" if p is not None else "" for p in by_pos], textposition="inside",
                             insidetextanchor="start"))
    fig.update_layout(title=f"Acceptance by draft position (γ = {result.gamma})", barmode="group",
                      yaxis=dict(title="accepted share", range=[0, 1]), margin=_MARGIN, **_FRAME, height=320,
                      legend=dict(orientation="h", y=-0.2))
    return fig


def bench_draft_split_figure(result: BenchResult) -> go.Figure:
    """Draft time per drafted token: LM head vs the rest of the draft."""
    ms = _drafts(result)
    head = [r.lm_head_ms_per_token for r in ms.values()]
    rest = [max(r.draft_ms_per_token - r.lm_head_ms_per_token, 0.0) for r in ms.values()]
    x = [METHOD_LABELS[m] for m in ms]
    fig = go.Figure([go.Bar(name="LM head", x=x, y=head, marker_color=COMPONENT_COLORS["lm_head"]),
                     go.Bar(name="rest of the draft", x=x, y=rest, marker_color="#c49c94")])
    fig.update_layout(barmode="stack", title="Draft time per drafted token (ms)", yaxis=dict(title="ms"),
                      margin=_MARGIN, **_FRAME, height=320, legend=dict(orientation="h", y=-0.2))
    return fig


def bench_speedup_figure(result: BenchResult) -> go.Figure:
    """Measured speed-ups with their intervals, and the search's prediction with the verify cost."""
    bars = [(f"trimmed vs {b}", *result.speedup(f"trimmed_vs_{k}")[:2])
            for k, b in (("target", "target"), ("full", "full draft"))]
    pred = result.prediction
    bars.append(("predicted, trimmed vs target", pred.trimmed_vs_target_with_verify_cost if pred else None, None))
    bars = [(n, v, ci) for n, v, ci in bars if v is not None]
    err = dict(type="data", symmetric=False, array=[(ci[1] - v) if ci else 0 for _, v, ci in bars],
               arrayminus=[(v - ci[0]) if ci else 0 for _, v, ci in bars], color="#222")
    fig = go.Figure(go.Bar(x=[n for n, _, _ in bars], y=[v for _, v, _ in bars], error_y=err,
                           text=[f"{v:.2f}×" for _, v, _ in bars], textposition="inside", insidetextanchor="start",
                           marker_color=["#d62728", "#ff9896", "#bcbd22"][:len(bars)]))
    _rule(fig, h=(1.0, "#444", "dot", "", "left"))
    fig.update_layout(title="Speed-ups (interval) and the prediction", yaxis=dict(title="×"), margin=_MARGIN, **_FRAME,
                      height=320)
    return fig


# ---------------------------------------------------------------- tree runs (vtcore.treebench results)


def tree_result_rows(result: dict) -> list[dict]:
    """One row per method of a tree run: what it measured and what the engine model predicted."""
    rows = []
    for name, m in result.get("methods", {}).items():
        rows.append({"method": "target alone" if name == "target_only" else name,
                     "tokens/s": m.get("tokens_per_s"), "vs target": m.get("speedup_vs_target"),
                     "interval": m.get("speedup_vs_target_ci"), "verdict": m.get("verdict_vs_target"),
                     "acceptance length": m.get("acceptance_length"), "head rows/round": m.get("head_rows_per_round"),
                     "head share": m.get("head_share"), "decode speed-up": m.get("decode_speedup_vs_target"),
                     "predicted": m.get("predicted_decode_speedup"), "identical": m.get("identical_outputs")})
    return rows


def tree_speedup_figure(result: dict) -> go.Figure:
    """Per method: measured decode speed-up over the target alone next to the engine model's."""
    rows = [r for r in tree_result_rows(result) if r["method"] != "target alone"]
    names = [r["method"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=names, y=[r["decode speed-up"] for r in rows], name="measured (decode)", marker_color="#d62728")
    fig.add_bar(x=names, y=[r["predicted"] for r in rows], name="predicted (engine model)", marker_color="#bcbd22")
    fig.add_hline(y=1.0, line=dict(color="#444", dash="dot"))
    fig.update_layout(title="Decode speed-up over the target alone: measured vs predicted", barmode="group",
                      yaxis=dict(title="×"), margin=_MARGIN, **_FRAME, height=340,
                      legend=dict(orientation="h", y=-0.25))
    return fig


def tree_history_row(entry: dict) -> dict:
    """One stored tree run (a line of bench/tree_results.jsonl) as a history row with its setting."""
    methods = entry.get("methods", {})
    trees = [n for n in methods if n.startswith("tree ") and n.endswith(" trimmed")]
    best = max(trees, key=lambda n: methods[n].get("tokens_per_s") or 0.0, default=None)
    return {"time": entry.get("time"), "target": entry.get("target"), "draft": entry.get("draft"),
            "k": entry.get("k"), "of V": entry.get("vocab_size"), "trees (s,t,n)": " ".join(entry.get("trees", [])),
            "chains γ": " ".join(str(g) for g in entry.get("gammas", [])), "prompts": entry.get("prompts"),
            "best trimmed tree": best[5:-8] if best else None,
            "its vs target": methods[best].get("speedup_vs_target") if best else None,
            "its acceptance length": methods[best].get("acceptance_length") if best else None,
            "identical": entry.get("identical_outputs"), "device": entry.get("device")}
