"""Two-stage recommender: retrieval top-N, re-scored by the ranker, top-K.

Everything here is TensorFlow ops in item-index space, so the same code serves
offline evaluation and the combined SavedModel (:mod:`tfrec.export.ranking`).

Stage 1 scores every catalogue item with a :class:`RetrievalScorer` (the
two-tower model's query vector of the history dotted with every item vector),
removes padding, OOV and excluded (already seen) items, and keeps the top
``N``. Stage 2 scores those N with the :class:`~tfrec.models.ranking.LSTMRanker`
and orders them by its score.

For full-ranking evaluation :meth:`TwoStageRecommender.score_matrix` returns a
``[B, I]`` matrix where the N retrieved items get ``ranker score + offset``
(the offset puts every retrieved item above every other item) and all others
keep their retrieval score: a true item outside the retrieved N can never enter
the top N, so for every cutoff ``K <= N`` it is a miss, exactly as in serving.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.vocab import NUM_RESERVED
from tfrec.layers.towers import compact_history
from tfrec.models.ranking import LSTMRanker
from tfrec.models.retrieval import TwoTowerModel

Features = Mapping[str, tf.Tensor]


class RetrievalScorer(tf.Module):
    """Stage 1: scores every item for a history with a trained two-tower model.

    Uses the model's own inference path, ``query_embeddings(user, history)``
    (OOV/padding compacted, query at the most recent item) dotted with
    ``candidate_embeddings()``, which are computed once here (a snapshot: build
    the scorer after training).

    Args:
        model: A trained :class:`~tfrec.models.retrieval.TwoTowerModel`.
        name: Module name.
    """

    def __init__(self, model: TwoTowerModel, name: str = "retrieval_scorer"):
        super().__init__(name=name)
        self.model = model
        self.max_history = int(model.config.max_history)
        self.num_items = int(model.num_items)
        self.candidates = tf.Variable(
            model.candidate_embeddings(), trainable=False, name="candidate_embeddings"
        )  # [I, D]

    def __call__(self, features: Features) -> tf.Tensor:
        """Returns ``[B, I]`` scores of every item index (0/1 are -inf).

        Args:
            features: ``history`` int ``[B, L]`` (OOV dropped, cut to the model's
                most recent ``max_history`` items) and the user index of the
                retrieval model's vocabulary, ``retrieval_user`` (else ``user``) ``[B]``.
        """
        history = compact_history(tf.cast(features["history"], tf.int32))
        history = history[:, -self.max_history :]  # [B, <= L]
        user = features.get("retrieval_user", features.get("user"))
        if user is None:
            user = tf.ones(tf.shape(history)[:1], tf.int32)  # unknown user
        return self.model.score(tf.cast(user, tf.int32), history, self.candidates)  # [B, I]


def history_mask(history: tf.Tensor, num_items: int) -> tf.Tensor:
    """Marks ``[B, I]`` (bool) True at the item indices that occur in ``history`` ``[B, L]``."""
    history = tf.cast(history, tf.int32)
    rows = tf.broadcast_to(tf.range(tf.shape(history)[0])[:, None], tf.shape(history))
    indices = tf.stack([rows, history], axis=-1)  # [B, L, 2]
    counts = tf.scatter_nd(indices, tf.ones_like(history), [tf.shape(history)[0], num_items])
    return counts > 0


class TwoStageRecommender(tf.Module):
    """Retrieve top-N with a :class:`RetrievalScorer`, re-rank them with an LSTMRanker.

    Args:
        retrieval: Stage-1 scorer.
        ranker: Stage-2 ranker (same item vocabulary as the retrieval model).
        num_candidates: N, the retrieved items re-scored by the ranker.
        ranker_history: History length the ranker sees (its ``max_history``).
        retrieval_weight: Final score of a retrieved item = ranker score +
            ``retrieval_weight`` * retrieval score (score fusion; 0 = ranker only).
        name: Module name.

    Raises:
        ValueError: ``num_candidates < 1``, a negative weight or a vocabulary size mismatch.
    """

    def __init__(
        self,
        retrieval: RetrievalScorer,
        ranker: LSTMRanker,
        num_candidates: int = 100,
        *,
        ranker_history: int | None = None,
        retrieval_weight: float = 0.0,
        name: str = "two_stage",
    ):
        super().__init__(name=name)
        if num_candidates < 1:
            raise ValueError(f"TwoStageRecommender: num_candidates={num_candidates}; expected >= 1")
        if not retrieval_weight >= 0:
            raise ValueError(
                f"TwoStageRecommender: retrieval_weight={retrieval_weight}; expected >= 0"
            )
        if retrieval.num_items != ranker.spec.num_items:
            raise ValueError(
                f"TwoStageRecommender: retrieval has {retrieval.num_items} item indices but the "
                f"ranker has {ranker.spec.num_items}; both must use the same item vocabulary"
            )
        self.retrieval = retrieval
        self.ranker = ranker
        self.num_items = retrieval.num_items
        self.num_candidates = min(num_candidates, self.num_items - NUM_RESERVED)
        self.ranker_history = ranker_history or ranker.config.max_history
        self.retrieval_weight = float(retrieval_weight)

    def retrieve(
        self, features: Features, exclude: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Stage 1: the top-N items that are neither reserved nor excluded.

        Args:
            features: ``history`` ``[B, L]`` and optional ``user`` ``[B]``.
            exclude: bool ``[B, I]`` items to skip; None = the items in ``history``.

        Returns:
            ``(scores [B, I] with excluded items at -inf, items [B, N], valid [B, N])``;
            ``valid`` is False where fewer than N items were left.
        """
        scores = self.retrieval(features)  # [B, I]
        if exclude is None:
            exclude = history_mask(features["history"], self.num_items)
        reserved = tf.range(self.num_items) < NUM_RESERVED  # [I]
        blocked = tf.logical_or(exclude, reserved[None, :])
        scores = tf.where(blocked, tf.constant(-float("inf"), scores.dtype), scores)
        top_scores, items = tf.math.top_k(scores, k=self.num_candidates)  # [B, N]
        return scores, items, top_scores > -float("inf")

    def rerank(
        self,
        features: Features,
        items: tf.Tensor,
        valid: tf.Tensor,
        retrieval_scores: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Stage 2: final scores ``[B, N]`` of ``items``, -inf where not ``valid``.

        Args:
            features: Ranker features.
            items: ``[B, N]`` retrieved item indices.
            valid: bool ``[B, N]``.
            retrieval_scores: ``[B, I]`` stage-1 scores, needed when ``retrieval_weight > 0``.

        Returns:
            Ranker score (+ ``retrieval_weight`` * retrieval score) per item.
        """
        ranker_features = {
            key: value[:, -self.ranker_history :] if key.startswith("history") else value
            for key, value in features.items()
            if key in ("history", "history_rating", "history_log_dt", "user")  # not retrieval_user
        }
        ranker_features["candidates"] = items
        scores = self.ranker(ranker_features, training=False)  # [B, N]
        if self.retrieval_weight and retrieval_scores is not None:
            stage1 = tf.gather(retrieval_scores, items, batch_dims=1)  # [B, N]
            stage1 = tf.where(valid, stage1, tf.zeros_like(stage1))
            scores = scores + tf.cast(self.retrieval_weight * stage1, scores.dtype)
        return tf.where(valid, scores, tf.constant(-float("inf"), scores.dtype))

    def recommend(
        self, features: Features, k: int | tf.Tensor, exclude: tf.Tensor | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-``k`` items by ranker score among the retrieved N.

        Args:
            features: Ranker/retrieval features.
            k: Number of items (``<= N``).
            exclude: See :meth:`retrieve`.

        Returns:
            ``(items [B, k], scores [B, k])``, best first; -inf scores mark slots
            that could not be filled.
        """
        retrieval_scores, items, valid = self.retrieve(features, exclude)
        scores = self.rerank(features, items, valid, retrieval_scores)  # [B, N]
        top_scores, order = tf.math.top_k(scores, k=k)  # [B, k]
        return tf.gather(items, order, batch_dims=1), top_scores

    def score_matrix(self, features: Features, exclude: tf.Tensor | None = None) -> tf.Tensor:
        """Full float64 ``[B, I]`` scores ranking the re-ranked N first (see module docstring)."""
        retrieval_scores, items, valid = self.retrieve(features, exclude)  # [B, I], [B, N]
        ranker_scores = self.rerank(features, items, valid, retrieval_scores)  # [B, N]
        ranker_scores = tf.cast(ranker_scores, tf.float64)
        retrieval_scores = tf.cast(retrieval_scores, tf.float64)
        finite = tf.math.is_finite(retrieval_scores)
        floor = tf.reduce_max(
            tf.where(finite, retrieval_scores, tf.constant(-1e30, tf.float64)),
            axis=1,
            keepdims=True,
        )  # [B, 1] best retrieval score
        low = tf.reduce_min(
            tf.where(valid, ranker_scores, tf.constant(1e30, tf.float64)), axis=1, keepdims=True
        )  # [B, 1] worst re-ranked score
        lifted = ranker_scores - low + floor + 1.0  # every retrieved item > every other item
        lifted = tf.where(valid, lifted, tf.constant(-float("inf"), tf.float64))
        rows = tf.broadcast_to(tf.range(tf.shape(items)[0])[:, None], tf.shape(items))
        indices = tf.stack([rows, items], axis=-1)  # [B, N, 2]
        return tf.tensor_scatter_nd_update(retrieval_scores, indices, lifted)
