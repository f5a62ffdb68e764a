"""``RetrievalExperimentConfig``: everything that defines a retrieval run, and its presets.

Saved as the run's ``config.json`` (``"kind": "retrieval"``). :data:`PRESETS` holds
one typed config per dataset; the ranking and pipeline kinds reuse them for their
data split and retrieval stage.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.names import DatasetName
from tfrec.tasks.config import RetrievalLossConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig


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
        """The documented defaults for ``dataset`` (a copy of its :data:`PRESETS` entry).

        Args:
            dataset: A dataset name (``ml-100k``, ``beauty``, ``synthetic``, ...).
            **data_kwargs: Further :class:`DataConfig` fields (``data_dir``, ...).

        Raises:
            ValueError: An unknown dataset or ``data_kwargs`` field.
        """
        if dataset not in PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(PRESETS)}")
        config = copy.deepcopy(PRESETS[dataset])
        if data_kwargs:
            config.data = dataclasses.replace(config.data, **data_kwargs)
        return config


#: Training length per S3-Rec release, chosen on validation NDCG@10 (mean of 2 seeds):
#: Last.fm (1,090 users) keeps improving long after Beauty's 18 epochs: patience 3
#: stopped it at epoch 8-9 (valid .0441), patience 10 / 150 epochs ran 64-68 (valid
#: .0665); dropout 0.5 did worse (.0610). Beauty with patience 10 peaked at epoch 13.
_S3REC_TRAINING: dict[str, TrainingConfig] = {
    "lastfm": TrainingConfig(epochs=150, batch_size=128, patience=10),
}

#: Architecture per S3-Rec release where it differs from Beauty's, chosen on validation
#: NDCG@10 (mean of seeds 1 and 2, 2026-12-01 sweeps in ``benchmarks/results/s3rec_sweeps``):
#: Last.fm with 2 attention heads .0692 (H@10 .1248) vs 1 head .0629 (.1138); not kept:
#: 4 heads .0638, embedding_dim 128 .0669 (256: .0653; 128 with 2 heads .0658),
#: learning rate 1e-3 .0630, max_history 200 .0558. Then the mean-of-history expert
#: beside the transformer (``scenario_layers`` + ``mean_expert``, tags ``me2h``/``me1h``):
#: 2 heads .0757 (H@10 .1303), 1 head .0745 (.1339) vs .0692: Last.fm's listening
#: histories are closer to bags of artists than to sequences.
_S3REC_HEADS: dict[str, int] = {"lastfm": 2}
_S3REC_MEAN_EXPERT: frozenset[str] = frozenset({"lastfm"})


def _s3rec_release(dataset: DatasetName) -> RetrievalExperimentConfig:
    """The settings measured on Amazon Beauty, for an S3-Rec release (leave-one-out).

    The other releases (sports, lastfm, any ``s3rec`` file) start from them;
    Last.fm trains longer (:data:`_S3REC_TRAINING`) with 2 attention heads
    (:data:`_S3REC_HEADS`) gated with the mean of its history (:data:`_S3REC_MEAN_EXPERT`).
    """
    training = _S3REC_TRAINING.get(dataset, TrainingConfig(epochs=18, batch_size=128, patience=3))
    return RetrievalExperimentConfig(
        data=DataConfig(dataset=dataset, split="leave_one_out"),
        model=RetrievalConfig(
            encoder="transformer",
            max_history=50,
            num_heads=_S3REC_HEADS.get(dataset, 1),
            loss=RetrievalLossConfig(kind="full"),
            embedding_dim=64,
            dropout=0.3,
            optimizer=OptimizerConfig(learning_rate=2e-3),
            training=copy.deepcopy(training),
            scenario_layers=dataset in _S3REC_MEAN_EXPERT,
            mean_expert=dataset in _S3REC_MEAN_EXPERT,
        ),
        evaluation=EvalConfig(mask="both"),
    )


#: The documented defaults of every dataset (:meth:`RetrievalExperimentConfig.for_dataset`
#: returns copies). Fields not given keep the config classes' defaults.
PRESETS: dict[DatasetName, RetrievalExperimentConfig] = {
    **{name: _s3rec_release(name) for name in ("beauty", "sports", "lastfm", "s3rec")},
    "beauty-bert4rec": RetrievalExperimentConfig(
        data=DataConfig(dataset="beauty-bert4rec", split="leave_one_out"),
        model=RetrievalConfig(
            encoder="transformer", max_history=50, loss=RetrievalLossConfig(kind="full")
        ),
        evaluation=EvalConfig(mask="both"),
    ),
    "ml-100k": RetrievalExperimentConfig(
        data=DataConfig(dataset="ml-100k", split="random", train_ratio=0.75, valid_fraction=0.05),
        model=RetrievalConfig(
            encoder="mean",
            use_user_embedding=True,
            max_history=200,
            l2=1e-4,
            training=TrainingConfig(batch_size=32),
        ),
        evaluation=EvalConfig(ks=[1, 5, 10, 20, 50, 100]),
    ),
    "ml-latest-small": RetrievalExperimentConfig(
        data=DataConfig(dataset="ml-latest-small", split="random", train_ratio=0.75),
        model=RetrievalConfig(encoder="mean", use_user_embedding=True, max_history=200),
    ),
    "synthetic": RetrievalExperimentConfig(
        data=DataConfig(dataset="synthetic", split="leave_one_out"),
        model=RetrievalConfig(
            encoder="gru", embedding_dim=32, training=TrainingConfig(epochs=10, batch_size=64)
        ),
    ),
    "csv": RetrievalExperimentConfig(data=DataConfig(dataset="csv")),
}
