"""Byte-level checks of text data files: encoding, binary content, a cut-off last line.

The parsers in :mod:`tfrec.data.parsing` call :func:`check_text` before reading
a file, so binary or wrongly encoded data fails with the file, line, byte column
and byte offset of the first bad byte instead of a bare codec error. Lines are
1-based; byte columns are 1-based byte positions inside the line.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from tfrec.data.interactions import DataError

_CHUNK = 1 << 20


def python_encoding(encoding: str) -> str:
    """The codec to read ``encoding`` text with (UTF-8: ``utf-8-sig``, which drops a BOM).

    Raises:
        ValueError: An unknown encoding name.
    """
    try:
        name = codecs.lookup(encoding).name
    except LookupError as err:
        raise ValueError(f"encoding={encoding!r}: unknown text encoding") from err
    return "utf-8-sig" if name == "utf-8" else encoding


def _label(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding


def _first_bad_byte(raw: bytes, encoding: str) -> int | None:
    """Offset of the first NUL byte or undecodable byte in ``raw`` (None: all good)."""
    nul = raw.find(b"\x00")
    try:
        raw.decode(python_encoding(encoding))
        bad = None
    except UnicodeDecodeError as err:
        bad = err.start
    found = [offset for offset in (nul if nul >= 0 else None, bad) if offset is not None]
    return min(found) if found else None


def _where(raw: bytes, offset: int) -> tuple[int, int]:
    """(1-based line, 1-based byte column) of ``offset`` in ``raw``."""
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def text_error(path: Path, encoding: str) -> DataError | None:
    """A DataError locating the first NUL or undecodable byte of ``path`` (reads it whole).

    Returns:
        The error, or None when the file is valid ``encoding`` text without NUL bytes.
    """
    raw = path.read_bytes()
    offset = _first_bad_byte(raw, encoding)
    if offset is None:
        return None
    line, column = _where(raw, offset)
    where = f"{path}: line {line}, byte column {column}"
    if raw[offset] == 0:
        return DataError(
            f"{where}: byte 0x00 (NUL) at byte offset {offset}: the file is binary or "
            f"corrupted; expected {_label(encoding)} text"
        )
    return DataError(
        f"{where}: byte 0x{raw[offset]:02x} is not valid {encoding} (byte offset {offset}): "
        f"the file is not {_label(encoding)} text; expected a {encoding}-encoded text file"
    )


def decode_error(path: Path, err: UnicodeDecodeError, encoding: str) -> DataError:
    """Turns a decoding failure while parsing ``path`` into a located DataError."""
    return text_error(path, encoding) or DataError(f"{path}: not {_label(encoding)} text ({err})")


def check_text(path: Path, encoding: str) -> None:
    """Checks that ``path`` is ``encoding`` text without NUL bytes (streamed, chunk by chunk).

    Raises:
        DataError: The first bad byte, located (see :func:`text_error`).
    """
    decoder = codecs.getincrementaldecoder(python_encoding(encoding))()
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
                ok = b"\x00" not in chunk
            except UnicodeDecodeError:
                ok = False
            if not ok:
                raise text_error(path, encoding) or DataError(f"{path}: unreadable text")
            if not chunk:
                return


def check_final_newline(path: Path, why: str) -> None:
    """Raises a DataError when a non-empty ``path`` does not end with a newline.

    A text file cut off while it was written or copied ends in the middle of its
    last line, and that line can still parse (a timestamp cut short is still a
    number). Use this for files known to end with a newline.

    Args:
        path: The file.
        why: Why the file must end with a newline, for the message.

    Raises:
        DataError: The message names the last line.
    """
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(_CHUNK), b"")) + 1
    raise DataError(
        f"{path}: line {lines}: the file does not end with a newline, so its last line may be "
        f"cut short (a truncated copy?); {why}. Restore the complete file, or add the "
        "missing newline if that line is complete"
    )
