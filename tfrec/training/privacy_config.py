"""``PrivacyConfig``: DP-SGD settings of a training loop (``TrainingConfig.privacy``).

Differentially private training (DP-SGD, Abadi et al. 2016) is a training
option of the kinds in :data:`DP_KINDS`: the train step of
:class:`tfrec.models.base.TfrecModel` clips each microbatch's gradient and adds
Gaussian noise (:mod:`tfrec.models.dp_step`), and :mod:`tfrec.training.privacy`
computes the privacy budget with Google's ``dp-accounting``. The other kinds
refuse a config asking for it (:data:`DP_REFUSED`, :func:`refuse_privacy`). This
module imports no TensorFlow (``tfrec --help`` and the configs read it).
"""

from __future__ import annotations

import dataclasses
import math

from tfrec.config import JsonConfig

#: The experiment kinds whose ``fit`` trains with DP-SGD when ``privacy`` is on.
DP_KINDS = ("retrieval", "ranking", "pipeline", "multi_scenario", "mf")
#: The kinds that refuse DP-SGD, and why (the reason ends :func:`refuse_privacy`'s message).
DP_REFUSED = {
    "lightgcn": (
        "LightGCN propagates embeddings over a graph built from every training pair, so one "
        "pair also changes the other pairs' gradients and per-example clipping does not bound "
        "its influence"
    ),
    "ease": (
        "EASE is solved in closed form (a matrix inverse of the item co-occurrence counts), "
        "so there is no per-example gradient to clip and noise"
    ),
}
#: Distribution strategies DP-SGD refuses (the noise would be drawn per replica).
DP_UNSUPPORTED_STRATEGIES = ("mirrored", "multi_worker", "parameter_server")


@dataclasses.dataclass
class PrivacyConfig(JsonConfig):
    """DP-SGD: per-microbatch gradient clipping and Gaussian noise in every train step.

    Off by default (``noise_multiplier=0`` and no ``target_epsilon``).

    Attributes:
        noise_multiplier: Noise std relative to ``l2_clip`` (sigma; 0 = DP off,
            unless ``target_epsilon`` picks it).
        l2_clip: Each microbatch's gradient is clipped to this global L2 norm (C > 0).
        microbatches: Microbatches per batch (must divide ``batch_size``);
            ``None`` = the batch size, i.e. per-example clipping. With
            microbatches of m > 1 examples one example can move its microbatch's
            clipped gradient by up to 2·C, so the accountant then uses sigma / 2.
        delta: δ of the reported (ε, δ); ``None`` = 1 / number of training
            examples (recorded in ``metrics.json``).
        target_epsilon: Pick sigma before training so that the planned steps
            (``epochs`` x steps per epoch) spend this ε at δ (early stopping can
            only spend less); exclusive with ``noise_multiplier``.
    """

    noise_multiplier: float = 0.0
    l2_clip: float = 1.0
    microbatches: int | None = None
    delta: float | None = None
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(
                f"PrivacyConfig.noise_multiplier={self.noise_multiplier}; expected a finite "
                "number >= 0 (0 = DP-SGD off)"
            )
        if not (math.isfinite(self.l2_clip) and self.l2_clip > 0):
            raise ValueError(f"PrivacyConfig.l2_clip={self.l2_clip}; expected a number > 0")
        if self.microbatches is not None and (
            isinstance(self.microbatches, bool) or self.microbatches < 1
        ):
            raise ValueError(
                f"PrivacyConfig.microbatches={self.microbatches!r}; expected an integer >= 1 "
                "or null (= the batch size: per-example clipping)"
            )
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError(
                f"PrivacyConfig.delta={self.delta}; expected 0 < delta < 1 "
                "or null (= 1 / number of training examples)"
            )
        if self.target_epsilon is not None:
            if not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
                raise ValueError(
                    f"PrivacyConfig.target_epsilon={self.target_epsilon}; expected a number > 0"
                )
            if self.noise_multiplier:
                raise ValueError(
                    f"PrivacyConfig.target_epsilon={self.target_epsilon} and "
                    f"noise_multiplier={self.noise_multiplier}; give one of them "
                    "(target_epsilon picks the noise multiplier)"
                )

    @property
    def enabled(self) -> bool:
        """Whether DP-SGD is on (a noise multiplier or a target ε)."""
        return self.noise_multiplier > 0 or self.target_epsilon is not None

    def microbatch_size(self, batch_size: int) -> int:
        """Examples per microbatch for batches of ``batch_size`` (1 = per-example)."""
        return 1 if self.microbatches is None else batch_size // self.microbatches

    def check_training(
        self, batch_size: int, mixed_precision: bool, strategy: str, owner: str = "TrainingConfig"
    ) -> None:
        """Checks DP-SGD against the training loop of ``owner``.

        Raises:
            ValueError: ``microbatches`` does not divide ``batch_size``, or DP-SGD
                with mixed precision or a multi-replica / multi-worker /
                parameter-server strategy.
        """
        if not self.enabled:
            return
        if self.microbatches is not None and batch_size % self.microbatches:
            raise ValueError(
                f"{owner}.privacy.microbatches={self.microbatches} does not divide "
                f"batch_size={batch_size}; expected a divisor (or null: per-example)"
            )
        if mixed_precision:
            raise ValueError(
                f"{owner}.privacy: DP-SGD with mixed_precision=True is not supported "
                "(the clipped float32 gradients would be loss-scaled); set mixed_precision=false"
            )
        if strategy in DP_UNSUPPORTED_STRATEGIES:
            raise ValueError(
                f"{owner}.privacy: DP-SGD with strategy={strategy!r} is not supported (noise "
                "would be drawn per replica); expected 'auto' or 'default' (one device)"
            )


def refuse_privacy(privacy: PrivacyConfig, field: str, kind: str) -> None:
    """Raises when ``privacy`` asks for DP-SGD for a kind that refuses it (:data:`DP_REFUSED`).

    Args:
        privacy: The kind's ``training.privacy``.
        field: Its path, for the message (e.g. ``LightGCNExperimentConfig.model.training.privacy``).
        kind: The experiment kind (a key of :data:`DP_REFUSED`).

    Raises:
        ValueError: DP-SGD is on (``noise_multiplier > 0`` or ``target_epsilon`` set).
    """
    if privacy.enabled:
        raise ValueError(
            f"{field}: noise_multiplier={privacy.noise_multiplier}, target_epsilon="
            f"{privacy.target_epsilon}; the {kind} kind does not support DP-SGD: "
            f"{DP_REFUSED[kind]}. Expected noise_multiplier=0 and target_epsilon=None "
            f"(DP-SGD kinds: {', '.join(DP_KINDS)})"
        )
