"""Fixtures for the tfrec_client tests: the tiny SavedModels and local server of tests/serving."""

from __future__ import annotations

from tests.serving.conftest import (  # noqa: F401  (re-exported fixtures)
    export_dir,
    free_port,
    saved_models,
    start_server,
)
