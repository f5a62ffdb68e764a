"""TF Serving model directory layout: ``<base>/<model_name>/<version>/``.

TF Serving watches ``<base>/<model_name>/`` and serves the integer-named
subdirectories as versions. A version is written into a temporary sibling
directory whose name is not an integer (TF Serving and
:mod:`tfrec.export.versions` ignores it) and renamed into place
only when complete, so a server never sees a half-written version. An existing
version is never overwritten.

Staging directories are named ``.tmp-<version>-<host>-<pid>-<random>`` (the
writer's host and pid namespace, :func:`host_tag`, and its process id). One left
behind by a killed export is removed by the next export into the same
``<base>/<model_name>/``; see :func:`remove_stale_staging` for the rule. Every
file and directory of a version gets the modes a normal umask gives
(``0o666``/``0o777`` minus the umask: 644/755 with umask 022), so a server
running as another user can read it. A full disk raises :class:`ExportError` (an ``OSError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from tfrec.config import process_umask
from tfrec.export.schema import CONFIG_FILE
from tfrec.export.versions import version_dirs

logger = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"
STAGING_PREFIX = ".tmp-"
#: A staging directory with no modification for this long is abandoned (seconds).
STALE_AFTER = 3600.0
# .tmp-<version>-<host>-<pid>-<random>; mkdtemp's random part has no "-".
_STAGING_NAME = re.compile(
    r"^\.tmp-(?P<version>[0-9]+)-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>[0-9]+)-[a-z0-9_]+$"
)
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("no space left on device", "disk quota exceeded")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
USER_VOCAB_FILE = "user_vocab.txt"
ITEM_VOCAB_FILE = "item_vocab.txt"
#: Exports with :class:`Candidates` only: the ids the export returns (one per line, from index 2).
CANDIDATE_VOCAB_FILE = "candidate_vocab.txt"
_RESERVED_FILES = (USER_VOCAB_FILE, ITEM_VOCAB_FILE, CANDIDATE_VOCAB_FILE)


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


def next_version(model_dir: str | os.PathLike[str]) -> int:
    """``1 + max`` existing version under ``model_dir`` (1 when there is none).

    Every version directory counts (:func:`tfrec.export.versions.version_dirs`),
    servable or not, so a number is never reused.
    """
    versions = version_dirs(model_dir)
    return max(versions) + 1 if versions else 1


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


class ExportError(OSError):
    """An export could not be written (e.g. no space left on device).

    ``str(error)`` is the one-line message, which names the version directory.

    Args:
        message: The message.
        error_number: ``errno.ENOSPC`` when the disk (or quota) is full, else None.
        path: The version directory that was being written.

    Attributes:
        errno: ``error_number``.
        filename: ``path`` as a string (None without one).
    """

    def __init__(
        self, message: str, error_number: int | None = None, path: os.PathLike[str] | None = None
    ):
        super().__init__(message)
        self.errno = error_number
        self.filename = None if path is None else str(path)

    def __str__(self) -> str:
        return str(self.args[0])


@functools.cache
def host_tag() -> str:
    """Where this process's pid means something, as a file-name token (no ``-``).

    ``<host name>.<boot id>.<pid namespace>`` on Linux: containers on one machine
    share the kernel's boot id but not (by default) a pid namespace, and two
    machines may share a host name. Only the host name where ``/proc`` lacks them.
    """
    parts = [socket.gethostname()[:24] or "host"]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return re.sub(r"[^A-Za-z0-9_.]", "_", ".".join(parts))


def _pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def _newest_mtime(path: Path) -> float:
    """Latest modification time of ``path`` and everything below it (symlinks not followed)."""
    newest = path.lstat().st_mtime
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):  # removed meanwhile
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _is_stale(path: Path, now: float, stale_after: float) -> bool:
    """The rule of :func:`remove_stale_staging` for one staging directory."""
    match = _STAGING_NAME.match(path.name)
    if match and match["host"] == host_tag() and not _pid_running(int(match["pid"])):
        return True  # its writer is gone: nothing will ever finish or remove it
    if match and match["host"] == host_tag():
        return False  # its writer runs on this host: maybe an export in progress
    return now - _newest_mtime(path) > stale_after


def remove_stale_staging(
    model_dir: str | os.PathLike[str], stale_after: float = STALE_AFTER
) -> list[Path]:
    """Removes the staging directories that killed exports left in ``model_dir``.

    A directory ``.tmp-*`` directly in ``model_dir`` is removed when

    * its name records this host (:func:`host_tag`: host, boot and pid
      namespace) and a process id that is no longer running (the writer was
      killed: ``kill -9``, OOM killer, reboot), or
    * its name records another host (or pid namespace), or no host and pid
      (older tfrec versions), and nothing in it was modified for
      ``stale_after`` seconds.

    A directory whose writer still runs on this host is always kept, however
    old: a concurrent export in progress is never deleted. The host check
    matters for shared storage and containers, where a pid means nothing
    outside its own machine and pid namespace.

    Args:
        model_dir: ``<base>/<model_name>``.
        stale_after: Age (seconds since the newest modification) beyond which
            a staging directory of an unknown writer is abandoned.

    Returns:
        The directories removed (failures to remove are logged, not raised).
    """
    model_dir = Path(model_dir)
    try:
        candidates = [p for p in model_dir.iterdir() if p.name.startswith(STAGING_PREFIX)]
    except OSError:
        return []
    now = time.time()
    removed = []
    for path in candidates:
        try:
            if not path.is_dir() or path.is_symlink() or not _is_stale(path, now, stale_after):
                continue
            shutil.rmtree(path)
        except FileNotFoundError:
            continue  # finished or removed by someone else meanwhile
        except OSError as err:
            logger.warning("could not remove stale export staging directory %s: %s", path, err)
            continue
        logger.info("removed stale export staging directory %s", path)
        removed.append(path)
    return removed


def apply_default_modes(root: str | os.PathLike[str]) -> None:
    """Gives ``root`` and everything below it the modes a plain ``open``/``mkdir`` would.

    Directories get ``0o777 & ~umask`` and files ``0o666 & ~umask`` (755/644 with
    umask 022): ``mkdtemp`` and atomic file writers create 700/600, which a
    server running as another user cannot read. Symlinks are left alone.

    Args:
        root: A directory (a staged version).
    """
    mask = process_umask()
    dir_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    os.chmod(root, dir_mode)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, dir_mode)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def disk_full_error(err: BaseException, target: str | os.PathLike[str]) -> ExportError | None:
    """Translates a disk-full failure into an :class:`ExportError` naming ``target``.

    Args:
        err: The exception raised while writing.
        target: The directory or file being written (for the message).

    Returns:
        The ExportError for an ``OSError`` ``ENOSPC``/``EDQUOT``, an error whose
        message says "No space left on device" / "Disk quota exceeded", or any
        TensorFlow ``ResourceExhaustedError`` (how TF reports ``ENOSPC``); else None
        (also for an ExportError, which is already translated).
    """
    if isinstance(err, ExportError):
        return None
    text = str(err)
    full = isinstance(err, OSError) and err.errno in _DISK_FULL_ERRNOS
    full = full or any(t in text.lower() for t in _DISK_FULL_TEXTS)
    tf = sys.modules.get("tensorflow")  # no TensorFlow import for a light module
    exhausted = tf is not None and isinstance(err, tf.errors.ResourceExhaustedError)
    if not (full or exhausted):
        return None
    detail = " ".join((getattr(err, "message", None) or text).split())[:300]
    reason = "no space left on device" if full else "resources exhausted (disk, quota or memory)"
    return ExportError(
        f"cannot export to {target}: {reason} ({detail})",
        errno.ENOSPC if full else None,
        target,
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

    Before staging, abandoned staging directories of killed exports are removed
    (:func:`remove_stale_staging`). Before the rename, every entry gets the
    default modes (:func:`apply_default_modes`).

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
        ExportError: The disk or quota is full (``OSError`` ``ENOSPC`` or
            TensorFlow ``ResourceExhaustedError`` while writing); the message
            names the version directory.
    """
    model_dir = Path(base_dir) / check_model_name(model_name)
    if version is None:
        version = next_version(model_dir)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version={version!r}; expected an integer >= 1 or None")
    final_path = model_dir / str(version)
    _refuse_existing(final_path)
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    prefix = f"{STAGING_PREFIX}{version}-{host_tag()}-{os.getpid()}-"
    temp = Path(tempfile.mkdtemp(prefix=prefix, dir=model_dir))
    try:
        yield StagedVersion(version, temp, final_path)
        apply_default_modes(temp)
        _refuse_existing(final_path)
        os.rename(temp, final_path)
    except BaseException as err:
        shutil.rmtree(temp, ignore_errors=True)
        disk_full = disk_full_error(err, final_path)
        if disk_full is not None:
            raise disk_full from err
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


def assets_extra_files(
    default_config: str,
    assets_extra: Mapping[str, bytes] | None,
    extra_files: Mapping[str, str] | None,
) -> dict[str, bytes]:
    """Merges the files an export writes under ``assets.extra/``.

    Args:
        default_config: The exporter's ``tfrec_config.json`` (a caller's replaces it).
        assets_extra: Binary files from the caller (e.g. TF Serving warmup requests).
        extra_files: Text files from the caller (e.g. ``metrics.json``).

    Returns:
        File name -> bytes.

    Raises:
        ValueError: A bad or reserved file name (the vocabulary files are reserved).
    """
    files: dict[str, bytes] = {CONFIG_FILE: default_config.encode("utf-8")}
    texts = dict(extra_files or {})
    binaries = dict(assets_extra or {})
    for where, names in (("extra_files", texts), ("assets_extra", binaries)):
        for name in names:
            check_file_name(name, where)
            if name in _RESERVED_FILES:
                raise ValueError(f"{where}: {name!r} is written by the exporter; use another name")
    both = sorted(set(texts) & set(binaries))
    if both:
        raise ValueError(f"extra_files and assets_extra both contain {both}")
    for name, text in texts.items():
        if not isinstance(text, str):
            raise ValueError(f"extra_files[{name!r}]: expected str, got {type(text).__name__}")
        files[name] = text.encode("utf-8")
    files.update(binaries)
    return files
