"""TF Serving model directory layout: ``<base>/<model_name>/<version>/``.

TF Serving watches ``<base>/<model_name>/`` and serves the integer-named
subdirectories as versions. A version is written into a temporary sibling
directory whose name is not an integer (TF Serving ignores it) and renamed into
place only when complete, so a server never sees a half-written version. An
existing version is never overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

ASSETS_EXTRA = "assets.extra"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_model_name(model_name: str) -> str:
    """Validates a model name (one directory level, TF Serving friendly).

    Raises:
        ValueError: Empty, containing a path separator, or other characters
            than letters, digits, ``_``, ``.``, ``-``.
    """
    if not _MODEL_NAME.match(model_name or ""):
        raise ValueError(
            f"model_name={model_name!r}; expected letters, digits, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return model_name


def list_versions(model_dir: str | os.PathLike[str]) -> list[int]:
    """Integer versions present under ``model_dir`` (sorted; [] if it does not exist)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: str | os.PathLike[str]) -> int:
    """``1 + max`` existing integer version under ``model_dir`` (1 when there is none)."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


@dataclasses.dataclass(frozen=True)
class StagedVersion:
    """A version being written.

    Attributes:
        version: The integer version.
        path: Temporary directory to write the SavedModel into.
        final_path: ``<base>/<model_name>/<version>``, where it lands on success.
    """

    version: int
    path: Path
    final_path: Path


def _refuse_existing(final_path: Path) -> None:
    if final_path.exists():
        raise FileExistsError(
            f"{final_path} already exists: model versions are never overwritten; "
            "pass another version (or None for the next free one)"
        )


@contextlib.contextmanager
def staged_version(
    base_dir: str | os.PathLike[str], model_name: str, version: int | None = None
) -> Iterator[StagedVersion]:
    """Writes a version atomically: yields a temporary directory, renames it on success.

    Example::

        with staged_version(base, "retrieval") as staged:
            tf.saved_model.save(module, str(staged.path), signatures=...)
        print(staged.final_path)

    Args:
        base_dir: TF Serving base directory (created if missing).
        model_name: Model name (subdirectory of ``base_dir``).
        version: Integer version >= 1, or None for :func:`next_version`.

    Yields:
        The :class:`StagedVersion`. If the block raises, the temporary directory
        is removed and nothing appears under ``final_path``.

    Raises:
        ValueError: Bad ``model_name`` or ``version``.
        FileExistsError: ``<base>/<model_name>/<version>`` already exists (checked
            before and after writing).
    """
    model_dir = Path(base_dir) / check_model_name(model_name)
    if version is None:
        version = next_version(model_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version={version!r}; expected an integer >= 1 or None")
    final_path = model_dir / str(version)
    _refuse_existing(final_path)
    model_dir.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        yield StagedVersion(version, temp, final_path)
        _refuse_existing(final_path)
        os.rename(temp, final_path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def check_file_name(name: str, where: str) -> str:
    """Validates a plain file name for ``assets.extra/`` (no directories).

    Raises:
        ValueError: Empty, a path, or starting with a dot.
    """
    if not _FILE_NAME.match(name or "") or name in (".", ".."):
        raise ValueError(
            f"{where}: file name {name!r}; expected a plain name of letters, digits, "
            "'_', '.', '-' (no directories, not starting with '.')"
        )
    return name


def write_assets_extra(version_dir: str | os.PathLike[str], files: Mapping[str, bytes]) -> Path:
    """Writes ``files`` (name -> contents) into ``<version_dir>/assets.extra/``.

    Args:
        version_dir: A (staged) version directory.
        files: Plain file names and their bytes.

    Returns:
        The ``assets.extra`` directory.

    Raises:
        ValueError: A bad file name or non-bytes contents.
    """
    directory = Path(version_dir) / ASSETS_EXTRA
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        check_file_name(name, "assets_extra")
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"assets_extra[{name!r}]: expected bytes, got {type(data).__name__}")
        (directory / name).write_bytes(bytes(data))
    return directory
