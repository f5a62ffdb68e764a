"""RankingTask: the loss and metrics of the ranker (a ``tfrs.tasks.Ranking``).

Two objectives, both on scores of shape ``[B, C]`` (C candidates per example):

* ``"rating"``: explicit-feedback regression. ``C = 1`` (the rated item), the
  label is the rating, the loss is the mean squared error, metrics ``rmse`` and
  ``mae``.
* ``"next_item"``: a candidate list per example (the true next item and sampled
  negatives), 0/1 labels, scores are logits. ``loss="bce"`` is pointwise sigmoid
  cross-entropy over every candidate; ``loss="softmax"`` is listwise softmax
  cross-entropy over the list (labels normalised to sum to 1 per list).
  Metrics: ``auc`` (mean per-list AUC, ties 1/2) and ``ndcg@K`` of the list
  re-ranked by score. Both equal :func:`tfrec.evaluation.mean_list_auc` and
  :func:`tfrec.evaluation.list_ndcg` on the same lists (streamed over batches).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import check_choice
from tfrec.names import RankingLoss, RankingObjective


class _ListMean(keras.metrics.Metric):
    """A weighted mean of per-list values, streamed over batches (0 before any list counts).

    Subclasses compute each list's value and its weight (0 skips the list) in
    ``update_state`` and pass them to :meth:`_add`.
    """

    def __init__(self, name: str, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.total = self.add_weight(name="total", initializer="zeros")
        self.count = self.add_weight(name="count", initializer="zeros")

    def _add(self, per_list: tf.Tensor, weight: tf.Tensor, sample_weight: tf.Tensor | None) -> None:
        """Adds ``per_list`` ``[B]`` values with ``weight`` ``[B]`` times ``sample_weight``."""
        if sample_weight is not None:
            weight = weight * tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1])[:, 0]
        self.total.assign_add(tf.reduce_sum(per_list * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self) -> tf.Tensor:
        """The weighted mean of the lists added (0 before any list with a weight)."""
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        """Clears the running sums."""
        self.total.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="tfrec")
class ListAUC(_ListMean):
    """Mean per-list AUC over lists holding both a positive and a negative.

    Per list: the fraction of (positive, negative) pairs where the positive
    scores higher, ties counting 1/2 (the Mann-Whitney statistic).

    Args:
        name: Metric name.
        **kwargs: Passed to ``keras.metrics.Metric``.
    """

    def __init__(self, name: str = "auc", **kwargs: Any):
        super().__init__(name=name, **kwargs)

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Adds lists ``y_true`` (0/1) ``[B, C]`` scored by ``y_pred`` ``[B, C]``."""
        labels = tf.cast(y_true, tf.float32) > 0.5  # [B, C]
        scores = tf.cast(y_pred, tf.float32)
        pos = tf.cast(labels, tf.float32)[:, :, None]  # [B, C, 1]
        neg = tf.cast(~labels, tf.float32)[:, None, :]  # [B, 1, C]
        diff = scores[:, :, None] - scores[:, None, :]  # [B, C, C]: pos_i - neg_j
        wins = tf.cast(diff > 0, tf.float32) + 0.5 * tf.cast(diff == 0, tf.float32)
        pairs = pos * neg  # [B, C, C]
        num_pairs = tf.reduce_sum(pairs, axis=[1, 2])  # [B]
        per_list = tf.math.divide_no_nan(tf.reduce_sum(wins * pairs, axis=[1, 2]), num_pairs)
        self._add(per_list, tf.cast(num_pairs > 0, tf.float32), sample_weight)  # lists with pairs


@keras.saving.register_keras_serializable(package="tfrec")
class ListNDCG(_ListMean):
    """Mean NDCG@k of candidate lists re-ranked by score (gains = labels).

    Ties are ordered by lower candidate position first (``tf.math.top_k``),
    lists without a positive gain are skipped.

    Args:
        k: Cutoff (>= 1); lists shorter than k use the whole list.
        name: Metric name (default ``"ndcg@{k}"``).
        **kwargs: Passed to ``keras.metrics.Metric``.

    Raises:
        ValueError: ``k < 1``.
    """

    def __init__(self, k: int = 10, name: str | None = None, **kwargs: Any):
        if k < 1:
            raise ValueError(f"ListNDCG: k={k}; expected an integer >= 1")
        super().__init__(name=name or f"ndcg@{k}", **kwargs)
        self.k = k

    def update_state(
        self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None
    ) -> None:
        """Adds lists ``y_true`` (gains) ``[B, C]`` scored by ``y_pred`` ``[B, C]``."""
        gains = tf.cast(y_true, tf.float32)
        scores = tf.cast(y_pred, tf.float32)
        k = tf.minimum(self.k, tf.shape(scores)[1])
        _, order = tf.math.top_k(scores, k=k)  # [B, k]
        discount = 1.0 / (tf.math.log(tf.cast(tf.range(k), tf.float32) + 2.0) / tf.math.log(2.0))
        dcg = tf.reduce_sum(tf.gather(gains, order, batch_dims=1) * discount, axis=1)  # [B]
        ideal_gains, _ = tf.math.top_k(gains, k=k)
        ideal = tf.reduce_sum(ideal_gains * discount, axis=1)  # [B]
        positive = tf.cast(ideal > 0, tf.float32)  # lists with a positive gain
        self._add(tf.math.divide_no_nan(dcg, ideal), positive, sample_weight)

    def get_config(self) -> dict[str, Any]:
        """Returns the metric config (JSON-serialisable)."""
        return {**super().get_config(), "k": self.k}


class _ListSoftmaxLoss(keras.losses.Loss):
    """Softmax cross-entropy over each candidate list, labels renormalised per list."""

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(y_true, y_pred.dtype)  # [B, C]
        labels = tf.math.divide_no_nan(labels, tf.reduce_sum(labels, axis=1, keepdims=True))
        return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)  # [B]


@keras.saving.register_keras_serializable(package="tfrec")
class RankingTask(tfrs.tasks.Ranking):
    """Loss + metrics of the ranker for one objective.

    Called as ``task(labels=[B, C], predictions=[B, C])``; returns the scalar loss
    and updates the metrics (``rmse``/``mae`` or ``auc``/``ndcg@K``).

    Args:
        objective: ``"rating"`` (MSE) or ``"next_item"`` (list ranking).
        loss: For ``"next_item"``: ``"bce"`` (pointwise) or ``"softmax"`` (listwise).
            Ignored for ``"rating"``.
        ndcg_k: Cutoff of the ``ndcg@K`` metric.
        **kwargs: Passed to ``tfrs.tasks.Ranking`` (only ``name`` is accepted).

    Raises:
        ValueError: Unknown objective or loss, or ``ndcg_k < 1``.
    """

    def __init__(
        self, objective: str = "rating", loss: str = "softmax", ndcg_k: int = 10, **kwargs: Any
    ):
        check_choice("RankingTask.objective", objective, RankingObjective)
        check_choice("RankingTask.loss", loss, RankingLoss)
        if ndcg_k < 1:
            raise ValueError(f"RankingTask: ndcg_k={ndcg_k}; expected >= 1")
        if objective == "rating":
            loss_fn: keras.losses.Loss = keras.losses.MeanSquaredError()
            metrics: list[keras.metrics.Metric] = [
                keras.metrics.RootMeanSquaredError(name="rmse"),
                keras.metrics.MeanAbsoluteError(name="mae"),
            ]
        else:
            if loss == "bce":
                loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
            else:
                loss_fn = _ListSoftmaxLoss()
            metrics = [ListAUC(name="auc"), ListNDCG(k=ndcg_k)]
        super().__init__(loss=loss_fn, metrics=metrics, **kwargs)
        self.objective = objective
        self.loss_name = loss
        self.ndcg_k = ndcg_k

    def get_config(self) -> dict[str, Any]:
        """Returns the task config (JSON-serialisable)."""
        # tfrs.tasks.Ranking.__init__ accepts only `name` of the Layer arguments.
        return {
            "name": self.name,
            "objective": self.objective,
            "loss": self.loss_name,
            "ndcg_k": self.ndcg_k,
        }
