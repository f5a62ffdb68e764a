"""The one rule for version directories of TF Serving's layout ``<base>/<model>/<version>/``.

A **version** is a directory whose name is the canonical decimal of a
non-negative int64: ``0``, ``7``, ``12`` are versions; ``007``, ``+1``, ``1e3``,
``-1``, a number above ``2**63 - 1`` and the staging directories ``.tmp-*`` that
:func:`tfrec.export.layout.staged_version` renames into place are not.

Every reader uses this module: the export (the next free version,
:func:`tfrec.export.layout.next_version`), the server
(:func:`tfrec.serving.versions.list_versions`) and the CLI
(``tfrec recommend --export``). The server and the CLI additionally require a
``saved_model.pb`` inside (``servable=True``), so a version that is still being
copied, or an empty folder, is never loaded; the export counts every version
directory, so it never reuses a number. Imports no TensorFlow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

INT64_MAX = 2**63 - 1
_CANONICAL = re.compile(r"^(0|[1-9][0-9]*)$")


def parse_version(name: str) -> int | None:
    """The version number a directory name stands for, or None if it is no version."""
    if not _CANONICAL.match(name):
        return None
    value = int(name)
    return value if value <= INT64_MAX else None


def version_dirs(model_dir: str | os.PathLike[str], servable: bool = False) -> dict[int, Path]:
    """The version directories under ``model_dir``, in increasing version order.

    Args:
        model_dir: A model's base directory (``<base>/<model>``).
        servable: Keep only versions holding a ``saved_model.pb``.

    Returns:
        Version number -> directory; empty when ``model_dir`` does not exist.
    """
    try:
        children = list(Path(model_dir).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for child in children:
        version = parse_version(child.name)
        if version is None or not child.is_dir():
            continue
        if servable and not (child / "saved_model.pb").is_file():
            continue
        found[version] = child
    return dict(sorted(found.items()))


def latest_version_dir(model_dir: str | os.PathLike[str]) -> Path | None:
    """The highest servable version directory under ``model_dir`` (None when there is none)."""
    versions = version_dirs(model_dir, servable=True)
    return versions[max(versions)] if versions else None
