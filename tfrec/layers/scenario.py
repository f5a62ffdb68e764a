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

With ``adapter_dim=r > 0`` the scenario also has its own **adapter** (Houlsby et
al. 2019), a residual bottleneck on the (mixed) encoder outputs before its
LayerNorm, so each scenario has a little capacity of its own on top of the shared
encoder (and a new scenario adapted on a frozen encoder trains more than a vector
and a norm)::

    h + W_up gelu(W_down h + b_down) + b_up      # [B, L, D] -> [B, L, r] -> [B, L, D]

``W_up`` and ``b_up`` start at zero, so a new adapter starts as the identity.

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
        adapter_dim: Width ``r`` of this scenario's residual bottleneck adapter
            (0: none; see the module docstring).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: ``epsilon <= 0`` or ``adapter_dim`` not an integer >= 0.
    """

    def __init__(
        self,
        encoder: keras.layers.Layer | dict[str, Any],
        epsilon: float = 1e-6,
        mean_expert: bool = False,
        adapter_dim: int = 0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.layers.deserialize(encoder)
        if not epsilon > 0:
            raise ValueError(f"ScenarioEncoder: epsilon={epsilon}; expected > 0")
        if not _is_count(adapter_dim) or adapter_dim < 0:
            raise ValueError(
                f"ScenarioEncoder: adapter_dim={adapter_dim!r}; expected an integer >= 0"
            )
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
        self.adapter_dim = adapter_dim
        # Created here, not in build: a checkpoint restored before the first call
        # (a reloaded sub-run) then finds the adapter's variables when they are built.
        self.adapter = ResidualAdapter(adapter_dim, name="adapter") if adapter_dim else None

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
        if self.adapter is not None:
            outputs = self.adapter(outputs)  # [B, L, D]
        normed = self._norm(outputs)  # [B, L, D]
        return normed * tf.cast(mask, normed.dtype)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config with the wrapped encoder serialised."""
        return {
            **super().get_config(),
            "encoder": keras.layers.serialize(self.encoder),
            "epsilon": self.epsilon,
            "mean_expert": self.mean_expert,
            "adapter_dim": self.adapter_dim,
        }


@keras.saving.register_keras_serializable(package="tfrec")
class ResidualAdapter(keras.layers.Layer):
    """A residual bottleneck ``h + W_up gelu(W_down h + b_down) + b_up`` (Houlsby et al. 2019).

    By default ``W_up`` and ``b_up`` start at zero, so a new adapter is the
    identity and training moves it away only as far as the loss asks.

    Args:
        bottleneck_dim: The width ``r`` of the bottleneck (>= 1).
        up_initializer: Initializer of ``W_up`` (a Keras initializer or its name).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: ``bottleneck_dim`` is not an integer >= 1.
    """

    def __init__(self, bottleneck_dim: int, up_initializer: Any = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_count(bottleneck_dim) or bottleneck_dim < 1:
            raise ValueError(
                f"ResidualAdapter: bottleneck_dim={bottleneck_dim!r}; expected an integer >= 1"
            )
        self.bottleneck_dim = bottleneck_dim
        self.up_initializer = keras.initializers.get(up_initializer)

    def build(self, input_shape: tf.TensorShape) -> None:
        """Creates the weights.

        ``W_down [D, r]`` Glorot-uniform, ``W_up [r, D]`` by ``up_initializer``,
        the biases ``b_down [r]`` and ``b_up [D]`` zeros.
        """
        dim, width = int(input_shape[-1]), self.bottleneck_dim
        self.down_kernel = self.add_weight(
            name="down_kernel", shape=(dim, width), initializer="glorot_uniform"
        )
        self.down_bias = self.add_weight(name="down_bias", shape=(width,), initializer="zeros")
        self.up_kernel = self.add_weight(
            name="up_kernel", shape=(width, dim), initializer=self.up_initializer
        )
        self.up_bias = self.add_weight(name="up_bias", shape=(dim,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """``[..., D]`` -> ``[..., D]``: the inputs plus the bottleneck's output."""
        hidden = tf.nn.gelu(
            tf.tensordot(inputs, tf.cast(self.down_kernel, inputs.dtype), 1)
            + tf.cast(self.down_bias, inputs.dtype),
            approximate=False,
        )  # [..., r]
        up = tf.tensordot(hidden, tf.cast(self.up_kernel, inputs.dtype), 1)  # [..., D]
        return inputs + up + tf.cast(self.up_bias, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config."""
        return {
            **super().get_config(),
            "bottleneck_dim": self.bottleneck_dim,
            "up_initializer": keras.initializers.serialize(self.up_initializer),
        }


def _is_count(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (a bool is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)
