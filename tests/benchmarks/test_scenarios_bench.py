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
    argv += ["--unfreeze-epochs", "1", "--epochs", "3"]  # every run capped at 3 epochs
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
    # the frozen stage is timed inside the whole adaptation, and its kept-or-not is recorded
    assert all(0 < r["adapted_frozen_seconds"] < r["adapted_seconds"] for r in rows)
    assert all(isinstance(r["adapted_unfrozen_kept"], bool) for r in rows)
    markdown = (tmp_path / "scenarios_quick.md").read_text()
    assert "## Adaptation to synthetic_small" in markdown
    assert "frozen stage NDCG@10" in markdown
    # A rerun on the same cells trains nothing and reports the same numbers.
    assert scenarios.main([*argv, "--cells", str(tmp_path / "cells")]) == 0
    rerun = json.loads((tmp_path / "scenarios_quick.json").read_text())["results"]
    assert all(cell["reused"] for cell in rerun["cells"].values())
    assert rerun["joint"] == report["joint"] and rerun["adapt"] == report["adapt"]


def _quality_report(path: Path, model_changes: dict) -> Path:
    """A retrieval_quality report of the lastfm preset, seed 7, with ``model_changes``."""
    from tfrec.training.retrieval_config import RetrievalExperimentConfig

    config = RetrievalExperimentConfig.for_dataset("lastfm", data_dir="/data").to_dict()
    config["model"]["training"]["seed"] = 7
    config["model"].update(model_changes)
    metrics = {f"test/{m}": 0.01 * (i + 1) for i, m in enumerate(scenarios.METRICS)}
    report = {
        "machine": {"git_commit": "abc", "git_dirty": False, "date_utc": "2026-11-30T00:00:00",
                    "load_average": [0.5, 0.5, 0.5]},
        "results": {"dataset": "lastfm", "config": config, "load_end": [1.0, 1.0, 1.0],
                    "run": {"metrics": {**metrics, "valid/hr@10": 0.9}, "train_seconds": 12.5}},
    }  # fmt: skip
    path.write_text(json.dumps(report))
    return path


def test_a_preset_quality_run_becomes_a_separate_cell(tmp_path: Path) -> None:
    cells = scenarios.CellStore(tmp_path / "cells", {"epochs": None, "quick": False})
    report = _quality_report(tmp_path / "q.json", {})
    assert scenarios.import_quality_report(report, cells, None) == "separate_lastfm_s7"
    cell = cells.get("separate_lastfm_s7")
    # hr@5 .01, ndcg@5 .02, hr@10 .03, ...: the test metrics only, in METRICS order
    assert cell["metrics"]["hr@10"] == pytest.approx(0.03) and "valid/hr@10" not in cell["metrics"]
    assert cell["train_seconds"] == 12.5
    assert cells.provenance["separate_lastfm_s7"]["source"] == str(report)


def test_a_tuned_quality_run_is_not_a_separate_cell(tmp_path: Path) -> None:
    cells = scenarios.CellStore(tmp_path / "cells", {"epochs": None, "quick": False})
    report = _quality_report(tmp_path / "q.json", {"embedding_dim": 128})
    with pytest.raises(ValueError, match=r"q\.json: its config differs .* in \['model'\]"):
        scenarios.import_quality_report(report, cells, None)
    assert not (tmp_path / "cells").exists()


def test_the_shared_architecture_row_exists_only_where_the_preset_differs() -> None:
    args = scenarios.parse_args(["--seeds", "3"])
    names = ["beauty", "lastfm", "ml-latest-small"]
    # Beauty's preset is the joint model (Beauty's transformer)
    assert scenarios.shared_arch_config(names, "beauty", 3, args) is None
    heads = scenarios.shared_arch_config(names, "lastfm", 3, args).model  # its preset has 2
    assert heads.num_heads == 1 and (heads.training.epochs, heads.training.patience) == (150, 10)
    config = scenarios.shared_arch_config(names, "ml-latest-small", 3, args)
    model = config.model  # the joint model's settings, ml-latest-small's own schedule
    assert model.encoder == "transformer" and model.max_history == 50
    assert model.use_user_embedding and model.scenario_layers
    assert (model.training.epochs, model.training.patience) == (50, 5)
    assert model.training.seed == 3 and config.data.dataset == "ml-latest-small"
    capped = scenarios.parse_args(["--seeds", "3", "--epochs", "7"])
    assert (
        scenarios.shared_arch_config(names, "ml-latest-small", 3, capped).model.training.epochs == 7
    )


def test_the_source_time_is_reported_when_no_cells_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without --cells nothing is stored: the source's time must come from its training.
    monkeypatch.setattr(scenarios, "joint", lambda config, save: {"train_seconds": 12.3})
    monkeypatch.setattr(
        scenarios, "adapted", lambda *a, **k: {"ndcg@10": 0.2, "train_seconds": 1.5}
    )
    scratch = {"metrics": {"ndcg@10": 0.3}, "train_seconds": 4.0}
    monkeypatch.setattr(scenarios, "run_separate", lambda *a, **k: scratch)
    args = scenarios.parse_args(["--quick", "--seeds", "1", "--fractions", "0.25"])
    cells = scenarios.CellStore(None, {"epochs": None, "quick": True})
    out = scenarios.part_adapt(args, args.scenarios, tmp_path, cells)
    assert out["synthetic_small"]["source_train_seconds"] == 12.3
    assert out["synthetic_small"]["rows"][0]["adapted_seconds"] == 1.5


def test_an_adapted_cell_stored_before_a_config_field_existed_is_reused(tmp_path: Path) -> None:
    from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig

    source = MultiScenarioExperimentConfig.for_scenarios(["synthetic_a"]).to_dict()
    wanted = scenarios.AdaptCellConfig(source, "synthetic_small", [8, 3], [0, 0.1])
    stored = wanted.to_dict()
    del stored["source"]["max_histories"]  # a cell written before that field existed
    cells = scenarios.CellStore(tmp_path / "cells", {"epochs": None, "quick": True})
    facts = {"git_commit": "abc", "git_dirty": False, "date_utc": "2026-12-01", "load_average": []}
    cells.put("adapt_x", {"ndcg@10": 0.5}, facts, config=stored)
    assert cells.get("adapt_x", wanted) == {"ndcg@10": 0.5}
    other_schedule = scenarios.AdaptCellConfig(source, "synthetic_small", [9, 3], [0, 0.1])
    with pytest.raises(ValueError, match=r"adapt_x\.json: .* \(sections \['schedule'\] differ"):
        cells.get("adapt_x", other_schedule)
