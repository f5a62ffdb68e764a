"""Reading delimited text and Parquet tables with errors that point at the bad line.

Parsing is vectorised with pandas (every column is first read as text, then
converted). Only when something is wrong does a slow line-by-line scan run, to
find the first offending line and say what was expected there. Line numbers
are 1-based physical lines, as an editor shows them (the header is line 1).
Blank lines are skipped, as pandas does.

Field kinds (see :class:`Field`):

* ``"id"``: any non-empty text, kept as ``str``;
* ``"int_id"``: an integer written in decimal, kept as ``str`` (as written);
* ``"int"``: an integer, returned as int64;
* ``"number"``: a finite number, returned as float64;
* ``"time"``: unix seconds (integer) or a date/time string, returned as int64
  unix seconds (naive date/times are taken as UTC). A column must use one of
  the two forms throughout.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tfrec.data.interactions import DataError

Kind = Literal["id", "int_id", "int", "number", "time"]

_INT_RE = re.compile(r"^[+-]?\d+$")
_EXPECT = {
    "id": "a non-empty id",
    "int_id": "an integer id",
    "int": "an integer",
    "number": "a number",
    "time": "unix seconds (integer) or a date/time string such as 2020-01-31 12:00:00",
    "time_int": "unix seconds (an integer), like the other rows of this column",
    "time_date": "a date/time string such as 2020-01-31 12:00:00, like the other rows",
}
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclasses.dataclass(frozen=True)
class Field:
    """One column to read.

    Attributes:
        column: Column name in the returned frame (and in the file's header,
            for files that have one).
        kind: How to validate/convert the values (see the module docstring).
        label: Words for error messages, e.g. ``"user id"``.
    """

    column: str
    kind: Kind
    label: str


def _is_number(text: str) -> bool:
    try:
        return bool(np.isfinite(float(text)))
    except ValueError:
        return False


def _is_date(text: str) -> bool:
    if _INT_RE.match(text):
        return False
    try:
        pd.Timestamp(text)
    except (ValueError, TypeError):
        return False
    return True


_CHECKS = {
    "id": lambda text: True,
    "int_id": lambda text: bool(_INT_RE.match(text)),
    "int": lambda text: bool(_INT_RE.match(text)),
    "time_int": lambda text: bool(_INT_RE.match(text)),
    "number": _is_number,
    "time_date": _is_date,
    "time": lambda text: bool(_INT_RE.match(text)) or _is_date(text),
}


def _check_value(value: str, kind: str) -> bool:
    """Whether one text value is valid for ``kind`` (slow path only)."""
    text = value.strip()
    return bool(text) and _CHECKS[kind](text)


def _describe(value: str) -> str:
    return repr(value) if value.strip() else "an empty value"


def decode_error(path: Path, err: UnicodeDecodeError, encoding: str) -> DataError:
    """Turns a decoding failure into a DataError naming the line and byte."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
        offset = err.start
    except UnicodeDecodeError as exact:
        offset = exact.start
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return DataError(
        f"{path}: line {line}, byte column {column}: byte 0x{raw[offset]:02x} is not valid "
        f"{encoding} text; expected a {encoding}-encoded file"
    )


def _convert(
    frame: pd.DataFrame, fields: Sequence[Field]
) -> tuple[pd.DataFrame, int, dict[str, str]]:
    """Converts text columns.

    Returns:
        The converted frame, the first bad row (or -1), and the kind each
        column was checked as (``"time"`` resolved to ``"time_int"`` or
        ``"time_date"``), for the slow scan to re-check with the same rules.
    """
    out = {}
    bad_row = -1
    kinds = {f.column: str(f.kind) for f in fields}

    def note(mask: np.ndarray, kind: str) -> None:
        nonlocal bad_row
        if mask.any():
            row = int(np.argmax(mask))
            if bad_row < 0 or row < bad_row:
                bad_row = row

    for field in fields:
        text = frame[field.column].astype(str).str.strip()
        empty = (text == "").to_numpy()
        if field.kind == "id":
            note(empty, "id")
            out[field.column] = text
        elif field.kind in ("int_id", "int"):
            ok = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool, na_value=False)
            note(~ok, field.kind)
            if field.kind == "int_id":
                out[field.column] = text
            else:
                out[field.column] = pd.to_numeric(text.where(ok, "0")).astype(np.int64)
        elif field.kind == "number":
            values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            note(~np.isfinite(values), "number")
            out[field.column] = values
        elif field.kind == "time":
            values, kind, bad = _parse_times(text)
            kinds[field.column] = kind
            note(bad, kind)
            out[field.column] = values
        else:
            raise ValueError(f"unknown field kind {field.kind!r}")
    return pd.DataFrame(out, index=frame.index), bad_row, kinds


def _parse_times(text: pd.Series) -> tuple[np.ndarray, str, np.ndarray]:
    """Parses a time column: all integers (unix seconds) or all date/time strings."""
    is_int = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool, na_value=False)
    if is_int.mean() >= 0.5:
        values = pd.to_numeric(text.where(is_int, "0")).to_numpy(dtype=np.int64)
        return values, "time_int", ~is_int
    parsed = pd.to_datetime(text.where(~is_int, ""), errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    seconds = ((parsed - _EPOCH) // pd.Timedelta(seconds=1)).fillna(0).to_numpy(dtype=np.int64)
    return seconds, "time_date", bad


def _records(
    path: Path, sep: str | None, encoding: str, quoted: bool
) -> Iterator[tuple[int, list[str]]]:
    """Yields (1-based start line, fields) for each non-blank record of a text file."""
    with path.open("r", encoding=encoding, newline="") as handle:
        if quoted:
            reader = csv.reader(handle, delimiter=sep or ",")
            start = 1
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield start, fields
                start = reader.line_num + 1
        else:
            for number, raw_line in enumerate(handle, start=1):
                line = raw_line.rstrip("\r\n")
                if line.strip():
                    yield number, (line.split() if sep is None else line.split(sep))


def _first_bad_record(  # noqa: PLR0917
    path: Path,
    sep: str | None,
    encoding: str,
    quoted: bool,
    header: bool,
    positions: Sequence[tuple[int, Field, str]],
    num_fields: int | None,
    min_fields: int | None = None,
) -> DataError | None:
    """Slow scan: the first record with a wrong field count or a bad value."""
    sep_name = {"\t": "tab", ",": "comma", "|": "'|'", None: "whitespace"}.get(sep, repr(sep))
    records = _records(path, sep, encoding, quoted)
    if header:
        next(records, None)
    for line, fields in records:
        if num_fields is not None and len(fields) != num_fields:
            return DataError(
                f"{path}: line {line}: expected {num_fields} {sep_name}-separated fields, "
                f"found {len(fields)}"
            )
        if min_fields is not None and len(fields) < min_fields:
            return DataError(
                f"{path}: line {line}: expected at least {min_fields} "
                f"{sep_name}-separated fields, found {len(fields)}"
            )
        for pos, field, kind in positions:
            value = fields[pos]
            if not _check_value(value, kind):
                return DataError(
                    f"{path}: line {line}, column {pos + 1} ({field.label}, "
                    f"'{field.column}'): got {_describe(value)}; expected {_EXPECT[kind]}"
                )
    return None


def read_headerless(
    path: Path,
    fields: Sequence[Field],
    sep: str | None,
    encoding: str = "utf-8",
    extra_columns: int = 0,
) -> pd.DataFrame:
    """Reads a header-less delimited file with a fixed number of fields per line.

    Args:
        path: The file.
        fields: The first ``len(fields)`` columns, in file order.
        sep: Field separator; ``None`` means any run of whitespace.
        encoding: Text encoding of the file.
        extra_columns: Further columns each line must have, returned as text
            in columns named ``"extra0"``, ``"extra1"``, ...

    Returns:
        One row per non-blank line; columns converted per :class:`Field`.

    Raises:
        DataError: Wrong field count, an unparsable value (message names the
            file, line, column and the expectation), bad encoding or no rows.
    """
    num_fields = len(fields) + extra_columns
    names = [f.column for f in fields] + [f"extra{i}" for i in range(extra_columns)]
    try:
        frame = pd.read_csv(
            path,
            sep=r"\s+" if sep is None else sep,
            header=None,
            dtype=str,
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            encoding=encoding,
            engine="c",
        )
        parse_failed = frame.shape[1] != num_fields
    except pd.errors.EmptyDataError:
        frame, parse_failed = pd.DataFrame(columns=names), False
    except pd.errors.ParserError:
        frame, parse_failed = None, True
    except UnicodeDecodeError as err:
        raise decode_error(path, err, encoding) from err
    converted, bad_row, kinds = None, -1, {f.column: str(f.kind) for f in fields}
    if not parse_failed:
        frame.columns = names
        converted, bad_row, kinds = _convert(frame, fields)
    if parse_failed or bad_row >= 0:
        positions = [(i, f, kinds[f.column]) for i, f in enumerate(fields)]
        error = _first_bad_record(path, sep, encoding, False, False, positions, num_fields)
        if error is None:  # pragma: no cover - the scan disagrees with pandas
            error = DataError(f"{path}: data row {bad_row + 1}: could not be parsed")
        raise error
    if len(frame) == 0:
        raise DataError(f"{path}: no data (the file is empty)")
    for i in range(extra_columns):
        converted[f"extra{i}"] = frame[f"extra{i}"]
    return converted


def read_with_header(
    path: Path,
    fields: Sequence[Field],
    sep: str = ",",
    encoding: str = "utf-8",
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Reads a delimited file whose first line names the columns (quotes allowed).

    Args:
        path: The file.
        fields: Columns that must exist, located by header name.
        sep: Field separator.
        encoding: Text encoding.
        keep: Further header columns to return unconverted (as text) when present.

    Returns:
        One row per record with the ``fields`` columns converted.

    Raises:
        DataError: A missing column (the message lists the header), wrong field
            count, an unparsable value (file, line, column), bad encoding or no rows.
    """
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, na_filter=False, encoding=encoding)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the file is empty; expected a header line and rows") from err
    except pd.errors.ParserError:
        frame = None
    except UnicodeDecodeError as err:
        raise decode_error(path, err, encoding) from err
    header = _header(path, sep, encoding)
    missing = [f.column for f in fields if f.column not in header]
    if missing:
        raise DataError(
            f"{path}: line 1 (header): missing column(s) {missing}; the header has {header}"
        )
    converted, bad_row, kinds = None, -1, {f.column: str(f.kind) for f in fields}
    if frame is not None:
        frame.columns = [str(c).strip() for c in frame.columns]  # "a, b" headers
        converted, bad_row, kinds = _convert(frame, fields)
    if frame is None or bad_row >= 0:
        positions = [(header.index(f.column), f, kinds[f.column]) for f in fields]
        error = _first_bad_record(path, sep, encoding, True, True, positions, len(header))
        if error is None:  # pragma: no cover - the scan disagrees with pandas
            error = DataError(f"{path}: data row {bad_row + 1}: could not be parsed")
        raise error
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows after the header")
    for column in keep:
        if column in frame.columns and column not in converted.columns:
            converted[column] = frame[column]
    return converted


def _header(path: Path, sep: str, encoding: str) -> list[str]:
    with path.open("r", encoding=encoding, newline="") as handle:
        first = next(csv.reader(io.StringIO(handle.readline()), delimiter=sep), [])
    return [name.strip() for name in first]


def read_parquet_columns(  # noqa: PLR0912
    path: Path, fields: Sequence[Field], keep: Sequence[str] = ()
) -> pd.DataFrame:
    """Reads and validates columns of a Parquet file (errors name the 1-based row).

    Typed columns are accepted as they are: integer or datetime time columns,
    numeric ratings, integer or string ids.

    Raises:
        DataError: A missing column, a null/unparsable value (file, row,
            column, expectation) or no rows.
    """
    try:
        schema_names = list(pq.read_schema(path).names)
    except Exception as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    missing = [f.column for f in fields if f.column not in schema_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {schema_names}")
    wanted = [f.column for f in fields] + [c for c in keep if c in schema_names]
    raw = pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))
    if len(raw) == 0:
        raise DataError(f"{path}: no data rows")
    text = pd.DataFrame(index=raw.index)
    direct = {}
    for field in fields:
        column = raw[field.column]
        if field.kind == "time" and pd.api.types.is_datetime64_any_dtype(column):
            null = column.isna().to_numpy()
            if null.any():
                raise _row_error(path, int(np.argmax(null)), field, "a date/time", None)
            utc = column.dt.tz_localize("UTC") if column.dt.tz is None else column
            direct[field.column] = ((utc - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
            text[field.column] = "0"
            continue
        null = column.isna().to_numpy()
        if null.any():
            raise _row_error(path, int(np.argmax(null)), field, _EXPECT[field.kind], None)
        if pd.api.types.is_float_dtype(column) and field.kind in ("id", "int_id", "int"):
            column = column.astype(np.int64) if (column % 1 == 0).all() else column
        text[field.column] = column.astype(str)
    converted, bad_row, kinds = _convert(text, fields)
    if bad_row >= 0:
        for field in fields:
            value = str(text[field.column].iloc[bad_row])
            if not _check_value(value, kinds[field.column]):
                raise _row_error(path, bad_row, field, _EXPECT[kinds[field.column]], value)
    for name, values in direct.items():
        converted[name] = values
    for column in keep:
        if column in raw.columns and column not in converted.columns:
            converted[column] = raw[column]
    return converted


def _row_error(path: Path, row: int, field: Field, expected: str, value: str | None) -> DataError:
    got = "a null value" if value is None else _describe(value)
    return DataError(
        f"{path}: row {row + 1}, column '{field.column}' ({field.label}): got {got}; "
        f"expected {expected}"
    )


def line_of_row(
    path: Path,
    row: int,
    sep: str | None,
    *,
    encoding: str = "utf-8",
    quoted: bool = False,
    header: bool = False,
) -> int:
    """The 1-based line where data row ``row`` (0-based, blank lines skipped) starts."""
    records = _records(path, sep, encoding, quoted)
    if header:
        next(records, None)
    for i, (line, _) in enumerate(records):
        if i == row:
            return line
    raise ValueError(f"{path}: has no data row {row}")


def split_genres(values: pd.Series, sep: str, none_marker: str = "") -> list[list[str]]:
    """Splits ``sep``-joined genre strings into lists; ``""``/``none_marker`` -> ``[]``."""
    out = []
    for value in values.astype(str):
        text = value.strip()
        if not text or text == none_marker:
            out.append([])
        else:
            out.append([g.strip() for g in text.split(sep) if g.strip()])
    return out


def check_unique_ids(
    path: Path, ids: pd.Series, sep: str | None, *, quoted: bool, header: bool
) -> None:
    """Raises a DataError at the first id that repeats an earlier row's id.

    The message names both lines (rows, for Parquet files).
    """
    dup = ids.duplicated().to_numpy()
    if not dup.any():
        return
    row = int(np.argmax(dup))
    item = ids.iloc[row]
    first = int(np.argmax((ids == item).to_numpy()))
    if path.suffix.lower() in (".parquet", ".pq"):
        where, before = f"row {row + 1}", f"row {first + 1}"
    else:
        kw = {"quoted": quoted, "header": header}
        where = f"line {line_of_row(path, row, sep, **kw)}"
        before = f"line {line_of_row(path, first, sep, **kw)}"
    raise DataError(
        f"{path}: {where}: item id {item!r} already appeared at {before}; expected one row per item"
    )
