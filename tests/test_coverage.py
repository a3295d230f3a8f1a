"""Ranking and coverage curves on real counts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLES
from vtcore.counts import count_dataset
from vtcore.coverage import coverage_curve, k_for_coverage, kept_ids, out_of_domain, rank_tokens
from vtcore.errors import VTError


@pytest.fixture(scope="module")
def both(qwen_tok):
    cf, _ = count_dataset([str(SAMPLES / "code.jsonl"), str(SAMPLES / "chat.jsonl.gz")], tokenizer=qwen_tok)
    return cf


def test_ranking_ties_by_id_and_always_keep_first():
    counts = np.array([5, 0, 7, 5, 0, 7, 1])
    order = rank_tokens(counts)
    assert order.tolist() == [2, 5, 0, 3, 6, 1, 4]
    order = rank_tokens(counts, always_keep=[4, 2])
    assert order.tolist() == [4, 2, 5, 0, 3, 6, 1]
    with pytest.raises(VTError):
        rank_tokens(counts, always_keep=[7])


def test_curve_monotone_from_zero_to_one(both):
    cov = both.coverage()
    for curve in (cov.insample, cov.heldout):
        assert curve.shape == (both.vocab_size + 1,)
        assert curve[0] == 0.0 and curve[-1] == 1.0
        assert np.all(np.diff(curve) >= 0)
    # always-keep (end-of-turn) is first, then by count: the fit rows' counts for the held-out curve,
    # all rows' for the in-sample one
    for curve, counts in (("heldout", both.counts_fit), ("insample", both.counts)):
        order = cov.order(curve)
        assert order[0] == 151645
        assert np.all(np.diff(counts[order[1:]]) <= 0)


def test_k_for_coverage_is_the_inverse_of_c(both):
    curve = both.coverage().heldout
    for target in (0.5, 0.9, 0.95, 0.99, 0.999):
        k = k_for_coverage(curve, target)
        assert curve[k] >= target and curve[k - 1] < target
    assert k_for_coverage(curve, 0.0) == 0
    assert k_for_coverage(curve, 1.0) <= both.vocab_size


def test_k_for_full_coverage_and_bad_target():
    curve = coverage_curve(np.array([3, 1, 0]), np.array([0, 1, 2]))
    assert k_for_coverage(curve, 1.0) == 2
    with pytest.raises(VTError, match="between|in \\[0, 1\\]"):
        k_for_coverage(curve, 1.5)


def test_heldout_is_measured_on_rows_not_ranked_on(both):
    cov = both.coverage()
    assert np.array_equal(both.counts_fit + both.counts_heldout, both.counts)
    # the fit ranking has seen every fit token by k_fit; held-out rows hold tokens it never saw
    k_fit = int(np.count_nonzero(both.counts_fit))
    unseen = both.counts_heldout[both.counts_fit == 0].sum() / both.counts_heldout.sum()
    assert unseen > 0
    assert cov.heldout[k_fit] == pytest.approx(1.0 - unseen)
    # in-sample: all rows ranked and measured, so every token the data uses is in by k_all
    k_all = int(np.count_nonzero(both.counts))
    assert cov.insample[k_all] == 1.0 and cov.insample[k_all - 1] < 1.0
    assert cov.insample[16384] > cov.heldout[16384]


def test_each_curve_measures_the_ranking_its_k_exports(both):
    """C(k) on a curve is exactly the share that curve's first k ids cover on the rows it names."""
    cov = both.coverage()
    for k in (10, 1000, 20000):
        ids = cov.kept("insample", k)
        assert cov.insample[k] == pytest.approx(both.counts[ids].sum() / both.counts.sum())
        ids = cov.kept("heldout", k)
        assert cov.heldout[k] == pytest.approx(both.counts_heldout[ids].sum() / both.counts_heldout.sum())


def test_heldout_falls_back_to_insample_when_nothing_is_held_out():
    from vtcore.coverage import analyse

    cov = analyse(np.array([5, 3, 0, 1]), np.zeros(4, dtype=np.int64))
    assert cov.heldout is None and cov.resolve("heldout") == "insample"
    assert cov.curve("heldout") is cov.insample and np.array_equal(cov.order("heldout"), cov.order_all)
    with pytest.raises(VTError, match="curve"):
        cov.resolve("fit")


def test_out_of_domain_is_worse_than_in_domain(both):
    code, chat = both.domain_counts("code"), both.domain_counts("chat")
    assert code.sum() + chat.sum() == both.counts.sum()
    in_domain = coverage_curve(chat, rank_tokens(chat))
    ood = out_of_domain(code, chat, both.always_keep)
    assert ood[1024] < in_domain[1024] - 0.1   # code's top tokens cover chat poorly
    assert np.array_equal(ood, both.ood_curve("code", "chat"))


def test_kept_ids_in_ranking_order(both):
    cov = both.coverage()
    ids = kept_ids(cov.order("insample"), 100)
    assert ids.shape == (100,) and len(set(ids.tolist())) == 100
    with pytest.raises(VTError):
        kept_ids(cov.order("insample"), 0)
