"""Version directories of the TF Serving layout and version policies.

A model's ``base_path`` holds one folder per version. Which folders are
versions is the one rule of :mod:`tfrec.export.versions` (canonical
non-negative int64 names, staging ``.tmp-*`` folders ignored); the server
further requires a ``saved_model.pb`` inside, so a version that is still being
copied (or an empty folder) is never picked up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tfrec.export.versions import version_dirs


def list_versions(base_path: str | os.PathLike[str]) -> dict[int, Path]:
    """Finds the servable versions under ``base_path``.

    Args:
        base_path: A model's base folder (``<base>/<version>/saved_model.pb``).

    Returns:
        Version number -> version folder (ascending); empty if ``base_path`` is missing.
    """
    return version_dirs(base_path, servable=True)


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
