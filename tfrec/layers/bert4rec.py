"""BERT4Rec history encoder: bidirectional self-attention with a learned mask token.

:class:`Bert4RecEncoder` wraps a non-causal :class:`~tfrec.layers.encoders.TransformerEncoder`
(every position attends to every real position) and owns a learned ``[D]`` mask
vector, so the item vocabulary, the item tower and the export signature are those of
the causal encoders. It has two modes:

* **masked-item prediction** (training, ``masked_positions`` given): the inputs at the
  masked real positions are replaced by the mask vector; the output at a masked
  position predicts the item that was there, from both sides
  (:func:`tfrec.models.masked_items.masked_item_queries` builds the batches).
* **next-item query** (inference, ``masked_positions=None``): the mask vector is
  appended after the most recent real item (keeping the ``max_length`` most recent
  real items) and its output is the query. It is returned at the position of the
  most recent real item; every other position is zero. So the outputs keep the
  encoder contract of :mod:`tfrec.layers.encoders` (zeros at padding positions, an
  output depends on real items at positions <= its own, padding-invariant) and
  ``QueryTower.final_query`` (the output at the last column of a compacted history)
  is the BERT4Rec query. An empty history gives zeros, as with the causal encoders.

Positions count back from the most recent real item (the mask slot included): the
appended mask is always position 0, as the masked last item of a training sequence
is, whatever the history length (counted from the oldest item, a query after the
longest histories would sit at a position no training sequence reaches). The position
table has ``max_length + 1`` rows.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.layers.encoders import TransformerEncoder
from tfrec.layers.masks import padding_masks


@keras.saving.register_keras_serializable(package="tfrec")
class Bert4RecEncoder(keras.layers.Layer):
    """Bidirectional (BERT4Rec) encoder trained by masked-item prediction.

    Args:
        units: Model width D; must equal the input size and be divisible by
            ``num_heads``.
        max_length: Longest history (real items) of a next-item query; the
            position table has ``max_length + 1`` rows (the mask slot after them).
        num_layers: Attention blocks.
        num_heads: Attention heads per block.
        dropout: Dropout rate of the transformer.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: A non-positive size, ``units`` not divisible by ``num_heads``
            or a dropout outside ``[0, 1)``.
    """

    def __init__(
        self,
        units: int,
        max_length: int,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Bert4RecEncoder: {name}={value!r}; expected an integer >= 1")
        self.units = units
        self.max_length = max_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout = dropout
        self._transformer = TransformerEncoder(
            units,
            max_length=max_length + 1,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            causal=False,
            name="bidirectional_transformer",
        )
        self.mask_vector: tf.Variable | None = None

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the ``[D]`` mask vector.

        Raises:
            ValueError: The input size is not ``units``.
        """
        if int(input_shape[-1]) != self.units:
            raise ValueError(
                f"Bert4RecEncoder: input size {int(input_shape[-1])}; expected units={self.units}"
            )
        self.mask_vector = self.add_weight(
            name="mask_vector",
            shape=(self.units,),
            initializer=keras.initializers.RandomUniform(-0.05, 0.05),
            trainable=True,
        )
        super().build(input_shape)

    def call(
        self,
        inputs: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: bool | None = None,
        masked_positions: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Encodes a history bidirectionally.

        Args:
            inputs: ``[B, L, D]`` item embeddings (D = ``units``).
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
            training: Enables dropout.
            masked_positions: ``[B, L]`` bool/0-1, True where the item is hidden behind
                the mask vector (padding positions are never masked); None: next-item
                queries (see the module docstring).

        Returns:
            ``[B, L, D]``: with ``masked_positions``, the bidirectional outputs (zeros
            at padding positions); without, the next-item query at each row's most
            recent real item and zeros elsewhere.
        """
        valid, _ = padding_masks(inputs, padding_mask)  # [B, L]
        mask_vector = tf.cast(self.mask_vector, inputs.dtype)  # [D]
        if masked_positions is not None:
            masked = tf.logical_and(tf.cast(masked_positions, tf.bool), valid)  # [B, L]
            x = tf.where(masked[:, :, tf.newaxis], mask_vector, inputs)  # [B, L, D]
            return self._transformer(x, padding_mask=valid, training=training)
        # Real items at or after each position: 1 at the most recent real item.
        recent = tf.cumsum(tf.cast(valid, tf.int32), axis=1, reverse=True)  # [B, L]
        keep = tf.logical_and(valid, recent <= self.max_length)  # [B, L]
        has_items = tf.reduce_any(valid, axis=1, keepdims=True)  # [B, 1]
        slot = tf.tile(mask_vector[tf.newaxis, tf.newaxis, :], [tf.shape(inputs)[0], 1, 1])
        x = tf.concat([inputs, slot], axis=1)  # [B, L + 1, D]
        slot_mask = tf.concat([keep, has_items], axis=1)  # [B, L + 1]
        outputs = self._transformer(x, padding_mask=slot_mask, training=training)
        query = outputs[:, -1:, :]  # [B, 1, D]; zeros for an empty history
        last = tf.logical_and(valid, tf.equal(recent, 1))  # [B, L]
        return tf.cast(last, query.dtype)[:, :, tf.newaxis] * query  # [B, L, D]

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "units": self.units,
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
        }
