"""Top-K ranking metrics over the full catalogue or sampled negatives (numpy only).

Definitions (per user, ``rel`` = relevant set, ``hit_i`` = 1 if the item at
1-based position ``i`` is relevant):

* ``hr@K``        1 if any of the top K is relevant.
* ``recall@K``    hits in top K / ``|rel|``.
* ``precision@K`` hits in top K / K (K even when fewer than K items can be ranked).
* ``ndcg@K``      sum_i hit_i / log2(i + 1) over i <= K, divided by the ideal DCG of
                  ``min(|rel|, K)`` hits at the top (binary gains).
* ``map@K``       sum over hit positions i <= K of precision@i, / ``min(|rel|, K)``.
* ``mrr``         1 / (position of the best-ranked relevant item in the FULL ranking).

Denominators: every user with at least one relevant item that is a real item
(not a global invalid index) is averaged over, including users whose relevant
items were all masked out. A masked-out relevant item (see Masking) is a miss:
it contributes 0 to every metric and still counts in ``|rel|``, so recall, the
ideal DCG and MAP's ``min(|rel|, K)`` include it; a user whose only held-out item
was masked scores 0 everywhere. This is the denominator of published protocols
(every test user counts) and what an exported model that excludes the history
achieves.

Counts in the result: ``users`` (the denominator), ``skipped_users`` (no real
relevant item at all: nothing to evaluate), ``repeat_target_users`` (users with
a relevant item also in their exclude set, e.g. a held-out item that repeats a
history item), ``masked_target_users`` (of those, the users whose repeated items
were removed from the ranking and counted as misses: all of them when masking,
0 with ``mask_exclude=False``), ``conflicts`` (relevant items in the exclude sets)
and ``invalid_relevant`` (relevant items that are global invalid indices).

Tie policy: items with equal scores are ordered by lower item index first, i.e.
a stable descending sort. This is the order ``tf.math.top_k`` returns, so the
offline metrics agree with an exported model's top-K.

Masking: the global ``invalid_items`` (default ``(0, 1)``: padding and OOV of
``IdVocabulary``) are never ranked. The user's ``exclude`` indices (training
history) are removed from the ranking too (they occupy no position) unless
``mask_exclude=False``, the option for repeat-consumption domains (music,
groceries, restaurants) where already-consumed items stay rankable and a
repeated held-out item can be hit. Duplicate indices in a list count once.
Scores may be +-inf but not NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfrec.evaluation.intervals import interval_keys
from tfrec.evaluation.masks import IndexLists, RelevanceMasks, check_scores, relevance_masks

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)
DEFAULT_INVALID_ITEMS: tuple[int, ...] = (0, 1)
AT_K_METRICS: tuple[str, ...] = ("hr", "recall", "precision", "ndcg", "map")
COUNT_KEYS: tuple[str, ...] = (
    "users",
    "skipped_users",
    "repeat_target_users",
    "masked_target_users",
    "conflicts",
    "invalid_relevant",
)


def metric_keys(ks: Sequence[int]) -> list[str]:
    """The averaged metric keys for ``ks``: ``hr@1, recall@1, ..., map@K, mrr``."""
    return [f"{name}@{k}" for k in ks for name in AT_K_METRICS] + ["mrr"]


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validates cutoffs; returns them sorted and de-duplicated.

    Raises:
        ValueError: ``ks`` empty or holding a non-integer or a value <= 0.
    """
    values = list(ks)
    if not values:
        raise ValueError("ks: expected at least one cutoff, got an empty sequence")
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise ValueError(f"ks: every cutoff must be an integer > 0, got {k!r} in {values}")
    return tuple(sorted({int(k) for k in values}))


def top_k_items(scores: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """The top-``k`` rankable items per row, best first, ties by lower index.

    Args:
        scores: float ``[B, I]`` without NaN.
        valid: bool ``[B, I]``; False items are removed from the ranking.
        k: Number of positions, >= 1.

    Returns:
        int64 ``[B, k]`` item indices, -1 where a row has fewer than ``k`` valid items.
    """
    num_rows, num_items = scores.shape
    k_eff = min(k, num_items)
    work = np.where(valid, scores, -np.inf)  # excluded items rank below every valid item
    # Threshold = k_eff-th largest valid score (or -inf when fewer valid items).
    thresh = -np.partition(-work, k_eff - 1, axis=1)[:, k_eff - 1 : k_eff]  # [B, 1]
    above = valid & (scores > thresh)
    tied = valid & (scores == thresh)
    need = k_eff - above.sum(axis=1, keepdims=True)  # [B, 1]
    chosen = above | tied
    crowded = np.flatnonzero(tied.sum(axis=1) > need[:, 0])  # more ties than free slots
    if crowded.size:  # keep the lowest-index ties only
        sub = tied[crowded]
        chosen[crowded] = above[crowded] | (sub & (np.cumsum(sub, axis=1) <= need[crowded]))
    rows, cols = np.nonzero(chosen)  # row-major, so ascending item index per row
    counts = chosen.sum(axis=1)
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    items = np.full((num_rows, k), -1, dtype=np.int64)
    items[rows, slot] = cols
    picked = np.where(items >= 0, scores[np.arange(num_rows)[:, None], items.clip(0)], 0.0)
    order = np.lexsort((items, -picked, items < 0), axis=-1)  # pad last, score desc, index asc
    return np.take_along_axis(items, order, axis=1)


def _first_relevant_rank(scores: np.ndarray, valid: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """0-based position of the best relevant item in the full ranking, ``[B]``."""
    best = np.where(rel, scores, -np.inf).max(axis=1, keepdims=True)  # [B, 1]
    first = np.argmax(rel & (scores == best), axis=1)[:, None]  # lowest index among ties
    before = valid & ((scores > best) | ((scores == best) & (np.arange(scores.shape[1]) < first)))
    return before.sum(axis=1)


def metrics_from_hits(
    hits: np.ndarray, num_relevant: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Per-row @K metrics from a hit matrix.

    Args:
        hits: bool ``[B, max(ks)]``; ``hits[b, j]`` = item at 0-based position j is relevant.
        num_relevant: ``[B]`` relevant-set sizes ``|rel|`` (masked items included), >= 1.
        ks: Validated cutoffs.

    Returns:
        ``{"hr@K": [B], "recall@K": [B], ...}`` float64 arrays (no ``mrr``).
    """
    kmax = hits.shape[1]
    pos = np.arange(1, kmax + 1, dtype=np.float64)
    gains = hits.astype(np.float64)
    cum_hits = np.cumsum(gains, axis=1)
    discount = 1.0 / np.log2(pos + 1.0)
    cum_dcg = np.cumsum(gains * discount, axis=1)
    cum_ap = np.cumsum(gains * cum_hits / pos, axis=1)
    ideal = np.cumsum(discount)
    n_rel = np.asarray(num_relevant, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = cum_hits[:, k - 1]
        denom = np.minimum(n_rel, k)
        out[f"hr@{k}"] = (h > 0).astype(np.float64)
        out[f"recall@{k}"] = h / n_rel
        out[f"precision@{k}"] = h / k
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal[denom - 1]
        out[f"map@{k}"] = cum_ap[:, k - 1] / denom
    return out


class _UserMeanAccumulator:
    """Streaming per-user metrics averaged over users, shared by both protocols.

    :meth:`update` checks a batch, builds its masks, adds its counts, then hands
    it to ``_add_batch``, where a subclass adds each user's metrics to ``_sums``
    and counts the user in ``_counts`` (``users`` or ``skipped_users``). A
    subclass sets ``ks``, ``invalid_items`` and ``mask_exclude`` before calling
    :meth:`reset`.
    """

    ks: tuple[int, ...]
    invalid_items: tuple[int, ...]
    mask_exclude: bool

    def reset(self) -> None:
        """Forgets all accumulated users."""
        self._sums = dict.fromkeys(metric_keys(self.ks), 0.0)
        self._sq_sums = dict.fromkeys(metric_keys(self.ks), 0.0)  # for confidence intervals
        self._counts = dict.fromkeys(COUNT_KEYS, 0)

    def _add_values(self, per_user: dict[str, np.ndarray]) -> None:
        """Adds per-user metric values (users not given add 0) to the sums and squared sums."""
        for key, values in per_user.items():
            self._sums[key] += float(values.sum())
            self._sq_sums[key] += float(np.square(values).sum())

    def confidence_intervals(self) -> dict[str, float]:
        """``{"<metric>_ci95": half-width}`` over the users so far (see :mod:`~.intervals`)."""
        return interval_keys(self._sums, self._sq_sums, self._counts["users"])

    def update(
        self,
        scores: np.ndarray,
        relevant: IndexLists,
        exclude: IndexLists | None = None,
    ) -> None:
        """Adds one batch of users.

        Args:
            scores: ``[B, I]`` scores of every catalogue item, higher is better.
            relevant: B integer arrays of relevant item indices.
            exclude: B integer arrays of item indices (the user's history): removed
                from the ranking unless ``mask_exclude=False``; never negatives.

        Raises:
            ValueError: Bad shapes, NaN scores, out-of-range indices; for
                :class:`~tfrec.evaluation.sampled.SampledRankingMetrics` also an
                ``item_counts`` length other than I, or too few negatives.
        """
        s = check_scores(scores)
        self._check_num_items(s.shape[1])
        masks = relevance_masks(
            *s.shape, relevant, exclude, self.invalid_items, mask_exclude=self.mask_exclude
        )
        for key, value in masks.counts.items():
            self._counts[key] += value
        has_targets = masks.num_targets > 0
        self._counts["users"] += int(has_targets.sum())
        self._counts["skipped_users"] += int((~has_targets).sum())
        self._add_batch(s, masks)

    def _check_num_items(self, num_items: int) -> None:
        """Raises ValueError when ``num_items`` score columns do not fit the accumulator."""
        raise NotImplementedError

    def _add_batch(self, scores: np.ndarray, masks: RelevanceMasks) -> None:
        """Adds the metric sums of a checked batch (users are already counted)."""
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        """Mean metrics over users with a relevant item (NaN if there were none), plus counts."""
        users = self._counts["users"]
        out = {key: (total / users if users else float("nan")) for key, total in self._sums.items()}
        out.update({key: float(value) for key, value in self._counts.items()})
        return out


class RankingMetrics(_UserMeanAccumulator):
    """Streaming full-ranking metrics; feed batches with :meth:`update`.

    Args:
        ks: Cutoffs K (default 1, 5, 10, 20, 50, 100).
        invalid_items: Item indices never ranked (default padding 0 and OOV 1).
        mask_exclude: Remove each user's ``exclude`` items from the ranking (a
            relevant item among them is a miss). False: they stay rankable
            (repeat-consumption domains).
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
        mask_exclude: bool = True,
    ) -> None:
        self.ks = check_ks(ks)
        self.invalid_items = tuple(int(i) for i in invalid_items)
        self.mask_exclude = check_mask_exclude(mask_exclude)
        self.reset()

    def reset(self) -> None:
        """Forgets all accumulated users."""
        super().reset()
        self._num_items: int | None = None

    def _check_num_items(self, num_items: int) -> None:
        if self._num_items is None:
            self._num_items = num_items
        elif num_items != self._num_items:
            raise ValueError(
                f"scores: {num_items} items per row, but earlier batches had {self._num_items}"
            )

    def _add_batch(self, scores: np.ndarray, masks: RelevanceMasks) -> None:
        # Users whose relevant items were all masked (or none exist) add 0 to every sum.
        hit_rows = masks.relevant.any(axis=1)
        if not hit_rows.any():
            return
        rel, valid, n_targets = masks.relevant, masks.rankable, masks.num_targets
        if not hit_rows.all():
            scores, rel, valid = scores[hit_rows], rel[hit_rows], valid[hit_rows]
            n_targets = n_targets[hit_rows]
        items = top_k_items(scores, valid, self.ks[-1])  # [B, Kmax]
        hits = (items >= 0) & np.take_along_axis(rel, items.clip(0), axis=1)
        per_user = metrics_from_hits(hits, n_targets, self.ks)
        per_user["mrr"] = 1.0 / (_first_relevant_rank(scores, valid, rel) + 1.0)
        self._add_values(per_user)


def check_mask_exclude(mask_exclude: bool) -> bool:
    """Validates the ``mask_exclude`` flag of the accumulators.

    Raises:
        ValueError: Not a bool.
    """
    if not isinstance(mask_exclude, bool | np.bool_):
        raise ValueError(f"mask_exclude: expected True or False, got {mask_exclude!r}")
    return bool(mask_exclude)


def ranking_metrics(
    scores: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
    mask_exclude: bool = True,
) -> dict[str, float]:
    """One-shot full-ranking metrics; see :class:`RankingMetrics` and the module docstring."""
    acc = RankingMetrics(ks=ks, invalid_items=invalid_items, mask_exclude=mask_exclude)
    acc.update(scores, relevant, exclude)
    return acc.result()
