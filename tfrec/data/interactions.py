"""The interaction-log container every loader returns and every split consumes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

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
    """

    frame: pd.DataFrame
    items: pd.DataFrame | None = None
    name: str = "interactions"
    has_ratings: bool = False
    has_timestamps: bool = False

    def __post_init__(self) -> None:
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

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        items: pd.DataFrame | None = None,
        name: str = "interactions",
        has_ratings: bool | None = None,
        has_timestamps: bool = False,
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
        return cls(frame, items, name, has_ratings, has_timestamps)

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
