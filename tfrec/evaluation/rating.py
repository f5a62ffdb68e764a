"""Rating and classification metrics for the ranking model (numpy only).

* :func:`rmse`, :func:`mae` for rating regression.
* :func:`auc`: binary ROC-AUC as the Mann-Whitney statistic, the probability that
  a random positive scores above a random negative, ties counting 1/2.
* :func:`mean_list_auc`: mean per-list AUC over re-ranked candidate lists.
* :func:`list_ndcg`: NDCG@k of candidate lists re-ranked by score, gains = labels
  (binary or graded, linear gain), ties ordered by lower candidate position first
  (stable descending sort, like ``tf.math.top_k``).

Lists without a positive (or, for AUC, without both classes) are skipped; their
mean is over the remaining lists.
"""

from __future__ import annotations

import numpy as np


def _paired(
    a: np.ndarray, b: np.ndarray, names: tuple[str, str], ndim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Converts two arrays to float64 and checks shape, size and NaN."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]}: shapes differ, {names[0]} {x.shape} vs "
            f"{names[1]} {y.shape}"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{names[0]}: expected a {ndim}-D array, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{names[0]} and {names[1]}: empty input, shape {x.shape}")
    for name, arr in zip(names, (x, y), strict=True):
        if np.isnan(arr).any():
            raise ValueError(f"{name}: contains {int(np.isnan(arr).sum())} NaN value(s)")
    return x, y


def _regression_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_paired` for ``y_true``/``y_pred``, also rejecting infinite values."""
    t, p = _paired(y_true, y_pred, ("y_true", "y_pred"))
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true/y_pred: infinite values")
    return t, p


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error over all elements.

    Raises:
        ValueError: Shape mismatch, empty input, NaN or infinite values.
    """
    t, p = _regression_pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error over all elements.

    Raises:
        ValueError: Shape mismatch, empty input, NaN or infinite values.
    """
    t, p = _regression_pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def _check_binary(labels: np.ndarray, name: str = "labels") -> None:
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        raise ValueError(
            f"{name}: expected binary labels 0/1, got {np.unique(labels[bad])[:5].tolist()}"
        )


def _auc_unchecked(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC via mid-ranks; labels 0/1 with both classes present."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    midranks = (ends - counts + 1 + ends) / 2.0  # mean 1-based rank of each tie group
    ranks = midranks[inverse.reshape(-1)]
    positive = labels.reshape(-1) == 1
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC-AUC (Mann-Whitney U / (P * N)), ties between a positive and a negative = 1/2.

    Args:
        labels: 0/1 labels, any shape (flattened).
        scores: Same shape, higher = more likely positive.

    Returns:
        AUC in [0, 1].

    Raises:
        ValueError: Shape mismatch, empty input, NaN, non-binary labels, or only one class.
    """
    y, s = _paired(labels, scores, ("labels", "scores"))
    _check_binary(y)
    n_pos = int((y == 1).sum())
    if n_pos in (0, y.size):
        raise ValueError(
            f"labels: AUC needs both classes, got {n_pos} positive(s) of {y.size} labels"
        )
    return _auc_unchecked(y, s)


def mean_list_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-list AUC over lists that hold both a positive and a negative.

    Args:
        labels: 0/1 ``[B, C]``.
        scores: ``[B, C]``.

    Returns:
        Mean of the per-row AUCs.

    Raises:
        ValueError: Shape mismatch, not 2-D, empty, NaN, non-binary labels, or no
            row with both classes.
    """
    y, s = _paired(labels, scores, ("labels", "scores"), ndim=2)
    _check_binary(y)
    n_pos = y.sum(axis=1)
    rows = np.flatnonzero((n_pos > 0) & (n_pos < y.shape[1]))
    if rows.size == 0:
        raise ValueError(f"labels: no row of {y.shape} has both a positive and a negative")
    return float(np.mean([_auc_unchecked(y[r], s[r]) for r in rows]))


def list_ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean NDCG@k of candidate lists re-ranked by ``scores``.

    Args:
        labels: ``[B, C]`` gains >= 0 (binary relevance or graded).
        scores: ``[B, C]``; each row is sorted descending, ties by lower column first.
        k: Cutoff >= 1 (values above C use the whole list).

    Returns:
        Mean over rows with a positive gain of DCG@k / ideal DCG@k, with
        DCG = sum_i gain_i / log2(i + 1) over 1-based positions i <= k.

    Raises:
        ValueError: Shape mismatch, not 2-D, empty, NaN, negative labels, k <= 0,
            or no row with a positive label.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    y, s = _paired(labels, scores, ("labels", "scores"), ndim=2)
    if (y < 0).any() or not np.isfinite(y).all():
        raise ValueError(f"labels: gains must be finite and >= 0, got min {y.min()}")
    k_eff = min(int(k), y.shape[1])
    discount = 1.0 / np.log2(np.arange(2, k_eff + 2, dtype=np.float64))  # [k]
    order = np.argsort(-s, axis=1, kind="stable")[:, :k_eff]
    dcg = (np.take_along_axis(y, order, axis=1) * discount).sum(axis=1)
    ideal = (-np.sort(-y, axis=1)[:, :k_eff] * discount).sum(axis=1)
    rows = ideal > 0
    if not rows.any():
        raise ValueError(f"labels: no row of {y.shape} has a positive label")
    return float(np.mean(dcg[rows] / ideal[rows]))
