"""Shared TFRS model base: ``compute_loss`` contract plus a precision/replica-safe train step."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)


class TfrecModel(tfrs.models.Model):
    """``tfrs.models.Model`` whose train step also works with mixed precision and replicas.

    Subclasses implement ``compute_loss(features, training)`` exactly as for
    ``tfrs.models.Model`` and are trained with ``model.compile(optimizer);
    model.fit(dataset)``. Compared with the TFRS train step this one

    * scales the loss when the optimizer is a ``LossScaleOptimizer`` (Keras wraps
      the optimizer in one under the ``mixed_float16`` policy), so small float16
      gradients do not underflow;
    * divides the gradient loss by the number of replicas, because
      ``MirroredStrategy`` sums the replicas' gradients;
    * reports ``loss`` / ``regularization_loss`` / ``total_loss`` in float32 as
      running means over the epoch (the TFRS step reports the last batch only).

    With :attr:`dp_sgd` set (:func:`tfrec.training.privacy.attach_dp_sgd`) the
    step is DP-SGD instead: clipped per-microbatch gradients plus Gaussian noise
    (:class:`tfrec.models.dp_step.DpSgdStep`).

    Args:
        **kwargs: Passed to ``tfrs.models.Model`` (e.g. ``name``).
    """

    #: The DP-SGD step (a :class:`tfrec.models.dp_step.DpSgdStep`), or None: the plain step.
    dp_sgd: Any = None

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._loss_means = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "regularization_loss", "total_loss")
        }

    def _loss_terms(self, inputs: Any, training: bool) -> tuple[tf.Tensor, tf.Tensor]:
        loss = tf.cast(self.compute_loss(inputs, training=training), tf.float32)
        regularization = [tf.cast(tf.reduce_sum(x), tf.float32) for x in self.losses]
        regularization_loss = tf.add_n(regularization) if regularization else tf.constant(0.0)
        return loss, regularization_loss

    def _logs(self, loss: tf.Tensor, regularization_loss: tf.Tensor) -> dict[str, tf.Tensor]:
        values = {
            "loss": loss,
            "regularization_loss": regularization_loss,
            "total_loss": loss + regularization_loss,
        }
        for name, value in values.items():
            self._loss_means[name].update_state(value)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        """One optimisation step on a batch (called by ``fit``)."""
        if self.dp_sgd is not None:
            return self._logs(*self.dp_sgd.train_step(self, inputs))
        optimizer = self.optimizer
        scaled = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, regularization_loss = self._loss_terms(inputs, training=True)
            objective = (loss + regularization_loss) / replicas
            if scaled:
                objective = optimizer.get_scaled_loss(objective)
        variables = self.trainable_variables
        gradients = tape.gradient(objective, variables)
        if scaled:
            gradients = optimizer.get_unscaled_gradients(gradients)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return self._logs(loss, regularization_loss)

    def test_step(self, inputs: Any) -> dict[str, tf.Tensor]:
        """Computes the loss on a batch without training (called by ``evaluate``)."""
        loss, regularization_loss = self._loss_terms(inputs, training=False)
        return self._logs(loss, regularization_loss)
