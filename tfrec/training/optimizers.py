"""The one optimizer factory of every model kind, and the checks of its settings.

A model config that trains (``RetrievalConfig``, ``RankingConfig``) has the
fields ``optimizer`` (:data:`Optimizer`), ``learning_rate``, ``weight_decay``
and ``clipnorm``; :func:`check_optimizer_settings` validates them in the
config's ``__post_init__`` and :func:`make_optimizer` builds the tf-keras optimizer.
"""

from __future__ import annotations

from typing import Protocol

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import check_choice
from tfrec.names import OptimizerName as Optimizer

__all__ = ["Optimizer", "check_optimizer_settings", "make_optimizer"]


class OptimizerSettings(Protocol):
    """The config fields :func:`make_optimizer` reads."""

    optimizer: str
    learning_rate: float
    weight_decay: float
    clipnorm: float


def check_optimizer_settings(owner: str, settings: OptimizerSettings) -> None:
    """Validates the optimizer fields of the config named ``owner``.

    Raises:
        ValueError: An unknown optimizer, ``learning_rate <= 0``, a negative
            ``weight_decay``/``clipnorm``, or ``weight_decay`` without ``adamw``
            (the message names ``owner.field``, the value and what was expected).
    """
    check_choice(f"{owner}.optimizer", settings.optimizer, Optimizer)
    if not settings.learning_rate > 0:
        raise ValueError(f"{owner}.learning_rate={settings.learning_rate}; expected > 0")
    for name in ("weight_decay", "clipnorm"):
        if not getattr(settings, name) >= 0:
            raise ValueError(f"{owner}.{name}={getattr(settings, name)}; expected >= 0")
    if settings.weight_decay and settings.optimizer != "adamw":
        raise ValueError(
            f"{owner}.weight_decay={settings.weight_decay} needs optimizer='adamw' "
            f"(got {settings.optimizer!r})"
        )


def make_optimizer(settings: OptimizerSettings) -> keras.optimizers.Optimizer:
    """Builds the optimizer named by ``settings.optimizer``.

    Args:
        settings: A model config; uses ``optimizer``, ``learning_rate``,
            ``weight_decay`` (``adamw`` only) and ``clipnorm`` (0 = no clipping).

    Returns:
        A tf-keras optimizer.
    """
    kwargs: dict[str, float] = {"learning_rate": settings.learning_rate}
    if settings.clipnorm:
        kwargs["clipnorm"] = settings.clipnorm
    if settings.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=settings.weight_decay, **kwargs)
    if settings.optimizer == "adagrad":
        return keras.optimizers.Adagrad(**kwargs)
    return keras.optimizers.SGD(**kwargs)
