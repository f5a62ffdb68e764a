"""``tfrec prepare``: load, split and write a dataset as model-ready files.

Output layout (built in a temporary sibling directory and renamed when
complete, so a failed run leaves nothing half-written)::

    <output_dir>/
      prepare_config.json   the PrepareConfig used
      summary.json          PrepareResult: rows/examples per part, vocab sizes, notes
      user_vocab.txt        IdVocabulary.save (index 2.. in line order)
      item_vocab.txt
      items.parquet         item_id, title, genres (when the dataset has items)
      interactions/{train,valid,test}.parquet   the split (held-out rows for evaluation)
      {train,valid,test}/   sharded TFRecords + spec.json (see tfrec.data.pipeline)

:func:`load_prepared` opens such a directory again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import tensorflow as tf

from tfrec.config import JsonConfig
from tfrec.data.interactions import Interactions
from tfrec.data.loaders import load_dataset
from tfrec.data.pipeline import tfrecord_dataset, write_tfrecords
from tfrec.data.sequences import heldout_examples, retrieval_examples, user_sequences
from tfrec.data.splits import Split, leave_one_out, random_split_per_user, temporal_split
from tfrec.data.vocab import IdVocabulary

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("leave_one_out", "temporal", "random")


@dataclasses.dataclass
class PrepareConfig(JsonConfig):
    """Settings of ``tfrec prepare`` (saved as ``prepare_config.json`` in the output).

    Attributes:
        dataset: A name from :data:`tfrec.data.loaders.DATASETS`.
        output_dir: Directory to create (written atomically).
        data_dir: Where dataset files are (else ``$TFREC_DATA_DIR``, else the cache).
        download: Fetch a missing MovieLens dataset (sha256-checked).
        path: ``csv`` only: the interactions file (CSV/TSV/Parquet).
        items_path: ``csv`` only: optional item-features file.
        user_col: ``csv`` only: user id column.
        item_col: ``csv`` only: item id column.
        time_col: ``csv`` only: optional timestamp column.
        rating_col: ``csv`` only: optional rating column.
        title_col: ``csv`` only: optional title column of ``items_path``.
        genres_col: ``csv`` only: optional genres column of ``items_path``.
        genres_sep: ``csv`` only: separator inside ``genres_col``.
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).
        split: ``leave_one_out``, ``temporal`` (global time cut) or ``random``
            (per-user stratified).
        test_fraction: ``temporal``: share of the latest rows for test.
        valid_fraction: ``leave_one_out``: hold out a validation item per user
            when > 0; ``temporal``: share of rows before the test cut;
            ``random``: per-user validation share.
        train_ratio: ``random``: per-user train share.
        seed: Seed of the random split (and of ``synthetic``).
        synthetic_users: ``synthetic`` only: number of users.
        synthetic_items: ``synthetic`` only: number of items.
        max_len: History length L of the examples.
        mode: Training examples: ``all`` (SASRec windows) or ``last``.
        extras: Add ``history_rating`` and ``history_dt`` (for the ranker).
        num_shards: TFRecord shards per part.
        overwrite: Replace an existing ``output_dir``.
    """

    dataset: str = "ml-100k"
    output_dir: str = ""
    data_dir: str | None = None
    download: bool = False
    path: str | None = None
    items_path: str | None = None
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str | None = None
    rating_col: str | None = None
    title_col: str | None = None
    genres_col: str | None = None
    genres_sep: str = "|"
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    split: Literal["leave_one_out", "temporal", "random"] = "leave_one_out"
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    train_ratio: float = 0.75
    seed: int = 42
    synthetic_users: int = 200
    synthetic_items: int = 60
    max_len: int = 50
    mode: Literal["all", "last"] = "all"
    extras: bool = True
    num_shards: int = 8
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.split not in SPLIT_CHOICES:
            raise ValueError(f"PrepareConfig.split={self.split!r}; expected one of {SPLIT_CHOICES}")
        if self.mode not in ("all", "last"):
            raise ValueError(f"PrepareConfig.mode={self.mode!r}; expected 'all' or 'last'")
        for name in ("max_len", "num_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"PrepareConfig.{name}={getattr(self, name)}; expected >= 1")

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~tfrec.data.loaders.load_dataset`."""
        kwargs: dict[str, Any] = {
            "min_user_interactions": self.min_user_interactions,
            "min_item_interactions": self.min_item_interactions,
        }
        if self.dataset == "csv":
            if not self.path:
                raise ValueError("PrepareConfig.path is required for dataset 'csv'")
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
        elif self.dataset == "synthetic":
            kwargs.update(
                num_users=self.synthetic_users, num_items=self.synthetic_items, seed=self.seed
            )
        return kwargs

    def make_split(self, data: Interactions) -> Split:
        """Splits ``data`` with the configured protocol."""
        if self.split == "leave_one_out":
            return leave_one_out(data, validation=self.valid_fraction > 0)
        if self.split == "temporal":
            return temporal_split(data, self.test_fraction, self.valid_fraction)
        return random_split_per_user(data, self.train_ratio, self.valid_fraction, self.seed)


@dataclasses.dataclass
class PrepareResult(JsonConfig):
    """What :func:`prepare` wrote (also saved as ``summary.json``).

    Attributes:
        output_dir: The created directory.
        name: Dataset name.
        protocol: Split protocol.
        has_ratings: Whether ratings are real.
        has_timestamps: Whether timestamps are real time.
        rows: Interactions per part.
        examples: TFRecord examples per part.
        user_vocab_size: Embedding rows for users (incl. padding and OOV).
        item_vocab_size: Embedding rows for items (incl. padding and OOV).
        notes: Cleaning and split reports.
    """

    output_dir: str
    name: str
    protocol: str
    has_ratings: bool
    has_timestamps: bool
    rows: dict[str, int]
    examples: dict[str, int]
    user_vocab_size: int
    item_vocab_size: int
    notes: list[str]


def _concat(parts: list[Interactions]) -> Interactions:
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return parts[0].with_frame(frame.sort_values(["user_id", "timestamp"], kind="stable"))


def prepare(config: PrepareConfig) -> PrepareResult:
    """Loads, splits and writes a dataset as model-ready files (``tfrec prepare``).

    Output layout (created in a temporary sibling and renamed when complete)::

        prepare_config.json  summary.json  user_vocab.txt  item_vocab.txt
        items.parquet                      (when the dataset has an item table)
        interactions/{train,valid,test}.parquet   held-out rows for evaluation
        {train,valid,test}/spec.json + part-*.tfrecord

    Vocabularies cover every user and item of the loaded data plus the item
    catalogue (the same rule as training). ``train`` examples come from
    :func:`~tfrec.data.sequences.retrieval_examples` (``config.mode``); ``valid``
    and ``test`` from :func:`~tfrec.data.sequences.heldout_examples` with
    train (train + valid for test) as context.

    Args:
        config: The settings.

    Returns:
        A :class:`PrepareResult` (also written as ``summary.json``).

    Raises:
        ValueError: No ``output_dir``, or it exists and ``overwrite`` is False.
        DatasetNotFoundError, DataError: From loading.
    """
    if not config.output_dir:
        raise ValueError("PrepareConfig.output_dir is required")
    out = Path(config.output_dir)
    if out.exists() and not config.overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it")
    logger.info("prepare: loading %s", config.dataset)
    data = load_dataset(
        config.dataset, data_dir=config.data_dir, download=config.download, **config.load_kwargs()
    )
    split = config.make_split(data)
    logger.info("prepare: %s", split.summary())
    user_vocab = IdVocabulary.from_ids(data.frame["user_id"], name="user")
    catalogue = [] if data.items is None else list(data.items["item_id"].astype(str))
    item_vocab = IdVocabulary.from_ids([*data.frame["item_id"], *catalogue], name="item")
    parts = split.parts()
    seqs = {name: user_sequences(part, user_vocab, item_vocab) for name, part in parts.items()}
    examples = {
        "train": retrieval_examples(
            seqs["train"], config.max_len, config.mode, extras=config.extras
        )
    }
    if "valid" in parts:
        examples["valid"] = heldout_examples(
            seqs["train"], seqs["valid"], config.max_len, extras=config.extras
        )
    context = _concat([split.train, split.valid]) if split.valid is not None else split.train
    context_seqs = user_sequences(context, user_vocab, item_vocab)
    examples["test"] = heldout_examples(
        context_seqs, seqs["test"], config.max_len, extras=config.extras
    )
    result = PrepareResult(
        output_dir=str(out),
        name=data.name,
        protocol=split.protocol,
        has_ratings=data.has_ratings,
        has_timestamps=data.has_timestamps,
        rows={name: len(part) for name, part in parts.items()},
        examples={name: len(ex["user"]) for name, ex in examples.items()},
        user_vocab_size=user_vocab.size,
        item_vocab_size=item_vocab.size,
        notes=[*data.notes, *split.notes],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        user_vocab.save(tmp / "user_vocab.txt")
        item_vocab.save(tmp / "item_vocab.txt")
        if data.items is not None:
            data.items[["item_id", "title", "genres"]].to_parquet(
                tmp / "items.parquet", index=False
            )
        (tmp / "interactions").mkdir()
        for name, part in parts.items():
            part.frame.to_parquet(tmp / "interactions" / f"{name}.parquet", index=False)
        for name, features in examples.items():
            if len(features["user"]) == 0:
                result.notes.append(f"prepare: no {name} examples; {name}/ not written")
                logger.warning("prepare: no %s examples; %s/ not written", name, name)
                continue
            logger.info("prepare: writing %d %s examples", len(features["user"]), name)
            write_tfrecords(features, tmp / name, num_shards=config.num_shards)
        config.save(tmp / "prepare_config.json")
        result.save(tmp / "summary.json")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("prepare: wrote %s (%s)", out, result.examples)
    return result


@dataclasses.dataclass
class PreparedData:
    """A directory written by :func:`prepare`, opened for training/evaluation.

    Attributes:
        directory: The prepared directory.
        config: The settings it was prepared with.
        summary: Its :class:`PrepareResult`.
        user_vocab: User vocabulary.
        item_vocab: Item vocabulary.
        items: Item table, or None.
        parts: ``train``/``valid``/``test`` interactions.
    """

    directory: Path
    config: PrepareConfig
    summary: PrepareResult
    user_vocab: IdVocabulary
    item_vocab: IdVocabulary
    items: pd.DataFrame | None
    parts: dict[str, Interactions]

    def dataset(self, part: str, batch_size: int, **kwargs: Any) -> tf.data.Dataset:
        """:func:`tfrecord_dataset` over ``<directory>/<part>``."""
        return tfrecord_dataset(self.directory / part, batch_size, **kwargs)


def load_prepared(directory: str | os.PathLike[str]) -> PreparedData:
    """Opens a directory written by :func:`prepare`.

    Raises:
        FileNotFoundError: ``summary.json`` missing (not a prepared directory).
    """
    directory = Path(directory)
    if not (directory / "summary.json").is_file():
        raise FileNotFoundError(
            f"{directory / 'summary.json'} not found; run `tfrec prepare` first"
        )
    summary = PrepareResult.load(directory / "summary.json")
    items_path = directory / "items.parquet"
    items = pd.read_parquet(items_path) if items_path.is_file() else None
    if items is not None:
        items["genres"] = [list(g) for g in items["genres"]]
    parts = {}
    for name in summary.rows:
        frame = pd.read_parquet(directory / "interactions" / f"{name}.parquet")
        parts[name] = Interactions.from_frame(
            frame,
            items=items,
            name=summary.name,
            has_ratings=summary.has_ratings,
            has_timestamps=summary.has_timestamps,
        )
    return PreparedData(
        directory=directory,
        config=PrepareConfig.load(directory / "prepare_config.json"),
        summary=summary,
        user_vocab=IdVocabulary.load(directory / "user_vocab.txt", name="user"),
        item_vocab=IdVocabulary.load(directory / "item_vocab.txt", name="item"),
        items=items,
        parts=parts,
    )
