"""Where and how the model computes: distribution strategy, mixed precision, XLA.

Typical use::

    strategy = get_strategy(config.training.strategy)
    configure_precision(config.training.mixed_precision)
    with strategy.scope():
        model = TwoTowerModel(...)
        model.compile(make_optimizer(config.optimizer), jit_compile=config.training.jit_compile)
    model.fit(dataset)
"""

from __future__ import annotations

import logging

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import check_choice
from tfrec.names import StrategyName

logger = logging.getLogger(__name__)


def get_strategy(name: StrategyName = "auto") -> tf.distribute.Strategy:
    """The distribution strategy named by ``TrainingConfig.strategy`` (and logs it).

    Args:
        name: ``"auto"``: ``MirroredStrategy`` over all GPUs when there is more
            than one, ``OneDeviceStrategy("/gpu:0")`` with one GPU, else the
            default strategy (CPU). ``"default"``: no distribution.
            ``"mirrored"``: ``MirroredStrategy`` over every visible device (the
            local CPU alone when there is no GPU). ``"multi_worker"``:
            ``MultiWorkerMirroredStrategy`` over the cluster of ``TF_CONFIG``
            (:mod:`tfrec.training.worker`; one instance per process, created
            before TensorFlow runs anything: ``tfrec train --workers N`` and
            ``--worker-index`` do that; ``"auto"`` then means it too). Batches
            given to ``fit`` are global batches; the strategy splits each over
            the replicas (and workers). ``"parameter_server"``:
            ``ParameterServerStrategy`` on the chief of a ``TF_CONFIG`` cluster
            with ``ps`` tasks, large embedding tables sharded over them
            (:mod:`tfrec.training.parameter_server`; ``"auto"`` means it too
            when ``TF_CONFIG`` names ``ps`` tasks).

    Raises:
        ValueError: An unknown ``name``; ``"default"``/``"mirrored"`` in a
            process that joined a multi-worker or parameter-server cluster;
            ``"parameter_server"`` without ``ps`` tasks in ``TF_CONFIG`` or in
            a process that is not the chief.
    """
    check_choice("TrainingConfig.strategy", name, StrategyName)
    from tfrec.training import parameter_server, worker  # noqa: PLC0415

    if name == "multi_worker" or (name == "auto" and worker.current() is not None):
        return worker.joined_strategy()
    if worker.current() is not None:
        raise ValueError(
            f"TrainingConfig.strategy={name!r}, but this process is worker "
            f"{worker.current().index} of a multi-worker cluster; use 'auto' or 'multi_worker'"
        )
    if name == "parameter_server" or (name == "auto" and parameter_server.wanted()):
        return parameter_server.joined_strategy()
    if parameter_server.current() is not None:
        raise ValueError(
            f"TrainingConfig.strategy={name!r}, but this process is the chief of a "
            "parameter-server cluster; use 'auto' or 'parameter_server'"
        )
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy()
        logger.info(
            "Distribution: MirroredStrategy over %d replica(s)", strategy.num_replicas_in_sync
        )
    elif name == "auto" and len(gpus) == 1:
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
        logger.info("Distribution: OneDeviceStrategy on /gpu:0")
    else:
        strategy = tf.distribute.get_strategy()
        logger.debug(
            "Distribution: default strategy (%d GPU(s); %d inter-op / %d intra-op threads)",
            len(gpus),
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
