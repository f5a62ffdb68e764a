"""The one optimizer factory of every model kind.

Every trainable model config holds an
:class:`~tfrec.training.config.OptimizerConfig` (its ``optimizer`` field,
validated when built); :func:`make_optimizer` turns it into a tf-keras optimizer.
"""

from __future__ import annotations

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.training.config import OptimizerConfig

__all__ = ["make_optimizer"]


def make_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """Builds the optimizer named by ``config.name``.

    Args:
        config: Name, ``learning_rate``, ``weight_decay`` (``adamw`` only) and
            ``clipnorm`` (0 = no clipping).

    Returns:
        A tf-keras optimizer.
    """
    kwargs: dict[str, float] = {"learning_rate": config.learning_rate}
    if config.clipnorm:
        kwargs["clipnorm"] = config.clipnorm
    if config.name == "adam":
        return keras.optimizers.Adam(**kwargs)
    if config.name == "adamw":
        return keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
    if config.name == "adagrad":
        return keras.optimizers.Adagrad(**kwargs)
    return keras.optimizers.SGD(**kwargs)
