"""Reading delimited text tables with errors that point at the bad line.

Parsing is vectorised with pandas (every column is first read as text, then
converted). Only when something is wrong does a slow line-by-line scan run, to
find the first offending line and say what was expected there. Line numbers
are 1-based physical lines, as an editor shows them (the header is line 1).
Blank lines are skipped, as pandas does. Files are first checked to be text
(:mod:`tfrec.data.text_checks`); a UTF-8 byte-order mark is dropped. Parquet
files are read by :mod:`tfrec.data.parquet_reader` with the same field kinds.

Field kinds (see :class:`Field`):

* ``"id"``: any non-empty text, kept as ``str``;
* ``"int_id"``: an integer written in decimal, kept as ``str`` (as written);
* ``"int"``: an integer in the int64 range, returned as int64;
* ``"number"``: a finite number, returned as float64;
* ``"time"``: unix seconds (an integer in the int64 range) or a date/time
  string, returned as int64 unix seconds (naive date/times are taken as UTC).
  A column must use one of the two forms throughout.
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

from tfrec.data.interactions import DataError
from tfrec.data.text_checks import check_text, decode_error, python_encoding

Kind = Literal["id", "int_id", "int", "number", "time"]

_INT_RE = re.compile(r"^[+-]?\d+$")
_INT64 = "-9223372036854775808..9223372036854775807"
EXPECT = {
    "id": "a non-empty id",
    "int_id": "an integer id",
    "int": f"an integer in the int64 range {_INT64}",
    "number": "a number",
    "time": "unix seconds (integer) or a date/time string such as 2020-01-31 12:00:00",
    "time_int": (
        f"unix seconds (an integer), like the other rows of this column, in the int64 range "
        f"{_INT64}"
    ),
    "time_date": "a date/time string such as 2020-01-31 12:00:00, like the other rows",
}
EPOCH = pd.Timestamp(0, tz="UTC")


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


def _is_int64(text: str) -> bool:
    return bool(_INT_RE.match(text)) and -(2**63) <= int(text) < 2**63


def _int64_mask(text: pd.Series, is_int: np.ndarray) -> np.ndarray:
    """``is_int`` narrowed to the values that fit int64 (only long ones are checked)."""
    digits = text.str.lstrip("+-").str.lstrip("0").str.len().to_numpy()
    long = np.flatnonzero(is_int & (digits >= 19))  # 18 digits always fit
    out = is_int.copy()
    for row in long:
        out[row] = _is_int64(text.iat[row])
    return out


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
    "int": _is_int64,
    "time_int": _is_int64,
    "number": _is_number,
    "time_date": _is_date,
    "time": lambda text: bool(_INT_RE.match(text)) or _is_date(text),
}


def check_value(value: str, kind: str) -> bool:
    """Whether one text value is valid for ``kind`` (slow path only)."""
    text = value.strip()
    return bool(text) and _CHECKS[kind](text)


def describe_value(value: str) -> str:
    """A value for an error message (``repr``, or "an empty value")."""
    return repr(value) if value.strip() else "an empty value"


def convert_columns(
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
            if field.kind == "int":
                ok = _int64_mask(text, ok)
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
        fits = _int64_mask(text, is_int)
        values = pd.to_numeric(text.where(fits, "0")).to_numpy(dtype=np.int64)
        return values, "time_int", ~fits
    parsed = pd.to_datetime(text.where(~is_int, ""), errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    seconds = ((parsed - EPOCH) // pd.Timedelta(seconds=1)).fillna(0).to_numpy(dtype=np.int64)
    return seconds, "time_date", bad


def _records(
    path: Path, sep: str | None, encoding: str, quoted: bool
) -> Iterator[tuple[int, list[str]]]:
    """Yields (1-based start line, fields) for each non-blank record of a text file."""
    with path.open("r", encoding=python_encoding(encoding), newline="") as handle:
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
        for pos, field, kind in positions:
            value = fields[pos]
            if not check_value(value, kind):
                return DataError(
                    f"{path}: line {line}, column {pos + 1} ({field.label}, "
                    f"'{field.column}'): got {describe_value(value)}; expected {EXPECT[kind]}"
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
    check_text(path, encoding)
    try:
        frame = pd.read_csv(
            path,
            sep=r"\s+" if sep is None else sep,
            header=None,
            dtype=str,
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            encoding=python_encoding(encoding),
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
        converted, bad_row, kinds = convert_columns(frame, fields)
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
    check_text(path, encoding)
    try:
        frame = pd.read_csv(
            path, sep=sep, dtype=str, na_filter=False, encoding=python_encoding(encoding)
        )
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
        converted, bad_row, kinds = convert_columns(frame, fields)
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
    """The header's column names (a UTF-8 BOM dropped).

    Raises:
        DataError: A name that occurs twice (pandas would rename the second one).
    """
    with path.open("r", encoding=python_encoding(encoding), newline="") as handle:
        first = next(csv.reader(io.StringIO(handle.readline()), delimiter=sep), [])
    names = [name.strip() for name in first]
    for column, name in enumerate(names):
        if name and name in names[:column]:
            raise DataError(
                f"{path}: line 1 (header), column {column + 1}: column name {name!r} already "
                f"names column {names.index(name) + 1}; expected unique column names"
            )
    return names


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
    path: Path,
    ids: pd.Series,
    sep: str | None,
    *,
    quoted: bool,
    header: bool,
    encoding: str = "utf-8",
    label: str = "item",
) -> None:
    """Raises a DataError at the first id that repeats an earlier row's id.

    The message names the file and both lines (rows, for Parquet files).

    Args:
        path: The file ``ids`` were read from (one id per data row, in file order).
        ids: The ids.
        sep: The file's field separator (to count lines as the reader did).
        quoted: Whether fields may be quoted (and span lines).
        header: Whether the first record is a header.
        encoding: The file's text encoding.
        label: What the ids are, e.g. ``"item"`` or ``"user"``.
    """
    dup = ids.duplicated().to_numpy()
    if not dup.any():
        return
    row = int(np.argmax(dup))
    value = ids.iloc[row]
    first = int(np.argmax((ids == value).to_numpy()))
    if path.suffix.lower() in (".parquet", ".pq"):
        where, before = f"row {row + 1}", f"row {first + 1}"
    else:
        kw = {"quoted": quoted, "header": header, "encoding": encoding}
        where = f"line {line_of_row(path, row, sep, **kw)}"
        before = f"line {line_of_row(path, first, sep, **kw)}"
    raise DataError(
        f"{path}: {where}: {label} id {value!r} already appeared at {before}; "
        f"expected one row per {label}"
    )
