"""Adapt a trained multi-scenario model to a new scenario (``tfrec adapt``).

A team adds a new surface (a shop category, an app) to a multi-scenario model
without retraining the others::

    result = adapt_scenario("runs/multi", "lastfm", "runs/multi+lastfm")
    result.metrics["lastfm/test/ndcg@10"]
    result.export("exports")   # one servable per scenario, the new one included

What is trained: the new scenario's own parts only — its item embeddings (item
tower), its scenario vector and output LayerNorm
(:class:`~tfrec.layers.scenario.ScenarioEncoder`) and its user embedding if the
model has one — on top of the FROZEN shared history encoder, with the usual
early stopping on the new scenario's validation metric. ``unfreeze_epochs > 0``
then trains the shared encoder too for that many epochs (learning rate times
``unfreeze_lr_factor``) on the new scenario's data. Those epochs are kept only
if they beat the frozen stage's best validation value of the new scenario's
monitored metric (chosen on validation, like every epoch); otherwise the
frozen-stage weights come back, encoder included. When kept, the encoder has
moved, so every old scenario is re-evaluated on it (its numbers may move)
instead of keeping its saved metrics and its own best epoch's weights. The
frozen stage's metrics of the new scenario stay in ``metrics`` as
``<dataset>/frozen/<split>/<metric>``, beside ``adapt/frozen_train_seconds`` and
``adapt/unfrozen_kept`` (1.0 or 0.0).

The result is a complete ``multi_scenario`` run in ``output_dir`` (the old
scenarios' sub-runs re-saved, the new one added, ``adapt.json`` recording what
was done); the source run is not modified.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

from tfrec.training.config import TrainingConfig
from tfrec.training.experiment import RunLayout, read_kind, write_json
from tfrec.training.multi_scenario import MultiScenarioExperiment
from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig
from tfrec.training.optimizers import make_optimizer
from tfrec.training.retrieval import DEFAULT_MONITOR, RetrievalExperiment

logger = logging.getLogger(__name__)

#: File of an adapted run recording the source run and the adaptation settings.
ADAPT_FILE = "adapt.json"


@dataclasses.dataclass
class AdaptSettings:
    """How :func:`adapt_scenario` trains the new scenario.

    The new scenario trains on its own schedule: by default the maximum epochs
    and early-stopping patience of its preset (what ``tfrec train --dataset X``
    uses), not the shared model's. A joint run's epoch is one pass over every
    scenario's data, so its few epochs and short patience would stop a small
    scenario after a handful of steps (measured on Last.fm from a joint model
    of Beauty, Sports and MovieLens: patience 3 stopped at epoch 4 of 1-4 steps each).

    Attributes:
        epochs: Maximum epochs with the shared encoder frozen (None: the new
            scenario's preset's, or the shared model's without a preset).
        patience: Early-stopping patience of those epochs (None: as ``epochs``).
        unfreeze_epochs: Further epochs training the shared encoder too (0: never).
        unfreeze_lr_factor: Learning rate of the unfrozen epochs, relative to the
            shared model's.
        train_user_fraction: Train on this seeded share of the new scenario's
            users (every user is evaluated), for learning curves.
        seed: Training seed (None: the shared model's).
    """

    epochs: int | None = None
    patience: int | None = None
    unfreeze_epochs: int = 0
    unfreeze_lr_factor: float = 0.1
    train_user_fraction: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"AdaptSettings.epochs={self.epochs}; expected >= 1 or None")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"AdaptSettings.patience={self.patience}; expected >= 1 or None")
        if self.unfreeze_epochs < 0:
            raise ValueError(f"AdaptSettings.unfreeze_epochs={self.unfreeze_epochs}; expected >= 0")
        if not 0.0 < self.unfreeze_lr_factor <= 1.0:
            raise ValueError(
                f"AdaptSettings.unfreeze_lr_factor={self.unfreeze_lr_factor}; expected in (0, 1]"
            )
        if not 0.0 < self.train_user_fraction <= 1.0:
            raise ValueError(
                f"AdaptSettings.train_user_fraction={self.train_user_fraction}; expected in (0, 1]"
            )


def _load_source(source: str | os.PathLike[str], data_dir: str | None) -> MultiScenarioExperiment:
    kind = read_kind(RunLayout(Path(source)).config)
    if kind != "multi_scenario":
        raise ValueError(
            f"--from {source}: a {kind!r} run; expected a multi_scenario run "
            "(tfrec train --scenarios a,b,...)"
        )
    return MultiScenarioExperiment.from_dir(source, data_dir)


def _new_scenario(
    base: MultiScenarioExperiment,
    dataset: str,
    output_dir: Path,
    settings: AdaptSettings,
) -> MultiScenarioExperiment:
    """The run with ``dataset`` added: old scenarios' weights copied, the new one fresh."""
    if dataset in base.config.scenarios:
        raise ValueError(
            f"--dataset {dataset!r} is already a scenario of the source run "
            f"({base.config.scenarios}); expected a new one"
        )
    config = copy.deepcopy(base.config)
    if config.user_embeddings is not None:  # the new scenario's defaults, before it is added
        config.user_embeddings.append(config.user_embedding(dataset))
    if config.mean_experts is not None:
        config.mean_experts.append(config.mean_expert(dataset))
    if config.max_histories is not None:
        config.max_histories.append(config.max_history(dataset))
    config.scenarios.append(dataset)
    if config.weights is not None:  # the new scenario gets the mean weight
        config.weights.append(sum(config.weights) / len(config.weights))
    if settings.seed is not None:
        config.model.training.seed = settings.seed
    config.__post_init__()  # checks the name, like a config written by hand
    sub_config = config.scenario_config(dataset)
    sub_config.data = dataclasses.replace(
        sub_config.data, train_user_fraction=settings.train_user_fraction
    )
    sub_config.model.training = _schedule(config, dataset, settings)
    new = RetrievalExperiment(sub_config, output_dir / dataset)
    experiments = {**base.experiments, dataset: new}
    for name, sub in base.experiments.items():
        sub.output_dir = output_dir / name
    result = MultiScenarioExperiment(config, output_dir, experiments=experiments)
    for name, old in base.model.scenarios.items():  # the shared encoder comes with each
        result.model.scenarios[name].set_weights(old.get_weights())
    result.best.take(base.best)  # each old scenario keeps its own best epoch's weights
    result.metrics = {k: v for k, v in base.metrics.items() if k.split("/")[0] in base.experiments}
    return result


def _schedule(
    config: MultiScenarioExperimentConfig, dataset: str, settings: AdaptSettings
) -> TrainingConfig:
    """The new scenario's training config: the shared one with the target's epochs and patience.

    ``settings`` first, then the target's preset (see :class:`AdaptSettings`), then
    the shared model's. Seed, batch size and the rest stay the shared model's.
    """
    shared = config.model.training
    preset = config.preset(dataset)
    own = preset.model.training if preset is not None else shared
    return dataclasses.replace(
        shared,
        epochs=settings.epochs or own.epochs,
        patience=settings.patience or own.patience,
    )


def _train_new(result: MultiScenarioExperiment, dataset: str, settings: AdaptSettings) -> bool:
    """Frozen-encoder epochs, then the optional unfrozen ones (new scenario's data only).

    Returns:
        Whether unfrozen epochs were run and kept (the shared encoder moved).
    """
    sub = result.experiments[dataset]
    model = result.model.scenarios[dataset]
    optimizer_config = result.config.model.optimizer
    with sub.strategy.scope():
        result.model.encoder.trainable = False
        model.compile(optimizer=make_optimizer(optimizer_config))
    trainable = sum(int(v.shape.num_elements()) for v in model.trainable_variables)
    logger.info(
        "adapting to %r: %d trainable parameters (shared encoder frozen)", dataset, trainable
    )
    start = time.perf_counter()
    history = sub.fit()  # on the schedule _schedule set
    kept = False
    if settings.unfreeze_epochs:
        frozen_seconds = time.perf_counter() - start
        frozen = _own_metrics(sub.evaluate())
        more, kept = _unfreeze(result, dataset, settings, history)
        history = {k: list(history.get(k, [])) + list(v) for k, v in more.items()}
        result.metrics.update({f"{dataset}/frozen/{k}": v for k, v in frozen.items()})
        result.metrics["adapt/frozen_train_seconds"] = round(frozen_seconds, 2)
        result.metrics["adapt/unfrozen_kept"] = float(kept)
    sub.history = history
    result.history = {f"{dataset}/{k}": v for k, v in history.items()}
    return kept


def _own_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A sub-run's evaluation without its training bookkeeping."""
    return {k: v for k, v in metrics.items() if k not in ("train_seconds", "epochs_run")}


def _unfreeze(
    result: MultiScenarioExperiment,
    dataset: str,
    settings: AdaptSettings,
    frozen_history: dict[str, list[float]],
) -> tuple[dict[str, list[float]], bool]:
    """The unfrozen epochs; kept only if they beat the frozen stage on validation.

    Returns:
        The unfrozen epochs' history and whether they were kept.
    """
    sub = result.experiments[dataset]
    model = result.model.scenarios[dataset]
    lower = dataclasses.replace(
        result.config.model.optimizer,
        learning_rate=result.config.model.optimizer.learning_rate * settings.unfreeze_lr_factor,
    )
    with sub.strategy.scope():
        result.model.encoder.trainable = True
        model.compile(optimizer=make_optimizer(lower))
    frozen_weights = model.get_weights()  # taken trainable: the order set_weights sees below
    logger.info(
        "adapting to %r: %d more epochs with the shared encoder unfrozen (lr %.2g)",
        dataset, settings.unfreeze_epochs, lower.learning_rate,
    )  # fmt: skip
    more = sub.fit(settings.unfreeze_epochs)
    monitor, mode = sub.config.model.training.monitor_mode(DEFAULT_MONITOR)
    pick = max if mode == "max" else min
    before = pick(frozen_history[f"val_{monitor}"])
    after = pick(more[f"val_{monitor}"])
    kept = after > before if mode == "max" else after < before
    if kept:
        result.best.forget()  # the old scenarios now run on the moved shared encoder
    else:
        model.set_weights(frozen_weights)
    logger.info(
        "adapting to %r: unfrozen epochs %s (validation %s %.4f vs frozen %.4f)",
        dataset, "kept" if kept else "discarded, frozen-stage weights restored",
        monitor, after, before,
    )  # fmt: skip
    return more, kept


def adapt_scenario(
    source: str | os.PathLike[str],
    dataset: str,
    output_dir: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    settings: AdaptSettings | None = None,
) -> MultiScenarioExperiment:
    """Adds scenario ``dataset`` to the multi-scenario run ``source``; see the module docstring.

    Args:
        source: A saved ``multi_scenario`` run directory (not modified).
        dataset: The new scenario (a dataset name with a preset, e.g. ``lastfm``).
        output_dir: The new run directory (must not be ``source``).
        data_dir: Where the datasets are (overrides the saved one).
        settings: Epochs, unfreezing, user share, seed (default :class:`AdaptSettings`).

    Returns:
        The evaluated and saved run (``metrics`` holds every scenario's keys and
        ``adapt/train_seconds``, the wall time of the training alone).

    Raises:
        ValueError: ``source`` is not a multi-scenario run, ``dataset`` is one of
            its scenarios or unknown, or ``output_dir`` is ``source``.
    """
    settings = settings or AdaptSettings()
    output = Path(output_dir)
    if output.resolve() == Path(source).resolve():
        raise ValueError(f"--output-dir {output} is the source run; expected a new directory")
    base = _load_source(source, data_dir)
    result = _new_scenario(base, dataset, output, settings)
    start = time.perf_counter()
    moved = _train_new(result, dataset, settings)
    seconds = time.perf_counter() - start  # training only (loading the data is not counted)
    if moved:  # the shared encoder moved: every scenario is re-measured
        kept = {
            k: v
            for k, v in result.metrics.items()
            if k.startswith(("adapt/", f"{dataset}/frozen/"))
        }
        result.metrics = {}
        result.evaluate()
        result.metrics.update(kept)
    else:  # discarded unfrozen epochs: the frozen stage's evaluation is the final one
        frozen = f"{dataset}/frozen/"
        new = {k[len(frozen) :]: v for k, v in result.metrics.items() if k.startswith(frozen)}
        new = new or _own_metrics(result.experiments[dataset].evaluate())
        result.metrics.update({f"{dataset}/{k}": v for k, v in new.items()})
    result.metrics["adapt/train_seconds"] = round(seconds, 2)
    result.save()
    record: dict[str, Any] = {
        "source": str(Path(source).resolve()),
        "dataset": dataset,
        "settings": dataclasses.asdict(settings),
        "seconds": round(seconds, 2),
    }
    write_json(RunLayout(output).root / ADAPT_FILE, record)
    return result
