"""Shared pytest fixtures.

Real datasets are never copied into the repo: tests read them from
``../shared/datasets`` beside the checkout (or ``$TFREC_SHARED_DATASETS``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tfrec  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Directory holding ml-100k/, ml-latest-small/, amazon-beauty-*/ (read-only)."""
    root = Path(os.environ.get("TFREC_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    if not (root / "ml-100k" / "u.data").is_file():
        pytest.fail(
            f"real datasets not found at {root} (expected {root / 'ml-100k' / 'u.data'}); "
            "set TFREC_SHARED_DATASETS to the folder that holds ml-100k/"
        )
    return root
