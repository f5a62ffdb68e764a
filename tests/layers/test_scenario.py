"""ScenarioEncoder: config round trip, the encoder contract, hand-computed outputs, sharing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import assert_layer_roundtrip

from tfrec.layers.encoders import MeanEncoder, TransformerEncoder, get_encoder
from tfrec.layers.scenario import ResidualAdapter, ScenarioEncoder

B, L, D = 2, 3, 4
MASK = tf.constant([[False, True, True], [True, True, True]])  # row 0 left padded


def _normal(*shape: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


def test_round_trip_with_weights_rebuilds_the_wrapped_encoder():
    keras.utils.set_random_seed(0)
    layer = ScenarioEncoder(
        TransformerEncoder(D, max_length=2, num_layers=1, num_heads=2, dropout=0.1),
        epsilon=1e-3,
        name="beauty_encoder",
    )
    layer(_normal(B, L, D), padding_mask=MASK)  # build, then make the scenario parts non-trivial
    layer.scenario_vector.assign([0.5, -1.0, 2.0, 0.0])
    clone = assert_layer_roundtrip(layer, _normal(B, L, D), padding_mask=MASK, training=False)
    assert isinstance(clone.encoder, TransformerEncoder)
    assert clone.encoder.num_heads == 2 and clone.epsilon == 1e-3
    np.testing.assert_allclose(clone.scenario_vector.numpy(), [0.5, -1.0, 2.0, 0.0])


def test_output_is_the_normalised_encoding_of_the_shifted_inputs():
    # MeanEncoder (no weights), one real item x = [1, 2, 3], scenario vector v = [0, 0, 3]:
    # encoder(x + v) = [1, 2, 6]; mean 3, variance (4 + 1 + 9) / 3 = 14 / 3, so the
    # LayerNorm (gamma 1, beta 0) gives [-2, -1, 3] / sqrt(14 / 3) = [-0.926, -0.463, 1.389].
    layer = ScenarioEncoder(MeanEncoder(), epsilon=1e-9)
    inputs = tf.constant([[[9.0, 9.0, 9.0], [1.0, 2.0, 3.0]]])  # [1, 2, 3]; position 0 padding
    mask = tf.constant([[False, True]])
    layer(inputs, padding_mask=mask)
    layer.scenario_vector.assign([0.0, 0.0, 3.0])
    out = layer(inputs, padding_mask=mask).numpy()
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.0])  # padding stays zero
    np.testing.assert_allclose(out[0, 1], np.array([-2.0, -1.0, 3.0]) / np.sqrt(14 / 3), rtol=1e-5)


def test_round_trip_with_the_mean_expert_keeps_the_gate():
    keras.utils.set_random_seed(0)
    layer = ScenarioEncoder(get_encoder("gru", D, L, dropout=0.0), mean_expert=True)
    layer(_normal(B, L, D), padding_mask=MASK)
    layer.gate_logits.assign([0.3, -1.2])
    clone = assert_layer_roundtrip(layer, _normal(B, L, D), padding_mask=MASK, training=False)
    assert clone.mean_expert
    np.testing.assert_allclose(clone.gate_logits.numpy(), [0.3, -1.2])


def test_a_gate_on_the_mean_expert_ignores_the_encoder():
    # Items a = [1, 2, 3], b = [3, 2, 7]; running means [1, 2, 3] and [2, 2, 5].
    # LayerNorm of [2, 2, 5]: mean 3, variance (1 + 1 + 4) / 3 = 2 -> [-1, -1, 2] / sqrt(2);
    # of [1, 2, 3]: variance 2 / 3 -> [-1, 0, 1] / sqrt(2 / 3). The output LayerNorm of an
    # already normalised vector leaves it unchanged; gate logits [-30, 30] put ~all weight
    # on the mean, so the GRU's (random) outputs do not matter.
    keras.utils.set_random_seed(3)
    layer = ScenarioEncoder(get_encoder("gru", 3, 2, dropout=0.0), epsilon=1e-9, mean_expert=True)
    inputs = tf.constant([[[1.0, 2.0, 3.0], [3.0, 2.0, 7.0]]])  # [1, 2, 3]
    layer(inputs)
    layer.gate_logits.assign([-30.0, 30.0])
    out = layer(inputs).numpy()
    expected = np.array([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]) / np.sqrt([[2 / 3], [2]])
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)


def test_a_gate_on_the_encoder_gives_the_plain_wrapper_output():
    # LayerNorm(LayerNorm(e)) = LayerNorm(e) with unit gamma and zero beta, so gate logits
    # [30, -30] make the mean-expert wrapper output what the plain wrapper outputs.
    keras.utils.set_random_seed(4)
    shared = get_encoder("gru", D, L, dropout=0.0)
    plain, gated = ScenarioEncoder(shared), ScenarioEncoder(shared, mean_expert=True)
    x = _normal(B, L, D)
    plain(x, padding_mask=MASK)
    gated(x, padding_mask=MASK)
    gated.gate_logits.assign([30.0, -30.0])
    np.testing.assert_allclose(
        gated(x, padding_mask=MASK), plain(x, padding_mask=MASK), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("mean_expert", [False, True])
def test_keeps_the_encoder_contract_padding_invariant_and_causal(mean_expert):
    keras.utils.set_random_seed(1)
    layer = ScenarioEncoder(get_encoder("gru", D, L, dropout=0.0), mean_expert=mean_expert)
    x = _normal(1, L, D)
    layer(x)
    layer.scenario_vector.assign([1.0, 0.0, -1.0, 0.5])
    if mean_expert:
        layer.gate_logits.assign([0.5, -0.5])
    full = layer(x).numpy()
    # Two more padding rows in front (with garbage values): the real outputs are the same.
    padded = tf.concat([_normal(1, 2, D, seed=5), x], axis=1)
    mask = tf.constant([[False, False, True, True, True]])
    out = layer(padded, padding_mask=mask).numpy()
    np.testing.assert_allclose(out[0, 2:], full[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[0, :2], np.zeros((2, D)))
    # Causal: changing the last item leaves the earlier outputs alone.
    changed = tf.concat([x[:, :2], _normal(1, 1, D, seed=9)], axis=1)
    np.testing.assert_allclose(layer(changed).numpy()[0, :2], full[0, :2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "mean_expert, own_count",
    [(False, 3), (True, 8)],  # vector, output norm (2); + gate logits, 2 expert norms (4)
)
def test_two_scenarios_share_the_encoder_variables_but_not_their_own(mean_expert, own_count):
    shared = get_encoder("transformer", D, L, num_layers=1, dropout=0.0)
    first = ScenarioEncoder(shared, mean_expert=mean_expert)
    second = ScenarioEncoder(shared, mean_expert=mean_expert)
    x = _normal(B, L, D)
    first(x, padding_mask=MASK)
    second(x, padding_mask=MASK)
    shared_refs = {v.ref() for v in shared.trainable_variables}
    for layer in (first, second):
        own = [v for v in layer.trainable_variables if v.ref() not in shared_refs]
        assert len(own) == own_count
        assert shared_refs <= {v.ref() for v in layer.trainable_variables}
    # Same weights so far: same outputs; another scenario vector: other outputs.
    np.testing.assert_allclose(first(x, padding_mask=MASK), second(x, padding_mask=MASK))
    second.scenario_vector.assign(tf.ones([D]))
    assert not np.allclose(first(x, padding_mask=MASK), second(x, padding_mask=MASK))


def test_rejects_a_non_positive_epsilon():
    with pytest.raises(ValueError, match=r"ScenarioEncoder: epsilon=0.0; expected > 0"):
        ScenarioEncoder(MeanEncoder(), epsilon=0.0)


@pytest.mark.parametrize("adapter_dim", [-1, True, 2.0])
def test_rejects_an_adapter_width_that_is_not_a_count(adapter_dim):
    with pytest.raises(ValueError, match=rf"adapter_dim={adapter_dim!r}; expected an integer >= 0"):
        ScenarioEncoder(MeanEncoder(), adapter_dim=adapter_dim)
    with pytest.raises(ValueError, match=r"bottleneck_dim=0; expected an integer >= 1"):
        ResidualAdapter(0)


def test_round_trip_with_an_adapter_keeps_its_weights():
    keras.utils.set_random_seed(0)
    layer = ScenarioEncoder(get_encoder("gru", D, L, dropout=0.0), mean_expert=True, adapter_dim=2)
    layer(_normal(B, L, D), padding_mask=MASK)
    layer.adapter.up_kernel.assign(_normal(2, D, seed=7))  # non-zero: it changes the output
    clone = assert_layer_roundtrip(layer, _normal(B, L, D), padding_mask=MASK, training=False)
    assert clone.adapter_dim == 2
    np.testing.assert_allclose(clone.adapter.up_kernel.numpy(), layer.adapter.up_kernel.numpy())


def test_a_new_adapter_is_the_identity():
    # W_up = 0 and b_up = 0 at first: h + W_up gelu(W_down h + b_down) + b_up = h.
    keras.utils.set_random_seed(2)
    shared = get_encoder("gru", D, L, dropout=0.0)
    plain, adapted = ScenarioEncoder(shared), ScenarioEncoder(shared, adapter_dim=3)
    x = _normal(B, L, D)
    np.testing.assert_allclose(adapted(x, padding_mask=MASK), plain(x, padding_mask=MASK))


def test_the_adapter_adds_its_bottleneck_to_the_encoding():
    # MeanEncoder, one real item h = [1, 2, 3] (scenario vector 0), r = 1:
    # W_down = [[0], [0], [1/3]] -> z = 1, gelu(1) = Phi(1) = 0.841345 (relu would give 1);
    # W_up = [[0, 0, 1]], b_up = [0.5, 0, 0] -> h + adapter = [1.5, 2, 3.841345]:
    # mean 2.447115, deviations [-0.947115, -0.447115, 1.394230], variance 1.013605,
    # so the LayerNorm gives [-0.940737, -0.444104, 1.384841].
    layer = ScenarioEncoder(MeanEncoder(), epsilon=1e-9, adapter_dim=1)
    inputs = tf.constant([[[1.0, 2.0, 3.0]]])  # [1, 1, 3]
    layer(inputs)
    adapter = layer.adapter
    adapter.down_kernel.assign([[0.0], [0.0], [1.0 / 3.0]])
    adapter.up_kernel.assign([[0.0, 0.0, 1.0]])
    adapter.up_bias.assign([0.5, 0.0, 0.0])
    out = layer(inputs).numpy()
    np.testing.assert_allclose(out[0, 0], [-0.940737, -0.444104, 1.384841], rtol=1e-5)
