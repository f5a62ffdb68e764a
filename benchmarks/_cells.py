"""Finished cells of a long benchmark, kept as JSON files so that a run can resume.

A benchmark of many trainings (``benchmarks.scenarios``: hours on 2 cores) runs each
training as a *cell* through :meth:`CellStore.run`. With a directory, every finished
cell is written there (atomically) with its provenance: the benchmark settings that
change its result, the git commit, the date and the load average before and after.
A later run with the same directory and settings reads the cell instead of training
again, so the benchmark can be completed over several sessions; a cell measured
with other settings is refused rather than mixed in. Without a directory every cell
runs (the default).

Usage::

    cells = CellStore(Path("benchmarks/results/scenarios_cells"), {"epochs": None})
    result = cells.run("separate_lastfm_s1", lambda: train_and_evaluate(...))
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _report
from tfrec.config import atomic_write_text  # light: imports no TensorFlow

_KEY = re.compile(r"^[A-Za-z0-9_.+-]+$")


class CellStore:
    """Runs benchmark cells, reading finished ones from ``root`` when it is given.

    Args:
        root: Directory of ``<key>.json`` cell files (created when needed), or None
            to run every cell and keep nothing.
        settings: The benchmark settings a cell's result depends on (JSON values);
            stored in each cell and compared when it is read back.
    """

    def __init__(self, root: str | os.PathLike[str] | None, settings: dict[str, Any]) -> None:
        self.root = Path(root) if root is not None else None
        self.settings = json.loads(json.dumps(settings))  # as it reads back from a file
        self.provenance: dict[str, dict[str, Any]] = {}

    def _path(self, key: str) -> Path | None:
        if not _KEY.match(key):
            raise ValueError(f"cell key {key!r}; expected letters, digits and _ . + - only")
        return self.root / f"{key}.json" if self.root is not None else None

    def get(self, key: str) -> dict[str, Any] | None:
        """The finished cell ``key``'s result, or None (no directory, or not finished).

        Raises:
            ValueError: A malformed ``key``, or the stored cell was measured with
                other settings (the message names the file and both settings).
        """
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        cell = json.loads(path.read_text())
        if cell["settings"] != self.settings:
            raise ValueError(
                f"{path}: measured with settings {cell['settings']}, this run has "
                f"{self.settings}; use another cells directory or the same settings"
            )
        # reused: measured by an earlier run (a cell measured by this one stays False)
        self.provenance.setdefault(key, {**cell["provenance"], "reused": True})
        return cell["result"]

    def put(
        self,
        key: str,
        result: dict[str, Any],
        facts: dict[str, Any],
        *,
        load_end: list[float] | None = None,
        source: str | None = None,
    ) -> None:
        """Records cell ``key`` (replacing an older one) measured from ``facts`` until now.

        Args:
            key: The cell's name.
            result: Its JSON-compatible result.
            facts: :func:`benchmarks._report.machine_facts` taken before measuring.
            load_end: The load average when it ended (None: now).
            source: The report it was taken from, when another benchmark measured it.
        """
        path = self._path(key)
        provenance = {
            "commit": facts["git_commit"],
            "git_dirty": facts["git_dirty"],
            "date_utc": facts["date_utc"],
            "load_start": facts["load_average"],
            "load_end": load_end or [round(x, 2) for x in os.getloadavg()],
            **({"source": source} if source else {}),
        }
        if path is not None:
            cell = {"key": key, "settings": self.settings, "provenance": provenance}
            atomic_write_text(path, json.dumps({**cell, "result": result}, indent=2) + "\n")
        self.provenance[key] = {**provenance, "reused": False}

    def run(self, key: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The result of cell ``key``: :meth:`get` if finished, else ``measure()`` and :meth:`put`.

        Args:
            key: The cell's name (letters, digits and ``_ . + -``), unique in the store.
            measure: Trains and evaluates the cell; returns a JSON-compatible dict.

        Returns:
            The cell's result; its provenance (commit, date, loads, ``reused``) is in
            :attr:`provenance` under ``key``.

        Raises:
            ValueError: As :meth:`get`.
        """
        finished = self.get(key)
        if finished is not None:
            return finished
        facts = _report.machine_facts()
        result = measure()
        self.put(key, result, facts)
        return result
