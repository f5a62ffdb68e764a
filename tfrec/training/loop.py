"""The one training loop of every model kind: callbacks, checkpoints, resuming.

:func:`fit_model` runs ``model.fit`` with :func:`~tfrec.training.callbacks.build_callbacks`
(early stopping on a validation metric with the best epoch restored, one progress
line per epoch, ``weights/model`` + ``checkpoints/last`` in the run directory,
TensorBoard) and, with ``resume=True``, continues an interrupted run from
``checkpoints/last`` and its saved epoch number (see :mod:`tfrec.training.checkpoints`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.training.callbacks import build_callbacks
from tfrec.training.checkpoints import TrainingState
from tfrec.training.experiment import RunLayout

logger = logging.getLogger(__name__)


def _resume(layout: RunLayout | None, model: keras.Model) -> TrainingState:
    """Loads ``checkpoints/last`` into ``model``; returns its state."""
    if layout is None:
        raise ValueError("fit(resume=True) needs the run's output directory (output_dir=...)")
    state = TrainingState.read(layout)
    model.load_weights(str(layout.checkpoint)).expect_partial()
    return state


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
) -> dict[str, list[float]]:
    """Trains ``model`` on ``dataset`` with the checkpoint policy of every kind.

    Args:
        model: A compiled model.
        dataset: One epoch of training batches (iterated once per epoch).
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

    Returns:
        The per-epoch logs of the whole run (a resumed run's earlier epochs first).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint in ``output_dir``.
        ValueError: ``resume`` without ``output_dir``.
    """
    layout = RunLayout(Path(output_dir)) if output_dir is not None else None
    state = _resume(layout, model) if resume else None
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
    callbacks = build_callbacks(
        evaluate_fn, monitor=monitor, patience=patience, mode=mode, output_dir=output_dir,
        examples_per_step=examples_per_step, resume=state,
    )  # fmt: skip
    fit = model.fit(
        dataset, epochs=epochs, initial_epoch=initial, callbacks=callbacks, verbose=verbose,
        steps_per_epoch=steps_per_epoch,
    )  # fmt: skip
    for key, values in fit.history.items():
        history.setdefault(key, []).extend(float(v) for v in values)
    return history
