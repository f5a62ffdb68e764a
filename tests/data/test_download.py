"""Data-dir resolution and the sha256-checked download path (file:// URLs, no network)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from tfrec.data import download as dl
from tfrec.data.loaders import load_dataset


def make_zip(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t10\t5\t100\n2\t10\t3\t90\n")
        zf.writestr("ml-100k/README", "tiny")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREC_DATA_DIR", str(tmp_path / "env"))
    assert dl.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert dl.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("TFREC_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.resolve_data_dir() == tmp_path / "home" / ".cache" / "tfrec" / "datasets"


def test_download_file_url_checksum_ok(tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    digest = make_zip(archive)
    monkeypatch.setitem(dl.DOWNLOADS, "ml-100k", dl.Download(archive.as_uri(), digest, "ml-100k"))
    data_dir = tmp_path / "data"
    inter = load_dataset("ml-100k", data_dir=data_dir, download=True)
    assert (len(inter), inter.num_users) == (2, 2)
    # only the extracted folder is left: no .part file, no staging folder
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-100k"]
    assert (data_dir / "ml-100k" / "README").read_text() == "tiny"
    # a second call finds the files and does not download again
    monkeypatch.setitem(dl.DOWNLOADS, "ml-100k", dl.Download("file:///nonexistent", "0", "ml-100k"))
    assert len(load_dataset("ml-100k", data_dir=data_dir, download=True)) == 2


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    make_zip(archive)
    monkeypatch.setitem(
        dl.DOWNLOADS, "ml-100k", dl.Download(archive.as_uri(), "ab" * 32, "ml-100k")
    )
    data_dir = tmp_path / "data"
    with pytest.raises(
        dl.ChecksumError, match=r"sha256 [0-9a-f]{64} does not match the expected abab"
    ):
        load_dataset("ml-100k", data_dir=data_dir, download=True)
    assert list(data_dir.iterdir()) == []


def test_download_with_fake_fetch_and_no_overwrite(tmp_path):
    archive = tmp_path / "src.zip"
    digest = make_zip(archive)
    calls = []

    def fake_fetch(url: str, destination: Path) -> None:
        calls.append(url)
        destination.write_bytes(archive.read_bytes())

    info = dl.Download("https://example.invalid/ml-100k.zip", digest, "ml-100k")
    target = dl.download_and_extract(info, tmp_path / "d", fetch=fake_fetch)
    assert target == tmp_path / "d" / "ml-100k"
    assert (target / "u.data").is_file()
    assert calls == ["https://example.invalid/ml-100k.zip"]
    with pytest.raises(dl.DownloadError, match="already exists"):
        dl.download_and_extract(info, tmp_path / "d", fetch=fake_fetch)


def test_unreachable_url_is_a_download_error(tmp_path):
    info = dl.Download((tmp_path / "missing.zip").as_uri(), "0" * 64, "ml-100k")
    with pytest.raises(dl.DownloadError, match="could not download") as err:
        dl.download_and_extract(info, tmp_path / "d")
    assert isinstance(err.value, FileNotFoundError)
    assert list((tmp_path / "d").iterdir()) == []


def test_bad_zip_is_reported(tmp_path):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip")
    digest = hashlib.sha256(b"not a zip").hexdigest()
    with pytest.raises(dl.DownloadError, match="not a valid zip"):
        dl.download_and_extract(dl.Download(bogus.as_uri(), digest, "ml-100k"), tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_pinned_checksums_are_the_published_ones():
    assert dl.DOWNLOADS["ml-100k"].sha256 == (
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
    )
    assert dl.DOWNLOADS["ml-latest-small"].url.endswith("/movielens/ml-latest-small.zip")
