"""benchmarks/ml100k_stratified.py: model choice by validation, aggregation, skips, quick run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import import_benchmark

bench = import_benchmark("ml100k_stratified")


def record(model: str, seed: int, test_ndcg: float, valid_ndcg: float) -> dict:
    metrics = {f"test/{m}": 0.1 for m in bench.METRICS}
    metrics["test/ndcg@10"] = test_ndcg
    metrics[bench.SELECT_BY] = valid_ndcg
    return {"model": model, "seed": seed, "metrics": metrics, "train_seconds": 2.0}


def test_summary_and_choice_by_validation_not_test() -> None:
    runs = [
        # "mean": test .50 / .46 -> mean .48, sample std sqrt(2 * .02^2 / 1) = .028284; valid .20
        record("mean", 42, 0.50, 0.20),
        record("mean", 43, 0.46, 0.20),
        # "gru": better on test (.60) but worse on validation (.10): must not be chosen.
        record("gru", 42, 0.60, 0.10),
        {"model": "gru", "seed": 43, "error": "RuntimeError: boom"},  # failed seed: left out
    ]
    summary = bench.summarize(runs, ["mean", "gru", "caser"])
    assert set(summary) == {"mean", "gru"}  # caser had no run
    assert summary["mean"]["test/ndcg@10"]["mean"] == pytest.approx(0.48)
    assert summary["mean"]["test/ndcg@10"]["std"] == pytest.approx(0.028284, abs=1e-6)
    assert summary["gru"]["seeds"] == [42]
    assert summary["gru"]["test/ndcg@10"]["std"] == 0.0  # one seed
    verdict = bench.acceptance(summary)
    assert verdict["selected"] == "mean"
    assert verdict["test_ndcg@10"] == pytest.approx(0.48)
    assert verdict["passed"] is True  # .48 > BiVAE .4751
    assert bench.acceptance(summary, quick=True)["passed"] is False
    summary["mean"]["test/ndcg@10"]["mean"] = 0.4751  # equal is not above
    assert bench.acceptance(summary)["passed"] is False


def test_unregistered_kind_is_skipped_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench.MODELS, "ghost", ("no_such_kind", {}))
    models, skipped = bench.available_models(["mean", "ghost"])
    assert models == ["mean"]
    assert "'no_such_kind' is not registered" in skipped["ghost"]


def test_config_uses_the_item_stratified_split() -> None:
    args = bench.parse_args(["--data-dir", "/data", "--split-seed", "42", "--epochs", "3"])
    config = bench.build_config("none", 43, args)
    assert config.data.split == "item_stratified"
    assert (config.data.train_ratio, config.data.valid_fraction) == (0.75, 0.05)
    assert config.data.seed == 42  # fixed split seed
    assert config.model.training.seed == 43  # training seed
    assert config.model.training.epochs == 3
    assert config.model.encoder == "none"
    assert config.data.data_dir == "/data"


@pytest.mark.slow
def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--quick", "--models", "mean", "none", "--output", str(out)]
    assert bench.main(argv) == 0
    report = json.loads((out / "ml100k_stratified_quick.json").read_text(encoding="utf-8"))
    results = report["results"]
    assert [(r["model"], r["seed"]) for r in results["runs"]] == [("mean", 42), ("none", 42)]
    for run in results["runs"]:
        assert "error" not in run
        assert run["epochs_run"] == 2  # QUICK_MODEL caps training at 2 epochs
        for key in [f"test/{m}" for m in bench.METRICS] + [bench.SELECT_BY]:
            assert 0.0 <= run["metrics"][key] <= 1.0, key
    assert results["acceptance"]["selected"] in ("mean", "none")
    assert results["acceptance"]["passed"] is False  # a quick run never counts
    assert "item_stratified split of synthetic" in results["splits"]["42"]["summary"]
    markdown = (out / "ml100k_stratified_quick.md").read_text(encoding="utf-8")
    assert "| BiVAE (microsoft/recommenders table) | 42 | 0.4751 |" in markdown
    assert "quick run: does not count" in markdown
