"""DP-SGD training of the ``DP_KINDS`` and its privacy accounting (``dp-accounting``).

``TrainingConfig.privacy`` (:class:`~tfrec.training.privacy_config.PrivacyConfig`)
turns it on; each kind's ``fit`` builds a :class:`PrivateTraining` with its
number of training examples and passes it to
:func:`tfrec.training.loop.fit_model`, which attaches the DP-SGD step to the
model and counts the optimizer steps actually run (early stopping included).
:meth:`PrivateTraining.report` then gives the ``privacy/...`` entries of
``metrics.json``::

    privacy/epsilon, privacy/delta, privacy/noise_multiplier, privacy/l2_clip,
    privacy/steps, privacy/sampling_rate, privacy/microbatch_size

Accounting: one step samples a batch at rate ``q = batch_size / examples`` and
releases the clipped gradient sum plus Gaussian noise of std ``sigma * C``, so a
run is ``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(sigma)),
steps)`` for the RDP accountant (add-or-remove-one-example adjacency), and the
report is its ε at δ. tfrec's ``tf.data`` pipeline shuffles and cuts fixed-size
batches (sampling without replacement) rather than Poisson sampling: like TF
Privacy's ``compute_dp_sgd_privacy``, the accounting approximates it by Poisson
sampling. With microbatches of ``m > 1`` examples one example can move its
microbatch's clipped gradient by up to ``2 C``, so the accountant uses
``sigma / 2``.

What the guarantee covers: the weight updates, per training example (one row
of the kind's training data; see ``docs/privacy.md``). Not covered: the
vocabularies, data statistics computed from the training data (item
popularity for logQ / popularity negatives, the ranker's rating statistics),
the validation metrics used for early stopping and the logged losses.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.training.privacy_config import PrivacyConfig

logger = logging.getLogger(__name__)

#: Prefix of the privacy entries of ``metrics.json``.
METRIC_PREFIX = "privacy/"


def dp_sgd_event(sampling_rate: float, noise_multiplier: float, steps: int) -> Any:
    """The ``dp_accounting`` event of ``steps`` Poisson-sampled Gaussian steps."""
    import dp_accounting  # noqa: PLC0415

    step = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, steps)


def compute_epsilon(
    sampling_rate: float, noise_multiplier: float, steps: int, delta: float
) -> float:
    """ε of DP-SGD at ``delta`` (RDP accountant).

    Args:
        sampling_rate: ``q``, the probability that an example is in a batch (0 < q <= 1).
        noise_multiplier: ``sigma`` of the accountant (0: no privacy, ε = inf).
        steps: Optimizer steps run (0: ε = 0).
        delta: δ (0 < δ < 1).

    Returns:
        ε (``math.inf`` without noise).

    Raises:
        ValueError: An argument out of range (the message names it).
    """
    from dp_accounting import rdp  # noqa: PLC0415

    if not 0 < sampling_rate <= 1:
        raise ValueError(f"compute_epsilon: sampling_rate={sampling_rate}; expected 0 < q <= 1")
    if not 0 < delta < 1:
        raise ValueError(f"compute_epsilon: delta={delta}; expected 0 < delta < 1")
    if steps < 0 or noise_multiplier < 0:
        raise ValueError(
            f"compute_epsilon: steps={steps}, noise_multiplier={noise_multiplier}; expected >= 0"
        )
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_sgd_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


def noise_for_epsilon(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float
) -> float:
    """The smallest accountant ``sigma`` whose ``steps`` spend at most ``target_epsilon``.

    Uses ``dp_accounting.calibrate_dp_mechanism`` (a bracketed search) with the
    same RDP accountant and event as :func:`compute_epsilon`.

    Raises:
        ValueError: ``target_epsilon <= 0`` or ``steps < 1``.
    """
    import dp_accounting  # noqa: PLC0415
    from dp_accounting import rdp  # noqa: PLC0415

    if not target_epsilon > 0 or steps < 1:
        raise ValueError(
            f"noise_for_epsilon: target_epsilon={target_epsilon}, steps={steps}; "
            "expected target_epsilon > 0 and steps >= 1"
        )
    sigma = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant,
        lambda s: dp_sgd_event(sampling_rate, s, steps),
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(sigma)


class _StepCounter(keras.callbacks.Callback):
    """Records the optimizer's step count after each epoch and when training ends.

    ``fit_model`` puts it first, so ``on_train_end`` reads the count before the
    early-stopping callback restores the best epoch's weights.
    """

    def __init__(self, training: PrivateTraining):
        super().__init__()
        self.training = training

    def _record(self) -> None:
        self.training.steps = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Records the steps so far."""
        self._record()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Records the steps of the whole run."""
        self._record()


@dataclasses.dataclass
class PrivateTraining:
    """One kind's DP-SGD run: the resolved settings, the step count and the report.

    Build it with :meth:`create`. Attributes: ``config`` (the settings),
    ``batch_size``, ``num_examples`` (the privacy unit count), ``noise_multiplier``
    (``sigma`` of the step, picked from ``target_epsilon`` if set), ``delta``
    and ``steps`` (optimizer steps run, set during ``fit``). ``seed`` seeds the
    noise (tests only; None = OS entropy).
    """

    config: PrivacyConfig
    batch_size: int
    num_examples: int
    noise_multiplier: float
    delta: float
    steps: int = 0
    seed: int | None = None

    @classmethod
    def create(
        cls, training: Any, num_examples: int, steps_per_epoch: int | None = None
    ) -> PrivateTraining | None:
        """The DP-SGD run of a ``TrainingConfig`` (None when ``training.privacy`` is off).

        Args:
            training: The kind's :class:`~tfrec.training.config.TrainingConfig`.
            num_examples: Training examples (rows) the batches are drawn from.
            steps_per_epoch: Batches per epoch (default ``training.steps_per_epoch``,
                else ``ceil(num_examples / batch_size)``); with ``target_epsilon``
                the planned steps are ``epochs`` times this.

        Raises:
            ValueError: ``num_examples < 1``.
        """
        privacy: PrivacyConfig = training.privacy
        if not privacy.enabled:
            return None
        if num_examples < 1:
            raise ValueError(f"PrivateTraining: num_examples={num_examples}; expected >= 1")
        delta = privacy.delta if privacy.delta is not None else 1.0 / num_examples
        run = cls(privacy, training.batch_size, num_examples, privacy.noise_multiplier, delta)
        if privacy.target_epsilon is not None:
            per_epoch = steps_per_epoch or training.steps_per_epoch
            per_epoch = per_epoch or math.ceil(num_examples / training.batch_size)
            planned = training.epochs * per_epoch
            sigma = noise_for_epsilon(privacy.target_epsilon, run.sampling_rate, planned, delta)
            run.noise_multiplier = sigma * run.sensitivity_factor
            logger.info(
                "DP-SGD: noise multiplier %.4f for epsilon %.3g at delta %.3g over %d steps",
                run.noise_multiplier, privacy.target_epsilon, delta, planned,
            )  # fmt: skip
        return run

    @property
    def sampling_rate(self) -> float:
        """``q = batch_size / num_examples`` (at most 1)."""
        return min(1.0, self.batch_size / self.num_examples)

    @property
    def microbatch_size(self) -> int:
        """Examples per microbatch (1 = per-example clipping)."""
        return self.config.microbatch_size(self.batch_size)

    @property
    def sensitivity_factor(self) -> float:
        """How far one example can move the clipped sum, in units of ``l2_clip`` (1 or 2)."""
        return 1.0 if self.microbatch_size == 1 else 2.0

    def attach(self, model: keras.Model) -> None:
        """Makes ``model``'s train step DP-SGD (:func:`attach_dp_sgd`)."""
        attach_dp_sgd(
            model, self.config.l2_clip, self.noise_multiplier, self.microbatch_size, self.seed
        )

    def callback(self) -> keras.callbacks.Callback:
        """A callback recording :attr:`steps` (put it first in ``fit``'s callbacks)."""
        return _StepCounter(self)

    def epsilon(self) -> float:
        """ε at :attr:`delta` after :attr:`steps` steps."""
        sigma = self.noise_multiplier / self.sensitivity_factor
        return compute_epsilon(self.sampling_rate, sigma, self.steps, self.delta)

    def report(self) -> dict[str, float]:
        """The ``privacy/...`` entries of ``metrics.json``."""
        values = {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "l2_clip": self.config.l2_clip,
            "steps": float(self.steps),
            "sampling_rate": self.sampling_rate,
            "microbatch_size": float(self.microbatch_size),
        }
        return {f"{METRIC_PREFIX}{key}": float(value) for key, value in values.items()}


def attach_dp_sgd(
    model: keras.Model,
    l2_clip: float,
    noise_multiplier: float,
    microbatch_size: int = 1,
    seed: int | None = None,
) -> None:
    """Sets ``model.dp_sgd`` so that its train step is DP-SGD.

    Args:
        model: A compiled :class:`tfrec.models.base.TfrecModel`.
        l2_clip: ``C``, the clip norm of each microbatch gradient.
        noise_multiplier: ``sigma`` (noise std ``sigma * C``).
        microbatch_size: Examples per microbatch.
        seed: Noise seed (tests only).

    Raises:
        ValueError: ``model`` has no ``dp_sgd`` hook, is not compiled, has a
            loss-scale optimizer (mixed precision), or trains on several
            replicas / a parameter-server cluster.
    """
    import tensorflow as tf  # noqa: PLC0415

    from tfrec.models.dp_step import DpSgdStep  # noqa: PLC0415

    name = type(model).__name__
    if not hasattr(model, "dp_sgd"):
        raise ValueError(f"DP-SGD: {name} is not a TfrecModel (no dp_sgd train-step hook)")
    if getattr(model, "optimizer", None) is None:
        raise ValueError(f"DP-SGD: {name} is not compiled; call model.compile(optimizer) first")
    if isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer):
        raise ValueError(f"DP-SGD: {name} has a LossScaleOptimizer; mixed precision is refused")
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync > 1 or isinstance(
        strategy, tf.distribute.experimental.ParameterServerStrategy
    ):
        raise ValueError(
            f"DP-SGD: {name} trains under {type(strategy).__name__} with "
            f"{strategy.num_replicas_in_sync} replicas; expected one device (strategy 'default')"
        )
    model.dp_sgd = DpSgdStep(l2_clip, noise_multiplier, microbatch_size, seed=seed)
    model.train_function = None  # retrace the step with the DP-SGD branch
