"""MovieLens loaders: ``ml-100k`` and ``ml-latest-small`` (formats in :mod:`tfrec.data.loaders`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfrec.data import download as dl
from tfrec.data.interactions import DataError, Interactions
from tfrec.data.parsing import (
    Field,
    check_unique_ids,
    line_of_row,
    read_headerless,
    read_with_header,
    split_genres,
)
from tfrec.data.text_checks import check_final_newline

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Data rows of the published files (GroupLens ml-100k, ml-latest-small 2018-09-26;
# checked against the sha256-verified copies). Every published file ends with a newline.
PUBLISHED_ROWS: dict[str, dict[str, int]] = {
    "ml-100k": {"u.data": 100_000, "u.item": 1_682, "u.user": 943, "u.genre": 19},
    "ml-latest-small": {"ratings.csv": 100_836, "movies.csv": 9_742},
}


def _check_complete(dataset: str, path: Path) -> None:
    """Fails when a published file lacks its final newline (a cut-off last row)."""
    check_final_newline(path, f"every line of the published {dataset} {path.name} ends with one")


def _check_published(dataset: str, path: Path, rows: int) -> None:
    """Checks a parsed published file: fails on a cut-off last row, warns on a row count.

    Raises:
        DataError: The file does not end with a newline.
    """
    _check_complete(dataset, path)
    expected = PUBLISHED_ROWS[dataset][path.name]
    if rows != expected:
        logger.warning(
            "%s: %s has %s data rows; the published %s has %s (a truncated, edited or "
            "different copy? compare its sha256 with the GroupLens release)",
            dataset,
            path,
            f"{rows:,}",
            path.name,
            f"{expected:,}",
        )


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
    _check_published("ml-100k", path, len(frame))
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
    _check_published("ml-100k", path, len(raw))
    check_unique_ids(path, raw["item_id"], "|", quoted=False, header=False, encoding="latin-1")
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
    _check_published("ml-100k", path, len(users))
    check_unique_ids(
        path, users["user_id"], "|", quoted=False, header=False, encoding="latin-1", label="user"
    )
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
    data_path = dl.locate("ml-100k", "ml-100k", "u.data", data_dir, download=download)
    fields = [
        Field("user_id", "int_id", "user id"),
        Field("item_id", "int_id", "item id"),
        Field("rating", "number", "rating"),
        Field("timestamp", "int", "unix timestamp"),
    ]
    frame = read_headerless(data_path, fields, "\t")
    _check_published("ml-100k", data_path, len(frame))
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
    return inter.clean(min_user_interactions, min_item_interactions)


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
    path = dl.locate(
        "ml-latest-small", "ml-latest-small", "ratings.csv", data_dir, download=download
    )
    fields = [
        Field("userId", "int_id", "user id"),
        Field("movieId", "int_id", "movie id"),
        Field("rating", "number", "rating"),
        Field("timestamp", "int", "unix timestamp"),
    ]
    frame = read_with_header(path, fields).rename(
        columns={"userId": "user_id", "movieId": "item_id"}
    )
    _check_published("ml-latest-small", path, len(frame))
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
                "genres": split_genres(movies["genres"], "|", "(no genres listed)"),
            }
        )
        _check_published("ml-latest-small", movies_path, len(items))
        check_unique_ids(movies_path, items["item_id"], ",", quoted=True, header=True)
    else:
        logger.warning("ml-latest-small: %s not found; loading without item features", movies_path)
    inter = Interactions.from_frame(frame, items=items, name="ml-latest-small", has_timestamps=True)
    return inter.clean(min_user_interactions, min_item_interactions)
