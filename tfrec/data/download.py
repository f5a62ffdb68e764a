"""Where datasets live on disk, and fetching the GroupLens MovieLens archives.

Data directory resolution (first that applies):

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the environment variable ``TFREC_DATA_DIR``;
3. ``~/.cache/tfrec/datasets``.

Inside a data directory a dataset file is accepted at ``<dir>/<subdir>/<file>``
(the shared layout: ``ml-100k/``, ``ml-latest-small/``, ``amazon-beauty-s3rec/``,
``amazon-beauty-bert4rec/``) or directly at ``<dir>/<file>``.

Downloads go to a temporary file in the data directory, are checked against a
pinned sha256, extracted into a temporary sibling folder and only then renamed
to ``<dir>/<subdir>``; a failed or corrupt download leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tfrec.data.interactions import DataError

logger = logging.getLogger(__name__)

ENV_VAR = "TFREC_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/tfrec/datasets")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message lists where it was looked for and how to get it."""


class DownloadError(DatasetNotFoundError):
    """A download could not be completed (network error or bad archive)."""


class ChecksumError(DataError):
    """A downloaded file does not have the pinned sha256."""


@dataclasses.dataclass(frozen=True)
class Download:
    """A downloadable dataset archive.

    Attributes:
        url: Where to fetch the zip from (``https://`` or ``file://``).
        sha256: Expected hex digest of the zip.
        subdir: Folder the zip extracts to, and the dataset's folder in a data dir.
    """

    url: str
    sha256: str
    subdir: str


DOWNLOADS: dict[str, Download] = {
    "ml-100k": Download(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        subdir="ml-100k",
    ),
    "ml-latest-small": Download(
        url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        subdir="ml-latest-small",
    ),
}

Fetch = Callable[[str, Path], None]


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Returns the data directory: ``data_dir``, else ``$TFREC_DATA_DIR``, else the cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def _data_dir_origin(data_dir: str | os.PathLike[str] | None) -> str:
    if data_dir is not None and str(data_dir) != "":
        return "given as data_dir / --data-dir"
    if os.environ.get(ENV_VAR, ""):
        return f"from ${ENV_VAR}"
    return f"the default (no --data-dir given and ${ENV_VAR} unset)"


def candidate_paths(root: Path, subdir: str, filename: str) -> list[Path]:
    """The places a dataset file is accepted, in the order they are tried."""
    return [root / subdir / filename, root / filename]


def find_dataset_file(
    dataset: str,
    filename: str,
    subdir: str,
    data_dir: str | os.PathLike[str] | None = None,
    how_to_get: str = "",
) -> Path:
    """Finds ``filename`` of ``dataset`` in the resolved data directory.

    Args:
        dataset: Dataset name for the message, e.g. ``"ml-100k"``.
        filename: File to find, e.g. ``"u.data"``.
        subdir: The dataset's folder name in the shared layout.
        data_dir: Explicit data directory (else env var, else the cache).
        how_to_get: A sentence on where to obtain the file, for the error.

    Returns:
        The first existing candidate path.

    Raises:
        DatasetNotFoundError: No candidate exists; the message lists every
            path tried, where the data dir came from and how to get the file.
    """
    root = resolve_data_dir(data_dir)
    candidates = candidate_paths(root, subdir, filename)
    for path in candidates:
        if path.is_file():
            return path
    tried = "\n".join(f"  {p}" for p in candidates)
    raise DatasetNotFoundError(
        f"{dataset}: file '{filename}' not found. Looked for:\n{tried}\n"
        f"The data directory {root} is {_data_dir_origin(data_dir)}.\n"
        f"{how_to_get + chr(10) if how_to_get else ''}"
        f"Or point --data-dir (data_dir=...) or the {ENV_VAR} environment variable at a "
        f"folder holding {subdir}/{filename}."
    )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_url(url: str, destination: Path) -> None:
    """Streams ``url`` (``https://``, ``http://`` or ``file://``) into ``destination``.

    Raises:
        DownloadError: The URL could not be read.
    """
    try:
        with urllib.request.urlopen(url, timeout=60) as response, destination.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(
            f"could not download {url}: {err}. Without internet access, download it "
            f"elsewhere and unzip it into the data directory (see --data-dir / ${ENV_VAR})."
        ) from err


def _extract(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (into / member).resolve()
            if not target.is_relative_to(into.resolve()):
                raise DownloadError(f"{archive}: member {member!r} would extract outside {into}")
        zf.extractall(into)


def download_and_extract(
    download: Download,
    data_dir: str | os.PathLike[str] | None = None,
    fetch: Fetch | None = None,
) -> Path:
    """Downloads a zip, verifies its sha256 and extracts it to ``<data_dir>/<subdir>``.

    Args:
        download: URL, expected sha256 and folder name.
        data_dir: Target data directory (resolved as in :func:`resolve_data_dir`).
        fetch: ``fetch(url, destination)``; defaults to :func:`fetch_url`
            (tests pass a fake or use a ``file://`` URL).

    Returns:
        The dataset folder ``<data_dir>/<subdir>``.

    Raises:
        ChecksumError: The file's sha256 differs from ``download.sha256``;
            nothing is left on disk.
        DownloadError: Fetching or unpacking failed, or the target folder
            already exists (it is never overwritten).
    """
    root = resolve_data_dir(data_dir)
    target = root / download.subdir
    if target.exists():
        raise DownloadError(
            f"{target} already exists but lacks the expected files; remove or complete it "
            f"by hand (tfrec never overwrites a dataset folder)"
        )
    root.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{download.subdir}.", suffix=".zip.part", dir=root)
    os.close(fd)
    part = Path(part_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{download.subdir}.", suffix=".extract", dir=root))
    try:
        logger.info("downloading %s to %s", download.url, root)
        (fetch or fetch_url)(download.url, part)
        digest = sha256_file(part)
        if digest != download.sha256:
            raise ChecksumError(
                f"{download.url}: sha256 {digest} does not match the expected "
                f"{download.sha256}; the download is corrupt or the file changed upstream. "
                f"Nothing was written to {root}."
            )
        try:
            _extract(part, staging)
        except zipfile.BadZipFile as err:
            raise DownloadError(f"{download.url}: not a valid zip archive ({err})") from err
        inner = staging / download.subdir
        os.replace(inner if inner.is_dir() else staging, target)
        logger.info("extracted %s (sha256 ok)", target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return target


def locate(
    name: str,
    subdir: str,
    filename: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    how_to_get: str = "",
) -> Path:
    """Finds a dataset file; when missing and allowed, downloads the dataset first.

    Args:
        name: Dataset name; names in :data:`DOWNLOADS` can be downloaded.
        subdir: The dataset's folder in the shared layout.
        filename: File to find.
        data_dir: Explicit data directory (else env var, else the cache).
        download: Download a missing downloadable dataset.
        how_to_get: Advice for the error when ``name`` is not downloadable.

    Returns:
        The file's path.

    Raises:
        DatasetNotFoundError: Missing (and not downloaded); the message says
            where it looked and how to get the file.
        ChecksumError: A download did not match its pinned sha256.
    """
    if name in DOWNLOADS:
        root = resolve_data_dir(data_dir)
        how_to_get = (
            f"Get it with --download (download=True), which fetches {DOWNLOADS[name].url} "
            f"into {root}, or download that zip yourself and unzip it into {root}."
        )
    try:
        return find_dataset_file(name, filename, subdir, data_dir, how_to_get)
    except DatasetNotFoundError:
        if not download or name not in DOWNLOADS:
            raise
    download_and_extract(DOWNLOADS[name], data_dir)
    return find_dataset_file(name, filename, subdir, data_dir, how_to_get)
