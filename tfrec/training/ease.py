"""EASE as an experiment: the ``"ease"`` kind (``tfrec train --model ease``).

A closed-form retrieval kind beside the two-tower and LightGCN::

    config = EASEExperimentConfig.for_dataset("ml-100k")
    experiment = EASEExperiment(config, output_dir="runs/ease")
    experiment.fit()                   # lambda chosen on validation, refit on train + valid
    experiment.evaluate()              # {"test/ndcg@10": ..., "valid/ndcg@10": ...}
    experiment.save(); experiment.export("exports")   # exports/retrieval/1/

:class:`EASEExperiment` is a pair-trained retrieval kind
(:class:`~tfrec.training.pair_experiment.PairExperiment`): the two-tower's
data, split (the dataset's retrieval preset), vocabularies, full-ranking evaluation,
run files and export signature. There are no epochs: :meth:`EASEExperiment.fit`
solves EASE (:mod:`tfrec.models.ease`) on the train pairs for each lambda of
``model.l2_grid``, keeps the one with the best validation ``training.monitor``
(``ndcg@10`` by default), then (``refit_on_valid``) solves again on train + valid.
The test part is never used for a choice. ``history.json`` holds the lambda sweep;
``metrics.json`` adds ``ease/l2`` (the chosen lambda), ``ease/refit_on_valid`` and
the validation report of the chosen lambda's train-only solve: after a refit the
validation metrics are not recomputed (that model has seen the validation part).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from tfrec.data.sequences import interaction_pairs, user_sequences
from tfrec.models.ease import EASEConfig, EASEModel, ItemGram, check_catalogue, item_gram
from tfrec.training.experiment import register_experiment
from tfrec.training.pair_experiment import PairExperiment, PairExperimentConfig
from tfrec.training.retrieval import DEFAULT_MONITOR

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EASEExperimentConfig(PairExperimentConfig):
    """An EASE run (saved as ``config.json``, ``"kind": "ease"``).

    The fields of :class:`~tfrec.training.pair_experiment.PairExperimentConfig`, with
    ``model`` the EASE model (lambda grid, refit). DP-SGD is refused
    (``DP_REFUSED["ease"]``: a closed-form solve has no gradient step).
    """

    KIND: ClassVar[str] = "ease"

    model: EASEConfig = dataclasses.field(default_factory=EASEConfig)
    kind: str = "ease"

    @classmethod
    def for_dataset(cls, dataset: str, **data_kwargs: Any) -> EASEExperimentConfig:
        """The preset of ``dataset``: its retrieval preset's split and evaluation.

        The model keeps :class:`EASEConfig`'s defaults (lambda grid 100..1200, refit
        on train + valid, histories of up to 1000 items).

        Raises:
            ValueError: An unknown dataset or ``data_kwargs`` field.
        """
        retrieval = cls._retrieval_preset(dataset, **data_kwargs)
        return cls(data=retrieval.data, model=EASEConfig(), evaluation=retrieval.evaluation)


@register_experiment("ease")
class EASEExperiment(PairExperiment):
    """Solves, evaluates and exports an :class:`EASEModel` (kind ``"ease"``).

    Args and Raises as :class:`~tfrec.training.pair_experiment.PairExperiment`; also
    refuses a catalogue above ``model.max_items``.
    """

    kind: ClassVar[str] = "ease"
    exports: ClassVar[tuple[str, ...]] = ("retrieval",)
    config_class: ClassVar[type[EASEExperimentConfig]] = EASEExperimentConfig

    def _check_data(self) -> None:
        """Refuses a catalogue whose dense ``B`` would exceed ``model.max_items``."""
        check_catalogue(self.item_vocab.size, self.config.model.max_items)

    def _new_model(self, build: bool = False) -> EASEModel:
        """An unsolved :class:`EASEModel` of this catalogue (``B`` = 0 until :meth:`fit`)."""
        del build
        return EASEModel(self.config.model, self.user_vocab.size, self.item_vocab.size)

    def _gram(self, with_valid: bool) -> ItemGram:
        """``X^T X`` of the train pairs (+ the validation pairs when ``with_valid``)."""
        users, items = self.examples["user"], self.examples["target"][:, 0]
        if with_valid:
            valid_seqs = user_sequences(self.split.valid, self.user_vocab, self.item_vocab)
            valid = interaction_pairs(valid_seqs)
            users = np.concatenate([users, valid["user"]])
            items = np.concatenate([items, valid["target"][:, 0]])
        return item_gram(users, items, self.item_vocab.size)

    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Chooses lambda on validation, then solves on train (+ valid: ``refit_on_valid``).

        Args:
            epochs: Ignored (closed form, no epochs).
            resume: Ignored (solving again is as fast as resuming).
            verbose: Ignored.

        Returns:
            The sweep: ``{"l2": [...], "valid/<monitor>": [...]}`` (empty lists of
            validation values without a validation part).

        Raises:
            ValueError: The config asks for DP-SGD.
        """
        del epochs, resume, verbose
        self.config.check_privacy()
        cfg = self.config.model
        monitor, mode = cfg.training.monitor_mode(DEFAULT_MONITOR)
        has_valid = self._has_valid()
        grid = cfg.grid() if has_valid else (cfg.l2,)
        if not has_valid and len(cfg.grid()) > 1:
            logger.warning("ease: the split has no validation part; using l2=%g", cfg.l2)
        self._save_config()
        start = time.perf_counter()
        gram = self._gram(with_valid=False)
        logger.info(
            "solving ease on %d train pairs (%d users, %d of %d items), l2 in %s",
            self.num_examples, len(self.train_seqs), len(gram.items), self.item_vocab.size,
            list(grid),
        )  # fmt: skip
        sweep: dict[str, list[float]] = {"l2": [], f"valid/{monitor}": []}
        best, best_value = grid[0], -math.inf if mode == "max" else math.inf
        for l2 in grid:
            self.model.assign(gram.weights(l2))
            sweep["l2"].append(float(l2))
            if not has_valid or len(grid) == 1:
                continue
            value = self._validation_metrics()[monitor]
            sweep[f"valid/{monitor}"].append(value)
            logger.info("ease l2=%g: valid %s = %.4f", l2, monitor, value)
            if (value > best_value) if mode == "max" else (value < best_value):
                best, best_value = l2, value
        if len(grid) > 1:
            self.model.assign(gram.weights(best))
        report = self.evaluate_part("valid") if has_valid else {}
        if len(grid) == 1 and has_valid:
            sweep[f"valid/{monitor}"].append(report[f"valid/{monitor}"])
        refit = cfg.refit_on_valid and has_valid
        if refit:
            self.model.assign(self._gram(with_valid=True).weights(best))
        self.train_seconds += time.perf_counter() - start
        logger.info("ease: chose l2=%g%s", best, " (refit on train + valid)" if refit else "")
        self.metrics.update(report)
        self.metrics.update({"ease/l2": float(best), "ease/refit_on_valid": float(refit)})
        self.history = sweep
        return self.history

    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Metrics of ``parts`` (default: valid when the split has it, and test).

        After a refit on train + valid, ``valid`` is not recomputed: the validation
        report of the chosen lambda's train-only solve (from :meth:`fit`, or the
        reopened run's ``metrics.json``) is returned instead.
        """
        if parts is None:
            parts = ("valid", "test") if self._has_valid() else ("test",)
        stored = {key: value for key, value in self.metrics.items() if key.startswith("valid")}
        if "valid" not in parts or not (self.metrics.get("ease/refit_on_valid") and stored):
            return super().evaluate(parts)
        metrics = super().evaluate([part for part in parts if part != "valid"])
        return {**stored, **metrics}
