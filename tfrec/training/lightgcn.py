"""LightGCN as an experiment: the ``"lightgcn"`` kind (``tfrec train --model lightgcn``).

A graph retrieval kind beside the two-tower::

    config = LightGCNExperimentConfig.for_dataset("ml-100k")
    experiment = LightGCNExperiment(config, output_dir="runs/lightgcn")
    experiment.fit()                   # early stopping on validation NDCG@10
    experiment.evaluate()              # {"test/ndcg@10": ..., "valid/ndcg@10": ...}
    experiment.save(); experiment.export("exports")   # exports/retrieval/1/

:class:`LightGCNExperiment` is a pair-trained retrieval kind
(:class:`~tfrec.training.pair_experiment.PairExperiment`): the two-tower's
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
import time
from typing import Any, ClassVar

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.layers.graph import normalized_adjacency
from tfrec.models.lightgcn import LightGCNConfig, LightGCNModel
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import register_experiment
from tfrec.training.loop import fit_model
from tfrec.training.optimizers import make_optimizer
from tfrec.training.pair_experiment import PairExperiment, PairExperimentConfig
from tfrec.training.retrieval import DEFAULT_MONITOR

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
class LightGCNExperimentConfig(PairExperimentConfig):
    """A LightGCN run (saved as ``config.json``, ``"kind": "lightgcn"``).

    The fields of :class:`~tfrec.training.pair_experiment.PairExperimentConfig`, with
    ``model`` the LightGCN model and its training. DP-SGD is refused: the graph mixes
    every training pair into each embedding.
    """

    KIND: ClassVar[str] = "lightgcn"

    model: LightGCNConfig = dataclasses.field(default_factory=LightGCNConfig)
    kind: str = "lightgcn"

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
        retrieval = cls._retrieval_preset(dataset, **data_kwargs)
        model = LightGCNConfig(
            max_history=retrieval.model.max_history, **copy.deepcopy(MODEL_PRESETS.get(dataset, {}))
        )
        return cls(data=retrieval.data, model=model, evaluation=retrieval.evaluation)


@register_experiment("lightgcn")
class LightGCNExperiment(PairExperiment):
    """Trains, evaluates and exports a :class:`LightGCNModel` (kind ``"lightgcn"``).

    Args and Raises as :class:`~tfrec.training.pair_experiment.PairExperiment` (DP-SGD
    is also refused again by :meth:`fit`).
    """

    kind: ClassVar[str] = "lightgcn"
    exports: ClassVar[tuple[str, ...]] = ("retrieval",)
    config_class: ClassVar[type[LightGCNExperimentConfig]] = LightGCNExperimentConfig

    def _new_model(self, build: bool = False) -> LightGCNModel:
        """A compiled :class:`LightGCNModel` of this config and graph (variables built).

        The graph (symmetric-normalised adjacency of the train pairs) is built on the
        first call; the tables are always built: the evaluator reads them before training.
        """
        del build
        if getattr(self, "adjacency", None) is None:
            self.adjacency = normalized_adjacency(
                self.examples["user"], self.examples["target"][:, 0],
                self.user_vocab.size, self.item_vocab.size,
            )  # fmt: skip
        cfg = self.config.model
        keras.utils.set_random_seed(cfg.training.seed)
        model = LightGCNModel(cfg, self.user_vocab.size, self.item_vocab.size, self.adjacency)
        model.compile(optimizer=make_optimizer(cfg.optimizer), jit_compile=cfg.training.jit_compile)
        model.propagation.ego()
        return model

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
