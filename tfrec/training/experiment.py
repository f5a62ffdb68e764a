"""Experiment configuration shared by the retrieval and ranking runners.

An experiment is data (which dataset, which split) + a model config +
evaluation settings. The whole thing is one typed :class:`~tfrec.config.JsonConfig`
saved as ``config.json`` beside every trained model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import pandas as pd

from tfrec.config import JsonConfig
from tfrec.data.interactions import Interactions
from tfrec.data.loaders import load_dataset
from tfrec.data.sequences import history_matrix, seen_items, user_sequences
from tfrec.data.splits import Split, leave_one_out, random_split_per_user, temporal_split
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation.metrics import DEFAULT_KS

logger = logging.getLogger(__name__)

SPLITS = ("leave_one_out", "temporal", "random")


@dataclasses.dataclass
class DataConfig(JsonConfig):
    """Which data to load and how to split it.

    Attributes:
        dataset: A name from :data:`tfrec.data.loaders.DATASETS`.
        data_dir: Where the files are (else ``$TFREC_DATA_DIR``, else the cache).
        download: Fetch MovieLens from GroupLens when missing (sha256-checked).
        path: ``csv`` only: the interactions file (CSV/TSV/Parquet).
        items_path: ``csv`` only: optional item-features file.
        user_col: ``csv`` only: user id column.
        item_col: ``csv`` only: item id column.
        time_col: ``csv`` only: optional timestamp column.
        rating_col: ``csv`` only: optional rating column.
        min_rating: Keep only interactions with rating >= this (implicit feedback
            from explicit ratings); None keeps all.
        split: ``leave_one_out`` (last item test, second-to-last validation),
            ``temporal`` (global time cut) or ``random`` (per-user random ratio).
        test_fraction: ``temporal``: share of the latest interactions for test.
        valid_fraction: ``temporal``/``random``: share used for validation.
        train_ratio: ``random``: per-user share kept for train (+ validation).
        seed: Seed of the random split.
        synthetic_users: ``synthetic`` only: number of users.
        synthetic_items: ``synthetic`` only: number of items.
    """

    dataset: str = "synthetic"
    data_dir: str | None = None
    download: bool = False
    path: str | None = None
    items_path: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = None
    rating_col: str | None = None
    min_rating: float | None = None
    split: Literal["leave_one_out", "temporal", "random"] = "leave_one_out"
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    train_ratio: float = 0.75
    seed: int = 42
    synthetic_users: int = 300
    synthetic_items: int = 80

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"DataConfig.split={self.split!r}; expected one of {SPLITS}")
        for name in ("test_fraction", "valid_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"DataConfig.{name}={value}; expected a number in [0, 1)")
        if not 0.0 < self.train_ratio < 1.0:
            raise ValueError(f"DataConfig.train_ratio={self.train_ratio}; expected in (0, 1)")

    def load(self) -> Interactions:
        """Loads the dataset (applying ``min_rating``)."""
        kwargs: dict[str, Any] = {}
        if self.dataset == "csv":
            if self.path is None:
                raise ValueError("DataConfig.path is required for dataset 'csv'")
            kwargs = {
                "path": self.path,
                "user_col": self.user_col,
                "item_col": self.item_col,
                "time_col": self.time_col,
                "rating_col": self.rating_col,
                "items_path": self.items_path,
            }
        elif self.dataset == "synthetic":
            kwargs = {
                "num_users": self.synthetic_users,
                "num_items": self.synthetic_items,
                "seed": self.seed,
            }
        data = load_dataset(self.dataset, data_dir=self.data_dir, download=self.download, **kwargs)
        if self.min_rating is not None:
            if not data.has_ratings:
                raise ValueError(
                    f"DataConfig.min_rating={self.min_rating} but dataset {data.name!r} "
                    "has no ratings"
                )
            keep = data.frame["rating"].to_numpy() >= self.min_rating
            logger.info(
                "min_rating=%s: kept %d of %d interactions (dropped %d below the threshold)",
                self.min_rating,
                int(keep.sum()),
                len(keep),
                int((~keep).sum()),
            )
            data = data.with_frame(data.frame[keep])
        logger.info("%s", data.summary())
        return data

    def make_split(self, data: Interactions) -> Split:
        """Splits ``data`` with the configured protocol."""
        if self.split == "leave_one_out":
            split = leave_one_out(data, validation=self.valid_fraction > 0)
        elif self.split == "temporal":
            split = temporal_split(
                data, test_fraction=self.test_fraction, valid_fraction=self.valid_fraction
            )
        else:
            split = random_split_per_user(
                data,
                ratio=self.train_ratio,
                valid_ratio=self.valid_fraction * self.train_ratio,
                seed=self.seed,
            )
        for note in split.notes:
            logger.info("split: %s", note)
        logger.info("%s", split.summary())
        return split


@dataclasses.dataclass
class EvalConfig(JsonConfig):
    """How models are evaluated (full ranking over the whole catalogue).

    Attributes:
        ks: Cutoffs K.
        mask_history: Remove each user's already-seen items from the ranking.
        report_unmasked: Also report the metrics without masking (``<part>_unmasked/``).
        sampled_negatives: If > 0, also report the sampled protocol with this many
            negatives per user (``<part>_sampled/``).
        sampled_strategy: ``uniform`` or ``popularity`` negatives.
        batch_size: Users scored per batch.
    """

    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    mask_history: bool = True
    report_unmasked: bool = False
    sampled_negatives: int = 0
    sampled_strategy: Literal["uniform", "popularity"] = "uniform"
    batch_size: int = 512

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"EvalConfig.ks={self.ks}; expected positive integers")
        if self.sampled_negatives < 0:
            raise ValueError(
                f"EvalConfig.sampled_negatives={self.sampled_negatives}; expected >= 0"
            )
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size={self.batch_size}; expected >= 1")


@dataclasses.dataclass
class EvalQueries:
    """Evaluation queries for one split part.

    Attributes:
        user_ids: String id per query user.
        users: int32 ``[Q]`` user indices.
        history: int32 ``[Q, L]`` left-padded history (context before the part).
        relevant: Per query, the part's item indices.
        seen: Per query, every item index of the context (for masking).
    """

    user_ids: list[str]
    users: np.ndarray
    history: np.ndarray
    relevant: list[np.ndarray]
    seen: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)


def build_vocabularies(data: Interactions) -> tuple[IdVocabulary, IdVocabulary]:
    """User and item vocabularies over the whole dataset (and item catalogue).

    The catalogue is known at training time, so every item (including those only
    in the item table, i.e. cold-start items) gets an index and is ranked.
    """
    user_vocab = IdVocabulary.from_ids(data.frame["user_id"], name="user")
    item_ids = list(data.frame["item_id"])
    if data.items is not None:
        item_ids += list(data.items["item_id"].astype(str))
    item_vocab = IdVocabulary.from_ids(item_ids, name="item")
    return user_vocab, item_vocab


def concat_parts(*parts: Interactions | None) -> Interactions:
    """Concatenates split parts (None skipped) into one chronological log."""
    present = [p for p in parts if p is not None]
    frame = pd.concat([p.frame for p in present], ignore_index=True)
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    return present[0].with_frame(frame)


def eval_queries(
    context: Interactions,
    part: Interactions,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    max_len: int,
) -> EvalQueries:
    """Queries for evaluating on ``part`` given the interactions before it.

    Args:
        context: What the model may see (train, or train + valid for test).
        part: The held-out interactions; each of its users is one query.
        user_vocab: User vocabulary.
        item_vocab: Item vocabulary.
        max_len: History length L.

    Returns:
        :class:`EvalQueries`; users of ``part`` absent from ``context`` get an
        empty history (they are kept, not dropped).
    """
    ctx = user_sequences(context, user_vocab, item_vocab)
    position = {u: i for i, u in enumerate(ctx.user_ids)}
    held = user_sequences(part, user_vocab, item_vocab)
    empty = np.zeros(0, dtype=np.int32)
    lists = [ctx.items[position[u]] if u in position else empty for u in held.user_ids]
    return EvalQueries(
        user_ids=held.user_ids,
        users=held.users,
        history=history_matrix(lists, max_len),
        relevant=[np.unique(items) for items in held.items],
        seen=seen_items(lists),
    )
