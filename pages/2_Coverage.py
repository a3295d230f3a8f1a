"""Coverage: C(k) in-sample, held-out and out-of-domain; the k a coverage constraint needs; what a k drops."""

import numpy as np
import pandas as pd
import streamlit as st

from vtapp import common as ui
from vtapp import plots
from vtapp.acceptance_ui import acceptance_block
from vtcore.coverage import k_for_coverage
from vtcore.selection import for_min_coverage

s = ui.page("Coverage")
st.title("Coverage")
ui.context_line(s)
cf, cov = ui.counts_or_stop(s)
V = cf.vocab_size
st.caption(f"{int(cf.counts.sum()):,} assistant tokens · tokenizer vocabulary {V:,}")

has_heldout = cov.heldout is not None
c1, c2 = st.columns([3, 2])
with c1:
    min_coverage = ui.coverage_constraint("cov_min_coverage")
with c2:
    which = st.radio("Curve", ["heldout", "insample"] if has_heldout else ["insample"], horizontal=True,
                     format_func={"heldout": "held-out rows (honest)", "insample": "in-sample (all rows)"}.get,
                     **ui.persisted("cov_curve", "curve", cast=lambda c: c if has_heldout else "insample"),
                     help="held-out: ranked on the fit rows, measured on the held-out fifth; in-sample: ranked and "
                          "measured on all rows. The k shown and the tokens exported for it use the same ranking.")

pick = for_min_coverage(cov, min_coverage, which, counts_path=s.counts_path)
k_need, curve = pick.k, cov.curve(which)
curves = {"in-sample": cov.insample}
if has_heldout:
    curves["held-out"] = cov.heldout

ood_k = None
if len(cf.domain_names) > 1:
    with st.expander("Out-of-domain coverage", expanded=True):
        a, b = st.columns(2)
        rank_on = a.selectbox("Rank on domain", cf.domain_names, key="ood_a")
        measure_on = b.selectbox("Measure on domain", [d for d in cf.domain_names if d != rank_on], key="ood_b")
        ood = ui.ood_curve(s.counts_path, rank_on, measure_on)
        curves[f"ood {rank_on}→{measure_on}"] = ood
        ood_k = k_for_coverage(ood, min_coverage)

m = st.columns(4)
m[0].metric("k needed", f"{k_need:,}", help=f"smallest k with {ui.curve_label(which)} C(k) ≥ {min_coverage:.3f}")
m[1].metric("share of the vocabulary", ui.fmt_pct(k_need / V))
m[2].metric(f"{ui.curve_label(which)} C(k)", f"{curve[k_need]:.4f}")
if ood_k is not None:
    m[3].metric("k needed out of domain", f"{ood_k:,}")
else:
    other = "insample" if which == "heldout" else "heldout"
    m[3].metric(f"{ui.curve_label(other)} C(k)", "–" if cov.curve(other) is curve else f"{cov.curve(other)[k_need]:.4f}")

# past the tokens the ranking rows use, the ranking is by id: those k do not come from the data
ranked_on = cf.counts_fit if which == "heldout" else cf.counts
n_seen = max(int(np.count_nonzero(ranked_on)), len(cov.always_keep))
if k_need > n_seen:
    rows = "fit rows (the four fifths the ranking is made on)" if which == "heldout" else "data"
    st.info(f"k = {k_need:,} is more than the {n_seen:,} distinct tokens of the {rows}: ranks {n_seen + 1:,} to "
            f"{k_need:,} are tokens never seen in the {rows.split(' (')[0]}, in id order, added only to reach "
            f"C(k) ≥ {min_coverage:.3f}. More data (or a lower constraint) gives a k the data supports.",
            icon=":material/info:")

ks = plots.log_ks(V, must=(k_need,))
st.plotly_chart(plots.coverage_figure(curves, k_need, min_coverage, ks=ks), key="coverage_plot",
                config={"displaylogo": False})
st.button(f"Select k = {k_need:,} for export", key="use_k", on_click=ui.select, args=(pick,))

# ---- acceptance: measured by replaying a draft (vtapp.replays), beside the coverage it rests on
st.subheader("Acceptance, measured")
acceptance_block(s, k_need, min_coverage)

# ---- token inspector
st.subheader("Token inspector")
k_in = st.number_input("k", 1, V, value=int(min(k_need, V)), step=1, key=f"inspect_k_{k_need}",
                       help="what a draft head of this many rows keeps and drops (the chosen curve's ranking)")
k_in = int(k_in)
order, counts = cov.order(which), cf.counts
total = max(int(counts.sum()), 1)
dropped_mass = 1.0 - float(curve[k_in])
i1, i2, i3 = st.columns(3)
i1.metric("kept tokens", f"{k_in:,}")
i2.metric(f"dropped mass ({ui.curve_label(which)})", ui.fmt_pct(dropped_mass, 3))
i3.metric("dropped tokens seen in the data", f"{int(np.count_nonzero(counts[order[k_in:]])):,}")
tok = ui.tokenizer_or_none(cf.manifest)


SHARE = {"share %": st.column_config.NumberColumn(format="%.4f", help="share of all assistant tokens, in %")}


def table(ids) -> pd.DataFrame:
    ids = [int(i) for i in ids]
    return pd.DataFrame({"id": ids, "token": [ui.show_token(tok, i) for i in ids],
                         "count": [int(counts[i]) for i in ids],
                         "share %": [100.0 * counts[i] / total for i in ids]})


t1, t2 = st.columns(2)
with t1:
    rest = order[k_in:]
    seen = rest[counts[rest] > 0]
    drop = seen[np.argsort(-counts[seen], kind="stable")][:25]   # what the user loses most first
    st.markdown(f"**Most frequent dropped tokens** (the top {len(drop)} of the {seen.size:,} dropped tokens the "
                "data uses, by count)")
    if drop.size:
        st.dataframe(table(drop), hide_index=True, width="stretch", height=320,
                     column_config=SHARE)
    else:
        st.success("Nothing the data uses is dropped at this k.")
with t2:
    st.markdown("**Always kept** (end-of-turn / EOS: a draft must be able to end a turn)")
    st.dataframe(table(cov.always_keep), hide_index=True, width="stretch",
                 column_config=SHARE)
    st.markdown("**Last kept tokens the data uses** (just inside k)")
    head = order[:k_in]
    st.dataframe(table(head[counts[head] > 0][-5:]), hide_index=True, width="stretch",
                 column_config=SHARE)
