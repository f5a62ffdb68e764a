"""Streaming reads of interaction files for out-of-core ``tfrec prepare``.

A path may be one file, a directory (its ``.parquet``/``.pq``/``.csv``/``.tsv``
files) or a glob (``logs/part-*.parquet``, ``**`` allowed); files are read in
sorted name order, each in batches, so memory holds one batch. Values follow
the rules of the in-memory loader (:func:`tfrec.data.loaders.load_interactions_file`):
ids are stripped text (integers written in decimal), times are unix seconds
or date/time strings (Parquet datetimes accepted), ratings finite numbers. A
bad value raises :class:`~tfrec.data.interactions.DataError` naming the file
and the 1-based line (text) or row (Parquet), the column and what was expected.

Each batch comes out as :data:`SCHEMA`: ``user_id`` and ``item_id`` strings,
``timestamp`` int64 (0 when there is no time column) and ``rating`` float32
(NaN when there is no rating column).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tfrec.data.download import DatasetNotFoundError
from tfrec.data.interactions import DataError
from tfrec.data.parquet_reader import read_parquet_columns
from tfrec.data.parsing import (
    EXPECT,
    Field,
    check_unique_ids,
    check_value,
    convert_columns,
    describe_value,
    line_of_row,
    read_with_header,
    split_genres,
)

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
    ]
)
_GLOB_CHARS = "*?["
_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclasses.dataclass(frozen=True)
class InputColumns:
    """The columns to read (``DataConfig.user_col`` ...)."""

    user: str = "user_id"
    item: str = "item_id"
    time: str | None = None
    rating: str | None = None

    def fields(self) -> list[Field]:
        """The :class:`~tfrec.data.parsing.Field` of each column read."""
        out = [Field(self.user, "id", "user id"), Field(self.item, "id", "item id")]
        if self.time:
            out.append(Field(self.time, "time", "timestamp"))
        if self.rating:
            out.append(Field(self.rating, "number", "rating"))
        return out


def resolve_inputs(path: str | os.PathLike[str], data_dir: str | None = None) -> list[Path]:
    """The files a path, a directory or a glob names, in sorted order.

    A relative path that does not exist is also looked up in ``data_dir``
    (as :func:`tfrec.data.loaders.load_dataset` does).

    Raises:
        DatasetNotFoundError: Nothing matches (the message names the pattern).
    """
    text = str(path)
    if data_dir and not Path(text).is_absolute() and not glob.glob(text):
        candidate = str(Path(data_dir) / text)
        if glob.glob(candidate):
            text = candidate
    if any(ch in text for ch in _GLOB_CHARS):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DatasetNotFoundError(f"{text}: no file matches this pattern")
        return files
    target = Path(text)
    if target.is_dir():
        files = sorted(
            p for p in target.iterdir() if p.suffix.lower() in PARQUET_SUFFIXES + TEXT_SUFFIXES
        )
        if not files:
            raise DatasetNotFoundError(f"{target}: directory holds no .parquet/.csv/.tsv file")
        return files
    if not target.is_file():
        raise DatasetNotFoundError(f"{target}: file not found")
    return [target]


def parquet_row_count(files: list[Path]) -> int | None:
    """Total rows from the Parquet footers (None when a file is text)."""
    if any(p.suffix.lower() not in PARQUET_SUFFIXES for p in files):
        return None
    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


def iter_batches(
    files: list[Path], columns: InputColumns, batch_rows: int = 262_144
) -> Iterator[pa.RecordBatch]:
    """Normalised batches (:data:`SCHEMA`) of every file, in file order then row order.

    Raises:
        DataError: A missing column, a bad value (file, line/row, column) or no rows.
    """
    total = 0
    for path in files:
        reader = _parquet_batches if path.suffix.lower() in PARQUET_SUFFIXES else _text_batches
        rows = 0
        for batch in reader(path, columns, batch_rows):
            rows += batch.num_rows
            yield batch
        if rows == 0 and len(files) == 1:
            raise DataError(
                f"{path}: no data rows"
                + ("" if path.suffix.lower() in PARQUET_SUFFIXES else " after the header")
            )
        total += rows
    if total == 0:
        raise DataError(f"no data rows in {len(files)} input file(s): {files[0]} ...")


def _row_error(path: Path, row: int, field: Field, expected: str, value: str | None) -> DataError:
    got = "a null value" if value is None else describe_value(value)
    return DataError(
        f"{path}: row {row + 1}, column '{field.column}' ({field.label}): got {got}; "
        f"expected {expected}"
    )


def _parquet_batches(
    path: Path, columns: InputColumns, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(path)
        names = list(parquet.schema_arrow.names)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    fields = columns.fields()
    missing = [f.column for f in fields if f.column not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {names}")
    wanted = list(dict.fromkeys(f.column for f in fields))
    first = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
        converted = {
            f.column: _typed_column(path, batch.column(f.column), f, first) for f in fields
        }
        yield _output(batch.num_rows, converted, columns)
        first += batch.num_rows


def _id_column(path: Path, column: pa.Array, field: Field, first: int) -> pa.Array | None:
    kind = column.type
    if pa.types.is_integer(kind):
        return column.cast(pa.string())
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        integral = (values % 1 == 0).all()
        return pa.array(values.astype(np.int64)).cast(pa.string()) if integral else None
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return None
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    empty = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
    if empty.any():
        row = int(np.argmax(empty))
        raise _row_error(path, first + row, field, EXPECT["id"], column[row].as_py())
    return text


def _time_column(column: pa.Array) -> pa.Array | None:
    kind = column.type
    if pa.types.is_timestamp(kind):  # stored as UTC; naive ones are taken as UTC
        raw = column.cast(pa.int64()).to_numpy()
        return pa.array(np.floor_divide(raw, _UNITS[kind.unit]), type=pa.int64())
    return column.cast(pa.int64()) if pa.types.is_integer(kind) else None


def _number_column(path: Path, column: pa.Array, field: Field, first: int) -> pa.Array | None:
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return None
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise _row_error(path, first + row, field, EXPECT["number"], str(values[row]))
    return pa.array(values)


def _typed_column(path: Path, column: pa.Array, field: Field, first: int) -> pa.Array:
    """One Parquet column converted like :func:`~tfrec.data.parquet_reader.read_parquet_columns`."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        expected = "a date/time" if pa.types.is_timestamp(column.type) else EXPECT[field.kind]
        raise _row_error(path, first + row, field, expected, None)
    if field.kind == "id":
        converted = _id_column(path, column, field, first)
    elif field.kind == "time":
        converted = _time_column(column)
    else:
        converted = _number_column(path, column, field, first)
    if converted is not None:
        return converted
    # any other type goes through the text rules of the in-memory reader
    text = pd.Series(column.to_pandas()).astype(str)
    frame = pd.DataFrame({field.column: text})
    values, bad_row, kinds = convert_columns(frame, [field])
    if bad_row >= 0:
        raise _row_error(
            path, first + bad_row, field, EXPECT[kinds[field.column]], text.iat[bad_row]
        )
    return pa.array(values[field.column].to_numpy())


def _text_header(path: Path, sep: str) -> list[str]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            first = next(csv.reader([handle.readline()], delimiter=sep), [])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    return [name.strip() for name in first]


def _text_batches(path: Path, columns: InputColumns, batch_rows: int) -> Iterator[pa.RecordBatch]:
    sep = _default_sep(path)
    header = _text_header(path, sep)
    fields = columns.fields()
    missing = [f.column for f in fields if f.column not in header]
    if missing:
        raise DataError(
            f"{path}: line 1 (header): missing column(s) {missing}; the header has {header}"
        )
    if len(set(header)) != len(header):
        raise DataError(f"{path}: line 1 (header): repeated column names in {header}")
    wanted = list(dict.fromkeys(f.column for f in fields))
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, block_size=max(1 << 20, 64 * batch_rows)
            ),
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                include_columns=wanted,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        first = 0
        for batch in reader:
            frame = pd.DataFrame({c: batch.column(c).to_pandas() for c in wanted})
            converted, bad_row, kinds = convert_columns(frame, fields)
            if bad_row >= 0:
                raise _text_error(path, sep, header, fields, kinds, frame, first, bad_row)
            arrays = {f.column: pa.array(converted[f.column].to_numpy()) for f in fields}
            yield _output(batch.num_rows, arrays, columns)
            first += batch.num_rows
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: {err}") from err


def _text_error(  # noqa: PLR0917
    path: Path,
    sep: str,
    header: list[str],
    fields: list[Field],
    kinds: dict[str, str],
    frame: pd.DataFrame,
    first: int,
    bad_row: int,
) -> DataError:
    """The in-memory reader's message for the first bad value of a batch."""
    line = line_of_row(path, first + bad_row, sep, quoted=True, header=True)
    for field in fields:
        value = str(frame[field.column].iat[bad_row])
        kind = kinds[field.column]
        if not check_value(value, kind):
            return DataError(
                f"{path}: line {line}, column {header.index(field.column) + 1} ({field.label}, "
                f"'{field.column}'): got {describe_value(value)}; expected {EXPECT[kind]}"
            )
    return DataError(f"{path}: line {line}: could not be parsed")  # pragma: no cover


def _output(num_rows: int, arrays: dict[str, pa.Array], columns: InputColumns) -> pa.RecordBatch:
    time = (
        arrays[columns.time].cast(pa.int64())
        if columns.time
        else pa.array(np.zeros(num_rows, dtype=np.int64))
    )
    rating = (
        arrays[columns.rating].cast(pa.float32())
        if columns.rating
        else pa.array(np.full(num_rows, np.nan, dtype=np.float32))
    )
    return pa.record_batch(
        [
            arrays[columns.user].cast(pa.string()),
            arrays[columns.item].cast(pa.string()),
            time,
            rating,
        ],
        schema=SCHEMA,
    )


def read_table(
    path: Path, fields: list[Field], sep: str | None = None, keep: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Reads and parses ``fields`` (plus the raw ``keep`` columns) of a table file.

    Args:
        path: ``.parquet``/``.pq`` is read as Parquet, anything else as text with a header.
        fields: The columns to parse, with their kinds.
        sep: Field separator of a text file (default tab for ``.tsv``, else comma).
        keep: Further columns kept as they are, where present.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DataError: A missing column or an unparsable value.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: file not found")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet_columns(path, fields, keep=keep)
    return read_with_header(path, fields, sep=sep or _default_sep(path), keep=keep)


def _default_sep(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_items_table(
    path: str | os.PathLike[str],
    item_col: str,
    title_col: str | None = None,
    genres_col: str | None = None,
    genres_sep: str = "|",
    *,
    sep: str | None = None,
) -> pd.DataFrame:
    """The item table (``item_id``, ``title``, ``genres``) as the csv loader reads it.

    The table has one row per catalogue item, so it is held in memory (like
    the vocabulary).

    Args:
        path: The item file (CSV/TSV/Parquet with a header).
        item_col: Column holding item ids.
        title_col: Optional title column.
        genres_col: Optional genres column (``genres_sep``-separated).
        genres_sep: Separator within the genres column.
        sep: Field separator of a text file (default tab for ``.tsv``, else comma).

    Raises:
        DatasetNotFoundError: The file does not exist.
        DataError: A missing column, a bad id or a repeated item id.
    """
    path = Path(path)
    keep = tuple(c for c in (title_col, genres_col) if c)
    table = read_table(path, [Field(item_col, "id", "item id")], sep, keep=keep)
    for column in keep:
        if column not in table.columns:
            raise DataError(f"{path}: missing column '{column}'; check title_col/genres_col")
    items = pd.DataFrame({"item_id": table[item_col].astype(str)})
    items["title"] = table[title_col].fillna("").astype(str).str.strip() if title_col else ""
    items["genres"] = (
        split_genres(table[genres_col].fillna(""), genres_sep)
        if genres_col
        else [[] for _ in range(len(items))]
    )
    check_unique_ids(path, items["item_id"], sep or _default_sep(path), quoted=True, header=True)
    return items
