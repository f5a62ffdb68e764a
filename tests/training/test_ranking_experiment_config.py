"""RankingExperimentConfig: presets, validation, JSON round-trip."""

import json

import pytest

from tfrec.training.ranking_config import RankingExperimentConfig


def test_pipeline_preset_round_trips_through_json(tmp_path):
    config = RankingExperimentConfig.for_dataset("synthetic", kind="pipeline")
    assert config.ranking.objective == "next_item" and config.kind == "pipeline"
    path = tmp_path / "config.json"
    config.save(path)
    assert json.loads(path.read_text())["fusion_weights"] == config.fusion_weights
    assert RankingExperimentConfig.load(path) == config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fusion_weights", [0.0, -1.0], r"fusion_weights: expected numbers >= 0, got \[-1.0\]"),
        ("fusion_metric", "ndcg", "fusion_metric='ndcg'"),
        ("fusion_queries", -5, "fusion_queries=-5"),
        ("kind", "both", "kind='both'"),
    ],
)
def test_bad_fields_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        RankingExperimentConfig(**{field: value})
