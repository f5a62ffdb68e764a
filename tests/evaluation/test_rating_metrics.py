"""RMSE/MAE, ROC-AUC (Mann-Whitney) and re-ranked list NDCG."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfrec.evaluation import auc, list_ndcg, mae, mean_list_auc, rmse


def test_rmse_mae_hand_computed() -> None:
    # errors: 0, 2, -1 -> MSE = (0 + 4 + 1) / 3 = 5/3, MAE = (0 + 2 + 1) / 3 = 1
    y_true, y_pred = np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 2.0])
    assert rmse(y_true, y_pred) == pytest.approx(math.sqrt(5 / 3))
    assert mae(y_true, y_pred) == pytest.approx(1.0)


def test_auc_hand_computed_with_tie() -> None:
    # positives score 0.8, 0.3; negatives 0.8, 0.1, 0.5.
    # pairs (pos, neg): 0.8 vs 0.8 tie -> 1/2, 0.8 > 0.1 -> 1, 0.8 > 0.5 -> 1,
    #                   0.3 < 0.8 -> 0,   0.3 > 0.1 -> 1, 0.3 < 0.5 -> 0
    # AUC = (0.5 + 1 + 1 + 0 + 1 + 0) / (2 * 3) = 3.5 / 6
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.8, 0.8, 0.3, 0.1, 0.5])
    assert auc(labels, scores) == pytest.approx(3.5 / 6)


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """O(n^2) definition: P(score_pos > score_neg) + 1/2 P(equal)."""
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pair_counting(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(60) < 0.3).astype(np.int64)
    scores = np.round(rng.normal(size=60), 1)  # many ties
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), rel=1e-12)


def test_mean_list_auc_skips_rows_with_one_class() -> None:
    # row 0: pos 0.9 beats both negatives -> 1; row 1: pos 0.1 loses to both -> 0;
    # row 2: no positive -> skipped. Mean over rows 0, 1 = 1/2.
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    scores = np.array([[0.9, 0.2, 0.3], [0.5, 0.1, 0.4], [0.1, 0.2, 0.3]])
    assert mean_list_auc(labels, scores) == pytest.approx(0.5)
    rng = np.random.default_rng(5)
    labels = (rng.random((8, 10)) < 0.4).astype(np.int64)
    scores = np.round(rng.random((8, 10)), 1)
    rows = [r for r in range(8) if 0 < labels[r].sum() < 10]
    expected = np.mean([pairwise_auc(labels[r], scores[r]) for r in rows])
    assert mean_list_auc(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_list_ndcg_hand_computed_with_tie() -> None:
    # labels [0, 1, 0, 1], scores [0.2, 0.2, 0.9, 0.1]
    # order: col 2 (0.9), col 0 and col 1 tie at 0.2 -> col 0 first, col 3.
    # gains by position: 0, 0, 1, 1. ideal: 1, 1, 0, 0.
    # @2: DCG 0 -> 0.  @3: (1/log2 4) / (1 + 1/log2 3).  @10 (> 4 columns): all four.
    labels = np.array([[0, 1, 0, 1]])
    scores = np.array([[0.2, 0.2, 0.9, 0.1]])
    ideal = 1 + 1 / math.log2(3)
    assert list_ndcg(labels, scores, 2) == 0.0
    assert list_ndcg(labels, scores, 3) == pytest.approx((1 / math.log2(4)) / ideal)
    assert list_ndcg(labels, scores, 10) == pytest.approx(
        (1 / math.log2(4) + 1 / math.log2(5)) / ideal
    )


def test_list_ndcg_graded_and_skips_rows_without_positive() -> None:
    # row 0: gains [3, 0, 1], scores put col 2 first, then col 0 -> gains 1, 3 at @2;
    #   DCG = 1 + 3/log2 3, ideal = 3 + 1/log2 3.  row 1: all zero -> skipped.
    labels = np.array([[3.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    scores = np.array([[0.5, 0.1, 0.7], [0.3, 0.2, 0.1]])
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert list_ndcg(labels, scores, 2) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fn", "args", "match"),
    [
        (rmse, (np.zeros(3), np.zeros(4)), r"y_true \(3,\) vs y_pred \(4,\)"),
        (mae, (np.zeros(0), np.zeros(0)), "empty input"),
        (rmse, (np.zeros(2), np.array([0.0, np.nan])), "y_pred: contains 1 NaN"),
        (auc, (np.array([1, 0]), np.array([0.1, np.nan])), "scores: contains 1 NaN"),
        (auc, (np.array([1, 1]), np.array([0.1, 0.2])), "needs both classes"),
        (auc, (np.array([1, 2]), np.array([0.1, 0.2])), "binary labels"),
        (mean_list_auc, (np.zeros((2, 3)), np.zeros((2, 2))), r"\(2, 3\) vs scores \(2, 2\)"),
        (mean_list_auc, (np.zeros(3), np.zeros(3)), "2-D"),
        (mean_list_auc, (np.zeros((2, 3)), np.zeros((2, 3))), "no row"),
        (list_ndcg, (np.ones((1, 3)), np.zeros((1, 3)), 0), "k: expected an integer >= 1"),
        (list_ndcg, (np.ones((1, 3)), np.zeros((1, 2)), 2), r"\(1, 3\) vs scores \(1, 2\)"),
        (list_ndcg, (-np.ones((1, 3)), np.zeros((1, 3)), 2), "gains must be finite and >= 0"),
        (list_ndcg, (np.zeros((1, 3)), np.zeros((1, 3)), 2), "no row"),
    ],
)
def test_validation(fn, args, match) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize("fn", [rmse, mae])
def test_regression_metrics_reject_infinite_values(fn) -> None:
    # NaN is reported per argument; +-inf in either argument is rejected as well.
    with pytest.raises(ValueError, match="y_true/y_pred: infinite values"):
        fn(np.array([1.0, np.inf]), np.zeros(2))
    with pytest.raises(ValueError, match="y_true/y_pred: infinite values"):
        fn(np.zeros(2), np.array([-np.inf, 0.0]))
