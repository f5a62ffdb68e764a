"""Typed presets: every dataset/kind resolves to the values of the old dict presets.

The expectations below are the dict presets as they were before the presets became
typed config instances (issue 10), copied literally: the resolved configs must not change.
They are flat (optimizer and training-loop fields beside the architecture, as in the
``config.json`` of runs saved before the sub-configs), so reading them with
``from_dict`` also checks that old flat configs nest into the same values.
"""

from __future__ import annotations

import dataclasses

import pytest

from tfrec.config import choices
from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.models.ranking import RankingConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.names import DatasetName
from tfrec.training.ranking_config import RankingExperimentConfig
from tfrec.training.retrieval_config import RetrievalExperimentConfig

BEAUTY = (
    {"split": "leave_one_out"},
    {
        "encoder": "transformer",
        "max_history": 50,
        "loss": "full",
        "embedding_dim": 64,
        "batch_size": 128,
        "learning_rate": 2e-3,
        "dropout": 0.3,
        "epochs": 18,
        "patience": 3,
    },
    {"mask": "both"},
)
OLD_PRESETS = {
    "beauty": BEAUTY,
    "beauty-bert4rec": (
        {"split": "leave_one_out"},
        {"encoder": "transformer", "max_history": 50, "loss": "full"},
        {"mask": "both"},
    ),
    "ml-100k": (
        {"split": "random", "train_ratio": 0.75, "valid_fraction": 0.05},
        {
            "encoder": "mean",
            "use_user_embedding": True,
            "max_history": 200,
            "batch_size": 32,
            "l2": 1e-4,
        },
        {"ks": [1, 5, 10, 20, 50, 100]},
    ),
    "ml-latest-small": (
        {"split": "random", "train_ratio": 0.75},
        {"encoder": "mean", "use_user_embedding": True, "max_history": 200},
        {},
    ),
    "synthetic": (
        {"split": "leave_one_out"},
        {"encoder": "gru", "embedding_dim": 32, "epochs": 10, "batch_size": 64},
        {},
    ),
    "csv": ({}, {}, {}),
    # Added with their datasets (issue 13), not old: beauty's values; Last.fm trains longer
    # (patience 10, up to 150 epochs) with 2 attention heads gated with the mean of the
    # history (scenario_layers + mean_expert): chosen on its validation NDCG@10.
    **dict.fromkeys(("sports", "s3rec"), BEAUTY),
    "lastfm": (
        BEAUTY[0],
        {
            **BEAUTY[1],
            "epochs": 150,
            "patience": 10,
            "num_heads": 2,
            "scenario_layers": True,
            "mean_expert": True,
        },
        BEAUTY[2],
    ),
}
OLD_RANKING_PRESETS = {
    ("ml-100k", "ranking"): {"objective": "rating", "max_history": 50},
    ("ml-latest-small", "ranking"): {"objective": "rating", "max_history": 50},
    ("beauty", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "num_negatives": 99,
        "use_user": False,
        "loss": "softmax",
        "max_history": 50,
    },
    ("synthetic", "ranking"): {"objective": "rating", "eval_negatives": 30},
    ("synthetic", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "hard_pool_size": 30,
        "num_candidates": 30,
        "num_negatives": 10,
        "eval_negatives": 30,
    },
    ("ml-100k", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "num_negatives": 99,
        "loss": "softmax",
        "max_history": 50,
    },
}
OLD_PIPELINE_DEFAULT = {
    "objective": "next_item",
    "negative_sampling": "hard",
    "retrieved_only": True,
}


def test_every_dataset_name_has_a_preset() -> None:
    assert sorted(OLD_PRESETS) == sorted(choices(DatasetName))


@pytest.mark.parametrize("dataset", sorted(OLD_PRESETS))
def test_retrieval_preset_equals_the_old_dict_preset(dataset: str) -> None:
    data, model, evaluation = OLD_PRESETS[dataset]
    expected = RetrievalExperimentConfig(
        data=DataConfig(dataset=dataset, data_dir="/d", **data),
        model=RetrievalConfig.from_dict(model),
        evaluation=EvalConfig(**evaluation),
    )
    assert RetrievalExperimentConfig.for_dataset(dataset, data_dir="/d") == expected


@pytest.mark.parametrize("dataset", sorted(OLD_PRESETS))
@pytest.mark.parametrize("kind", ["ranking", "pipeline"])
def test_ranking_preset_equals_the_old_dict_preset(dataset: str, kind: str) -> None:
    data, model, evaluation = OLD_PRESETS[dataset]
    default = OLD_PIPELINE_DEFAULT if kind == "pipeline" else {}
    expected = RankingExperimentConfig(
        data=DataConfig(dataset=dataset, **data),
        ranking=RankingConfig.from_dict(OLD_RANKING_PRESETS.get((dataset, kind), default)),
        retrieval=RetrievalConfig.from_dict(model),
        evaluation=EvalConfig(**evaluation),
        kind=kind,
    )
    assert RankingExperimentConfig.for_dataset(dataset, kind=kind) == expected


def test_presets_are_returned_as_independent_copies() -> None:
    first = RankingExperimentConfig.for_dataset("beauty", kind="pipeline")
    first.ranking.loss.num_negatives = 3
    first.retrieval.training.epochs = 1
    first.data = dataclasses.replace(first.data, seed=7)
    again = RankingExperimentConfig.for_dataset("beauty", kind="pipeline")
    assert (again.ranking.loss.num_negatives, again.retrieval.training.epochs, again.data.seed) == (
        99,
        18,
        42,
    )


def test_unknown_dataset_and_kind_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        RetrievalExperimentConfig.for_dataset("nope")
    with pytest.raises(ValueError, match="unknown kind 'retrieval'"):
        RankingExperimentConfig.for_dataset("beauty", kind="retrieval")
