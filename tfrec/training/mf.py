"""Matrix factorisation as an experiment: the ``"mf"`` kind (``tfrec train --model mf``).

A rating kind beside the LSTM ranker::

    config = MFExperimentConfig.for_dataset("ml-100k")        # biased MF (Surprise SVD-like)
    config.ranking.nonnegative = True                          # NMF
    experiment = MFExperiment(config, output_dir="runs/mf")
    experiment.fit()                  # early stopping on validation RMSE
    experiment.evaluate()             # {"test/rmse": ..., "test/mae": ..., "valid/rmse": ...}
    experiment.save(); experiment.export("exports")   # the ranking SavedModel signature

:class:`MFExperiment` is the ranking kind's experiment
(:class:`~tfrec.training.ranking.RankingExperiment`) with another model builder:
the same data split and rating examples (validation: the split's ``valid`` part,
else each user's latest ``validation_fraction`` of the training ratings), the
same training loop, the same RMSE/MAE evaluation (predictions clipped to the
training rating range: :func:`~tfrec.evaluation.ranker.evaluate_ranker`) and the
same ranking export and run files (``data_spec.json`` beside the common layout).
The model (:class:`~tfrec.models.mf.MatrixFactorization`) ignores the history
inputs of that signature. Its config lives under ``"ranking"`` in ``config.json``
(the key the ranking machinery reads), with ``"kind": "mf"``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.ranking_examples import build_ranking_examples
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation.config import EvalConfig
from tfrec.models.mf import MatrixFactorization, MFConfig
from tfrec.models.ranker_state import DATA_SPEC_FILE, TrainedRanker
from tfrec.models.ranking import RankerDataSpec
from tfrec.names import DatasetName
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import read_json, read_run_config, register_experiment
from tfrec.training.optimizers import make_optimizer
from tfrec.training.ranking import RankingExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig
from tfrec.training.strategy import configure_precision, get_strategy


@dataclasses.dataclass
class MFExperimentConfig(JsonConfig):
    """A matrix factorisation run (saved as ``config.json``, ``"kind": "mf"``).

    Attributes:
        data: Dataset and split (the data must have ratings).
        ranking: The MF model and its training (under the ranking kind's key,
            so ``--set nonnegative=true`` and the ranking code address it alike).
        evaluation: Kept for the common CLI options; MF reports RMSE/MAE only.
        kind: Always ``"mf"``.
        ranking_model_name: Export name of the model (the ranking signature).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    ranking: MFConfig = dataclasses.field(default_factory=MFConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    kind: str = "mf"
    ranking_model_name: str = "ranking"

    def __post_init__(self) -> None:
        if self.kind != "mf":
            raise ValueError(f"MFExperimentConfig.kind={self.kind!r}; expected 'mf'")
        if not self.ranking_model_name:
            raise ValueError("MFExperimentConfig.ranking_model_name is empty; expected a name")

    @classmethod
    def for_dataset(cls, dataset: str, **data_kwargs: Any) -> MFExperimentConfig:
        """The dataset's data split (the retrieval presets') and :data:`MF_PRESETS`' model.

        Raises:
            ValueError: An unknown dataset.
        """
        base = RetrievalExperimentConfig.for_dataset(dataset, **data_kwargs)
        model = MF_PRESETS.get(dataset, MFConfig())  # type: ignore[call-overload]
        return cls(data=base.data, ranking=copy.deepcopy(model), evaluation=base.evaluation)


#: MF defaults per dataset (others: MFConfig's). ml-100k: picked by the best
#: validation RMSE on u1.base's validation share (benchmarks/ranking_rating.py
#: --model mf --folds 1), never on a test file: Adam 3e-3 with l2 0.1 gave .9855;
#: l2 0.05: 1.012, Adam 1e-2 / l2 0.1: .990, SGD 0.5 / l2 0.05: .991.
MF_PRESETS: dict[DatasetName, MFConfig] = {
    "ml-100k": MFConfig(
        embedding_dim=100,
        l2=0.1,
        optimizer=OptimizerConfig(learning_rate=3e-3),
        training=TrainingConfig(epochs=40, batch_size=256, patience=3),
    ),
}


def build_mf(config: MFConfig, spec: RankerDataSpec) -> MatrixFactorization:
    """An untrained :class:`MatrixFactorization` of ``spec``'s sizes and mean rating."""
    return MatrixFactorization(config, spec.num_users, spec.num_items, spec.rating_mean, name="mf")


@register_experiment("mf")
class MFExperiment(RankingExperiment):
    """Trains, evaluates, saves and exports a :class:`~tfrec.models.mf.MatrixFactorization`.

    Args:
        config: The experiment (``kind="mf"``).
        output_dir: The run directory (None: nothing written until :meth:`save`).
        data: Already-loaded interactions (default ``config.data.load()``).
        split: A precomputed split (default ``config.data.make_split(data)``).
        user_vocab: User vocabulary (default: built over every part of the split).
        item_vocab: Item vocabulary (default: likewise).
        state: An already trained model (what :meth:`from_dir` passes); the
            data is then loaded only when evaluating.

    Raises:
        ValueError: Data without ratings, or a share of the training users.
    """

    kind: ClassVar[str] = "mf"
    exports: ClassVar[tuple[str, ...]] = ("ranking",)
    config_class: ClassVar[type[MFExperimentConfig]] = MFExperimentConfig  # type: ignore[assignment]

    def _check_trainable(self) -> None:
        data, split = self.config.data, self.split
        if data.train_user_fraction != 1.0:
            raise ValueError(
                f"DataConfig.train_user_fraction={data.train_user_fraction}: only the "
                "retrieval kind trains on a share of the users; use 1.0 for MF"
            )
        if not split.train.has_ratings:
            raise ValueError(
                f"matrix factorisation needs ratings, but {split.train.name} has none "
                "(a dataset with a rating column, e.g. ml-100k)"
            )

    def _build(
        self, user_vocab: IdVocabulary | None, item_vocab: IdVocabulary | None
    ) -> TrainedRanker:
        """Vocabularies, the mean rating and the compiled (untrained) model."""
        cfg = self.config.ranking
        user_vocab, item_vocab, spec = self._vocabularies_and_spec(user_vocab, item_vocab)
        rated = build_ranking_examples(self.split.train, user_vocab, item_vocab, 1)
        rated = rated.take(np.flatnonzero(np.isfinite(rated.rating)))
        configure_precision(cfg.training.mixed_precision)
        with get_strategy(cfg.training.strategy).scope():
            model = build_mf(cfg, spec)
            model.mark_known(rated.user, rated.item)  # ids without a rating: fallback
            model.compile(
                optimizer=make_optimizer(cfg.optimizer), jit_compile=cfg.training.jit_compile
            )
        return TrainedRanker(model, cfg, spec, user_vocab, item_vocab, None)  # type: ignore[arg-type]

    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: object) -> MFExperimentConfig:  # type: ignore[override]
        """The preset of ``dataset`` (:meth:`MFExperimentConfig.for_dataset`)."""
        return MFExperimentConfig.for_dataset(dataset, **data_kwargs)

    @classmethod
    def from_dir(cls, run_dir: str | os.PathLike[str], data_dir: str | None = None) -> MFExperiment:
        """Reopens an MF run :meth:`save` wrote (the data is loaded when evaluating).

        Raises:
            FileNotFoundError: ``config.json``, a vocabulary, ``data_spec.json``
                or the weights are missing.
            ValueError: The config is not an MF run's.
        """
        layout, config = read_run_config(run_dir, MFExperimentConfig, data_dir)
        spec_path = layout.root / DATA_SPEC_FILE
        if not spec_path.is_file():
            raise FileNotFoundError(f"{spec_path} not found: expected a saved mf run")
        if not Path(f"{layout.weights}.index").is_file():
            raise FileNotFoundError(f"{layout.weights}.index not found: the model was not saved")
        spec = RankerDataSpec.load(spec_path)
        model = build_mf(config.ranking, spec)
        model.load_weights(str(layout.weights)).expect_partial()
        state = TrainedRanker(
            model, config.ranking, spec,  # type: ignore[arg-type]
            IdVocabulary.load(layout.user_vocab, name="user"),
            IdVocabulary.load(layout.item_vocab, name="item"),
            None, read_json(layout.history, {}),
        )  # fmt: skip
        experiment = cls(config, output_dir=layout.root, state=state)
        experiment._restore_metrics(layout)
        return experiment
