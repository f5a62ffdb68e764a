"""Full-ranking metrics from top-K item ids and target ranks, without dense ``[B, I]`` masks.

:class:`TopKRankingMetrics` is a :class:`~tfrec.evaluation.metrics.RankingMetrics`
whose batches may come already ranked: :meth:`TopKRankingMetrics.prepare` turns
the per-user ``relevant`` / ``exclude`` lists into sparse arrays (the items to
remove from each row's ranking, the rankable relevant items, the counts), a
ranker (:mod:`tfrec.evaluation.topk`) returns each row's top ``max(ks)`` items
and the 0-based full-ranking position of its best rankable relevant item, and
:meth:`TopKRankingMetrics.add_ranked` turns those into the same metrics, counts
and denominators as :meth:`RankingMetrics.update` on the dense scores (same tie
policy, masking and definitions, see :mod:`tfrec.evaluation.metrics`). Dense
batches can still be fed with ``update`` (the exact fallback for scores that
are not all finite).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfrec.evaluation.masks import IndexLists, index_pairs
from tfrec.evaluation.metrics import RankingMetrics, metrics_from_hits


class SparseTargets(NamedTuple):
    """A batch's relevant and excluded items as sparse arrays (:meth:`TopKRankingMetrics.prepare`).

    Attributes:
        relevant: int32 ``[B, R]`` rankable relevant items per row, -1 padded (``R >= 1``).
        masked_rows: int64 ``[M]`` rows of the (row, item) pairs removed from the
            ranking besides the global invalid items (the history when masking).
        masked_cols: int64 ``[M]`` their items.
        num_rankable: int64 ``[B]`` items that take part in each row's ranking.
        num_targets: int64 ``[B]`` ``|rel|`` per row (masked relevant items included).
        counts: ``repeat_target_users``, ``masked_target_users``, ``conflicts``,
            ``invalid_relevant`` of the batch.
    """

    relevant: np.ndarray
    masked_rows: np.ndarray
    masked_cols: np.ndarray
    num_rankable: np.ndarray
    num_targets: np.ndarray
    counts: dict[str, int]


def _unique_keys(lists: IndexLists, num_rows: int, num_items: int, name: str) -> np.ndarray:
    """Sorted unique ``row * num_items + item`` keys of per-row index lists."""
    rows, cols = index_pairs(lists, num_rows, num_items, name)
    return np.unique(rows * num_items + cols)


class TopKRankingMetrics(RankingMetrics):
    """Streaming full-ranking metrics fed with top-K ids and ranks (or dense scores).

    Args:
        ks: Cutoffs K.
        invalid_items: Item indices never ranked (default padding 0 and OOV 1).
        mask_exclude: Remove each user's ``exclude`` items from the ranking.
    """

    def prepare(
        self, num_items: int, relevant: IndexLists, exclude: IndexLists | None = None
    ) -> SparseTargets:
        """Checks a batch's lists and builds its sparse targets (nothing is accumulated yet).

        Args:
            num_items: Catalogue size I (score columns).
            relevant: B integer arrays of relevant item indices.
            exclude: B integer arrays of excluded item indices, or None.

        Returns:
            :class:`SparseTargets`.

        Raises:
            ValueError: Out-of-range or non-integer indices, a wrong number of
                rows, or a catalogue size other than earlier batches'.
        """
        self._check_num_items(num_items)
        bad = [i for i in self.invalid_items if not 0 <= i < num_items]
        if bad:
            raise ValueError(f"invalid_items: indices {bad} out of range [0, {num_items})")
        num_rows = len(relevant)
        rel = _unique_keys(relevant, num_rows, num_items, "relevant")
        if exclude is None:
            excl = np.zeros(0, dtype=np.int64)
        else:
            excl = _unique_keys(exclude, num_rows, num_items, "exclude")
        invalid = np.zeros(num_items, dtype=bool)
        invalid[list(self.invalid_items)] = True
        rel_invalid = invalid[rel % num_items]
        real = rel[~rel_invalid]  # the denominators' relevant items
        repeated = np.isin(real, excl, assume_unique=True)
        repeat_users = np.unique(real[repeated] // num_items).size
        counts = {
            "repeat_target_users": int(repeat_users),
            "masked_target_users": int(repeat_users) if self.mask_exclude else 0,
            "conflicts": int(repeated.sum()),
            "invalid_relevant": int(rel_invalid.sum()),
        }
        rankable_rel = real[~repeated] if self.mask_exclude else real
        masked = excl[~invalid[excl % num_items]] if self.mask_exclude else excl[:0]
        num_rankable = np.full(num_rows, num_items - int(invalid.sum()), dtype=np.int64)
        num_rankable -= np.bincount(masked // num_items, minlength=num_rows)
        return SparseTargets(
            relevant=_padded(rankable_rel, num_rows, num_items),
            masked_rows=masked // num_items,
            masked_cols=masked % num_items,
            num_rankable=num_rankable,
            num_targets=np.bincount(real // num_items, minlength=num_rows),
            counts=counts,
        )

    def add_ranked(self, targets: SparseTargets, items: np.ndarray, ranks: np.ndarray) -> None:
        """Adds one ranked batch.

        Args:
            targets: The batch's :meth:`prepare` result.
            items: int ``[B, k]`` top items per row, best first, ties by lower
                index, -1 past the row's rankable items (``k = min(max(ks), I)``).
            ranks: int ``[B]`` 0-based full-ranking position of each row's best
                rankable relevant item (any value for rows without one).

        Raises:
            ValueError: ``items`` / ``ranks`` not matching the batch.
        """
        num_rows = targets.num_targets.shape[0]
        items, ranks = np.asarray(items), np.asarray(ranks)
        if items.ndim != 2 or items.shape[0] != num_rows or ranks.shape != (num_rows,):
            raise ValueError(
                f"items/ranks: expected [{num_rows}, k] and [{num_rows}], got "
                f"{items.shape} and {ranks.shape}"
            )
        for key, value in targets.counts.items():
            self._counts[key] += value
        has_targets = targets.num_targets > 0
        self._counts["users"] += int(has_targets.sum())
        self._counts["skipped_users"] += int((~has_targets).sum())
        # Users whose relevant items were all masked (or none exist) add 0 to every sum.
        hit_rows = np.flatnonzero((targets.relevant >= 0).any(axis=1))
        if hit_rows.size == 0:
            return
        kmax = self.ks[-1]
        top = np.full((hit_rows.size, kmax), -1, dtype=np.int64)
        width = min(kmax, items.shape[1])
        top[:, :width] = items[hit_rows, :width]
        rel = targets.relevant[hit_rows]  # [H, R]
        hits = (top[:, :, None] == rel[:, None, :]).any(axis=2) & (top >= 0)
        per_user = metrics_from_hits(hits, targets.num_targets[hit_rows], self.ks)
        per_user["mrr"] = 1.0 / (ranks[hit_rows].astype(np.float64) + 1.0)
        self._add_values(per_user)


def _padded(keys: np.ndarray, num_rows: int, num_items: int) -> np.ndarray:
    """Sorted ``row * num_items + item`` keys -> int32 ``[B, R]`` items per row, -1 padded."""
    rows, cols = keys // num_items, keys % num_items
    lengths = np.bincount(rows, minlength=num_rows)
    out = np.full((num_rows, max(1, int(lengths.max(initial=0)))), -1, dtype=np.int32)
    slot = np.arange(keys.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, slot] = cols
    return out
