"""In-graph pieces every serving signature shares: id lookups, request checks, exclusion.

Used by the retrieval export (:mod:`tfrec.export.retrieval`) and the ranking and
recommender exports (:mod:`tfrec.export.ranking`); stock TensorFlow ops only, so
unmodified TF Serving runs them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrec.data.vocab import NUM_RESERVED, IdVocabulary


def string_lookup(vocab: IdVocabulary, name: str) -> keras.layers.StringLookup:
    """StringLookup with the IdVocabulary layout (0 = "", 1 = OOV, 2.. = tokens)."""
    return keras.layers.StringLookup(
        vocabulary=list(vocab.tokens), mask_token="", num_oov_indices=1, name=name
    )


def request_checks(
    user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor, max_k: int, what: str
) -> list[tf.Operation]:
    """In-graph validation of a ``(user_id, history, k)`` request.

    TF Serving (and tfrec's local server) turn the failed assertion into gRPC
    ``INVALID_ARGUMENT`` with the message below.

    Args:
        user_id: ``[B]`` string ids.
        history: ``[B, L]`` string ids.
        k: ``[B]`` int32 cutoffs.
        max_k: Largest allowed ``k``.
        what: What ``max_k`` is, for the message (e.g. "the number of catalogue items").

    Returns:
        The assertion ops, for ``tf.control_dependencies``.
    """
    batch = tf.shape(user_id)[0]
    return [
        tf.debugging.assert_equal(
            tf.shape(history)[0], batch, message="history must have one row per user_id"
        ),
        tf.debugging.assert_equal(
            tf.shape(k)[0], batch, message="k must have one value per user_id"
        ),
        tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1"),
        tf.debugging.assert_less_equal(k, max_k, message=f"k must be <= {max_k} ({what})"),
    ]


def exclude_items(scores: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """Sets the scores of padding, OOV and the given items to ``-inf``.

    Args:
        scores: ``[B, I]`` float32 scores over item indices.
        items: ``[B, L]`` int item indices to exclude per row (0/1 entries are harmless).

    Returns:
        ``[B, I]`` scores.
    """
    batch, length = tf.shape(items)[0], tf.shape(items)[1]
    rows = tf.repeat(tf.range(batch), length)  # [B * L]
    indices = tf.stack([rows, tf.reshape(items, [-1])], axis=1)  # [B * L, 2]
    scores = tf.tensor_scatter_nd_update(
        scores, indices, tf.fill([batch * length], tf.constant(-np.inf, scores.dtype))
    )
    reserved = tf.range(tf.shape(scores)[1]) < NUM_RESERVED  # [I]
    return tf.where(reserved[tf.newaxis, :], tf.constant(-np.inf, scores.dtype), scores)
