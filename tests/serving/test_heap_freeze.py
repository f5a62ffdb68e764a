"""The server keeps its loaded models out of the garbage collector's sight (gc.freeze)."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

from tfrec.serving.manager import ModelManager
from tfrec.serving.model_config import ModelEntry


def _version(base: Path, version: int) -> None:
    path = base / str(version)
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"fake")


def test_manager_reports_loads_and_unloads(tmp_path: Path) -> None:
    base = tmp_path / "m"
    _version(base, 1)
    changes: list[str] = []
    manager = ModelManager(
        [ModelEntry("m", str(base))],
        load_fn=lambda name, version, path: f"{name} {version}",
        on_change=lambda: changes.append("change"),
    )
    manager.poll()  # loads version 1
    assert manager.resolve("m") == "m 1" and changes == ["change"]
    manager.poll()  # nothing new on disk
    assert changes == ["change"]
    _version(base, 2)
    shutil.rmtree(base / "1")
    manager.poll()  # loads 2, unloads 1: one call for the poll
    assert manager.resolve("m") == "m 2" and changes == ["change", "change"]


def test_server_freezes_the_heap_while_it_runs(export_dir: Path, start_server) -> None:
    gc.unfreeze()
    server = start_server([ModelEntry("retrieval", str(export_dir / "retrieval"))])
    assert gc.get_freeze_count() > 0  # the loaded model's objects among them
    server.stop(grace=1.0)
    assert gc.get_freeze_count() == 0
