"""Retrieval task: softmax loss of query vectors against candidate item vectors.

Two losses:

* ``"sampled"``: in-batch sampled softmax, delegated to ``tfrs.tasks.Retrieval``:
  the positives of the other queries in the batch are the negatives, with
  optional logQ correction (``candidate_sampling_probability``), removal of
  accidental hits (a negative that is the query's own target), a temperature and
  hard-negative mining. Extra candidates may follow the N in-batch ones (mixed
  negative sampling: ``[N + M, D]`` candidates with their ids; the model draws M
  uniform items, :class:`tfrec.models.retrieval.TwoTowerModel`).
* ``"full"``: softmax over the whole catalogue, ``logits = query @ items^T``,
  the padding and OOV columns masked out, sparse cross-entropy at the target.

The loss is the (weighted) mean over queries, always computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from tfrec.config import check_choice
from tfrec.data.vocab import NUM_RESERVED
from tfrec.names import RetrievalLoss


@keras.saving.register_keras_serializable(package="tfrec")
class RetrievalTask(keras.layers.Layer, tfrs.tasks.Task):
    """Computes the retrieval loss and updates the task's metrics.

    Args:
        loss: ``"sampled"`` (in-batch softmax) or ``"full"`` (whole catalogue).
        temperature: Logits are divided by it (> 0).
        remove_accidental_hits: ``"sampled"`` only: mask in-batch negatives that
            have the query's target id.
        num_hard_negatives: ``"sampled"`` only: keep only this many highest-scoring
            negatives per query (0 = all).
        metrics: Keras metrics updated with ``(labels [N], logits [N, C])`` where
            ``labels`` are sparse column indices (e.g.
            ``keras.metrics.SparseTopKCategoricalAccuracy``); in ``"full"`` mode
            the columns are the real items (index - 2), in ``"sampled"`` mode the
            in-batch candidates. They cost an extra matmul in
            ``"sampled"`` mode, so leave them empty for fast training.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: Unknown ``loss``, ``temperature <= 0``, or a sampled-only
            option with ``loss="full"``.
    """

    def __init__(
        self,
        loss: str = "sampled",
        temperature: float = 1.0,
        remove_accidental_hits: bool = True,
        num_hard_negatives: int = 0,
        metrics: Sequence[keras.metrics.Metric] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_choice("RetrievalTask.loss", loss, RetrievalLoss)
        if temperature <= 0:
            raise ValueError(f"RetrievalTask: temperature={temperature}; expected > 0")
        if num_hard_negatives < 0:
            raise ValueError(
                f"RetrievalTask: num_hard_negatives={num_hard_negatives}; expected >= 0"
            )
        if loss == "full" and num_hard_negatives:
            raise ValueError(
                f"RetrievalTask: num_hard_negatives={num_hard_negatives} needs loss='sampled'"
            )
        self.loss = loss
        self.temperature = temperature
        self.remove_accidental_hits = remove_accidental_hits
        self.num_hard_negatives = num_hard_negatives
        self.task_metrics = list(metrics or [])
        self._sampled = tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=keras.losses.Reduction.NONE
            ),
            temperature=temperature,
            num_hard_negatives=num_hard_negatives or None,
            remove_accidental_hits=remove_accidental_hits,
            name="sampled_softmax",
        )

    @property
    def needs_full_catalogue(self) -> bool:
        """True when :meth:`call` wants every item's vector (``loss="full"``)."""
        return self.loss == "full"

    def call(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        target_ids: tf.Tensor,
        candidate_sampling_probability: tf.Tensor | None = None,
        sample_weight: tf.Tensor | None = None,
        *,
        candidate_ids: tf.Tensor | None = None,
        history_ids: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Computes the mean loss over the N queries.

        Args:
            query_embeddings: ``[N, D]`` query vectors.
            candidate_embeddings: ``"sampled"``: ``[N + M, D]``, row i < N = vector
                of query i's target, then M >= 0 extra negatives. ``"full"``:
                ``[I, D]``, row j = vector of item index j (the whole catalogue,
                padding and OOV rows included).
            target_ids: ``[N]`` int target item indices.
            candidate_sampling_probability: ``"sampled"`` only: ``[N + M]``, each
                candidate's sampling probability (or expected count; only its
                ratios matter) for the logQ correction ``logit - log(p)``.
            sample_weight: Optional ``[N]`` weights.
            candidate_ids: ``"sampled"`` only: ``[N + M]`` item indices of the
                candidates, for removing accidental hits (default ``target_ids``,
                i.e. in-batch candidates only).
            history_ids: ``"full"`` only: ``[N, L]`` item indices of each query's
                history (padding 0); their columns are left out of that query's
                softmax, its target's excepted (:func:`exclude_history_logits`).

        Returns:
            Scalar float32 loss.
        """
        query = tf.cast(query_embeddings, tf.float32)  # [N, D]
        candidates = tf.cast(candidate_embeddings, tf.float32)  # [N or I, D]
        target_ids = tf.cast(target_ids, tf.int32)  # [N]
        if self.loss == "full":
            # Padding/OOV columns are dropped rather than masked: columns = items 2..I-1.
            labels = target_ids - NUM_RESERVED  # [N]
            logits = tf.matmul(
                query / self.temperature, candidates[NUM_RESERVED:], transpose_b=True
            )  # [N, I - 2]
            if history_ids is not None:
                logits = exclude_history_logits(logits, history_ids, target_ids)
            per_query = sparse_softmax_cross_entropy(labels, logits)  # [N]
        else:
            if history_ids is not None:
                raise ValueError("RetrievalTask: history_ids needs loss='full'")
            with _float32_policy():
                per_query = self._sampled(
                    query,
                    candidates,
                    candidate_sampling_probability=candidate_sampling_probability,
                    candidate_ids=target_ids if candidate_ids is None else candidate_ids,
                    compute_metrics=False,
                    compute_batch_metrics=False,
                )  # [N]
            logits = None
            labels = tf.range(tf.shape(query)[0])
        loss = _weighted_mean(per_query, sample_weight)
        if self.task_metrics:
            if logits is None:
                logits = tf.matmul(query, candidates, transpose_b=True) / self.temperature
            update_ops = [m.update_state(labels, logits) for m in self.task_metrics]
            with tf.control_dependencies([op for op in update_ops if op is not None]):
                loss = tf.identity(loss)
        return loss

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (metrics are not serialised)."""
        return {
            **super().get_config(),
            "loss": self.loss,
            "temperature": self.temperature,
            "remove_accidental_hits": self.remove_accidental_hits,
            "num_hard_negatives": self.num_hard_negatives,
        }


#: Logit of an excluded column: exp() of it minus any real logit is 0 in float32.
EXCLUDED_LOGIT = -1e9


def exclude_history_logits(
    logits: tf.Tensor, history_ids: tf.Tensor, target_ids: tf.Tensor
) -> tf.Tensor:
    """Sets each row's history columns to :data:`EXCLUDED_LOGIT`, its target's excepted.

    Args:
        logits: ``[N, I - 2]`` full-catalogue logits (column j = item index j + 2).
        history_ids: ``[N, L]`` int item indices of each row's history (padding
            and OOV, indices < 2, are ignored).
        target_ids: ``[N]`` int target item indices (never excluded, so a repeated
            item stays a positive).

    Returns:
        ``[N, I - 2]`` logits; gradients flow to the columns that are kept.
    """
    history_ids = tf.cast(history_ids, tf.int32)
    seen = tf.logical_and(
        history_ids >= NUM_RESERVED, history_ids != tf.cast(target_ids, tf.int32)[:, tf.newaxis]
    )  # [N, L]
    where = tf.where(seen)  # [M, 2]: (row, history slot)
    columns = tf.gather_nd(history_ids, where) - NUM_RESERVED  # [M]
    indices = tf.stack([tf.cast(where[:, 0], tf.int32), columns], axis=1)  # [M, 2]
    updates = tf.fill(tf.shape(columns), tf.constant(EXCLUDED_LOGIT, logits.dtype))
    return tf.tensor_scatter_nd_update(logits, indices, updates)


def sparse_softmax_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy at integer labels; fast on CPU for wide logits.

    Same values and gradients as ``tf.nn.sparse_softmax_cross_entropy_with_logits``,
    written with multi-threaded element-wise ops: TensorFlow's fused CPU kernel is
    several times slower on ``[~1500, ~12000]`` logits, where it dominated the
    training step of the full-catalogue loss.

    Args:
        labels: ``[N]`` int column indices in ``[0, C)``.
        logits: ``[N, C]`` float32 logits.

    Returns:
        ``[N]`` losses ``logsumexp(logits) - logits[label]``.
    """
    labels = tf.cast(labels, tf.int32)

    @tf.custom_gradient
    def _loss(logits: tf.Tensor) -> tuple[tf.Tensor, Any]:
        top = tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))  # [N, 1]
        shifted = tf.exp(logits - top)  # [N, C]
        total = tf.reduce_sum(shifted, axis=1, keepdims=True)  # [N, 1]
        picked = tf.gather(logits, labels, batch_dims=1)  # [N]
        loss = tf.squeeze(tf.math.log(total) + top, axis=1) - picked

        def grad(upstream: tf.Tensor) -> tf.Tensor:
            rows = tf.range(tf.shape(labels)[0])
            probs = shifted / total  # softmax [N, C]
            probs = tf.tensor_scatter_nd_sub(
                probs, tf.stack([rows, labels], axis=1), tf.ones_like(picked)
            )
            return probs * upstream[:, tf.newaxis]

        return loss, grad

    return _loss(logits)


@contextlib.contextmanager
def _float32_policy() -> Iterator[None]:
    """Builds layers under the float32 policy.

    ``tfrs.tasks.Retrieval`` creates its helper layers (accidental hits, logQ,
    hard negatives) while it is called; under a mixed global policy they would
    cast the labels to float16/bfloat16 and clash with the float32 logits.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor | None) -> tf.Tensor:
    """Mean of ``values`` ``[N]`` (weighted when ``weights`` is given); 0 when N = 0."""
    values = tf.cast(values, tf.float32)
    if weights is None:
        weights = tf.ones_like(values)
    weights = tf.cast(weights, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))
