"""Two-stage evaluation: retrieval alone vs retrieval -> ranker, same full-ranking protocol."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation import evaluate_full_ranking
from tfrec.models.two_stage import RetrievalScorer, TwoStageRecommender
from tfrec.training.ranking import FEATURE_KEYS, TrainedRanker, evaluation_examples


def evaluate_two_stage(
    trained: TrainedRanker,
    retrieval: RetrievalScorer,
    split: Split,
    *,
    num_candidates: int | None = None,
    retrieval_user_vocab: IdVocabulary | None = None,
    ks: Sequence[int] = (1, 5, 10, 20, 50, 100),
    batch_size: int = 256,
) -> dict[str, dict[str, float]]:
    """Full-ranking metrics of retrieval alone and of retrieval -> ranker, same examples.

    Both rank the whole catalogue minus the user's train (+ valid) history (the
    evaluation module's exclusion); the two-stage ranking is
    :meth:`TwoStageRecommender.score_matrix`, so a true item outside the
    retrieved N is a miss for every ``K <= N``.

    Args:
        trained: The ranker (its item vocabulary must be the retrieval model's).
        retrieval: Stage-1 scorer.
        split: The split; queries are the ``test`` events.
        num_candidates: N (default ``trained.config.num_candidates``).
        retrieval_user_vocab: The retrieval model's user vocabulary when it differs
            from the ranker's (user indices are translated through the ids).
        ks: Cutoffs.
        batch_size: Queries per batch.

    Returns:
        ``{"retrieval": {...}, "two_stage": {...}}`` with the evaluation module's keys.
    """
    pipeline = TwoStageRecommender(
        retrieval,
        trained.model,
        num_candidates=num_candidates or trained.config.num_candidates,
        ranker_history=trained.config.max_history,
    )
    length = max(trained.config.max_history, retrieval.max_history)
    examples = evaluation_examples(trained, split, max_history=length)
    features = {k: v for k, v in examples.features().items() if k in FEATURE_KEYS}
    if retrieval_user_vocab is not None:
        tokens = np.array(trained.user_vocab.all_tokens(), dtype=object)[examples.user]
        features["retrieval_user"] = retrieval_user_vocab.lookup(tokens)
    seen = examples.seen_items()
    relevant = [np.array([i]) for i in examples.item]
    num_items = trained.spec.num_items

    def batch(rows: np.ndarray) -> tuple[dict[str, np.ndarray], tf.Tensor]:
        batch_features = {k: v[rows] for k, v in features.items()}
        mask = np.zeros((len(rows), num_items), dtype=bool)
        for j, row in enumerate(rows):
            mask[j, seen[row]] = True
        return batch_features, tf.constant(mask)

    @tf.function(reduce_retracing=True)
    def retrieval_scores(f: dict[str, tf.Tensor]) -> tf.Tensor:
        return retrieval(f)

    @tf.function(reduce_retracing=True)
    def two_stage_scores(f: dict[str, tf.Tensor], exclude: tf.Tensor) -> tf.Tensor:
        return pipeline.score_matrix(f, exclude=exclude)

    def retrieval_fn(rows: np.ndarray) -> np.ndarray:
        return retrieval_scores(batch(rows)[0]).numpy()

    def two_stage_fn(rows: np.ndarray) -> np.ndarray:
        f, exclude = batch(rows)
        return two_stage_scores(f, exclude).numpy()

    ids = np.arange(len(examples))
    common = {"ks": ks, "batch_size": batch_size}
    return {
        "retrieval": evaluate_full_ranking(retrieval_fn, ids, relevant, seen, **common),
        "two_stage": evaluate_full_ranking(two_stage_fn, ids, relevant, seen, **common),
    }
