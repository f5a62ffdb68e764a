"""Train/validation/test splits of an interaction log.

Every split is deterministic (the random one is seeded), keeps each part sorted
by ``(user_id, timestamp)`` like :class:`Interactions` itself, puts each row in
exactly one part, and reports (``logging.info`` plus :attr:`Split.notes`) the
users it could not split, e.g. users with too few interactions.

* :func:`leave_one_out`: per user, the last interaction is the test target and
  the one before it the validation target (the sequential-recommendation protocol
  of SASRec/BERT4Rec).
* :func:`temporal_split`: one global time cut; the most recent rows are held out.
* :func:`random_split_per_user`: per-user stratified random split, like
  ``python_stratified_split`` of microsoft/recommenders.
* :func:`item_stratified_split`: per-item stratified random split, the protocol
  of microsoft/recommenders' MovieLens benchmark table
  (``python_stratified_split(filter_by="item")``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from tfrec.data.interactions import Interactions

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Split:
    """The parts of a split.

    Attributes:
        train: Training interactions.
        valid: Validation interactions, or None when the split made none.
        test: Test interactions.
        protocol: ``"leave_one_out"``, ``"temporal"``, ``"random_per_user"`` or
            ``"item_stratified"``.
        notes: What the split could not do (users left unsplit, cold users...),
            with counts.
    """

    train: Interactions
    valid: Interactions | None
    test: Interactions
    protocol: str
    notes: list[str] = dataclasses.field(default_factory=list)

    def parts(self) -> dict[str, Interactions]:
        """The non-None parts by name: ``train``, ``valid`` (if any), ``test``."""
        out = {"train": self.train, "valid": self.valid, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}

    def summary(self) -> str:
        """One line with the size of each part."""
        sizes = ", ".join(
            f"{name} {len(part):,} rows/{part.num_users:,} users"
            for name, part in self.parts().items()
        )
        return f"{self.protocol} split of {self.train.name}: {sizes}"


def _report(notes: list[str], name: str, message: str) -> None:
    notes.append(message)
    logger.info("%s: %s", name, message)


def _sorted(interactions: Interactions) -> pd.DataFrame:
    """The frame in (user_id, timestamp) stable order with a fresh 0..n-1 index."""
    frame = interactions.frame.sort_values(["user_id", "timestamp"], kind="stable")
    return frame.reset_index(drop=True)


def _part(interactions: Interactions, frame: pd.DataFrame, mask: np.ndarray) -> Interactions:
    return interactions.with_frame(frame[mask])


def leave_one_out(interactions: Interactions, validation: bool = True) -> Split:
    """Per user: last interaction -> test, second to last -> valid, the rest -> train.

    "Last" is by timestamp with ties broken by input order (stable). Users with
    fewer than 3 interactions (2 when ``validation=False``) keep all of them in
    train and are reported.

    Args:
        interactions: The log to split.
        validation: Whether to hold out a validation interaction per user.

    Returns:
        A :class:`Split` with ``protocol="leave_one_out"`` (``valid`` None when
        ``validation`` is False).
    """
    frame = _sorted(interactions)
    by_user = frame.groupby("user_id", sort=False)
    size = by_user["user_id"].transform("size").to_numpy()
    from_end = by_user.cumcount(ascending=False).to_numpy()
    need = 3 if validation else 2
    eligible = size >= need
    test = eligible & (from_end == 0)
    valid = eligible & (from_end == 1) if validation else np.zeros(len(frame), dtype=bool)
    notes: list[str] = []
    short = frame.loc[~eligible, "user_id"].nunique()
    if short:
        _report(
            notes,
            interactions.name,
            f"leave_one_out: {short:,} user(s) with fewer than {need} interactions kept "
            f"entirely in train (nothing held out for them)",
        )
    return Split(
        train=_part(interactions, frame, ~(test | valid)),
        valid=_part(interactions, frame, valid) if validation else None,
        test=_part(interactions, frame, test),
        protocol="leave_one_out",
        notes=notes,
    )


def cut_rank(n: int, fraction: float) -> int | None:
    """The rank (0-based, in sorted timestamps) where the latest ``fraction`` of n rows starts.

    ``n - round(fraction * n)``, at least 0; None when ``round(fraction * n)`` is 0
    (nothing is held out).
    """
    held = round(fraction * n)
    return max(n - held, 0) if held > 0 else None


def check_temporal_fractions(test_fraction: float, valid_fraction: float) -> None:
    """Checks the shares of a temporal split.

    Raises:
        ValueError: ``test_fraction`` outside (0, 1) or ``valid_fraction`` outside
            [0, 1 - test_fraction).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= valid_fraction < 1 - test_fraction:
        raise ValueError(
            f"valid_fraction must be in [0, 1 - test_fraction = {1 - test_fraction:g}), "
            f"got {valid_fraction}"
        )


def _cut(sorted_times: np.ndarray, fraction: float) -> int:
    """The timestamp from which the most recent ``fraction`` of rows starts."""
    rank = cut_rank(len(sorted_times), fraction)
    return int(sorted_times[rank]) if rank is not None else int(sorted_times[-1]) + 1


def temporal_split(
    interactions: Interactions, test_fraction: float = 0.2, valid_fraction: float = 0.0
) -> Split:
    """One global time cut: the most recent rows are test (and before them valid).

    The cut is a timestamp: every row at or after it is held out, so rows
    sharing a timestamp never straddle the cut and the held-out share can be a
    little above the requested fraction. Users and items that appear in a
    held-out part but not in train (cold start) are reported.

    Args:
        interactions: The log to split; needs real timestamps.
        test_fraction: Share of rows (by time) for test, in (0, 1).
        valid_fraction: Share of rows just before the test cut for validation,
            in [0, 1 - test_fraction); 0 means no validation part.

    Returns:
        A :class:`Split` with ``protocol="temporal"``.

    Raises:
        ValueError: Fractions out of range, timestamps that are only sequence
            positions, or a cut that leaves no training rows.
    """
    check_temporal_fractions(test_fraction, valid_fraction)
    if not interactions.has_timestamps:
        raise ValueError(
            f"temporal_split: {interactions.name} has no real timestamps (only sequence "
            f"positions), so a global time cut is meaningless; use leave_one_out"
        )
    frame = _sorted(interactions)
    times = frame["timestamp"].to_numpy()
    ordered = np.sort(times, kind="stable")
    test_cut = _cut(ordered, test_fraction)
    valid_cut = _cut(ordered, test_fraction + valid_fraction) if valid_fraction > 0 else test_cut
    test = times >= test_cut
    valid = (times >= valid_cut) & ~test
    train = ~(test | valid)
    if not train.any():
        raise ValueError(
            f"temporal_split: the cut at timestamp {min(valid_cut, test_cut)} leaves no "
            f"training rows in {interactions.name}; lower test_fraction/valid_fraction"
        )
    notes: list[str] = []
    name = interactions.name
    _report(notes, name, f"temporal: test = timestamp >= {test_cut} ({int(test.sum()):,} rows)")
    if valid_fraction > 0:
        _report(
            notes,
            name,
            f"temporal: valid = {valid_cut} <= timestamp < {test_cut} ({int(valid.sum()):,} rows)",
        )
    train_users = set(frame.loc[train, "user_id"])
    train_items = set(frame.loc[train, "item_id"])
    for label, mask in (("valid", valid), ("test", test)):
        if not mask.any():
            if label == "test" or valid_fraction > 0:
                _report(notes, name, f"temporal: the {label} part is empty (ties at the cut)")
            continue
        cold_users = set(frame.loc[mask, "user_id"]) - train_users
        cold_items = set(frame.loc[mask, "item_id"]) - train_items
        if cold_users or cold_items:
            _report(
                notes,
                name,
                f"temporal: {label} has {len(cold_users):,} user(s) and {len(cold_items):,} "
                f"item(s) never seen in train (cold start)",
            )
    return Split(
        train=_part(interactions, frame, train),
        valid=_part(interactions, frame, valid) if valid_fraction > 0 else None,
        test=_part(interactions, frame, test),
        protocol="temporal",
        notes=notes,
    )


def random_split_per_user(
    interactions: Interactions, ratio: float = 0.75, valid_ratio: float = 0.0, seed: int = 42
) -> Split:
    """Stratified random split: each user's rows are shuffled and cut by ratio.

    Per user, like ``python_stratified_split(filter_by="user")`` of
    microsoft/recommenders, but with its own cut rule: a user with ``n`` rows
    (shuffled with ``seed``) puts the first ``round(ratio * n)`` in train, the
    next ``round((ratio + valid_ratio) * n) - round(ratio * n)`` in valid and the
    rest in test (``round`` halves to even, as Python's; microsoft's rule keeps
    ``floor(ratio * n)`` and is what :func:`item_stratified_split` follows). Users
    left with no test row (too few interactions) are reported.

    Args:
        interactions: The log to split.
        ratio: Train share per user, in (0, 1).
        valid_ratio: Validation share per user, in [0, 1 - ratio); 0 = no valid part.
        seed: Shuffle seed; equal seeds give equal splits.

    Returns:
        A :class:`Split` with ``protocol="random_per_user"``.

    Raises:
        ValueError: Ratios out of range.
    """
    _check_ratios(ratio, valid_ratio, f"[0, 1 - ratio = {1 - ratio:g})", 1 - ratio)
    frame = _sorted(interactions)
    order = np.random.default_rng(seed).permutation(len(frame))
    shuffled = frame.iloc[order]
    users = shuffled["user_id"]
    rank = np.empty(len(frame), dtype=np.int64)
    size = np.empty(len(frame), dtype=np.int64)
    rank[order] = users.groupby(users, sort=False).cumcount().to_numpy()
    size[order] = users.groupby(users, sort=False).transform("size").to_numpy()
    train_end = np.rint(ratio * size)
    valid_end = np.rint((ratio + valid_ratio) * size)
    train = rank < train_end
    valid = (rank >= train_end) & (rank < valid_end)
    test = rank >= valid_end
    notes: list[str] = []
    no_test = frame.loc[valid_end >= size, "user_id"].nunique()
    if no_test:
        _report(
            notes,
            interactions.name,
            f"random_per_user: {no_test:,} user(s) have too few interactions for a test row "
            f"(round({ratio + valid_ratio:g} * n) = n); all their rows are in train/valid",
        )
    return Split(
        train=_part(interactions, frame, train),
        valid=_part(interactions, frame, valid) if valid_ratio > 0 else None,
        test=_part(interactions, frame, test),
        protocol="random_per_user",
        notes=notes,
    )


def _check_ratios(ratio: float, valid_ratio: float, valid_range: str, valid_max: float) -> None:
    """Raises ValueError unless 0 < ratio < 1 and 0 <= valid_ratio < valid_max."""
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if not 0 <= valid_ratio < valid_max:
        raise ValueError(f"valid_ratio must be in {valid_range}, got {valid_ratio}")


def _drop_unknown(
    frame: pd.DataFrame, part: np.ndarray, known: np.ndarray
) -> tuple[np.ndarray, int, int, int]:
    """Removes from ``part`` the rows whose user or item never occurs in ``known`` rows.

    Returns:
        The reduced mask, the rows dropped, and the distinct users and items
        among the dropped rows that are unknown.
    """
    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    new_user = part & ~np.isin(users, np.unique(users[known]))
    new_item = part & ~np.isin(items, np.unique(items[known]))
    cold = new_user | new_item
    return part & ~cold, int(cold.sum()), len(set(users[new_user])), len(set(items[new_item]))


def item_stratified_split(
    interactions: Interactions, ratio: float = 0.75, valid_ratio: float = 0.0, seed: int = 42
) -> Split:
    """Stratified random split per ITEM: each item's rows are shuffled and cut by ratio.

    The semantics of microsoft/recommenders' ``python_stratified_split(data,
    ratio, filter_by="item", seed)`` (their MovieLens benchmark table): each row
    gets a seeded uniform random key; within an item with ``n`` rows, ordered by
    key, the row at 1-based position ``r`` goes to test when ``r / n > ratio``
    (float64 comparison, as theirs), so an item keeps ``floor(ratio * n)`` rows
    and an item rated once is test-only. Validation is carved out of the kept
    rows the same way: ``ratio - valid_ratio < r / n <= ratio`` is valid, so the
    test rows do not depend on ``valid_ratio``. The keys are drawn in the frame's
    ``(user_id, timestamp)`` order, so the protocol is theirs but not the same
    rows (their keys follow the file order).

    Then, as their benchmark evaluates: test rows whose user or item never
    occurs in train + valid are dropped (the model cannot know them), and valid
    rows whose user or item is not in train; both drops are reported.

    Args:
        interactions: The log to split.
        ratio: Share of each item's rows kept for train + valid, in (0, 1).
        valid_ratio: Share of each item's rows moved from train to validation,
            in [0, ratio); 0 = no valid part.
        seed: Seed of the random keys; equal seeds give equal splits.

    Returns:
        A :class:`Split` with ``protocol="item_stratified"``.

    Raises:
        ValueError: Ratios out of range.
    """
    _check_ratios(ratio, valid_ratio, f"[0, ratio = {ratio:g})", ratio)
    frame = _sorted(interactions)
    num_rows = len(frame)
    keys = np.random.default_rng(seed).random(num_rows)
    codes = pd.factorize(frame["item_id"])[0]
    order = np.lexsort((keys, codes))  # by item, then by random key
    ranked = pd.Series(codes[order])
    position = np.empty(num_rows, dtype=np.int64)
    size = np.empty(num_rows, dtype=np.int64)
    position[order] = ranked.groupby(ranked, sort=False).cumcount().to_numpy() + 1
    size[order] = ranked.groupby(ranked, sort=False).transform("size").to_numpy()
    share = position / size  # r / n in (0, 1]
    test = share > ratio
    valid = ~test & (share > ratio - valid_ratio) if valid_ratio > 0 else np.zeros_like(test)
    train = ~(test | valid)
    notes: list[str] = []
    name = interactions.name
    single = int((test & (size == 1)).sum())
    if single:
        _report(notes, name, f"item_stratified: {single:,} item(s) with one rating are test-only")
    kept = {"valid": valid}
    for label, mask in (("valid", valid), ("test", test)):
        known = train if label == "valid" else train | kept["valid"]
        kept[label], rows, users, items = _drop_unknown(frame, mask, known)
        if rows:
            context = "train" if label == "valid" else "train + valid"
            _report(
                notes,
                name,
                f"item_stratified: dropped {rows:,} {label} row(s) of {users:,} user(s) and "
                f"{items:,} item(s) absent from {context}",
            )
    return Split(
        train=_part(interactions, frame, train),
        valid=_part(interactions, frame, kept["valid"]) if valid_ratio > 0 else None,
        test=_part(interactions, frame, kept["test"]),
        protocol="item_stratified",
        notes=notes,
    )
