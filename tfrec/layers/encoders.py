"""Causal history encoders: item embeddings of a history -> one query vector per position.

Every encoder maps ``inputs`` ``[B, L, D]`` (embeddings of a left-padded item
history, oldest first, position ``L - 1`` = most recent) and ``padding_mask``
``[B, L]`` (True/1 = real item) to ``[B, L, D]`` outputs that are **causal**:
output ``t`` depends only on real items at positions ``<= t``. Outputs at padding
positions are zeros. Padding never changes the outputs at real positions: neither
the amount of left padding nor the values of the padded input rows matter, and
padding gaps inside a sequence behave as if the sequence were compacted.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import choices
from tfrec.layers.caser import CaserEncoder
from tfrec.layers.masks import padding_masks
from tfrec.names import HistoryEncoder

#: ``RetrievalConfig.encoder`` value of the ID-only (history-free) query tower.
NO_ENCODER = "none"
#: The history encoders :func:`get_encoder` builds (every ``HistoryEncoder`` but ``none``).
ENCODERS: tuple[str, ...] = tuple(e for e in choices(HistoryEncoder) if e != NO_ENCODER)


def _float_mask(padding_mask: tf.Tensor | None, inputs: tf.Tensor) -> tf.Tensor:
    """Returns the padding mask as ``[B, L, 1]`` in the dtype of ``inputs``."""
    return padding_masks(inputs, padding_mask)[1]


@keras.saving.register_keras_serializable(package="tfrec")
class MeanEncoder(keras.layers.Layer):
    """Causal running mean of the real items so far (no weights).

    Output ``t`` is the mean of the inputs at real positions ``<= t``; zeros
    before the first real item.
    """

    def call(self, inputs: tf.Tensor, padding_mask: tf.Tensor | None = None) -> tf.Tensor:
        """Computes the running means.

        Args:
            inputs: ``[B, L, D]`` item embeddings.
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).

        Returns:
            ``[B, L, D]`` running means.
        """
        mask = _float_mask(padding_mask, inputs)  # [B, L, 1]
        sums = tf.cumsum(inputs * mask, axis=1)  # [B, L, D]
        counts = tf.cumsum(mask, axis=1)  # [B, L, 1]
        return sums / tf.maximum(counts, tf.ones_like(counts)) * mask


@keras.saving.register_keras_serializable(package="tfrec")
class RNNEncoder(keras.layers.Layer):
    """GRU or LSTM over the history; padding steps are skipped.

    Args:
        units: Output size D (the input size may differ).
        cell: ``"gru"`` or ``"lstm"``.
        dropout: Dropout rate on the input embeddings during training.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: Unknown ``cell`` or a bad ``units``/``dropout``.
    """

    def __init__(self, units: int, cell: str = "gru", dropout: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"RNNEncoder: cell={cell!r}; expected 'gru' or 'lstm'")
        if units < 1:
            raise ValueError(f"RNNEncoder: units={units}; expected a positive integer")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"RNNEncoder: dropout={dropout}; expected 0 <= dropout < 1")
        self.units = units
        self.cell = cell
        self.dropout = dropout
        rnn_class = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
        self._rnn = rnn_class(units, return_sequences=True, name=cell)
        self._dropout = keras.layers.Dropout(dropout)

    def call(
        self,
        inputs: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tf.Tensor:
        """Runs the recurrent layer.

        Args:
            inputs: ``[B, L, D_in]`` item embeddings.
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
            training: Enables dropout.

        Returns:
            ``[B, L, units]`` hidden states (zeros at padding positions).
        """
        if padding_mask is None:
            padding_mask = tf.ones(tf.shape(inputs)[:2], dtype=tf.bool)
        bool_mask = tf.cast(padding_mask, tf.bool)  # [B, L]
        x = self._dropout(inputs, training=training)
        outputs = self._rnn(x, mask=bool_mask, training=training)  # [B, L, units]
        return outputs * tf.cast(bool_mask, outputs.dtype)[:, :, tf.newaxis]

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "units": self.units,
            "cell": self.cell,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="tfrec")
class TransformerEncoder(keras.layers.Layer):
    """SASRec-style causal self-attention encoder.

    Inputs are scaled by ``sqrt(D)``, a learned position embedding is added
    (position = number of real items before this one, so left padding and padding
    gaps do not shift positions), then ``num_layers`` pre-LayerNorm blocks of
    causal multi-head self-attention and a point-wise feed-forward network, each
    with a residual connection and dropout, and a final LayerNorm.

    Args:
        units: Model width D; must equal the input size and be divisible by
            ``num_heads``.
        max_length: Number of learned positions (the longest history, L).
            Positions beyond it share the last position embedding.
        num_layers: Number of attention blocks.
        num_heads: Attention heads per block.
        dropout: Dropout rate (embeddings, attention weights, residual branches).
        causal: Position t attends to positions <= t only. False: to every real
            position, and positions count back from the most recent real item (0 =
            most recent), so the end of a sequence always has the same position (the
            bidirectional stack of :class:`~tfrec.layers.bert4rec.Bert4RecEncoder`).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: A non-positive size or ``units`` not divisible by ``num_heads``.
    """

    def __init__(
        self,
        units: int,
        max_length: int,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        *,
        causal: bool = True,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("units", units),
            ("max_length", max_length),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
        ):
            if value < 1:
                raise ValueError(f"TransformerEncoder: {name}={value}; expected >= 1")
        if units % num_heads:
            raise ValueError(
                f"TransformerEncoder: units={units} is not divisible by num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TransformerEncoder: dropout={dropout}; expected 0 <= dropout < 1")
        self.units = units
        self.max_length = max_length
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout = dropout
        self.causal = causal
        self._positions = keras.layers.Embedding(max_length, units, name="positions")
        self._input_dropout = keras.layers.Dropout(dropout)
        self._blocks = []
        for i in range(num_layers):
            self._blocks.append(
                {
                    "attention_norm": keras.layers.LayerNormalization(
                        epsilon=1e-8, name=f"block{i}_attention_norm"
                    ),
                    "attention": keras.layers.MultiHeadAttention(
                        num_heads=num_heads,
                        key_dim=units // num_heads,
                        dropout=dropout,
                        name=f"block{i}_attention",
                    ),
                    "attention_dropout": keras.layers.Dropout(dropout),
                    "ffn_norm": keras.layers.LayerNormalization(
                        epsilon=1e-8, name=f"block{i}_ffn_norm"
                    ),
                    "ffn_hidden": keras.layers.Dense(
                        units, activation="relu", name=f"block{i}_ffn_hidden"
                    ),
                    "ffn_hidden_dropout": keras.layers.Dropout(dropout),
                    "ffn_output": keras.layers.Dense(units, name=f"block{i}_ffn_output"),
                    "ffn_dropout": keras.layers.Dropout(dropout),
                }
            )
        self._final_norm = keras.layers.LayerNormalization(epsilon=1e-8, name="final_norm")

    def call(
        self,
        inputs: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tf.Tensor:
        """Encodes the history.

        Args:
            inputs: ``[B, L, D]`` item embeddings (D = ``units``).
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
            training: Enables dropout.

        Returns:
            ``[B, L, D]`` causal outputs (zeros at padding positions).
        """
        valid, fmask = padding_masks(inputs, padding_mask)  # [B, L], [B, L, 1]
        length = tf.shape(inputs)[1]

        # Position = number of real items before this one (0 for the oldest); not causal:
        # after this one (0 for the most recent).
        positions = tf.cumsum(tf.cast(valid, tf.int32), axis=1, reverse=not self.causal) - 1
        positions = tf.clip_by_value(positions, 0, self.max_length - 1)
        x = inputs * tf.cast(self.units**0.5, inputs.dtype) + self._positions(positions)
        x = self._input_dropout(x, training=training) * fmask  # [B, L, D]

        # Query t attends to real keys s <= t (every real key when not causal).
        keys = tf.ones((length, length), dtype=tf.bool)  # [L, L]
        if self.causal:
            keys = tf.linalg.band_part(keys, -1, 0)
        attention_mask = tf.logical_and(keys[tf.newaxis], valid[:, tf.newaxis, :])  # [B, L, L]

        for block in self._blocks:
            normed = block["attention_norm"](x)
            attended = block["attention"](
                normed, x, x, attention_mask=attention_mask, training=training
            )
            x = x + block["attention_dropout"](attended, training=training)
            hidden = block["ffn_hidden"](block["ffn_norm"](x))
            hidden = block["ffn_hidden_dropout"](hidden, training=training)
            x = x + block["ffn_dropout"](block["ffn_output"](hidden), training=training)
            x = x * fmask
        return self._final_norm(x) * fmask

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "units": self.units,
            "max_length": self.max_length,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "causal": self.causal,
        }


def get_encoder(
    name: str,
    units: int,
    max_length: int,
    *,
    num_layers: int = 2,
    num_heads: int = 1,
    dropout: float = 0.2,
) -> keras.layers.Layer:
    """Builds a history encoder by name.

    Args:
        name: One of ``"mean"``, ``"gru"``, ``"lstm"``, ``"transformer"``, ``"caser"``,
            ``"bert4rec"`` (:class:`~tfrec.layers.bert4rec.Bert4RecEncoder`: bidirectional,
            its outputs are next-item queries only at the most recent real item).
        units: Output size D.
        max_length: Longest history L (positions of the transformer).
        num_layers: Transformer/BERT4Rec blocks (ignored by the others).
        num_heads: Transformer/BERT4Rec heads (ignored by the others).
        dropout: Dropout rate (ignored by ``"mean"``). ``"caser"`` uses the
            :class:`~tfrec.layers.caser.CaserEncoder` defaults otherwise (window 5,
            16 horizontal filters per height, 4 vertical filters).

    Returns:
        The encoder layer, called as ``encoder(inputs, padding_mask=..., training=...)``.

    Raises:
        ValueError: Unknown ``name``.
    """
    if name == "mean":
        return MeanEncoder(name="mean_encoder")
    if name in ("gru", "lstm"):
        return RNNEncoder(units, cell=name, dropout=dropout, name=f"{name}_encoder")
    if name == "transformer":
        return TransformerEncoder(
            units,
            max_length=max_length,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            name="transformer_encoder",
        )
    if name == "caser":
        return CaserEncoder(units, dropout=dropout, name="caser_encoder")
    if name == "bert4rec":
        from tfrec.layers.bert4rec import Bert4RecEncoder  # noqa: PLC0415  (it imports this module)

        return Bert4RecEncoder(
            units,
            max_length=max_length,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            name="bert4rec_encoder",
        )
    raise ValueError(f"get_encoder: unknown encoder {name!r}; expected one of {list(ENCODERS)}")
