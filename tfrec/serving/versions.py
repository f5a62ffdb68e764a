"""Version directories of the TF Serving layout and version policies.

A model's ``base_path`` holds one folder per version. Like TF Serving, only
folders whose name is a non-negative integer are versions, and tfrec further
requires a ``saved_model.pb`` inside, so a version that is still being copied
under a temporary name (or an empty folder) is never picked up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

_VERSION_NAME = re.compile(r"^[0-9]{1,18}$")


def list_versions(base_path: str | os.PathLike[str]) -> dict[int, Path]:
    """Finds the servable versions under ``base_path``.

    Args:
        base_path: A model's base folder (``<base>/<version>/saved_model.pb``).

    Returns:
        Version number -> version folder; empty if ``base_path`` is missing.
    """
    base = Path(base_path)
    try:
        children = list(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    versions = {}
    for child in children:
        if _VERSION_NAME.match(child.name) and (child / "saved_model.pb").is_file():
            versions[int(child.name)] = child
    return versions


def select_versions(
    policy: str, available: Iterable[int], num_versions: int = 1, versions: Iterable[int] = ()
) -> set[int]:
    """Applies a TF Serving version policy to the versions found on disk.

    Args:
        policy: ``"latest"``, ``"specific"`` or ``"all"``.
        available: Versions present on disk.
        num_versions: For ``latest``: how many of the highest versions.
        versions: For ``specific``: the wanted versions (missing ones are skipped).

    Returns:
        The versions that should be loaded.

    Raises:
        ValueError: Unknown policy.
    """
    found = set(available)
    if policy == "latest":
        return set(sorted(found)[-num_versions:]) if num_versions > 0 else set()
    if policy == "specific":
        return found & set(versions)
    if policy == "all":
        return found
    raise ValueError(f"version policy {policy!r}: expected 'latest', 'specific' or 'all'")


Fingerprint = tuple[tuple[str, int, int], ...]


def version_fingerprint(path: str | os.PathLike[str]) -> Fingerprint:
    """What a version folder holds: (relative path, size, mtime in ns) of every file.

    Two equal fingerprints mean nothing was added, removed or rewritten in
    between (at the file system's timestamp resolution). Used to retry a
    version that failed to load once its files change, e.g. a slow copy that
    completed after the load retries ran out.

    Args:
        path: A version folder.

    Returns:
        The sorted file entries (empty if the folder is gone).
    """
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except OSError:  # removed while walking
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))
