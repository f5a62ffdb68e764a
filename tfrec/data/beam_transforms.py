"""The Apache Beam pipeline of ``tfrec prepare --runner``: steps over whole users.

Every step calls the transform of :mod:`tfrec.data.prepare_transform` (and the
caps of :mod:`tfrec.data.prepare_vocab`), the functions the DuckDB engine
calls per chunk; Beam only moves the rows:

1. read each input file (:func:`~tfrec.data.prepare_inputs.iter_batches`, so
   the same validation and located errors), each row keyed by its user and
   carrying its input position ``(file index, row)``;
2. ``GroupByKey(user)``, sort the user's rows by ``(timestamp, position)``,
   :func:`~tfrec.data.prepare_transform.clean_rows`;
3. vocabularies: users sorted by id; items ordered by the ``(user, row)`` key
   of their first kept row (then catalogue-only items), capped by
   :func:`~tfrec.data.prepare_vocab.cap_vocabulary`;
4. temporal cuts: the exact timestamp at :func:`temporal_cut_ranks` by
   histogram refinement over four fixed rounds (each narrows the range
   65,536-fold, so four cover any int64 range), as
   :func:`~tfrec.data.streaming_passes.value_at_rank` does;
5. batches of users: :func:`split_labels`, :func:`chunk_examples`,
   :func:`~tfrec.data.example_codec.serialize_examples`; the records are
   grouped into TFRecord shards, the rows into user-range buckets of the
   interaction files (merged in order by :mod:`tfrec.data.beam_prepare`).

Files go through Beam's ``FileSystems`` (local, ``gs://``, ``hdfs://`` ...):
inputs are copied to a local temporary file to be read, outputs written
locally and copied to the staging directory.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfrec.data.example_codec import serialize_examples
from tfrec.data.interactions import DataError
from tfrec.data.prepare_inputs import SCHEMA, InputColumns, iter_batches
from tfrec.data.prepare_transform import (
    PART_NAMES,
    TRAIN,
    TransformSpec,
    chunk_examples,
    clean_rows,
    split_labels,
    temporal_cut_ranks,
)
from tfrec.data.prepare_vocab import cap_vocabulary, index_of_code, vocab_report
from tfrec.data.vocab import NUM_RESERVED, OOV_INDEX, OOV_TOKEN, IdVocabulary

POSITION_BITS = 40  # input position = file index << 40 | row in the file
BINS = 1 << 16
ROUNDS = 4  # 2**64 / BINS**4 = 1: four rounds pin any int64 value
USERS_PER_BATCH = 512


def is_local(path: str) -> bool:
    """Whether ``path`` is on the local file system (no ``scheme://``)."""
    return "://" not in path


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for local and remote paths."""
    return FileSystems.join(base, *parts)


@contextlib.contextmanager
def local_copy(name: str) -> Iterator[Path]:
    """``name`` itself when local, else a temporary local copy of it."""
    if is_local(name):
        yield Path(name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / PurePosixPath(name).name
        with (
            FileSystems.open(name, compression_type=CompressionTypes.UNCOMPRESSED) as src,
            local.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 24)
        yield local


def upload(local: Path, dest: str) -> None:
    """Copies a finished local file to ``dest`` (local or remote)."""
    with (
        local.open("rb") as src,
        FileSystems.create(dest, compression_type=CompressionTypes.UNCOMPRESSED) as dst,
    ):
        shutil.copyfileobj(src, dst, 1 << 24)


class ReadFile(beam.DoFn):
    """``(file index, name)`` -> ``(user_id, rows)`` blocks, rows in input order.

    A block is ``(items, timestamps, positions, ratings)`` tuples of one user's
    rows within one read batch.
    """

    def __init__(self, columns: InputColumns, batch_rows: int, several: bool) -> None:
        self.columns, self.batch_rows, self.several = columns, batch_rows, several

    def process(self, element: tuple[int, str]) -> Iterator[tuple[str, tuple]]:
        """Reads one file; a ``DataError`` names the original file, not a local copy."""
        index, name = element
        with local_copy(name) as local:
            try:
                yield from self._blocks(index, local)
            except DataError as err:
                message = str(err).replace(str(local), name)
                # an empty file among several is fine (the launcher checks the total)
                if not (self.several and message.startswith(f"{name}: no data rows")):
                    raise DataError(message) from err

    def _blocks(self, index: int, path: Path) -> Iterator[tuple[str, tuple]]:
        first = 0
        for batch in iter_batches([path], self.columns, self.batch_rows):
            order = pc.sort_indices(batch.column(0)).to_numpy()  # stable: rows keep input order
            users = batch.column(0).take(order).to_numpy(zero_copy_only=False)
            items = batch.column(1).take(order).to_pylist()
            times = batch.column(2).to_numpy()[order].tolist()
            ratings = batch.column(3).to_numpy()[order].tolist()
            positions = ((index << POSITION_BITS) + first + order).tolist()
            bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
            for a, b in zip([0, *bounds.tolist()], [*bounds.tolist(), len(users)], strict=True):
                yield users[a], (items[a:b], times[a:b], positions[a:b], ratings[a:b])
            first += batch.num_rows


class CleanUser(beam.DoFn):
    """``(user_id, blocks)`` -> the user's kept rows (:func:`clean_rows`) and its counts.

    Output ``(user_id, items, timestamps, ratings, (rows, duplicates,
    below_min_rating, absent_from_items))``, rows sorted by ``(timestamp,
    input position)``; timestamps are positions when the data has no time.
    """

    def __init__(self, has_timestamps: bool, min_rating: float | None) -> None:
        self.has_timestamps, self.min_rating = has_timestamps, min_rating
        self._catalogue: tuple[int, frozenset[str]] | None = None

    def _known(self, catalogue: list[str] | None) -> frozenset[str] | None:
        if catalogue is None:
            return None
        if self._catalogue is None or self._catalogue[0] != id(catalogue):
            self._catalogue = (id(catalogue), frozenset(catalogue))
        return self._catalogue[1]

    def process(self, element: tuple[str, Iterable[tuple]], catalogue: list[str] | None) -> Any:
        """Sorts, cleans and counts one user's rows (``catalogue``: the item table's ids)."""
        user_id, blocks = element
        blocks = list(blocks)
        items = np.array([i for b in blocks for i in b[0]], dtype=object)
        times = np.array([t for b in blocks for t in b[1]], dtype=np.int64)
        positions = np.array([p for b in blocks for p in b[2]], dtype=np.int64)
        ratings = np.array([r for b in blocks for r in b[3]], dtype=np.float32)
        order = np.lexsort((positions, times))
        items, times, ratings = items[order], times[order], ratings[order]
        codes = np.unique(items, return_inverse=True)[1].reshape(-1)
        keep, times, duplicate, stats = clean_rows(
            np.zeros(len(items), dtype=np.int64),
            codes,
            times,
            ratings,
            has_timestamps=self.has_timestamps,
            min_rating=self.min_rating,
        )
        known = self._known(catalogue)
        absent = 0 if known is None else sum(i not in known for i in items[~duplicate])
        if keep.any() and ("\n" in user_id or "\r" in user_id or user_id == OOV_TOKEN):
            raise DataError(
                f"user id {user_id!r}: a newline or the reserved out-of-vocabulary token "
                f"{OOV_TOKEN!r} cannot be a vocabulary id"
            )
        counts = (stats.rows, stats.duplicates, stats.below_min_rating, int(absent))
        yield user_id, tuple(items[keep].tolist()), times[keep], ratings[keep], counts


def item_firsts(user: tuple) -> Iterator[tuple[str, tuple[int, tuple[str, int]]]]:
    """Per item of a user: ``(item, (rows, (user_id, first row)))``."""
    user_id, items = user[0], user[1]
    first: dict[str, int] = {}
    for k, item in enumerate(items):
        first.setdefault(item, k)
    counts = Counter(items)
    for item, k in first.items():
        yield item, (counts[item], (user_id, k))


def merge_firsts(values: Iterable[tuple[int, tuple[str, int]]]) -> tuple[int, tuple[str, int]]:
    """Sums the rows and keeps the earliest first-row key (associative)."""
    values = list(values)
    return sum(v[0] for v in values), min(v[1] for v in values)


def item_vocabulary(
    entries: list[tuple[str, tuple[int, tuple[str, int]]]],
    catalogue: list[str] | None,
    min_item_count: int,
    max_items: int,
) -> dict[str, Any]:
    """The capped item vocabulary: ``tokens``, ``index`` (item -> index) and the ``report``."""
    entries = sorted(entries, key=lambda e: e[1][1])
    tokens = [e[0] for e in entries]
    known = set(tokens)
    extra = [t for t in catalogue or [] if t not in known]
    counts = np.array([e[1][0] for e in entries] + [0] * len(extra), dtype=np.int64)
    keep = cap_vocabulary(counts, min_item_count, max_items)
    index = index_of_code(keep)
    report = vocab_report(counts, keep, min_item_count, max_items)
    return {
        "tokens": [t for t, k in zip(tokens + extra, keep.tolist(), strict=True) if k],
        "index": dict(zip(tokens, index[: len(tokens)].tolist(), strict=True)),
        "report": vars(report),
    }


def sum_tuples(values: Iterable[Sequence[int]], size: int) -> tuple[int, ...]:
    """Element-wise sum (associative, so a Beam combine); zeros when empty."""
    out = [0] * size
    for value in values:
        out = [a + b for a, b in zip(out, value, strict=True)]
    return tuple(out)


def time_range(ranges: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """``(min, max)`` of ``(min, max)`` pairs (a Beam combine); ``(0, 0)`` when empty."""
    ranges = list(ranges)
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0, 0)


def cut_start(_: Any, rows: int, time_range: tuple[int, int], fractions: tuple) -> list[list]:
    """Refinement state ``[lo, hi, below, rank]`` of the test and valid cuts."""
    lo, hi = time_range
    return [[lo, hi, 0, rank] for rank in temporal_cut_ranks(rows, *fractions)]


def _width(lo: int, hi: int) -> int:
    return -(-(hi - lo + 1) // BINS)


def histogram(user: tuple, state: list[list]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per open cut ``k``: ``(k, bins, counts)`` of the user's timestamps in ``[lo, hi]``."""
    times = user[2]
    for k, (lo, hi, _, rank) in enumerate(state):
        if rank is not None and lo < hi:
            inside = times[(times >= lo) & (times <= hi)]
            if len(inside):
                yield (k, *np.unique((inside - lo) // _width(lo, hi), return_counts=True))


class SumHistograms(beam.CombineFn):
    """Sparse per-user histograms -> one dense histogram per cut."""

    def create_accumulator(self) -> dict[int, np.ndarray]:  # noqa: D102
        return {}

    def add_input(self, acc: dict[int, np.ndarray], element: tuple) -> dict[int, np.ndarray]:  # noqa: D102
        k, bins, counts = element
        hist = acc.setdefault(k, np.zeros(BINS, dtype=np.int64))
        np.add.at(hist, bins, counts)
        return acc

    def merge_accumulators(self, accs: Iterable[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:  # noqa: D102
        out: dict[int, np.ndarray] = {}
        for acc in accs:
            for k, hist in acc.items():
                out[k] = out[k] + hist if k in out else hist
        return out

    def extract_output(self, acc: dict[int, np.ndarray]) -> dict[int, np.ndarray]:  # noqa: D102
        return acc


def refine(_: Any, state: list[list], hists: dict[int, np.ndarray]) -> list[list]:
    """One round of :func:`~tfrec.data.streaming_passes.value_at_rank` for each cut."""
    out = []
    for k, (lo, hi, below, rank) in enumerate(state):
        if rank is None or lo >= hi:
            out.append([lo, hi, below, rank])
            continue
        width = _width(lo, hi)
        cumulative = np.cumsum(hists.get(k, np.zeros(BINS, dtype=np.int64)))
        b = int(np.searchsorted(cumulative, rank - below, side="right"))
        under = below + (int(cumulative[b - 1]) if b else 0)
        out.append([lo + b * width, min(hi, lo + (b + 1) * width - 1), under, rank])
    return out


def final_cuts(_: Any, state: list[list], rows: int, time_range: tuple[int, int]) -> list[int]:
    """``[test_cut, test_below, valid_cut, valid_below]``; no rank: ``max + 1``, all rows."""
    out = []
    for lo, _hi, below, rank in state:
        out += [time_range[1] + 1, rows] if rank is None else [lo, below]
    return out


class MakeExamples(beam.DoFn):
    """A batch of users -> split labels, examples, interaction rows (tagged outputs).

    Main output ``((part, shard), records)``; ``split``: the batch's
    :class:`SplitStats` as 7 ints (rows, short users, cold users);
    ``features``: ``(part, spec)``; ``rows``: ``(bucket, arrays)`` of the rows
    with their user index and part; ``seen``: ``(item, parts bitmask)``.
    """

    def __init__(self, spec: TransformSpec, num_shards: int, num_buckets: int) -> None:
        self.spec, self.num_shards, self.num_buckets = spec, num_shards, num_buckets

    def process(
        self, batch: list[tuple], users: list[str], vocab: dict[str, Any], cuts: list[int] | None
    ) -> Iterator[Any]:
        """``users``: sorted user ids; ``vocab``: :func:`item_vocabulary`; ``cuts``: temporal."""
        spec = self.spec
        if cuts is not None:
            spec = TransformSpec(**{**vars(spec), "test_cut": cuts[0], "valid_cut": cuts[2]})
        sizes = [len(u[1]) for u in batch]
        first = [bisect.bisect_left(users, u[0]) for u in batch]
        index = np.repeat(np.array(first, dtype=np.int64) + NUM_RESERVED, sizes).astype(np.int32)
        item_ids = [i for u in batch for i in u[1]]
        lookup = vocab["index"]
        items = np.array([lookup.get(i, OOV_INDEX) for i in item_ids], dtype=np.int32)
        times = np.concatenate([u[2] for u in batch])
        ratings = np.concatenate([u[3] for u in batch])
        labels, stats = split_labels(index, times, spec)
        yield pvalue.TaggedOutput("split", (*stats.rows, stats.short_users, *stats.cold_users))
        features = chunk_examples(index, items, times, ratings, labels, spec=spec)
        offset = zlib.crc32(batch[0][0].encode("utf-8"))
        for part in spec.parts():
            records = serialize_examples(features[part])
            if not records:
                continue
            yield pvalue.TaggedOutput("features", (part, _feature_spec(features[part])))
            for s in range(min(self.num_shards, len(records))):
                yield (part, (offset + s) % self.num_shards), records[s :: self.num_shards]
        bucket = (index.astype(np.int64) - NUM_RESERVED) * self.num_buckets // len(users)
        columns = (np.array(item_ids, dtype=object), times, ratings, labels)
        user_col = np.repeat(np.array([u[0] for u in batch], dtype=object), sizes)
        for b in np.unique(bucket).tolist():
            mask = bucket == b
            rows = (index[mask], user_col[mask], *(c[mask] for c in columns))
            yield pvalue.TaggedOutput("rows", (b, rows))
        if spec.protocol == "temporal":
            seen: dict[str, int] = {}
            for item, label in zip(item_ids, labels.tolist(), strict=True):
                seen[item] = seen.get(item, 0) | (1 << label)
            yield from (pvalue.TaggedOutput("seen", pair) for pair in seen.items())


def _feature_spec(features: dict[str, np.ndarray]) -> dict[str, dict]:
    """``spec.json``'s ``features`` (the same as :class:`ShardedExampleWriter`'s)."""
    return {
        name: {"dtype": str(np.asarray(a).dtype), "shape": list(np.asarray(a).shape[1:])}
        for name, a in features.items()
    }


def write_shard(element: tuple[tuple[str, int], Iterable[list[bytes]]], staging: str) -> tuple:
    """Writes one TFRecord shard as ``<part>/.shard-<k>.tfrecord``; returns ``(part, k, n)``."""
    (part, shard), chunks = element
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "shard.tfrecord"
        with tf.io.TFRecordWriter(str(local)) as writer:
            for chunk in chunks:
                for record in chunk:
                    writer.write(record)
                count += len(chunk)
        upload(local, join(staging, part, f".shard-{shard:05d}.tfrecord"))
    return part, shard, count


def write_bucket(element: tuple[int, Iterable[tuple]], staging: str, parts: list[str]) -> list:
    """Writes a user-range bucket's rows per part, sorted by user; returns the files written."""
    bucket, pieces = element
    pieces = list(pieces)
    index, user_ids, items, times, ratings, labels = (
        np.concatenate([p[k] for p in pieces]) for k in range(6)
    )
    order = np.argsort(index, kind="stable")  # a user's rows come from one piece, in order
    written = []
    for part in parts:
        rows = order[labels[order] == PART_NAMES.index(part)]
        if not len(rows):
            continue
        table = pa.table(
            [
                pa.array(user_ids[rows].tolist(), pa.string()),
                pa.array(items[rows].tolist(), pa.string()),
                pa.array(times[rows], pa.int64()),
                pa.array(ratings[rows], pa.float32()),
            ],
            schema=SCHEMA,
        )
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "rows.parquet"
            pq.write_table(table, local)
            dest = join(staging, "_work", "interactions", part, f"{bucket:05d}.parquet")
            upload(local, dest)
        written.append((part, bucket, dest))
    return written


def write_vocabularies(_: Any, users: list[str], vocab: dict[str, Any], staging: str) -> None:
    """``user_vocab.txt`` and ``item_vocab.txt`` (checked by :class:`IdVocabulary`)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, tokens in (("user", users), ("item", vocab["tokens"])):
            local = Path(tmp) / f"{name}_vocab.txt"
            IdVocabulary(tokens, name=name).save(local)
            upload(local, join(staging, f"{name}_vocab.txt"))


def write_meta(_: Any, staging: str, **results: Any) -> None:
    """The small results the launcher needs, as ``_work/meta.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "meta.json"
        local.write_text(json.dumps(results, default=lambda a: a.tolist()), encoding="utf-8")
        upload(local, join(staging, "_work", "meta.json"))


def cold_items(entries: Iterable[tuple[str, int]]) -> list[int]:
    """Per part, items there but never in train (``entries``: item -> parts bitmask)."""
    out = [0, 0, 0]
    for _, mask in entries:
        for part in range(3):
            out[part] += bool(mask & (1 << part)) and not mask & (1 << TRAIN)
    return out
