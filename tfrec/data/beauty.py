"""Amazon Beauty, BERT4Rec release (format in :mod:`tfrec.data.loaders`).

The S3-Rec release of Amazon Beauty is read by :mod:`tfrec.data.s3rec` with the
other S3-Rec releases.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfrec.data import download as dl
from tfrec.data.interactions import Interactions
from tfrec.data.parsing import Field, read_headerless

PathLike = str | os.PathLike[str]

# Amazon Beauty releases: dataset name -> (folder, file, paper, repository holding data/<file>).
_BEAUTY_RELEASES: dict[str, tuple[str, str, str, str]] = {
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
