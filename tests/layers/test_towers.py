import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrec.data.item_features import build_item_feature_tables
from tfrec.data.vocab import IdVocabulary
from tfrec.layers.encoders import MeanEncoder, get_encoder
from tfrec.layers.towers import ItemTower, QueryTower, compact_history, trim_leading_padding


def _catalogue():
    vocab = IdVocabulary(["a", "b", "c"], name="item")  # a=2, b=3, c=4
    items = pd.DataFrame(
        {
            "item_id": ["c", "a", "zzz"],  # zzz is not in the vocabulary; b has no metadata
            "title": ["Toy Story (1995)", "The Story, Again!", "Ignored"],
            "genres": [["Comedy", "Animation"], ["Drama"], ["Horror"]],
        }
    )
    return vocab, items


def test_build_item_feature_tables_alignment():
    vocab, items = _catalogue()
    tables = build_item_feature_tables(items, vocab, max_title_tokens=3)
    # Genres from all rows, sorted: Animation, Comedy, Drama, Horror.
    assert tables.genre_names == ["Animation", "Comedy", "Drama", "Horror"]
    expected_genres = np.zeros((5, 4), np.float32)
    expected_genres[2, 2] = 1  # a: Drama
    expected_genres[4, [0, 1]] = 1  # c: Animation, Comedy
    np.testing.assert_array_equal(tables.genres, expected_genres)
    vocab_index = {t: i for i, t in enumerate(tables.title_vocabulary)}
    assert tables.title_vocabulary[:2] == ["", "[UNK]"]
    # Lower-cased, punctuation stripped, cut to 3 tokens, padded with 0.
    np.testing.assert_array_equal(
        tables.titles[4], [vocab_index["toy"], vocab_index["story"], vocab_index["1995"]]
    )
    np.testing.assert_array_equal(
        tables.titles[2], [vocab_index["the"], vocab_index["story"], vocab_index["again"]]
    )
    np.testing.assert_array_equal(tables.titles[[0, 1, 3]], 0)  # padding, OOV, b (no metadata)
    assert tables.title_vocab_size == len(tables.title_vocabulary)


def test_build_item_feature_tables_without_metadata():
    vocab, _ = _catalogue()
    tables = build_item_feature_tables(None, vocab)
    assert tables.genres is None and tables.titles is None and tables.title_vocab_size == 0
    empty = pd.DataFrame({"item_id": ["a"], "title": [""], "genres": [[]]})
    tables = build_item_feature_tables(empty, vocab)
    assert tables.genres is None and tables.titles is None


def test_build_item_feature_tables_errors():
    vocab, items = _catalogue()
    with pytest.raises(ValueError, match="lacks column"):
        build_item_feature_tables(items.drop(columns="genres"), vocab)
    with pytest.raises(ValueError, match="duplicate item_id 'a'"):
        build_item_feature_tables(pd.concat([items, items.iloc[[1]]]), vocab)


def test_item_tower_content_features_hand_computed():
    # One genre and a 2-token title; all weights set by hand, D = 2.
    genres = np.array([[0], [0], [1], [0]], np.float32)
    titles = np.array([[0, 0], [0, 0], [1, 2], [2, 0]], np.int32)
    tower = ItemTower(4, 2, genre_table=genres, title_table=titles, title_vocab_size=3)
    tower(tf.constant([0]))
    tower._ids.set_weights([np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)])
    tower._genres.set_weights([np.array([[10, 20]], np.float32)])
    tower._titles.set_weights([np.array([[99, 99], [2, 4], [6, 8]], np.float32)])
    out = tower(tf.constant([2, 3])).numpy()
    # item 2: id [1, 0] + genre [10, 20] + mean(title[1], title[2]) = [4, 6] -> [15, 26]
    # item 3: id [0, 1] + no genre + mean(title[2]) = [6, 8] -> [6, 9] (token 0 is masked)
    np.testing.assert_allclose(out, [[15, 26], [6, 9]])
    assert tower.all_items().shape == (4, 2)
    assert tower.uses_content_features


def test_cold_item_gets_content_vector():
    # An item never trained still shares the genre/title part with similar items.
    genres = np.array([[0], [0], [1], [1]], np.float32)
    tower = ItemTower(4, 3, genre_table=genres)
    tower(tf.constant([0]))
    tower._ids.set_weights([np.zeros((4, 3), np.float32)])
    out = tower(tf.constant([2, 3])).numpy()
    np.testing.assert_allclose(out[0], out[1])
    assert np.abs(out[0]).sum() > 0


def test_item_tower_rejects_misaligned_table():
    with pytest.raises(ValueError, match="genre_table has shape"):
        ItemTower(5, 2, genre_table=np.zeros((4, 2)))


def test_item_tower_config_json_round_trip():
    tower = ItemTower(
        4,
        3,
        genre_table=np.eye(4, 2),
        title_table=np.array([[0, 0], [0, 0], [1, 2], [2, 0]]),
        title_vocab_size=3,
        l2=0.01,
        name="items",
    )
    clone = ItemTower.from_config(json.loads(json.dumps(tower.get_config())))
    assert clone.get_config() == tower.get_config()
    np.testing.assert_array_equal(clone.genre_table, np.eye(4, 2))


def test_query_tower_hand_computed_mean_plus_user():
    tower = ItemTower(4, 2)
    query = QueryTower(tower, MeanEncoder(), num_users=3)
    features = {"user": tf.constant([2]), "history": tf.constant([[0, 2, 3]])}
    query(features)
    tower._ids.set_weights([np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)])
    query._users.set_weights([np.array([[0, 0], [0, 0], [5, 5]], np.float32)])
    out = query(features).numpy()
    # position 1: mean(item 2) + user = [1, 0] + [5, 5] = [6, 5]
    # position 2: mean(items 2, 3) + user = [0.5, 0.5] + [5, 5] = [5.5, 5.5]
    np.testing.assert_allclose(out[0, 1:], [[6, 5], [5.5, 5.5]])


def test_query_tower_masks_oov_history_entries():
    tower = ItemTower(6, 4)
    query = QueryTower(tower, get_encoder("transformer", 4, max_length=4, dropout=0.0))
    with_oov = query({"history": tf.constant([[2, 1, 3, 4]])}).numpy()
    without = query({"history": tf.constant([[0, 2, 3, 4]])}).numpy()
    np.testing.assert_allclose(with_oov[0, 2:], without[0, 2:], atol=1e-6)


def test_query_tower_context_features():
    tower = ItemTower(4, 2)
    query = QueryTower(tower, MeanEncoder(), context_dim=3)
    history = tf.constant([[2, 3]])
    a = query({"history": history, "context": tf.zeros((1, 2, 3))}).numpy()
    b = query({"history": history, "context": tf.ones((1, 2, 3))}).numpy()
    assert np.abs(a - b).max() > 1e-4
    with pytest.raises(ValueError, match="no 'context'"):
        query({"history": history})


def test_query_tower_config_json_round_trip():
    query = QueryTower(
        ItemTower(4, 4, genre_table=np.eye(4, 2)),
        get_encoder("gru", 4, max_length=3),
        num_users=5,
        context_dim=2,
        l2=0.1,
        name="query",
    )
    config = json.loads(json.dumps(query.get_config()))
    clone = QueryTower.from_config(config)
    assert clone.get_config() == query.get_config()
    out = clone(
        {
            "user": tf.constant([1]),
            "history": tf.constant([[2, 3, 0]]),
            "context": tf.zeros((1, 3, 2)),
        }
    )
    assert out.shape == (1, 3, 4)


def test_compact_history():
    history = tf.constant([[2, 0, 1, 3, 0], [0, 0, 0, 0, 0], [4, 5, 6, 7, 8]])
    # OOV (1) becomes padding; padding moves left, real items keep their order.
    expected = [[0, 0, 0, 2, 3], [0, 0, 0, 0, 0], [4, 5, 6, 7, 8]]
    np.testing.assert_array_equal(compact_history(history).numpy(), expected)


def test_build_item_feature_tables_equal_length_genre_lists():
    # Same-length genre lists must not be turned into a 2-D array by accident.
    vocab = IdVocabulary(["a", "b"], name="item")
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["", ""], "genres": [["x"], ["y"]]})
    tables = build_item_feature_tables(items, vocab)
    np.testing.assert_array_equal(tables.genres, [[0, 0], [0, 0], [1, 0], [0, 1]])
    assert tables.titles is None


def test_trim_leading_padding():
    features = {
        "user": tf.constant([2, 3]),
        "history": tf.constant([[0, 0, 0, 2, 3], [0, 0, 4, 5, 6]]),
        "target": tf.constant([[0, 0, 0, 3, 7], [0, 0, 5, 6, 8]]),
    }
    out = trim_leading_padding(features)
    np.testing.assert_array_equal(out["history"].numpy(), [[0, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(out["target"].numpy(), [[0, 3, 7], [5, 6, 8]])
    np.testing.assert_array_equal(out["user"].numpy(), [2, 3])
    empty = trim_leading_padding({"history": tf.zeros((2, 3), tf.int32)})
    assert empty["history"].shape == (2, 3)
