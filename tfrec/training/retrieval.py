"""One retrieval experiment end to end: data -> split -> fit -> evaluate -> export.

The ``"retrieval"`` kind of the :mod:`~tfrec.training.experiment` contract, used by
``tfrec train``, the notebooks and the benchmarks::

    from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

    experiment = RetrievalExperiment(RetrievalExperimentConfig.for_dataset("ml-100k"))
    experiment.fit()                   # early stopping on validation NDCG@10
    metrics = experiment.evaluate()    # {"test/ndcg@10": ..., "test/hr@10": ...}
    experiment.export("exports")       # [exports/retrieval/1] (TF Serving layout)

Everything a later ``tfrec evaluate``/``tfrec export`` needs is written to the
output directory in the common :class:`~tfrec.training.experiment.RunLayout`;
:meth:`RetrievalExperiment.from_dir` (or ``tfrec.load_experiment``) rebuilds the
experiment from it (data and split are reloaded deterministically).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from tfrec.data.interactions import Interactions
from tfrec.data.item_features import ItemFeatureTables, build_item_feature_tables
from tfrec.data.queries import EvalQueries
from tfrec.data.sequences import user_sequences
from tfrec.data.splits import Split
from tfrec.data.tfdata import make_dataset
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary, build_vocabularies
from tfrec.evaluation.retrieval import RetrievalEvaluator
from tfrec.models.retrieval import NO_ENCODER, TwoTowerModel, item_log_probabilities
from tfrec.training.experiment import (
    ExperimentBase,
    ExportRequest,
    export_extra_files,
    read_json,
    read_run_config,
    register_experiment,
    save_model_run,
)
from tfrec.training.loop import fit_model
from tfrec.training.optimizers import make_optimizer
from tfrec.training.parameter_server import (
    dataset_creator,
    is_parameter_server,
    record_sharding,
    sharded_tables,
    unsharded_copy,
)
from tfrec.training.privacy import PrivateTraining
from tfrec.training.retrieval_config import RetrievalExperimentConfig
from tfrec.training.retrieval_data import prepared_split, training_examples
from tfrec.training.strategy import configure_precision, get_strategy

logger = logging.getLogger(__name__)

#: Early stopping's metric when ``training.monitor`` is unset.
DEFAULT_MONITOR = "ndcg@10"


@register_experiment("retrieval")
class RetrievalExperiment(ExperimentBase):
    """Trains, evaluates and exports a :class:`TwoTowerModel` (kind ``"retrieval"``).

    Args:
        config: The experiment.
        output_dir: Where config, vocabularies, weights, logs and metrics go
            (None: nothing is written until :meth:`save`).
        data: Optional already-loaded interactions (skips ``config.data.load()``).
        split: Optional precomputed split of ``data`` (skips the splitting).
    """

    kind: ClassVar[str] = "retrieval"
    exports: ClassVar[tuple[str, ...]] = ("retrieval",)
    config_class: ClassVar[type[RetrievalExperimentConfig]] = RetrievalExperimentConfig

    def __init__(
        self,
        config: RetrievalExperimentConfig,
        output_dir: str | Path | None = None,
        data: Interactions | None = None,
        split: Split | None = None,
    ) -> None:
        model = config.model
        for field, value in (("mean_expert", model.mean_expert),
                             ("scenario_adapter_dim", model.scenario_adapter_dim)):  # fmt: skip
            if value and not model.scenario_layers:
                raise ValueError(
                    f"RetrievalExperimentConfig.model.{field}={value!r} needs "
                    "scenario_layers=True: it is a part of the scenario layers "
                    "(a multi_scenario run sets scenario_layers in each scenario)"
                )
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.prepared = None
        if config.prepared_dir is not None:
            self._load_prepared(config.prepared_dir)
        else:
            self.data = data if data is not None else config.data.load()
            self.split = split if split is not None else config.data.make_split(self.data)
            self.user_vocab, self.item_vocab = build_vocabularies(self.data)
        self.item_features: ItemFeatureTables | None = None
        if config.model.use_item_features and self.data.items is not None:
            self.item_features = build_item_feature_tables(
                self.data.items, self.item_vocab, max_title_tokens=config.model.max_title_tokens
            )
        self.strategy = get_strategy(config.model.training.strategy)
        configure_precision(config.model.training.mixed_precision)
        self.train_seqs = user_sequences(
            self.split.train, self.user_vocab, self.item_vocab
        ).sample_users(config.data.train_user_fraction, config.data.seed)
        self.examples, self.num_examples, self.item_counts = self._training_examples()
        with self.strategy.scope(), sharded_tables():  # tables over the PS, if any
            self.model = self._new_model(build=is_parameter_server(self.strategy))
        self.evaluator = self._new_evaluator()
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0

    def _new_model(self, build: bool = False) -> TwoTowerModel:
        """A compiled :class:`TwoTowerModel` of this config and data (in the current scope).

        ``build``: create its variables now (by scoring one query).
        """
        cfg = self.config.model
        model = TwoTowerModel(
            cfg,
            num_users=self.user_vocab.size,
            num_items=self.item_vocab.size,
            item_features=self.item_features,
            item_log_probs=item_log_probabilities(self.item_counts),
        )
        model.compile(optimizer=make_optimizer(cfg.optimizer), jit_compile=cfg.training.jit_compile)
        if build:
            last = np.full([1, cfg.max_history], NUM_RESERVED, np.int32)  # [1, L]
            model.score(tf.constant([NUM_RESERVED]), tf.constant(last))
        return model

    def _new_evaluator(self) -> RetrievalEvaluator:
        """The evaluator of :attr:`model` on this split."""
        return RetrievalEvaluator(
            self.model, self.split, self.user_vocab, self.item_vocab,
            max_history=self.config.model.max_history, seed=self.config.data.seed,
            item_counts=self.item_counts,
        )  # fmt: skip

    def _training_examples(self) -> tuple[dict[str, np.ndarray] | None, int, np.ndarray]:
        """``(in-memory examples or None for prepared runs, their count, item target counts)``.

        See :func:`~tfrec.training.retrieval_data.training_examples`.

        Raises:
            ValueError: No training example.
        """
        model = self.config.model
        if self.prepared is not None and model.encoder == NO_ENCODER:
            logger.info(
                "prepared_dir with encoder='none': training on the prepared sequence rows, "
                "so each user's first train item is not a target (in-memory runs use all)"
            )
        return training_examples(
            self.train_seqs, model, self.item_vocab.size, self.prepared, self.data.name
        )

    def _load_prepared(self, directory: str) -> None:
        """Uses a ``tfrec prepare`` directory: its split, vocabularies and item table."""
        max_history = self.config.model.max_history
        self.prepared, self.split, self.data = prepared_split(directory, max_history)
        self.user_vocab, self.item_vocab = self.prepared.user_vocab, self.prepared.item_vocab

    def _train_dataset(self) -> tf.data.Dataset:
        """Global batches of ``training.batch_size``, sharded per worker when distributed.

        Under a multi-worker strategy each worker reads its share: whole TFRecord
        shards (FILE) of a prepared directory, every N-th batch (DATA) in memory.
        Under ``ParameterServerStrategy`` a ``DatasetCreator`` of endless
        batches: every worker reads the whole training set in its own order
        (TensorFlow gives the dataset function no worker index); a
        ``--prepared`` directory must then be on storage the workers mount.
        """
        if is_parameter_server(self.strategy):
            return dataset_creator(lambda seed: self._batches(seed, repeat=True))
        policy = tf.data.experimental.AutoShardPolicy
        options = tf.data.Options()
        sharding = policy.DATA if self.prepared is None else policy.FILE
        options.experimental_distribute.auto_shard_policy = sharding
        return self._batches(self.config.model.training.seed).with_options(options)

    def _batches(self, seed: int | tf.Tensor, repeat: bool = False) -> tf.data.Dataset:
        """Shuffled training batches (in memory, or the ``--prepared`` TFRecords)."""
        batch_size = self.config.model.training.batch_size
        if self.prepared is None:
            return make_dataset(
                self.examples, batch_size=batch_size, shuffle=True, seed=seed, repeat=repeat
            )
        keys = ("user", "history", "target")
        dataset = self.prepared.dataset("train", batch_size, shuffle=True, seed=seed, repeat=repeat)
        return dataset.map(lambda f: {k: f[k] for k in keys}, num_parallel_calls=tf.data.AUTOTUNE)

    def _unshard(self) -> None:
        """Replaces the model trained on parameter servers by a plain copy on the chief.

        :func:`~tfrec.training.parameter_server.unsharded_copy`: evaluation,
        ``save`` and ``export`` then use ordinary variables with the same weights.
        """
        record_sharding(self.model, self.output_dir)
        build = lambda: self._new_model(build=True)  # noqa: E731
        self.model = unsharded_copy(self.model, build, lambda m: m.candidate_embeddings())
        self.evaluator = self._new_evaluator()

    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: Any) -> RetrievalExperimentConfig:
        """The preset of ``dataset`` (:attr:`config_class`'s ``for_dataset``)."""
        return cls.config_class.for_dataset(dataset, **data_kwargs)

    @classmethod
    def from_dir(
        cls, run_dir: str | os.PathLike[str], data_dir: str | None = None
    ) -> RetrievalExperiment:
        """Rebuilds a trained experiment from the directory :meth:`save` wrote.

        The data and split are reloaded with the saved config (they are
        deterministic; a cluster run's strategy becomes ``"auto"``); the
        vocabularies are checked against the saved ones so a changed dataset is
        caught instead of silently mis-indexing the weights.

        Args:
            run_dir: The output directory of ``tfrec train``.
            data_dir: Overrides the data directory saved in the config.

        Raises:
            FileNotFoundError: ``config.json`` or the weights are missing.
            ValueError: The data no longer matches the saved vocabularies.
        """
        layout, config = read_run_config(run_dir, cls.config_class, data_dir)
        training = config.model.training
        if training.strategy in ("multi_worker", "parameter_server"):  # reloaded in one process
            config.model.training = dataclasses.replace(training, strategy="auto")
        experiment = cls(config, output_dir=layout.root)
        for name, vocab in (("user", experiment.user_vocab), ("item", experiment.item_vocab)):
            path = getattr(layout, f"{name}_vocab")
            saved = IdVocabulary.load(path, name=name)
            if saved.tokens != vocab.tokens:
                raise ValueError(
                    f"{path}: the {name} ids of the reloaded data ({len(vocab.tokens)}) differ "
                    f"from those the model was trained with ({len(saved.tokens)}); pass the "
                    "same dataset/--data-dir as for training"
                )
        if not Path(f"{layout.weights}.index").is_file():
            raise FileNotFoundError(f"{layout.weights}.index not found: the model was not saved")
        experiment.model.load_weights(str(layout.weights)).expect_partial()
        experiment._restore_metrics(layout)
        experiment.history = read_json(layout.history, {})
        return experiment

    # ------------------------------------------------------------------ evaluation
    def queries(self, part: str) -> EvalQueries:
        """Evaluation queries for ``"valid"`` (``evaluation.valid_max_users``) or ``"test"``."""
        return self.evaluator.queries(part, self.config.evaluation.valid_max_users)

    def evaluate_part(
        self, part: str = "test", log_every_s: float = 30.0, extras: bool = True
    ) -> dict[str, float]:
        """Metrics of one split part under ``config.evaluation`` (keys ``<part>/...``).

        See :meth:`tfrec.evaluation.retrieval.RetrievalEvaluator.evaluate_part`.
        """
        return self.evaluator.evaluate_part(
            part, self.config.evaluation, log_every_s=log_every_s, extras=extras
        )

    def _validation_metrics(self) -> dict[str, float]:
        """The few validation metrics logged after each epoch (monitor included).

        They come from the first report of ``evaluation.mask``, with the same
        denominator as the test metrics (every validation user with a held-out item).
        """
        metrics = self.evaluate_part("valid", log_every_s=60, extras=False)  # one report
        monitor, _ = self.config.model.training.monitor_mode(DEFAULT_MONITOR)
        keep = {monitor, "ndcg@10", "hr@10", "recall@10", "mrr"}
        plain = {key.split("/", 1)[1]: value for key, value in metrics.items()}
        return {key: value for key, value in plain.items() if key in keep}

    def _has_valid(self) -> bool:
        return self.split.valid is not None and len(self.split.valid) > 0

    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Metrics of ``parts`` (default: valid when the split has it, and test).

        Returns them with ``train_seconds``, ``epochs_run`` and
        ``evaluate_seconds`` (these parts' wall time); all are merged into
        :attr:`metrics`.
        """
        if parts is None:
            parts = ("valid", "test") if self._has_valid() else ("test",)
        metrics: dict[str, float] = {}
        start = time.perf_counter()
        for part in parts:
            metrics.update(self.evaluate_part(part))
        metrics["evaluate_seconds"] = round(time.perf_counter() - start, 2)
        self._finish_report(metrics, self.history)
        for key in (f"test/ndcg@{k}" for k in (10, 20)):
            if key in metrics:
                logger.debug("%s = %.4f", key, metrics[key])
        return metrics

    # ------------------------------------------------------------------ training
    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Trains with early stopping on validation ``config.model.training.monitor``.

        Args:
            epochs: Overrides ``config.model.training.epochs``.
            resume: Continue an interrupted run from ``output_dir``'s checkpoint.
            verbose: Keras verbosity (0: tfrec's one line per epoch only).

        Under ``ParameterServerStrategy`` an epoch is ``steps_per_epoch`` steps
        over all workers (default: one pass, ``ceil(examples / batch_size)``),
        and the trained model is then replaced by an unsharded copy
        (:meth:`_unshard`; call ``fit`` once).

        Returns:
            The per-epoch logs (loss and validation metrics).
        """
        cfg, loop = self.config.model, self.config.model.training
        epochs = loop.epochs if epochs is None else epochs
        monitor, mode = loop.monitor_mode(DEFAULT_MONITOR)
        self._save_config()
        logger.info(
            "training %s on %d examples (%d users), batch %d, up to %d epochs",
            cfg.encoder,
            self.num_examples,
            len(self.train_seqs),
            loop.batch_size,
            epochs,
        )
        steps, sharded = loop.steps_per_epoch, is_parameter_server(self.strategy)
        if sharded and steps is None:  # the workers' datasets repeat forever
            steps = math.ceil(self.num_examples / loop.batch_size)
        privacy = PrivateTraining.create(loop, self.num_examples, steps)  # None: DP-SGD off
        start = time.perf_counter()
        self.history = fit_model(
            self.model, self._train_dataset(), epochs=epochs,
            evaluate_fn=self._validation_metrics if self._has_valid() else None,
            monitor=monitor, mode=mode, patience=loop.patience, output_dir=self.output_dir,
            examples_per_step=loop.batch_size, resume=resume, verbose=verbose,
            steps_per_epoch=steps, privacy=privacy,
        )  # fmt: skip
        self.train_seconds += time.perf_counter() - start
        if privacy is not None:
            self.metrics.update(privacy.report())
        if sharded:
            self._unshard()
        return self.history

    # ------------------------------------------------------------------ export / io
    def _export(self, request: ExportRequest) -> list[Path]:
        """Writes a TF Serving SavedModel ``<base_dir>/<model_name>/<version>/``."""
        from tfrec.export.retrieval import export_retrieval  # noqa: PLC0415

        path = export_retrieval(
            self._serving_model(),
            self.user_vocab,
            self.item_vocab,
            request.base_dir,
            model_name=request.model_name or self.config.model_name,
            version=request.version,
            assets_extra={"tf_serving_warmup_requests": self._warmup_records()},
            extra_files=export_extra_files(self.metrics, self.data.items),
            experiment_config=self.config.to_dict(),
            **request.index_options(),
        )
        logger.debug("exported SavedModel to %s", path)
        return [path]

    def _serving_model(self) -> Any:
        """The object :func:`~tfrec.export.retrieval.export_retrieval` exports.

        It needs the two-tower inference interface (``query_embeddings``,
        ``candidate_embeddings``, ...); kinds whose trained model differs from
        what is served (LightGCN's final tables) override this.
        """
        return self.model

    def _warmup_records(self, num_requests: int = 4) -> bytes:
        """A few realistic Predict requests (test users) for TF Serving warmup."""
        from tfrec.export.warmup import build_warmup_records  # noqa: PLC0415

        queries = self.queries("test")
        requests = []
        for row in range(min(num_requests, len(queries))):
            tokens = [self.item_vocab.token(int(i)) for i in queries.history[row] if i > 1]
            requests.append(
                {
                    "user_id": np.array([queries.user_ids[row]], dtype=object),
                    "history": np.array([tokens or [""]], dtype=object),
                    "k": np.array([10], dtype=np.int32),
                }
            )
        return build_warmup_records(self.config.model_name, requests)

    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes the run: config, metrics, vocabularies, weights and history.

        The files are those of :class:`~tfrec.training.experiment.RunLayout`.
        """
        layout = self._save_layout(output_dir)
        save_model_run(
            layout, self.config, metrics=self.metrics, vocabs=(self.user_vocab, self.item_vocab),
            model=self.model, history=self.history,
        )  # fmt: skip
        return layout.root
