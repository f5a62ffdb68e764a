"""Per-user item sequences and fixed-length model inputs (numpy only).

Follows the model input contract of ``docs/architecture.md``: item and user
indices come from :class:`~tfrec.data.vocab.IdVocabulary` (0 = padding,
1 = unknown), histories are **left-padded** with 0 and oldest first, so column
``L - 1`` holds the most recent item, and ``target[b, t]`` is the item that
followed ``history[b, :t + 1]`` (0 where there is no target).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from tfrec.data.interactions import Interactions
from tfrec.data.vocab import IdVocabulary

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class UserSequences:
    """Each user's interactions as chronological index arrays.

    Attributes:
        user_ids: String id per user, in order of first appearance in the frame.
        users: int32 ``[U]`` user indices (1 for ids unknown to the vocabulary).
        items: Per user, int32 item indices, oldest first (1 = unknown item).
        ratings: Per user, float32 ratings aligned with ``items`` (NaN if none).
        timestamps: Per user, int64 timestamps aligned with ``items``.
    """

    user_ids: list[str]
    users: np.ndarray
    items: list[np.ndarray]
    ratings: list[np.ndarray]
    timestamps: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)

    def lengths(self) -> np.ndarray:
        """int64 ``[U]`` sequence lengths."""
        return np.asarray([len(s) for s in self.items], dtype=np.int64)

    def sample_users(self, fraction: float, seed: int) -> UserSequences:
        """The sequences of a seeded share of the users (order kept).

        Args:
            fraction: Share of users kept, in (0, 1]; at least one user is kept.
            seed: Seed of the draw (the same seed and fraction keep the same users,
                and a larger fraction keeps a superset of a smaller one's users).

        Returns:
            ``self`` when ``fraction == 1``, else a new :class:`UserSequences`.

        Raises:
            ValueError: ``fraction`` outside (0, 1].
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"sample_users: fraction={fraction}; expected in (0, 1]")
        if fraction == 1.0:
            return self
        # One uniform draw per user: keeping draws < fraction nests the samples.
        draws = np.random.default_rng(seed).random(len(self))
        keep = np.flatnonzero(draws < fraction)
        if len(keep) == 0:
            keep = np.array([int(np.argmin(draws))])
        return UserSequences(
            user_ids=[self.user_ids[i] for i in keep],
            users=self.users[keep],
            items=[self.items[i] for i in keep],
            ratings=[self.ratings[i] for i in keep],
            timestamps=[self.timestamps[i] for i in keep],
        )


def user_sequences(
    interactions: Interactions, user_vocab: IdVocabulary, item_vocab: IdVocabulary
) -> UserSequences:
    """Groups interactions per user into chronological index arrays.

    Rows of a user are ordered by timestamp, ties in frame order (stable).

    Args:
        interactions: The log.
        user_vocab: Maps user ids to indices (unknown -> 1).
        item_vocab: Maps item ids to indices (unknown -> 1).

    Returns:
        A :class:`UserSequences` with one entry per distinct user.
    """
    frame = interactions.frame
    codes, uniques = pd.factorize(frame["user_id"], sort=False)
    times = frame["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((times, codes))  # stable: ties keep frame order
    counts = np.bincount(codes, minlength=len(uniques))
    bounds = np.cumsum(counts)[:-1]
    items = item_vocab.lookup(frame["item_id"].to_numpy()[order])
    ratings = frame["rating"].to_numpy(dtype=np.float32)[order]
    user_ids = [str(u) for u in uniques]
    return UserSequences(
        user_ids=user_ids,
        users=user_vocab.lookup(user_ids).astype(np.int32),
        items=np.split(items, bounds),
        ratings=np.split(ratings, bounds),
        timestamps=np.split(times[order], bounds),
    )


def _flatten(arrays: Sequence[np.ndarray], dtype: type) -> np.ndarray:
    if not arrays:
        return np.zeros(0, dtype=dtype)
    return np.concatenate([np.asarray(a, dtype=dtype) for a in arrays])


def _log_gaps(timestamps: Sequence[np.ndarray], starts: np.ndarray) -> np.ndarray:
    """float32 log1p(seconds since the previous event of the same user); 0 for first events."""
    flat = _flatten(timestamps, np.int64)
    gaps = np.zeros(len(flat), dtype=np.float64)
    gaps[1:] = np.maximum(np.diff(flat), 0)
    gaps[starts[starts < len(flat)]] = 0.0
    return np.log1p(gaps).astype(np.float32)


def retrieval_examples(
    seqs: UserSequences,
    max_len: int,
    mode: Literal["all", "last"] = "all",
    *,
    extras: bool = False,
    target_mask: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Builds fixed-length training/evaluation rows from user sequences.

    ``mode="all"`` (SASRec style): one row per window of a user's sequence ``s``;
    ``history = s[:-1]`` and ``target = s[1:]``, aligned, left-padded. A sequence
    with more than ``max_len`` targets is cut into several windows from the end
    (the latest window is full, the earliest may be padded), so no target is lost.

    ``mode="last"``: one row per target position ``t >= 1``; ``history`` holds the
    ``max_len`` items before ``s[t]`` and ``target`` is 0 except column ``L - 1``
    which holds ``s[t]``.

    Rows are ordered by user, then chronologically. Users with fewer than two
    interactions yield no rows.

    Args:
        seqs: From :func:`user_sequences`.
        max_len: ``L``, the history length (>= 1).
        mode: ``"all"`` or ``"last"``.
        extras: Also return per-history-event ``history_rating`` (NaN -> 0) and
            ``history_dt`` (log1p seconds since the user's previous event; 0 for
            the first event and for padding), for the ranker.
        target_mask: ``"last"`` mode only: per user, a bool array aligned with
            ``seqs.items``; only positions marked True become targets (e.g. the
            held-out events of a split, with the earlier events as history).

    Returns:
        ``user`` int32 ``[N]``, ``history`` int32 ``[N, L]``, ``target`` int32
        ``[N, L]`` and, with ``extras``, ``history_rating`` and ``history_dt``
        float32 ``[N, L]``.

    Raises:
        ValueError: ``max_len < 1``, an unknown mode, or a misaligned ``target_mask``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if mode not in ("all", "last"):
        raise ValueError(f"mode must be 'all' or 'last', got {mode!r}")
    if target_mask is not None and mode != "last":
        raise ValueError("target_mask is only supported with mode='last'")
    lengths = seqs.lengths()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # Slot 0 of every padded flat array is a padding sentinel: cell index 0 = padding.
    flat = np.concatenate([[0], _flatten(seqs.items, np.int32)]).astype(np.int32)
    if mode == "all":
        row_user, hist_index, target = _window_rows(lengths, starts, flat, max_len)
    else:
        has_target = np.repeat(starts, lengths) != np.arange(len(flat) - 1)  # t >= 1
        if target_mask is not None:
            if len(target_mask) != len(seqs) or any(
                len(m) != n for m, n in zip(target_mask, lengths, strict=True)
            ):
                raise ValueError(
                    "target_mask must hold one bool array per user, aligned with items"
                )
            has_target &= _flatten(target_mask, bool)
        row_user, hist_index, target = _last_target_rows(lengths, starts, flat, max_len, has_target)
    out = {
        "user": seqs.users[row_user].astype(np.int32),
        "history": flat[hist_index].reshape(-1, max_len),
        "target": target.astype(np.int32).reshape(-1, max_len),
    }
    if extras:
        ratings = np.nan_to_num(_flatten(seqs.ratings, np.float32), nan=0.0)
        gaps = _log_gaps(seqs.timestamps, starts)
        zero = np.zeros(1, dtype=np.float32)
        out["history_rating"] = np.concatenate([zero, ratings])[hist_index].reshape(-1, max_len)
        out["history_dt"] = np.concatenate([zero, gaps])[hist_index].reshape(-1, max_len)
    return out


def _window_rows(
    lengths: np.ndarray, starts: np.ndarray, flat: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mode="all"`` rows: each sequence cut into windows of ``max_len`` targets from the end.

    Args:
        lengths: ``[U]`` sequence lengths.
        starts: ``[U]`` offset of each sequence in the flattened items.
        flat: The flattened items after a padding sentinel at index 0.
        max_len: ``L``.

    Returns:
        ``row_user`` ``[N]`` (the user of each row), ``hist_index`` ``[N, L]``
        (index into ``flat`` of each history cell, 0 = padding) and ``target``
        ``[N, L]`` (the item following each history cell, 0 where none).
    """
    cols = np.arange(max_len)
    windows = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)
    row_user = np.repeat(np.arange(len(lengths)), windows)
    # window rank counted from the latest: earliest window first in the output
    first_row = np.concatenate([[0], np.cumsum(windows)[:-1]]).astype(np.int64)
    from_latest = windows[row_user] - 1 - (np.arange(len(row_user)) - first_row[row_user])
    top = lengths[row_user] - from_latest * max_len  # exclusive end of the window's targets
    pos = top[:, None] - max_len + cols[None, :]  # target position per cell  [N, L]
    # flat index + 1 of the history event s[pos - 1]; 0 (sentinel) where pos < 1
    hist_index = np.where(pos >= 1, starts[row_user][:, None] + pos, 0)
    target = flat[np.where(pos >= 1, hist_index + 1, 0)]
    return row_user, hist_index, target


def _last_target_rows(
    lengths: np.ndarray,
    starts: np.ndarray,
    flat: np.ndarray,
    max_len: int,
    has_target: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mode="last"`` rows: one per flattened position marked in ``has_target``.

    Args:
        lengths: See :func:`_window_rows`.
        starts: See :func:`_window_rows`.
        flat: See :func:`_window_rows`.
        max_len: ``L``.
        has_target: bool, one per flattened item (``len(flat) - 1``).

    Returns:
        ``row_user``, ``hist_index`` and ``target`` as in :func:`_window_rows`;
        ``target`` holds the item in column ``L - 1`` only.
    """
    cols = np.arange(max_len)
    flat_t = np.nonzero(has_target)[0]
    row_user = np.repeat(np.arange(len(lengths)), lengths)[flat_t]
    local_t = flat_t - starts[row_user]
    hist_pos = local_t[:, None] - max_len + cols[None, :]  # [N, L]
    hist_index = np.where(hist_pos >= 0, flat_t[:, None] - max_len + cols[None, :] + 1, 0)
    target = np.zeros((len(flat_t), max_len), dtype=np.int32)
    target[:, -1] = flat[flat_t + 1]
    return row_user, hist_index, target


def interaction_pairs(seqs: UserSequences) -> dict[str, np.ndarray]:
    """One (user, item) training row per interaction, for ID-only retrieval.

    Unlike :func:`retrieval_examples`, every interaction is a target, the first
    item of each user included, and a user with a single interaction yields one
    row: the ID-only two-tower (``RetrievalConfig.encoder="none"``) queries with
    the user embedding alone, so no history has to precede a target. Unknown
    items (index 1) are kept, as in :func:`retrieval_examples`; the loss skips
    targets <= 1. There is no ``history`` feature (the ID-only model does not read it).

    Args:
        seqs: From :func:`user_sequences`.

    Returns:
        ``user`` int32 ``[N]`` and ``target`` int32 ``[N, 1]``, N = number of
        interactions, ordered by user (as in ``seqs``), then chronologically.
    """
    lengths = seqs.lengths()
    return {
        "user": np.repeat(seqs.users, lengths).astype(np.int32),
        "target": _flatten(seqs.items, np.int32).reshape(-1, 1),
    }


def heldout_examples(
    context: UserSequences, heldout: UserSequences, max_len: int, *, extras: bool = False
) -> dict[str, np.ndarray]:
    """Evaluation rows: one per held-out event, with the user's context as history.

    Every held-out event of a user shares the same history: the last
    ``max_len`` items of that user's ``context`` sequence (what a model may see,
    e.g. train, or train + valid for test). ``target`` is 0 except column
    ``L - 1``, which holds the held-out item, as in ``mode="last"``. Users
    absent from ``context`` get an all-padding history (kept, not dropped).

    Args:
        context: Sequences the model may condition on.
        heldout: Sequences of the held-out part (same vocabularies).
        max_len: ``L`` (>= 1).
        extras: Also return ``history_rating`` and ``history_dt`` (see
            :func:`retrieval_examples`), computed on the context events.

    Returns:
        ``user`` int32 ``[N]``, ``history`` and ``target`` int32 ``[N, L]`` (and
        the extras), N = number of held-out events, in ``heldout`` order.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    position = {u: i for i, u in enumerate(context.user_ids)}
    empty_i = np.zeros(0, dtype=np.int32)
    rows = [position.get(u, -1) for u in heldout.user_ids]
    counts = heldout.lengths()

    def context_matrix(arrays: Sequence[np.ndarray], dtype: type) -> np.ndarray:
        lists = [arrays[r] if r >= 0 else empty_i for r in rows]
        out = np.zeros((len(lists), max_len), dtype=dtype)
        for i, seq in enumerate(lists):
            tail = np.asarray(seq[-max_len:], dtype=dtype)
            if len(tail):
                out[i, max_len - len(tail) :] = tail
        return np.repeat(out, counts, axis=0)

    target = np.zeros((int(counts.sum()), max_len), dtype=np.int32)
    target[:, -1] = _flatten(heldout.items, np.int32)
    out = {
        "user": np.repeat(heldout.users, counts).astype(np.int32),
        "history": context_matrix(context.items, np.int32),
        "target": target,
    }
    if extras:
        lengths = context.lengths()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        gaps = np.split(_log_gaps(context.timestamps, starts), np.cumsum(lengths)[:-1])
        ratings = [np.nan_to_num(r, nan=0.0) for r in context.ratings]
        out["history_rating"] = context_matrix(ratings, np.float32)
        out["history_dt"] = context_matrix(gaps, np.float32)
    return out


def _as_lists(seqs_or_lists: UserSequences | Sequence[Sequence[int]]) -> list[np.ndarray]:
    if isinstance(seqs_or_lists, UserSequences):
        return list(seqs_or_lists.items)
    return [np.asarray(s, dtype=np.int32).reshape(-1) for s in seqs_or_lists]


def history_matrix(
    seqs_or_lists: UserSequences | Sequence[Sequence[int]], max_len: int
) -> np.ndarray:
    """The last ``max_len`` items of each sequence, left-padded with 0.

    Args:
        seqs_or_lists: :class:`UserSequences` or one item-index sequence per user.
        max_len: ``L`` (>= 1).

    Returns:
        int32 ``[U, L]``; row ``u`` ends with user ``u``'s most recent item.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    lists = _as_lists(seqs_or_lists)
    out = np.zeros((len(lists), max_len), dtype=np.int32)
    for row, seq in enumerate(lists):
        tail = seq[-max_len:]
        if len(tail):
            out[row, max_len - len(tail) :] = tail
    return out


def seen_items(seqs_or_lists: UserSequences | Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Every distinct item index each user interacted with (for masking at evaluation).

    Args:
        seqs_or_lists: :class:`UserSequences` or one item-index sequence per user.

    Returns:
        Per user, a sorted int32 array of distinct item indices (padding 0 excluded).
    """
    out = []
    for seq in _as_lists(seqs_or_lists):
        unique = np.unique(seq)
        out.append(unique[unique != 0].astype(np.int32))
    return out
