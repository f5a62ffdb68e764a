"""``tfrec prepare``: load, split and write a dataset as model-ready files.

Two engines write the same files: ``pandas`` loads the whole log in memory
(any dataset, any split); ``duckdb`` streams CSV/Parquet files larger than
memory (:mod:`tfrec.data.streaming_prepare`; leave-one-out and temporal
splits). ``auto`` picks ``duckdb`` for ``--dataset csv`` when it can.

Output layout (built in a temporary sibling directory and renamed when
complete, so a failed run leaves nothing half-written)::

    <output_dir>/
      prepare_config.json   the PrepareConfig used
      summary.json          PrepareResult: rows/examples per part, vocab sizes, notes
      user_vocab.txt        IdVocabulary.save (index 2.. in line order)
      item_vocab.txt
      items.parquet         item_id, title, genres (when the dataset has items)
      interactions/{train,valid,test}.parquet   the split (held-out rows for evaluation)
      {train,valid,test}/   sharded TFRecords + spec.json (see tfrec.data.tfdata)

:func:`load_prepared` opens such a directory again.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import tensorflow as tf

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.prepare_vocab import cap_vocabulary, vocab_report
from tfrec.data.sequences import heldout_examples, retrieval_examples, user_sequences
from tfrec.data.tfdata import tfrecord_dataset, write_tfrecords
from tfrec.data.vocab import IdVocabulary, build_vocabularies

logger = logging.getLogger(__name__)

ENGINES = ("auto", "pandas", "duckdb")
STREAMING_SPLITS = ("leave_one_out", "temporal")


@dataclasses.dataclass
class PrepareConfig(JsonConfig):
    """Settings of ``tfrec prepare`` (saved as ``prepare_config.json`` in the output).

    Attributes:
        data: Which dataset and split (the same :class:`DataConfig` training uses).
        output_dir: Directory to create (written atomically).
        max_len: History length L of the examples.
        mode: Training examples: ``all`` (SASRec windows) or ``last``.
        extras: Add ``history_rating`` and ``history_dt`` (for the ranker).
        num_shards: TFRecord shards per part.
        overwrite: Replace an existing ``output_dir``.
        engine: ``pandas`` (in memory), ``duckdb`` (out of core, csv/parquet
            files) or ``auto`` (see :func:`choose_engine`).
        min_item_count: Items with fewer interactions map to the OOV index 1
            (0 = no minimum).
        max_items: Keep only the most frequent items in the vocabulary, the
            rest map to OOV (0 = no cap).
        memory_limit: ``duckdb``: the engine's memory budget for sorting, e.g.
            ``2GB`` (it spills to disk beyond it).
        batch_rows: ``duckdb``: rows per streamed batch (the bounded buffer).
    """

    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(dataset="ml-100k"))
    output_dir: str = ""
    max_len: int = 50
    mode: Literal["all", "last"] = "all"
    extras: bool = True
    num_shards: int = 8
    overwrite: bool = False
    engine: Literal["auto", "pandas", "duckdb"] = "auto"
    min_item_count: int = 0
    max_items: int = 0
    memory_limit: str = "2GB"
    batch_rows: int = 262_144

    def __post_init__(self) -> None:
        if self.mode not in ("all", "last"):
            raise ValueError(f"PrepareConfig.mode={self.mode!r}; expected 'all' or 'last'")
        if self.engine not in ENGINES:
            raise ValueError(f"PrepareConfig.engine={self.engine!r}; expected one of {ENGINES}")
        for name in ("max_len", "num_shards", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"PrepareConfig.{name}={getattr(self, name)}; expected >= 1")
        for name in ("min_item_count", "max_items"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"PrepareConfig.{name}={getattr(self, name)}; expected >= 0 (0 = no cap)"
                )


#: The layout ``tfrec prepare`` writes (summary, vocabularies, interactions, shards); a
#: reader refuses directories of another version instead of misreading them.
PREPARED_FORMAT = 1


def _tfrec_version() -> str:
    from tfrec import __version__  # noqa: PLC0415  (tfrec/__init__ imports this package)

    return __version__


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
        engine: The engine that wrote the directory.
        oov_item_ids: Item ids the vocabulary caps mapped to OOV.
        oov_interactions: Interactions whose item maps to OOV.
        format_version: The directory layout's version (:data:`PREPARED_FORMAT`;
            a ``summary.json`` without the field is version 1).
        tfrec_version: The tfrec that wrote it ("" before the field existed).
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
    engine: str = "pandas"
    oov_item_ids: int = 0
    oov_interactions: int = 0
    format_version: int = PREPARED_FORMAT
    tfrec_version: str = dataclasses.field(default_factory=_tfrec_version)


def check_prepared_format(directory: Path, summary: dict[str, Any]) -> None:
    """Refuses a ``summary.json`` of another layout version, naming both versions.

    Raises:
        ValueError: ``format_version`` differs from :data:`PREPARED_FORMAT`.
    """
    version = summary.get("format_version", 1)
    if version != PREPARED_FORMAT:
        writer = summary.get("tfrec_version") or "an unknown tfrec version"
        raise ValueError(
            f"{directory}: prepared with layout version {version} (by tfrec {writer}); this "
            f"tfrec ({_tfrec_version()}) reads version {PREPARED_FORMAT}: run `tfrec prepare` "
            "again with this version"
        )


def choose_engine(config: PrepareConfig) -> tuple[str, str]:
    """The engine ``config.engine`` resolves to, and why.

    ``auto`` is ``duckdb`` for ``--dataset csv`` (files of any size) unless the
    settings need the whole log in memory (the random split, k-core filters)
    or DuckDB is not installed; ``pandas`` for the built-in datasets.
    """
    if config.engine != "auto":
        return config.engine, "requested"
    data = config.data
    if data.dataset != "csv":
        return "pandas", f"dataset {data.dataset!r} is loaded in memory by its loader"
    if data.split not in STREAMING_SPLITS:
        return "pandas", f"the {data.split} split needs the whole log in memory"
    if data.min_user_interactions or data.min_item_interactions:
        return "pandas", "k-core filtering iterates over the whole log"
    if importlib.util.find_spec("duckdb") is None:
        return "pandas", "duckdb is not installed"
    return "duckdb", "csv/parquet input, streamed out of core"


def capped_item_vocabulary(
    item_vocab: IdVocabulary, item_ids: pd.Series, config: PrepareConfig
) -> tuple[IdVocabulary, list[str], tuple[int, int]]:
    """Applies ``min_item_count``/``max_items`` to an in-memory item vocabulary.

    Returns:
        The (possibly) capped vocabulary, its note (empty without caps) and
        ``(oov_item_ids, oov_interactions)``.
    """
    if not (config.min_item_count or config.max_items):
        return item_vocab, [], (0, 0)
    counts = item_ids.value_counts().reindex(item_vocab.tokens, fill_value=0).to_numpy()
    keep = cap_vocabulary(counts, config.min_item_count, config.max_items)
    report = vocab_report(counts, keep, config.min_item_count, config.max_items)
    logger.info("prepare: %s", report.note())
    tokens = [t for t, k in zip(item_vocab.tokens, keep, strict=True) if k]
    capped = IdVocabulary(tokens, name=item_vocab.name)
    return capped, [report.note()], (report.oov_ids, report.oov_interactions)


def empty_part_notes(examples: dict[str, int]) -> list[str]:
    """Notes on the parts without examples (not written), each also logged as a warning."""
    notes = []
    for name, count in examples.items():
        if count == 0:
            notes.append(f"prepare: no {name} examples; {name}/ not written")
            logger.warning("prepare: no %s examples; %s/ not written", name, name)
    return notes


def make_temp_dir(out: Path) -> Path:
    """A temporary sibling of ``out`` to build the output in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))


def publish_dir(tmp: Path, out: Path) -> None:
    """Renames the complete ``tmp`` to ``out``, replacing an existing ``out``."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_output(
    config: PrepareConfig, out: Path, write: Callable[[Path], PrepareResult]
) -> PrepareResult:
    """Builds ``out`` in a temporary sibling and renames it there when complete.

    ``write(tmp)`` writes the data files into ``tmp`` and returns the summary;
    then ``prepare_config.json`` and ``summary.json`` are saved beside them and
    ``tmp`` replaces ``out``. On any error ``tmp`` is removed (``out`` untouched).

    Returns:
        What ``write`` returned.
    """
    tmp = make_temp_dir(out)
    try:
        result = write(tmp)
        config.save(tmp / "prepare_config.json")
        result.save(tmp / "summary.json")
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("prepare: wrote %s (%s)", out, result.examples)
    return result


def prepare(config: PrepareConfig) -> PrepareResult:
    """Loads, splits and writes a dataset as model-ready files (``tfrec prepare``).

    Output layout (created in a temporary sibling and renamed when complete)::

        prepare_config.json  summary.json  user_vocab.txt  item_vocab.txt
        items.parquet                      (when the dataset has an item table)
        interactions/{train,valid,test}.parquet   held-out rows for evaluation
        {train,valid,test}/spec.json + part-*.tfrecord

    Vocabularies cover every user and item of the loaded data plus the item
    catalogue (the same rule as training), items capped by ``min_item_count``
    and ``max_items``. The engine is chosen by :func:`choose_engine`; both
    write the same vocabularies and examples. ``train`` examples come from
    :func:`~tfrec.data.sequences.retrieval_examples` (``config.mode``); ``valid``
    and ``test`` from :func:`~tfrec.data.sequences.heldout_examples` with
    train (train + valid for test) as context.

    Args:
        config: The settings.

    Returns:
        A :class:`PrepareResult` (also written as ``summary.json``).

    Raises:
        ValueError: No ``output_dir``, or it exists and ``overwrite`` is False;
            settings the chosen engine does not support.
        DatasetNotFoundError, DataError: From loading.
    """
    if not config.output_dir:
        raise ValueError("PrepareConfig.output_dir is required")
    out = Path(config.output_dir)
    if out.exists() and not config.overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it")
    engine, why = choose_engine(config)
    logger.info("prepare: engine %s (%s)", engine, why)
    if engine == "duckdb":
        from tfrec.data.streaming_prepare import prepare_streaming  # noqa: PLC0415

        return prepare_streaming(config)
    return _prepare_in_memory(config, out)


def _prepare_in_memory(config: PrepareConfig, out: Path) -> PrepareResult:
    """The ``pandas`` engine: the whole log in memory."""
    logger.info("prepare: loading %s", config.data.dataset)
    data = config.data.load()
    split = config.data.make_split(data)
    user_vocab, item_vocab = build_vocabularies(data)
    item_vocab, vocab_notes, (oov_ids, oov_rows) = capped_item_vocabulary(
        item_vocab, data.frame["item_id"], config
    )
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
    context = concat_interactions(split.train, split.valid)
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
        notes=[*data.notes, *split.notes, *vocab_notes],
        engine="pandas",
        oov_item_ids=oov_ids,
        oov_interactions=oov_rows,
    )

    def write(tmp: Path) -> PrepareResult:
        user_vocab.save(tmp / "user_vocab.txt")
        item_vocab.save(tmp / "item_vocab.txt")
        if data.items is not None:
            data.items[["item_id", "title", "genres"]].to_parquet(
                tmp / "items.parquet", index=False
            )
        (tmp / "interactions").mkdir()
        for name, part in parts.items():
            part.frame.to_parquet(tmp / "interactions" / f"{name}.parquet", index=False)
        result.notes.extend(empty_part_notes(result.examples))
        for name, features in examples.items():
            if len(features["user"]) > 0:
                logger.info("prepare: writing %d %s examples", len(features["user"]), name)
                write_tfrecords(features, tmp / name, num_shards=config.num_shards)
        return result

    return write_output(config, out, write)


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
    raw = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    check_prepared_format(directory, raw if isinstance(raw, dict) else {})
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
