"""Where and how the model computes: distribution strategy, mixed precision, XLA.

Typical use::

    strategy = get_strategy()
    configure_precision(config.mixed_precision)
    with strategy.scope():
        model = TwoTowerModel(...)
        model.compile(make_optimizer(config), jit_compile=config.jit_compile)
    model.fit(dataset)
"""

from __future__ import annotations

import logging

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)

logger = logging.getLogger(__name__)


def get_strategy() -> tf.distribute.Strategy:
    """Picks the distribution strategy for the visible devices (and logs it).

    Returns:
        ``MirroredStrategy`` over all GPUs when there is more than one,
        ``OneDeviceStrategy("/gpu:0")`` with one GPU, else the default strategy
        (CPU). Batches given to ``fit`` are global batches; MirroredStrategy
        splits each over the replicas.
    """
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy()
        logger.info("Distribution: MirroredStrategy over %d GPUs", len(gpus))
    elif len(gpus) == 1:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        logger.info("Distribution: OneDeviceStrategy on /gpu:0")
    else:
        strategy = tf.distribute.get_strategy()
        logger.debug(
            "Distribution: default strategy on CPU (%d inter-op / %d intra-op threads)",
            tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads(),
        )
    return strategy


def configure_precision(mixed: bool) -> str:
    """Sets the global Keras dtype policy (call before building the model).

    Mixed precision computes in ``float16`` on GPUs (Keras then wraps the
    optimizer in a ``LossScaleOptimizer``, which :class:`tfrec.models.base.TfrecModel`
    honours) and in ``bfloat16`` on CPUs; variables, losses and scores stay float32.

    Args:
        mixed: Whether to use mixed precision.

    Returns:
        The policy name that was set.
    """
    if not mixed:
        name = "float32"
    elif tf.config.list_logical_devices("GPU"):
        name = "mixed_float16"
    else:
        name = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(name)
    log = logger.debug if name == "float32" else logger.info  # say so when not the default
    log("Precision policy: %s", name)
    return name
