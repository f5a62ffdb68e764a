"""The padding mask of a history encoder, in the two forms the encoders use."""

from __future__ import annotations

import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)


def padding_masks(inputs: tf.Tensor, padding_mask: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
    """An encoder's padding mask as bool ``[B, L]`` and as ``[B, L, 1]`` in ``inputs``' dtype.

    Args:
        inputs: ``[B, L, D]`` item embeddings.
        padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
    """
    if padding_mask is None:
        padding_mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
    valid = tf.cast(padding_mask, tf.bool)  # [B, L]
    return valid, tf.cast(valid, inputs.dtype)[:, :, tf.newaxis]  # [B, L], [B, L, 1]
