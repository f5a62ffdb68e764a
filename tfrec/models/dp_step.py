"""The DP-SGD train step: per-microbatch gradient clipping plus Gaussian noise.

:class:`DpSgdStep` replaces the gradient of :meth:`tfrec.models.base.TfrecModel.train_step`
when set as the model's ``dp_sgd`` (:func:`tfrec.training.privacy.attach_dp_sgd`
does it from a :class:`~tfrec.training.privacy_config.PrivacyConfig`). For a
batch of ``B`` examples split into ``K = ceil(B / m)`` microbatches of ``m``
examples (the last one of a short final batch may be smaller)::

    g_k   = grad of compute_loss(microbatch k)               # one per microbatch
    g_k  <- g_k * min(1, C / ||g_k||)                         # global L2 norm over all variables
    g     = (sum_k g_k + N(0, (sigma * C)^2 I)) / K + grad(regularization)

The noise covers every coordinate of every trainable variable: embedding
gradients (``IndexedSlices``) are made dense first, so rows no example touched
get noise too. The regularization loss (weight penalties, independent of the
data) is differentiated once, outside the clipping. The microbatches run one
after another in a ``tf.while_loop`` (the first one outside it, so that a model
still unbuilt creates its variables there).

The privacy unit is one training example (one row of the kind's training
dataset; see ``docs`` / :mod:`tfrec.training.privacy`). A loss that couples
the examples of a batch (the retrieval model's in-batch softmax) sees only
the examples of its microbatch.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)


def _dense(gradient: Any, variable: tf.Variable) -> tf.Tensor:
    """``gradient`` of ``variable`` as a dense float32 tensor (zeros when ``None``)."""
    if gradient is None:
        return tf.zeros_like(variable, dtype=tf.float32)
    if isinstance(gradient, tf.IndexedSlices):  # embedding rows: scatter into the full table
        rows = tf.shape(variable)[0]
        dense = tf.math.unsorted_segment_sum(gradient.values, gradient.indices, rows)
        return tf.reshape(tf.cast(dense, tf.float32), tf.shape(variable))
    return tf.cast(gradient, tf.float32)


class DpSgdStep:
    """Computes the clipped, noised mean gradient of a batch and applies it.

    A plain Python object (not a Keras layer), so attaching it to a model adds
    no variable to the model's checkpoints.

    Args:
        l2_clip: ``C``: every microbatch gradient is clipped to this global L2 norm.
        noise_multiplier: ``sigma``: the noise std is ``sigma * C`` per coordinate
            of the summed gradient (0 = clipping only).
        microbatch_size: ``m``: examples per microbatch (1 = per-example clipping).
        seed: Seeds the noise generator (tests only: noise from a known seed
            can be subtracted, so a private run leaves it ``None`` = OS entropy).

    Raises:
        ValueError: ``l2_clip <= 0``, ``noise_multiplier < 0`` or ``microbatch_size < 1``.
    """

    def __init__(
        self,
        l2_clip: float,
        noise_multiplier: float,
        microbatch_size: int = 1,
        seed: int | None = None,
    ) -> None:
        if not l2_clip > 0:
            raise ValueError(f"DpSgdStep: l2_clip={l2_clip}; expected > 0")
        if not noise_multiplier >= 0:
            raise ValueError(f"DpSgdStep: noise_multiplier={noise_multiplier}; expected >= 0")
        if isinstance(microbatch_size, bool) or microbatch_size < 1:
            raise ValueError(f"DpSgdStep: microbatch_size={microbatch_size!r}; expected >= 1")
        self.l2_clip = float(l2_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.microbatch_size = int(microbatch_size)
        self.generator = (
            tf.random.Generator.from_seed(seed)
            if seed is not None
            else tf.random.Generator.from_non_deterministic_state()
        )

    def _clipped(
        self, model: Any, inputs: Any, index: tf.Tensor, size: tf.Tensor
    ) -> tuple[list[tf.Tensor], tf.Tensor]:
        """The clipped gradient (dense, per variable) and loss of microbatch ``index``."""
        m = self.microbatch_size
        start = index * m
        stop = tf.minimum(start + m, size)
        piece = tf.nest.map_structure(lambda t: t[start:stop], inputs)
        with tf.GradientTape() as tape:
            loss = tf.cast(model.compute_loss(piece, training=True), tf.float32)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        dense = [_dense(g, v) for g, v in zip(gradients, variables, strict=True)]
        clipped, _ = tf.clip_by_global_norm(dense, self.l2_clip)
        return clipped, loss

    def gradients(self, model: Any, inputs: Any) -> tuple[list[tf.Tensor], tf.Tensor]:
        """The private mean gradient of the data loss, per trainable variable, and the mean loss.

        Args:
            model: A ``TfrecModel`` (its ``compute_loss`` and trainable variables).
            inputs: A batch (nested structure of tensors, batch axis 0).

        Returns:
            ``(gradients, loss)``: dense float32 tensors shaped like
            ``model.trainable_variables``, and the mean microbatch loss (scalar).
        """
        size = tf.shape(tf.nest.flatten(inputs)[0])[0]
        count = (size + self.microbatch_size - 1) // self.microbatch_size  # K
        first, first_loss = self._clipped(model, inputs, tf.constant(0), size)  # builds variables

        def body(i: tf.Tensor, sums: list[tf.Tensor], total: tf.Tensor) -> tuple:
            clipped, loss = self._clipped(model, inputs, i, size)
            return i + 1, [s + c for s, c in zip(sums, clipped, strict=True)], total + loss

        _, sums, total = tf.while_loop(
            lambda i, sums, total: i < count, body, (tf.constant(1), first, first_loss)
        )
        scale = tf.cast(count, tf.float32)
        std = self.noise_multiplier * self.l2_clip
        noised = [
            (s + self.generator.normal(tf.shape(s), stddev=std)) / scale if std else s / scale
            for s in sums
        ]
        return noised, total / scale

    def train_step(self, model: Any, inputs: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Applies one DP-SGD update to ``model``; returns ``(loss, regularization_loss)``."""
        gradients, loss = self.gradients(model, inputs)
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            regularization = [tf.cast(tf.reduce_sum(x), tf.float32) for x in model.losses]
            regularization_loss = tf.add_n(regularization) if regularization else tf.constant(0.0)
        if regularization:  # data-independent: no clipping, no noise
            extra = tape.gradient(regularization_loss, variables)
            gradients = [
                g if e is None else g + _dense(e, v)
                for g, e, v in zip(gradients, extra, variables, strict=True)
            ]
        model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss, regularization_loss
