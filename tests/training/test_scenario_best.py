"""ScenarioBest: per-scenario best-epoch snapshots, applied and put back, on disk and back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tf_keras as keras

from tfrec.training.scenario_best import STATE_FILE, ScenarioBest


def _model(value: float) -> keras.Model:
    """A 1 -> 1 Dense whose kernel is ``value`` (bias 0)."""
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.set_weights([np.full((1, 1), value, np.float32), np.zeros(1, np.float32)])
    return model


def _kernel(model: keras.Model) -> float:
    return float(model.get_weights()[0][0, 0])


def test_the_snapshot_is_the_best_epochs_and_is_put_back_after_use():
    best = ScenarioBest("max")
    model = _model(0.0)
    # epochs 0..3 with kernel = epoch, validation 0.1, 0.3, 0.2, 0.3 -> best at epoch 1
    for epoch, value in enumerate([0.1, 0.3, 0.2, 0.3]):
        model.set_weights([np.full((1, 1), epoch, np.float32), np.zeros(1, np.float32)])
        best.update("a", value, epoch, model)
    assert best.epochs == {"a": 1} and best.values == {"a": 0.3}  # a tie is no improvement
    with best.applied("a", model):
        assert _kernel(model) == 1.0
    assert _kernel(model) == 3.0  # the current weights are back
    with best.applied("b", model):  # no snapshot of b: the current weights
        assert _kernel(model) == 3.0


def test_min_mode_and_the_mean_of_the_bests():
    best = ScenarioBest("min")
    model = _model(0.0)
    assert np.isnan(best.mean_best())
    for name, values in {"a": [3.0, 1.0, 2.0], "b": [5.0, 6.0, 7.0]}.items():
        for epoch, value in enumerate(values):
            best.update(name, value, epoch, model)
    assert best.epochs == {"a": 1, "b": 0}
    assert best.mean_best() == pytest.approx((1.0 + 5.0) / 2)  # (best a + best b) / 2
    with pytest.raises(ValueError, match=r"mode='low'; expected 'max' or 'min'"):
        ScenarioBest("low")


def test_snapshots_written_during_training_are_read_back(tmp_path):
    writer = ScenarioBest("max", root=tmp_path)
    model = _model(0.0)
    for epoch, value in enumerate([0.2, 0.5, 0.4]):
        model.set_weights([np.full((1, 1), 10 + epoch, np.float32), np.zeros(1, np.float32)])
        writer.update("shop", value, epoch, model)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state == {"mode": "max", "values": {"shop": 0.5}, "epochs": {"shop": 1}}
    assert (tmp_path / "shop" / "weights" / "model.index").is_file()
    reader = ScenarioBest("max")
    other = _model(-1.0)
    reader.restore(tmp_path, {"shop": other})
    assert reader.values == {"shop": 0.5} and reader.epochs == {"shop": 1}
    other.set_weights([np.full((1, 1), 7.0, np.float32), np.zeros(1, np.float32)])
    with reader.applied("shop", other):
        assert _kernel(other) == 11.0  # epoch 1's kernel
    # a recorded scenario whose weights are gone is an error naming the file
    (tmp_path / "shop" / "weights" / "model.index").unlink()
    with pytest.raises(FileNotFoundError, match=r"shop/weights/model.index not found"):
        ScenarioBest("max").restore(tmp_path, {"shop": other})


def test_an_adapted_run_takes_the_source_snapshots_and_can_forget_them():
    source, model = ScenarioBest("max"), _model(4.0)
    source.update("a", 0.3, 2, model)
    adapted = ScenarioBest("max")
    adapted.take(source)
    model.set_weights([np.full((1, 1), 9.0, np.float32), np.zeros(1, np.float32)])
    with adapted.applied("a", model):
        assert _kernel(model) == 4.0
    adapted.forget()
    assert "a" not in adapted and adapted.values == {}


def test_a_snapshot_applies_to_a_model_with_a_frozen_part():
    # tfrec adapt freezes the shared encoder; Keras then lists its weights last.
    first = keras.layers.Dense(2, input_shape=(1,))
    model = keras.Sequential([first, keras.layers.Dense(1)])
    snapshot = [np.full(w.shape, i + 1.0, np.float32) for i, w in enumerate(model.get_weights())]
    model.set_weights(snapshot)  # kernel 1, bias 2 | kernel 3, bias 4
    best = ScenarioBest("max")
    best.update("a", 0.5, 0, model)
    model.set_weights([np.zeros_like(w) for w in snapshot])
    first.trainable = False
    with best.applied("a", model):
        np.testing.assert_array_equal(first.get_weights()[0], [[1.0, 1.0]])
        np.testing.assert_array_equal(model.layers[1].get_weights()[1], [4.0])
    assert not first.trainable  # the flags are put back
    assert all((w == 0).all() for w in first.get_weights())
