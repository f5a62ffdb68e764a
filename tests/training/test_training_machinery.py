import importlib.util
import json
import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.training.callbacks import (
    MetricEarlyStopping,
    ProgressLogger,
    build_callbacks,
    make_tensorboard_callback,
)
from tfrec.training.checkpoints import RunCheckpoint, TrainingState
from tfrec.training.experiment import RunLayout
from tfrec.training.loop import fit_model
from tfrec.training.strategy import configure_precision, get_strategy


def _tiny_model() -> keras.Model:
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    return model


def _data():
    x = np.ones((8, 2), np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4)


def test_steps_per_epoch_ends_each_epoch_early():
    # 32 rows in batches of 4 = 8 batches per pass; steps_per_epoch=3 over 2 epochs = 6 steps
    x = np.ones((32, 2), np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4).repeat()
    model = _tiny_model()
    history = fit_model(
        model, data, epochs=2, evaluate_fn=None, monitor="loss", patience=1, steps_per_epoch=3
    )
    assert int(model.optimizer.iterations.numpy()) == 6
    assert len(history["loss"]) == 2


def test_get_strategy_on_cpu_is_default(caplog):
    caplog.set_level(logging.DEBUG, logger="tfrec.training.strategy")  # a DEBUG line
    strategy = get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert "default strategy (0 GPU(s)" in caplog.text


def test_get_strategy_by_name():
    # no GPU here: "mirrored" mirrors over the one CPU device (1 replica), "default" is
    # TensorFlow's default strategy; an unknown name is refused before TF is touched
    assert isinstance(get_strategy("mirrored"), tf.distribute.MirroredStrategy)
    assert get_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match=r"TrainingConfig\.strategy='tpu'; expected one of"):
        get_strategy("tpu")


def test_configure_precision_on_cpu():
    try:
        assert configure_precision(True) == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        assert configure_precision(False) == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_early_stopping_stops_and_restores_best_weights(caplog):
    caplog.set_level(logging.INFO, logger="tfrec.training.callbacks")
    model = _tiny_model()
    # ndcg@10 per epoch: 0.1, 0.3 (best, epoch 2), 0.2, 0.25 -> patience 2 stops after epoch 4.
    values = iter([0.1, 0.3, 0.2, 0.25, 0.9, 0.9])
    snapshots = []

    def evaluate():
        snapshots.append(model.get_weights())
        return {"ndcg@10": next(values), "hr@10": 0.5}

    stopper = MetricEarlyStopping(evaluate, monitor="ndcg@10", patience=2)
    history = model.fit(_data(), epochs=10, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 4
    assert stopper.best_epoch == 1 and stopper.best_value == 0.3
    assert stopper.stopped_epoch == 3
    assert history.history["val_ndcg@10"] == [0.1, 0.3, 0.2, 0.25]
    for restored, best in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(snapshots[1][0], snapshots[3][0])  # weights did change
    assert "early stopping after epoch 4" in caplog.text


def test_early_stopping_min_mode_and_missing_monitor():
    model = _tiny_model()
    values = iter([3.0, 2.0, 1.0])
    stopper = MetricEarlyStopping(lambda: {"loss": next(values)}, monitor="loss", mode="min")
    model.fit(_data(), epochs=3, verbose=0, callbacks=[stopper])
    assert stopper.best_epoch == 2 and stopper.stopped_epoch == -1
    bad = MetricEarlyStopping(lambda: {"hr@10": 0.1}, monitor="ndcg@10")
    with pytest.raises(ValueError, match=r"monitor='ndcg@10' is not among .*'hr@10'"):
        model.fit(_data(), epochs=1, verbose=0, callbacks=[bad])
    with pytest.raises(ValueError, match="patience=0"):
        MetricEarlyStopping(dict, patience=0)


def test_progress_logger(caplog):
    caplog.set_level(logging.INFO, logger="tfrec.training.callbacks")
    progress = ProgressLogger(every_seconds=1e-6, examples_per_step=4)
    _tiny_model().fit(_data(), epochs=2, verbose=0, callbacks=[progress])
    assert "epoch 2 step 2: loss=" in caplog.text
    assert "examples/s" in caplog.text
    assert "epoch 2/2 done: 2 steps" in caplog.text
    assert len(progress.epoch_seconds) == 2


def _assert_weights_equal(actual, expected) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_build_callbacks_keeps_the_best_and_the_last_epoch(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no TensorBoard
    model = _tiny_model()
    values = iter([0.1, 0.3, 0.2])  # ndcg@10 per epoch: epoch 2 is the best
    snapshots = []

    def evaluate():
        snapshots.append(model.get_weights())  # the weights at the end of each epoch
        return {"ndcg@10": next(values)}

    callbacks = build_callbacks(evaluate, monitor="ndcg@10", patience=5, output_dir=tmp_path)
    assert [type(c) for c in callbacks] == [MetricEarlyStopping, ProgressLogger, RunCheckpoint]
    model.fit(_data(), epochs=3, verbose=0, callbacks=callbacks)
    layout = RunLayout(tmp_path)
    _assert_weights_equal(model.get_weights(), snapshots[1])  # best epoch restored
    best, last = _tiny_model(), _tiny_model()
    best.load_weights(str(layout.weights))
    last.load_weights(str(layout.checkpoint))
    _assert_weights_equal(best.get_weights(), snapshots[1])
    _assert_weights_equal(last.get_weights(), snapshots[2])
    assert not np.array_equal(snapshots[1][0], snapshots[2][0])  # the weights did change
    state = TrainingState.read(layout)
    assert state.epoch == 3 and not state.stopped
    assert state.history["val_ndcg@10"] == [0.1, 0.3, 0.2]
    assert state.early_stopping["best_epoch"] == 1 and state.early_stopping["wait"] == 1
    assert json.loads(layout.checkpoint_state.read_text())["epoch"] == 3


def test_build_callbacks_without_validation_or_output_dir():
    callbacks = build_callbacks(None, monitor="ndcg@10", patience=2)
    assert [type(c) for c in callbacks] == [ProgressLogger]


def test_early_stopping_resumes_its_state_and_restores_an_earlier_best(tmp_path):
    model = _tiny_model()
    model.fit(_data(), epochs=1, verbose=0)
    model.save_weights(str(tmp_path / "best"))  # the best epoch, before the interruption
    best = model.get_weights()
    state = {"best_value": 0.5, "best_epoch": 0, "best_metrics": {"ndcg@10": 0.5},
             "history": [{"ndcg@10": 0.5}], "wait": 0}  # fmt: skip
    values = iter([0.4, 0.3])  # no later epoch beats 0.5: patience 2 stops after epoch 3
    stopper = MetricEarlyStopping(lambda: {"ndcg@10": next(values)}, patience=2)
    stopper.resume_from(state, best_weights=tmp_path / "best")
    history = model.fit(_data(), epochs=5, initial_epoch=1, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 2  # epochs 2 and 3
    assert stopper.best_epoch == 0 and stopper.stopped_epoch == 2
    assert [m["ndcg@10"] for m in stopper.history] == [0.5, 0.4, 0.3]
    _assert_weights_equal(model.get_weights(), best)  # read back from the saved best epoch


def test_tensorboard_callback_without_package(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        make_tensorboard_callback(tmp_path)


def test_tensorboard_callback_writes_events(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    board = make_tensorboard_callback(tmp_path)
    _tiny_model().fit(_data(), epochs=1, verbose=0, callbacks=[board])
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
