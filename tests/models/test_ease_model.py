"""EASE: the closed form on a hand-computed example, the catalogue limit, scoring, export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import assert_layer_roundtrip, check_in_fresh_process, export_case, tiny_vocabs

from tfrec.models.ease import (
    EASEConfig,
    EASEModel,
    HistoryMultiHot,
    check_catalogue,
    ease_weights,
    item_gram,
)

# Items a, b, c are indices 2, 3, 4 (vocabulary of 5: padding 0, OOV 1).
# Users: u2 = {a, b}, u3 = {b, c}, u4 = {b}.
#   G = X^T X = [[1, 1, 0],      G + 1 I = [[2, 1, 0],
#                [1, 3, 1],                 [1, 4, 1],
#                [0, 1, 1]]                 [0, 1, 2]]
#   det(G + I) = 2 (4*2 - 1*1) - 1 (1*2 - 1*0) = 14 - 2 = 12
#   P = (G + I)^-1 = adj / 12 = [[7, -2, 1], [-2, 4, -2], [1, -2, 7]] / 12
#   B_ij = -P_ij / P_jj (column j divided by its diagonal 7/12, 4/12, 7/12):
#   B = [[0,    1/2, -1/7],
#        [2/7,  0,    2/7],
#        [-1/7, 1/2,  0  ]]
# (row-wise division would give B[a, b] = 2/7, not 1/2: the orientation is tested)
USERS = np.array([2, 2, 3, 3, 4])
ITEMS = np.array([2, 3, 3, 4, 3])
EXPECTED_B = np.array([[0, 1 / 2, -1 / 7], [2 / 7, 0, 2 / 7], [-1 / 7, 1 / 2, 0]])


def test_three_item_weights_are_hand_checked_with_a_zero_diagonal():
    gram = item_gram(USERS, ITEMS, num_items=5)
    np.testing.assert_array_equal(gram.items, [2, 3, 4])
    np.testing.assert_array_equal(gram.gram, [[1, 1, 0], [1, 3, 1], [0, 1, 1]])
    np.testing.assert_allclose(ease_weights(gram.gram, 1.0), EXPECTED_B, rtol=1e-12)
    full = gram.weights(1.0)  # [5, 5] float32: padding and OOV rows/columns are zero
    assert full.shape == (5, 5) and full.dtype == np.float32
    np.testing.assert_allclose(full[2:, 2:], EXPECTED_B, rtol=1e-6)
    assert not full[:2].any() and not full[:, :2].any()
    np.testing.assert_array_equal(np.diag(full), np.zeros(5))


def test_gram_counts_a_repeated_pair_once_and_ignores_reserved_indices():
    # u2 sees a twice, OOV (1) once; the padding user 0 and OOV user 1 are dropped.
    gram = item_gram([2, 2, 2, 0, 1, 3], [2, 2, 1, 3, 3, 4], num_items=6)
    np.testing.assert_array_equal(gram.items, [2, 4])  # item 3 only has reserved users
    np.testing.assert_array_equal(gram.gram, np.eye(2))
    full = gram.weights(1.0)
    assert not full.any()  # no co-occurrence: every weight is 0
    with pytest.raises(ValueError, match=r"items holds indices in \[2, 6\]; expected \[0, 6\)"):
        item_gram([2, 3], [2, 6], num_items=6)
    with pytest.raises(ValueError, match="users has 2 entries and items 1"):
        item_gram([2, 3], [2], num_items=6)


def test_too_many_items_are_refused_with_the_bytes_needed():
    # 5 items: 5^2 * 4 = 100 bytes of float32 weights, 5^2 * 16 = 400 for the solve.
    with pytest.raises(ValueError, match=r"5 item indices, above EASEConfig.max_items=4.* 100 by"):
        EASEModel(EASEConfig(max_items=4), num_users=3, num_items=5)
    # 50,001 items: 4 * 50,001^2 = 10,000,400,004 bytes.
    with pytest.raises(ValueError, match=r"need 10,000,400,004 bytes \(10\.0 GB\)"):
        check_catalogue(50_001, EASEConfig().max_items)
    check_catalogue(50_000, 50_000)  # the limit itself is accepted


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"EASEConfig.l2=0; expected > 0"):
        EASEConfig(l2=0)
    with pytest.raises(ValueError, match=r"l2_grid=\[100, -1\] holds \[-1\]; expected values > 0"):
        EASEConfig(l2_grid=(100, -1))
    with pytest.raises(ValueError, match=r"EASEConfig.max_history=0; expected an integer >= 1"):
        EASEConfig(max_history=0)
    with pytest.raises(ValueError, match=r"ease_weights: l2=0.0; expected > 0"):
        ease_weights(np.eye(2), 0.0)
    assert EASEConfig(l2=7, l2_grid=()).grid() == (7,)
    assert EASEConfig.from_json(EASEConfig(l2_grid=(1.0, 2.0)).to_json()).l2_grid == (1.0, 2.0)


def test_scores_of_a_history_are_the_sum_of_its_rows_of_b():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(6, 6)).astype(np.float32)  # B of items 2..5
    weights[:2] = weights[:, :2] = 0.0
    np.fill_diagonal(weights, 0.0)
    model = EASEModel(EASEConfig(), num_users=4, num_items=6).assign(weights)
    np.testing.assert_array_equal(model.weights_matrix(), weights)
    history = tf.constant(
        [
            [0, 2, 5, 2],  # a repeated item counts once: B[2] + B[5]
            [1, 3, 0, 0],  # OOV and padding ignored: B[3]
            [0, 0, 0, 0],  # empty: all zeros
        ]
    )
    expected = np.stack([weights[2] + weights[5], weights[3], np.zeros(6)])
    expected[:, :2] = -np.inf
    for users in ([2, 3, 0], [1, 1, 1]):  # the user id is not read
        scores = model.score(tf.constant(users), history).numpy()
        np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(
        model.query_embeddings(tf.constant([2]), None).numpy(), np.zeros((1, 6))
    )
    with pytest.raises(ValueError, match=r"weights has shape \(5, 5\); expected \(6, 6\)"):
        model.assign(np.zeros((5, 5)))


def test_history_multi_hot_round_trip():
    layer = HistoryMultiHot(7, name="query")
    features = {"user": tf.constant([2, 3]), "history": tf.constant([[0, 6, 1], [4, 4, 2]])}
    clone = assert_layer_roundtrip(layer, features)
    np.testing.assert_array_equal(
        clone(features).numpy(), [[0, 0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 1, 0, 0]]
    )
    with pytest.raises(ValueError, match=r"HistoryMultiHot: num_items=2; expected an integer >= 3"):
        HistoryMultiHot(2)


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_with_the_same_top_k(tmp_path):
    users_vocab, items_vocab = tiny_vocabs()  # u0..u5 (2..7), i0..i7 (2..9)
    rng = np.random.default_rng(3)
    users = rng.integers(2, users_vocab.size, size=30)
    items = rng.integers(2, items_vocab.size, size=30)
    weights = item_gram(users, items, items_vocab.size).weights(0.5)
    assert np.count_nonzero(weights) > 20  # a non-trivial B
    model = EASEModel(EASEConfig(max_history=4), users_vocab.size, items_vocab.size)
    model.assign(weights)
    case = export_case("ease", model, users_vocab, items_vocab, tmp_path / "models")
    # serving_inputs: left/right padding, an unknown item, an empty request, a repeat.
    assert case.expected_ids.shape == (5, 8)
    check_in_fresh_process([case], tmp_path)
    saved = tf.train.list_variables(str(case.export_dir / "variables" / "variables"))
    shapes = {
        name.split("/.ATTRIBUTES")[0]: shape for name, shape in saved if "/.ATTRIBUTES" in name
    }
    assert shapes == {"candidates": [10, 10]}  # only B^T: the query tower has no weights
