"""Two-stage evaluation: retrieval alone vs retrieval -> ranker, same full-ranking protocol.

Also the score-fusion weight (final score = ranker + w * retrieval score), picked
on the validation part by :func:`tune_retrieval_weight`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.ranking_examples import RankingExamples
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation.protocol import ScoreFn, evaluate_full_ranking
from tfrec.evaluation.ranker import FEATURE_KEYS, evaluation_examples
from tfrec.models.ranker_state import TrainedRanker
from tfrec.models.two_stage import RetrievalScorer, TwoStageRecommender


def _queries(
    trained: TrainedRanker,
    retrieval: RetrievalScorer,
    split: Split,
    *,
    part: str,
    max_queries: int | None,
    retrieval_user_vocab: IdVocabulary | None,
) -> tuple[RankingExamples, dict[str, np.ndarray]]:
    """The evaluation examples of ``part`` (a seeded subset of ``max_queries``) and their features.

    Histories are long enough for both stages; ``retrieval_user`` holds the user
    indices of the retrieval model's vocabulary when it differs from the ranker's.
    """
    length = max(trained.config.max_history, retrieval.max_history)
    examples = evaluation_examples(trained, split, max_history=length, part=part)
    if max_queries is not None and len(examples) > max_queries:
        rng = np.random.default_rng([trained.config.training.seed, 13])
        examples = examples.take(np.sort(rng.choice(len(examples), max_queries, replace=False)))
    features = {k: v for k, v in examples.features().items() if k in FEATURE_KEYS}
    if retrieval_user_vocab is not None:
        tokens = np.array(trained.user_vocab.all_tokens(), dtype=object)[examples.user]
        features["retrieval_user"] = retrieval_user_vocab.lookup(tokens)
    return examples, features


def evaluate_two_stage(
    trained: TrainedRanker,
    retrieval: RetrievalScorer,
    split: Split,
    *,
    part: str = "test",
    num_candidates: int | None = None,
    retrieval_weight: float | None = None,
    retrieval_user_vocab: IdVocabulary | None = None,
    ks: Sequence[int] = (1, 5, 10, 20, 50, 100),
    batch_size: int = 256,
    include_retrieval: bool = True,
    max_queries: int | None = None,
    mask_history: bool = True,
) -> dict[str, dict[str, float]]:
    """Full-ranking metrics of retrieval alone and of retrieval -> ranker, same queries.

    Both rank the whole catalogue minus the user's known history (the evaluation
    module's exclusion); the two-stage ranking is
    :meth:`TwoStageRecommender.score_matrix`, so a true item outside the
    retrieved N is a miss for every ``K <= N``. Every query is in the denominator:
    a true item that repeats a history item is a miss too (counted in
    ``masked_target_users``), unless ``mask_history=False``.

    Args:
        trained: The ranker (its item vocabulary must be the retrieval model's).
        retrieval: Stage-1 scorer.
        split: The split.
        part: ``"test"`` (history = train + valid) or ``"valid"`` (history = train).
        num_candidates: N (default ``trained.config.num_candidates``).
        retrieval_weight: Score fusion weight (default ``trained.config.retrieval_weight``).
        retrieval_user_vocab: The retrieval model's user vocabulary when it differs
            from the ranker's (user indices are translated through the ids).
        ks: Cutoffs.
        batch_size: Queries per batch.
        include_retrieval: Also evaluate retrieval alone.
        max_queries: Evaluate a seeded random subset of at most this many queries.
        mask_history: False keeps the history rankable in both stages (retrieval
            and the retrieved N), for repeat-consumption domains.

    Returns:
        ``{"retrieval": {...}, "two_stage": {...}}`` with the evaluation module's keys
        (``"retrieval"`` only with ``include_retrieval``).
    """
    weight = trained.config.retrieval_weight if retrieval_weight is None else retrieval_weight
    pipeline = TwoStageRecommender(
        retrieval,
        trained.model,
        num_candidates=num_candidates or trained.config.num_candidates,
        ranker_history=trained.config.max_history,
        retrieval_weight=weight,
    )
    examples, features = _queries(
        trained, retrieval, split, part=part, max_queries=max_queries,
        retrieval_user_vocab=retrieval_user_vocab,
    )  # fmt: skip
    seen = examples.seen_items()
    relevant = [np.array([i]) for i in examples.item]
    retrieval_fn, two_stage_fn = _score_functions(
        retrieval,
        pipeline,
        features,
        seen,
        num_items=trained.spec.num_items,
        mask_history=mask_history,
    )
    ids = np.arange(len(examples))
    common = {"ks": ks, "batch_size": batch_size, "mask_exclude": mask_history}
    out = {"two_stage": evaluate_full_ranking(two_stage_fn, ids, relevant, seen, **common)}
    if include_retrieval:
        out["retrieval"] = evaluate_full_ranking(retrieval_fn, ids, relevant, seen, **common)
    return out


def _score_functions(
    retrieval: RetrievalScorer,
    pipeline: TwoStageRecommender,
    features: dict[str, np.ndarray],
    seen: list[np.ndarray],
    *,
    num_items: int,
    mask_history: bool,
) -> tuple[ScoreFn, ScoreFn]:
    """Full-catalogue score functions of query rows, for :func:`evaluate_full_ranking`.

    Args:
        retrieval: Stage-1 scorer.
        pipeline: The two-stage recommender.
        features: Model features of every query (row = query).
        seen: Per query, the history items the two-stage ranking excludes.
        num_items: Catalogue size (score columns).
        mask_history: False: nothing is excluded from the retrieved candidates.

    Returns:
        ``(retrieval_fn, two_stage_fn)``: query rows -> ``[len(rows), num_items]`` scores.
    """

    def batch(rows: np.ndarray) -> tuple[dict[str, np.ndarray], tf.Tensor]:
        batch_features = {k: v[rows] for k, v in features.items()}
        mask = np.zeros((len(rows), num_items), dtype=bool)
        for j, row in enumerate(rows if mask_history else ()):
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

    return retrieval_fn, two_stage_fn


def tune_retrieval_weight(
    trained: TrainedRanker,
    retrieval: RetrievalScorer,
    split: Split,
    *,
    weights: Sequence[float] = (0.0, 0.1, 0.3, 1.0, 3.0),
    metric: str = "ndcg@10",
    max_queries: int | None = 5000,
    retrieval_user_vocab: IdVocabulary | None = None,
    mask_history: bool = True,
) -> tuple[float, dict[float, float]]:
    """Picks the score-fusion weight with the best validation ``metric``.

    Sets nothing: pass the result to ``dataclasses.replace(trained.config,
    retrieval_weight=...)`` (it is then used by :func:`evaluate_two_stage` and
    the combined export).

    Args:
        trained: The ranker.
        retrieval: Stage-1 scorer.
        split: The split; its ``valid`` part is evaluated (never ``test``).
        weights: Candidate weights (>= 0).
        metric: A key of the full-ranking metrics, e.g. ``"ndcg@10"``.
        max_queries: Validation queries used (seeded subset; None = all).
        retrieval_user_vocab: See :func:`evaluate_two_stage`.
        mask_history: See :func:`evaluate_two_stage`.

    Returns:
        ``(best weight, {weight: validation metric})``; ties keep the smaller weight.

    Raises:
        ValueError: No weights, or the split has no validation part.
    """
    if not weights:
        raise ValueError("weights: expected at least one candidate weight")
    k = int(metric.split("@")[1]) if "@" in metric else 10
    table: dict[float, float] = {}
    for weight in sorted(float(w) for w in weights):
        result = evaluate_two_stage(
            trained, retrieval, split, part="valid", retrieval_weight=weight,
            retrieval_user_vocab=retrieval_user_vocab, ks=(k,), include_retrieval=False,
            max_queries=max_queries, mask_history=mask_history,
        )  # fmt: skip
        table[weight] = result["two_stage"][metric]
    best = max(table, key=lambda w: (table[w], -w))
    return best, table
