"""Offline evaluation of the LSTM ranker on its own (RMSE/MAE, or AUC/NDCG of candidate lists).

Examples (see :mod:`tfrec.data.ranking_examples`): test examples are the
``test`` events with their history from train + valid; validation examples the
``valid`` events with history from train. Rating objective: RMSE and MAE of the
predictions clipped to the training rating range. Next-item objective: mean
per-list AUC and NDCG@K of evaluation lists (the true item + ``eval_negatives``
uniform negatives drawn once with the config's seed; the true item is the
**last** column, so a model that ties everything gets no credit from the order).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.interactions import concat_interactions
from tfrec.data.ranking_examples import (
    RankingExamples,
    build_ranking_examples,
    eval_lists,
    rating_features,
)
from tfrec.data.splits import Split
from tfrec.evaluation.rating import list_ndcg, mae, mean_list_auc, rmse
from tfrec.models.ranker_state import TrainedRanker
from tfrec.models.ranking import LSTMRanker, RankingConfig

#: The ranker's per-example input features (``candidates`` comes with the lists).
FEATURE_KEYS = ("user", "history", "history_rating", "history_log_dt")
EVAL_PARTS = ("test", "valid")
_SCORE_FUNCTIONS: weakref.WeakKeyDictionary[LSTMRanker, Any] = weakref.WeakKeyDictionary()


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


def list_metrics(
    model: LSTMRanker, config: RankingConfig, features: dict[str, np.ndarray]
) -> dict[str, float]:
    """``rmse``/``mae`` (rating) or ``auc``/``ndcg@K`` (next item) of labelled features.

    The per-epoch validation metrics of ranker training (no clipping, every row).
    """
    scores = predict_scores(model, features, batch_size=max(config.training.batch_size, 1024))
    labels = features["labels"]
    if config.objective == "rating":
        return {"rmse": rmse(labels, scores), "mae": mae(labels, scores)}
    return {
        "auc": mean_list_auc(labels, scores),
        f"ndcg@{config.ndcg_k}": list_ndcg(labels, scores, config.ndcg_k),
    }


def evaluation_examples(
    trained: TrainedRanker, split: Split, max_history: int | None = None, part: str = "test"
) -> RankingExamples:
    """Examples of ``split.test`` (history from train + valid) or ``split.valid`` (from train).

    Raises:
        ValueError: ``part`` is not ``"test"``/``"valid"``, or the split has no valid part.
    """
    if part not in EVAL_PARTS:
        raise ValueError(f"part={part!r}; expected one of {list(EVAL_PARTS)}")
    context = split.train
    if part == "valid":
        if split.valid is None or not len(split.valid):
            raise ValueError(f"part='valid' but the {split.protocol} split has no validation part")
        events = split.valid
    else:
        events = split.test
        if split.valid is not None and len(split.valid):
            context = concat_interactions(split.train, split.valid)
    return build_ranking_examples(
        events,
        trained.user_vocab,
        trained.item_vocab,
        max_history or trained.config.max_history,
        context=context,
    )


def evaluate_ranker(trained: TrainedRanker, split: Split, part: str = "test") -> dict[str, float]:
    """Metrics of the ranker alone on one split part (see the module docstring).

    Returns:
        ``rmse``, ``mae`` (rating) or ``auc``, ``ndcg@K`` (next item), plus
        ``examples`` (the number of examples scored).
    """
    examples = evaluation_examples(trained, split, part=part)
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
    seed = config.training.seed
    lists = eval_lists(examples, trained.spec.num_items, config.eval_negatives, seed)
    scores = predict_scores(trained.model, lists)
    return {
        "auc": mean_list_auc(lists["labels"], scores),
        f"ndcg@{config.ndcg_k}": list_ndcg(lists["labels"], scores, config.ndcg_k),
        "examples": float(len(lists["labels"])),
    }
