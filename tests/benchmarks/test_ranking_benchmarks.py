"""Smoke tests of the ranking benchmarks (``--quick``: tiny synthetic data) and their arithmetic."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
from testing_utils import import_benchmark

ranking_rating = import_benchmark("ranking_rating")
ranking_speed = import_benchmark("ranking_speed")
two_stage = import_benchmark("two_stage")


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


def test_time_calls_divides_the_clock_time_by_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"wall": 100.0, "cpu": 7.0}
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: clock["wall"], process_time=lambda: clock["cpu"]
    )
    monkeypatch.setattr(ranking_speed, "time", fake_time)

    def call() -> None:  # each call takes 10 ms of wall time and 4 ms of CPU time
        clock["wall"] += 0.010
        clock["cpu"] += 0.004

    wall, cpu = ranking_speed.time_calls(call, 5)
    # 5 calls: 50 ms wall / 5 = 10 ms, 20 ms CPU / 5 = 4 ms per call.
    assert wall == pytest.approx(0.010)
    assert cpu == pytest.approx(0.004)
    assert clock["wall"] == pytest.approx(100.05)  # called exactly 5 times


@pytest.mark.slow
def test_speed_quick_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fixed timings (--quick runs 2 rounds per cell): round 1 takes 4 ms per call,
    # round 2 6 ms, the CPU always 2 ms. The models still run once per round.
    rounds: dict[object, int] = {}

    def fake_time_calls(fn, calls: int) -> tuple[float, float]:
        fn()
        rounds[fn] = rounds.get(fn, 0) + 1
        return (0.004 if rounds[fn] == 1 else 0.006), 0.002

    monkeypatch.setattr(ranking_speed, "time_calls", fake_time_calls)
    out = tmp_path / "s"
    assert ranking_speed.main(["--quick", "--batches", "1,3", "--output", str(out)]) == 0
    results, markdown = _report(out, "ranking_speed_quick")
    cells = {(c["variant"], c["batch"]): c for c in results["cells"]}
    assert set(cells) == {(v, b) for v in ranking_speed.VARIANTS for b in (1, 3)}
    assert sorted(rounds.values()) == [2, 2, 2, 2]  # 4 cells x 2 rounds
    for (_, batch), cell in cells.items():
        # median of (4, 6) ms = 5 ms; p10 = 4 + 0.1 * 2 = 4.2 ms; p90 = 5.8 ms
        assert cell["median_ms_per_call"] == pytest.approx(5.0)
        assert cell["p10_ms"] == pytest.approx(4.2)
        assert cell["p90_ms"] == pytest.approx(5.8)
        # C = 100 candidates per request: 100 / 5 ms = 20,000/s and 100 / 2 ms = 50,000
        # per CPU-second for each request in the batch
        assert cell["candidates_per_s"] == pytest.approx(20_000.0 * batch)
        assert cell["candidates_per_cpu_s"] == pytest.approx(50_000.0 * batch)
    # Floats get 4 significant digits; from 10,000 on, whole numbers with separators.
    assert "| savedmodel | 1 | 5 | 4.2 | 5.8 | 20,000 | 50,000 |" in markdown


@pytest.fixture(scope="module")
def two_stage_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick two-stage run that also saves its retrieval model (``retrieval/``)."""
    out = tmp_path_factory.mktemp("two_stage")
    argv = ["--quick", "--weights", "0,1", "--tune-queries", "30", "--output", str(out / "t")]
    assert two_stage.main([*argv, "--save-retrieval", str(out / "retrieval")]) == 0
    return out


@pytest.mark.slow
def test_two_stage_quick_run(two_stage_run: Path) -> None:
    results, markdown = _report(two_stage_run / "t", "two_stage_quick")
    run = results["run"]
    test = run["test"]
    assert set(test) == {"retrieval", "two_stage_w0", "two_stage_tuned"}
    table = {float(w): value for w, value in run["fusion_weights"].items()}
    assert set(table) == {0.0, 1.0}
    # Two weights: w = 1 is picked only when its validation NDCG@10 is strictly higher.
    assert run["fusion_weight"] == (1.0 if table[1.0] > table[0.0] else 0.0)
    # Re-ranking only reorders the N retrieved items and every other item keeps its
    # retrieval score, so for K >= N the hits of both two-stage runs are retrieval's.
    n = run["ranker_config"]["num_candidates"]
    cutoffs = [k for k in (50, 100) if k >= n]
    assert cutoffs, f"num_candidates={n}: no cutoff K >= N to compare"
    for k in cutoffs:
        hits = test["retrieval"][f"hr@{k}"]
        assert test["two_stage_w0"][f"hr@{k}"] == pytest.approx(hits), k
        assert test["two_stage_tuned"][f"hr@{k}"] == pytest.approx(hits), k
    assert "| retrieval only |" in markdown


@pytest.mark.slow
def test_two_stage_ranker_lists_from_another_saved_retrieval_model(
    two_stage_run: Path, tmp_path: Path
) -> None:
    saved = two_stage_run / "retrieval"  # the retrieval model the quick run saved
    results, _ = _report(two_stage_run / "t", "two_stage_quick")
    assert results["run"]["pool_source"] == "the stage-1 model"
    first = ["--quick", "--weights", "0", "--tune-queries", "20", "--max-queries", "20"]
    again = [*first, "--retrieval-dir", str(saved), "--pool-retrieval-dir", str(saved)]
    assert two_stage.main([*again, "--output", str(tmp_path / "b")]) == 0
    results, markdown = _report(tmp_path / "b", "two_stage_quick")
    assert results["run"]["pool_source"] == f"loaded from {saved}"
    assert f"(hard negatives) from: loaded from {saved}" in markdown
    assert results["run"]["retrieval_source"].startswith(f"loaded from {saved}")
