"""benchmarks/scenarios.py: the acceptance arithmetic and a quick synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import import_benchmark

scenarios = import_benchmark("scenarios")


def test_mean_and_standard_error() -> None:
    # values 1, 2, 3: mean 2, sample sd 1, SE 1 / sqrt(3)
    mean, se = scenarios.mean_se([1.0, 2.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(3**-0.5)
    assert scenarios.mean_se([0.5]) == (0.5, 0.0)


def _summary(sep: tuple[float, float], joint: tuple[float, float]) -> dict:
    metrics = {m: (0.0, 0.0) for m in scenarios.METRICS}
    return {"separate": {**metrics, "ndcg@10": sep}, "joint": {**metrics, "ndcg@10": joint}}


def test_acceptance_rules() -> None:
    results = {
        "joint": {
            "summary": {
                "big": _summary((0.50, 0.01), (0.48, 0.03)),  # 0.48 >= 0.50 - 0.03: ok
                "small": _summary((0.10, 0.01), (0.104, 0.01)),  # +4%: below the 5% rule
            }
        },
        "adapt": {
            "small": {
                "rows": [
                    {"fraction": 0.25, "adapted_ndcg@10": 0.095, "adapted_seconds": 20.0},
                    {"fraction": 1.0, "scratch_ndcg@10": 0.10, "scratch_seconds": 100.0},
                ]
            }
        },
    }
    checks = scenarios.acceptance(results, "small")["checks"]
    assert checks["big: joint >= separate - 1 SE"]["ok"]
    assert checks["small: joint >= separate - 1 SE"]["ok"]
    assert not checks["small: joint >= 1.05 x separate"]["ok"]
    adapt = checks["small: adapted 25% vs scratch 100%"]  # .95 of the quality in .2 of the time
    assert adapt == {"ndcg_ratio": 0.95, "time_ratio": 0.2, "ok": True}


def test_targets_must_be_scenarios() -> None:
    with pytest.raises(SystemExit):
        scenarios.parse_args(["--scenarios", "beauty,sports", "--targets", "lastfm"])


@pytest.mark.slow
def test_quick_run_writes_both_parts(tmp_path: Path) -> None:
    argv = ["--quick", "--seeds", "1", "--fractions", "0.25,1.0", "--output", str(tmp_path)]
    assert scenarios.main([*argv, "--cells", str(tmp_path / "cells")]) == 0
    report = json.loads((tmp_path / "scenarios_quick.json").read_text())["results"]
    # 1 joint + 3 separate + 1 source + 1 scratch at 25% + 2 adapted (scratch 100% = separate)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 8
    assert not any(cell["reused"] for cell in report["cells"].values())
    summary = report["joint"]["summary"]
    assert set(summary) == {"synthetic_a", "synthetic_b", "synthetic_small"}
    for models in summary.values():
        for model in ("separate", "joint"):
            assert 0.0 <= models[model]["ndcg@10"][0] <= 1.0
    rows = report["adapt"]["synthetic_small"]["rows"]
    assert [r["fraction"] for r in rows] == [0.25, 1.0]
    assert all(r["adapted_seconds"] > 0 and r["scratch_seconds"] > 0 for r in rows)
    markdown = (tmp_path / "scenarios_quick.md").read_text()
    assert "## Adaptation to synthetic_small" in markdown
    # A rerun on the same cells trains nothing and reports the same numbers.
    assert scenarios.main([*argv, "--cells", str(tmp_path / "cells")]) == 0
    rerun = json.loads((tmp_path / "scenarios_quick.json").read_text())["results"]
    assert all(cell["reused"] for cell in rerun["cells"].values())
    assert rerun["joint"] == report["joint"] and rerun["adapt"] == report["adapt"]
