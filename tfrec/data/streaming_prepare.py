"""Out-of-core ``tfrec prepare`` (``--engine duckdb``): CSV/Parquet logs larger than memory.

Writes the same directory as the in-memory engine (:mod:`tfrec.data.preparation`),
with the same vocabularies and examples, in three streaming passes
(:mod:`tfrec.data.streaming_passes`):

1. read + validate the input files (a path, a directory or a glob) into one
   normalised Parquet file;
2. DuckDB sorts it by ``(user, timestamp, input order)`` within
   ``--memory-limit`` (spilling to disk beyond it); the sorted stream, cut
   into chunks of whole users, is cleaned, counted (item vocabulary) and
   written again; the user vocabulary is written as users stream by;
3. the vocabularies are capped (``--min-item-count``, ``--max-items``), the
   temporal cuts found, and each chunk is split and turned into examples by
   the transform of :mod:`tfrec.data.prepare_transform`.

Peak memory: the vocabularies (a dict of item ids, arrays of item-vocabulary
size; the user vocabulary is never held), the item table when given,
DuckDB's ``memory_limit`` and one chunk of ``batch_rows`` rows. See
``docs/scale.md`` for the measurements behind the choice of DuckDB.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tfrec.data.interactions import DataError
from tfrec.data.preparation import (
    STREAMING_SPLITS,
    PrepareConfig,
    PrepareResult,
    empty_part_notes,
    write_output,
)
from tfrec.data.prepare_inputs import SCHEMA, InputColumns, read_items_table, resolve_inputs
from tfrec.data.prepare_transform import (
    TransformSpec,
    leave_one_out_notes,
    temporal_cut_ranks,
    temporal_notes,
)
from tfrec.data.prepare_vocab import cap_vocabulary, index_of_code, vocab_report
from tfrec.data.streaming_passes import (
    ORDER,
    CleanResult,
    ExampleResult,
    clean_pass,
    example_pass,
    stage_inputs,
    value_at_rank,
)
from tfrec.data.vocab import IdVocabulary

if TYPE_CHECKING:
    from tfrec.data.config import DataConfig

logger = logging.getLogger(__name__)


def check_streaming_config(config: PrepareConfig) -> None:
    """Rejects settings the streaming engine cannot honour, naming the option.

    Raises:
        ValueError: Not a csv/parquet dataset, no path, the random split,
            k-core filters, ``min_rating`` without ratings, or a temporal split
            without times or with fractions out of range.
    """
    data = config.data
    hint = "; use --engine pandas"
    if data.dataset != "csv":
        raise ValueError(
            f"--engine duckdb reads csv/parquet files (--dataset csv --path FILE|GLOB), "
            f"got --dataset {data.dataset}{hint}"
        )
    if not data.path:
        raise ValueError("DataConfig.path is required for dataset 'csv' (--path FILE)")
    if data.split not in STREAMING_SPLITS:
        raise ValueError(
            f"--engine duckdb supports the splits {list(STREAMING_SPLITS)}, got "
            f"--split {data.split} (it needs the whole log in memory){hint}"
        )
    if data.min_user_interactions or data.min_item_interactions:
        raise ValueError(
            "--engine duckdb does not apply k-core filters (min_user_interactions, "
            f"min_item_interactions){hint}, or --min-item-count to cap the item vocabulary"
        )
    if data.min_rating is not None and not data.rating_col:
        raise ValueError(
            f"DataConfig.min_rating={data.min_rating} but dataset "
            f"{Path(data.path).stem!r} has no ratings"
        )
    if data.split == "temporal":
        if not data.time_col:
            raise ValueError(
                f"temporal_split: {Path(data.path).stem} has no real timestamps (only sequence "
                "positions), so a global time cut is meaningless; use leave_one_out"
            )
        temporal_cut_ranks(0, data.test_fraction, data.valid_fraction)


def _connect(work: Path, memory_limit: str) -> Any:
    """A DuckDB connection spilling to ``work`` beyond ``memory_limit``."""
    try:
        import duckdb  # noqa: PLC0415
    except ImportError as err:
        raise ValueError(
            "--engine duckdb needs the duckdb package (pip install duckdb); or use --engine pandas"
        ) from err
    try:
        return duckdb.connect(
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(work / "spill"),
                "preserve_insertion_order": False,
            }
        )
    except duckdb.Error as err:
        raise ValueError(
            f"--memory-limit {memory_limit!r}: {err}; expected a size such as 2GB or 512MB"
        ) from err


def _sorted_batches(
    con: Any, staged: Path, batch_rows: int, memory_limit: str
) -> Iterator[pa.RecordBatch]:
    """The staged rows in ``(user_id, timestamp, input order)`` order, batch by batch.

    Raises:
        MemoryError: The sort does not fit in ``memory_limit`` even with spilling
            (the message says to raise ``--memory-limit``).
    """
    import duckdb  # noqa: PLC0415

    source = str(staged).replace("'", "''")
    try:
        relation = con.sql(
            f"SELECT user_id, item_id, timestamp, rating FROM read_parquet('{source}') "
            f"ORDER BY user_id, timestamp, {ORDER}"
        )
        # DuckDB 2 renamed fetch_arrow_reader (1.x, deprecated in 2) to to_arrow_reader
        stream = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
        for batch in stream(batch_rows):
            if batch.schema == SCHEMA:
                yield batch
            else:  # e.g. string views: cast to the plain types
                yield pa.RecordBatch.from_arrays(
                    [c.cast(f.type) for c, f in zip(batch.columns, SCHEMA, strict=True)],
                    schema=SCHEMA,
                )
    except duckdb.OutOfMemoryException as err:
        raise MemoryError(
            f"the sort needs more than --memory-limit {memory_limit} even when spilling to "
            f"disk ({str(err).splitlines()[0]}); raise --memory-limit"
        ) from err


def _item_vocabulary(
    first: CleanResult, items: pd.DataFrame | None, config: PrepareConfig
) -> tuple[IdVocabulary, np.ndarray, list[str], tuple[int, int]]:
    """Item vocabulary (first appearance, then catalogue-only items), capped.

    Returns:
        The vocabulary, the vocabulary index of each item code, the note of
        the caps (empty without caps) and ``(oov_item_ids, oov_interactions)``.
    """
    tokens = first.items.tokens()
    counts = first.items.counts[: len(tokens)]
    known = first.items.codes
    extra = [] if items is None else [t for t in items["item_id"].tolist() if t not in known]
    all_counts = np.concatenate([counts, np.zeros(len(extra), dtype=np.int64)])
    keep = cap_vocabulary(all_counts, config.min_item_count, config.max_items)
    vocab = IdVocabulary(
        [t for t, k in zip(tokens + extra, keep.tolist(), strict=True) if k], name="item"
    )
    code_index = index_of_code(keep)[: len(tokens)]
    if not (config.min_item_count or config.max_items):
        return vocab, code_index, [], (0, 0)
    report = vocab_report(all_counts, keep, config.min_item_count, config.max_items)
    logger.info("prepare: %s", report.note())
    return vocab, code_index, [report.note()], (report.oov_ids, report.oov_interactions)


def _temporal_cuts(
    data: DataConfig, clean_path: Path, first: CleanResult, batch_rows: int
) -> tuple[int, int]:
    """``(test_cut, valid_cut)`` timestamps, found exactly with bounded memory."""
    test_rank, valid_rank = temporal_cut_ranks(first.rows, data.test_fraction, data.valid_fraction)
    lo, hi = first.time_range

    def batches() -> Iterator[np.ndarray]:
        parquet = pq.ParquetFile(clean_path)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=["timestamp"]):
            yield batch.column(0).to_numpy()

    def cut(rank: int | None) -> tuple[int, int]:
        return (hi + 1, first.rows) if rank is None else value_at_rank(batches, rank, lo, hi)

    test_cut, test_below = cut(test_rank)
    valid_cut, valid_below = cut(valid_rank) if valid_rank != test_rank else (test_cut, test_below)
    if min(test_below, valid_below) == 0:
        raise ValueError(
            f"temporal_split: the cut at timestamp {min(valid_cut, test_cut)} leaves no "
            f"training rows in {Path(data.path).stem}; lower test_fraction/valid_fraction"
        )
    return test_cut, valid_cut


def csv_result(config: PrepareConfig, **fields: Any) -> PrepareResult:
    """The summary of a run over the files of ``config.data.path`` (this engine and Beam's).

    Args:
        config: The run's settings: they give the output directory, the name
            (the path's stem), the protocol and whether ratings and times are real.
        **fields: The other :class:`PrepareResult` fields.
    """
    data = config.data
    return PrepareResult(
        output_dir=str(config.output_dir),
        name=Path(data.path).stem,
        protocol=data.split,
        has_ratings=bool(data.rating_col),
        has_timestamps=bool(data.time_col),
        **fields,
    )


def _split_notes(spec: TransformSpec, second: ExampleResult) -> list[str]:
    if spec.protocol == "leave_one_out":
        return leave_one_out_notes(second.stats, spec.validation)
    return temporal_notes(
        second.stats, (spec.test_cut, spec.valid_cut), spec.validation, second.cold_items
    )


def _load_items(data: DataConfig) -> pd.DataFrame | None:
    if not data.items_path:
        return None
    path = Path(data.items_path)
    if data.data_dir and not path.is_absolute() and not path.exists():
        candidate = Path(data.data_dir) / path
        path = candidate if candidate.exists() else path
    return read_items_table(path, data.item_col, data.title_col, data.genres_col, data.genres_sep)


def _run(config: PrepareConfig, tmp: Path) -> PrepareResult:
    data = config.data
    files = resolve_inputs(data.path, data.data_dir)
    items = _load_items(data)
    columns = InputColumns(data.user_col, data.item_col, data.time_col, data.rating_col)
    work = tmp / "_work"
    work.mkdir()
    staged, clean = work / "staged.parquet", work / "clean.parquet"
    logger.info("prepare: %d input file(s), e.g. %s", len(files), files[0])
    staged_rows = stage_inputs(files, columns, staged, config.batch_rows)
    catalogue = None if items is None else pd.Index(items["item_id"])
    con = _connect(work, config.memory_limit)
    try:
        first = clean_pass(
            _sorted_batches(con, staged, config.batch_rows, config.memory_limit),
            staged_rows,
            clean,
            tmp / "user_vocab.txt",
            catalogue,
            config.batch_rows,
            has_timestamps=bool(data.time_col),
            min_rating=data.min_rating,
        )
    finally:
        con.close()
    staged.unlink()
    if first.rows == 0:
        raise DataError(f"{data.path}: no interactions left after cleaning (min_rating?)")
    item_vocab, code_index, vocab_notes, (oov_ids, oov_rows) = _item_vocabulary(
        first, items, config
    )
    item_vocab.save(tmp / "item_vocab.txt")
    cuts = (None, None)
    if data.split == "temporal":
        cuts = _temporal_cuts(data, clean, first, config.batch_rows)
    spec = TransformSpec.from_config(config, test_cut=cuts[0], valid_cut=cuts[1])
    second = example_pass(
        clean, tmp, spec, code_index, first.rows, config.batch_rows, config.num_shards
    )
    notes = [
        *first.stats.notes(data.min_rating, first.absent_from_items),
        *_split_notes(spec, second),
        *vocab_notes,
    ]
    for note in notes:
        logger.info("prepare: %s", note)
    notes += empty_part_notes(second.examples)
    if items is not None:
        items[["item_id", "title", "genres"]].to_parquet(tmp / "items.parquet", index=False)
    shutil.rmtree(work)
    return csv_result(
        config,
        rows=second.rows,
        examples=second.examples,
        user_vocab_size=first.users + 2,
        item_vocab_size=item_vocab.size,
        notes=notes,
        engine="duckdb",
        oov_item_ids=oov_ids,
        oov_interactions=oov_rows,
    )


def prepare_streaming(config: PrepareConfig) -> PrepareResult:
    """``tfrec prepare`` out of core; the same output as the in-memory engine.

    Args:
        config: The settings (``config.data`` a ``csv`` dataset whose ``path``
            is a CSV/TSV/Parquet file, a directory or a glob).

    Returns:
        The :class:`~tfrec.data.preparation.PrepareResult` (also ``summary.json``).

    Raises:
        ValueError: Unsupported settings (:func:`check_streaming_config`), an
            existing output without ``overwrite``, a bad ``memory_limit``.
        DatasetNotFoundError: No input file.
        DataError: A missing column or a bad value (file, line/row, column).
    """
    check_streaming_config(config)
    out = Path(config.output_dir)
    if out.exists() and not config.overwrite:
        raise ValueError(f"{out} already exists; pass --overwrite to replace it")
    return write_output(config, out, functools.partial(_run, config))
