"""Reading Parquet tables with the text reader's validation (errors name the 1-based row).

Columns are validated with the same field kinds as :mod:`tfrec.data.parsing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tfrec.data.interactions import DataError
from tfrec.data.parsing import EPOCH, EXPECT, Field, check_value, convert_columns, describe_value


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
            direct[field.column] = ((utc - EPOCH) // pd.Timedelta(seconds=1)).to_numpy(np.int64)
            text[field.column] = "0"
            continue
        null = column.isna().to_numpy()
        if null.any():
            raise _row_error(path, int(np.argmax(null)), field, EXPECT[field.kind], None)
        if pd.api.types.is_float_dtype(column) and field.kind in ("id", "int_id", "int"):
            column = column.astype(np.int64) if (column % 1 == 0).all() else column
        text[field.column] = column.astype(str)
    converted, bad_row, kinds = convert_columns(text, fields)
    if bad_row >= 0:
        for field in fields:
            value = str(text[field.column].iloc[bad_row])
            if not check_value(value, kinds[field.column]):
                raise _row_error(path, bad_row, field, EXPECT[kinds[field.column]], value)
    for name, values in direct.items():
        converted[name] = values
    for column in keep:
        if column in raw.columns and column not in converted.columns:
            converted[column] = raw[column]
    return converted


def _row_error(path: Path, row: int, field: Field, expected: str, value: str | None) -> DataError:
    got = "a null value" if value is None else describe_value(value)
    return DataError(
        f"{path}: row {row + 1}, column '{field.column}' ({field.label}): got {got}; "
        f"expected {expected}"
    )
