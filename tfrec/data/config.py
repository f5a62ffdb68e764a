"""``DataConfig``: which dataset to load and how to split it (one definition for every tool).

``tfrec train``, ``tfrec prepare``, the notebooks and the benchmarks all describe
their data with this one typed config, saved inside their ``config.json``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tfrec.config import JsonConfig
from tfrec.data.interactions import Interactions
from tfrec.data.loaders import CSV_OPTIONS, check_distinct_columns, load_dataset
from tfrec.data.splits import (
    Split,
    item_stratified_split,
    leave_one_out,
    random_split_per_user,
    temporal_split,
)
from tfrec.names import DatasetName, SplitName

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class DataConfig(JsonConfig):
    """Which data to load and how to split it.

    Attributes:
        dataset: A name from :data:`tfrec.data.loaders.DATASETS`.
        data_dir: Where the files are (else ``$TFREC_DATA_DIR``, else the cache).
        download: Fetch MovieLens from GroupLens when missing (sha256-checked).
        path: ``csv``: the interactions file (CSV/TSV/Parquet); ``s3rec``: the
            ``user item1 item2 ...`` sequence file.
        items_path: ``csv`` only: optional item-features file.
        attributes_path: ``s3rec`` only: optional ``*_item2attributes.json``
            (item id -> attribute ids, read as the items' genres).
        user_col: ``csv`` only: user id column.
        item_col: ``csv`` only: item id column.
        time_col: ``csv`` only: optional timestamp column.
        rating_col: ``csv`` only: optional rating column.
        title_col: ``csv`` only: optional title column of ``items_path``.
        genres_col: ``csv`` only: optional genres column of ``items_path``.
        genres_sep: ``csv`` only: separator inside ``genres_col``.
        min_user_interactions: k-core threshold for users (0 = off; drops are reported).
        min_item_interactions: k-core threshold for items (0 = off).
        min_rating: Keep only interactions with rating >= this (implicit feedback
            from explicit ratings); None keeps all.
        split: ``leave_one_out`` (last item test, second-to-last validation),
            ``temporal`` (one global time cut), ``random`` (per-user random ratio) or
            ``item_stratified`` (per-item random ratio, the protocol of
            microsoft/recommenders' MovieLens table; test rows of users or items
            absent from train + valid are dropped).
        test_fraction: ``temporal``: share of the latest interactions for test.
        valid_fraction: Validation share. ``leave_one_out``: any value > 0 holds out
            the second-to-last item; ``temporal``: share of rows just before the
            test cut; ``random``: per-user share of ALL rows moved from train to
            validation (the test share stays ``1 - train_ratio``);
            ``item_stratified``: the same per item.
        train_ratio: ``random``/``item_stratified``: per-user/per-item share of
            train + validation (the microsoft/recommenders protocol uses 0.75).
        seed: Seed of the random split, of ``synthetic`` data and of the
            ``train_user_fraction`` sample.
        train_user_fraction: Train on the sequences of this seeded share of the
            users only (learning curves, few-shot adaptation); every user is
            still evaluated, with the full history as input. 1.0 = all users.
        synthetic_users: ``synthetic`` only: number of users.
        synthetic_items: ``synthetic`` only: number of items.
    """

    dataset: DatasetName = "synthetic"
    data_dir: str | None = None
    download: bool = False
    path: str | None = None
    items_path: str | None = None
    attributes_path: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = None
    rating_col: str | None = None
    title_col: str | None = None
    genres_col: str | None = None
    genres_sep: str = "|"
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    min_rating: float | None = None
    split: SplitName = "leave_one_out"
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    train_ratio: float = 0.75
    seed: int = 42
    train_user_fraction: float = 1.0
    synthetic_users: int = 300
    synthetic_items: int = 80

    def __post_init__(self) -> None:
        for name in ("test_fraction", "valid_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"DataConfig.{name}={value}; expected a number in [0, 1)")
        if not 0.0 < self.train_user_fraction <= 1.0:
            raise ValueError(
                f"DataConfig.train_user_fraction={self.train_user_fraction}; expected in (0, 1]"
            )
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"DataConfig.train_ratio={self.train_ratio}; expected in (0, 1)")
        if self.split in ("random", "item_stratified") and self.valid_fraction >= self.train_ratio:
            raise ValueError(
                f"DataConfig.valid_fraction={self.valid_fraction} must be below "
                f"train_ratio={self.train_ratio} (validation is carved from the train share)"
            )
        for name in ("min_user_interactions", "min_item_interactions"):
            if getattr(self, name) < 0:
                raise ValueError(f"DataConfig.{name}={getattr(self, name)}; expected >= 0")
        if self.dataset == "csv":
            columns = {name: getattr(self, name) for name in CSV_OPTIONS}
            check_distinct_columns(columns, CSV_OPTIONS)
        if self.attributes_path is not None and self.dataset != "s3rec":
            raise ValueError(
                f"DataConfig.attributes_path={self.attributes_path!r} is read only by dataset "
                f"'s3rec' (got dataset {self.dataset!r}); the beauty, sports and lastfm "
                "releases read their attribute file from beside their sequence file"
            )

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~tfrec.data.loaders.load_dataset`."""
        kwargs: dict[str, Any] = {
            "min_user_interactions": self.min_user_interactions,
            "min_item_interactions": self.min_item_interactions,
        }
        if self.dataset == "csv":
            if not self.path:
                raise ValueError("DataConfig.path is required for dataset 'csv' (--path FILE)")
            kwargs.update(
                path=self.path,
                user_col=self.user_col,
                item_col=self.item_col,
                time_col=self.time_col,
                rating_col=self.rating_col,
                items_path=self.items_path,
                title_col=self.title_col,
                genres_col=self.genres_col,
                genres_sep=self.genres_sep,
            )
        elif self.dataset == "s3rec":
            if not self.path:
                raise ValueError("DataConfig.path is required for dataset 's3rec' (--path FILE)")
            kwargs.update(path=self.path, attributes_path=self.attributes_path)
        elif self.dataset == "synthetic":
            kwargs.update(
                num_users=self.synthetic_users, num_items=self.synthetic_items, seed=self.seed
            )
        return kwargs

    def load(self) -> Interactions:
        """Loads the dataset and applies ``min_rating`` (reporting what it drops).

        Raises:
            ValueError: ``min_rating`` on a dataset without ratings.
            DatasetNotFoundError, DataError: From the loader.
        """
        data = load_dataset(
            self.dataset, data_dir=self.data_dir, download=self.download, **self.load_kwargs()
        )
        if self.min_rating is not None:
            if not data.has_ratings:
                raise ValueError(
                    f"DataConfig.min_rating={self.min_rating} but dataset {data.name!r} "
                    "has no ratings"
                )
            keep = data.frame["rating"].to_numpy() >= self.min_rating
            data.add_note(
                f"min_rating={self.min_rating}: dropped {int((~keep).sum())} of {len(keep)} "
                "interactions below the threshold"
            )
            data = data.with_frame(data.frame[keep])
        logger.info("%s", data.summary())
        return data

    def make_split(self, data: Interactions) -> Split:
        """Splits ``data`` with the configured protocol (notes are logged)."""
        if self.split == "leave_one_out":
            split = leave_one_out(data, validation=self.valid_fraction > 0)
        elif self.split == "temporal":
            split = temporal_split(
                data, test_fraction=self.test_fraction, valid_fraction=self.valid_fraction
            )
        elif self.split == "item_stratified":
            split = item_stratified_split(
                data, ratio=self.train_ratio, valid_ratio=self.valid_fraction, seed=self.seed
            )
        else:
            split = random_split_per_user(
                data,
                ratio=self.train_ratio - self.valid_fraction,
                valid_ratio=self.valid_fraction,
                seed=self.seed,
            )
        for note in split.notes:
            logger.info("split: %s", note)
        logger.info("%s", split.summary())
        return split
