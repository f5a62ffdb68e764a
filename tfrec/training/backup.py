"""Fault tolerance of multi-worker training: ``BackupAndRestore`` plus tfrec's own state.

Keras's ``BackupAndRestore`` backs up the weights, the optimizer and the epoch
number at the end of every epoch (the chief writes ``<backup>/chief``, the other
workers a temporary directory they delete) and, when a restarted cluster calls
``fit`` again, restores them and skips the finished epochs. tfrec keeps more
state in Python (the per-epoch history, early stopping's best value, patience
counter and best epoch), which a restart would lose; :class:`WorkerBackup`
writes it as ``<backup>/tfrec_state/epoch-NNNNN.json`` just before each backup
and hands it back to the callbacks when it restores. The JSON is written first,
so whichever epoch the backup holds, the state of that epoch exists.

:func:`backup_callbacks` returns the pair to put first and last in the list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import atomic_write_text
from tfrec.training.checkpoints import RunCheckpoint, TrainingState
from tfrec.training.experiment import read_json

logger = logging.getLogger(__name__)


def _scalars(logs: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class WorkerBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that also restores tfrec's history and early-stopping state.

    Put it first in the callback list (its ``on_train_begin`` restores the state
    before :class:`~tfrec.training.callbacks.MetricEarlyStopping` reads it) and
    :meth:`tail` last (the backup of an epoch is written after every other
    callback has seen it).

    Args:
        backup_dir: The shared backup directory (the chief's ``<run>/backup``).
        stopper: The early-stopping callback, or None.
        checkpoint: The run's :class:`RunCheckpoint`, or None.
        best_weights: The chief's ``weights/model`` prefix (best epoch before a restart).

    Attributes:
        restored: The state restored by the last ``on_train_begin`` (None: a fresh start).
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike[str],
        stopper: Any | None = None,
        checkpoint: RunCheckpoint | None = None,
        best_weights: str | os.PathLike[str] | None = None,
    ):
        super().__init__(str(backup_dir), save_freq="epoch")
        self.state_dir = Path(backup_dir) / "tfrec_state"
        self.stopper = stopper
        self.checkpoint = checkpoint
        self.best_weights = best_weights
        self.restored: TrainingState | None = None
        self.history: dict[str, list[float]] = {}

    def _state_path(self, epochs_done: int) -> Path:
        return self.state_dir / f"epoch-{epochs_done:05d}.json"

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Restores the backup (Keras) and the tfrec state of the same epoch.

        Raises:
            FileNotFoundError: A backup without its tfrec state file.
        """
        super().on_train_begin(logs)
        saved_epoch = int(self._training_state._ckpt_saved_epoch.numpy())
        self.restored, self.history = None, {}
        if saved_epoch < 0:
            return
        path = self._state_path(saved_epoch + 1)
        data = read_json(path)
        if not isinstance(data, dict):
            raise FileNotFoundError(
                f"{path} not found: the backup in {self.backup_dir} holds epoch "
                f"{saved_epoch + 1} but not tfrec's state of that epoch; delete "
                f"{self.backup_dir} to start the run again"
            )
        fields = {f.name for f in dataclasses.fields(TrainingState)}
        state = TrainingState(**{k: v for k, v in data.items() if k in fields})
        self.restored = state
        self.history = {k: list(v) for k, v in state.history.items()}
        if self.stopper is not None and state.early_stopping is not None:
            self.stopper.resume_from(state.early_stopping, self.best_weights)
        if self.checkpoint is not None:
            self.checkpoint.history = {k: list(v) for k, v in state.history.items()}
        logger.info("restarted: continuing after epoch %d (backup %s)", state.epoch, path)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Nothing here: :meth:`tail` backs up after the other callbacks."""

    def back_up(self, epoch: int, logs: Mapping[str, Any] | None) -> None:
        """Writes the tfrec state of ``epoch`` (chief), then Keras's backup (every worker)."""
        for key, value in _scalars(logs).items():
            self.history.setdefault(key, []).append(value)
        if self.model.distribute_strategy.extended.should_checkpoint:
            state = TrainingState(
                epoch=epoch + 1,
                history=self.history,
                early_stopping=self.stopper.state() if self.stopper is not None else None,
                stopped=bool(self.model.stop_training),
            )
            self.state_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
            atomic_write_text(self._state_path(epoch + 1), text)
            old = self._state_path(epoch - 1)  # keep this epoch's and the previous one
            old.unlink(missing_ok=True)
        self._backup(epoch=epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Deletes the backup and the state files (the chief's) after a finished ``fit``.

        Every worker then tries to remove the emptied backup directory: the
        chief's attempt fails while another worker is still removing its
        ``workertemp_N`` copy of the last epoch, and that worker's attempt, made
        after its copy is gone, fails only if the chief has not finished yet, so
        whichever worker ends last removes it.
        """
        should_delete = self.delete_checkpoint and (
            self.model.distribute_strategy.extended.should_checkpoint
        )
        super().on_train_end(logs)
        if should_delete:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.delete_checkpoint:
            with contextlib.suppress(OSError):  # only when empty
                Path(self.backup_dir).rmdir()

    def tail(self) -> keras.callbacks.Callback:
        """The callback to put last: it triggers :meth:`back_up` at each epoch end."""
        return _BackupTail(self)


class _BackupTail(keras.callbacks.Callback):
    """Calls :meth:`WorkerBackup.back_up` after every other callback's ``on_epoch_end``."""

    def __init__(self, backup: WorkerBackup):
        super().__init__()
        self.backup = backup

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Backs up the finished epoch."""
        self.backup.back_up(epoch, logs)
