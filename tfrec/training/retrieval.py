"""One retrieval experiment end to end: data -> split -> fit -> evaluate -> export.

This is the Keras-style high-level API used by ``tfrec train``, the notebooks and
the benchmarks::

    from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

    experiment = RetrievalExperiment(RetrievalExperimentConfig.for_dataset("ml-100k"))
    experiment.fit()                   # early stopping on validation NDCG@10
    metrics = experiment.evaluate()    # {"test/ndcg@10": ..., "test/hr@10": ...}
    experiment.export("exports")       # exports/retrieval/1/ (TF Serving layout)

Everything a later ``tfrec evaluate``/``tfrec export`` needs is written to the
output directory: ``config.json``, ``metrics.json``, ``user_vocab.txt``,
``item_vocab.txt`` and ``weights/``; :meth:`RetrievalExperiment.from_dir`
rebuilds the experiment from them (data and split are reloaded deterministically).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfrec.config import JsonConfig, atomic_write_text
from tfrec.data.interactions import Interactions
from tfrec.data.pipeline import make_dataset
from tfrec.data.sequences import interaction_pairs, retrieval_examples, user_sequences
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary
from tfrec.layers.towers import ItemFeatureTables, build_item_feature_tables
from tfrec.models.retrieval import (
    NO_ENCODER,
    RetrievalConfig,
    TwoTowerModel,
    item_log_probabilities,
    make_optimizer,
)
from tfrec.training.callbacks import MetricEarlyStopping, ProgressLogger, output_callbacks
from tfrec.training.experiment import (
    MASK_SUFFIX,
    DataConfig,
    EvalConfig,
    EvalQueries,
    build_vocabularies,
    concat_parts,
    eval_queries,
    protocol_metrics,
)
from tfrec.training.strategy import configure_precision, get_strategy

logger = logging.getLogger(__name__)

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


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": float(value) for key, value in metrics.items()}


class RetrievalExperiment:
    """Trains, evaluates and exports a :class:`TwoTowerModel`.

    Args:
        config: The experiment.
        output_dir: Where config, vocabularies, weights, logs and metrics go
            (None: nothing is written until :meth:`save`).
        data: Optional already-loaded interactions (skips ``config.data.load()``).
        split: Optional precomputed split of ``data`` (skips the splitting).
    """

    def __init__(
        self,
        config: RetrievalExperimentConfig,
        output_dir: str | Path | None = None,
        data: Interactions | None = None,
        split: Split | None = None,
    ) -> None:
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
        self.strategy = get_strategy()
        configure_precision(config.model.mixed_precision)
        self.train_seqs = user_sequences(self.split.train, self.user_vocab, self.item_vocab)
        # ID-only (encoder="none"): the query is the user embedding alone, so every train
        # interaction is a (user, item) pair, first items and one-interaction users included.
        # History encoders need a history before each target: rows from the 2nd item on.
        self.examples: dict[str, np.ndarray] | None = None
        pairs = config.model.encoder == NO_ENCODER and self.prepared is None
        if pairs:
            self.examples = interaction_pairs(self.train_seqs)
            num_examples = len(self.examples["user"])
        elif self.prepared is None:
            self.examples = retrieval_examples(
                self.train_seqs, config.model.max_history, mode=config.model.training_positions
            )
            num_examples = len(self.examples["user"])
        else:
            num_examples = self.prepared.summary.examples.get("train", 0)
            if config.model.encoder == NO_ENCODER:
                logger.info(
                    "prepared_dir with encoder='none': training on the prepared sequence rows, "
                    "so each user's first train item is not a target (in-memory runs use all)"
                )
        if num_examples == 0:
            reason = (
                "the training part has no interactions"
                if pairs
                else "every user has fewer than 2 training interactions"
            )
            raise ValueError(f"dataset {self.data.name!r}: no training examples ({reason})")
        self.num_examples = num_examples
        # The training targets, for item popularity and logQ: every train item with
        # interaction pairs, else every item after a user's first train item.
        first = 0 if pairs else 1
        targets = [items[first:] for items in self.train_seqs.items if len(items) > first]
        counts = np.bincount(np.concatenate(targets), minlength=self.item_vocab.size).astype(
            np.float64
        )
        counts[:2] = 0.0
        self.item_counts = counts
        with self.strategy.scope():
            self.model = TwoTowerModel(
                config.model,
                num_users=self.user_vocab.size,
                num_items=self.item_vocab.size,
                item_features=self.item_features,
                item_log_probs=item_log_probabilities(counts),
            )
            self.model.compile(
                optimizer=make_optimizer(config.model), jit_compile=config.model.jit_compile
            )
        self._queries: dict[str, EvalQueries] = {}
        self._score_graph = None
        self.history: dict[str, list[float]] = {}
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0

    def _load_prepared(self, directory: str) -> None:
        """Uses a ``tfrec prepare`` directory: its split, vocabularies and item table."""
        from tfrec.data.preparation import load_prepared  # noqa: PLC0415

        prepared = load_prepared(directory)
        if prepared.config.max_len != self.config.model.max_history:
            raise ValueError(
                f"prepared_dir {directory} has histories of length {prepared.config.max_len} "
                f"but model.max_history={self.config.model.max_history}; use the same value "
                "(tfrec prepare --max-len / tfrec train --max-history)"
            )
        parts = prepared.parts
        self.prepared = prepared
        self.split = Split(
            train=parts["train"],
            valid=parts.get("valid"),
            test=parts["test"],
            protocol=prepared.summary.protocol,
        )
        self.data = concat_parts(*parts.values())
        self.user_vocab, self.item_vocab = prepared.user_vocab, prepared.item_vocab

    def _train_dataset(self) -> tf.data.Dataset:
        cfg = self.config.model
        if self.prepared is not None:
            keys = ("user", "history", "target")
            return self.prepared.dataset("train", cfg.batch_size, shuffle=True, seed=cfg.seed).map(
                lambda f: {k: f[k] for k in keys}, num_parallel_calls=tf.data.AUTOTUNE
            )
        return make_dataset(self.examples, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)

    @classmethod
    def from_dir(cls, model_dir: str | Path, data_dir: str | None = None) -> RetrievalExperiment:
        """Rebuilds a trained experiment from the directory :meth:`save` wrote.

        The data and split are reloaded with the saved config (they are
        deterministic); the vocabularies are checked against the saved ones so a
        changed dataset is caught instead of silently mis-indexing the weights.

        Args:
            model_dir: The output directory of ``tfrec train``.
            data_dir: Overrides the data directory saved in the config.

        Raises:
            FileNotFoundError: ``config.json`` or the weights are missing.
            ValueError: The data no longer matches the saved vocabularies.
        """
        model_dir = Path(model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{config_path} not found: expected the output directory of `tfrec train`"
            )
        config = RetrievalExperimentConfig.load(config_path)
        if data_dir is not None:
            config.data.data_dir = data_dir
        experiment = cls(config, output_dir=model_dir)
        for name, vocab in (("user", experiment.user_vocab), ("item", experiment.item_vocab)):
            saved = IdVocabulary.load(model_dir / f"{name}_vocab.txt", name=name)
            if saved.tokens != vocab.tokens:
                raise ValueError(
                    f"{model_dir / f'{name}_vocab.txt'}: the {name} ids of the reloaded data "
                    f"({len(vocab.tokens)}) differ from those the model was trained with "
                    f"({len(saved.tokens)}); pass the same dataset/--data-dir as for training"
                )
        weights = model_dir / "weights" / "model"
        if not Path(f"{weights}.index").is_file():
            raise FileNotFoundError(f"{weights}.index not found: the model was not saved")
        experiment.model.load_weights(str(weights)).expect_partial()
        metrics_path = model_dir / "metrics.json"
        if metrics_path.is_file():
            experiment.metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        return experiment

    # ------------------------------------------------------------------ queries
    def queries(self, part: str) -> EvalQueries:
        """Evaluation queries for ``"valid"`` or ``"test"`` (cached)."""
        if part not in self._queries:
            split = self.split
            if part == "valid":
                if split.valid is None:
                    raise ValueError("this split has no validation part")
                context, held = split.train, split.valid
            elif part == "test":
                context, held = concat_parts(split.train, split.valid), split.test
            else:
                raise ValueError(f"part={part!r}; expected 'valid' or 'test'")
            queries = eval_queries(
                context, held, self.user_vocab, self.item_vocab, self.config.model.max_history
            )
            if part == "valid":
                queries = queries.sample(
                    self.config.evaluation.valid_max_users, self.config.data.seed
                )
            self._queries[part] = queries
        return self._queries[part]

    def _score_fn(self, queries: EvalQueries):
        """``rows [b] -> scores [b, I]`` over ``queries`` (one traced graph per experiment)."""
        if self._score_graph is None:
            max_len = self.config.model.max_history
            self._score_graph = tf.function(
                lambda user, history, candidates: self.model.score(
                    user, history, candidates=candidates
                ),
                input_signature=[
                    tf.TensorSpec([None], tf.int32),  # user [B]
                    tf.TensorSpec([None, max_len], tf.int32),  # history [B, L]
                    tf.TensorSpec([None, None], tf.float32),  # candidates [I, D]
                ],
            )
        candidates = self.model.candidate_embeddings()  # [I, D], once per evaluation

        def score_fn(rows: np.ndarray) -> np.ndarray:
            return self._score_graph(queries.users[rows], queries.history[rows], candidates).numpy()

        return score_fn

    def evaluate_part(
        self, part: str = "test", log_every_s: float = 30.0, extras: bool = True
    ) -> dict[str, float]:
        """Full-ranking metrics on one split part, prefixed with the part name.

        ``evaluation.mask`` picks the reports: ``history`` gives keys such as
        ``"test/ndcg@10"`` (history removed from the ranking, a repeated held-out
        item is a miss), ``none`` gives ``"test_unmasked/ndcg@10"`` (history
        rankable), ``both`` gives both. With ``sampled_negatives`` also
        ``"test_sampled/..."`` (``"test_sampled_unmasked/..."``). See
        :func:`~tfrec.training.experiment.protocol_metrics` for the counts.
        ``extras=False`` computes only the first full-ranking report, as the
        per-epoch early-stopping evaluation does.
        """
        cfg = self.config.evaluation
        queries = self.queries(part)
        score_fn = self._score_fn(queries)
        kinds = ("", "_sampled") if extras and cfg.sampled_negatives > 0 else ("",)
        out: dict[str, float] = {}
        for masked in cfg.masked_protocols if extras else cfg.masked_protocols[:1]:
            for kind in kinds:
                metrics = protocol_metrics(
                    score_fn, queries, cfg, masked=masked, sampled=bool(kind),
                    item_counts=self.item_counts, seed=self.config.data.seed,
                    log_every_s=log_every_s,
                )  # fmt: skip
                out.update(_prefixed(f"{part}{kind}{MASK_SUFFIX[masked]}", metrics))
        return out

    # ------------------------------------------------------------------ training
    def fit(self, epochs: int | None = None, verbose: int | str = "auto") -> dict[str, list[float]]:
        """Trains with early stopping on validation ``config.model.monitor``.

        Args:
            epochs: Overrides ``config.model.epochs``.
            verbose: Keras verbosity (progress bar on a terminal, else log lines).

        Returns:
            The Keras history dict (loss and validation metrics per epoch).
        """
        cfg = self.config.model
        epochs = cfg.epochs if epochs is None else epochs
        dataset = self._train_dataset()
        callbacks: list[tf.keras.callbacks.Callback] = [ProgressLogger()]
        if self.split.valid is not None and len(self.split.valid) > 0:
            callbacks.insert(
                0,
                MetricEarlyStopping(
                    self._validation_metrics,
                    monitor=cfg.monitor,
                    patience=cfg.patience,
                    restore_best_weights=True,
                ),
            )
        else:
            logger.warning("no validation part: training %d epochs without early stopping", epochs)
        if self.output_dir is not None:
            callbacks += output_callbacks(self.output_dir)
        logger.info(
            "training %s on %d examples (%d users), batch %d, up to %d epochs",
            cfg.encoder,
            self.num_examples,
            len(self.train_seqs),
            cfg.batch_size,
            epochs,
        )
        start = time.perf_counter()
        history = self.model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=verbose)
        self.train_seconds += time.perf_counter() - start
        self.history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        return self.history

    def _validation_metrics(self) -> dict[str, float]:
        """The few validation metrics logged after each epoch (monitor included).

        They come from the first report of ``evaluation.mask``, with the same
        denominator as the test metrics (every validation user with a held-out item).
        """
        metrics = self.evaluate_part("valid", log_every_s=60, extras=False)  # one report
        keep = {self.config.model.monitor, "ndcg@10", "hr@10", "recall@10", "mrr"}
        plain = {key.split("/", 1)[1]: value for key, value in metrics.items()}
        return {key: value for key, value in plain.items() if key in keep}

    def evaluate(self) -> dict[str, float]:
        """Test metrics (plus validation ones when a validation part exists)."""
        metrics: dict[str, float] = {}
        if self.split.valid is not None and len(self.split.valid) > 0:
            metrics.update(self.evaluate_part("valid"))
        metrics.update(self.evaluate_part("test"))
        metrics["train_seconds"] = round(self.train_seconds, 2)
        metrics["epochs_run"] = float(len(self.history.get("loss", [])))
        self.metrics = metrics
        for key in (f"test/ndcg@{k}" for k in (10, 20)):
            if key in metrics:
                logger.info("%s = %.4f", key, metrics[key])
        return metrics

    # ------------------------------------------------------------------ export / io
    def export(self, base_dir: str | Path, version: int | None = None) -> Path:
        """Writes a TF Serving SavedModel ``<base_dir>/<model_name>/<version>/``."""
        from tfrec.export.retrieval import export_retrieval  # noqa: PLC0415

        extra = {"tfrec_config.json": self.config.to_json(), "metrics.json": self._metrics_json()}
        if self.data.items is not None:
            titles = dict(zip(self.data.items["item_id"], self.data.items["title"], strict=True))
            extra["item_titles.json"] = json.dumps(titles, ensure_ascii=False)
        path = export_retrieval(
            self.model,
            self.user_vocab,
            self.item_vocab,
            base_dir,
            model_name=self.config.model_name,
            version=version,
            assets_extra={"tf_serving_warmup_requests": self._warmup_records()},
            extra_files=extra,
        )
        logger.info("exported SavedModel to %s", path)
        return path

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

    def _metrics_json(self) -> str:
        return json.dumps(self.metrics, indent=2, sort_keys=True) + "\n"

    def save(self, output_dir: str | Path | None = None) -> Path:
        """Writes config, metrics, vocabularies, item features and weights."""
        out = Path(output_dir or self.output_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        self.config.save(out / "config.json")
        atomic_write_text(out / "metrics.json", self._metrics_json())
        self.user_vocab.save(out / "user_vocab.txt")
        self.item_vocab.save(out / "item_vocab.txt")
        self.model.save_weights(str(out / "weights" / "model"))
        return out
