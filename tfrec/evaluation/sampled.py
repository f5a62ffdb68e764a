"""Sampled-negatives ranking protocol, for comparison with papers that use it.

Per user, each relevant item is ranked against the same ``num_negatives``
sampled negatives (a list of 1 + N candidates). The metrics of the user are the
mean over their relevant items, then users are averaged, so every user weighs
the same as in the full-ranking protocol. Keys and tie policy are those of
:mod:`tfrec.evaluation.metrics` (equal scores: lower item index ranks first);
with one positive per list ``recall@K == hr@K`` and ``map@K == mrr`` truncated at K.

Negatives are drawn without replacement from the items that are neither global
invalid indices, nor relevant, nor excluded for the user: uniformly, or with
probability proportional to ``item_counts`` ("popularity"). Sampling for the
n-th user fed to an accumulator uses ``numpy.random.default_rng([seed, n])``, so
results do not depend on the batch size.

Denominators are those of the full-ranking protocol: every user with a real
relevant item counts. A relevant item that is also in the user's exclude set
(a repeat of a history item) is, by default, a miss (0 for every metric, still
one of the items the user's mean is taken over). With ``mask_exclude=False`` it
is ranked against the negatives like any other positive: this is the sampled
protocol of SASRec's released code, where the held-out item is always in the
candidate list and only the negatives avoid the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tfrec.evaluation.masks import IndexLists, RelevanceMasks
from tfrec.evaluation.metrics import (
    DEFAULT_INVALID_ITEMS,
    DEFAULT_KS,
    _UserMeanAccumulator,
    check_ks,
    check_mask_exclude,
    metrics_from_hits,
)

SAMPLING_MODES: tuple[str, ...] = ("uniform", "popularity")


def sample_eval_negatives(
    forbidden: np.ndarray,
    num_negatives: int,
    rng: np.random.Generator,
    sampling: str = "uniform",
    item_counts: np.ndarray | None = None,
) -> np.ndarray:
    """Draws distinct negative item indices for one user.

    Args:
        forbidden: bool ``[I]``, True for items that must not be drawn (invalid,
            relevant, excluded).
        num_negatives: How many to draw, >= 1.
        rng: Random generator.
        sampling: ``"uniform"`` or ``"popularity"`` (weights ``item_counts``).
        item_counts: ``[I]`` non-negative counts, required for ``"popularity"``.

    Returns:
        int64 ``[num_negatives]`` item indices, in draw order.

    Raises:
        ValueError: Fewer than ``num_negatives`` items can be drawn.
    """
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"sampling: expected one of {SAMPLING_MODES}, got {sampling!r}")
    if sampling == "popularity" and item_counts is None:
        raise ValueError("item_counts: required when sampling='popularity'")
    candidates = np.flatnonzero(~forbidden)
    weights = None
    if sampling == "popularity":
        counts = np.asarray(item_counts, dtype=np.float64)[candidates]
        candidates, counts = candidates[counts > 0], counts[counts > 0]
        weights = counts / counts.sum() if counts.size else None
    if candidates.size < num_negatives:
        raise ValueError(
            f"num_negatives={num_negatives} but only {candidates.size} items can be sampled "
            f"({sampling}) for this user; lower num_negatives"
        )
    return rng.choice(candidates, size=num_negatives, replace=False, p=weights).astype(np.int64)


class SampledRankingMetrics(_UserMeanAccumulator):
    """Streaming sampled-negatives metrics; feed batches with :meth:`update`.

    Args:
        ks: Cutoffs K (each must be <= 1 + num_negatives).
        num_negatives: Negatives per user (default 100).
        sampling: ``"uniform"`` or ``"popularity"``.
        item_counts: ``[I]`` non-negative interaction counts per item index, for
            ``"popularity"``.
        seed: Seed; the n-th user fed uses ``default_rng([seed, n])``.
        invalid_items: Item indices never ranked or drawn (default 0 and 1).
        mask_exclude: A relevant item in the user's exclude set is a miss (True)
            or is ranked against the negatives (False). Excluded items are never
            drawn as negatives either way.

    Raises:
        ValueError: Bad ``ks``, ``num_negatives``, ``sampling``, ``item_counts``
            or ``mask_exclude``.
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        *,
        num_negatives: int = 100,
        sampling: str = "uniform",
        item_counts: np.ndarray | None = None,
        seed: int = 0,
        invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
        mask_exclude: bool = True,
    ) -> None:
        self.ks = check_ks(ks)
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int | np.integer):
            raise ValueError(f"num_negatives: expected an integer, got {num_negatives!r}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives: expected >= 1, got {num_negatives}")
        if self.ks[-1] > num_negatives + 1:
            raise ValueError(
                f"ks: cutoff {self.ks[-1]} exceeds the candidate list length "
                f"1 + num_negatives = {num_negatives + 1}"
            )
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling: expected one of {SAMPLING_MODES}, got {sampling!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
        if sampling == "popularity":
            if item_counts is None:
                raise ValueError("item_counts: required when sampling='popularity'")
            counts = np.asarray(item_counts)
            if counts.ndim != 1 or not np.all(np.isfinite(counts)) or (counts < 0).any():
                raise ValueError(
                    f"item_counts: expected a 1-D array of finite counts >= 0, got shape "
                    f"{counts.shape} with min {counts.min() if counts.size else None}"
                )
        self.num_negatives = int(num_negatives)
        self.sampling = sampling
        self.item_counts = None if item_counts is None else np.asarray(item_counts)
        self.seed = int(seed)
        self.invalid_items = tuple(int(i) for i in invalid_items)
        self.mask_exclude = check_mask_exclude(mask_exclude)
        self.reset()

    def reset(self) -> None:
        """Forgets all accumulated users and restarts the per-user seed counter."""
        super().reset()
        self._seen = 0  # users fed so far (keys the per-user generator)

    def _check_num_items(self, num_items: int) -> None:
        if self.item_counts is not None and self.item_counts.shape[0] != num_items:
            raise ValueError(
                f"item_counts: length {self.item_counts.shape[0]} != {num_items} items in scores"
            )

    def _add_batch(self, scores: np.ndarray, masks: RelevanceMasks) -> None:
        num_rows = scores.shape[0]
        for row in range(num_rows):
            positives = np.flatnonzero(masks.relevant[row])
            if positives.size == 0:  # skipped user, or every relevant item masked: adds 0
                continue
            rng = np.random.default_rng([self.seed, self._seen + row])
            try:
                negatives = sample_eval_negatives(
                    masks.forbidden[row], self.num_negatives, rng, self.sampling, self.item_counts
                )
            except ValueError as err:
                raise ValueError(f"user row {row} of this batch: {err}") from None
            self._add_user(
                scores[row, positives],
                positives,
                scores[row, negatives],
                negatives,
                int(masks.num_targets[row]),
            )
        self._seen += num_rows

    def _add_user(
        self,
        pos_scores: np.ndarray,
        pos_items: np.ndarray,
        neg_scores: np.ndarray,
        neg_items: np.ndarray,
        num_targets: int,
    ) -> None:
        """Ranks each positive against the negatives and adds the user's mean metrics.

        The mean is over ``num_targets`` relevant items: masked ones add 0.
        """
        above = neg_scores[None, :] > pos_scores[:, None]  # [P, N]
        tied_before = (neg_scores[None, :] == pos_scores[:, None]) & (
            neg_items[None, :] < pos_items[:, None]
        )
        rank = (above | tied_before).sum(axis=1)  # 0-based position in the 1 + N list
        hits = np.arange(self.ks[-1])[None, :] == rank[:, None]  # [P, Kmax]
        per_item = metrics_from_hits(hits, np.ones(rank.size, dtype=np.int64), self.ks)
        per_item["mrr"] = 1.0 / (rank + 1.0)
        self._add_values(
            {key: np.array([values.sum() / num_targets]) for key, values in per_item.items()}
        )


def sampled_ranking_metrics(
    scores: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None = None,
    **settings: Any,
) -> dict[str, float]:
    """One-shot sampled-negatives metrics over one score matrix.

    Args:
        scores: ``[Q, num_items]`` scores.
        relevant: Q integer arrays of relevant item indices.
        exclude: Q integer arrays of excluded item indices (never drawn), or None.
        **settings: The keyword arguments of :class:`SampledRankingMetrics`
            (``ks``, ``num_negatives``, ``sampling``, ``item_counts``, ``seed``,
            ``invalid_items``, ``mask_exclude``).

    Returns:
        Plain keys (``"ndcg@10"``, ``"mrr"``, counts); the caller adds any prefix.
    """
    acc = SampledRankingMetrics(**settings)
    acc.update(scores, relevant, exclude)
    return acc.result()
