"""The passes of out-of-core ``tfrec prepare`` over DuckDB-sorted user chunks.

Memory per pass is one chunk of whole users (``batch_rows`` rows, or one
user's rows when a user has more) plus arrays of vocabulary size; DuckDB
sorts within its ``memory_limit`` and spills beyond it.

* :func:`stage_inputs`: input files -> one normalised Parquet file with the
  input order (``_order``) of each row.
* :func:`clean_pass`: rows sorted by ``(user_id, timestamp, _order)`` ->
  :func:`~tfrec.data.prepare_transform.clean_rows` -> ``clean.parquet`` with
  each row's user index and item code, the user vocabulary (written as it
  streams: users come in sorted order), item counts in first-appearance order.
* :func:`example_pass`: ``clean.parquet`` (already user-sorted) -> split ->
  ``interactions/<part>.parquet`` and the TFRecord examples of each part.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfrec.data.example_codec import ShardedExampleWriter
from tfrec.data.interactions import DataError
from tfrec.data.prepare_inputs import SCHEMA, InputColumns, iter_batches, parquet_row_count
from tfrec.data.prepare_transform import (
    PART_NAMES,
    TRAIN,
    CleanStats,
    SplitStats,
    TransformSpec,
    chunk_examples,
    clean_rows,
    group_ids,
    group_starts,
    split_labels,
)
from tfrec.data.vocab import NUM_RESERVED, OOV_TOKEN
from tfrec.logs import Progress, format_rate, format_seconds

logger = logging.getLogger(__name__)

ORDER = "_order"
# work files are written once and read once: no dictionary pages, fast compression
WORK_FILE = {"compression": "lz4", "use_dictionary": False}
CLEAN_SCHEMA = SCHEMA.append(pa.field("user_index", pa.int32())).append(
    pa.field("item_code", pa.int32())
)


def _report(progress: Progress, rows: int) -> None:
    seconds = progress.close()
    logger.info(
        "%s: %s rows in %s (%s rows/s)",
        progress.label,
        f"{rows:,}",
        format_seconds(seconds),
        format_rate(rows / max(seconds, 1e-9)),
    )


def stage_inputs(files: list[Path], columns: InputColumns, staged: Path, batch_rows: int) -> int:
    """Reads and validates every input batch into one Parquet file; returns the rows."""
    progress = Progress("prepare 1/3: read", total=parquet_row_count(files), unit="rows")
    rows = 0
    schema = SCHEMA.append(pa.field(ORDER, pa.int64()))
    with pq.ParquetWriter(staged, schema, **WORK_FILE) as writer:
        for batch in iter_batches(files, columns, batch_rows):
            order = pa.array(np.arange(rows, rows + batch.num_rows, dtype=np.int64))
            writer.write_batch(pa.RecordBatch.from_arrays([*batch.columns, order], schema=schema))
            rows += batch.num_rows
            progress.update(rows)
    _report(progress, rows)
    return rows


def complete_users(
    batches: Iterable[pa.RecordBatch], key: str, min_rows: int
) -> Iterator[pa.Table]:
    """Regroups key-sorted batches into tables of whole users (>= ``min_rows`` rows but the last).

    The rows of the last user of a buffer are held back until the key changes,
    so a table never splits a user.
    """
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        rows += batch.num_rows
        if rows < min_rows:
            continue
        table = pa.Table.from_batches(pending)
        column = table.column(key)
        last_user = pc.sum(pc.equal(column, column[-1])).as_py()
        cut = table.num_rows - last_user
        if cut == 0:
            continue  # one user fills the buffer: read on
        yield table.slice(0, cut)
        pending = table.slice(cut).to_batches()
        rows = last_user
    if pending:
        yield pa.Table.from_batches(pending)


class ItemCodes:
    """Item id -> code in order of first appearance, and interactions per code."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.counts = np.zeros(1024, dtype=np.int64)

    def encode(self, uniques: pa.Array, local: np.ndarray) -> np.ndarray:
        """Codes of rows given as indices ``local`` into ``uniques`` (new ids registered)."""
        if len(local) == 0:
            return np.zeros(0, dtype=np.int32)
        distinct, first = np.unique(local, return_index=True)
        order = distinct[np.argsort(first, kind="stable")]
        codes = self.codes
        mapping = np.zeros(len(uniques), dtype=np.int64)
        tokens = uniques.take(pa.array(order)).to_pylist()
        mapping[order] = [codes.setdefault(token, len(codes)) for token in tokens]
        out = mapping[local]
        if len(codes) > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(len(codes), dtype=np.int64)])
        self.counts[: len(codes)] += np.bincount(out, minlength=len(codes))
        return out.astype(np.int32)

    def tokens(self) -> list[str]:
        """Ids in code order."""
        return list(self.codes)


@dataclasses.dataclass
class CleanResult:
    """What :func:`clean_pass` found.

    Attributes:
        items: Item codes and counts (first-appearance order).
        users: Users written to the user vocabulary.
        rows: Rows kept.
        stats: Duplicates and rating-filter counts.
        absent_from_items: Deduplicated rows whose item is not in the item table.
        time_range: ``(min, max)`` timestamp of the kept rows.
    """

    items: ItemCodes
    users: int = 0
    rows: int = 0
    stats: CleanStats = dataclasses.field(default_factory=CleanStats)
    absent_from_items: int = 0
    time_range: tuple[int, int] | None = None


def _check_user_ids(ids: pa.Array) -> None:
    bad = pc.or_(pc.match_substring_regex(ids, r"[\r\n]"), pc.equal(ids, OOV_TOKEN))
    if pc.any(bad).as_py():
        value = ids.filter(bad)[0].as_py()
        raise DataError(
            f"user id {value!r}: a newline or the reserved out-of-vocabulary token "
            f"{OOV_TOKEN!r} cannot be a vocabulary id"
        )


def _string_groups(values: pa.Array) -> np.ndarray:
    """Run number of each row of a sorted string array."""
    n = len(values)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    changed = pc.not_equal(values.slice(1), values.slice(0, n - 1))
    return np.concatenate([[0], np.cumsum(changed.to_numpy(zero_copy_only=False))])


def _clean_chunk(
    table: pa.Table,
    result: CleanResult,
    catalogue: pd.Index | None,
    *,
    has_timestamps: bool,
    min_rating: float | None,
) -> tuple[pa.Table, pa.Array]:
    """One chunk of whole users: clean, encode; returns the clean rows and the new user ids."""
    users = table.column("user_id").combine_chunks()
    item_ids = table.column("item_id").combine_chunks()
    items = pc.dictionary_encode(item_ids)
    local = items.indices.to_numpy()
    group = _string_groups(users)
    ratings = table.column("rating").to_numpy()
    keep, times, duplicate, stats = clean_rows(
        group,
        local,
        table.column("timestamp").to_numpy(),
        ratings,
        has_timestamps=has_timestamps,
        min_rating=min_rating,
    )
    result.stats.add(stats)
    if catalogue is not None:  # the index hashes the catalogue once, not per chunk
        known = catalogue.get_indexer(items.dictionary.to_pandas()) >= 0
        result.absent_from_items += int((~duplicate & ~known[local]).sum())
    codes = result.items.encode(items.dictionary, local[keep])
    mask = pa.array(keep)
    kept_users = users.filter(mask)
    starts = group_starts(group[keep])
    index = NUM_RESERVED + result.users + group_ids(group[keep])
    new_ids = kept_users.take(pa.array(starts))
    _check_user_ids(new_ids)
    result.users += len(starts)
    result.rows += int(keep.sum())
    kept_times = times[keep]
    if len(kept_times):
        lo, hi = int(kept_times.min()), int(kept_times.max())
        old = result.time_range or (lo, hi)
        result.time_range = (min(old[0], lo), max(old[1], hi))
    clean = pa.table(
        [
            kept_users,
            item_ids.filter(mask),
            pa.array(kept_times),
            pa.array(ratings[keep]),
            pa.array(index.astype(np.int32)),
            pa.array(codes),
        ],
        schema=CLEAN_SCHEMA,
    )
    return clean, new_ids


def clean_pass(  # noqa: PLR0917
    sorted_batches: Iterable[pa.RecordBatch],
    total: int,
    clean_path: Path,
    user_vocab_path: Path,
    catalogue: pd.Index | None,
    batch_rows: int,
    *,
    has_timestamps: bool,
    min_rating: float | None,
) -> CleanResult:
    """Cleans sorted rows chunk by chunk; writes ``clean.parquet`` and the user vocabulary."""
    result = CleanResult(items=ItemCodes())
    progress = Progress("prepare 2/3: sort + clean + count", total=total, unit="rows")
    seen = 0
    with (
        pq.ParquetWriter(clean_path, CLEAN_SCHEMA, **WORK_FILE) as writer,
        user_vocab_path.open("w", encoding="utf-8", newline="\n") as vocab,
    ):
        for table in complete_users(sorted_batches, "user_id", batch_rows):
            clean, new_ids = _clean_chunk(
                table,
                result,
                catalogue,
                has_timestamps=has_timestamps,
                min_rating=min_rating,
            )
            if clean.num_rows:
                writer.write_table(clean)
                vocab.write("\n".join(new_ids.to_pylist()) + "\n")
            seen += table.num_rows
            progress.update(seen)
    _report(progress, seen)
    return result


def value_at_rank(
    batches: Callable[[], Iterable[np.ndarray]], rank: int, lo: int, hi: int
) -> tuple[int, int]:
    """The value at 0-based ``rank`` of the sorted values, by histogram refinement.

    Each round reads the values once and narrows ``[lo, hi]`` to one of 65,536
    bins, so memory is one batch plus the histogram.

    Args:
        batches: Called once per round; yields int64 arrays of all the values.
        rank: 0-based rank.
        lo: Smallest value.
        hi: Largest value.

    Returns:
        ``(value, count of values below it)``.
    """
    below = 0
    bins = 1 << 16
    while lo < hi:
        width = -(-(hi - lo + 1) // bins)
        hist = np.zeros(bins, dtype=np.int64)
        for values in batches():
            inside = values[(values >= lo) & (values <= hi)]
            hist += np.bincount((inside - lo) // width, minlength=bins)
        cumulative = np.cumsum(hist)
        b = int(np.searchsorted(cumulative, rank - below, side="right"))
        below += int(cumulative[b - 1]) if b else 0
        lo, hi = lo + b * width, min(hi, lo + (b + 1) * width - 1)
    return lo, below


@dataclasses.dataclass
class ExampleResult:
    """What :func:`example_pass` wrote: rows and examples per part, split counts."""

    rows: dict[str, int]
    examples: dict[str, int]
    stats: SplitStats
    cold_items: list[int]


def example_pass(  # noqa: PLR0917
    clean_path: Path,
    out_dir: Path,
    spec: TransformSpec,
    code_index: np.ndarray,
    total: int,
    batch_rows: int,
    num_shards: int,
) -> ExampleResult:
    """Splits the clean rows and writes each part's interactions and TFRecord examples."""
    parts = spec.parts()
    part_ids = [PART_NAMES.index(p) for p in parts]
    (out_dir / "interactions").mkdir(parents=True, exist_ok=True)
    writers = {
        p: pq.ParquetWriter(out_dir / "interactions" / f"{p}.parquet", SCHEMA) for p in parts
    }
    examples = {p: ShardedExampleWriter(out_dir / p, num_shards) for p in parts}
    stats = SplitStats()
    seen_in = np.zeros((3, len(code_index)), dtype=bool)
    progress = Progress("prepare 3/3: split + examples", total=total, unit="rows")
    done = 0
    try:
        batches = pq.ParquetFile(clean_path).iter_batches(batch_size=batch_rows)
        for table in complete_users(batches, "user_index", batch_rows):
            users = table.column("user_index").to_numpy()
            codes = table.column("item_code").to_numpy()
            times = table.column("timestamp").to_numpy()
            ratings = table.column("rating").to_numpy()
            labels, chunk_stats = split_labels(users, times, spec)
            stats.add(chunk_stats)
            for part in part_ids:
                seen_in[part, codes[labels == part]] = True
            rows = table.select(SCHEMA.names)
            for name, part in zip(parts, part_ids, strict=True):
                writers[name].write_table(rows.filter(pa.array(labels == part)))
            features = chunk_examples(users, code_index[codes], times, ratings, labels, spec=spec)
            for name in parts:
                examples[name].write(features[name])
            done += table.num_rows
            progress.update(done)
    finally:
        for writer in writers.values():
            writer.close()
    for writer in examples.values():
        writer.close()
    _report(progress, done)
    cold = [int((seen_in[p] & ~seen_in[TRAIN]).sum()) for p in range(3)]
    return ExampleResult(
        rows={p: stats.rows[PART_NAMES.index(p)] for p in parts},
        examples={p: examples[p].num_examples for p in parts},
        stats=stats,
        cold_items=cold,
    )
