"""Smoke tests of the ranking benchmarks (``--quick``: tiny synthetic data) and their arithmetic."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is a package at the repository root (see test_retrieval_quality.py).
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
ranking_rating = importlib.import_module("benchmarks.ranking_rating")
ranking_speed = importlib.import_module("benchmarks.ranking_speed")
two_stage = importlib.import_module("benchmarks.two_stage")


def _report(out: Path, stem: str) -> tuple[dict, str]:
    report = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    markdown = (out / f"{stem}.md").read_text(encoding="utf-8")
    assert report["name"] == stem
    assert report["command"].startswith("python")
    assert len(report["results"]["load_start"]) == 3
    assert len(report["results"]["load_end"]) == 3
    assert "QUICK synthetic smoke run" in markdown
    return report["results"], markdown


def test_summary_mean_std_and_verdict() -> None:
    # RMSE 0.90 and 0.92: mean 0.91, population std 0.01; MAE 0.70 and 0.74: 0.72 +- 0.02.
    folds = {"u1": {"rmse": 0.90, "mae": 0.70}, "u2": {"rmse": 0.92, "mae": 0.74}}
    summary = ranking_rating.summarize(folds)
    assert summary["rmse_mean"] == pytest.approx(0.91)
    assert summary["rmse_std"] == pytest.approx(0.01)
    assert summary["mae_mean"] == pytest.approx(0.72)
    assert summary["mae_std"] == pytest.approx(0.02)
    # Mean 0.91 <= 0.915 but only 2 of the 5 folds: not a pass.
    assert summary["acceptance"]["passed"] is False
    five = {f"u{k}": {"rmse": 0.91, "mae": 0.7} for k in range(1, 6)}
    assert ranking_rating.summarize(five)["acceptance"]["passed"] is True
    five["u5"]["rmse"] = 0.97  # mean (4 x 0.91 + 0.97) / 5 = 0.922 > 0.915
    assert ranking_rating.summarize(five)["acceptance"]["passed"] is False


def test_missing_fold_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t881250949\n", encoding="utf-8")
    (folder / "u1.test").write_text("1\t1\t5\t881250949\n", encoding="utf-8")
    # u.data and u1.test exist, u1.base does not: the error names u1.base.
    with pytest.raises(FileNotFoundError, match=r"u1\.base"):
        ranking_rating.movielens_folds(tmp_path, [1])


@pytest.mark.slow
def test_rating_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert ranking_rating.main(["--quick", "--folds", "1,2", "--output", str(out)]) == 0
    results, markdown = _report(out, "ranking_rating_quick")
    assert set(results["folds"]) == {"s1", "s2"}
    for fold in results["folds"].values():
        assert fold["rmse"] >= fold["mae"] > 0  # RMSE >= MAE always
        assert fold["epochs_run"] == 1
    assert results["missing_folds"] == []
    assert results["summary"]["acceptance"]["passed"] is False  # synthetic: not 5 folds
    assert "| s1 |" in markdown


@pytest.mark.slow
def test_speed_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "s"
    assert ranking_speed.main(["--quick", "--batches", "1,3", "--output", str(out)]) == 0
    results, markdown = _report(out, "ranking_speed_quick")
    cells = {(c["variant"], c["batch"]): c for c in results["cells"]}
    assert set(cells) == {(v, b) for v in ranking_speed.VARIANTS for b in (1, 3)}
    for (_, batch), cell in cells.items():
        # candidates/s = batch * C / median seconds per call
        expected = batch * 100 / (cell["median_ms_per_call"] / 1e3)
        assert cell["candidates_per_s"] == pytest.approx(expected, rel=1e-2)
    assert "| savedmodel | 1 |" in markdown


@pytest.mark.slow
def test_two_stage_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = ["--quick", "--weights", "0,1", "--tune-queries", "30", "--output", str(out)]
    assert two_stage.main(argv) == 0
    results, markdown = _report(out, "two_stage_quick")
    run = results["run"]
    assert set(run["test"]) == {"retrieval", "two_stage_w0", "two_stage_tuned"}
    assert run["fusion_weight"] in (0.0, 1.0)
    assert set(run["fusion_weights"]) == {"0.0", "1.0"}
    ndcg = run["test"]["retrieval"]["ndcg@10"]
    assert run["ratio_ndcg@10"] == pytest.approx(run["test"]["two_stage_tuned"]["ndcg@10"] / ndcg)
    assert "| retrieval only |" in markdown


@pytest.mark.slow
def test_two_stage_ranker_lists_from_another_saved_retrieval_model(tmp_path: Path) -> None:
    saved = tmp_path / "retrieval"
    first = ["--quick", "--weights", "0", "--tune-queries", "20", "--max-queries", "20"]
    assert two_stage.main([*first, "--save-retrieval", str(saved), "--output", str(tmp_path)]) == 0
    results, _ = _report(tmp_path, "two_stage_quick")
    assert results["run"]["pool_source"] == "the stage-1 model"
    again = [*first, "--retrieval-dir", str(saved), "--pool-retrieval-dir", str(saved)]
    assert two_stage.main([*again, "--output", str(tmp_path / "b")]) == 0
    results, markdown = _report(tmp_path / "b", "two_stage_quick")
    assert results["run"]["pool_source"] == f"loaded from {saved}"
    assert f"(hard negatives) from: loaded from {saved}" in markdown
    assert results["run"]["retrieval_source"].startswith(f"loaded from {saved}")
