"""What each cell of the scenarios benchmark trains: its config and its key.

A cell is one training run of ``benchmarks/scenarios.py`` stored in ``--cells``
under its key; it is reused only while the config built here is unchanged, so
these builders are the single definition of what the benchmark compares:

* :func:`separate_config` -> a scenario alone with its preset (a share of its users);
* :func:`joint_config` -> one model over several scenarios (the joint defaults);
* :func:`joint_architecture_config` -> a scenario alone with the joint model's architecture
  (:func:`shared_arch_config`: only where its preset's differs);
* :class:`AdaptCellConfig` -> an adapted cell: its source run's config, target, schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from benchmarks._scenarios_report import METRICS

#: The real scenarios, and the synthetic ones of ``--quick`` (the smallest last).
DEFAULT_SCENARIOS = ("beauty", "sports", "lastfm", "ml-latest-small")
QUICK_SCENARIOS = ("synthetic_a", "synthetic_b", "synthetic_small")
QUICK_MODEL = {"encoder": "gru", "embedding_dim": 16, "max_history": 10, "epochs": 8}


def _overrides(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The model overrides every cell shares: the seed, ``--quick``'s tiny model, ``--epochs``."""
    out: dict[str, Any] = {"training.seed": seed}
    if args.quick:
        out.update(QUICK_MODEL)
    if args.epochs is not None:
        out["epochs"] = args.epochs
    return out


def metrics_of(metrics: dict[str, float], prefix: str = "", part: str = "test") -> dict[str, float]:
    """The benchmark's :data:`METRICS` of one split (``{prefix}{part}/ndcg@10`` -> ``ndcg@10``)."""
    return {m: metrics[f"{prefix}{part}/{m}"] for m in METRICS if f"{prefix}{part}/{m}" in metrics}


def separate_config(name: str, seed: int, args: argparse.Namespace, fraction: float = 1.0) -> Any:
    """The config of scenario ``name`` trained alone: its preset (``fraction`` of its users)."""
    from tfrec.cli.common import apply_overrides
    from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig
    from tfrec.training.retrieval_config import PRESETS, RetrievalExperimentConfig

    if name in PRESETS:
        config = RetrievalExperimentConfig.for_dataset(name, data_dir=args.data_dir)
    else:  # a synthetic scenario: its data through the multi-scenario config
        config = MultiScenarioExperimentConfig.for_scenarios([name]).scenario_config(name)
        config.model = dataclasses.replace(config.model, scenario_layers=False, mean_expert=False)
    config.model = apply_overrides(config.model, _overrides(args, seed))
    config.data = dataclasses.replace(config.data, train_user_fraction=fraction)
    return config


def joint_config(scenarios: Sequence[str], seed: int, args: argparse.Namespace) -> Any:
    """The config of one model over ``scenarios`` (the first one's preset model)."""
    from tfrec.cli.common import apply_overrides
    from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig

    config = MultiScenarioExperimentConfig.for_scenarios(list(scenarios), data_dir=args.data_dir)
    config.model = apply_overrides(config.model, _overrides(args, seed))
    return config


def joint_architecture_config(
    scenarios: Sequence[str], name: str, seed: int, args: argparse.Namespace
) -> Any:
    """Scenario ``name`` alone with the joint model's settings for it, on its own schedule.

    The joint model's scenario config of ``name`` (:func:`joint_config`: encoder,
    user embedding, scenario layers, history length) with ``name``'s preset
    maximum epochs and patience.
    """
    joint = joint_config(scenarios, seed, args)
    alone = separate_config(name, seed, args).model
    config = joint.scenario_config(name)
    config.model.training = dataclasses.replace(
        config.model.training, epochs=alone.training.epochs, patience=alone.training.patience
    )
    return config


def shared_arch_config(
    scenarios: Sequence[str], name: str, seed: int, args: argparse.Namespace
) -> Any | None:
    """:func:`joint_architecture_config`, or None where ``name``'s preset has that architecture.

    It splits the gap between a joint model and a separate preset whose
    architecture differs (ml-latest-small: mean encoder over 200 items; Last.fm:
    2 attention heads gated with the history's mean) into what the architecture
    costs and what sharing costs.
    """
    from tfrec.models.multi_scenario import SHARED_ENCODER_FIELDS

    config = joint_architecture_config(scenarios, name, seed, args)
    alone = separate_config(name, seed, args).model
    architecture = (*SHARED_ENCODER_FIELDS, "max_history", "loss")
    if all(getattr(alone, f) == getattr(config.model, f) for f in architecture):
        return None
    return config


def separate_key(name: str, seed: int, fraction: float = 1.0) -> str:
    """The cell key of ``name`` trained alone (``separate_beauty_s1``, ``..._f0.25``)."""
    return f"separate_{name}_s{seed}" + ("" if fraction == 1.0 else f"_f{fraction:g}")


def joint_key(scenarios: Sequence[str], seed: int) -> str:
    """The cell key of one model over ``scenarios`` (``joint_beauty+lastfm_s1``)."""
    return f"joint_{'+'.join(scenarios)}_s{seed}"


def scratch_schedule(target: str, seed: int, args: argparse.Namespace) -> tuple[int, int]:
    """Maximum epochs and patience of ``target``'s from-scratch runs."""
    training = separate_config(target, seed, args).model.training
    return training.epochs, training.patience


@dataclasses.dataclass
class AdaptCellConfig:
    """What an adapted cell measured: the source joint run's config, target, schedule, unfreezing.

    A stored cell is read back through :meth:`from_dict`, which reads its source
    through the multi-scenario config class, so a field added to that class since
    (at its default) does not make the cell differ.
    """

    source: dict[str, Any]
    target: str
    schedule: list[int]
    unfreeze: list[float]

    def to_dict(self) -> dict[str, Any]:
        """The cell's config as JSON values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptCellConfig:
        """A stored cell's config, its source completed with the current defaults."""
        from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig

        source = MultiScenarioExperimentConfig.from_dict(data["source"]).to_dict()
        fields = {k: data[k] for k in ("target", "schedule", "unfreeze")}
        return cls(source=source, **fields)
