"""Empty histories ([B, 0]) and empty batches (B = 0) in the history helpers and towers.

Issue 9, defect 1: ``trim_leading_padding`` ran an ArgMax over an empty axis
("Reduction axis 0 is empty") for a ``[B, 0]`` history, inside exported graphs.
The helpers are checked in a ``tf.function`` with unknown shapes, like a
SavedModel signature, and eagerly.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfrec.layers.encoders import ENCODERS, get_encoder
from tfrec.layers.towers import ItemTower, QueryTower, compact_history, trim_leading_padding

_HISTORY_SPEC = tf.TensorSpec([None, None], tf.int32)


@tf.function(input_signature=[_HISTORY_SPEC])
def _compact_in_graph(history):
    return compact_history(history)


@tf.function(input_signature=[_HISTORY_SPEC, _HISTORY_SPEC])
def _trim_in_graph(history, target):
    out = trim_leading_padding({"history": history, "target": target, "user": history[:, :0]})
    return out["history"], out["target"]


@pytest.mark.parametrize("run", [compact_history, _compact_in_graph], ids=["eager", "graph"])
def test_compact_history_gives_an_empty_history_one_padding_column(run):
    assert run(tf.zeros([2, 0], tf.int32)).numpy().tolist() == [[0], [0]]
    assert run(tf.zeros([0, 0], tf.int32)).shape == (0, 1)
    assert run(tf.zeros([0, 3], tf.int32)).shape == (0, 3)
    # L >= 1 is unchanged: OOV (1) dropped, padding moved left, no column added.
    history = tf.constant([[3, 0, 1, 4], [0, 0, 0, 0]])
    assert run(history).numpy().tolist() == [[0, 0, 3, 4], [0, 0, 0, 0]]


@pytest.mark.parametrize(
    ("history", "expected_history"),
    [
        (np.zeros((2, 0)), [[0], [0]]),  # [B, 0]: one padding column
        (np.zeros((0, 0)), np.zeros((0, 1))),  # empty batch, no columns
        (np.zeros((0, 3)), np.zeros((0, 3))),  # empty batch: no real column, all kept
        (np.zeros((2, 3)), np.zeros((2, 3))),  # no real item: all columns kept (as before)
        ([[0, 0, 5], [0, 4, 6]], [[0, 5], [4, 6]]),  # leading all-padding column dropped
    ],
)
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_trim_leading_padding_never_reduces_an_empty_axis(history, expected_history, graph):
    history = tf.constant(history, tf.int32)
    target = history + tf.cast(history > 0, tf.int32) * 10  # a real target where history is real
    if graph:
        out_history, out_target = _trim_in_graph(history, target)
    else:
        out = trim_leading_padding({"history": history, "target": target})
        out_history, out_target = out["history"], out["target"]
    expected = np.asarray(expected_history, np.int32)
    np.testing.assert_array_equal(out_history.numpy(), expected)
    np.testing.assert_array_equal(out_target.numpy(), np.where(expected > 0, expected + 10, 0))


def test_trim_leading_padding_pads_context_features_too():
    features = {"history": tf.zeros([2, 0], tf.int32), "context": tf.zeros([2, 0, 3])}
    out = trim_leading_padding(features)
    assert out["history"].shape == (2, 1) and out["context"].shape == (2, 1, 3)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_final_query_of_an_empty_history_is_the_user_vector(encoder):
    # The encoders output zeros at padding positions, so with no history the query is
    # exactly the user embedding, whatever the history length: 0, 1 or 3 padding columns.
    items = ItemTower(10, 4, name="items")
    tower = QueryTower(items, get_encoder(encoder, 4, 4, num_heads=2), num_users=5)
    users = tf.constant([2, 4])
    tower.final_query(users, tf.constant([[3, 5], [0, 6]]))  # builds the weights
    expected = tower._users.embeddings.numpy()[[2, 4]]
    for length in (0, 1, 3):
        query = tower.final_query(users, tf.zeros([2, length], tf.int32)).numpy()
        np.testing.assert_allclose(query, expected, rtol=1e-6, err_msg=f"L={length}")
    assert tower.final_query(users[:0], tf.zeros([0, 0], tf.int32)).shape == (0, 4)
