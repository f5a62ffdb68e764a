"""``RetrievalExperimentConfig``: everything that defines a retrieval run, and its presets.

Saved as the run's ``config.json`` (``"kind": "retrieval"``); the pipeline kind
reuses :data:`PRESETS` for its data split and retrieval stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.models.retrieval import RetrievalConfig

#: Defaults per dataset: (data overrides, model overrides, eval overrides).
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "beauty": (
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
    ),
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
}


@dataclasses.dataclass
class RetrievalExperimentConfig(JsonConfig):
    """Everything that defines a retrieval experiment (saved as ``config.json``).

    Attributes:
        data: Dataset and split.
        model: Two-tower hyper-parameters (including optimisation settings).
        evaluation: Metrics protocol.
        model_name: Name of the export under the TF Serving base directory.
        prepared_dir: Train from the sharded TFRecords of a ``tfrec prepare``
            directory (streaming, for data larger than memory) instead of
            building examples in memory; its split and vocabularies are used and
            ``data`` is ignored.
        kind: Always ``"retrieval"`` (lets tools tell experiment types apart).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    model_name: str = "retrieval"
    prepared_dir: str | None = None
    kind: str = "retrieval"

    def __post_init__(self) -> None:
        if self.kind != "retrieval":
            raise ValueError(f"RetrievalExperimentConfig.kind={self.kind!r}; expected 'retrieval'")

    @classmethod
    def for_dataset(cls, dataset: str, **data_kwargs: Any) -> RetrievalExperimentConfig:
        """The documented defaults for ``dataset`` (see :data:`PRESETS`).

        Args:
            dataset: A dataset name (``ml-100k``, ``beauty``, ``synthetic``, ...).
            **data_kwargs: Further :class:`DataConfig` fields (``data_dir``, ...).
        """
        if dataset not in PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(PRESETS)}")
        data, model, evaluation = PRESETS[dataset]
        return cls(
            data=DataConfig(dataset=dataset, **{**data, **data_kwargs}),
            model=RetrievalConfig(**model),
            evaluation=EvalConfig(**evaluation),
        )
