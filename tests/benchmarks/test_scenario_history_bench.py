"""benchmarks/scenario_history.py: the choice on validation and a quick synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import import_benchmark

history = import_benchmark("scenario_history")


def _run(length: int, seed: int, valid: float, test: float) -> dict:
    return {"max_history": length, "seed": seed, "valid_ndcg@10": valid,
            "test_ndcg@10": test, "train_seconds": 10.0 * length}  # fmt: skip


def test_length_is_chosen_on_validation_not_test() -> None:
    runs = [
        _run(50, 1, 0.30, 0.10), _run(50, 2, 0.32, 0.12),  # valid mean .31, test mean .11
        _run(200, 1, 0.29, 0.20), _run(200, 2, 0.29, 0.22),  # valid mean .29, test mean .21
    ]  # fmt: skip
    summary = history.summarise(runs)
    assert summary["chosen_on_validation"] == 50  # test would have picked 200
    mean, se = summary["per_length"][50]["valid_ndcg@10"]
    assert mean == pytest.approx(0.31) and se == pytest.approx(0.01)  # sd .01414 / sqrt 2
    assert summary["per_length"][200]["train_seconds"] == 2000.0


def test_a_tie_on_validation_keeps_the_shorter_history() -> None:
    summary = history.summarise([_run(8, 1, 0.2, 0.1), _run(4, 1, 0.2, 0.3)])
    assert summary["chosen_on_validation"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenarios", "beauty,sports", "--scenario", "lastfm"], "not among --scenarios"),
        (["--lengths", "50,x"], "comma-separated integers"),
        (["--lengths", "0,50"], "must be >= 1"),
    ],
)
def test_bad_arguments_are_named(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        history.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_trains_each_length_and_reports(tmp_path: Path) -> None:
    # synthetic_a (400 users, 60 items) learns its planted dynamics in two epochs
    # (valid NDCG@10 .41-.45 measured, seeds 1 and 2; a random ranking of ~57 unseen
    # items scores about .08). The default, synthetic_small (60 users for 300 items),
    # can score exactly 0 on its 60 validation users after two epochs.
    argv = ["--quick", "--scenario", "synthetic_a", "--lengths", "3,6", "--seeds", "1"]
    assert history.main([*argv, "--epochs", "2", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "scenario_history_quick.json").read_text())["results"]
    assert results["scenario"] == "synthetic_a"
    assert [r["max_history"] for r in results["runs"]] == [3, 6]
    for run in results["runs"]:
        assert 0.2 < run["valid_ndcg@10"] <= 1.0 and 0.2 < run["test_ndcg@10"] <= 1.0
        assert run["train_seconds"] > 0
    best = max(results["runs"], key=lambda r: (r["valid_ndcg@10"], -r["max_history"]))
    assert results["summary"]["chosen_on_validation"] == best["max_history"]
    assert "Chosen on validation" in (tmp_path / "scenario_history_quick.md").read_text()
