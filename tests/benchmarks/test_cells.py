"""CellStore: finished benchmark cells are reused, never mixed across settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks._cells import CellStore


def _counting(result: dict) -> tuple[list[int], object]:
    calls: list[int] = []

    def measure() -> dict:
        calls.append(1)
        return result

    return calls, measure


def test_a_finished_cell_is_read_back_instead_of_measured_again(tmp_path: Path) -> None:
    calls, measure = _counting({"ndcg@10": 0.25})
    first = CellStore(tmp_path, {"epochs": None})
    assert first.run("separate_lastfm_s1", measure) == {"ndcg@10": 0.25}
    assert first.provenance["separate_lastfm_s1"]["reused"] is False
    again = CellStore(tmp_path, {"epochs": None})  # a later session, same settings
    assert again.run("separate_lastfm_s1", measure) == {"ndcg@10": 0.25}
    assert len(calls) == 1 and again.provenance["separate_lastfm_s1"]["reused"] is True
    stored = json.loads((tmp_path / "separate_lastfm_s1.json").read_text())
    assert stored["settings"] == {"epochs": None} and "load_start" in stored["provenance"]


def test_a_cell_of_other_settings_is_refused_naming_the_file(tmp_path: Path) -> None:
    _, measure = _counting({"ndcg@10": 0.25})
    CellStore(tmp_path, {"epochs": None}).run("joint_a+b_s1", measure)
    with pytest.raises(ValueError, match=r"joint_a\+b_s1\.json: measured with settings"):
        CellStore(tmp_path, {"epochs": 5}).run("joint_a+b_s1", measure)


def test_without_a_directory_every_cell_runs(tmp_path: Path) -> None:
    calls, measure = _counting({"x": 1})
    cells = CellStore(None, {})
    cells.run("a", measure)
    cells.run("a", measure)
    assert len(calls) == 2 and cells.get("a") is None and not list(tmp_path.iterdir())


def test_a_key_with_a_path_separator_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cell key '\.\./x'"):
        CellStore(Path("/tmp"), {}).run("../x", lambda: {})


def test_a_cell_trained_with_another_config_is_refused(tmp_path: Path) -> None:
    _, measure = _counting({"ndcg@10": 0.25})
    config = {"data": {"dataset": "lastfm", "data_dir": "/a"}, "model": {"dropout": 0.3}}
    CellStore(tmp_path, {}).run("separate_lastfm_s1", measure, config)
    moved = {"data": {"dataset": "lastfm", "data_dir": "/b"}, "model": {"dropout": 0.3}}
    assert CellStore(tmp_path, {}).get("separate_lastfm_s1", moved) == {"ndcg@10": 0.25}
    changed = {"data": {"dataset": "lastfm", "data_dir": "/a"}, "model": {"dropout": 0.5}}
    with pytest.raises(ValueError, match=r"another experiment config \(sections \['model'\]"):
        CellStore(tmp_path, {}).get("separate_lastfm_s1", changed)


def test_a_field_added_since_at_its_default_does_not_refuse_an_old_cell(tmp_path: Path) -> None:
    # A cell written before RetrievalConfig had ``mean_expert``: its stored model lacks the
    # key. Read through the config class it gets the default (False), the value it ran with.
    from tfrec.training.retrieval_config import RetrievalExperimentConfig

    calls, measure = _counting({"ndcg@10": 0.25})
    config = RetrievalExperimentConfig.for_dataset("sports")  # its preset has no mean expert
    stored = config.to_dict()
    del stored["model"]["mean_expert"]
    CellStore(tmp_path, {}).run("separate_sports_s1", measure, stored)
    assert CellStore(tmp_path, {}).run("separate_sports_s1", measure, config) == {"ndcg@10": 0.25}
    assert calls == [1]  # reused, not measured again
    config.model.mean_expert = True  # a real change is still refused
    with pytest.raises(ValueError, match=r"sections \['model'\]"):
        CellStore(tmp_path, {}).get("separate_sports_s1", config)
