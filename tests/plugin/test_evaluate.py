"""Metric functions on hand-made similarity matrices."""

import math

import numpy as np
import pytest

from plugin.evaluate import retrieval_metrics, spearman


def test_retrieval_metrics_by_hand():
    sim = np.array([[0.9, 0.1, 0.5],    # query 0: relevant doc 0 ranked 1st
                    [0.9, 0.1, 0.5]])   # query 1: relevant doc 1 ranked 3rd
    m = retrieval_metrics(sim, [{0}, {1}], k=10)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 2)
    assert m["recall@10"] == 1.0


def test_retrieval_cutoff_and_multiple_relevant():
    sim = np.array([[0.1, 0.9, 0.8]])
    m = retrieval_metrics(sim, [{0, 2}], k=2)
    assert m["mrr@2"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_spearman_constant_scores_is_zero_not_nan():
    assert spearman(np.ones(4), np.arange(4)) == 0.0
    assert spearman(np.arange(5), np.arange(5)) == pytest.approx(1.0)
