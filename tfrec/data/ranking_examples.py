"""Ranking examples: (user, recent history with event signals, target item) per event.

One example per *target* event. Its history is the user's most recent
``max_history`` *context* events before it, left-padded with 0 (oldest first,
position ``L - 1`` = most recent), as in the model input contract of
``docs/architecture.md``. Per history event the example also carries:

* ``history_rating``: the rating of that event (0 for padding and for sources
  without ratings);
* ``history_log_dt``: ``log1p(seconds since the user's previous context
  event)`` (0 for the user's first event and for padding).

"Before" means: when the targets are the context itself (training), the rows
before the target in the user's time-sorted sequence; when the targets come
from another split (validation/test), the user's context events with
``timestamp <= target timestamp``. Events are never their own history.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from tfrec.data.interactions import DataError, Interactions
from tfrec.data.negatives import sample_negatives
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary


@dataclasses.dataclass
class RankingExamples:
    """Integer ranking examples (numpy), one row per target event.

    Attributes:
        user: int32 ``[N]`` user index (1 = unknown user).
        history: int32 ``[N, L]`` item indices, left-padded with 0.
        history_rating: float32 ``[N, L]`` rating of each history event (0 = none).
        history_log_dt: float32 ``[N, L]`` log1p seconds since the previous event.
        item: int32 ``[N]`` target item index.
        rating: float32 ``[N]`` target rating (NaN without ratings).
        context_items: int32 ``[M]`` item index of every context event, grouped
            by user and time-sorted; ``context_items[start[n]:end[n]]`` is example
            ``n``'s full history (used to exclude seen items in evaluation).
        start: int64 ``[N]`` first context row of the example's user.
        end: int64 ``[N]`` one past the last context row before the target.
        user_end: int64 ``[N]`` one past the last context row of the example's user.
    """

    user: np.ndarray
    history: np.ndarray
    history_rating: np.ndarray
    history_log_dt: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    context_items: np.ndarray
    start: np.ndarray
    end: np.ndarray
    user_end: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    @property
    def max_history(self) -> int:
        """History length L."""
        return int(self.history.shape[1])

    def take(self, index: np.ndarray) -> RankingExamples:
        """Returns the examples at ``index`` (rows), sharing ``context_items``."""
        return dataclasses.replace(
            self,
            user=self.user[index],
            history=self.history[index],
            history_rating=self.history_rating[index],
            history_log_dt=self.history_log_dt[index],
            item=self.item[index],
            rating=self.rating[index],
            start=self.start[index],
            end=self.end[index],
            user_end=self.user_end[index],
        )

    def seen_items(self, rows: np.ndarray | slice | None = None) -> list[np.ndarray]:
        """Full context history (item indices) of each selected example."""
        starts, ends = self.start, self.end
        if rows is not None:
            starts, ends = starts[rows], ends[rows]
        return [self.context_items[s:e] for s, e in zip(starts, ends, strict=True)]

    def user_items(self) -> list[np.ndarray]:
        """Every context item of each example's user (past and future), for exclusions."""
        return [self.context_items[s:e] for s, e in zip(self.start, self.user_end, strict=True)]

    def features(self) -> dict[str, np.ndarray]:
        """Model features without candidates: user, history and event signals."""
        return {
            "user": self.user,
            "history": self.history,
            "history_rating": self.history_rating,
            "history_log_dt": self.history_log_dt,
        }


def _time_sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def _user_starts(codes: np.ndarray) -> np.ndarray:
    """Index of the first row of each row's user block (``codes`` grouped)."""
    first = np.r_[True, codes[1:] != codes[:-1]]
    return np.maximum.accumulate(np.where(first, np.arange(len(codes)), 0))


def _user_block_ends(codes: np.ndarray, start: np.ndarray) -> np.ndarray:
    """One past the last row of the user block that begins at each ``start``."""
    if not len(codes):
        return start.copy()
    block_starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    block_stops = np.r_[block_starts[1:], len(codes)].astype(np.int64)
    return block_stops[np.searchsorted(block_starts, start, side="right") - 1]


@dataclasses.dataclass(frozen=True)
class _ContextRows:
    """Per-row arrays of the time-sorted context events.

    Attributes:
        codes: ``[M]`` user codes, increasing with the sorted user ids.
        starts: ``[M]`` index of the first row of each row's user block.
        timestamps: int64 ``[M]`` event times.
        items: int32 ``[M]`` item indices.
        ratings: float32 ``[M]`` ratings (0 without one).
        log_dt: float32 ``[M]`` log1p seconds since the user's previous event (0 for the first).
    """

    codes: np.ndarray
    starts: np.ndarray
    timestamps: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    log_dt: np.ndarray

    @classmethod
    def from_frame(cls, ctx: pd.DataFrame, item_vocab: IdVocabulary) -> _ContextRows:
        """Reads a frame sorted by (user, timestamp)."""
        codes, _ = pd.factorize(ctx["user_id"].to_numpy(), sort=True)
        starts = _user_starts(codes)
        ts = ctx["timestamp"].to_numpy(dtype=np.int64)
        rows = np.arange(len(ctx))
        dt = np.where(rows > starts, ts - np.r_[ts[:1], ts[:-1]], 0).clip(min=0)
        return cls(
            codes=codes,
            starts=starts,
            timestamps=ts,
            items=item_vocab.lookup(ctx["item_id"].to_numpy()),
            ratings=np.nan_to_num(ctx["rating"].to_numpy(dtype=np.float32), nan=0.0),
            log_dt=np.log1p(dt.astype(np.float64)).astype(np.float32),
        )


def _target_bounds(
    target: pd.DataFrame, ctx: pd.DataFrame, rows: _ContextRows
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context rows of each target from another split: its user's, up to its timestamp.

    Returns:
        int64 ``[N]`` ``start`` (the user's first context row), ``end`` (one past
        the user's last context row at or before the target's timestamp) and
        ``user_end`` (one past the user's last context row); all 0 for users
        without context.
    """
    ts = rows.timestamps
    # Position of each target in the context's (user, timestamp) order.
    user_index = {u: i for i, u in enumerate(pd.unique(ctx["user_id"].to_numpy()))}
    t_codes = np.array([user_index.get(u, -1) for u in target["user_id"]], dtype=np.int64)
    t_ts = target["timestamp"].to_numpy(dtype=np.int64)
    t_min = min(int(ts.min()) if len(ts) else 0, int(t_ts.min()) if len(t_ts) else 0)
    ckey = (rows.codes.astype(np.int64) << 33) + (ts - t_min)
    tkey = (t_codes << 33) + (t_ts - t_min)
    end = np.searchsorted(ckey, tkey, side="right").astype(np.int64)
    start = np.searchsorted(ckey, t_codes << 33, side="left").astype(np.int64)
    unknown = t_codes < 0
    end[unknown] = 0
    start[unknown] = 0
    user_end = _user_block_ends(rows.codes, start)
    return start, end, np.where(unknown, 0, user_end)  # users without context: empty


def _gather_history(
    rows: _ContextRows, start: np.ndarray, end: np.ndarray, max_history: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``max_history`` context rows before ``end`` (not before ``start``), left-padded.

    Returns:
        ``[N, L]`` item indices (int32), ratings and log gaps (float32); 0 for padding.
    """
    items, ratings, log_dt = rows.items, rows.ratings, rows.log_dt
    idx = end[:, None] - max_history + np.arange(max_history)[None, :]
    valid = idx >= start[:, None]
    safe = idx.clip(min=0)
    if len(items) == 0:
        safe = np.zeros_like(safe)
        items, ratings, log_dt = (np.zeros(1, a.dtype) for a in (items, ratings, log_dt))
    return (
        np.where(valid, items[safe], 0).astype(np.int32),
        np.where(valid, ratings[safe], 0.0).astype(np.float32),
        np.where(valid, log_dt[safe], 0.0).astype(np.float32),
    )


def build_ranking_examples(
    events: Interactions,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    max_history: int,
    *,
    context: Interactions | None = None,
    min_history: int = 0,
) -> RankingExamples:
    """Builds one ranking example per event of ``events``.

    Args:
        events: Target events (e.g. a split's ``train`` or ``test``).
        user_vocab: User vocabulary (unknown users map to 1).
        item_vocab: Item vocabulary (unknown items map to 1).
        max_history: History length L (>= 1).
        context: Events the histories are taken from; None means ``events``
            itself (each event's history = the user's earlier events).
        min_history: Drop examples with fewer real history events than this.

    Returns:
        The examples, in the time-sorted order of ``events``.

    Raises:
        ValueError: ``max_history < 1`` or ``min_history < 0``.
        DataError: Interactions with a missing column.
    """
    if max_history < 1:
        raise ValueError(f"max_history: expected >= 1, got {max_history}")
    if min_history < 0:
        raise ValueError(f"min_history: expected >= 0, got {min_history}")
    target = _time_sorted(events.frame)
    ctx = target if context is None else _time_sorted(context.frame)
    for frame, name in ((target, events.name), (ctx, "context")):
        if frame["timestamp"].isna().any():
            raise DataError(f"{name}: column 'timestamp' has missing values")
    rows = _ContextRows.from_frame(ctx, item_vocab)
    if context is None:
        end = np.arange(len(ctx), dtype=np.int64)
        start = rows.starts.astype(np.int64)
        user_end = _user_block_ends(rows.codes, start)
    else:
        start, end, user_end = _target_bounds(target, ctx, rows)
    history, history_rating, history_log_dt = _gather_history(rows, start, end, max_history)
    examples = RankingExamples(
        user=user_vocab.lookup(target["user_id"].to_numpy()),
        history=history,
        history_rating=history_rating,
        history_log_dt=history_log_dt,
        item=item_vocab.lookup(target["item_id"].to_numpy()),
        rating=target["rating"].to_numpy(dtype=np.float32),
        context_items=rows.items.astype(np.int32),
        start=start,
        end=end,
        user_end=user_end.astype(np.int64),
    )
    if min_history > 0:
        examples = examples.take(np.flatnonzero(end - start >= min_history))
    return examples


def rating_features(examples: RankingExamples) -> dict[str, np.ndarray]:
    """Rating-objective features: one candidate (the rated item), label = its rating."""
    features = examples.features()
    features["candidates"] = examples.item[:, None]  # [N, 1]
    features["labels"] = np.nan_to_num(examples.rating, nan=0.0)[:, None].astype(np.float32)
    return features


def list_features(examples: RankingExamples, negatives: np.ndarray) -> dict[str, np.ndarray]:
    """Candidate lists ``[negatives..., positive]`` with 0/1 labels."""
    features = examples.features()
    features["candidates"] = np.concatenate([negatives, examples.item[:, None]], axis=1)
    labels = np.zeros(features["candidates"].shape, np.float32)
    labels[:, -1] = 1.0
    features["labels"] = labels
    return features


def eval_lists(
    examples: RankingExamples, num_items: int, num_negatives: int, seed: int
) -> dict[str, np.ndarray]:
    """Fixed evaluation lists: the true item (last) plus uniform negatives (seeded).

    Examples whose true item is out of the vocabulary (index 1) cannot be listed
    and are left out.
    """
    examples = examples.take(np.flatnonzero(examples.item >= NUM_RESERVED))
    rng = np.random.default_rng([seed, 7])
    negatives = sample_negatives("uniform", examples.item, num_negatives, num_items, rng)
    return list_features(examples, negatives)
