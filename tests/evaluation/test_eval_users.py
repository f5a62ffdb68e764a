"""``--eval-users N``: a seeded user sample, its 95% confidence intervals, and the CLI wiring."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from tfrec.cli.main import main
from tfrec.evaluation.config import EvalConfig
from tfrec.evaluation.intervals import ci_half_width, ci_lines, interval_keys


def test_half_width_by_hand():
    # Values 1, 0, 0, 1: mean 0.5, sample variance (4 * 0.25) / 3 = 1/3,
    # half-width z * sqrt((1/3) / 4) = 1.959964 * 0.2886751 = 0.5657929 (z = 1.959964).
    assert ci_half_width(2.0, 2.0, 4) == pytest.approx(0.5657929, abs=1e-6)
    assert ci_half_width(1.0, 1.0, 1) != ci_half_width(1.0, 1.0, 1)  # NaN: no variance with n=1
    assert interval_keys({"mrr": 2.0}, {"mrr": 2.0}, 4) == {"mrr_ci95": pytest.approx(0.5657929)}


def test_interval_covers_the_population_mean_about_95_percent_of_the_time():
    # A skewed population (like ndcg: mostly 0), 400 seeded samples of 300 users each.
    rng = np.random.default_rng(0)
    population = np.where(rng.random(20_000) < 0.1, rng.random(20_000), 0.0)
    truth = population.mean()
    covered = 0
    for _ in range(400):
        sample = rng.choice(population, 300, replace=False)
        half = ci_half_width(sample.sum(), np.square(sample).sum(), sample.size)
        covered += abs(sample.mean() - truth) <= half
    assert 0.91 <= covered / 400 <= 0.99  # binomial sd at 95%: 1.1 points


def test_ci_lines_format():
    metrics = {
        "test/ndcg@10": 0.0571,
        "test/ndcg@10_ci95": 0.0032,
        "test/sample_users": 5000.0,
        "test/population_users": 192000.0,
        "test/hr@10": 0.1,  # no interval: not shown
    }
    assert ci_lines(metrics, ["test/ndcg@10", "test/hr@10"]) == [
        "test/ndcg@10 = 0.0571 ± 0.0032 (95% CI, 5,000 of 192,000 users)"
    ]


def test_num_users_is_checked_and_defaults_to_everyone():
    assert EvalConfig().num_users == 0
    assert EvalConfig.from_dict({"ks": [10]}).num_users == 0  # configs saved before the field
    with pytest.raises(ValueError, match="num_users=-1"):
        EvalConfig(num_users=-1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval_users")
    args = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--epochs", "1"]
    args += ["--batch-size", "8", "--no-export", "--eval-users", "25", "--set", "embedding_dim=4"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    (out / "stdout.txt").write_text(printed.getvalue(), encoding="utf-8")
    return out


def test_train_flag_samples_users_and_reports_intervals(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["evaluation"]["num_users"] == 25
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test/sample_users"] == 25
    assert metrics["test/population_users"] > 25
    assert metrics["test/users"] <= 25
    assert 0 < metrics["test/ndcg@10_ci95"] < 1
    assert all(f"test/{name}_ci95" in metrics for name in ("hr@10", "recall@10", "mrr"))
    printed = (run_dir / "stdout.txt").read_text(encoding="utf-8")
    population = int(metrics["test/population_users"])
    assert f"test/mrr = {metrics['test/mrr']:.4f} ± {metrics['test/mrr_ci95']:.4f} " in printed
    assert f"(95% CI, 25 of {population:,} users)" in printed


def test_evaluate_flag_is_deterministic_and_prints_intervals(run_dir, capsys):
    args = ["evaluate", "--model-dir", str(run_dir), "--eval-users", "12"]
    assert main(args) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert main(args) == 0  # same seed: the same 12 users, the same metrics
    second = json.loads((run_dir / "metrics.json").read_text())
    assert first["test/sample_users"] == 12
    assert {k: v for k, v in first.items() if k.startswith("test")} == {
        k: v for k, v in second.items() if k.startswith("test")
    }
    population = int(first["test/population_users"])
    assert f"test/ndcg@10 = {first['test/ndcg@10']:.4f} ± " in out
    assert f"(95% CI, 12 of {population:,} users)" in out


def test_evaluate_without_the_flag_uses_the_saved_setting(run_dir):
    assert main(["evaluate", "--model-dir", str(run_dir), "--eval-users", "0"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "test/ndcg@10" in metrics
    assert metrics["test/users"] > 25  # everyone


@pytest.mark.parametrize("mask", ["history", "none"])
def test_trained_model_batched_top_k_equals_the_dense_loop(run_dir, mask):
    from tfrec import load_experiment
    from tfrec.evaluation.retrieval import protocol_metrics

    evaluator = load_experiment(run_dir).evaluator
    config = EvalConfig(mask=mask)
    queries = evaluator.queries("test")
    masked = mask == "history"
    dense = protocol_metrics(evaluator.score_fn(queries), queries, config, masked=masked)
    batched = evaluator.evaluate_part("test", config)
    prefix = "test/" if masked else "test_unmasked/"
    assert {key: batched[prefix + key] for key in dense} == pytest.approx(dense, abs=1e-6)
