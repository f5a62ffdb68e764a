"""The preparation transform, defined once, as pure functions over sorted user rows.

``tfrec prepare`` out of core (:mod:`tfrec.data.streaming_prepare`, DuckDB) and
the Apache Beam pipeline call these same functions; the engines only move data:
they deliver the rows of whole users, sorted by ``(user, timestamp, input
order)``, and combine the small per-chunk results. Every function takes numpy
arrays holding one or more complete users (contiguous) and returns numpy
arrays, so a chunk of many users is processed as fast as one.

Stages (each reproduces the in-memory path of :func:`tfrec.data.preparation.prepare`
exactly; ``tests/data/test_streaming_prepare.py`` checks it):

1. :func:`clean_rows`: sequence positions as timestamps when the source has no
   time, exact duplicates ``(user, item, timestamp)`` dropped (first kept),
   ``min_rating`` applied (the loader's and ``DataConfig.load``'s policy).
2. Vocabularies (:mod:`tfrec.data.prepare_vocab`): users in sorted id order;
   items in order of first appearance (then catalogue-only items), capped.
3. :func:`split_labels`: leave-one-out per user, or the temporal split with
   global cuts from :func:`temporal_cut_ranks` (the engine finds the timestamp
   at each rank).
4. :func:`chunk_examples`: the training and evaluation rows of
   :mod:`tfrec.data.sequences` for the users of the chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from tfrec.data.sequences import UserSequences, retrieval_examples
from tfrec.data.splits import check_temporal_fractions, cut_rank

if TYPE_CHECKING:
    from tfrec.data.preparation import PrepareConfig

TRAIN, VALID, TEST = 0, 1, 2
PART_NAMES = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """The global settings the per-user transform needs (the same on every worker).

    Attributes:
        protocol: ``"leave_one_out"`` or ``"temporal"``.
        validation: Whether a validation part is held out.
        max_len: History length ``L``.
        mode: Training rows: ``"all"`` (one per window) or ``"last"`` (one per target).
        extras: Add ``history_rating`` and ``history_dt``.
        test_cut: ``temporal``: rows with ``timestamp >= test_cut`` are test.
        valid_cut: ``temporal`` with validation: ``valid_cut <= timestamp < test_cut``.
    """

    protocol: Literal["leave_one_out", "temporal"]
    validation: bool
    max_len: int
    mode: Literal["all", "last"] = "all"
    extras: bool = True
    test_cut: int | None = None
    valid_cut: int | None = None

    @classmethod
    def from_config(
        cls, config: PrepareConfig, test_cut: int | None = None, valid_cut: int | None = None
    ) -> TransformSpec:
        """The spec of a ``tfrec prepare`` run (``config.data``: the split and validation).

        Args:
            config: The run's settings.
            test_cut: ``temporal``: the test cut, when known.
            valid_cut: ``temporal`` with validation: the validation cut, when known.
        """
        return cls(
            protocol=config.data.split,
            validation=config.data.valid_fraction > 0,
            max_len=config.max_len,
            mode=config.mode,
            extras=config.extras,
            test_cut=test_cut,
            valid_cut=valid_cut,
        )

    def parts(self) -> tuple[str, ...]:
        """The parts written: ``train``, ``valid`` (with validation) and ``test``."""
        return PART_NAMES if self.validation else (PART_NAMES[0], PART_NAMES[2])


def group_starts(keys: np.ndarray) -> np.ndarray:
    """int64 start index of each run of equal consecutive ``keys`` (rows sorted by user)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])).astype(np.int64)


def group_ids(keys: np.ndarray) -> np.ndarray:
    """0-based run number of each row (the user's rank within the chunk)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.cumsum(np.concatenate([[False], keys[1:] != keys[:-1]])).astype(np.int64)


@dataclasses.dataclass
class CleanStats:
    """Rows seen and dropped by :func:`clean_rows` (summed over chunks)."""

    rows: int = 0
    duplicates: int = 0
    below_min_rating: int = 0

    def add(self, other: CleanStats) -> None:
        """Adds another chunk's counts."""
        self.rows += other.rows
        self.duplicates += other.duplicates
        self.below_min_rating += other.below_min_rating

    def notes(self, min_rating: float | None, absent_from_items: int = 0) -> list[str]:
        """The loader's notes, in its order: duplicates, items absent from the item table, rating.

        Args:
            min_rating: The filter applied (None: no note).
            absent_from_items: Deduplicated rows whose item is not in the item table.
        """
        out = []
        deduplicated = self.rows - self.duplicates
        if self.duplicates:
            out.append(
                f"dropped {self.duplicates:,} exact duplicate row(s) (same user_id, item_id, "
                f"timestamp; kept the first of each); {deduplicated:,} rows remain"
            )
        if absent_from_items:
            out.append(
                f"{absent_from_items:,} interaction(s) refer to items absent from the item table"
            )
        if min_rating is not None:
            out.append(
                f"min_rating={min_rating}: dropped {self.below_min_rating} of {deduplicated} "
                "interactions below the threshold"
            )
        return out


def clean_rows(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    ratings: np.ndarray,
    *,
    has_timestamps: bool,
    min_rating: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, CleanStats]:
    """Positions for time-less data, exact duplicates and the ``min_rating`` filter.

    Args:
        users: Per row, a user key (any integer code), rows of a user contiguous.
        items: Per row, an item key (any integer code).
        times: int64 timestamps; rows of a user in ``(timestamp, input)`` order.
        ratings: float32 ratings (NaN when none).
        has_timestamps: False: ``times`` only orders rows; the timestamp becomes
            the row's position within its user (0, 1, ...), before any drop.
        min_rating: Keep rows with ``rating >= min_rating`` (None keeps all).

    Returns:
        ``(keep, times, duplicate, stats)``: bool mask of the rows kept, the
        timestamps (positions when ``has_timestamps`` is False), the mask of
        exact duplicates (for counts that come before the rating filter) and
        the counts.
    """
    n = len(users)
    times = np.asarray(times, dtype=np.int64)
    if not has_timestamps:
        starts = group_starts(users)
        sizes = np.diff(np.append(starts, n))
        times = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    order = np.lexsort((np.arange(n), items, times, users))
    same = np.zeros(n, dtype=bool)
    if n > 1:
        a, b = order[1:], order[:-1]
        same[1:] = (users[a] == users[b]) & (times[a] == times[b]) & (items[a] == items[b])
    duplicate = np.zeros(n, dtype=bool)
    duplicate[order] = same
    keep = ~duplicate
    below = 0
    if min_rating is not None:
        passes = np.asarray(ratings) >= min_rating  # NaN fails, as in DataConfig.load
        below = int((keep & ~passes).sum())
        keep &= passes
    stats = CleanStats(rows=n, duplicates=int(duplicate.sum()), below_min_rating=below)
    return keep, times, duplicate, stats


def temporal_cut_ranks(
    n: int, test_fraction: float, valid_fraction: float
) -> tuple[int | None, int | None]:
    """Ranks (0-based, in sorted timestamps) of the temporal split's cuts.

    The cut of a share ``f`` is the timestamp at rank ``n - round(f * n)``;
    ``None`` when nothing is held out (the cut is then ``max + 1``), as in
    :func:`tfrec.data.splits.temporal_split`.

    Returns:
        ``(test_rank, valid_rank)``; ``valid_rank`` is the test rank when
        ``valid_fraction`` is 0.

    Raises:
        ValueError: Fractions out of range.
    """
    check_temporal_fractions(test_fraction, valid_fraction)
    test = cut_rank(n, test_fraction)
    return test, cut_rank(n, test_fraction + valid_fraction) if valid_fraction > 0 else test


@dataclasses.dataclass
class SplitStats:
    """Per-part row counts and the users the split reports (summed over chunks).

    Attributes:
        rows: Rows per part index (train, valid, test).
        short_users: Leave-one-out: users with too few rows to hold any out.
        cold_users: Temporal: per part, users with rows there but none in train.
    """

    rows: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0])
    short_users: int = 0
    cold_users: list[int] = dataclasses.field(default_factory=lambda: [0, 0, 0])

    def add(self, other: SplitStats) -> None:
        """Adds another chunk's counts."""
        for part in range(3):
            self.rows[part] += other.rows[part]
            self.cold_users[part] += other.cold_users[part]
        self.short_users += other.short_users


def split_labels(
    users: np.ndarray, times: np.ndarray, spec: TransformSpec
) -> tuple[np.ndarray, SplitStats]:
    """The part of each row: :data:`TRAIN`, :data:`VALID` or :data:`TEST`.

    Leave-one-out: a user's last row is test, the one before valid (with
    validation); users with fewer than 3 (2) rows stay in train. Temporal:
    by the global cuts of ``spec``.

    Args:
        users: Per row, a user key; rows of a user contiguous, in time order.
        times: int64 timestamps.
        spec: The split settings.

    Returns:
        int8 labels and the chunk's :class:`SplitStats`.
    """
    n = len(users)
    labels = np.zeros(n, dtype=np.int8)
    stats = SplitStats()
    group = group_ids(users)
    if spec.protocol == "leave_one_out":
        starts = group_starts(users)
        sizes = np.diff(np.append(starts, n))
        need = 3 if spec.validation else 2
        size = np.repeat(sizes, sizes)
        from_end = np.repeat(starts + sizes, sizes) - 1 - np.arange(n)
        eligible = size >= need
        labels[eligible & (from_end == 0)] = TEST
        if spec.validation:
            labels[eligible & (from_end == 1)] = VALID
        stats.short_users = int((sizes < need).sum())
    else:
        if spec.test_cut is None or spec.valid_cut is None:
            raise ValueError("split_labels: the temporal protocol needs test_cut and valid_cut")
        labels[times >= spec.valid_cut] = VALID
        labels[times >= spec.test_cut] = TEST
        num_groups = int(group[-1]) + 1 if n else 0
        in_train = np.bincount(group[labels == TRAIN], minlength=num_groups) > 0
        for part in (VALID, TEST):
            present = np.bincount(group[labels == part], minlength=num_groups) > 0
            stats.cold_users[part] = int((present & ~in_train).sum())
    stats.rows = [int((labels == part).sum()) for part in (TRAIN, VALID, TEST)]
    return labels, stats


def _sequences(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, ratings: np.ndarray, mask: np.ndarray
) -> UserSequences:
    """:class:`UserSequences` of the masked rows (already in user, time order)."""
    users, items, times, ratings = users[mask], items[mask], times[mask], ratings[mask]
    starts = group_starts(users)
    bounds = starts[1:]
    return UserSequences(
        user_ids=[str(u) for u in users[starts].tolist()],
        users=users[starts].astype(np.int32),
        items=np.split(items.astype(np.int32), bounds),
        ratings=np.split(ratings.astype(np.float32), bounds),
        timestamps=np.split(times.astype(np.int64), bounds),
    )


def log_gaps(users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """float32 ``log1p`` seconds since the same user's previous row; 0 for a user's first row."""
    gaps = np.zeros(len(times), dtype=np.float64)
    if len(times) > 1:
        gaps[1:] = np.maximum(np.diff(np.asarray(times, dtype=np.int64)), 0)
    gaps[group_starts(users)] = 0.0
    return np.log1p(gaps).astype(np.float32)


def heldout_rows(  # noqa: PLR0917
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    ratings: np.ndarray,
    context: np.ndarray,
    heldout: np.ndarray,
    max_len: int,
    *,
    extras: bool,
) -> dict[str, np.ndarray]:
    """Evaluation rows, vectorised: :func:`~tfrec.data.sequences.heldout_examples` on flat rows.

    One row per held-out row (in row order); its history is the last
    ``max_len`` context rows of the same user, left-padded with 0 (all padding
    when the user has no context row); ``target`` is 0 but for column ``L - 1``.

    Args:
        users: User index per row (rows of a user contiguous, chronological).
        items: Item index per row.
        times: int64 timestamps.
        ratings: float32 ratings (NaN -> 0 in ``history_rating``).
        context: bool mask of the rows a model may condition on.
        heldout: bool mask of the held-out rows.
        max_len: ``L``.
        extras: Also ``history_rating`` and ``history_dt`` (over context rows).

    Returns:
        ``user``, ``history``, ``target`` (and the extras), like ``heldout_examples``.
    """
    group = group_ids(users)
    num_groups = int(group[-1]) + 1 if len(group) else 0
    ctx = np.flatnonzero(context)
    held = np.flatnonzero(heldout)
    count = np.bincount(group[ctx], minlength=num_groups)
    end = np.cumsum(count)[group[held]]  # exclusive end of the user's context rows
    length = np.minimum(count[group[held]], max_len)
    cols = np.arange(max_len)
    used = cols[None, :] >= max_len - length[:, None]
    index = np.where(used, end[:, None] - max_len + cols[None, :] + 1, 0)  # 0 = padding

    def gather(values: np.ndarray, dtype: type) -> np.ndarray:
        return np.concatenate([np.zeros(1, dtype=dtype), values.astype(dtype)])[index]

    target = np.zeros((len(held), max_len), dtype=np.int32)
    target[:, -1] = items[held]
    out = {
        "user": users[held].astype(np.int32),
        "history": gather(items[ctx], np.int32),
        "target": target,
    }
    if extras:
        out["history_rating"] = gather(np.nan_to_num(ratings[ctx], nan=0.0), np.float32)
        out["history_dt"] = gather(log_gaps(users[ctx], times[ctx]), np.float32)
    return out


def chunk_examples(
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    ratings: np.ndarray,
    labels: np.ndarray,
    *,
    spec: TransformSpec,
) -> dict[str, dict[str, np.ndarray]]:
    """Model rows of the users in a chunk, as :func:`~tfrec.data.preparation.prepare` makes them.

    ``train``: :func:`~tfrec.data.sequences.retrieval_examples` of the train
    rows; ``valid``: :func:`heldout_rows` with train as context; ``test``: with
    train + valid as context.

    Args:
        users: int32 user vocabulary index per row (rows of a user contiguous).
        items: int32 item vocabulary index per row.
        times: int64 timestamps.
        ratings: float32 ratings (NaN when none).
        labels: Part per row from :func:`split_labels`.
        spec: Lengths, mode and extras.

    Returns:
        Part name -> feature name -> array (parts of ``spec.parts()``).
    """
    ratings = np.asarray(ratings, dtype=np.float32)
    train = labels == TRAIN
    seqs = _sequences(users, items, times, ratings, train)
    out = {"train": retrieval_examples(seqs, spec.max_len, spec.mode, extras=spec.extras)}
    row_args = (users, items, times, ratings)
    if spec.validation:
        out["valid"] = heldout_rows(
            *row_args, train, labels == VALID, spec.max_len, extras=spec.extras
        )
    out["test"] = heldout_rows(
        *row_args, labels != TEST, labels == TEST, spec.max_len, extras=spec.extras
    )
    return out


def temporal_notes(
    stats: SplitStats,
    cuts: tuple[int, int],
    validation: bool,
    cold_items: Sequence[int],
) -> list[str]:
    """The notes :func:`tfrec.data.splits.temporal_split` writes, from summed counts.

    Args:
        stats: Summed :class:`SplitStats`.
        cuts: ``(test_cut, valid_cut)``.
        validation: Whether there is a validation part.
        cold_items: Per part index, items there but never in train.
    """
    test_cut, valid_cut = cuts
    notes = [f"temporal: test = timestamp >= {test_cut} ({stats.rows[TEST]:,} rows)"]
    if validation:
        notes.append(
            f"temporal: valid = {valid_cut} <= timestamp < {test_cut} ({stats.rows[VALID]:,} rows)"
        )
    for part in (VALID, TEST):
        label = PART_NAMES[part]
        if not stats.rows[part]:
            if part == TEST or validation:
                notes.append(f"temporal: the {label} part is empty (ties at the cut)")
            continue
        if stats.cold_users[part] or cold_items[part]:
            notes.append(
                f"temporal: {label} has {stats.cold_users[part]:,} user(s) and "
                f"{cold_items[part]:,} item(s) never seen in train (cold start)"
            )
    return notes


def leave_one_out_notes(stats: SplitStats, validation: bool) -> list[str]:
    """The note :func:`tfrec.data.splits.leave_one_out` writes, from summed counts."""
    if not stats.short_users:
        return []
    need = 3 if validation else 2
    return [
        f"leave_one_out: {stats.short_users:,} user(s) with fewer than {need} interactions "
        f"kept entirely in train (nothing held out for them)"
    ]
