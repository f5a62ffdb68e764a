"""One retrieval model trained on several scenarios: the ``"multi_scenario"`` kind.

::

    config = MultiScenarioExperimentConfig.for_scenarios(["beauty", "sports", "lastfm"])
    experiment = MultiScenarioExperiment(config, output_dir="runs/multi")
    experiment.fit()        # mixed batches, early stopping on the mean validation metric
    experiment.evaluate()   # {"beauty/test/ndcg@10": ..., "lastfm/test/hr@10": ...}
    experiment.save()
    experiment.export("exports")   # multi_scenario_beauty/1, multi_scenario_sports/1, ...

The model is a :class:`~tfrec.models.multi_scenario.MultiScenarioModel`: one
shared history encoder and, per scenario, a complete TwoTowerModel (own item
embeddings, scenario layers, softmax over its own catalogue). Each scenario is a
:class:`~tfrec.training.retrieval.RetrievalExperiment` for its data (split,
vocabularies, training examples, evaluation queries) and its evaluation, with
the scenario's model of the multi model in place of its own.

How batches mix: every training batch holds examples of ONE scenario (batch
size ``model.training.batch_size``); :func:`mixed_dataset` draws each next
batch's scenario at random with the probabilities ``config.weights`` (default
each scenario's examples times its preset's epochs:
:func:`~tfrec.training.multi_scenario_config.default_weights`) through
``tf.data.Dataset.sample_from_datasets``, so consecutive batches come from
different scenarios; each scenario's examples are reshuffled and repeated
endlessly, so the weights hold for the whole run. An epoch is as many batches as one pass over every
scenario's examples (``training.steps_per_epoch`` overrides it).

Run directory: ``config.json`` (kind ``multi_scenario``), ``metrics.json``
(``<scenario>/<part>/<metric>`` keys), ``weights/model`` (the whole multi model
at the best validation epoch: the mean over scenarios of the monitored metric),
``checkpoints/``, ``history.json``, and one complete retrieval sub-run per
scenario in ``<scenario>/`` (loadable alone by ``tfrec.load_experiment`` and
exportable: its model carries the shared encoder's weights).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from tfrec.data.interactions import Interactions
from tfrec.data.tfdata import make_dataset
from tfrec.evaluation.config import prefixed
from tfrec.evaluation.retrieval import RetrievalEvaluator
from tfrec.models.multi_scenario import SCENARIO_FEATURE, MultiScenarioModel
from tfrec.models.retrieval import TwoTowerModel, item_log_probabilities
from tfrec.training.checkpoints import TrainingState, save_weights
from tfrec.training.experiment import (
    ExperimentBase,
    ExportRequest,
    RunLayout,
    read_json,
    register_experiment,
    write_json,
)
from tfrec.training.loop import fit_model
from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig, default_weights
from tfrec.training.optimizers import make_optimizer
from tfrec.training.privacy import PrivateTraining
from tfrec.training.retrieval import DEFAULT_MONITOR, RetrievalExperiment
from tfrec.training.scenario_best import ScenarioBest

logger = logging.getLogger(__name__)

#: Prefix of the validation key that is the mean over scenarios of each one's best
#: value so far (``best_ndcg@10``): the early-stopping monitor of ``selection="scenario"``.
BEST_PREFIX = "best_"


def mixed_dataset(
    datasets: Sequence[tf.data.Dataset], weights: Sequence[float], seed: int = 0
) -> tf.data.Dataset:
    """An endless stream of one-scenario batches, the scenario of each drawn by ``weights``.

    Args:
        datasets: Per scenario, batches of the model input contract (repeated here).
        weights: Relative probability of drawing each scenario's next batch (> 0).
        seed: Seed of the draws.

    Returns:
        Batches with ``"scenario"`` ``[B]`` int32 added (the scenario's index,
        the same in every row).
    """
    total = float(sum(weights))

    def tagged(dataset: tf.data.Dataset, index: int) -> tf.data.Dataset:
        def tag(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            rows = tf.shape(features["target"])[:1]  # [1] = (B,)
            return {**features, SCENARIO_FEATURE: tf.fill(rows, tf.constant(index, tf.int32))}

        return dataset.repeat().map(tag, num_parallel_calls=tf.data.AUTOTUNE)

    streams = [tagged(dataset, i) for i, dataset in enumerate(datasets)]
    mixed = tf.data.Dataset.sample_from_datasets(
        streams, weights=[w / total for w in weights], seed=seed
    )
    return mixed.prefetch(tf.data.AUTOTUNE)


def attach_model(experiment: RetrievalExperiment, model: TwoTowerModel) -> None:
    """Makes ``model`` (a scenario of a multi model) the model ``experiment`` evaluates/saves."""
    experiment.model = model
    experiment.evaluator = RetrievalEvaluator(
        model, experiment.split, experiment.user_vocab, experiment.item_vocab,
        max_history=experiment.config.model.max_history, seed=experiment.config.data.seed,
        item_counts=experiment.item_counts,
    )  # fmt: skip


@register_experiment("multi_scenario")
class MultiScenarioExperiment(ExperimentBase):
    """Trains, evaluates and exports one model for several scenarios (kind ``multi_scenario``).

    Args:
        config: The experiment.
        output_dir: The run directory (sub-runs in ``<scenario>/``); None:
            nothing is written until :meth:`save`.
        data: Already-loaded interactions of some scenarios, by name.
        experiments: The scenarios' retrieval experiments (what :meth:`from_dir`
            passes); otherwise built from ``config.scenario_config``.

    Raises:
        ValueError: ``config.kind`` is not ``multi_scenario``, or ``experiments``
            does not hold exactly the config's scenarios.
    """

    kind: ClassVar[str] = "multi_scenario"
    exports: ClassVar[tuple[str, ...]] = ("retrieval",)
    config_class: ClassVar[type[MultiScenarioExperimentConfig]] = MultiScenarioExperimentConfig

    def __init__(
        self,
        config: MultiScenarioExperimentConfig,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        data: Mapping[str, Interactions] | None = None,
        experiments: Mapping[str, RetrievalExperiment] | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ValueError(f"MultiScenarioExperiment: config.kind={config.kind!r}")
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        data = data or {}
        if experiments is None:
            experiments = {
                name: RetrievalExperiment(
                    config.scenario_config(name), self._sub_dir(name), data=data.get(name)
                )
                for name in config.scenarios
            }
        if list(experiments) != list(config.scenarios):
            raise ValueError(
                f"MultiScenarioExperiment: experiments {list(experiments)}; expected the "
                f"scenarios {config.scenarios} in that order"
            )
        self.experiments: dict[str, RetrievalExperiment] = dict(experiments)
        first = next(iter(self.experiments.values()))
        with first.strategy.scope():
            self.model = MultiScenarioModel(config.shared_model())
            for name, sub in self.experiments.items():
                scenario = self.model.add_scenario(
                    name, sub.user_vocab.size, sub.item_vocab.size,
                    item_features=sub.item_features,
                    item_log_probs=item_log_probabilities(sub.item_counts),
                    config=sub.config.model,
                )  # fmt: skip
                attach_model(sub, scenario)
            self.model.compile(
                optimizer=make_optimizer(config.model.optimizer),
                jit_compile=config.model.training.jit_compile,
            )
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0
        self.best = ScenarioBest(self._monitor()[1], self.output_dir)
        self._epoch = 0

    def _monitor(self) -> tuple[str, str]:
        """Each scenario's monitored validation metric and its mode."""
        return self.config.model.training.monitor_mode(DEFAULT_MONITOR)

    def _sub_dir(self, name: str) -> Path | None:
        return self.output_dir / name if self.output_dir is not None else None

    @property
    def weights(self) -> list[float]:
        """The scenarios' batch sampling weights (``config.weights`` or uniform), sum 1."""
        weights = self.config.weights
        if weights is None:
            return default_weights(
                [sub.num_examples for sub in self.experiments.values()],
                [self.config.preset(name).model.training.epochs for name in self.experiments],
            )
        return [w / sum(weights) for w in weights]

    @classmethod
    def default_config(cls, dataset: str, **fields: Any) -> MultiScenarioExperimentConfig:
        """The default config of the comma-separated scenarios ``dataset`` (``beauty,lastfm``)."""
        return MultiScenarioExperimentConfig.for_scenarios(dataset.split(","), **fields)

    # ------------------------------------------------------------------ training
    def train_dataset(self) -> tuple[tf.data.Dataset, int]:
        """The mixed training stream and the number of batches of one epoch.

        One epoch is ``sum over scenarios of ceil(examples / batch_size)`` batches.
        """
        loop = self.config.model.training
        subs = list(self.experiments.values())
        datasets = [
            make_dataset(sub.examples, loop.batch_size, shuffle=True, seed=loop.seed, repeat=True)
            for sub in subs
        ]
        steps = sum(math.ceil(sub.num_examples / loop.batch_size) for sub in subs)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        dataset = mixed_dataset(datasets, self.weights, seed=loop.seed)
        return dataset.with_options(options), steps

    def _has_valid(self) -> bool:
        return any(sub._has_valid() for sub in self.experiments.values())

    def _validation_metrics(self) -> dict[str, float]:
        """Per-epoch validation: each scenario's metrics, their means, the best-so-far mean.

        With ``selection="scenario"`` a scenario whose monitored metric improved
        is snapshotted (:class:`~tfrec.training.scenario_best.ScenarioBest`).
        """
        monitor, _ = self._monitor()
        metrics: dict[str, float] = {}
        per_key: dict[str, list[float]] = {}
        for name, sub in self.experiments.items():
            if not sub._has_valid():
                continue
            own = sub._validation_metrics()
            for key, value in own.items():
                metrics[f"{name}/{key}"] = value
                per_key.setdefault(key, []).append(value)
            if self.config.selection == "scenario" and monitor in own:
                self.best.update(name, own[monitor], self._epoch, self.model.scenarios[name])
        metrics.update({key: float(np.mean(values)) for key, values in per_key.items()})
        if self.config.selection == "scenario":
            metrics[BEST_PREFIX + monitor] = self.best.mean_best()
        self._epoch += 1
        return metrics

    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Trains on the mixed stream; early stopping on the scenarios' validation metric.

        ``selection="scenario"``: stops when no scenario has improved for
        ``patience`` epochs, each scenario keeping its best epoch's weights;
        ``"mean"``: stops on the mean over scenarios, its best epoch restored.

        Args:
            epochs: Overrides ``config.model.training.epochs``.
            resume: Continue an interrupted run from ``output_dir``'s checkpoint.
            verbose: Keras verbosity.

        Returns:
            The per-epoch logs (loss, mean and per-scenario validation metrics).
        """
        loop = self.config.model.training
        epochs = loop.epochs if epochs is None else epochs
        monitor, mode = self._monitor()
        if self.config.selection == "scenario":
            monitor = BEST_PREFIX + monitor
        self._start_selection(resume)
        self._save_config()
        dataset, steps = self.train_dataset()
        logger.info(
            "training one model on %d scenarios (%s), weights %s, %d batches per epoch",
            len(self.experiments), ", ".join(self.experiments),
            ", ".join(f"{w:.3f}" for w in self.weights), steps,
        )  # fmt: skip
        # DP-SGD: q from the smallest scenario, every step counted (an upper bound on ε)
        smallest = min(sub.num_examples for sub in self.experiments.values())
        privacy = PrivateTraining.create(loop, smallest, loop.steps_per_epoch or steps)
        start = time.perf_counter()
        self.history = fit_model(
            self.model, dataset, epochs=epochs,
            evaluate_fn=self._validation_metrics if self._has_valid() else None,
            monitor=monitor, mode=mode, patience=loop.patience, output_dir=self.output_dir,
            examples_per_step=loop.batch_size, resume=resume, verbose=verbose,
            steps_per_epoch=loop.steps_per_epoch or steps, privacy=privacy,
        )  # fmt: skip
        self.train_seconds += time.perf_counter() - start
        if privacy is not None:
            self.metrics.update(privacy.report())
        for name, sub in self.experiments.items():
            sub.history = self._scenario_history(name)
            sub.train_seconds = self.train_seconds
        return self.history

    def _start_selection(self, resume: bool) -> None:
        """A fresh :attr:`best` (a resumed run's snapshots read back from disk)."""
        self.best = ScenarioBest(self._monitor()[1], self.output_dir)
        self._epoch = 0
        if resume and self.output_dir is not None:
            layout = RunLayout(self.output_dir)
            self._epoch = TrainingState.read(layout).epoch
            self.best.restore(layout.root, self.model.scenarios)  # fit then loads `last`

    def _scenario_history(self, name: str) -> dict[str, list[float]]:
        """The joint loss and scenario ``name``'s own validation metrics, per epoch."""
        own = f"val_{name}/"
        history = {k: v for k, v in self.history.items() if "/" not in k}
        history = {k: v for k, v in history.items() if not k.startswith("val_")}
        history.update(
            {f"val_{k[len(own) :]}": v for k, v in self.history.items() if k.startswith(own)}
        )
        return history

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Every scenario's metrics of ``parts`` (default: valid when it exists, and test).

        Keys ``<scenario>/<part>/<metric>`` (and each scenario's
        ``<scenario>/evaluate_seconds`` and, with the mean expert, its gate's
        ``<scenario>/mean_expert_weight``), plus ``train_seconds`` and
        ``epochs_run``; merged into :attr:`metrics` (each scenario's also into
        its sub-run's metrics).
        """
        metrics: dict[str, float] = {}
        for name, sub in self.experiments.items():
            sub.config.evaluation = self.config.evaluation  # one protocol for the whole run
            with self.best.applied(name, self.model.scenarios[name]):
                own = sub.evaluate(parts)
                weight = self.model.scenarios[name].query_tower.encoder.mean_expert_weight
            if weight is not None:  # how much of this scenario's query is the bag of history
                own["mean_expert_weight"] = weight
            own.pop("train_seconds", None)
            own.pop("epochs_run", None)
            if name in self.best:
                own["best_epoch"] = self.best.epochs[name] + 1
            metrics.update(prefixed(name, own))
        return self._finish_report(metrics, self.history)

    # ------------------------------------------------------------------ export / io
    def _export(self, request: ExportRequest) -> list[Path]:
        """Writes one retrieval SavedModel per scenario, ``<model_name>_<scenario>``."""
        paths: list[Path] = []
        for name, sub in self.experiments.items():
            model_name = None if request.model_name is None else f"{request.model_name}_{name}"
            with self.best.applied(name, self.model.scenarios[name]):
                paths += sub.export(
                    request.base_dir, request.version, model_name=model_name,
                    **request.index_options(),
                )  # fmt: skip
        return paths

    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes the config, metrics, the multi model's weights, history and every sub-run."""
        layout = self._save_layout(output_dir)
        self.config.save(layout.config)
        write_json(layout.metrics, self.metrics)
        save_weights(self.model, layout.weights)
        write_json(layout.history, self.history)
        self.best.write_state(layout.root)
        for name, sub in self.experiments.items():
            with self.best.applied(name, self.model.scenarios[name]):
                sub.save(layout.sub_run(name).root)
        return layout.root

    @classmethod
    def from_dir(
        cls, run_dir: str | os.PathLike[str], data_dir: str | None = None
    ) -> MultiScenarioExperiment:
        """Reopens a run :meth:`save` wrote: its config, sub-runs and multi model weights.

        Args:
            run_dir: The run directory.
            data_dir: Overrides the saved data directory.

        Raises:
            FileNotFoundError: ``config.json``, a sub-run or the weights are missing.
            ValueError: A scenario's data no longer matches its saved vocabularies.
        """
        layout = RunLayout(Path(run_dir))
        if not layout.config.is_file():
            raise FileNotFoundError(f"{layout.config} not found: expected a multi_scenario run")
        config = MultiScenarioExperimentConfig.load(layout.config)
        if data_dir is not None:
            config.data_dir = data_dir
        experiments = {
            name: RetrievalExperiment.from_dir(layout.sub_run(name).root, data_dir)
            for name in config.scenarios
        }
        if not Path(f"{layout.weights}.index").is_file():
            raise FileNotFoundError(f"{layout.weights}.index not found: the model was not saved")
        experiment = cls(config, layout.root, experiments=experiments)
        experiment.best.restore(layout.root, experiment.model.scenarios)
        experiment.model.load_weights(str(layout.weights)).expect_partial()
        experiment._restore_metrics(layout)
        experiment.history = read_json(layout.history, {})
        return experiment
