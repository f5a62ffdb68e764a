"""The typed sub-configs every trainable model config composes.

``RetrievalConfig`` and ``RankingConfig`` (the architecture and loss of each
model kind) both hold an :class:`OptimizerConfig` (``optimizer``) and a
:class:`TrainingConfig` (``training``: epochs, batch size, early stopping,
seed, precision, XLA, distribution strategy), so a setting means the same
thing, is checked the same way and is spelled the same in every kind's
``config.json``::

    RetrievalConfig(
        encoder="transformer",
        optimizer=OptimizerConfig(name="adamw", learning_rate=2e-3, weight_decay=1e-4),
        training=TrainingConfig(epochs=18, batch_size=128, patience=3),
    )

Configs saved before these sub-configs existed had the same fields flat on the
model config; :func:`nest_flat_fields` moves them (``JsonConfig.from_dict``
calls it through each model config's ``upgrade_dict``), and
:func:`tfrec.cli.common.apply_overrides` routes a flat ``--set epochs=3`` to
the one sub-config that has the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrec.config import JsonConfig
from tfrec.names import OptimizerName, StrategyName
from tfrec.training.privacy_config import PrivacyConfig

#: Metrics early stopping minimises (every other monitored metric is maximised).
MINIMISED_METRICS = ("rmse", "mae", "loss")


@dataclasses.dataclass
class OptimizerConfig(JsonConfig):
    """The optimizer of a model (:func:`tfrec.training.optimizers.make_optimizer`).

    Attributes:
        name: ``"adam"``, ``"adamw"``, ``"adagrad"`` or ``"sgd"``.
        learning_rate: Learning rate (> 0).
        weight_decay: Decoupled weight decay (``"adamw"`` only; >= 0).
        clipnorm: Clip each gradient to this norm (0 = off).
    """

    name: OptimizerName = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    clipnorm: float = 0.0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"OptimizerConfig.learning_rate={self.learning_rate}; expected > 0")
        for field in ("weight_decay", "clipnorm"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"OptimizerConfig.{field}={getattr(self, field)}; expected >= 0")
        if self.weight_decay and self.name != "adamw":
            raise ValueError(
                f"OptimizerConfig.weight_decay={self.weight_decay} needs name='adamw' "
                f"(got name={self.name!r})"
            )


@dataclasses.dataclass
class TrainingConfig(JsonConfig):
    """The training loop of a model: length, batches, early stopping, devices.

    Attributes:
        epochs: Maximum training epochs.
        batch_size: Examples per training batch (the global batch: a
            distribution strategy splits it over its replicas).
        patience: Epochs without validation improvement before early stopping.
        monitor: Validation metric that picks the best epoch and stops early
            (``"ndcg@10"``, ``"rmse"``, ...); ``None`` = the model kind's default
            (retrieval ``ndcg@10``; ranker ``rmse`` for ratings, else
            ``ndcg@<ndcg_k>``). :data:`MINIMISED_METRICS` are minimised.
        seed: Random seed for weights, shuffling and sampled negatives.
        mixed_precision: Compute in float16 (GPU) / bfloat16 (CPU), variables
            and losses in float32.
        jit_compile: XLA-compile the train step. Off by default: the steps have
            data-dependent shapes, so XLA recompiles often (on CPU it was ~6x
            slower on Amazon Beauty: 0.16 vs 0.98 steps/s at batch 256).
        strategy: ``"auto"`` (MirroredStrategy over several GPUs, one GPU, else
            the default CPU strategy; inside a ``tfrec train --workers`` worker,
            the worker's MultiWorkerMirroredStrategy), ``"default"`` (no
            distribution), ``"mirrored"`` (MirroredStrategy over every visible
            device), ``"multi_worker"`` (MultiWorkerMirroredStrategy from
            ``TF_CONFIG``: :mod:`tfrec.training.worker`) or ``"parameter_server"``
            (ParameterServerStrategy on the chief of a ``TF_CONFIG`` with ``ps``
            tasks, embedding tables sharded over them:
            :mod:`tfrec.training.parameter_server`; ``"auto"`` means it there too).
        steps_per_epoch: End each epoch after this many batches (None = one
            pass over the training data); for smoke runs and for projecting the
            time of an epoch too long to run (``benchmarks/scale.py``).
        privacy: DP-SGD (:class:`~tfrec.training.privacy_config.PrivacyConfig`;
            off by default).
    """

    epochs: int = 50
    batch_size: int = 256
    patience: int = 5
    monitor: str | None = None
    seed: int = 42
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: StrategyName = "auto"
    steps_per_epoch: int | None = None
    privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)

    def __post_init__(self) -> None:
        for field in ("epochs", "batch_size", "patience", "steps_per_epoch"):
            value = getattr(self, field)
            if field == "steps_per_epoch" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingConfig.{field}={value!r}; expected an integer >= 1")
        if self.monitor is not None and not self.monitor:
            raise ValueError(
                "TrainingConfig.monitor is empty; expected a metric name such as 'ndcg@10' "
                "or null for the model's default"
            )
        self.privacy.check_training(self.batch_size, self.mixed_precision, self.strategy)

    def monitor_mode(self, default: str) -> tuple[str, str]:
        """The monitored metric (``default`` when unset) and ``"min"``/``"max"``."""
        metric = self.monitor or default
        return metric, "min" if metric in MINIMISED_METRICS else "max"


#: Where each sub-config field lived before the sub-configs existed (flat on the
#: model config), and the old spellings (``optimizer`` was the optimizer's name,
#: the ranker's ``early_stopping_patience`` is ``training.patience``).
FLAT_FIELDS: dict[str, str] = {
    **{f.name: f"training.{f.name}" for f in dataclasses.fields(TrainingConfig)},
    **{f.name: f"optimizer.{f.name}" for f in dataclasses.fields(OptimizerConfig)},
    "optimizer": "optimizer.name",
    "early_stopping_patience": "training.patience",
}
del FLAT_FIELDS["name"]  # never a flat field: ``name`` alone is ambiguous


def nest_flat_fields(data: dict[str, Any], moves: dict[str, str] | None = None) -> dict[str, Any]:
    """Moves the flat fields of an old model config into its sub-config dicts.

    Args:
        data: A model config dict, as saved by any tfrec version.
        moves: Old flat name -> ``"section.field"``; default :data:`FLAT_FIELDS`
            (optimizer and training loop). A key that names a section and holds a
            dict is already nested and stays.

    Returns:
        ``data`` itself when nothing is flat, else a copy with the flat keys moved.
    """
    moves = FLAT_FIELDS if moves is None else moves
    flat = [
        key
        for key in data
        if key in moves and not (key == moves[key].split(".")[0] and isinstance(data[key], dict))
    ]
    if not flat:
        return data
    out = {key: value for key, value in data.items() if key not in flat}
    for key in flat:
        section, field = moves[key].split(".")
        nested = out.get(section)
        out[section] = {**(nested if isinstance(nested, dict) else {}), field: data[key]}
    return out
