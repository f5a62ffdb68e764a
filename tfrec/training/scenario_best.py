"""Each scenario of a multi-scenario run at its own best validation epoch.

The scenarios of a joint run peak at different epochs: measured on Beauty,
Sports and ml-latest-small (uniform weights, seed 1), ml-latest-small's
validation NDCG@10 was highest after epoch 1 (.0645) and fell to .0429 by the
epoch the mean over scenarios chose (10), while Sports was still improving at
epoch 13. One best epoch for all serves some scenarios a worse model than the
run produced.

:class:`ScenarioBest` keeps, per scenario, the weights of its scenario model
(its own parts and the shared encoder as they were) at the epoch of its best
validation metric. Each scenario is then evaluated, saved and exported with
those weights (each servable already carries its own copy of the encoder, so
serving costs nothing more). Training stops when no scenario has improved for
``patience`` epochs: the monitored value is :meth:`ScenarioBest.mean_best`, the
mean over scenarios of each one's best value so far, which rises exactly when
some scenario improves.

With an output directory the snapshots also go to disk as they improve
(``<run>/<scenario>/weights/model``, the sub-run's weights, and
``<run>/scenario_best.json``), so a resumed or reopened run keeps them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import tf_keras as keras

from tfrec.config import atomic_write_text
from tfrec.training.checkpoints import save_weights
from tfrec.training.experiment import RunLayout

#: The file (in the run directory) with each scenario's best value and epoch.
STATE_FILE = "scenario_best.json"


@contextlib.contextmanager
def _fixed_order(model: keras.Model) -> Iterator[None]:
    """Within the block every layer of ``model`` is trainable, then the flags are put back.

    Keras lists trainable weights before the others, so ``get_weights()`` of a model
    whose shared encoder is frozen (``tfrec adapt``) is in another order than when
    it was not; snapshots are taken and applied in this one fixed order.
    """
    flags = [(layer, layer.trainable) for layer in model._flatten_layers()]
    for layer, _ in flags:
        layer.trainable = True
    try:
        yield
    finally:
        for layer, trainable in flags:
            layer.trainable = trainable


def _get(model: keras.Model) -> list[np.ndarray]:
    with _fixed_order(model):
        return model.get_weights()


def _set(model: keras.Model, weights: list[np.ndarray]) -> None:
    with _fixed_order(model):
        model.set_weights(weights)


class ScenarioBest:
    """Per scenario: the best validation value, its epoch and the weights then.

    Args:
        mode: ``"max"`` (higher is better) or ``"min"``.
        root: The multi-scenario run directory (None: snapshots in memory only).

    Attributes:
        values: Scenario -> its best monitored value so far.
        epochs: Scenario -> the 0-based epoch of that value.
    """

    def __init__(self, mode: str = "max", root: Path | None = None):
        if mode not in ("max", "min"):
            raise ValueError(f"ScenarioBest: mode={mode!r}; expected 'max' or 'min'")
        self.mode = mode
        self.root = root
        self.values: dict[str, float] = {}
        self.epochs: dict[str, int] = {}
        self._weights: dict[str, list[np.ndarray]] = {}

    def update(self, name: str, value: float, epoch: int, model: keras.Model) -> bool:
        """Records ``value`` of scenario ``name``; snapshots ``model`` if it is the best.

        Returns:
            Whether ``value`` is a new best for ``name``.
        """
        best = self.values.get(name)
        if best is not None and not (value > best if self.mode == "max" else value < best):
            return False
        self.values[name], self.epochs[name] = float(value), int(epoch)
        self._weights[name] = _get(model)
        if self.root is not None:
            save_weights(model, RunLayout(self.root).sub_run(name).weights)
            self.write_state(self.root)
        return True

    def write_state(self, root: Path) -> None:
        """Writes each scenario's best value and epoch to ``root/scenario_best.json``."""
        state = {"mode": self.mode, "values": self.values, "epochs": self.epochs}
        atomic_write_text(Path(root) / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def mean_best(self) -> float:
        """The mean over scenarios of each one's best value so far (NaN before any)."""
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")

    def __contains__(self, name: str) -> bool:
        return name in self._weights

    @contextlib.contextmanager
    def applied(self, name: str, model: keras.Model) -> Iterator[None]:
        """Within the block, ``model`` (scenario ``name``'s) holds that scenario's best weights.

        The weights it had (the shared encoder's included) are put back after.
        Without a snapshot of ``name`` the block runs on the current weights.
        """
        if name not in self._weights:
            yield
            return
        current = _get(model)
        _set(model, self._weights[name])
        try:
            yield
        finally:
            _set(model, current)

    def take(self, other: ScenarioBest) -> None:
        """Adopts ``other``'s snapshots (an adapted run keeps its source's)."""
        self.values.update(other.values)
        self.epochs.update(other.epochs)
        self._weights.update(other._weights)

    def forget(self) -> None:
        """Drops every snapshot (the scenarios then use the current weights)."""
        self.values, self.epochs, self._weights = {}, {}, {}

    def restore(self, root: Path, models: Mapping[str, keras.Model]) -> None:
        """Reads the snapshots a run in ``root`` wrote (for resuming or reopening it).

        Loads each recorded scenario's sub-run weights into its model to take the
        snapshot, so the models' current weights change: load the weights they
        should hold afterwards.

        Raises:
            FileNotFoundError: A recorded scenario's weights are missing.
        """
        path = Path(root) / STATE_FILE
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        for name, value in state["values"].items():
            if name not in models:
                continue
            prefix = RunLayout(root).sub_run(name).weights
            if not Path(f"{prefix}.index").is_file():
                raise FileNotFoundError(f"{prefix}.index not found: {path} records {name!r}")
            models[name].load_weights(str(prefix)).expect_partial()
            self.values[name], self.epochs[name] = float(value), int(state["epochs"][name])
            self._weights[name] = _get(models[name])
