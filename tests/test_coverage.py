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
    for curve in (cov.insample, cov.heldout, cov.insample_all):
        assert curve.shape == (both.vocab_size + 1,)
        assert curve[0] == 0.0 and curve[-1] == 1.0
        assert np.all(np.diff(curve) >= 0)
    # always-keep (end-of-turn) is first, then by count
    assert cov.order[0] == 151645
    rest = both.counts_fit[cov.order[1:]]
    assert np.all(np.diff(rest) <= 0)


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
    # the ranking has seen every fit token by k_seen; held-out rows hold tokens it never saw
    k_seen = int(np.count_nonzero(both.counts_fit))
    assert cov.insample[k_seen] == 1.0 and cov.insample[k_seen - 1] < 1.0
    unseen = both.counts_heldout[both.counts_fit == 0].sum() / both.counts_heldout.sum()
    assert unseen > 0
    assert cov.heldout[k_seen] == pytest.approx(1.0 - unseen)
    assert cov.insample[16384] > cov.heldout[16384]


def test_out_of_domain_is_worse_than_in_domain(both):
    code, chat = both.domain_counts("code"), both.domain_counts("chat")
    assert code.sum() + chat.sum() == both.counts.sum()
    in_domain = coverage_curve(chat, rank_tokens(chat))
    ood = out_of_domain(code, chat, both.always_keep)
    assert ood[1024] < in_domain[1024] - 0.1   # code's top tokens cover chat poorly
    assert np.array_equal(ood, both.ood_curve("code", "chat"))


def test_kept_ids_in_ranking_order(both):
    cov = both.coverage()
    ids = kept_ids(cov.order_all, 100)
    assert ids.shape == (100,) and len(set(ids.tolist())) == 100
    with pytest.raises(VTError):
        kept_ids(cov.order_all, 0)
