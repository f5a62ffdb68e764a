"""The LSTM ranker as an experiment: data -> split -> fit -> evaluate -> save -> export.

The ``"ranking"`` kind of the :mod:`~tfrec.training.experiment` contract
(``tfrec train --model ranking``), also the second stage of a pipeline run::

    config = RankingExperimentConfig.for_dataset("ml-100k")   # rating regression
    experiment = RankingExperiment(config, output_dir="runs/r1")
    experiment.fit()                  # early stopping on validation RMSE (or NDCG@K)
    experiment.evaluate()             # {"test/rmse": ..., "valid/rmse": ...}
    experiment.save()                 # the common RunLayout + data_spec.json, item_features.npz

Training examples are the train events with their history from train;
validation examples the ``valid`` events with history from train (or, without a
``valid`` part, each user's most recent training examples, about
``validation_fraction`` of them: :func:`tfrec.data.ranking_lists.split_validation`).
Next-item training lists are the true item plus ``num_negatives`` negatives
re-drawn every epoch (seeded); evaluation is :mod:`tfrec.evaluation.ranker`.
:func:`train_ranker` is the same on a given split, returning the trained state.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.item_features import build_item_feature_tables
from tfrec.data.ranking_examples import RankingExamples, build_ranking_examples
from tfrec.data.ranking_lists import ranker_datasets, split_validation
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary, build_vocabularies
from tfrec.evaluation.config import prefixed
from tfrec.evaluation.ranker import evaluate_ranker, list_metrics
from tfrec.models.ranker_state import (
    TrainedRanker,
    build_ranker,
    load_trained_ranker,
    save_ranker_files,
)
from tfrec.models.ranking import RankerDataSpec, RankingConfig
from tfrec.models.two_stage import RetrievalScorer
from tfrec.training.checkpoints import TrainingState
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
from tfrec.training.privacy import PrivateTraining
from tfrec.training.ranking_config import RankingExperimentConfig
from tfrec.training.strategy import configure_precision, get_strategy

logger = logging.getLogger(__name__)


def data_spec(
    train: Interactions, user_vocab: IdVocabulary, item_vocab: IdVocabulary
) -> RankerDataSpec:
    """Sizes and signal statistics of the training data."""
    ratings = train.frame["rating"].to_numpy(dtype=np.float64)
    ratings = ratings[np.isfinite(ratings)]
    has_ratings = bool(train.has_ratings and ratings.size)
    examples = build_ranking_examples(train, user_vocab, item_vocab, 1)
    log_dt = examples.history_log_dt[:, 0][examples.history[:, 0] > 0].astype(np.float64)
    return RankerDataSpec(
        num_users=user_vocab.size,
        num_items=item_vocab.size,
        rating_mean=float(ratings.mean()) if has_ratings else 0.0,
        use_rating_signal=has_ratings,
        use_time_signal=bool(train.has_timestamps and log_dt.size),
        rating_scale=float(max(ratings.std(), 1e-3)) if has_ratings else 1.0,
        log_dt_mean=float(log_dt.mean()) if log_dt.size else 0.0,
        log_dt_scale=float(max(log_dt.std(), 1e-3)) if log_dt.size else 1.0,
    )


@register_experiment("ranking")
class RankingExperiment(ExperimentBase):
    """Trains, evaluates, saves and exports an :class:`~tfrec.models.ranking.LSTMRanker`.

    Args:
        config: The experiment (``kind="ranking"``).
        output_dir: The run directory (None: nothing written until :meth:`save`).
        data: Already-loaded interactions (default ``config.data.load()``, on first use).
        split: A precomputed split (default ``config.data.make_split(data)``).
        user_vocab: User vocabulary (default: built over every part of the split).
        item_vocab: Item vocabulary; pass the retrieval model's to combine them.
        retrieval: Retrieval scorer, required for ``negative_sampling="hard"``.
        state: An already trained ranker (what :meth:`from_dir` passes); the
            data is then loaded only when evaluating.

    Attributes:
        trained: The ranker's trained state (model, config, vocabularies, tables).

    Raises:
        ValueError: Another kind, a rating objective on data without ratings, or
            hard negatives without a retrieval scorer.
    """

    kind: ClassVar[str] = "ranking"
    exports: ClassVar[tuple[str, ...]] = ("ranking",)
    config_class: ClassVar[type[RankingExperimentConfig]] = RankingExperimentConfig

    def __init__(
        self,
        config: RankingExperimentConfig,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        data: Interactions | None = None,
        split: Split | None = None,
        user_vocab: IdVocabulary | None = None,
        item_vocab: IdVocabulary | None = None,
        retrieval: RetrievalScorer | None = None,
        state: TrainedRanker | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ValueError(
                f"RankingExperiment: config.kind={config.kind!r}; expected 'ranking' "
                "(a pipeline config runs as PipelineExperiment)"
            )
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.retrieval = retrieval
        self._data = data
        self._split = split
        self.metrics: dict[str, float] = {}
        self.train_seconds = 0.0
        self.trained = state if state is not None else self._build(user_vocab, item_vocab)

    # ------------------------------------------------------------------ data
    @property
    def data(self) -> Interactions:
        """The interactions (loaded with ``config.data`` on first use)."""
        if self._data is None:
            self._data = self.config.data.load()
        return self._data

    @property
    def split(self) -> Split:
        """The split (made with ``config.data`` on first use)."""
        if self._split is None:
            self._split = self.config.data.make_split(self.data)
        return self._split

    @split.setter
    def split(self, split: Split) -> None:
        self._split = split

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-epoch training logs."""
        return self.trained.history

    def _check_trainable(self) -> None:
        cfg, split = self.config.ranking, self.split
        if self.config.data.train_user_fraction != 1.0:
            raise ValueError(
                f"DataConfig.train_user_fraction={self.config.data.train_user_fraction}: only "
                "the retrieval kind trains on a share of the users; use 1.0 for the ranker"
            )
        if cfg.objective == "rating" and not split.train.has_ratings:
            raise ValueError(
                f"objective='rating' needs ratings, but {split.train.name} has none; "
                "use objective='next_item'"
            )
        if (
            cfg.loss.negative_sampling == "hard"
            and cfg.objective == "next_item"
            and self.retrieval is None
        ):
            raise ValueError("negative_sampling='hard' needs a retrieval scorer (retrieval=...)")

    def _vocabularies_and_spec(
        self, user_vocab: IdVocabulary | None, item_vocab: IdVocabulary | None
    ) -> tuple[IdVocabulary, IdVocabulary, RankerDataSpec]:
        """Checks the data, fills the missing vocabularies, seeds Keras; the train part's spec.

        The vocabularies are built as retrieval's, so both kinds share item indices
        on the same data.
        """
        self._check_trainable()
        if user_vocab is None or item_vocab is None:
            users, items = build_vocabularies(concat_interactions(*self.split.parts().values()))
            user_vocab, item_vocab = user_vocab or users, item_vocab or items
        keras.utils.set_random_seed(self.config.ranking.training.seed)
        return user_vocab, item_vocab, data_spec(self.split.train, user_vocab, item_vocab)

    def _build(
        self, user_vocab: IdVocabulary | None, item_vocab: IdVocabulary | None
    ) -> TrainedRanker:
        """Vocabularies, data statistics, content tables and the compiled (untrained) model."""
        cfg, split = self.config.ranking, self.split
        user_vocab, item_vocab, spec = self._vocabularies_and_spec(user_vocab, item_vocab)
        if not cfg.use_event_signals:
            spec = dataclasses.replace(spec, use_rating_signal=False, use_time_signal=False)
        items_table = split.train.items
        tables = (
            build_item_feature_tables(items_table, item_vocab)
            if cfg.use_item_features and items_table is not None
            else None
        )
        configure_precision(cfg.training.mixed_precision)
        with get_strategy(cfg.training.strategy).scope():
            model = build_ranker(cfg, spec, tables)
            model.compile(
                optimizer=make_optimizer(cfg.optimizer), jit_compile=cfg.training.jit_compile
            )
        return TrainedRanker(model, cfg, spec, user_vocab, item_vocab, tables)

    def _examples(self) -> tuple[RankingExamples, RankingExamples]:
        """``(train, valid)`` ranking examples.

        Raises:
            ValueError: No training or no validation example.
        """
        cfg, split, trained = self.config.ranking, self.split, self.trained
        vocabs = (trained.user_vocab, trained.item_vocab)
        min_history = cfg.min_history if cfg.objective == "next_item" else 0
        train = build_ranking_examples(
            split.train, *vocabs, cfg.max_history, min_history=min_history
        )
        if split.valid is not None and len(split.valid):
            valid = build_ranking_examples(
                split.valid, *vocabs, cfg.max_history, context=split.train
            )
        else:
            train, valid = split_validation(train, cfg.validation_fraction, cfg.training.seed)
        if len(train) == 0 or len(valid) == 0:
            raise ValueError(
                f"{split.train.name}: {len(train)} training / {len(valid)} validation examples; "
                "need at least one of each"
            )
        return train, valid

    # ------------------------------------------------------------------ contract
    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: object) -> RankingExperimentConfig:
        """The preset of ``dataset`` (:meth:`RankingExperimentConfig.for_dataset`)."""
        return RankingExperimentConfig.for_dataset(dataset, kind=cls.kind, **data_kwargs)

    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Trains with early stopping on validation ``config.ranking.training.monitor``.

        By default RMSE (rating) or NDCG@K (next item).

        Args:
            epochs: Overrides ``config.ranking.training.epochs``.
            resume: Continue an interrupted run from ``output_dir``'s checkpoint.
            verbose: Keras verbosity (0: tfrec's one line per epoch only).

        Returns:
            The per-epoch logs (list metrics only on validation: ``val_auc``, ...).
        """
        self._check_trainable()
        cfg, model, spec = self.config.ranking, self.trained.model, self.trained.spec
        epochs = cfg.training.epochs if epochs is None else epochs
        layout = self._save_config()
        train, valid = self._examples()
        initial = TrainingState.read(layout).epoch if resume and layout is not None else 0
        train_ds, valid_features = ranker_datasets(
            cfg, spec, train, valid, self.retrieval, initial_epoch=initial
        )
        logger.info(
            "training ranker (%s): %d train / %d valid examples", cfg.objective, len(train),
            len(valid),
        )  # fmt: skip
        rating = cfg.objective == "rating"
        monitor, mode = cfg.training.monitor_mode(cfg.default_monitor())
        privacy = PrivateTraining.create(cfg.training, len(train))  # None: DP-SGD off
        start = time.perf_counter()
        history = fit_model(
            model, train_ds, epochs=epochs,
            evaluate_fn=lambda: list_metrics(model, cfg, valid_features),
            monitor=monitor, mode=mode, patience=cfg.training.patience,
            output_dir=self.output_dir, examples_per_step=cfg.training.batch_size,
            resume=resume, verbose=verbose, steps_per_epoch=cfg.training.steps_per_epoch,
            privacy=privacy,
        )  # fmt: skip
        self.train_seconds += time.perf_counter() - start
        if privacy is not None:
            self.metrics.update(privacy.report())
        skipped = () if rating else ("auc", f"ndcg@{cfg.ndcg_k}")
        # list metrics are not computed in training steps (only on validation)
        self.trained.history = {k: v for k, v in history.items() if k not in skipped}
        return self.trained.history

    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Metrics of ``parts`` (default: valid when the split has it, and test).

        Keys ``<part>/rmse``, ``<part>/mae`` (rating) or ``<part>/auc``,
        ``<part>/ndcg@K`` (next item) and ``<part>/examples``, plus
        ``train_seconds`` and ``epochs_run``; merged into :attr:`metrics`.
        """
        if parts is None:
            has_valid = self.split.valid is not None and len(self.split.valid) > 0
            parts = ("valid", "test") if has_valid else ("test",)
        metrics: dict[str, float] = {}
        for part in parts:
            metrics.update(prefixed(part, evaluate_ranker(self.trained, self.split, part=part)))
        return self._finish_report(metrics, self.history)

    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes the run: the common layout plus ``data_spec.json`` (+ ``item_features.npz``)."""
        layout = self._save_layout(output_dir)
        trained = self.trained
        save_model_run(
            layout, dataclasses.replace(self.config, ranking=trained.config), metrics=self.metrics,
            vocabs=(trained.user_vocab, trained.item_vocab), model=trained.model,
            history=trained.history,
        )  # fmt: skip
        save_ranker_files(trained, layout.root)
        return layout.root

    def _export(self, request: ExportRequest) -> list[Path]:
        """Writes the ranking SavedModel ``<base_dir>/<ranking_model_name>/<version>/``."""
        from tfrec.export.ranking import export_ranking  # noqa: PLC0415

        path = export_ranking(
            self.trained,
            request.base_dir,
            model_name=request.model_name or self.config.ranking_model_name,
            version=request.version,
            extra_files=export_extra_files(self.metrics, None),
            experiment_config=self.config.to_dict(),
        )
        logger.info("exported the ranker to %s", path)
        return [path]

    @classmethod
    def from_dir(
        cls, run_dir: str | os.PathLike[str], data_dir: str | None = None
    ) -> RankingExperiment:
        """Reopens a ranking run :meth:`save` wrote (the data is loaded when evaluating).

        Raises:
            FileNotFoundError: ``config.json``, a vocabulary, ``data_spec.json``
                or the weights are missing.
            ValueError: The config is not a ranking run's.
        """
        layout, config = read_run_config(run_dir, RankingExperimentConfig, data_dir)
        state = load_trained_ranker(
            layout.root,
            config.ranking,
            user_vocab=IdVocabulary.load(layout.user_vocab, name="user"),
            item_vocab=IdVocabulary.load(layout.item_vocab, name="item"),
            weights=layout.weights,
            history=read_json(layout.history, {}),
        )
        experiment = cls(config, output_dir=layout.root, state=state)
        experiment._restore_metrics(layout)
        return experiment


def train_ranker(
    split: Split,
    config: RankingConfig,
    *,
    user_vocab: IdVocabulary | None = None,
    item_vocab: IdVocabulary | None = None,
    retrieval: RetrievalScorer | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    verbose: int = 0,
) -> TrainedRanker:
    """A :class:`RankingExperiment` on a given split: fit (and save), return the ranker.

    Args:
        split: The data split.
        config: Hyper-parameters (``objective`` picks rating or next-item).
        user_vocab: User vocabulary (default: built over every part of ``split``).
        item_vocab: Item vocabulary; pass the retrieval model's to combine them.
        retrieval: Retrieval scorer, required for ``negative_sampling="hard"``.
        model_dir: If given, the run directory (checkpoints, TensorBoard, and the
            saved run; its ``config.json`` records the default data config, as
            the split was given directly).
        verbose: Keras ``fit`` verbosity.

    Returns:
        The trained ranker (best validation weights restored).
    """
    experiment = RankingExperiment(
        RankingExperimentConfig(ranking=config), model_dir, split=split,
        user_vocab=user_vocab, item_vocab=item_vocab, retrieval=retrieval,
    )  # fmt: skip
    experiment.fit(verbose=verbose)
    if model_dir is not None:
        experiment.save(model_dir)
    return experiment.trained
