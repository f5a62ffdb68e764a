"""LightGCN as an experiment: the ``"lightgcn"`` kind (``tfrec train --model lightgcn``).

A graph retrieval kind beside the two-tower::

    config = LightGCNExperimentConfig.for_dataset("ml-100k")
    experiment = LightGCNExperiment(config, output_dir="runs/lightgcn")
    experiment.fit()                   # early stopping on validation NDCG@10
    experiment.evaluate()              # {"test/ndcg@10": ..., "valid/ndcg@10": ...}
    experiment.save(); experiment.export("exports")   # exports/retrieval/1/

:class:`LightGCNExperiment` is the retrieval kind's experiment
(:class:`~tfrec.training.retrieval.RetrievalExperiment`) with another model: the same
data, split (the dataset's retrieval preset), vocabularies, full-ranking evaluation
(:class:`~tfrec.evaluation.retrieval.RetrievalEvaluator`), training loop, run files
and export signature. The training examples are the (user, item) pairs of the train
part (:func:`~tfrec.data.sequences.interaction_pairs`); the user-item graph is built
from them only, never from validation or test. The export serves the final
propagated tables (:meth:`~tfrec.models.lightgcn.LightGCNModel.frozen`), so the
SavedModel does no propagation and has the retrieval signature, index options
(``brute``/``ivf``) and warmup requests of the retrieval kind.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions
from tfrec.data.sequences import interaction_pairs, user_sequences
from tfrec.data.splits import Split
from tfrec.data.vocab import NUM_RESERVED, build_vocabularies
from tfrec.evaluation.config import EvalConfig
from tfrec.layers.graph import normalized_adjacency
from tfrec.models.lightgcn import LightGCNConfig, LightGCNModel
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import register_experiment
from tfrec.training.loop import fit_model
from tfrec.training.optimizers import make_optimizer
from tfrec.training.privacy_config import refuse_privacy
from tfrec.training.retrieval import DEFAULT_MONITOR, RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig
from tfrec.training.strategy import get_strategy

logger = logging.getLogger(__name__)


#: Model settings of a dataset beside :class:`LightGCNConfig`'s defaults (the paper's).
#: ml-100k (70k train pairs): batches of 1024 and Adam 5e-3, so an epoch is ~70 steps
#: and training ends within minutes on CPU; chosen before any run, not tuned.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "optimizer": OptimizerConfig(learning_rate=5e-3),
        "training": TrainingConfig(batch_size=1024, epochs=100, patience=10),
    },
}


@dataclasses.dataclass
class LightGCNExperimentConfig(JsonConfig):
    """A LightGCN run (saved as ``config.json``, ``"kind": "lightgcn"``).

    Attributes:
        data: Dataset and split.
        model: The LightGCN model and its training.
        evaluation: Metrics protocol.
        model_name: Name of the export under the TF Serving base directory (the
            retrieval signature; ``retrieval`` as for the two-tower, so ``tfrec
            recommend``/``serve`` find it by default).
        kind: Always ``"lightgcn"``.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: LightGCNConfig = dataclasses.field(default_factory=LightGCNConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    model_name: str = "retrieval"
    kind: str = "lightgcn"

    def __post_init__(self) -> None:
        if self.kind != "lightgcn":
            raise ValueError(f"LightGCNExperimentConfig.kind={self.kind!r}; expected 'lightgcn'")
        if not self.model_name:
            raise ValueError("LightGCNExperimentConfig.model_name is empty; expected a name")
        self.check_privacy()

    def check_privacy(self) -> None:
        """Refuses DP-SGD: the graph mixes every training pair into each embedding.

        Raises:
            ValueError: ``model.training.privacy`` is on (:func:`refuse_privacy`).
        """
        field = "LightGCNExperimentConfig.model.training.privacy"
        refuse_privacy(self.model.training.privacy, field, "lightgcn")

    @classmethod
    def for_dataset(cls, dataset: str, **data_kwargs: Any) -> LightGCNExperimentConfig:
        """The preset of ``dataset``: its retrieval preset's split and evaluation.

        The data and evaluation settings (and the history length) are the retrieval
        preset's, so the two kinds are measured on the same split; the model keeps
        :class:`LightGCNConfig`'s defaults (the paper's: D = 64, K = 3, BPR, lambda =
        1e-4, Adam 1e-3, batches of 2048 pairs) but for :data:`MODEL_PRESETS`.

        Raises:
            ValueError: An unknown dataset or ``data_kwargs`` field.
        """
        retrieval = RetrievalExperimentConfig.for_dataset(dataset, **data_kwargs)
        model = LightGCNConfig(
            max_history=retrieval.model.max_history, **copy.deepcopy(MODEL_PRESETS.get(dataset, {}))
        )
        return cls(data=retrieval.data, model=model, evaluation=retrieval.evaluation)


@register_experiment("lightgcn")
class LightGCNExperiment(RetrievalExperiment):
    """Trains, evaluates and exports a :class:`LightGCNModel` (kind ``"lightgcn"``).

    Args:
        config: The experiment.
        output_dir: Where config, vocabularies, weights, logs and metrics go
            (None: nothing is written until :meth:`save`).
        data: Optional already-loaded interactions (skips ``config.data.load()``).
        split: Optional precomputed split of ``data`` (skips the splitting).

    Raises:
        ValueError: The training part has no (user, item) pair, or the config asks
            for DP-SGD (:meth:`LightGCNExperimentConfig.check_privacy`; also
            checked again by :meth:`fit`).
    """

    kind: ClassVar[str] = "lightgcn"
    exports: ClassVar[tuple[str, ...]] = ("retrieval",)
    config_class: ClassVar[type[LightGCNExperimentConfig]] = LightGCNExperimentConfig

    def __init__(
        self,
        config: LightGCNExperimentConfig,
        output_dir: str | Path | None = None,
        data: Interactions | None = None,
        split: Split | None = None,
    ) -> None:
        config.check_privacy()  # the config may have been changed since it was built
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.prepared = None
        self.item_features = None
        self.data = data if data is not None else config.data.load()
        self.split = split if split is not None else config.data.make_split(self.data)
        self.user_vocab, self.item_vocab = build_vocabularies(self.data)
        self.strategy = get_strategy(config.model.training.strategy)
        self.train_seqs = user_sequences(
            self.split.train, self.user_vocab, self.item_vocab
        ).sample_users(config.data.train_user_fraction, config.data.seed)
        self.examples = interaction_pairs(self.train_seqs)  # user [N], target [N, 1]
        self.num_examples = len(self.examples["user"])
        if self.num_examples == 0:
            raise ValueError(
                f"dataset {self.data.name!r}: no training examples (the training part has "
                "no interactions)"
            )
        self.item_counts = np.bincount(
            self.examples["target"][:, 0], minlength=self.item_vocab.size
        ).astype(np.float64)
        self.item_counts[:NUM_RESERVED] = 0.0
        self.adjacency = normalized_adjacency(
            self.examples["user"], self.examples["target"][:, 0],
            self.user_vocab.size, self.item_vocab.size,
        )  # fmt: skip
        keras.utils.set_random_seed(config.model.training.seed)
        with self.strategy.scope():
            self.model = self._new_model()
        self.evaluator = self._new_evaluator()
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0

    def _new_model(self, build: bool = False) -> LightGCNModel:
        """A compiled :class:`LightGCNModel` of this config and graph (variables built)."""
        del build  # the tables are always built: the evaluator reads them before training
        cfg = self.config.model
        model = LightGCNModel(cfg, self.user_vocab.size, self.item_vocab.size, self.adjacency)
        model.compile(optimizer=make_optimizer(cfg.optimizer), jit_compile=cfg.training.jit_compile)
        model.propagation.ego()
        return model

    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: Any) -> LightGCNExperimentConfig:
        """The preset of ``dataset`` (:meth:`LightGCNExperimentConfig.for_dataset`)."""
        return LightGCNExperimentConfig.for_dataset(dataset, **data_kwargs)

    @classmethod
    def from_dir(
        cls, run_dir: str | os.PathLike[str], data_dir: str | None = None
    ) -> LightGCNExperiment:
        """Rebuilds a trained run from the directory :meth:`save` wrote.

        As :meth:`RetrievalExperiment.from_dir`: the data, split and graph are
        rebuilt from the saved config and the vocabularies checked.

        Raises:
            FileNotFoundError: ``config.json`` or the weights are missing.
            ValueError: The data no longer matches the saved vocabularies.
        """
        return super().from_dir(run_dir, data_dir=data_dir)  # type: ignore[return-value]

    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Trains with early stopping on validation ``config.model.training.monitor``.

        Args:
            epochs: Overrides ``config.model.training.epochs``.
            resume: Continue an interrupted run from ``output_dir``'s checkpoint.
            verbose: Keras verbosity (0: tfrec's one line per epoch only).

        Returns:
            The per-epoch logs (loss and validation metrics).

        Raises:
            ValueError: The config asks for DP-SGD, which LightGCN refuses.
        """
        self.config.check_privacy()
        loop = self.config.model.training
        epochs = loop.epochs if epochs is None else epochs
        monitor, mode = loop.monitor_mode(DEFAULT_MONITOR)
        self._save_config()
        logger.info(
            "training lightgcn (K=%d, %s loss) on %d pairs (%d users), batch %d, up to %d epochs",
            self.config.model.num_layers, self.config.model.loss, self.num_examples,
            len(self.train_seqs), loop.batch_size, epochs,
        )  # fmt: skip
        start = time.perf_counter()
        self.history = fit_model(
            self.model, self._train_dataset(), epochs=epochs,
            evaluate_fn=self._validation_metrics if self._has_valid() else None,
            monitor=monitor, mode=mode, patience=loop.patience, output_dir=self.output_dir,
            examples_per_step=loop.batch_size, resume=resume, verbose=verbose,
            steps_per_epoch=loop.steps_per_epoch,
        )  # fmt: skip
        self.train_seconds += time.perf_counter() - start
        return self.history

    def _serving_model(self) -> Any:
        """The final propagated tables (no graph), with the two-tower inference interface."""
        return self.model.frozen()
