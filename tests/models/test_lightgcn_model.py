"""LightGCN: normalised adjacency, propagation, layer combination, query fallback, export."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import check_in_fresh_process, export_case, tiny_vocabs

from tfrec.layers.graph import (
    graph_query,
    normalized_adjacency,
    propagate,
)
from tfrec.models.lightgcn import LightGCNConfig, LightGCNModel
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.optimizers import make_optimizer

R = 1 / math.sqrt(2)  # 0.70711
# 2 users (indices 2, 3) and 3 items (indices 2, 3, 4): u2-i2, u2-i3, u3-i3, u3-i4.
# Nodes: users 0..3, items 4..8 (item i is node 4 + i). deg(u2) = deg(u3) = deg(i3) = 2,
# deg(i2) = deg(i4) = 1, so A(u2, i2) = 1/sqrt(2*1), A(u2, i3) = 1/sqrt(2*2) = 0.5, ...
USERS, ITEMS = np.array([2, 2, 3, 3]), np.array([2, 3, 3, 4])
EXPECTED_EDGES = {(2, 6): R, (2, 7): 0.5, (3, 7): 0.5, (3, 8): R}
# Ego embeddings (D = 2) of nodes 0..8; reserved nodes 0, 1, 4, 5 are isolated.
E0 = np.array([[9, 9], [9, 9], [1, 1], [0, 1], [9, 9], [9, 9], [1, 0], [0, 2], [2, 2]], np.float32)
# One layer E1 = A E0, by hand:
#   u2 = R*i2 + 0.5*i3 = [R, 1]          u3 = 0.5*i3 + R*i4 = [2R, 1 + 2R]
#   i2 = R*u2 = [R, R]   i3 = 0.5*u2 + 0.5*u3 = [0.5, 1]   i4 = R*u3 = [0, R]
E1 = np.array(
    [[0, 0], [0, 0], [R, 1], [2 * R, 1 + 2 * R], [0, 0], [0, 0], [R, R], [0.5, 1], [0, R]],
    np.float32,
)


def _adjacency() -> tf.SparseTensor:
    # A repeated pair and pairs with padding/OOV indices must not add edges.
    users = np.concatenate([USERS, [2, 0, 3]])
    items = np.concatenate([ITEMS, [2, 3, 1]])
    return normalized_adjacency(users, items, num_users=4, num_items=5)


def test_adjacency_is_the_hand_computed_symmetric_normalisation():
    dense = tf.sparse.to_dense(_adjacency()).numpy()
    expected = np.zeros((9, 9), np.float32)
    for (row, col), value in EXPECTED_EDGES.items():
        expected[row, col] = expected[col, row] = value
    np.testing.assert_allclose(dense, expected, rtol=1e-6)


def test_adjacency_rejects_misaligned_or_out_of_range_indices():
    with pytest.raises(ValueError, match="users has 2 entries and items 1"):
        normalized_adjacency(np.array([2, 3]), np.array([2]), 4, 5)
    with pytest.raises(ValueError, match=r"items holds indices in \[2, 5\]; expected \[0, 5\)"):
        normalized_adjacency(np.array([2, 3]), np.array([2, 5]), 4, 5)


def test_one_layer_is_hand_checked_and_layers_are_averaged():
    adjacency = _adjacency()
    np.testing.assert_allclose(propagate(adjacency, E0, 0).numpy(), E0)
    np.testing.assert_allclose(propagate(adjacency, E0, 1).numpy(), (E0 + E1) / 2, rtol=1e-6)
    dense = tf.sparse.to_dense(adjacency).numpy()
    e2 = dense @ E1  # the second layer, from the hand-checked first
    np.testing.assert_allclose(propagate(adjacency, E0, 2).numpy(), (E0 + E1 + e2) / 3, rtol=1e-5)


def test_gradient_equals_that_of_sparse_dense_matmul():
    # The CSR kernel has a custom gradient: compare with TensorFlow's own sparse op.
    adjacency = _adjacency()
    weights = tf.constant(np.arange(18, dtype=np.float32).reshape(9, 2))
    ego = tf.Variable(E0)

    def reference() -> tf.Tensor:
        layer, total = tf.convert_to_tensor(ego), tf.convert_to_tensor(ego)
        for _ in range(2):
            layer = tf.sparse.sparse_dense_matmul(adjacency, layer)
            total += layer
        return total / 3

    grads = []
    for fn in (lambda: propagate(adjacency, ego, 2), reference):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * fn())
        grads.append(tape.gradient(loss, ego).numpy())
    assert np.abs(grads[0]).sum() > 0
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)


def test_unknown_user_query_is_the_mean_of_its_history_items():
    user_table = np.array([[0, 0], [7, 7], [1, 2], [3, 4]], np.float32)  # [U=4, 2]
    item_table = np.array([[5, 5], [6, 6], [1, 0], [0, 2], [2, 2]], np.float32)  # [I=5, 2]
    known = np.array([0, 0, 1, 0], np.float32)  # user 3 is in the vocabulary, not the graph
    user = np.array([2, 1, 3, 0], np.int32)
    history = np.array([[2, 3, 0], [2, 1, 4], [0, 0, 0], [3, 3, 4]], np.int32)
    query = graph_query(user_table, item_table, known, user, history).numpy()
    expected = [
        [1, 2],  # known: its own vector, whatever the history
        [1.5, 1],  # OOV user: mean of items 2 and 4 (the OOV entry 1 is ignored)
        [0, 0],  # not in the graph, empty history: zero vector
        [2 / 3, 2],  # padding user: mean of 3, 3, 4 = ([0, 2] + [0, 2] + [2, 2]) / 3
    ]
    np.testing.assert_allclose(query, expected, rtol=1e-6)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"LightGCNConfig.num_layers=-1; expected an integer >= 0"):
        LightGCNConfig(num_layers=-1)
    with pytest.raises(ValueError, match=r"LightGCNConfig\.loss='hinge'; expected one of"):
        LightGCNConfig(loss="hinge")
    with pytest.raises(ValueError, match=r"training\.strategy='parameter_server'"):
        LightGCNConfig(training=TrainingConfig(strategy="parameter_server"))
    with pytest.raises(ValueError, match=r"training\.jit_compile=True; expected False"):
        LightGCNConfig(training=TrainingConfig(jit_compile=True))


def test_bpr_loss_with_a_single_item_is_log2_plus_the_l2_term():
    # One real item: the negative is the positive, so BPR = softplus(0) = ln 2 exactly.
    # L2 = l2 / 2 * (|e_u|^2 + |e_pos|^2 + |e_neg|^2) / N on the EGO embeddings.
    adjacency = normalized_adjacency(np.array([2]), np.array([2]), 3, 3)
    config = LightGCNConfig(embedding_dim=2, num_layers=1, l2=0.1)
    model = LightGCNModel(config, 3, 3, adjacency)
    users, items = model.propagation.ego()
    users.assign([[0, 0], [0, 0], [1, 2]])
    items.assign([[0, 0], [0, 0], [3, 0]])
    batch = {"user": tf.constant([2, 2, 0]), "target": tf.constant([[2], [2], [2]])}
    # 2 real pairs (the padding user is skipped): (0.1 / 2) * 2 * (5 + 9 + 9) / 2 = 1.15
    assert float(model.compute_loss(batch)) == pytest.approx(math.log(2) + 1.15, rel=1e-6)
    empty = {"user": tf.constant([0]), "target": tf.constant([[2]])}
    assert float(model.compute_loss(empty)) == 0.0
    softmax = LightGCNModel(dataclasses.replace(config, loss="softmax"), 3, 3, adjacency)
    assert float(softmax.compute_loss(empty)) == 0.0


def _tiny_model(loss: str = "bpr") -> tuple[LightGCNModel, object, object]:
    """A LightGCN on the tiny vocabularies (u0..u5, i0..i7); u5 has no training pair."""
    users_vocab, items_vocab = tiny_vocabs()
    users = np.array([2, 2, 3, 3, 4, 4, 5, 6, 6], np.int32)  # u0..u4 (index 7 = u5 absent)
    items = np.array([2, 3, 3, 4, 5, 6, 7, 8, 9], np.int32)
    adjacency = normalized_adjacency(users, items, users_vocab.size, items_vocab.size)
    config = LightGCNConfig(
        embedding_dim=4, num_layers=2, loss=loss, max_history=4,
        optimizer=OptimizerConfig(learning_rate=0.05),
    )  # fmt: skip
    tf.keras.utils.set_random_seed(0)
    model = LightGCNModel(config, users_vocab.size, items_vocab.size, adjacency)
    model.compile(make_optimizer(config.optimizer))
    pairs = tf.data.Dataset.from_tensor_slices({"user": users, "target": items[:, None]})
    model.fit(pairs.batch(4), epochs=3, verbose=0)
    return model, users_vocab, items_vocab


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_trained_model_queries_unknown_users_by_history(loss):
    model, _, _ = _tiny_model(loss)
    items = model.candidate_embeddings().numpy()  # [10, 4]
    user = tf.constant([7, 1])  # u5 (not in the graph) and an OOV user
    history = tf.constant([[0, 3, 5, 1], [0, 0, 0, 0]])
    query = model.query_embeddings(user, history).numpy()
    np.testing.assert_allclose(query[0], (items[3] + items[5]) / 2, rtol=1e-5)
    np.testing.assert_array_equal(query[1], np.zeros(4))
    known = model.query_embeddings(tf.constant([2]), history[:1]).numpy()
    np.testing.assert_allclose(known[0], model.final_tables()[0].numpy()[2], rtol=1e-6)
    assert np.abs(known).sum() > 0


@pytest.mark.slow
def test_frozen_export_reloads_in_a_fresh_process_with_the_same_top_k(tmp_path):
    model, users_vocab, items_vocab = _tiny_model()
    frozen = model.frozen()
    history = tf.constant([[0, 2, 3, 9], [4, 0, 0, 0]])
    np.testing.assert_allclose(
        frozen.score(tf.constant([2, 7]), history).numpy(),
        model.score(tf.constant([2, 7]), history).numpy(),
        rtol=1e-6,
    )
    case = export_case("lightgcn", frozen, users_vocab, items_vocab, tmp_path / "models")
    # serving_inputs: a known user, u5 (not in the graph), an OOV user, an empty request.
    assert case.expected_ids.shape == (5, 8)
    check_in_fresh_process([case], tmp_path)
    saved = tf.train.list_variables(str(case.export_dir / "variables" / "variables"))
    shapes = {
        name.split("/.ATTRIBUTES")[0]: shape for name, shape in saved if "/.ATTRIBUTES" in name
    }
    # Only the final tables and the candidates: no ego embeddings, no adjacency.
    assert shapes == {
        "candidates": [10, 4],
        "query_tower/item_table": [10, 4],
        "query_tower/user_table": [8, 4],
        "query_tower/known_users": [8],
    }
