"""Smoke test of benchmarks/privacy.py (``--quick``: tiny synthetic data)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from testing_utils import import_benchmark

privacy = import_benchmark("privacy")


@pytest.mark.slow
def test_quick_run_writes_the_privacy_utility_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert privacy.main(["--quick", "--epsilons", "3", "--output", str(out)]) == 0
    report = json.loads((out / "privacy_quick.json").read_text(encoding="utf-8"))
    markdown = (out / "privacy_quick.md").read_text(encoding="utf-8")
    no_dp, dp = report["results"]["runs"]
    assert no_dp["target_epsilon"] is None and no_dp["epsilon"] is None
    # sigma was picked for the planned 2 epochs; the run spends at most the target
    assert dp["target_epsilon"] == 3.0 and 0 < dp["epsilon"] <= 3.0 + 1e-6
    assert dp["noise_multiplier"] > 0 and dp["steps"] >= 1
    assert dp["delta"] == pytest.approx(1 / dp["num_train_examples"])
    for run in (no_dp, dp):
        assert 0.0 <= run["ndcg@10"] <= 1.0 and run["train_s_per_epoch"] > 0
    assert not math.isnan(dp["hr@10"])
    assert "| ∞ | ∞ |" in markdown and "QUICK synthetic smoke run" in markdown


def test_build_config_sets_the_target_and_clip() -> None:
    args = privacy.parse_args(["--data-dir", "/data", "--epochs", "7", "--l2-clip", "0.5"])
    config = privacy.build_config(args, 3.0)
    assert config.data.dataset == "ml-100k" and config.data.data_dir == "/data"
    assert config.model.training.epochs == 7
    assert config.model.training.privacy.target_epsilon == 3.0
    assert config.model.training.privacy.l2_clip == 0.5
    assert not privacy.build_config(args, None).model.training.privacy.enabled
