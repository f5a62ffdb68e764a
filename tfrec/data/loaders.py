"""Loaders for the supported datasets; each returns :class:`Interactions`.

Formats read (one loader each):

* ``ml-100k`` (MovieLens 100K): ``u.data`` (tab-separated ``user item rating
  unix_time``, no header), ``u.item`` (Latin-1, ``|``-separated ``id|title|
  release date|video release date|IMDb URL|`` + one 0/1 flag per genre),
  ``u.genre`` (``name|index``), ``u.user`` (``id|age|gender|occupation|zip``,
  returned as :attr:`Interactions.users`).
* ``ml-latest-small`` (MovieLens latest-small): ``ratings.csv``
  (``userId,movieId,rating,timestamp``) and ``movies.csv`` (``movieId,title,
  genres``; titles may be quoted and contain commas; genres ``|``-separated,
  ``(no genres listed)`` = none).
* ``beauty``, ``sports``, ``lastfm`` (the S3-Rec releases of Amazon Beauty, Amazon
  Sports and Outdoors and Last.fm, :mod:`tfrec.data.s3rec`) and ``s3rec`` (any file
  in that format: ``path``, optional ``attributes_path``): one line per user
  ``user item1 item2 ...`` in chronological order; no times, so ``timestamp`` is
  the position in the sequence; the optional ``*_item2attributes.json`` (item id ->
  attribute ids) becomes the items' ``genres``; no titles.
* ``beauty-bert4rec`` (BERT4Rec release, ``amazon-beauty-bert4rec/beauty.txt``):
  ``user item`` per line, chronological within a user; ``timestamp`` = position.
* ``csv`` (any CSV/TSV or Parquet file): user-named columns for user, item and
  optionally timestamp (unix seconds or date/time strings) and rating, plus an
  optional item file (item id, optional title, optional separator-joined genres).

Cleaning policy (every step is logged at INFO and recorded in
:attr:`Interactions.notes` with counts; nothing is dropped silently):

* exact duplicate rows (same user, item and timestamp) are dropped, keeping the
  first; repeated (user, item) pairs at different times are kept, because
  re-consumption is real signal;
* optional k-core filtering (``min_user_interactions``,
  ``min_item_interactions``), repeated until stable.

Malformed input raises :class:`DataError` naming the file, the 1-based line
(or the column/row for Parquet) and what was expected; a missing file raises
:class:`~tfrec.data.download.DatasetNotFoundError` (a ``FileNotFoundError``)
listing the paths tried and how to get the data.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tfrec.data.beauty import load_beauty_bert4rec
from tfrec.data.interactions import Interactions
from tfrec.data.movielens import load_movielens_100k, load_movielens_latest_small
from tfrec.data.parsing import Field
from tfrec.data.prepare_inputs import read_items_table, read_table
from tfrec.data.s3rec import load_beauty_s3rec, load_lastfm_s3rec, load_s3rec, load_sports_s3rec

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def check_distinct_columns(columns: dict[str, str | None], options: dict[str, str]) -> None:
    """Raises a ValueError when two column arguments name the same column.

    Args:
        columns: Argument name -> column name (None = not used), e.g.
            ``{"user_col": "user_id", "item_col": "item_id", "time_col": None}``.
        options: Argument name -> how the user gave it, e.g. ``"--user-col"``.
    """
    seen: dict[str, str] = {}
    for argument, column in columns.items():
        if not column:
            continue
        if column in seen:
            first = seen[column]
            raise ValueError(
                f"{first}={column!r} and {argument}={column!r} ({options.get(first, first)}, "
                f"{options.get(argument, argument)}) name the same column; expected a "
                "different column for each"
            )
        seen[column] = argument


CSV_OPTIONS = {
    "user_col": "--user-col",
    "item_col": "--item-col",
    "time_col": "--time-col",
    "rating_col": "--rating-col",
}


def load_interactions_file(
    path: PathLike,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = None,
    rating_col: str | None = None,
    *,
    sep: str | None = None,
    items_path: PathLike | None = None,
    item_id_col: str | None = None,
    title_col: str | None = None,
    genres_col: str | None = None,
    genres_sep: str = "|",
    name: str | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads interactions from any CSV/TSV (with a header) or Parquet file.

    Args:
        path: ``.parquet``/``.pq`` is read as Parquet, anything else as text.
        user_col: Column holding user ids.
        item_col: Column holding item ids.
        time_col: Optional time column: integer unix seconds, or date/time
            strings (naive ones are taken as UTC; Parquet datetimes accepted).
            Without it, ``timestamp`` is the row's position within its user.
        rating_col: Optional numeric rating column.
        sep: Field separator for text files (default tab for ``.tsv``, else comma).
        items_path: Optional item file (CSV/TSV/Parquet with a header).
        item_id_col: Item id column of ``items_path`` (default ``item_col``).
        title_col: Optional title column of ``items_path``.
        genres_col: Optional genres column of ``items_path``, ``genres_sep``-joined.
        genres_sep: Separator inside the genres column.
        name: Dataset name (default: the file name without suffix).
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        The validated, sorted Interactions.

    Raises:
        ValueError: Two of user_col, item_col, time_col, rating_col are the same column.
        DatasetNotFoundError: A file does not exist.
        DataError: A missing column, an unparsable value (file, line or row,
            column, expectation), duplicate item rows or no data.
    """
    check_distinct_columns(
        {
            "user_col": user_col,
            "item_col": item_col,
            "time_col": time_col,
            "rating_col": rating_col,
        },
        CSV_OPTIONS,
    )
    path = Path(path)
    frame = _read_interaction_columns(
        path, sep, user_col=user_col, item_col=item_col, time_col=time_col, rating_col=rating_col
    )
    items = None
    if items_path is not None:
        items = read_items_table(
            items_path, item_id_col or item_col, title_col, genres_col, genres_sep, sep=sep
        )
    inter = Interactions.from_frame(
        frame,
        items=items,
        name=name or path.stem,
        has_ratings=bool(rating_col),
        has_timestamps=bool(time_col),
    )
    return inter.clean(min_user_interactions, min_item_interactions)


def _read_interaction_columns(
    path: Path,
    sep: str | None,
    *,
    user_col: str,
    item_col: str,
    time_col: str | None,
    rating_col: str | None,
) -> pd.DataFrame:
    """The interaction file's columns, checked and renamed to the Interactions schema.

    Returns:
        ``user_id``, ``item_id`` and, when their columns are given, ``timestamp``
        and ``rating``.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DataError: A missing column, an unparsable value or no data.
    """
    fields = [Field(user_col, "id", "user id"), Field(item_col, "id", "item id")]
    if time_col:
        fields.append(Field(time_col, "time", "timestamp"))
    if rating_col:
        fields.append(Field(rating_col, "number", "rating"))
    raw = read_table(path, fields, sep)
    frame = pd.DataFrame({"user_id": raw[user_col], "item_id": raw[item_col]})
    if time_col:
        frame["timestamp"] = raw[time_col]
    if rating_col:
        frame["rating"] = raw[rating_col]
    return frame


def _load_synthetic(**kwargs: Any) -> Interactions:
    from tfrec.data.synthetic import make_synthetic  # noqa: PLC0415  (avoid an import cycle)

    min_user = kwargs.pop("min_user_interactions", 0)
    min_item = kwargs.pop("min_item_interactions", 0)
    return make_synthetic(**kwargs).clean(min_user, min_item)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: what ``load_dataset(name)`` loads.

    Attributes:
        name: Registry key.
        description: One line for ``--help``.
        loader: The function called with the kwargs.
        uses_data_dir: Whether ``data_dir``/``download`` apply.
        downloadable: Whether ``download=True`` can fetch it.
    """

    name: str
    description: str
    loader: Callable[..., Interactions]
    uses_data_dir: bool = True
    downloadable: bool = False


#: The loader of every :data:`tfrec.names.DatasetName` (the names are defined there).
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "ml-100k",
            "MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies, genres, user features",
            load_movielens_100k,
            downloadable=True,
        ),
        DatasetInfo(
            "ml-latest-small",
            "MovieLens latest-small: 100,836 ratings, 610 users, 9,742 movies with genres",
            load_movielens_latest_small,
            downloadable=True,
        ),
        DatasetInfo(
            "beauty",
            "Amazon Beauty 5-core (S3-Rec release): 198,502 events, 12,101 items with "
            "attributes, implicit, order only",
            load_beauty_s3rec,
        ),
        DatasetInfo(
            "sports",
            "Amazon Sports and Outdoors 5-core (S3-Rec release): 296,337 events, 18,357 items "
            "with attributes, implicit, order only",
            load_sports_s3rec,
        ),
        DatasetInfo(
            "lastfm",
            "Last.fm (S3-Rec release): 52,551 events, 1,090 users, 3,646 artists with tags, "
            "implicit, order only",
            load_lastfm_s3rec,
        ),
        DatasetInfo(
            "beauty-bert4rec",
            "Amazon Beauty (BERT4Rec release): 353,962 events, implicit, order only",
            load_beauty_bert4rec,
        ),
        DatasetInfo(
            "csv",
            "any CSV/TSV/Parquet file: path=, user_col=, item_col=, time_col=, rating_col=, "
            "items_path=, ...",
            load_interactions_file,
            uses_data_dir=False,
        ),
        DatasetInfo(
            "s3rec",
            "any file in the S3-Rec release format: path=, attributes_path= (optional)",
            load_s3rec,
            uses_data_dir=False,
        ),
        DatasetInfo(
            "synthetic",
            "generated data with planted genre/sequence structure (make_synthetic kwargs)",
            _load_synthetic,
            uses_data_dir=False,
        ),
    )
}


def load_dataset(
    name: str, data_dir: PathLike | None = None, download: bool = False, **kwargs: Any
) -> Interactions:
    """Loads a registered dataset by name (see :data:`DATASETS`).

    Args:
        name: A :data:`DATASETS` key (``ml-100k``, ``beauty``, ``sports``,
            ``lastfm``, ``csv``, ``s3rec``, ``synthetic``, ...).
        data_dir: Data directory for the file-based datasets; for ``csv`` and
            ``s3rec`` a relative ``path``/``items_path``/``attributes_path`` is
            also looked up inside it.
        download: Fetch a missing MovieLens dataset (sha256-checked).
        **kwargs: Passed to the loader (``min_user_interactions``,
            ``min_item_interactions`` for all; ``path``, ``user_col``, ... for
            ``csv``; ``path``, ``attributes_path`` for ``s3rec``;
            :func:`~tfrec.data.synthetic.make_synthetic` arguments for ``synthetic``).

    Returns:
        The loaded Interactions.

    Raises:
        ValueError: Unknown name or keyword argument (message lists the valid ones).
        DatasetNotFoundError: Files missing.
        DataError: Malformed files.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    info = DATASETS[name]
    if name == "synthetic":
        from tfrec.data.synthetic import make_synthetic  # noqa: PLC0415

        accepted = [
            *inspect.signature(make_synthetic).parameters,
            "min_user_interactions",
            "min_item_interactions",
        ]
    else:
        accepted = list(inspect.signature(info.loader).parameters)
    unknown = sorted(set(kwargs) - set(accepted) - {"data_dir", "download"})
    if unknown:
        raise ValueError(
            f"dataset {name!r}: unknown argument(s) {unknown}; accepted: "
            f"{[a for a in accepted if a not in ('data_dir', 'download')]}"
        )
    if info.uses_data_dir:
        return info.loader(data_dir=data_dir, download=download, **kwargs)
    if name in {"csv", "s3rec"}:
        if "path" not in kwargs:
            more = "and user_col=, item_col=" if name == "csv" else "optionally attributes_path="
            raise ValueError(f"dataset {name!r} needs path=<file> ({more})")
        for key in ("path", "items_path", "attributes_path"):
            value = kwargs.get(key)
            if value is not None and data_dir is not None and not Path(value).is_absolute():
                candidate = Path(data_dir) / value
                if candidate.exists() and not Path(value).exists():
                    kwargs[key] = candidate
    return info.loader(**kwargs)
