"""CaserEncoder: hand-computed outputs, causality, padding, window, config round trip, e2e.

The contract tests shared by every encoder (zero padding rows, causality, padding
invariance incl. gaps, empty histories, export) also run on ``"caser"`` through
``ENCODERS`` in ``test_encoders.py``, ``test_empty_history.py`` and
``tests/export/test_retrieval_roundtrip.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import (
    ExportCase,
    assert_layer_roundtrip,
    check_in_fresh_process,
    eager_top_k,
    serving_inputs,
)

from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.layers.caser import CaserEncoder
from tfrec.layers.encoders import ENCODERS, get_encoder
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training.config import TrainingConfig
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig

B, L, D = 2, 6, 4


def _normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_registered_as_an_encoder_choice():
    assert "caser" in ENCODERS
    encoder = get_encoder("caser", units=D, max_length=L, dropout=0.3)
    assert isinstance(encoder, CaserEncoder)
    assert (encoder.units, encoder.window, encoder.dropout) == (D, 5, 0.3)
    assert (encoder.num_horizontal, encoder.num_vertical, encoder.activation) == (16, 4, None)


@pytest.mark.parametrize(
    ("num_horizontal", "num_vertical"), [(16, 4), (3, 0), (0, 2)], ids=["both", "h", "v"]
)
def test_output_shape_and_weights(num_horizontal, num_vertical):
    # Input size 3 != units 4; window 3 > the 2-item histories of some calls.
    enc = CaserEncoder(4, window=3, num_horizontal=num_horizontal, num_vertical=num_vertical)
    out = enc(tf.constant(_normal(B, L, 3)), training=False)
    assert out.shape == (B, L, 4)
    assert enc(tf.constant(_normal(B, 2, 3)), training=False).shape == (B, 2, 4)
    # horizontal_h kernels [h * 3, n_h]; vertical [3 (window), n_v];
    # output [n_h * 3 + n_v * 3, 4].
    shapes = {w.name.split("/", 1)[1]: tuple(w.shape) for w in enc.trainable_weights}
    expected = {"output/kernel:0": (num_horizontal * 3 + num_vertical * 3, 4)}
    for h in range(1, 4) if num_horizontal else ():
        expected[f"horizontal_{h}/kernel:0"] = (h * 3, num_horizontal)
    if num_vertical:
        expected["vertical/kernel:0"] = (3, num_vertical)
    assert {k: v for k, v in shapes.items() if k.endswith("kernel:0")} == expected


def _hand_set_encoder() -> CaserEncoder:
    # window 2, D_in = 2, units 2, one horizontal filter per height, one vertical filter.
    enc = CaserEncoder(2, window=2, num_horizontal=1, num_vertical=1, dropout=0.0)
    enc(tf.zeros([1, 1, 2]))  # builds the weights
    enc.set_weights(
        [
            np.array([[1.0], [1.0]]), np.array([-2.0]),  # h=1: relu(x0 + x1 - 2)
            np.array([[1.0], [0.0], [0.0], [1.0]]), np.array([0.0]),  # h=2: relu(old0 + new1)
            np.array([[1.0], [2.0]]), np.array([0.5]),  # vertical: old + 2 * new + .5
            np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]),  # output kernel
            np.array([0.0, 10.0]),  # output bias
        ]
    )  # fmt: skip
    return enc


def test_hand_computed_tiny_case():
    # History [pad (garbage), a=(1,2), b=(3,-1), c=(0,4)]; windows (old, new):
    # (0, a), (a, b), (b, c)  -- the zero row fills the window before a.
    # h=1 responses relu(x0+x1-2): zero row 0, a 1, b 0, c 2; max over the 2 window rows:
    #   a: max(0, 1) = 1, b: max(1, 0) = 1, c: max(0, 2) = 2
    # h=2 relu(old0 + new1): a: 0 + 2 = 2, b: 1 - 1 = 0, c: 3 + 4 = 7
    # vertical old + 2*new + .5 per dim: a (2.5, 4.5), b (7.5, 0.5), c (3.5, 7.5)
    # features [h1, h2, v0, v1] -> output [h1 + h2, 10 + v0 - v1]:
    #   a [1+2, 10-2] = [3, 8], b [1+0, 10+7] = [1, 17], c [2+7, 10-4] = [9, 6]
    x = tf.constant([[[99.0, -99.0], [1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]])
    mask = tf.constant([[False, True, True, True]])
    out = _hand_set_encoder()(x, padding_mask=mask, training=False).numpy()
    np.testing.assert_allclose(out[0], [[0, 0], [3, 8], [1, 17], [9, 6]], atol=1e-6)
    # A padding gap between a and b changes nothing at the real positions.
    gap_x = tf.constant([[[1.0, 2.0], [-7.0, 5.0], [3.0, -1.0], [0.0, 4.0]]])
    gap_mask = tf.constant([[True, False, True, True]])
    gap = _hand_set_encoder()(gap_x, padding_mask=gap_mask, training=False).numpy()
    np.testing.assert_allclose(gap[0], [[3, 8], [0, 0], [1, 17], [9, 6]], atol=1e-6)


def test_causal_every_position():
    # Changing item t + 1 leaves outputs 0..t unchanged and changes output t + 1.
    x = _normal(B, L, D, seed=1)
    enc = CaserEncoder(D, window=3, dropout=0.0)
    base = enc(tf.constant(x), training=False).numpy()
    for t in range(L - 1):
        changed_x = x.copy()
        changed_x[:, t + 1] += 5.0
        changed = enc(tf.constant(changed_x), training=False).numpy()
        np.testing.assert_allclose(changed[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert np.abs(changed[:, t + 1] - base[:, t + 1]).max() > 1e-3, t


def test_only_the_last_window_items_matter():
    # window 3: output t sees real items t-2..t; the item 3 real items back is ignored.
    x = _normal(1, L, D, seed=2)
    enc = CaserEncoder(D, window=3, dropout=0.0)
    base = enc(tf.constant(x), training=False).numpy()
    changed_x = x.copy()
    changed_x[:, 1] += 5.0
    changed = enc(tf.constant(changed_x), training=False).numpy()
    np.testing.assert_allclose(changed[:, 4:], base[:, 4:], atol=1e-5)  # 4 - 1 >= 3
    assert np.all(np.abs(changed[:, 1:4] - base[:, 1:4]).max(axis=-1) > 1e-3)


def test_left_padding_does_not_change_the_last_output():
    real = _normal(1, 4, D, seed=3)
    enc = CaserEncoder(D, window=3, dropout=0.0)
    plain = enc(tf.constant(real), training=False).numpy()
    for pad in (1, 5):
        garbage = _normal(1, pad, D, seed=4 + pad) * 50
        padded = np.concatenate([garbage, real], axis=1)
        mask = np.array([[False] * pad + [True] * 4])
        out = enc(tf.constant(padded), padding_mask=mask, training=False).numpy()
        np.testing.assert_allclose(out[:, -1], plain[:, -1], atol=1e-5)
        np.testing.assert_allclose(out[:, pad:], plain, atol=1e-5)
        np.testing.assert_array_equal(out[:, :pad], 0.0)


def test_dropout_only_in_training():
    x = tf.constant(_normal(B, L, D, seed=5))
    enc = CaserEncoder(D, dropout=0.5)
    a = enc(x, training=False).numpy()
    np.testing.assert_array_equal(a, enc(x, training=False).numpy())
    assert np.abs(a - enc(x, training=True).numpy()).max() > 1e-3


def test_relu_activation_gives_non_negative_outputs():
    out = CaserEncoder(D, activation="relu")(tf.constant(_normal(B, L, D, seed=6)))
    assert out.numpy().min() >= 0.0


def test_config_round_trip_with_copied_weights():
    keras.utils.set_random_seed(0)
    layer = CaserEncoder(
        4, window=3, num_horizontal=2, num_vertical=1, dropout=0.1, activation="tanh", name="c"
    )
    mask = tf.constant([[False, True, True, True, True], [True, True, False, True, True]])
    clone = assert_layer_roundtrip(
        layer, tf.constant(_normal(2, 5, 3, seed=7)), padding_mask=mask, training=False
    )
    assert clone.get_config()["window"] == 3 and clone.get_config()["activation"] == "tanh"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "units=0; expected >= 1"),
        ({"window": 0}, "window=0; expected >= 1"),
        ({"num_horizontal": -1}, "num_horizontal=-1; expected >= 0"),
        ({"num_horizontal": 0, "num_vertical": 0}, "expected at least one filter"),
        ({"dropout": 1.0}, r"dropout=1.0; expected 0 <= dropout < 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaserEncoder(**{"units": 4, **kwargs})


@pytest.mark.slow
def test_retrieval_experiment_trains_and_exports(tmp_path):
    # 60 users x 40 items of successor walks (the next item is the current one's
    # successor with p = 0.7): a window-based encoder learns it in a few epochs.
    keras.utils.set_random_seed(0)
    config = RetrievalExperimentConfig(
        data=DataConfig(dataset="synthetic", synthetic_users=60, synthetic_items=40),
        model=RetrievalConfig(
            encoder="caser",
            embedding_dim=8,
            max_history=10,
            training=TrainingConfig(batch_size=64, epochs=2, patience=2),
        ),
        evaluation=EvalConfig(ks=[10]),
    )
    experiment = RetrievalExperiment(config)
    history = experiment.fit()
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    metrics = experiment.evaluate(["test"])
    assert np.isfinite(metrics["test/ndcg@10"])
    (export_dir,) = experiment.export(tmp_path / "models")
    inputs = serving_inputs()  # synthetic ids are u0.., i0.. too
    ids, scores = eager_top_k(
        experiment.model, experiment.user_vocab, experiment.item_vocab, inputs
    )
    check_in_fresh_process([ExportCase("caser", export_dir, inputs, ids, scores)], tmp_path)
