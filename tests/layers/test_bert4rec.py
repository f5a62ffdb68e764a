"""Bert4RecEncoder: bidirectionality, the mask vector, next-item queries, config round trip.

The contract tests shared by every encoder (zero padding rows, causality of the
next-item outputs, padding invariance incl. gaps, empty histories, export) also run on
``"bert4rec"`` through ``ENCODERS`` in ``test_encoders.py``, ``test_empty_history.py``
and ``tests/export/test_retrieval_roundtrip.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_layer_roundtrip

from tfrec.config import choices
from tfrec.layers.bert4rec import Bert4RecEncoder
from tfrec.layers.encoders import ENCODERS, TransformerEncoder, get_encoder
from tfrec.names import HistoryEncoder

B, L, D = 2, 5, 4


def _normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _encoder(max_length: int = 8) -> Bert4RecEncoder:
    return Bert4RecEncoder(D, max_length=max_length, num_layers=2, num_heads=2, dropout=0.1)


def test_registered_as_an_encoder_choice():
    assert "bert4rec" in choices(HistoryEncoder) and "bert4rec" in ENCODERS
    encoder = get_encoder("bert4rec", units=D, max_length=L, num_layers=3, num_heads=2, dropout=0.3)
    assert isinstance(encoder, Bert4RecEncoder)
    assert (encoder.units, encoder.max_length, encoder.num_layers) == (D, L, 3)
    assert (encoder.num_heads, encoder.dropout) == (2, 0.3)


def test_round_trip_with_weights_in_masked_mode():
    masked = tf.constant([[False, True, False], [True, False, True]])
    padding = tf.constant([[False, True, True], [True, True, True]])
    assert_layer_roundtrip(
        Bert4RecEncoder(D, max_length=3, num_layers=1, num_heads=2, dropout=0.1),
        tf.constant(_normal(B, 3, D)),
        padding_mask=padding,
        masked_positions=masked,
        training=False,
        rtol=1e-5,
    )


def test_weights_are_a_bidirectional_transformer_and_a_mask_vector():
    enc = Bert4RecEncoder(D, max_length=6, num_layers=1, num_heads=2)
    enc(tf.constant(_normal(B, L, D)), training=False)
    shapes = {w.name.split("/", 1)[1]: tuple(w.shape) for w in enc.weights}
    assert shapes["mask_vector:0"] == (D,)
    # max_length + 1 positions: 6 history items, then the mask slot.
    assert shapes["bidirectional_transformer/positions/embeddings:0"] == (7, D)
    assert enc._transformer.causal is False


def test_bidirectional_unlike_the_causal_transformer():
    # Changing the LATER item at position 3 changes the output at position 1 in masked
    # mode; the causal transformer (same sizes) keeps outputs at positions < 3.
    x = _normal(B, L, D, seed=1)
    x2 = x.copy()
    x2[:, 3] += 10.0
    none_masked = np.zeros((B, L), bool)
    enc = _encoder()
    base = enc(tf.constant(x), masked_positions=none_masked, training=False).numpy()
    changed = enc(tf.constant(x2), masked_positions=none_masked, training=False).numpy()
    assert np.abs(changed[:, 1] - base[:, 1]).max() > 1e-3
    causal = TransformerEncoder(D, max_length=8, num_layers=2, num_heads=2, dropout=0.1)
    base = causal(tf.constant(x), training=False).numpy()
    changed = causal(tf.constant(x2), training=False).numpy()
    np.testing.assert_allclose(changed[:, :3], base[:, :3], atol=1e-5)


def test_masked_inputs_are_replaced_by_the_mask_vector():
    # The input at a masked position is never read: garbage there changes nothing,
    # while the same change at an unmasked position does.
    x = _normal(B, L, D, seed=2)
    masked = np.zeros((B, L), bool)
    masked[:, 2] = True
    enc = _encoder()
    base = enc(tf.constant(x), masked_positions=masked, training=False).numpy()
    x2 = x.copy()
    x2[:, 2] += 50.0
    same = enc(tf.constant(x2), masked_positions=masked, training=False).numpy()
    np.testing.assert_allclose(same, base, atol=1e-5)
    x3 = x.copy()
    x3[:, 1] += 50.0
    other = enc(tf.constant(x3), masked_positions=masked, training=False).numpy()
    assert np.abs(other - base).max() > 1e-3


def test_padding_positions_are_never_masked():
    x = _normal(B, L, D, seed=3)
    padding = np.array([[False, False, True, True, True]] * B)
    masked = np.zeros((B, L), bool)
    masked[:, 3] = True
    enc = _encoder()
    base = enc(tf.constant(x), padding_mask=padding, masked_positions=masked, training=False)
    masked[:, :2] = True  # on padding: ignored
    also = enc(tf.constant(x), padding_mask=padding, masked_positions=masked, training=False)
    np.testing.assert_allclose(also.numpy(), base.numpy(), atol=1e-6)
    np.testing.assert_array_equal(base.numpy()[:, :2], 0.0)


def test_next_item_query_is_the_output_of_an_appended_mask():
    # Inference on items [a, b, c] == masked mode on [a, b, c, anything] with the last
    # position masked (the training situation), read at the mask; placed at position 2.
    x = _normal(B, 3, D, seed=4)
    enc = _encoder(max_length=3)
    query = enc(tf.constant(x), training=False).numpy()  # [B, 3, D]
    np.testing.assert_array_equal(query[:, :2], 0.0)
    extended = np.concatenate([x, _normal(B, 1, D, seed=5)], axis=1)  # [B, 4, D]
    masked = np.array([[False, False, False, True]] * B)
    training_view = enc(tf.constant(extended), masked_positions=masked, training=False).numpy()
    np.testing.assert_allclose(query[:, 2], training_view[:, 3], rtol=1e-5, atol=1e-6)


def test_next_item_query_keeps_the_max_length_most_recent_items():
    # max_length = 2: the query after [z, a, b] is the query after [a, b].
    x = _normal(1, 3, D, seed=6)
    enc = _encoder(max_length=2)
    long = enc(tf.constant(x), training=False).numpy()
    short = enc(tf.constant(x[:, 1:]), training=False).numpy()
    np.testing.assert_allclose(long[:, -1], short[:, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"units": 0}, "Bert4RecEncoder: units=0; expected an integer >= 1"),
        ({"max_length": 0}, "Bert4RecEncoder: max_length=0; expected an integer >= 1"),
        ({"num_heads": 3}, "units=4 is not divisible by num_heads=3"),
        ({"dropout": 1.0}, "dropout=1.0; expected 0 <= dropout < 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Bert4RecEncoder(**{"units": D, "max_length": L, **kwargs})


def test_input_size_must_be_units():
    with pytest.raises(ValueError, match="input size 3; expected units=4"):
        Bert4RecEncoder(D, max_length=L)(tf.constant(_normal(B, L, 3)))
