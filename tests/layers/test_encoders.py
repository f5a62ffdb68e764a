import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.layers.encoders import (
    ENCODERS,
    MeanEncoder,
    RNNEncoder,
    TransformerEncoder,
    get_encoder,
)

D = 4
L = 5


def _encoder(name: str) -> keras.layers.Layer:
    return get_encoder(name, units=D, max_length=8, num_layers=2, num_heads=2, dropout=0.1)


def test_mean_encoder_hand_computed():
    # history (left padded): [pad, 1, 3, 5] in one dimension.
    # running means at real positions: 1, (1+3)/2 = 2, (1+3+5)/3 = 3; padding -> 0.
    x = tf.constant([[[100.0], [1.0], [3.0], [5.0]]])
    mask = tf.constant([[False, True, True, True]])
    out = MeanEncoder()(x, padding_mask=mask)
    np.testing.assert_allclose(out.numpy()[0, :, 0], [0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", ENCODERS)
def test_output_shape_and_zero_padding(name):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, L, D)), tf.float32)
    mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]) > 0
    out = _encoder(name)(x, padding_mask=mask, training=False).numpy()
    assert out.shape == (3, L, D)
    np.testing.assert_array_equal(out[0, :2], 0.0)
    np.testing.assert_array_equal(out[2, :4], 0.0)
    # bert4rec (next-item mode) sets only the output at the most recent real item.
    assert np.all(np.abs(out[1] if name != "bert4rec" else out[1, -1:]).sum(-1) > 0)


@pytest.mark.parametrize("name", ENCODERS)
def test_causal(name):
    # Changing the input at position t must not change outputs at positions < t.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, L, D)).astype(np.float32)
    mask = np.ones((2, L), bool)
    enc = _encoder(name)
    base = enc(tf.constant(x), padding_mask=mask, training=False).numpy()
    x2 = x.copy()
    x2[:, 3] += 10.0
    changed = enc(tf.constant(x2), padding_mask=mask, training=False).numpy()
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-5)
    assert np.abs(changed[:, 3:] - base[:, 3:]).max() > 1e-3


@pytest.mark.parametrize("name", ENCODERS)
def test_padding_invariance(name):
    rng = np.random.default_rng(2)
    real = rng.normal(size=(1, 3, D)).astype(np.float32)
    enc = _encoder(name)
    # 3 real items, no padding.
    plain = enc(tf.constant(real), padding_mask=np.ones((1, 3), bool), training=False).numpy()
    # Same items behind 4 padding rows filled with garbage.
    garbage = rng.normal(size=(1, 4, D)).astype(np.float32) * 50
    padded_x = np.concatenate([garbage, real], axis=1)
    padded_mask = np.array([[False] * 4 + [True] * 3])
    padded = enc(tf.constant(padded_x), padding_mask=padded_mask, training=False).numpy()
    np.testing.assert_allclose(padded[:, 4:], plain, atol=1e-5)
    # A padding gap in the middle behaves like the compacted sequence.
    gap_x = np.concatenate([real[:, :1], garbage[:, :2], real[:, 1:]], axis=1)
    gap_mask = np.array([[True, False, False, True, True]])
    gap = enc(tf.constant(gap_x), padding_mask=gap_mask, training=False).numpy()
    np.testing.assert_allclose(gap[:, [0, 3, 4]], plain, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        MeanEncoder(name="m"),
        RNNEncoder(4, cell="lstm", dropout=0.2, name="r"),
        TransformerEncoder(4, max_length=6, num_layers=1, num_heads=2, dropout=0.3, name="t"),
    ],
)
def test_get_config_json_round_trip(layer):
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    assert clone.get_config() == layer.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown encoder 'cnn'"):
        get_encoder("cnn", units=4, max_length=5)
    with pytest.raises(ValueError, match="num_heads=3"):
        TransformerEncoder(4, max_length=5, num_heads=3)
    with pytest.raises(ValueError, match="cell='rnn'"):
        RNNEncoder(4, cell="rnn")


def test_transformer_dropout_only_in_training():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, L, D)), tf.float32)
    enc = TransformerEncoder(D, max_length=L, num_layers=1, dropout=0.5)
    a = enc(x, training=False).numpy()
    b = enc(x, training=False).numpy()
    c = enc(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
