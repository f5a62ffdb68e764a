"""Input checks and per-user item masks shared by the full and sampled protocols (numpy only).

Scores are a float ``[B, I]`` matrix without NaN; relevant and excluded items are
per-user lists of item indices. :func:`relevance_masks` turns them into the
boolean masks both protocols rank with; the rules (global invalid items, the
exclude set, repeated targets) are those of :mod:`tfrec.evaluation.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

IndexLists = Sequence[np.ndarray]


def check_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """Returns ``scores`` as a float ``[B, I]`` array (no copy if already float).

    Raises:
        ValueError: Not 2-D, empty, non-numeric or containing NaN.
    """
    arr = np.asarray(scores)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array [users, items], got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        rows = np.flatnonzero(np.isnan(arr).any(axis=1))
        raise ValueError(f"{name}: NaN scores in rows {rows[:10].tolist()} (cannot be ranked)")
    return arr


def index_pairs(
    lists: IndexLists, num_rows: int, num_items: int, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Flattens per-row item-index lists into ``(rows, cols)`` int64 arrays (duplicates kept).

    Raises:
        ValueError: Wrong number of rows, non-integer or out-of-range indices.
    """
    if len(lists) != num_rows:
        raise ValueError(f"{name}: expected {num_rows} rows (one per score row), got {len(lists)}")
    arrays = [np.asarray(x).reshape(-1) for x in lists]
    for row, arr in enumerate(arrays):
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name}[{row}]: expected integer item indices, got dtype {arr.dtype}")
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cols = np.concatenate([a.astype(np.int64) for a in arrays])
    rows = np.repeat(np.arange(num_rows), lengths)
    bad = (cols < 0) | (cols >= num_items)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}[{rows[first]}]: item index {cols[first]} out of range [0, {num_items})"
        )
    return rows, cols


def index_mask(lists: IndexLists | None, num_rows: int, num_items: int, name: str) -> np.ndarray:
    """Scatters per-row item-index lists into a boolean mask.

    Args:
        lists: ``num_rows`` 1-D integer arrays of item indices, or None (all False).
        num_rows: Batch size B.
        num_items: Catalogue size I.
        name: Argument name for error messages.

    Returns:
        bool array ``[B, I]``.

    Raises:
        ValueError: Wrong number of rows, non-integer or out-of-range indices.
    """
    mask = np.zeros((num_rows, num_items), dtype=bool)
    if lists is None:
        return mask
    rows, cols = index_pairs(lists, num_rows, num_items, name)
    mask[rows, cols] = True
    return mask


class RelevanceMasks(NamedTuple):
    """Per-user masks shared by the full and sampled protocols (see :func:`relevance_masks`).

    Attributes:
        relevant: bool ``[B, I]`` relevant items that can be hit (rankable).
        rankable: bool ``[B, I]`` items that take part in the ranking.
        forbidden: bool ``[B, I]`` items never drawn as negatives (invalid,
            excluded or relevant), whether or not the exclude set is masked.
        num_targets: int ``[B]`` relevant real items per user, masked ones
            included: the ``|rel|`` of the metric denominators (0 = skipped user).
        counts: ``repeat_target_users``, ``masked_target_users``, ``conflicts``
            and ``invalid_relevant`` of the batch.
    """

    relevant: np.ndarray
    rankable: np.ndarray
    forbidden: np.ndarray
    num_targets: np.ndarray
    counts: dict[str, int]


def relevance_masks(
    num_rows: int,
    num_items: int,
    relevant: IndexLists,
    exclude: IndexLists | None,
    invalid_items: tuple[int, ...],
    *,
    mask_exclude: bool = True,
) -> RelevanceMasks:
    """Builds the per-user masks shared by the full and sampled protocols.

    Args:
        num_rows: Batch size B.
        num_items: Catalogue size I.
        relevant: B integer arrays of relevant item indices.
        exclude: B integer arrays of excluded item indices, or None.
        invalid_items: Global indices that are never ranked.
        mask_exclude: Remove the ``exclude`` items from the ranking (a relevant
            item among them is then a miss). False keeps them rankable; they are
            still counted as repeats and never drawn as negatives.

    Returns:
        :class:`RelevanceMasks`.

    Raises:
        ValueError: Out-of-range indices or a wrong number of rows.
    """
    bad = [i for i in invalid_items if not 0 <= i < num_items]
    if bad:
        raise ValueError(f"invalid_items: indices {bad} out of range [0, {num_items})")
    raw = index_mask(relevant, num_rows, num_items, "relevant")
    excluded = index_mask(exclude, num_rows, num_items, "exclude")
    invalid = np.zeros(num_items, dtype=bool)
    invalid[list(invalid_items)] = True
    real = raw & ~invalid  # relevant items that are catalogue items: the denominators
    repeated = real & excluded
    rankable = np.tile(~invalid, (num_rows, 1))
    if mask_exclude:
        rankable &= ~excluded
    repeat_users = int(repeated.any(axis=1).sum())
    counts = {
        "repeat_target_users": repeat_users,
        "masked_target_users": repeat_users if mask_exclude else 0,
        "conflicts": int(repeated.sum()),
        "invalid_relevant": int((raw & invalid).sum()),
    }
    forbidden = raw | excluded | invalid
    return RelevanceMasks(real & rankable, rankable, forbidden, real.sum(axis=1), counts)
