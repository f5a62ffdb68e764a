"""Train, evaluate, save and load the LSTM ranker; evaluate the two-stage pipeline.

Used by the CLI, benchmarks and notebooks::

    trained = train_ranker(split, RankingConfig(objective="rating"), model_dir="runs/r1")
    metrics = evaluate_ranker(trained, split)                 # rmse/mae or auc/ndcg@K
    both = evaluate_two_stage(trained, retrieval_scorer, split)  # tfrec.training.two_stage

``split`` is a :class:`tfrec.data.splits.Split` (``train``, ``valid`` (may be
None) and ``test`` :class:`~tfrec.data.interactions.Interactions`).

Examples (see :mod:`tfrec.data.ranking_examples`): training examples are the
train events with their history from train; validation examples are the
``valid`` events with history from train (or, without a ``valid`` split, each
user's most recent training examples, about ``validation_fraction`` of them,
held out from training: :func:`tfrec.training.ranking_data.split_validation`);
test examples are the ``test`` events with history from train + valid.
Next-item training lists are the true item plus ``num_negatives`` negatives
re-sampled every epoch (seeded); evaluation lists are the true item plus
``eval_negatives`` uniform negatives drawn once with ``seed``. The true item is
the **last** column of a list, so a model that ties everything gets no
credit from the tie order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import atomic_write_text
from tfrec.data.interactions import Interactions
from tfrec.data.ranking_examples import (
    RankingExamples,
    build_ranking_examples,
    eval_lists,
    rating_features,
)
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation import list_ndcg, mae, mean_list_auc, rmse
from tfrec.layers.towers import ItemFeatureTables, ItemTower, build_item_feature_tables
from tfrec.models.ranking import LSTMRanker, RankerDataSpec, RankingConfig
from tfrec.models.two_stage import RetrievalScorer
from tfrec.training.callbacks import (
    MetricEarlyStopping,
    ProgressLogger,
    make_checkpoint_callback,
    make_tensorboard_callback,
)
from tfrec.training.experiment import build_vocabularies as dataset_vocabularies
from tfrec.training.experiment import concat_parts
from tfrec.training.ranking_data import ranker_datasets, split_validation
from tfrec.training.strategy import get_strategy

logger = logging.getLogger(__name__)

FEATURE_KEYS = ("user", "history", "history_rating", "history_log_dt")
_SCORE_FUNCTIONS: weakref.WeakKeyDictionary[LSTMRanker, Any] = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class TrainedRanker:
    """A trained ranker with everything needed to evaluate, save or export it.

    Attributes:
        model: The Keras model.
        config: Its hyper-parameters.
        spec: Vocabulary sizes and signal scales.
        user_vocab: User vocabulary (index = model user input).
        item_vocab: Item vocabulary (index = model item input).
        tables: Item content tables (None when content features are off).
        history: Keras training history (per-epoch logs).
    """

    model: LSTMRanker
    config: RankingConfig
    spec: RankerDataSpec
    user_vocab: IdVocabulary
    item_vocab: IdVocabulary
    tables: ItemFeatureTables | None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def build_vocabularies(split: Split) -> tuple[IdVocabulary, IdVocabulary]:
    """User and item vocabularies over all parts of ``split`` and its item table.

    Same construction as the retrieval runner
    (:func:`tfrec.training.experiment.build_vocabularies`), so a ranker and a
    retrieval model trained on the same data share item indices.
    """
    return dataset_vocabularies(concat_parts(split.train, split.valid, split.test))


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


def build_ranker(
    config: RankingConfig, spec: RankerDataSpec, tables: ItemFeatureTables | None = None
) -> LSTMRanker:
    """Creates an (untrained) LSTMRanker with the shared ItemTower."""
    tower = ItemTower(
        spec.num_items,
        config.embedding_dim,
        genre_table=tables.genres if tables is not None else None,
        title_table=tables.titles if tables is not None else None,
        title_vocab_size=tables.title_vocab_size if tables is not None else 0,
        l2=config.l2,
        name="item_tower",
    )
    return LSTMRanker(config, spec, item_tower=tower)


def validation_metrics(
    model: LSTMRanker, config: RankingConfig, features: dict[str, np.ndarray]
) -> dict[str, float]:
    """Validation metrics from the evaluation module (``rmse``/``mae`` or ``auc``/``ndcg@K``)."""
    scores = predict_scores(model, features, batch_size=max(config.batch_size, 1024))
    labels = features["labels"]
    if config.objective == "rating":
        return {"rmse": rmse(labels, scores), "mae": mae(labels, scores)}
    return {
        "auc": mean_list_auc(labels, scores),
        f"ndcg@{config.ndcg_k}": list_ndcg(labels, scores, config.ndcg_k),
    }


def _callbacks(
    model: LSTMRanker,
    config: RankingConfig,
    valid_features: dict[str, np.ndarray],
    model_dir: Path | None,
    extra: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """Early stopping on a validation metric (+ checkpoints, TensorBoard, progress)."""
    monitor = "rmse" if config.objective == "rating" else f"ndcg@{config.ndcg_k}"
    mode = "min" if config.objective == "rating" else "max"
    callbacks: list[keras.callbacks.Callback] = [
        MetricEarlyStopping(
            lambda: validation_metrics(model, config, valid_features),
            monitor=monitor,
            patience=config.early_stopping_patience,
            mode=mode,
        ),
        ProgressLogger(examples_per_step=config.batch_size),
    ]
    if model_dir is not None:
        callbacks.append(make_checkpoint_callback(model_dir, monitor=f"val_{monitor}", mode=mode))
        callbacks.append(make_tensorboard_callback(model_dir))
    callbacks.extend(extra)
    return callbacks


def train_ranker(
    split: Split,
    config: RankingConfig,
    *,
    user_vocab: IdVocabulary | None = None,
    item_vocab: IdVocabulary | None = None,
    retrieval: RetrievalScorer | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> TrainedRanker:
    """Trains an LSTMRanker on ``split.train`` with early stopping on validation.

    Args:
        split: The data split.
        config: Hyper-parameters (``objective`` picks rating or next-item).
        user_vocab: User vocabulary (default :func:`build_vocabularies`).
        item_vocab: Item vocabulary; pass the retrieval model's to combine them.
        retrieval: Retrieval scorer, required for ``negative_sampling="hard"``.
        model_dir: If given: TensorBoard logs, best checkpoint, and the saved
            ranker (:func:`save_ranker`) are written there.
        callbacks: Extra Keras callbacks (e.g. a progress logger).
        verbose: Keras ``fit`` verbosity.

    Returns:
        The trained ranker (best validation weights restored).

    Raises:
        ValueError: A rating objective on data without ratings, hard negatives
            without a retrieval scorer, or no training example.
    """
    if config.objective == "rating" and not split.train.has_ratings:
        raise ValueError(
            f"objective='rating' needs ratings, but {split.train.name} has none; "
            "use objective='next_item'"
        )
    if config.negative_sampling == "hard" and config.objective == "next_item" and retrieval is None:
        raise ValueError("negative_sampling='hard' needs a retrieval scorer (retrieval=...)")
    if user_vocab is None or item_vocab is None:
        default_users, default_items = build_vocabularies(split)
        user_vocab = user_vocab or default_users
        item_vocab = item_vocab or default_items
    keras.utils.set_random_seed(config.seed)
    spec = data_spec(split.train, user_vocab, item_vocab)
    if not config.use_event_signals:
        spec = dataclasses.replace(spec, use_rating_signal=False, use_time_signal=False)
    items_table = split.train.items
    tables = (
        build_item_feature_tables(items_table, item_vocab)
        if config.use_item_features and items_table is not None
        else None
    )
    min_history = config.min_history if config.objective == "next_item" else 0
    train = build_ranking_examples(
        split.train, user_vocab, item_vocab, config.max_history, min_history=min_history
    )
    if split.valid is not None and len(split.valid):
        valid = build_ranking_examples(
            split.valid, user_vocab, item_vocab, config.max_history, context=split.train
        )
    else:
        train, valid = split_validation(train, config.validation_fraction, config.seed)
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(
            f"{split.train.name}: {len(train)} training / {len(valid)} validation examples; "
            "need at least one of each"
        )
    with get_strategy().scope():
        model = build_ranker(config, spec, tables)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))

    train_ds, valid_features = ranker_datasets(config, spec, train, valid, retrieval)

    out_dir = Path(model_dir) if model_dir is not None else None
    cbs = _callbacks(model, config, valid_features, out_dir, callbacks)
    logger.info(
        "training ranker (%s): %d train / %d valid examples",
        config.objective,
        len(train),
        len(valid),
    )
    fit = model.fit(train_ds, epochs=config.epochs, callbacks=cbs, verbose=verbose)
    skipped = () if config.objective == "rating" else ("auc", f"ndcg@{config.ndcg_k}")
    history = {  # list metrics are not computed in training steps (only on validation)
        key: [float(v) for v in values] for key, values in fit.history.items() if key not in skipped
    }
    trained = TrainedRanker(model, config, spec, user_vocab, item_vocab, tables, history)
    if out_dir is not None:
        save_ranker(trained, out_dir)
    return trained


def predict_scores(
    model: LSTMRanker, features: dict[str, np.ndarray], batch_size: int = 1024
) -> np.ndarray:
    """Ranker scores ``[N, C]`` for numpy features (batched, inference mode)."""
    keys = [*FEATURE_KEYS, "candidates"]
    inputs = {k: features[k] for k in keys if k in features}
    out = []
    score = _SCORE_FUNCTIONS.get(model)
    if score is None:  # one traced function per model, reused by every call
        score = tf.function(lambda f: model(f, training=False), reduce_retracing=True)
        _SCORE_FUNCTIONS[model] = score
    for start in range(0, len(inputs["candidates"]), batch_size):
        out.append(score({k: v[start : start + batch_size] for k, v in inputs.items()}).numpy())
    return np.concatenate(out, axis=0)


def evaluation_examples(
    trained: TrainedRanker, split: Split, max_history: int | None = None, part: str = "test"
) -> RankingExamples:
    """Examples of ``split.test`` (history from train + valid) or ``split.valid`` (from train).

    Raises:
        ValueError: ``part`` is not ``"test"``/``"valid"``, or the split has no valid part.
    """
    if part not in ("test", "valid"):
        raise ValueError(f"part={part!r}; expected 'test' or 'valid'")
    context = split.train
    if part == "valid":
        if split.valid is None or not len(split.valid):
            raise ValueError(f"part='valid' but the {split.protocol} split has no validation part")
        events = split.valid
    else:
        events = split.test
        if split.valid is not None and len(split.valid):
            context = concat_parts(split.train, split.valid)
    return build_ranking_examples(
        events,
        trained.user_vocab,
        trained.item_vocab,
        max_history or trained.config.max_history,
        context=context,
    )


def evaluate_ranker(trained: TrainedRanker, split: Split) -> dict[str, float]:
    """Test metrics of the ranker alone.

    Rating objective: ``rmse`` and ``mae`` of predictions clipped to the
    training rating range. Next-item objective: ``auc`` (mean per-list AUC) and
    ``ndcg@K`` of the evaluation lists (true item + ``eval_negatives`` uniform
    negatives).

    Returns:
        Metrics plus ``examples`` (the number of test examples).
    """
    examples = evaluation_examples(trained, split)
    config = trained.config
    if config.objective == "rating":
        features = rating_features(examples)
        known = np.isfinite(examples.rating)
        ratings = split.train.frame["rating"].to_numpy(dtype=np.float64)
        low, high = np.nanmin(ratings), np.nanmax(ratings)
        predicted = predict_scores(trained.model, features)[:, 0].clip(low, high)
        return {
            "rmse": rmse(examples.rating[known], predicted[known]),
            "mae": mae(examples.rating[known], predicted[known]),
            "examples": float(known.sum()),
        }
    lists = eval_lists(examples, trained.spec.num_items, config.eval_negatives, config.seed)
    scores = predict_scores(trained.model, lists)
    return {
        "auc": mean_list_auc(lists["labels"], scores),
        f"ndcg@{config.ndcg_k}": list_ndcg(lists["labels"], scores, config.ndcg_k),
        "examples": float(len(lists["labels"])),
    }


def save_ranker(trained: TrainedRanker, model_dir: str | os.PathLike[str]) -> None:
    """Writes the ranker into ``model_dir``.

    Files: ``ranking_config.json``, ``data_spec.json``, ``user_vocab.txt``,
    ``item_vocab.txt``, ``item_features.npz`` (with content tables),
    ``weights/ranker*`` and ``history.json`` (``config.json`` is left to the
    caller's experiment config).
    """
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    trained.config.save(out / "ranking_config.json")
    trained.spec.save(out / "data_spec.json")
    trained.user_vocab.save(out / "user_vocab.txt")
    trained.item_vocab.save(out / "item_vocab.txt")
    if trained.tables is not None:
        _save_tables(trained.tables, out / "item_features.npz")
    staging = Path(tempfile.mkdtemp(prefix=".weights-", dir=out))  # complete weights or none
    try:
        trained.model.save_weights(str(staging / "ranker"))
        if (out / "weights").exists():
            shutil.rmtree(out / "weights")
        os.replace(staging, out / "weights")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_text(out / "history.json", json.dumps(trained.history, indent=2) + "\n")


def load_ranker(model_dir: str | os.PathLike[str]) -> TrainedRanker:
    """Restores a ranker written by :func:`save_ranker`.

    Raises:
        FileNotFoundError: A file of the model directory is missing.
    """
    src = Path(model_dir)
    config = RankingConfig.load(src / "ranking_config.json")
    spec = RankerDataSpec.load(src / "data_spec.json")
    tables = (
        _load_tables(src / "item_features.npz") if (src / "item_features.npz").exists() else None
    )
    model = build_ranker(config, spec, tables)
    model.load_weights(str(src / "weights" / "ranker")).expect_partial()
    history_path = src / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else {}
    return TrainedRanker(
        model,
        config,
        spec,
        IdVocabulary.load(src / "user_vocab.txt", name="user"),
        IdVocabulary.load(src / "item_vocab.txt", name="item"),
        tables,
        history,
    )


def _save_tables(tables: ItemFeatureTables, path: Path) -> None:
    arrays: dict[str, Any] = {
        "genre_names": np.array(tables.genre_names, dtype=str),
        "title_vocabulary": np.array(tables.title_vocabulary, dtype=str),
    }
    if tables.genres is not None:
        arrays["genres"] = tables.genres
    if tables.titles is not None:
        arrays["titles"] = tables.titles
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_tables(path: Path) -> ItemFeatureTables:
    with np.load(path) as data:
        return ItemFeatureTables(
            genres=data.get("genres"),
            genre_names=[str(g) for g in data["genre_names"]],
            titles=data.get("titles"),
            title_vocabulary=[str(t) for t in data["title_vocabulary"]],
        )
