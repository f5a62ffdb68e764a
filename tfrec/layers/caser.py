"""Caser: convolutional sequence embedding (Tang & Wang, WSDM 2018) as a causal encoder.

Caser reads the last ``window`` item embeddings as an ``[window, D]`` "image" and
applies

* **horizontal** convolutions: for every height ``h = 1..window``, ``num_horizontal``
  filters of size ``[h, D]`` slide over the window (ReLU), and each filter's
  ``window - h + 1`` responses are max-pooled to one value (union-level and
  point-level sequential patterns of up to ``window`` items);
* a **vertical** convolution: ``num_vertical`` filters of size ``[window, 1]``, each a
  learned weighted sum of the window's rows (a ``D``-vector per filter, no activation);

then concatenates the ``num_horizontal * window + num_vertical * D`` features, applies
dropout and a dense layer to the output size. The paper scores items with a second
dense layer over ``[z; user]``; here the item tower's embeddings play that part
(scores are dot products with the query) and :class:`~tfrec.layers.towers.QueryTower`
adds the user embedding.

:class:`CaserEncoder` follows the contract of :mod:`tfrec.layers.encoders`: it gives
an output at **every** position (so training on all positions works), output ``t``
sees the last ``window`` real items at positions ``<= t``, padding rows are zeros
and never change an output at a real position (padding gaps are compacted first).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.layers.masks import padding_masks


def _shifted_rows(values: tf.Tensor, count: int, length: tf.Tensor) -> tf.Tensor:
    """Stacks ``count`` consecutive rows: ``out[:, j, r] = values[:, j + r]``.

    Args:
        values: ``[B, T, D]`` with ``T >= length + count - 1``.
        count: Rows per frame (static).
        length: Number of frames (``j = 0..length - 1``).

    Returns:
        ``[B, length, count, D]`` frames, oldest row first.
    """
    return tf.stack([values[:, r : r + length] for r in range(count)], axis=2)


@keras.saving.register_keras_serializable(package="tfrec")
class CaserEncoder(keras.layers.Layer):
    """Caser's horizontal and vertical convolutions over a sliding causal window.

    Output ``t`` is computed from the window of the ``window`` most recent real items
    at positions ``<= t`` (oldest first), zero rows filling the window when fewer are
    available. All positions are computed at once: the horizontal convolutions run
    once over the whole (compacted, left zero-padded) sequence, each as a dense layer over ``h``
    stacked shifted copies of it, and a sliding max-pool gives each position the
    maximum over its window; the vertical filters are a dense layer over the window
    axis of ``window`` shifted copies of the sequence.

    Defaults follow the paper (``window=5``, ``num_horizontal=16``,
    ``num_vertical=4``, found best at ``d=50``): the horizontal part gives
    ``num_horizontal * window`` features whatever ``D``, the vertical part
    ``num_vertical * D`` features, so it scales with the embedding size.

    Args:
        units: Output size D (the input size may differ).
        window: Items per window (the paper's ``L``).
        num_horizontal: Horizontal filters per height (``n_h``).
        num_vertical: Vertical filters (``n_v``).
        dropout: Dropout rate on the concatenated convolution features.
        activation: Activation of the output dense layer (a Keras activation name),
            or None for a linear output. The paper uses ReLU; the default is linear
            because the output is a query vector for dot-product retrieval, where a
            ReLU output can be all zeros (a query that scores every item 0).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: A non-positive size or a bad ``dropout``.
    """

    def __init__(
        self,
        units: int,
        window: int = 5,
        *,
        num_horizontal: int = 16,
        num_vertical: int = 4,
        dropout: float = 0.2,
        activation: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for name, value in (("units", units), ("window", window)):
            if value < 1:
                raise ValueError(f"CaserEncoder: {name}={value}; expected >= 1")
        for name, value in (("num_horizontal", num_horizontal), ("num_vertical", num_vertical)):
            if value < 0:
                raise ValueError(f"CaserEncoder: {name}={value}; expected >= 0")
        if num_horizontal == 0 and num_vertical == 0:
            raise ValueError(
                "CaserEncoder: num_horizontal=0 and num_vertical=0; expected at least one filter"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CaserEncoder: dropout={dropout}; expected 0 <= dropout < 1")
        self.units = units
        self.window = window
        self.num_horizontal = num_horizontal
        self.num_vertical = num_vertical
        self.dropout = dropout
        self.activation = activation
        # Filter height h: a dense layer over h consecutive rows flattened to h * D_in.
        self._horizontal = [
            keras.layers.Dense(num_horizontal, activation="relu", name=f"horizontal_{height}")
            for height in range(1, window + 1)
            if num_horizontal
        ]
        self._vertical = keras.layers.Dense(num_vertical, name="vertical") if num_vertical else None
        self._dropout = keras.layers.Dropout(dropout)
        self._output = keras.layers.Dense(units, activation=activation, name="output")

    def call(
        self,
        inputs: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tf.Tensor:
        """Encodes the history.

        Args:
            inputs: ``[B, L, D_in]`` item embeddings (left padded, oldest first).
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
            training: Enables dropout.

        Returns:
            ``[B, L, units]`` causal outputs (zeros at padding positions).
        """
        valid, fmask = padding_masks(inputs, padding_mask)  # [B, L], [B, L, 1]
        # Move padding to the left (real items keep their order), so that every window
        # holds consecutive real items; inverse_order undoes it at the end.
        order = tf.argsort(tf.cast(valid, tf.int32), axis=1, stable=True)  # [B, L]
        inverse_order = tf.argsort(order, axis=1, stable=True)  # [B, L]
        x = tf.gather(inputs * fmask, order, batch_dims=1)  # [B, L, D_in]
        length = tf.shape(x)[1]
        # window - 1 zero rows in front: the window of position t is rows t..t+window-1.
        padded = tf.pad(x, [[0, 0], [self.window - 1, 0], [0, 0]])  # [B, L + w - 1, D_in]

        batch, dim = tf.shape(x)[0], inputs.shape[-1]
        features = []
        for height, conv in enumerate(self._horizontal, start=1):
            # Response j covers padded rows j..j+h-1; position t pools j = t..t+w-h.
            starts = length + self.window - height
            rows = _shifted_rows(padded, height, starts)  # [B, L + w - h, h, D_in]
            responses = conv(tf.reshape(rows, [batch, starts, height * dim]))  # [B, ., n_h]
            pooled = tf.nn.max_pool1d(responses, self.window - height + 1, 1, "VALID")
            features.append(pooled)  # [B, L, n_h]
        if self._vertical is not None:
            windows = _shifted_rows(padded, self.window, length)  # [B, L, w, D_in]
            windows = tf.transpose(windows, [0, 1, 3, 2])  # [B, L, D_in, w]; oldest first
            vertical = self._vertical(windows)  # [B, L, D_in, n_v]
            features.append(tf.reshape(vertical, [batch, length, dim * self.num_vertical]))
        hidden = tf.concat(features, axis=-1)  # [B, L, n_h * w + n_v * D_in]
        hidden = self._dropout(hidden, training=training)
        outputs = self._output(hidden)  # [B, L, units]
        outputs = tf.gather(outputs, inverse_order, batch_dims=1)  # original positions
        return outputs * tf.cast(fmask, outputs.dtype)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "units": self.units,
            "window": self.window,
            "num_horizontal": self.num_horizontal,
            "num_vertical": self.num_vertical,
            "dropout": self.dropout,
            "activation": self.activation,
        }
