"""Retrieval kinds trained on (user, item) pairs: the shared part of EASE and LightGCN.

Both are the retrieval kind's experiment
(:class:`~tfrec.training.retrieval.RetrievalExperiment`) with another model: the same
data, split (the dataset's retrieval preset), vocabularies, full-ranking evaluation,
run files and export signature. Their training examples are the (user, item) pairs
of the train part (:func:`~tfrec.data.sequences.interaction_pairs`), never of
validation or test, and both refuse DP-SGD (:data:`~tfrec.training.privacy_config.DP_REFUSED`).

:class:`PairExperimentConfig` is their config's shape (``data``, ``model``,
``evaluation``, ``model_name``, ``kind``); :class:`PairExperiment` builds the pairs
and calls :meth:`PairExperiment._new_model`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions
from tfrec.data.sequences import interaction_pairs, user_sequences
from tfrec.data.splits import Split
from tfrec.data.vocab import NUM_RESERVED, build_vocabularies
from tfrec.evaluation.config import EvalConfig
from tfrec.training.privacy_config import refuse_privacy
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig
from tfrec.training.strategy import get_strategy


@dataclasses.dataclass
class PairExperimentConfig(JsonConfig):
    """A run of a pair-trained retrieval kind (saved as ``config.json``).

    Subclasses set :attr:`KIND`, ``kind``'s default and ``model``'s type.

    Attributes:
        data: Dataset and split.
        model: The kind's model config (it has a ``training`` part).
        evaluation: Metrics protocol.
        model_name: Name of the export under the TF Serving base directory (the
            retrieval signature; ``retrieval`` as for the two-tower, so ``tfrec
            recommend``/``serve`` find it by default).
        kind: Always :attr:`KIND`.
    """

    KIND: ClassVar[str] = ""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: Any = None
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    model_name: str = "retrieval"
    kind: str = ""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.kind != self.KIND:
            raise ValueError(f"{name}.kind={self.kind!r}; expected {self.KIND!r}")
        if not self.model_name:
            raise ValueError(f"{name}.model_name is empty; expected a name")
        self.check_privacy()

    def check_privacy(self) -> None:
        """Refuses DP-SGD (:data:`~tfrec.training.privacy_config.DP_REFUSED` says why).

        Raises:
            ValueError: ``model.training.privacy`` is on.
        """
        field = f"{type(self).__name__}.model.training.privacy"
        refuse_privacy(self.model.training.privacy, field, self.KIND)

    @classmethod
    def _retrieval_preset(cls, dataset: str, **data_kwargs: Any) -> RetrievalExperimentConfig:
        """The two-tower preset of ``dataset``, whose split and evaluation the kind shares.

        Raises:
            ValueError: An unknown dataset or ``data_kwargs`` field.
        """
        return RetrievalExperimentConfig.for_dataset(dataset, **data_kwargs)


class PairExperiment(RetrievalExperiment):
    """The retrieval experiment of a model trained on the train part's (user, item) pairs.

    Args:
        config: The experiment.
        output_dir: Where config, vocabularies, weights and metrics go (None:
            nothing is written until :meth:`save`).
        data: Optional already-loaded interactions (skips ``config.data.load()``).
        split: Optional precomputed split of ``data`` (skips the splitting).

    Raises:
        ValueError: The training part has no (user, item) pair, the config asks for
            DP-SGD, or :meth:`_check_data` refuses the data.
    """

    def __init__(
        self,
        config: PairExperimentConfig,
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
        self._check_data()
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
        with self.strategy.scope():
            self.model = self._new_model()
        self.evaluator = self._new_evaluator()
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0

    def _check_data(self) -> None:
        """Refuses data the model cannot take (called once the vocabularies exist)."""

    def _new_model(self, build: bool = False) -> Any:
        """The kind's model on :attr:`examples` (in the strategy's scope)."""
        raise NotImplementedError
