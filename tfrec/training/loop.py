"""The one training loop of every model kind: callbacks, checkpoints, resuming.

:func:`fit_model` runs ``model.fit`` with :func:`~tfrec.training.callbacks.build_callbacks`
(early stopping on a validation metric with the best epoch restored, one progress
line per epoch, ``weights/model`` + ``checkpoints/last`` in the run directory,
TensorBoard) and, with ``resume=True``, continues an interrupted run from
``checkpoints/last`` and its saved epoch number (see :mod:`tfrec.training.checkpoints`).
Under ``ParameterServerStrategy`` (:mod:`tfrec.training.parameter_server`) the
dataset is a ``DatasetCreator``, ``steps_per_epoch`` is required and callbacks
with batch hooks see no batch logs (:class:`CoordinatorCallback`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.training import parameter_server, worker
from tfrec.training.callbacks import MetricEarlyStopping, build_callbacks
from tfrec.training.checkpoints import RunCheckpoint, TrainingState
from tfrec.training.experiment import RunLayout

if TYPE_CHECKING:
    from tfrec.training.backup import WorkerBackup
    from tfrec.training.privacy import PrivateTraining

logger = logging.getLogger(__name__)


def _resume(layout: RunLayout | None, model: keras.Model) -> TrainingState:
    """Loads ``checkpoints/last`` into ``model``; returns its state."""
    if layout is None:
        raise ValueError("fit(resume=True) needs the run's output directory (output_dir=...)")
    state = TrainingState.read(layout)
    model.load_weights(str(layout.checkpoint)).expect_partial()
    return state


def _multi_worker(model: keras.Model) -> bool:
    """Whether ``model`` trains under this process's ``MultiWorkerMirroredStrategy``."""
    import tensorflow as tf  # noqa: PLC0415

    return worker.current() is not None and isinstance(
        model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy
    )


class CoordinatorCallback(keras.callbacks.Callback):
    """Runs a callback with batch hooks under ``ParameterServerStrategy``.

    There a step's logs are ``RemoteValue`` objects, resolved only when the epoch
    ends, and Keras refuses callbacks with batch hooks unless they take those; this
    proxy calls ``inner``'s batch hooks with no logs (a progress line then says
    ``loss=n/a``) and its other hooks as they are.

    Args:
        inner: The wrapped callback.
    """

    def __init__(self, inner: keras.callbacks.Callback):
        super().__init__()
        self._supports_tf_logs = True  # Keras then allows the batch hooks
        self.inner = inner

    def set_model(self, model: keras.Model) -> None:
        """Gives both this proxy and ``inner`` the model."""
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        """Gives both this proxy and ``inner`` the fit parameters."""
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner``."""
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner``."""
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner``."""
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner`` (epoch logs are resolved numbers)."""
        self.inner.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner`` without logs."""
        self.inner.on_train_batch_begin(batch, None)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Forwards to ``inner`` without logs."""
        self.inner.on_train_batch_end(batch, None)


def _for_coordinator(
    callbacks: list[keras.callbacks.Callback], dataset: Any, steps_per_epoch: int | None
) -> list[keras.callbacks.Callback]:
    """Checks a ``ParameterServerStrategy`` fit; wraps callbacks that have batch hooks.

    Raises:
        ValueError: ``dataset`` is not a ``DatasetCreator`` or no ``steps_per_epoch``.
    """
    if not isinstance(dataset, keras.utils.experimental.DatasetCreator):
        raise ValueError(
            f"fit_model under ParameterServerStrategy: dataset is a {type(dataset).__name__}; "
            "expected a tf.keras.utils.experimental.DatasetCreator (RetrievalExperiment "
            "builds one; ranking and pipeline runs do not support strategy='parameter_server')"
        )
    if steps_per_epoch is None:
        raise ValueError(
            "fit_model under ParameterServerStrategy: steps_per_epoch=None; expected the "
            "number of steps per epoch (the workers' datasets repeat forever)"
        )
    return [
        CoordinatorCallback(c)
        if c._implements_train_batch_hooks() and not getattr(c, "_supports_tf_logs", False)
        else c
        for c in callbacks
    ]


def _add_worker_backup(
    callbacks: list[keras.callbacks.Callback],
) -> WorkerBackup | None:
    """Puts a :class:`~tfrec.training.backup.WorkerBackup` first and its tail last.

    The backup lives in the chief's run directory (``<run>/backup``), shared by
    every worker; without a run directory there is no backup (a warning).
    """
    from tfrec.training.backup import WorkerBackup  # noqa: PLC0415

    directory, run_dir = worker.backup_dir(), worker.chief_run_dir()
    if directory is None or run_dir is None:
        logger.warning("multi-worker training without a run directory: no BackupAndRestore")
        return None
    stopper = next((c for c in callbacks if isinstance(c, MetricEarlyStopping)), None)
    checkpoint = next((c for c in callbacks if isinstance(c, RunCheckpoint)), None)
    backup = WorkerBackup(directory, stopper, checkpoint, RunLayout(run_dir).weights)
    callbacks.insert(0, backup)
    callbacks.append(backup.tail())
    return backup


def fit_model(
    model: keras.Model,
    dataset: Any,
    *,
    epochs: int,
    evaluate_fn: Callable[[], Mapping[str, float]] | None,
    monitor: str,
    patience: int,
    mode: str = "max",
    output_dir: str | os.PathLike[str] | None = None,
    examples_per_step: int | None = None,
    resume: bool = False,
    verbose: int | str = 0,
    steps_per_epoch: int | None = None,
    privacy: PrivateTraining | None = None,
) -> dict[str, list[float]]:
    """Trains ``model`` on ``dataset`` with the checkpoint policy of every kind.

    Args:
        model: A compiled model.
        dataset: One epoch of training batches (iterated once per epoch); under
            ``ParameterServerStrategy`` a ``DatasetCreator`` of endless batches.
        epochs: Total epochs (a resumed run continues up to this number).
        evaluate_fn: Validation evaluation for early stopping (None: none, a warning).
        monitor: Its key that decides the best epoch.
        patience: Epochs without improvement before stopping.
        mode: ``"max"`` or ``"min"``.
        output_dir: The run directory for ``weights/``, ``checkpoints/``, ``tensorboard/``.
        examples_per_step: Batch size (progress lines report examples/s).
        resume: Continue from ``output_dir``'s ``checkpoints/last``: its weights
            (optimizer state included), epoch number, history and early-stopping
            state. A run that had finished is not trained further; its best
            weights are loaded.
        verbose: Keras verbosity (0: tfrec's own progress lines only).
        steps_per_epoch: End each epoch after this many batches (None: when the
            dataset is exhausted); for smoke runs and timing projections.
            Required under ``ParameterServerStrategy``.
        privacy: DP-SGD (:mod:`tfrec.training.privacy`): attached to ``model``
            before training; its ``steps`` are set to the optimizer steps run.

    Returns:
        The per-epoch logs of the whole run (a resumed run's earlier epochs first).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``output_dir``.
        ValueError: ``resume`` without ``output_dir``; under
            ``ParameterServerStrategy`` another dataset than a ``DatasetCreator``
            or no ``steps_per_epoch``.
    """
    layout = RunLayout(Path(output_dir)) if output_dir is not None else None
    state = _start(model, layout, resume, privacy)
    initial = state.epoch if state is not None else 0
    history = {k: list(v) for k, v in (state.history if state is not None else {}).items()}
    if state is not None and (state.stopped or initial >= epochs):
        logger.info("%s: training had finished after epoch %d", output_dir, initial)
        if layout is not None and Path(f"{layout.weights}.index").is_file():
            model.load_weights(str(layout.weights)).expect_partial()
        return history

    if state is not None:
        logger.info("resuming %s after epoch %d of %d", output_dir, initial, epochs)
    if evaluate_fn is None:
        logger.warning("no validation part: training %d epochs without early stopping", epochs)
    callbacks, backup = _callbacks(
        model, dataset, evaluate_fn, monitor=monitor, patience=patience, mode=mode,
        output_dir=output_dir, examples_per_step=examples_per_step, state=state,
        privacy=privacy, steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    fit = model.fit(
        dataset, epochs=epochs, initial_epoch=initial, callbacks=callbacks, verbose=verbose,
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    if backup is not None and backup.restored is not None:  # the epochs before a restart
        history = {k: list(v) for k, v in backup.restored.history.items()}
    for key, values in fit.history.items():
        history.setdefault(key, []).extend(float(v) for v in values)
    return history


def _start(
    model: keras.Model,
    layout: RunLayout | None,
    resume: bool,
    privacy: PrivateTraining | None,
) -> TrainingState | None:
    """Attaches DP-SGD and, with ``resume``, loads ``checkpoints/last`` (None: a fresh run)."""
    if privacy is not None:
        privacy.attach(model)
    state = _resume(layout, model) if resume else None
    if privacy is not None and state is not None:
        privacy.steps = int(model.optimizer.iterations.numpy())
    return state


def _callbacks(
    model: keras.Model,
    dataset: Any,
    evaluate_fn: Callable[[], Mapping[str, float]] | None,
    *,
    monitor: str,
    patience: int,
    mode: str,
    output_dir: str | os.PathLike[str] | None,
    examples_per_step: int | None,
    state: TrainingState | None,
    privacy: PrivateTraining | None,
    steps_per_epoch: int | None,
) -> tuple[list[keras.callbacks.Callback], WorkerBackup | None]:
    """``fit_model``'s callbacks and, under multi-worker training, its backup (else None).

    :func:`~tfrec.training.callbacks.build_callbacks`' list (validation synced over
    the workers), DP-SGD's step counter first, the multi-worker backup, and the
    coordinator wrapping under ``ParameterServerStrategy``; the arguments are
    :func:`fit_model`'s (``state``: the resumed run's, or None).
    """
    multi = _multi_worker(model)
    if multi and evaluate_fn is not None:
        evaluate_fn = _synced(evaluate_fn, model)
    callbacks = build_callbacks(
        evaluate_fn, monitor=monitor, patience=patience, mode=mode, output_dir=output_dir,
        examples_per_step=examples_per_step, resume=state,
    )  # fmt: skip
    if privacy is not None:  # first: reads the step count before the best epoch is restored
        callbacks.insert(0, privacy.callback())
    backup = _add_worker_backup(callbacks) if multi else None
    if parameter_server.is_parameter_server(model.distribute_strategy):
        callbacks = _for_coordinator(callbacks, dataset, steps_per_epoch)
    return callbacks, backup


def _synced(
    evaluate_fn: Callable[[], Mapping[str, float]], model: keras.Model
) -> Callable[[], Mapping[str, float]]:
    """``evaluate_fn`` whose metrics are averaged over the workers (identical everywhere).

    Every worker evaluates the validation part itself (same queries, same
    mirrored weights); the all-reduce makes the values bitwise equal, so every
    worker takes the same early-stopping decision and runs the same steps.
    """

    def synced() -> Mapping[str, float]:
        return worker.mean_over_workers(model.distribute_strategy, evaluate_fn())

    return synced
