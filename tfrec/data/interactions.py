"""The interaction-log container every loader returns and every split consumes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "timestamp", "rating")
ITEM_COLUMNS = ("item_id", "title", "genres")


class DataError(ValueError):
    """Bad input data; the message names the file, line or column and what was expected."""


@dataclasses.dataclass
class Interactions:
    """An interaction log plus optional item metadata.

    Attributes:
        frame: Columns ``user_id`` (str), ``item_id`` (str), ``timestamp``
            (int64; unix seconds, or the position in the user's sequence when the
            source has order but no time) and ``rating`` (float32, NaN if absent),
            sorted by ``(user_id, timestamp)`` with a stable sort.
        items: Optional item table: ``item_id`` (str), ``title`` (str),
            ``genres`` (list of str). May hold items absent from ``frame``.
        name: Dataset name, e.g. ``"ml-100k"``.
        has_ratings: Whether ``rating`` carries real values.
        has_timestamps: Whether ``timestamp`` is real time (else sequence order).
        notes: Human-readable record of every cleaning/filtering step applied
            since loading (what was dropped and how many), oldest first.
        users: Optional user table: ``user_id`` (str) plus source-specific
            feature columns (e.g. ``age``, ``gender``, ``occupation``, ``zip``).
    """

    frame: pd.DataFrame
    items: pd.DataFrame | None = None
    name: str = "interactions"
    has_ratings: bool = False
    has_timestamps: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)
    users: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.notes = list(self.notes)  # never share the list between copies
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataError(
                f"{self.name}: interactions frame lacks column(s) {missing}; "
                f"expected exactly {list(COLUMNS)}"
            )
        if self.items is not None:
            missing = [c for c in ITEM_COLUMNS if c not in self.items.columns]
            if missing:
                raise DataError(
                    f"{self.name}: item table lacks column(s) {missing}; "
                    f"expected {list(ITEM_COLUMNS)}"
                )
        if self.users is not None and "user_id" not in self.users.columns:
            raise DataError(f"{self.name}: user table lacks column 'user_id'")

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        items: pd.DataFrame | None = None,
        name: str = "interactions",
        has_ratings: bool | None = None,
        has_timestamps: bool = False,
        *,
        notes: Sequence[str] = (),
        users: pd.DataFrame | None = None,
    ) -> Interactions:
        """Normalises dtypes and sort order of a frame with the four columns.

        ``rating`` and ``timestamp`` may be missing: ratings become NaN and the
        timestamp becomes the row's position within its user (input order).
        """
        frame = frame.copy()
        if "rating" not in frame.columns:
            frame["rating"] = np.nan
        if "timestamp" not in frame.columns:
            frame["timestamp"] = frame.groupby("user_id", sort=False).cumcount()
        frame = frame[list(COLUMNS)]
        frame["user_id"] = frame["user_id"].astype(str)
        frame["item_id"] = frame["item_id"].astype(str)
        frame["timestamp"] = frame["timestamp"].astype(np.int64)
        frame["rating"] = frame["rating"].astype(np.float32)
        frame = frame.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
        if has_ratings is None:
            has_ratings = bool(frame["rating"].notna().any())
        return cls(frame, items, name, has_ratings, has_timestamps, list(notes), users)

    @property
    def num_users(self) -> int:
        """Distinct users in ``frame``."""
        return int(self.frame["user_id"].nunique())

    @property
    def num_items(self) -> int:
        """Distinct items in ``frame``."""
        return int(self.frame["item_id"].nunique())

    def __len__(self) -> int:
        return len(self.frame)

    def with_frame(self, frame: pd.DataFrame) -> Interactions:
        """Returns a copy sharing items/name/flags with a different frame."""
        return dataclasses.replace(self, frame=frame.reset_index(drop=True))

    def summary(self) -> str:
        """One line: rows, users, items, and which optional signals exist."""
        return (
            f"{self.name}: {len(self):,} interactions, {self.num_users:,} users, "
            f"{self.num_items:,} items, ratings={'yes' if self.has_ratings else 'no'}, "
            f"timestamps={'yes' if self.has_timestamps else 'order only'}, "
            f"item features={'yes' if self.items is not None else 'no'}"
        )

    def add_note(self, message: str) -> None:
        """Records a cleaning/filtering step in :attr:`notes` and logs it at INFO level."""
        self.notes.append(message)
        logger.info("%s: %s", self.name, message)

    def drop_exact_duplicates(self) -> Interactions:
        """Drops rows repeating an earlier row's (user_id, item_id, timestamp).

        The first occurrence is kept. Repeated (user, item) pairs at different
        times are kept (re-consumption is real signal). The number dropped is
        recorded with :meth:`add_note` when it is not zero.

        Returns:
            A new :class:`Interactions` (``self`` when nothing was dropped).
        """
        dup = self.frame.duplicated(["user_id", "item_id", "timestamp"], keep="first")
        count = int(dup.sum())
        if count == 0:
            return self
        out = self.with_frame(self.frame[~dup.to_numpy()])
        out.add_note(
            f"dropped {count:,} exact duplicate row(s) (same user_id, item_id, timestamp; "
            f"kept the first of each); {len(out):,} rows remain"
        )
        return out

    def filter_min_interactions(self, min_user: int = 0, min_item: int = 0) -> Interactions:
        """Iterative k-core filter: every user has >= min_user rows, every item >= min_item.

        Removing rare items can push users under the threshold and vice versa,
        so both filters repeat until nothing changes. Every pass that drops rows
        is recorded with :meth:`add_note`.

        Args:
            min_user: Minimum interactions per user (0 or 1 = no filter).
            min_item: Minimum interactions per item (0 or 1 = no filter).

        Returns:
            A new :class:`Interactions` (``self`` when nothing was dropped).

        Raises:
            ValueError: A negative threshold.
            DataError: The filter removed every row.
        """
        for arg, value in (("min_user", min_user), ("min_item", min_item)):
            if value < 0:
                raise ValueError(f"{arg} must be >= 0, got {value}")
        frame = self.frame
        out = self
        changed = True
        while changed:
            changed = False
            for column, minimum, label in (
                ("user_id", min_user, "user"),
                ("item_id", min_item, "item"),
            ):
                if minimum <= 1:
                    continue
                counts = frame.groupby(column, sort=False)[column].transform("size")
                keep = (counts >= minimum).to_numpy()
                if keep.all():
                    continue
                dropped_keys = frame.loc[~keep, column].nunique()
                frame = frame[keep]
                changed = True
                out = out.with_frame(frame)
                out.add_note(
                    f"k-core filter: dropped {int((~keep).sum()):,} row(s) of "
                    f"{dropped_keys:,} {label}(s) with fewer than {minimum} interactions; "
                    f"{len(frame):,} rows, {frame['user_id'].nunique():,} users, "
                    f"{frame['item_id'].nunique():,} items remain"
                )
        if len(out) == 0:
            raise DataError(
                f"{self.name}: min_user={min_user}, min_item={min_item} removed every "
                f"interaction; lower the thresholds"
            )
        return out

    def clean(self, min_user: int = 0, min_item: int = 0) -> Interactions:
        """The loaders' cleaning policy: drop exact duplicates, then k-core filter.

        Also notes interactions whose item is missing from the item table, and
        logs the number of catalogue items without interactions and a summary.

        Args:
            min_user: k-core threshold for users (0 = off).
            min_item: k-core threshold for items (0 = off).

        Returns:
            The cleaned interactions (see :meth:`drop_exact_duplicates` and
            :meth:`filter_min_interactions`).
        """
        out = self.drop_exact_duplicates().filter_min_interactions(min_user, min_item)
        if out.items is not None:
            known = set(out.items["item_id"])
            unknown = int((~out.frame["item_id"].isin(known)).sum())
            if unknown:
                out.add_note(
                    f"{unknown:,} interaction(s) refer to items absent from the item table"
                )
            cold = len(known - set(out.frame["item_id"]))
            if cold:
                logger.info("%s: %d catalogue item(s) have no interactions", out.name, cold)
        logger.debug("loaded %s", out.summary())
        return out


def concat_interactions(*parts: Interactions | None) -> Interactions:
    """Concatenates logs (e.g. split parts; None skipped) into one chronological log.

    The result keeps the first part's items, name and flags, and is sorted by
    ``(user_id, timestamp)`` with a stable sort (earlier parts first on ties).

    Raises:
        ValueError: No part given.
    """
    present = [p for p in parts if p is not None]
    if not present:
        raise ValueError("concat_interactions: expected at least one Interactions, got none")
    frame = pd.concat([p.frame for p in present], ignore_index=True)
    return present[0].with_frame(frame.sort_values(["user_id", "timestamp"], kind="stable"))
