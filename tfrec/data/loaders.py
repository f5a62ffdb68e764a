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
* ``beauty`` (Amazon Beauty, S3-Rec release, ``amazon-beauty-s3rec/Beauty.txt``):
  one line per user ``user item1 item2 ...`` in chronological order; no times,
  so ``timestamp`` is the position in the sequence.
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

import numpy as np
import pandas as pd

from tfrec.data import download as dl
from tfrec.data.interactions import DataError, Interactions
from tfrec.data.parsing import (
    Field,
    line_of_row,
    read_headerless,
    read_parquet_columns,
    read_with_header,
)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_S3REC_HINT = (
    "It cannot be downloaded automatically: save data/Beauty.txt from the S3-Rec "
    "repository (github.com/RUCAIBox/CIKM2020-S3Rec) as amazon-beauty-s3rec/Beauty.txt "
    "in the data directory."
)
_BERT4REC_HINT = (
    "It cannot be downloaded automatically: save data/beauty.txt from the BERT4Rec "
    "repository (github.com/FeiSun/BERT4Rec) as amazon-beauty-bert4rec/beauty.txt "
    "in the data directory."
)


def _grouplens_hint(name: str, root: Path) -> str:
    info = dl.DOWNLOADS[name]
    return (
        f"Get it with --download (download=True), which fetches {info.url} into {root}, "
        f"or download that zip yourself and unzip it into {root}."
    )


def _locate(
    name: str, subdir: str, filename: str, data_dir: PathLike | None, download: bool
) -> Path:
    """Finds a dataset file, downloading the dataset first when allowed and missing."""
    root = dl.resolve_data_dir(data_dir)
    if name in dl.DOWNLOADS:
        hint = _grouplens_hint(name, root)
    else:
        hint = _S3REC_HINT if subdir == "amazon-beauty-s3rec" else _BERT4REC_HINT
    try:
        return dl.find_dataset_file(name, filename, subdir, data_dir, hint)
    except dl.DatasetNotFoundError:
        if not download or name not in dl.DOWNLOADS:
            raise
    dl.download_and_extract(dl.DOWNLOADS[name], data_dir)
    return dl.find_dataset_file(name, filename, subdir, data_dir, hint)


def _finish(interactions: Interactions, min_user: int, min_item: int) -> Interactions:
    """Applies the duplicate policy and the optional k-core filter, then logs a summary."""
    out = interactions.drop_exact_duplicates().filter_min_interactions(min_user, min_item)
    if out.items is not None:
        known = set(out.items["item_id"])
        unknown = int((~out.frame["item_id"].isin(known)).sum())
        if unknown:
            out.add_note(f"{unknown:,} interaction(s) refer to items absent from the item table")
        cold = len(known - set(out.frame["item_id"]))
        if cold:
            logger.info("%s: %d catalogue item(s) have no interactions", out.name, cold)
    logger.info("loaded %s", out.summary())
    return out


def _check_flags(path: Path, frame: pd.DataFrame, columns: list[str], first_col: int) -> None:
    values = frame[columns].astype(str).apply(lambda c: c.str.strip())
    bad = ~values.isin(["0", "1"]).to_numpy()
    if bad.any():
        row, col = (int(x[0]) for x in np.nonzero(bad))
        line = line_of_row(path, row, "|", encoding="latin-1")
        raise DataError(
            f"{path}: line {line}, column {first_col + col + 1}: got {values.iat[row, col]!r}; "
            f"expected a genre flag 0 or 1"
        )


def _read_ml100k_genres(path: Path) -> list[str]:
    frame = read_headerless(
        path, [Field("name", "id", "genre name"), Field("index", "int", "genre index")], "|"
    )
    frame = frame.sort_values("index", kind="stable")
    expected = list(range(len(frame)))
    if frame["index"].tolist() != expected:
        raise DataError(
            f"{path}: genre indices {frame['index'].tolist()} are not 0..{len(frame) - 1}; "
            f"expected one 'name|index' line per index"
        )
    return frame["name"].tolist()


def _read_ml100k_items(path: Path, genres: list[str]) -> pd.DataFrame:
    fields = [Field("item_id", "int_id", "movie id")]
    raw = read_headerless(path, fields, "|", encoding="latin-1", extra_columns=4 + len(genres))
    flag_cols = [f"extra{4 + i}" for i in range(len(genres))]
    _check_flags(path, raw, flag_cols, first_col=5)
    flags = raw[flag_cols].astype(str).apply(lambda c: c.str.strip()).to_numpy() == "1"
    names = np.asarray(genres, dtype=object)
    return pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(str),
            "title": raw["extra0"].astype(str).str.strip(),
            "genres": [list(names[row]) for row in flags],
            "release_date": raw["extra1"].astype(str).str.strip(),
        }
    )


def _read_ml100k_users(path: Path) -> pd.DataFrame:
    fields = [
        Field("user_id", "int_id", "user id"),
        Field("age", "int", "age"),
        Field("gender", "id", "gender"),
        Field("occupation", "id", "occupation"),
    ]
    users = read_headerless(path, fields, "|", encoding="latin-1", extra_columns=1)
    users = users.rename(columns={"extra0": "zip"})
    users["zip"] = users["zip"].astype(str).str.strip()
    return users


def load_movielens_100k(
    data_dir: PathLike | None = None,
    download: bool = False,
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads MovieLens 100K (``u.data`` + ``u.item``/``u.genre`` + ``u.user``).

    ``u.data`` is required; ``u.item`` (with ``u.genre``) and ``u.user`` are read
    from the same folder when present. Items get their title, genre names from
    ``u.genre`` (e.g. ``["Animation", "Children's", "Comedy"]``) and release date.

    Args:
        data_dir: Data directory (else ``$TFREC_DATA_DIR``, else the cache).
        download: Fetch the GroupLens zip (sha256-checked) when missing.
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Interactions with real ratings (1..5) and unix timestamps.

    Raises:
        DatasetNotFoundError: ``u.data`` not found (or ``u.genre`` missing
            beside ``u.item``).
        DataError: Malformed content (file, line, column, expectation).
    """
    data_path = _locate("ml-100k", "ml-100k", "u.data", data_dir, download)
    fields = [
        Field("user_id", "int_id", "user id"),
        Field("item_id", "int_id", "item id"),
        Field("rating", "number", "rating"),
        Field("timestamp", "int", "unix timestamp"),
    ]
    frame = read_headerless(data_path, fields, "\t")
    folder = data_path.parent
    items = None
    if (folder / "u.item").is_file():
        genre_path = folder / "u.genre"
        if not genre_path.is_file():
            raise dl.DatasetNotFoundError(
                f"ml-100k: {genre_path} not found; it names the genre columns of "
                f"{folder / 'u.item'} (both come in the GroupLens ml-100k.zip)"
            )
        items = _read_ml100k_items(folder / "u.item", _read_ml100k_genres(genre_path))
    else:
        logger.warning("ml-100k: %s not found; loading without item features", folder / "u.item")
    users = _read_ml100k_users(folder / "u.user") if (folder / "u.user").is_file() else None
    inter = Interactions.from_frame(
        frame, items=items, name="ml-100k", has_timestamps=True, users=users
    )
    return _finish(inter, min_user_interactions, min_item_interactions)


def _split_genres(values: pd.Series, sep: str, none_marker: str = "") -> list[list[str]]:
    out = []
    for value in values.astype(str):
        text = value.strip()
        if not text or text == none_marker:
            out.append([])
        else:
            out.append([g.strip() for g in text.split(sep) if g.strip()])
    return out


def load_movielens_latest_small(
    data_dir: PathLike | None = None,
    download: bool = False,
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads MovieLens latest-small (``ratings.csv`` + ``movies.csv``).

    Ratings are 0.5..5.0 in half stars. ``movies.csv`` (read when present beside
    ``ratings.csv``) gives every catalogue movie, also unrated ones.

    Args:
        data_dir: Data directory (else ``$TFREC_DATA_DIR``, else the cache).
        download: Fetch the GroupLens zip (sha256-checked) when missing.
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Interactions with ratings, unix timestamps and an item table.

    Raises:
        DatasetNotFoundError: ``ratings.csv`` not found.
        DataError: Malformed content (file, line, column, expectation).
    """
    path = _locate("ml-latest-small", "ml-latest-small", "ratings.csv", data_dir, download)
    fields = [
        Field("userId", "int_id", "user id"),
        Field("movieId", "int_id", "movie id"),
        Field("rating", "number", "rating"),
        Field("timestamp", "int", "unix timestamp"),
    ]
    frame = read_with_header(path, fields).rename(
        columns={"userId": "user_id", "movieId": "item_id"}
    )
    items = None
    movies_path = path.parent / "movies.csv"
    if movies_path.is_file():
        movies = read_with_header(
            movies_path, [Field("movieId", "int_id", "movie id")], keep=("title", "genres")
        )
        for column in ("title", "genres"):
            if column not in movies.columns:
                raise DataError(f"{movies_path}: line 1 (header): missing column '{column}'")
        items = pd.DataFrame(
            {
                "item_id": movies["movieId"].astype(str),
                "title": movies["title"].astype(str).str.strip(),
                "genres": _split_genres(movies["genres"], "|", "(no genres listed)"),
            }
        )
        _check_unique_items(movies_path, items, sep=",", quoted=True, header=True)
    else:
        logger.warning("ml-latest-small: %s not found; loading without item features", movies_path)
    inter = Interactions.from_frame(frame, items=items, name="ml-latest-small", has_timestamps=True)
    return _finish(inter, min_user_interactions, min_item_interactions)


def _check_unique_items(
    path: Path, items: pd.DataFrame, sep: str | None, *, quoted: bool, header: bool
) -> None:
    dup = items["item_id"].duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        item = items["item_id"].iloc[row]
        first = int(np.argmax((items["item_id"] == item).to_numpy()))
        if path.suffix.lower() in (".parquet", ".pq"):
            where, before = f"row {row + 1}", f"row {first + 1}"
        else:
            kw = {"quoted": quoted, "header": header}
            where = f"line {line_of_row(path, row, sep, **kw)}"
            before = f"line {line_of_row(path, first, sep, **kw)}"
        raise DataError(
            f"{path}: {where}: item id {item!r} already appeared at {before}; "
            f"expected one row per item"
        )


def load_beauty_s3rec(
    data_dir: PathLike | None = None,
    download: bool = False,
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads Amazon Beauty as released with S3-Rec (``Beauty.txt``).

    Each line is ``user item1 item2 ...`` (whitespace-separated integer ids, items
    in chronological order). There are no times or ratings: ``timestamp`` is the
    0-based position in the user's sequence (a user on several lines continues
    their sequence in file order) and ``rating`` is NaN.

    Args:
        data_dir: Data directory (else ``$TFREC_DATA_DIR``, else the cache).
        download: Not available for this dataset (the error says how to get it).
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Implicit-feedback Interactions with sequence order as timestamps.

    Raises:
        DatasetNotFoundError: ``Beauty.txt`` not found.
        DataError: A line without items, a non-integer id, or an empty file.
    """
    path = _locate("beauty", "amazon-beauty-s3rec", "Beauty.txt", data_dir, download)
    users: list[str] = []
    items: list[str] = []
    lengths: list[int] = []
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DataError(
                    f"{path}: line {number}: found only {len(parts)} field; expected a user id "
                    f"followed by at least one item id"
                )
            if not "".join(parts).isdigit():
                column = next(i for i, p in enumerate(parts) if not p.isdigit())
                label = "user id" if column == 0 else "item id"
                raise DataError(
                    f"{path}: line {number}, field {column + 1} ({label}): got {parts[column]!r}; "
                    f"expected an integer id"
                )
            users.append(parts[0])
            items.extend(parts[1:])
            lengths.append(len(parts) - 1)
    if not users:
        raise DataError(f"{path}: no data (the file is empty)")
    frame = pd.DataFrame(
        {"user_id": np.repeat(np.asarray(users, dtype=object), lengths), "item_id": items}
    )
    inter = Interactions.from_frame(frame, name="beauty", has_ratings=False, has_timestamps=False)
    repeated = len(users) - len(set(users))
    if repeated:
        inter.add_note(f"{repeated:,} user line(s) repeat an earlier user; sequences concatenated")
    return _finish(inter, min_user_interactions, min_item_interactions)


def load_beauty_bert4rec(
    data_dir: PathLike | None = None,
    download: bool = False,
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads Amazon Beauty as released with BERT4Rec (``beauty.txt``).

    Each line is ``user item`` (whitespace-separated integer ids), chronological
    within a user. ``timestamp`` is the 0-based position in the user's sequence;
    ``rating`` is NaN.

    Args:
        data_dir: Data directory (else ``$TFREC_DATA_DIR``, else the cache).
        download: Not available for this dataset (the error says how to get it).
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Implicit-feedback Interactions with sequence order as timestamps.

    Raises:
        DatasetNotFoundError: ``beauty.txt`` not found.
        DataError: Not exactly two integer fields on a line, or an empty file.
    """
    path = _locate("beauty-bert4rec", "amazon-beauty-bert4rec", "beauty.txt", data_dir, download)
    fields = [Field("user_id", "int_id", "user id"), Field("item_id", "int_id", "item id")]
    frame = read_headerless(path, fields, None)
    inter = Interactions.from_frame(
        frame, name="beauty-bert4rec", has_ratings=False, has_timestamps=False
    )
    return _finish(inter, min_user_interactions, min_item_interactions)


def _read_table(
    path: Path, fields: list[Field], sep: str | None, keep: tuple[str, ...] = ()
) -> pd.DataFrame:
    if not path.is_file():
        raise dl.DatasetNotFoundError(f"{path}: file not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        return read_parquet_columns(path, fields, keep=keep)
    if sep is None:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return read_with_header(path, fields, sep=sep, keep=keep)


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
        DatasetNotFoundError: A file does not exist.
        DataError: A missing column, an unparsable value (file, line or row,
            column, expectation), duplicate item rows or no data.
    """
    path = Path(path)
    fields = [Field(user_col, "id", "user id"), Field(item_col, "id", "item id")]
    if time_col:
        fields.append(Field(time_col, "time", "timestamp"))
    if rating_col:
        fields.append(Field(rating_col, "number", "rating"))
    raw = _read_table(path, fields, sep)
    frame = pd.DataFrame({"user_id": raw[user_col], "item_id": raw[item_col]})
    if time_col:
        frame["timestamp"] = raw[time_col]
    if rating_col:
        frame["rating"] = raw[rating_col]
    items = None
    if items_path is not None:
        items_path = Path(items_path)
        id_col = item_id_col or item_col
        keep = tuple(c for c in (title_col, genres_col) if c)
        table = _read_table(items_path, [Field(id_col, "id", "item id")], sep, keep=keep)
        for column in keep:
            if column not in table.columns:
                raise DataError(
                    f"{items_path}: missing column '{column}'; check title_col/genres_col"
                )
        items = pd.DataFrame({"item_id": table[id_col].astype(str)})
        items["title"] = table[title_col].fillna("").astype(str).str.strip() if title_col else ""
        items["genres"] = (
            _split_genres(table[genres_col].fillna(""), genres_sep)
            if genres_col
            else [[] for _ in range(len(items))]
        )
        text_sep = sep or ("\t" if items_path.suffix.lower() == ".tsv" else ",")
        _check_unique_items(items_path, items, text_sep, quoted=True, header=True)
    inter = Interactions.from_frame(
        frame,
        items=items,
        name=name or path.stem,
        has_ratings=bool(rating_col),
        has_timestamps=bool(time_col),
    )
    return _finish(inter, min_user_interactions, min_item_interactions)


def _load_synthetic(**kwargs: Any) -> Interactions:
    from tfrec.data.synthetic import make_synthetic  # noqa: PLC0415  (avoid an import cycle)

    min_user = kwargs.pop("min_user_interactions", 0)
    min_item = kwargs.pop("min_item_interactions", 0)
    return _finish(make_synthetic(**kwargs), min_user, min_item)


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
            "Amazon Beauty 5-core (S3-Rec release): 198,502 events, implicit, order only",
            load_beauty_s3rec,
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
        name: One of ``ml-100k``, ``ml-latest-small``, ``beauty``,
            ``beauty-bert4rec``, ``csv``, ``synthetic``.
        data_dir: Data directory for the file-based datasets; for ``csv`` a
            relative ``path``/``items_path`` is also looked up inside it.
        download: Fetch a missing MovieLens dataset (sha256-checked).
        **kwargs: Passed to the loader (``min_user_interactions``,
            ``min_item_interactions`` for all; ``path``, ``user_col``, ... for
            ``csv``; :func:`~tfrec.data.synthetic.make_synthetic` arguments for
            ``synthetic``).

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
    if name == "csv":
        if "path" not in kwargs:
            raise ValueError("dataset 'csv' needs path=<file> (and user_col=, item_col=)")
        for key in ("path", "items_path"):
            value = kwargs.get(key)
            if value is not None and data_dir is not None and not Path(value).is_absolute():
                candidate = Path(data_dir) / value
                if candidate.exists() and not Path(value).exists():
                    kwargs[key] = candidate
    return info.loader(**kwargs)
