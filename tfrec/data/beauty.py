"""Amazon Beauty loaders, S3-Rec and BERT4Rec releases (formats in :mod:`tfrec.data.loaders`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tfrec.data import download as dl
from tfrec.data.interactions import DataError, Interactions
from tfrec.data.parsing import Field, read_headerless

PathLike = str | os.PathLike[str]

# Amazon Beauty releases: dataset name -> (folder, file, paper, repository holding data/<file>).
_BEAUTY_RELEASES: dict[str, tuple[str, str, str, str]] = {
    "beauty": ("amazon-beauty-s3rec", "Beauty.txt", "S3-Rec", "github.com/RUCAIBox/CIKM2020-S3Rec"),
    "beauty-bert4rec": (
        "amazon-beauty-bert4rec",
        "beauty.txt",
        "BERT4Rec",
        "github.com/FeiSun/BERT4Rec",
    ),
}


def _locate_beauty(name: str, data_dir: PathLike | None, download: bool) -> Path:
    """The file of an Amazon Beauty release; the not-found error says where to get it."""
    folder, filename, paper, repository = _BEAUTY_RELEASES[name]
    how_to_get = (
        f"It cannot be downloaded automatically: save data/{filename} from the {paper} "
        f"repository ({repository}) as {folder}/{filename} in the data directory."
    )
    return dl.locate(name, folder, filename, data_dir, download=download, how_to_get=how_to_get)


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
    path = _locate_beauty("beauty", data_dir, download)
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
    return inter.clean(min_user_interactions, min_item_interactions)


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
    path = _locate_beauty("beauty-bert4rec", data_dir, download)
    fields = [Field("user_id", "int_id", "user id"), Field("item_id", "int_id", "item id")]
    frame = read_headerless(path, fields, None)
    inter = Interactions.from_frame(
        frame, name="beauty-bert4rec", has_ratings=False, has_timestamps=False
    )
    return inter.clean(min_user_interactions, min_item_interactions)
