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

import contextlib
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

    def get(self, key: str, config: Any | None = None) -> dict[str, Any] | None:
        """The finished cell ``key``'s result, or None (no directory, or not finished).

        Args:
            key: The cell's name.
            config: The experiment config the cell would train (a config object or
                its ``to_dict()``); when given, the stored one must be the same (data
                directories aside). With an object, the stored dict is read through its
                class first, so fields added since at their defaults do not differ.

        Raises:
            ValueError: A malformed ``key``, or the stored cell was measured with
                other settings or another config (the message names the file and
                what differs).
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
        differing = [] if config is None else differing_sections(*_both(cell.get("config"), config))
        if differing:
            raise ValueError(
                f"{path}: measured with another experiment config (sections {differing} "
                "differ, e.g. a preset changed since); delete the cell to measure it again"
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
        config: Any | None = None,
    ) -> None:
        """Records cell ``key`` (replacing an older one) measured from ``facts`` until now.

        Args:
            key: The cell's name.
            result: Its JSON-compatible result.
            facts: :func:`benchmarks._report.machine_facts` taken before measuring.
            load_end: The load average when it ended (None: now).
            source: The report it was taken from, when another benchmark measured it.
            config: The experiment config it trained (``to_dict()``), checked by :meth:`get`.
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
            if config is not None:
                cell["config"] = comparable(_as_dict(config))
            atomic_write_text(path, json.dumps({**cell, "result": result}, indent=2) + "\n")
        self.provenance[key] = {**provenance, "reused": False}

    def run(
        self,
        key: str,
        measure: Callable[[], dict[str, Any]],
        config: Any | None = None,
    ) -> dict[str, Any]:
        """The result of cell ``key``: :meth:`get` if finished, else ``measure()`` and :meth:`put`.

        Args:
            key: The cell's name (letters, digits and ``_ . + -``), unique in the store.
            measure: Trains and evaluates the cell; returns a JSON-compatible dict.
            config: The experiment config ``measure`` trains (an object with
                ``to_dict``/``from_dict``, or its ``to_dict()``), stored with the cell and
                compared when it is reused (see :meth:`get`).

        Returns:
            The cell's result; its provenance (commit, date, loads, ``reused``) is in
            :attr:`provenance` under ``key``.

        Raises:
            ValueError: As :meth:`get`.
        """
        finished = self.get(key, config)
        if finished is not None:
            return finished
        facts = _report.machine_facts()
        result = measure()
        self.put(key, result, facts, config=config)
        return result


def _as_dict(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else config


def _both(stored: dict[str, Any] | None, config: Any) -> tuple[dict[str, Any] | None, Any]:
    """The stored and wanted configs as dicts, the stored one through ``config``'s class.

    A field added to the config classes after a cell was measured is missing from
    its file; read through the class it takes its default, which is what the cell
    ran with, so only fields that really changed differ.
    """
    if stored is None or not hasattr(config, "from_dict"):
        return stored, _as_dict(config)
    with contextlib.suppress(ValueError, TypeError, KeyError):  # unreadable: compared as stored
        stored = type(config).from_dict(stored).to_dict()
    return stored, config.to_dict()


def comparable(config: Any) -> Any:
    """``config`` (a ``to_dict()``) as JSON values without its ``data_dir`` entries.

    Where the datasets are is not part of what a cell measured.
    """
    if isinstance(config, dict):
        return {k: comparable(v) for k, v in config.items() if k != "data_dir"}
    if isinstance(config, list | tuple):
        return [comparable(v) for v in config]
    return config


def differing_sections(stored: dict[str, Any] | None, config: dict[str, Any]) -> list[str]:
    """Top-level keys whose values differ between two configs (``data_dir`` aside)."""
    stored, wanted = comparable(stored or {}), comparable(config)
    return sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
