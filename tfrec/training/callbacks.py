"""Keras callbacks for training runs: validation-metric early stopping, progress log, outputs.

:func:`build_callbacks` assembles them the same way for every model kind.
Order matters: put :class:`MetricEarlyStopping` before callbacks that read its
``val_*`` entries (:class:`~tfrec.training.checkpoints.RunCheckpoint`, TensorBoard,
:class:`ProgressLogger`), because Keras calls them in list order with one shared
``logs`` dict. :class:`ProgressLogger` writes the one INFO line per epoch (with
those ``val_*`` entries); run ``fit(..., verbose=0)`` beside it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.logs import Progress, format_rate
from tfrec.training.checkpoints import RunCheckpoint, TrainingState
from tfrec.training.experiment import RunLayout

logger = logging.getLogger(__name__)


def _format(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


class MetricEarlyStopping(keras.callbacks.Callback):
    """Runs a validation evaluation after each epoch, stops early, restores the best weights.

    Args:
        evaluate_fn: Called with no arguments after every epoch; returns metric
            name -> value (e.g. a closure running the full-ranking evaluation
            on the validation split: ``{"ndcg@10": 0.05, "hr@10": 0.09}``).
        monitor: Key of ``evaluate_fn``'s result that decides the best epoch.
        patience: Stop after this many epochs without improvement.
        mode: ``"max"`` (higher is better) or ``"min"``.
        min_delta: Smallest change that counts as an improvement.
        restore_best_weights: At the end of training, load the weights of the
            best epoch (kept in memory).
        log_prefix: The metrics are also added to the epoch ``logs`` as
            ``log_prefix + name`` (seen by History, TensorBoard, ModelCheckpoint).

    Attributes:
        best_value: Best monitored value so far (None before the first epoch).
        best_epoch: 0-based epoch of ``best_value`` (-1 before the first epoch).
        best_metrics: All metrics of the best epoch.
        history: The metrics of every epoch, in order.
        stopped_epoch: Epoch at which training was stopped early (-1 if it was not).

    Raises:
        ValueError: Bad ``patience``/``mode``; at epoch end, ``monitor`` missing
            from the evaluation result or not a finite number.
    """

    def __init__(
        self,
        evaluate_fn: Callable[[], Mapping[str, float]],
        monitor: str = "ndcg@10",
        *,
        patience: int = 5,
        mode: str = "max",
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
        log_prefix: str = "val_",
    ):
        super().__init__()
        if patience < 1:
            raise ValueError(f"MetricEarlyStopping: patience={patience}; expected >= 1")
        if mode not in ("max", "min"):
            raise ValueError(f"MetricEarlyStopping: mode={mode!r}; expected 'max' or 'min'")
        if min_delta < 0:
            raise ValueError(f"MetricEarlyStopping: min_delta={min_delta}; expected >= 0")
        self.evaluate_fn = evaluate_fn
        self.monitor = monitor
        self.patience = patience
        self.mode = mode
        self.min_delta = min_delta
        self.restore_best_weights = restore_best_weights
        self.log_prefix = log_prefix
        self._initial_state: dict[str, Any] | None = None
        self._best_weights_path: str | None = None
        self._reset()

    def _reset(self) -> None:
        self.best_value: float | None = None
        self.best_epoch = -1
        self.best_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.stopped_epoch = -1
        self._wait = 0
        self._best_weights: list[np.ndarray] | None = None
        self._last_epoch = -1

    def _improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.mode == "max":
            return value > self.best_value + self.min_delta
        return value < self.best_value - self.min_delta

    def state(self) -> dict[str, Any]:
        """The state a resumed run continues from (JSON-compatible; see :meth:`resume_from`)."""
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "best_metrics": dict(self.best_metrics),
            "history": [dict(m) for m in self.history],
            "wait": self._wait,
        }

    def resume_from(
        self, state: Mapping[str, Any], best_weights: str | os.PathLike[str] | None = None
    ) -> None:
        """Makes the next ``fit`` continue an interrupted one.

        Args:
            state: :meth:`state` at the end of the last finished epoch.
            best_weights: Weights prefix of the best epoch, restored at the end
                when no later epoch beats it (the in-memory copy was lost).
        """
        self._initial_state = dict(state)
        self._best_weights_path = None if best_weights is None else str(best_weights)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Forgets the state of a previous ``fit`` (or takes the resumed one)."""
        self._reset()
        if self._initial_state is not None:
            state = self._initial_state
            self.best_value = state.get("best_value")
            self.best_epoch = int(state.get("best_epoch", -1))
            self.best_metrics = dict(state.get("best_metrics") or {})
            self.history = [dict(m) for m in state.get("history") or []]
            self._wait = int(state.get("wait", 0))
            self._last_epoch = len(self.history) - 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Evaluates, records, and decides whether to stop."""
        started = time.perf_counter()
        metrics = {str(k): float(v) for k, v in self.evaluate_fn().items()}
        seconds = time.perf_counter() - started
        if self.monitor not in metrics:
            raise ValueError(
                f"MetricEarlyStopping: monitor={self.monitor!r} is not among the evaluation "
                f"metrics {sorted(metrics)}"
            )
        value = metrics[self.monitor]
        if not math.isfinite(value):
            raise ValueError(f"MetricEarlyStopping: {self.monitor}={value} at epoch {epoch + 1}")
        self.history.append(metrics)
        self._last_epoch = epoch
        if logs is not None:
            logs.update({self.log_prefix + k: v for k, v in metrics.items()})
        if self._improved(value):
            self.best_value, self.best_epoch, self.best_metrics = value, epoch, metrics
            self._wait = 0
            if self.restore_best_weights:
                self._best_weights = self.model.get_weights()
        else:
            self._wait += 1
        logger.debug(  # ProgressLogger's epoch line shows these metrics at INFO
            "epoch %d validation (%.1fs): %s | best %s=%.4f at epoch %d",
            epoch + 1,
            seconds,
            _format(metrics),
            self.monitor,
            self.best_value,
            self.best_epoch + 1,
        )
        if self._wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            logger.info(
                "early stopping after epoch %d: no %s improvement for %d epochs",
                epoch + 1,
                self.monitor,
                self.patience,
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Restores the best weights when the last epoch was not the best."""
        if not self.restore_best_weights or self.best_epoch == self._last_epoch:
            return
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)
        elif self._best_weights_path is not None:  # best epoch before a resume
            self.model.load_weights(self._best_weights_path).expect_partial()
        else:
            return
        logger.info(
            "restored the weights of epoch %d (%s=%.4f)",
            self.best_epoch + 1,
            self.monitor,
            self.best_value,
        )


# TFRS bookkeeping keys left out of the INFO epoch line (total_loss = loss + regularization_loss).
_DEBUG_ONLY_LOGS = ("regularization_loss", "total_loss")


class _EpochProgress(Progress):
    """Progress over one epoch's steps: ``epoch 2 step 40: loss=0.4210, 512 examples/s``."""

    def __init__(self, epoch: int, logger_: ProgressLogger):
        super().__init__(
            f"epoch {epoch + 1}",
            logger_.params.get("steps"),
            unit="steps",
            every_seconds=logger_.every_seconds,
            log=logger_.log,
        )
        self.epoch = epoch
        self.rate = logger_.rate

    def describe(self, done: int, elapsed: float, detail: str = "") -> str:
        """The non-terminal progress line (a terminal bar adds the step counter)."""
        return f"epoch {self.epoch + 1} step {done}: {detail}, {self.rate(done, elapsed)}"


class ProgressLogger(keras.callbacks.Callback):
    """One line per epoch, plus progress within long epochs (see :class:`tfrec.logs.Progress`).

    Within an epoch: a progress bar on a terminal (when the CLI configured
    :mod:`tfrec.logs`), else a line every ``every_seconds``. At the end of each
    epoch one INFO line: steps, training time, rate, loss and the ``val_*``
    metrics of :class:`MetricEarlyStopping` (put that one first). Replaces
    Keras's progress bar: use with ``fit(..., verbose=0)``.

    Args:
        every_seconds: Minimum seconds between two progress lines within an epoch.
        examples_per_step: Batch size, to report examples/s (None: steps/s only).
        log: Logger to write to (default: this module's).

    Attributes:
        epoch_seconds: Training seconds of each finished epoch (callbacks after
            the last step excluded).

    Raises:
        ValueError: ``every_seconds <= 0`` or ``examples_per_step < 1``.
    """

    def __init__(
        self,
        every_seconds: float = 60.0,
        examples_per_step: int | None = None,
        log: logging.Logger | None = None,
    ):
        super().__init__()
        if every_seconds <= 0:
            raise ValueError(f"ProgressLogger: every_seconds={every_seconds}; expected > 0")
        if examples_per_step is not None and examples_per_step < 1:
            raise ValueError(
                f"ProgressLogger: examples_per_step={examples_per_step}; expected >= 1"
            )
        self.every_seconds = every_seconds
        self.examples_per_step = examples_per_step
        self.log = log or logger
        self._progress: _EpochProgress | None = None
        self._steps = 0
        self._train_seconds = 0.0
        self.epoch_seconds: list[float] = []

    def rate(self, steps: int, seconds: float) -> str:
        """``"512 examples/s"`` (with ``examples_per_step``) or ``"3.25 steps/s"``."""
        seconds = max(seconds, 1e-9)
        if self.examples_per_step:
            return f"{format_rate(steps * self.examples_per_step / seconds)} examples/s"
        return f"{format_rate(steps / seconds)} steps/s"

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Starts the epoch clock."""
        self._progress = _EpochProgress(epoch, self)
        self._steps = 0
        self._train_seconds = 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Reports progress (a bar, or a line when ``every_seconds`` have passed)."""
        if self._progress is None:  # a callback used outside on_epoch_begin
            return
        self._steps += 1
        self._train_seconds = self._progress.elapsed
        loss = (logs or {}).get("loss")
        self._progress.update(
            self._steps, "loss=" + ("n/a" if loss is None else f"{float(loss):.4f}")
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Logs the epoch line (training time excludes callbacks after the last step)."""
        total = self._progress.close() if self._progress is not None else 0.0
        self._progress = None
        self.epoch_seconds.append(self._train_seconds)
        scalars = {
            k: float(v)
            for k, v in (logs or {}).items()
            if isinstance(v, (int, float, np.floating, np.integer))
        }
        self.log.info(
            "epoch %d/%s done: %d steps, train %.1fs (%s), total %.1fs | %s",
            epoch + 1,
            self.params.get("epochs", "?"),
            self._steps,
            self._train_seconds,
            self.rate(self._steps, self._train_seconds),
            total,
            _format({k: v for k, v in scalars.items() if k not in _DEBUG_ONLY_LOGS}),
        )
        if any(k in scalars for k in _DEBUG_ONLY_LOGS):
            self.log.debug("epoch %d logs: %s", epoch + 1, _format(scalars))


def make_tensorboard_callback(output_dir: str | os.PathLike[str]) -> keras.callbacks.TensorBoard:
    """TensorBoard event files under ``<output_dir>/tensorboard/`` (per-epoch scalars).

    Raises:
        ImportError: The ``tensorboard`` package (which writes the summaries) is
            not installed.
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(
            "make_tensorboard_callback needs the 'tensorboard' package, which is not "
            "installed; install it (pip install tensorboard) or run without TensorBoard"
        )
    return keras.callbacks.TensorBoard(
        log_dir=str(Path(output_dir) / "tensorboard"),
        update_freq="epoch",
        write_graph=False,
        profile_batch=0,
    )


def build_callbacks(
    evaluate_fn: Callable[[], Mapping[str, float]] | None,
    *,
    monitor: str,
    patience: int,
    mode: str = "max",
    output_dir: str | os.PathLike[str] | None = None,
    examples_per_step: int | None = None,
    resume: TrainingState | None = None,
) -> list[keras.callbacks.Callback]:
    """The callbacks of every model kind's ``fit``, in their required order.

    1. :class:`MetricEarlyStopping` on ``evaluate_fn``'s ``monitor`` (best epoch
       restored at the end), when there is a validation evaluation.
    2. :class:`ProgressLogger` (one line per epoch).
    3. With ``output_dir``: :class:`~tfrec.training.checkpoints.RunCheckpoint`
       (``weights/model`` = best epoch, ``checkpoints/last`` + its state every
       epoch) and TensorBoard logs when the ``tensorboard`` package is installed
       (a warning otherwise).

    Args:
        evaluate_fn: The validation evaluation (None: no early stopping).
        monitor: Its key that decides the best epoch.
        patience: Epochs without improvement before stopping.
        mode: ``"max"`` or ``"min"`` for ``monitor``.
        output_dir: The run directory (None: nothing written).
        examples_per_step: Batch size, for the examples/s of the progress lines.
        resume: The state of an interrupted run being continued.
    """
    callbacks: list[keras.callbacks.Callback] = []
    stopper = None
    layout = RunLayout(Path(output_dir)) if output_dir is not None else None
    if evaluate_fn is not None:
        stopper = MetricEarlyStopping(evaluate_fn, monitor=monitor, patience=patience, mode=mode)
        if resume is not None and resume.early_stopping is not None:
            stopper.resume_from(resume.early_stopping, layout.weights if layout else None)
        callbacks.append(stopper)
    callbacks.append(ProgressLogger(examples_per_step=examples_per_step))
    if layout is not None:
        callbacks.append(RunCheckpoint(layout, stopper, resume))
        if importlib.util.find_spec("tensorboard") is None:
            logger.warning("tensorboard is not installed: no TensorBoard logs in %s", output_dir)
        else:
            callbacks.append(make_tensorboard_callback(output_dir))
    return callbacks
