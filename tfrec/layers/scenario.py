"""Scenario conditioning of a shared history encoder (one model for several datasets).

:class:`ScenarioEncoder` wraps ONE history encoder layer (from
:func:`tfrec.layers.encoders.get_encoder`) that several scenarios share; each
scenario has its own wrapper, so its own two small conditioning parts::

    inputs [B, L, D] + scenario_vector [D]  -> shared encoder -> [B, L, D]
                                            -> scenario LayerNormalization [B, L, D]

The scenario vector tells the shared encoder which scenario a history comes from
(like a segment embedding); the output LayerNormalization gives each scenario its
own scale and offset of the query vectors against its own item embeddings.

With ``mean_expert=True`` the scenario also chooses how much of its query is
sequential: a parameter-free expert, the causal mean of the history so far, is
mixed with the shared encoder's outputs by this scenario's gate (two learned
logits, softmax; each expert LayerNormalised first so that the gate weighs
comparable vectors)::

    g = softmax(gate_logits)                                         # [2]
    LN_s(g0 * LN_0(encoder(x)) + g1 * LN_1(running_mean(x)))         # [B, L, D]

It is for scenarios whose data are bags of items rather than sequences (a
random split of MovieLens ratings). The gate logits and the expert norms' scales
are redundant (either can move the mix), so the gate weight alone is a
diagnostic, not the whole mix.

The wrapper keeps the encoder contract (causal, zeros at padding positions,
padding-invariant): the vector is added at every position (padded rows do not
matter to the encoder) and the normalised outputs are masked again.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.layers.encoders import MeanEncoder
from tfrec.layers.masks import padding_masks


@keras.saving.register_keras_serializable(package="tfrec")
class ScenarioEncoder(keras.layers.Layer):
    """A shared history encoder with a per-scenario input vector, output LayerNorm, gate.

    Several ``ScenarioEncoder`` layers may wrap the same ``encoder`` object: its
    variables then exist once and are trained by every scenario, while each
    wrapper's ``scenario_vector`` and ``scenario_norm`` belong to one scenario.

    Args:
        encoder: The (shared) encoder layer, called as
            ``encoder(inputs, padding_mask=..., training=...)`` and mapping
            ``[B, L, D]`` to ``[B, L, D]``; or its serialised config
            (``keras.layers.serialize``), as :meth:`get_config` stores it.
        epsilon: Epsilon of the LayerNormalizations.
        mean_expert: Mix the encoder's outputs with the running mean of the
            history by a learned per-scenario gate (see the module docstring).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: ``epsilon <= 0``.
    """

    def __init__(
        self,
        encoder: keras.layers.Layer | dict[str, Any],
        epsilon: float = 1e-6,
        mean_expert: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.layers.deserialize(encoder)
        if not epsilon > 0:
            raise ValueError(f"ScenarioEncoder: epsilon={epsilon}; expected > 0")
        self.encoder = encoder
        self.epsilon = epsilon
        self.mean_expert = bool(mean_expert)
        self._norm = keras.layers.LayerNormalization(epsilon=epsilon, name="scenario_norm")
        self.scenario_vector: tf.Variable | None = None
        self.gate_logits: tf.Variable | None = None
        if self.mean_expert:
            self._mean = MeanEncoder(name="mean_expert")
            self._expert_norms = [
                keras.layers.LayerNormalization(epsilon=epsilon, name=f"expert_norm_{i}")
                for i in range(2)
            ]

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the ``[D]`` scenario vector (zeros: the encoder's own input at first).

        With the mean expert also the ``[2]`` gate logits (zeros: an even mix at first).
        """
        dim = int(input_shape[-1])
        self.scenario_vector = self.add_weight(
            name="scenario_vector", shape=(dim,), initializer="zeros", trainable=True
        )
        if self.mean_expert:
            self.gate_logits = self.add_weight(
                name="gate_logits", shape=(2,), initializer="zeros", trainable=True
            )
        super().build(input_shape)

    @property
    def mean_expert_weight(self) -> float | None:
        """The gate's weight on the mean expert (in [0, 1]); None without the expert."""
        if self.gate_logits is None:
            return None
        return float(tf.nn.softmax(self.gate_logits)[1])

    def call(
        self,
        inputs: tf.Tensor,
        padding_mask: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tf.Tensor:
        """Encodes a history in this scenario.

        Args:
            inputs: ``[B, L, D]`` item embeddings of a left-padded history.
            padding_mask: ``[B, L]`` bool/0-1, True for real items (None = all real).
            training: Enables the shared encoder's dropout.

        Returns:
            ``[B, L, D]`` causal outputs (zeros at padding positions).
        """
        padding_mask, mask = padding_masks(inputs, padding_mask)  # [B, L], [B, L, 1]
        vector = tf.cast(self.scenario_vector, inputs.dtype)  # [D]
        x = inputs + vector[tf.newaxis, tf.newaxis, :]  # [B, L, D]
        outputs = self.encoder(x, padding_mask=padding_mask, training=training)  # [B, L, D]
        if self.mean_expert:
            gate = tf.cast(tf.nn.softmax(self.gate_logits), inputs.dtype)  # [2]
            means = self._mean(x, padding_mask=padding_mask)  # [B, L, D]
            outputs = gate[0] * self._expert_norms[0](outputs) + gate[1] * self._expert_norms[1](
                means
            )  # [B, L, D]
        normed = self._norm(outputs)  # [B, L, D]
        return normed * tf.cast(mask, normed.dtype)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config with the wrapped encoder serialised."""
        return {
            **super().get_config(),
            "encoder": keras.layers.serialize(self.encoder),
            "epsilon": self.epsilon,
            "mean_expert": self.mean_expert,
        }
