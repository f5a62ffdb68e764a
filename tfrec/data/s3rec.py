"""The S3-Rec release format: ``user item1 item2 ...`` sequences plus item attributes.

S3-Rec (Zhou et al., CIKM 2020, github.com/RUCAIBox/CIKM2020-S3Rec) released its
benchmark datasets (Amazon Beauty, Amazon Sports and Outdoors, Last.fm, ...) as:

* ``<Name>.txt``: one line per user, ``user_id item_1 ... item_n``, space-separated
  integer ids, items in chronological order. There are no times and no ratings, so
  ``timestamp`` is the 0-based position in the user's line and ``rating`` is NaN.
* ``<Name>_item2attributes.json`` (optional): one JSON object mapping each item id
  (a string, ``"1"``) to a list of integer attribute ids (Amazon: categories and
  brand; Last.fm: the artist's tags). The ids have no names in the release. They
  become the items' ``genres`` (attribute ids as strings, repeats removed), so the
  candidate tower reads them as its multi-hot genre feature
  (:mod:`tfrec.data.item_features`). The release has no titles: ``title`` is ``""``.

:func:`load_s3rec` reads any such pair of files (``--dataset s3rec --path FILE
[--attributes-path FILE]``); :func:`load_release` reads the named releases of
:data:`RELEASES` from the data directory and warns when their counts differ from
the published ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrec.data import download as dl
from tfrec.data.interactions import DataError, Interactions
from tfrec.data.text_checks import check_final_newline, decode_error

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_LINE_FORMAT = "'user_id item_1 item_2 ...' (integer ids, one line per user)"
_ATTRIBUTES_FORMAT = (
    'a JSON object mapping each item id (a string such as "1") to a list of integer ids'
)
_MAX_ID_DIGITS = 18  # every id fits an int64


@dataclasses.dataclass(frozen=True)
class S3RecRelease:
    """A published S3-Rec release and its counts (from the shared datasets' README).

    Attributes:
        name: Dataset name (:data:`tfrec.names.DatasetName`).
        folder: Its folder in the shared data layout.
        stem: The files' stem: ``<stem>.txt`` and ``<stem>_item2attributes.json``.
        rows: Interactions in the published file.
        users: Users (lines) in the published file.
        items: Distinct items in the published file (each has an attribute entry).
        attribute_ids: Distinct attribute ids in the published attribute file.
    """

    name: str
    folder: str
    stem: str
    rows: int
    users: int
    items: int
    attribute_ids: int

    @property
    def sequences(self) -> str:
        """The sequence file's name."""
        return f"{self.stem}.txt"

    @property
    def attributes(self) -> str:
        """The attribute file's name."""
        return f"{self.stem}_item2attributes.json"


#: The named S3-Rec releases (commit 2a81540 of RUCAIBox/CIKM2020-S3Rec, data/).
RELEASES: dict[str, S3RecRelease] = {
    name: S3RecRelease(name, *fields)
    for name, fields in {
        "beauty": ("amazon-beauty-s3rec", "Beauty", 198_502, 22_363, 12_101, 637),
        "sports": ("amazon-sports-s3rec", "Sports_and_Outdoors", 296_337, 35_598, 18_357, 2_277),
        "lastfm": ("lastfm-s3rec", "LastFM", 52_551, 1_090, 3_646, 388),
    }.items()
}


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a bad byte is reported with its line and column."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise decode_error(path, err, "utf-8") from None


def _is_id(token: str) -> bool:
    return token.isascii() and token.isdigit() and len(token) <= _MAX_ID_DIGITS


def read_sequences(path: PathLike) -> pd.DataFrame:
    """Reads an S3-Rec sequence file.

    Args:
        path: The ``user item1 item2 ...`` file.

    Returns:
        Columns ``user_id``, ``item_id`` (int64) and ``timestamp`` (the 0-based
        position in the user's line), in file order.

    Raises:
        DataError: An empty line, a line without items, a non-integer id, a user
            on a second line, or no data; the message names the file, the
            1-based line and what was expected.
    """
    path = Path(path)
    users: list[int] = []
    items: list[int] = []
    lengths: list[int] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            raise DataError(f"{path}: line {number}: the line is empty; expected {_LINE_FORMAT}")
        if len(parts) < 2:
            raise DataError(
                f"{path}: line {number}: found only {len(parts)} field; expected a user id "
                f"followed by at least one item id"
            )
        if not all(_is_id(p) for p in parts):
            column = next(i for i, p in enumerate(parts) if not _is_id(p))
            label = "user id" if column == 0 else "item id"
            raise DataError(
                f"{path}: line {number}, field {column + 1} ({label}): got {parts[column]!r}; "
                f"expected an integer id"
            )
        user = str(int(parts[0]))
        if user in first_line:
            raise DataError(
                f"{path}: line {number}: user {user} already has line {first_line[user]}; "
                f"expected {_LINE_FORMAT}"
            )
        first_line[user] = number
        users.append(int(user))
        items.extend(int(p) for p in parts[1:])
        lengths.append(len(parts) - 1)
    if not users:
        raise DataError(f"{path}: no data (the file is empty); expected {_LINE_FORMAT}")
    counts = np.asarray(lengths, dtype=np.int64)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users, dtype=np.int64), counts),
            "item_id": np.asarray(items, dtype=np.int64),
            "timestamp": np.arange(len(items), dtype=np.int64) - starts,
        }
    )


class _Pairs(list):
    """A JSON object's ``(key, value)`` pairs (duplicate keys kept, to report them)."""


def _position(text: str, key: str, occurrence: int = 1) -> str:
    """``"line L, column C"`` of the ``occurrence``-th ``"key":`` in ``text`` (or ``"line 1"``)."""
    matches = list(re.finditer(rf'"{re.escape(key)}"\s*:', text))
    if len(matches) < occurrence:
        return "line 1"
    offset = matches[occurrence - 1].start()
    line = text.count("\n", 0, offset) + 1
    return f"line {line}, column {offset - text.rfind(chr(10), 0, offset)}"


def _attribute_list(value: Any) -> list[str] | None:
    """The attribute ids of one item as strings (repeats removed), or None when malformed."""
    if not isinstance(value, list):
        return None
    if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in value):
        return None
    return [str(a) for a in dict.fromkeys(value)]


def read_attributes(path: PathLike) -> pd.DataFrame:
    """Reads an S3-Rec ``*_item2attributes.json`` file as an item table.

    Args:
        path: The JSON file.

    Returns:
        Columns ``item_id`` (str), ``title`` (``""``: the release has no titles)
        and ``genres`` (the item's attribute ids as strings, first occurrence
        order, repeats removed), one row per item of the file.

    Raises:
        DataError: Not valid JSON, not a JSON object, a key that is not an
            integer item id, a key given twice, or a value that is not a list of
            non-negative integers; the message names the file, the line (and
            column) and what was expected.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); "
            f"expected {_ATTRIBUTES_FORMAT}"
        ) from None
    if not isinstance(data, _Pairs):
        kind = "array" if isinstance(data, list) else type(data).__name__
        line = text.count("\n", 0, len(text) - len(text.lstrip())) + 1
        raise DataError(f"{path}: line {line}: got a JSON {kind}; expected {_ATTRIBUTES_FORMAT}")
    item_ids: list[str] = []
    genres: list[list[str]] = []
    seen: dict[str, int] = {}
    for key, value in data:
        if not _is_id(key):
            raise DataError(
                f"{path}: {_position(text, key)}: got item id {key!r}; expected an integer "
                f"item id as a JSON string"
            )
        item = str(int(key))
        seen[item] = seen.get(item, 0) + 1
        if seen[item] > 1:
            raise DataError(
                f"{path}: {_position(text, key, seen[item])}: item {key!r} is given again; "
                f"expected each item once"
            )
        attributes = _attribute_list(value)
        if attributes is None:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise DataError(
                f"{path}: {_position(text, key)}: item {key!r}: got {shown}; expected a list "
                f"of non-negative integer attribute ids"
            )
        item_ids.append(item)
        genres.append(attributes)
    return pd.DataFrame({"item_id": item_ids, "title": [""] * len(item_ids), "genres": genres})


def _interactions(
    frame: pd.DataFrame, items: pd.DataFrame | None, name: str, min_user: int, min_item: int
) -> Interactions:
    """The Interactions of a read sequence file (and its item table), cleaned.

    Interactions with items missing from the attribute file are noted by
    :meth:`Interactions.clean`; their genre row is zeros.
    """
    inter = Interactions.from_frame(
        frame, items=items, name=name, has_ratings=False, has_timestamps=False
    )
    return inter.clean(min_user, min_item)


def load_s3rec(
    path: PathLike,
    attributes_path: PathLike | None = None,
    *,
    name: str | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads any file in the S3-Rec release format (see the module docstring).

    Args:
        path: The ``user item1 item2 ...`` sequence file.
        attributes_path: Optional ``*_item2attributes.json``; its attribute ids
            become the items' ``genres`` (multi-hot item features).
        name: Dataset name (default: the file name without suffix).
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Implicit-feedback Interactions, positions as timestamps, with an item
        table (empty titles) when ``attributes_path`` is given.

    Raises:
        DatasetNotFoundError: A file does not exist.
        DataError: A malformed line or attribute file (file, line, expectation).
    """
    path = Path(path)
    for role, file in (("sequence file (--path)", path), ("attribute file", attributes_path)):
        if file is not None and not Path(file).is_file():
            raise dl.DatasetNotFoundError(f"s3rec: {role} {file} not found")
    frame = read_sequences(path)
    items = read_attributes(attributes_path) if attributes_path is not None else None
    return _interactions(
        frame, items, name or path.stem, min_user_interactions, min_item_interactions
    )


def _check_count(release: S3RecRelease, path: Path, what: str, got: int, published: int) -> None:
    """Warns when a count of a named release differs from the published one."""
    if got != published:
        logger.warning(
            "%s: %s has %s %s; the published file has %s (a truncated, edited or different "
            "copy? compare its sha256 with the shared datasets' README)",
            release.name,
            path,
            f"{got:,}",
            what,
            f"{published:,}",
        )


def _release_attributes(release: S3RecRelease, sequences: Path) -> pd.DataFrame | None:
    """The release's attribute table, read beside its sequence file (None when absent)."""
    path = sequences.parent / release.attributes
    if not path.is_file():
        logger.warning("%s: %s not found; loading without item attributes", release.name, path)
        return None
    items = read_attributes(path)
    _check_count(release, path, "items", len(items), release.items)
    distinct = len({a for attributes in items["genres"] for a in attributes})
    _check_count(release, path, "distinct attributes", distinct, release.attribute_ids)
    return items


def load_release(
    name: str,
    data_dir: PathLike | None = None,
    download: bool = False,
    *,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
) -> Interactions:
    """Loads a named S3-Rec release (:data:`RELEASES`) from the data directory.

    The attribute file is read from beside the sequence file when present (else
    a warning, and no item features). Counts that differ from the published
    ones (rows, users, items, attribute items, distinct attributes) are warned
    about, as the MovieLens loaders do.

    Args:
        name: ``beauty``, ``sports`` or ``lastfm``.
        data_dir: Data directory (else ``$TFREC_DATA_DIR``, else the cache).
        download: Not available for these datasets (the error says how to get them).
        min_user_interactions: k-core threshold for users (0 = off).
        min_item_interactions: k-core threshold for items (0 = off).

    Returns:
        Implicit-feedback Interactions (positions as timestamps) with the
        attributes as item genres.

    Raises:
        DatasetNotFoundError: The sequence file is not found.
        DataError: A malformed file, or one cut off before its final newline.
    """
    release = RELEASES[name]
    how_to_get = (
        f"It cannot be downloaded automatically: save data/{release.sequences} (and "
        f"data/{release.attributes}) from the S3-Rec repository (github.com/RUCAIBox/"
        f"CIKM2020-S3Rec) into {release.folder}/ in the data directory."
    )
    path = dl.locate(
        name, release.folder, release.sequences, data_dir, download=download, how_to_get=how_to_get
    )
    check_final_newline(path, f"every line of the published {path.name} ends with one")
    frame = read_sequences(path)
    _check_count(release, path, "interactions", len(frame), release.rows)
    _check_count(release, path, "users", int(frame["user_id"].nunique()), release.users)
    _check_count(release, path, "items", int(frame["item_id"].nunique()), release.items)
    items = _release_attributes(release, path)
    return _interactions(frame, items, name, min_user_interactions, min_item_interactions)


def _release_loader(name: str, title: str) -> Callable[..., Interactions]:
    """The registry loader of one named release (``data_dir``, ``download``, k-core kwargs)."""

    def load(
        data_dir: PathLike | None = None,
        download: bool = False,
        *,
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
    ) -> Interactions:
        return load_release(
            name,
            data_dir,
            download,
            min_user_interactions=min_user_interactions,
            min_item_interactions=min_item_interactions,
        )

    load.__name__ = load.__qualname__ = f"load_{name}_s3rec"
    load.__doc__ = f"{title}, S3-Rec release (``{RELEASES[name].folder}/``); see load_release."
    return load


load_beauty_s3rec = _release_loader("beauty", "Amazon Beauty 5-core")
load_sports_s3rec = _release_loader("sports", "Amazon Sports and Outdoors 5-core")
load_lastfm_s3rec = _release_loader("lastfm", "Last.fm (artist tags as attributes)")
