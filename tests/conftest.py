"""Shared pytest fixtures.

Real datasets are never copied into the repo: tests read them from
``$TFREC_SHARED_DATASETS``, else ``../shared/datasets`` beside the checkout, else beside the
checkout this one was cloned from (a fresh ``git clone`` into a temporary directory, as CI
does, still finds the machine's datasets).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import tfrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _origin_checkout() -> Path | None:
    """The local checkout this clone was made from (``git remote get-url origin``), if any."""
    try:
        url = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "remote", "get-url", "origin"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://"))
    return path if path.is_dir() else None


def find_shared_datasets() -> Path:
    """Where the real datasets are (see the module docstring); the first candidate if none."""
    if "TFREC_SHARED_DATASETS" in os.environ:
        return Path(os.environ["TFREC_SHARED_DATASETS"])
    candidates = [REPO_ROOT.parent / "shared" / "datasets"]
    origin = _origin_checkout()
    if origin is not None:
        candidates.append(origin.parent / "shared" / "datasets")
    return next((c for c in candidates if (c / "ml-100k" / "u.data").is_file()), candidates[0])


SHARED_DATASETS = find_shared_datasets()

#: Most pytest-xdist workers ``-n auto`` starts: each imports TensorFlow (~1 GB) and
#: several tests start servers or worker processes of their own.
MAX_TEST_WORKERS = 4


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per usable CPU, at most :data:`MAX_TEST_WORKERS`."""
    del config
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_TEST_WORKERS, usable or 1))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Directory holding ml-100k/, ml-latest-small/, amazon-*-s3rec/, lastfm-s3rec/ (read-only)."""
    root = SHARED_DATASETS
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.fail(
            f"real datasets not found at {root} (expected {root / 'ml-100k' / 'u.data'}); "
            "set TFREC_SHARED_DATASETS to the folder that holds ml-100k/"
        )
    return root
