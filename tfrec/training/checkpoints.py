"""The checkpoint policy of every kind: best weights, last epoch, resuming.

During ``fit`` with an output directory (:class:`~tfrec.training.experiment.RunLayout`):

* ``weights/model`` is rewritten whenever validation improves (without a
  validation part: every epoch), so it always holds the best epoch so far;
  ``fit`` ends with those weights restored, and ``save()`` writes them again.
* ``checkpoints/last`` holds the last finished epoch and ``checkpoints/last.json``
  its :class:`TrainingState` (epochs done, history, early-stopping state), written
  together in one directory swap. ``fit(resume=True)`` continues from them.

Weights are TF-format checkpoints (``model.save_weights(prefix)``), optimizer
state included, so a resumed run continues with the same Adam moments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import atomic_write_text
from tfrec.training.experiment import RunLayout, read_json

logger = logging.getLogger(__name__)


def save_weights(
    model: keras.Model, prefix: str | os.PathLike[str], extra_files: Mapping[str, str] = ()
) -> None:
    """Writes ``model``'s weights to ``prefix`` as one unit: complete files or the old ones.

    The weights (and ``extra_files``, name -> text) are written into a staging
    directory beside ``prefix.parent``, which then replaces ``prefix.parent`` as
    a whole (so keep nothing else in that directory).

    Args:
        model: The model (optimizer state included when it is compiled and built).
        prefix: e.g. ``run/weights/model`` (files ``model.index``, ``model.data-*``).
        extra_files: Files written beside the weights.
    """
    prefix = Path(prefix)
    directory = prefix.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        model.save_weights(str(staging / prefix.name))
        for name, text in dict(extra_files).items():
            atomic_write_text(staging / name, text)
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}-old-{staging.name}")
            os.replace(directory, old)
        os.replace(staging, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclasses.dataclass
class TrainingState:
    """Where an interrupted ``fit`` stands (``checkpoints/last.json``).

    Attributes:
        epoch: Epochs finished (the next one is ``epoch + 1``, 1-based).
        history: Per-epoch logs so far (loss, ``val_*`` metrics).
        early_stopping: :meth:`MetricEarlyStopping.state` (None without validation).
        stopped: Early stopping had ended the training.
    """

    epoch: int
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    early_stopping: dict[str, Any] | None = None
    stopped: bool = False

    @classmethod
    def read(cls, layout: RunLayout) -> TrainingState:
        """Reads ``checkpoints/last.json`` of a run.

        Raises:
            FileNotFoundError: No checkpoint (nothing to resume).
            ValueError: The file does not hold a training state.
        """
        data = read_json(layout.checkpoint_state)
        if data is None or not Path(f"{layout.checkpoint}.index").is_file():
            raise FileNotFoundError(
                f"{layout.checkpoint_state} not found: {layout.root} has no checkpoint to "
                "resume from (train without --resume)"
            )
        if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
            raise ValueError(f"{layout.checkpoint_state}: expected an object with an 'epoch'")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def _scalars(logs: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (logs or {}).items()
        if isinstance(v, (int, float, np.floating, np.integer))
    }


class RunCheckpoint(keras.callbacks.Callback):
    """Writes ``weights/model`` (best epoch) and ``checkpoints/last`` (every epoch).

    Put it after :class:`~tfrec.training.callbacks.MetricEarlyStopping`, whose
    ``best_epoch`` and ``state()`` of the current epoch it reads.

    Args:
        layout: The run's files.
        stopper: The early-stopping callback (None without validation: every
            epoch is the best).
        initial: The state of a resumed run (its history is continued).
    """

    def __init__(
        self, layout: RunLayout, stopper: Any | None = None, initial: TrainingState | None = None
    ):
        super().__init__()
        self.layout = layout
        self.stopper = stopper
        self.history: dict[str, list[float]] = {
            k: list(v) for k, v in (initial.history if initial else {}).items()
        }

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Saves the best weights (when this epoch is the best) and the last epoch."""
        for key, value in _scalars(logs).items():
            self.history.setdefault(key, []).append(value)
        if self.stopper is None or self.stopper.best_epoch == epoch:
            save_weights(self.model, self.layout.weights)
        state = TrainingState(
            epoch=epoch + 1,
            history=self.history,
            early_stopping=self.stopper.state() if self.stopper is not None else None,
            stopped=bool(self.model.stop_training),
        )
        text = json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n"
        save_weights(self.model, self.layout.checkpoint, {self.layout.checkpoint_state.name: text})
