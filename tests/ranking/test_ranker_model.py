import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.evaluation import list_ndcg, mean_list_auc
from tfrec.layers.ranking import CandidateAttention, EventSignals
from tfrec.layers.towers import ItemTower
from tfrec.models.ranking import LSTMRanker, RankerDataSpec, RankingConfig
from tfrec.tasks.config import RankingLossConfig
from tfrec.tasks.ranking import ListAUC, ListNDCG, RankingTask

VOCAB = 10
DIM = 4


def _ranker(**overrides) -> LSTMRanker:
    config = RankingConfig(
        embedding_dim=DIM, lstm_units=DIM, mlp_layers=[DIM], dropout=0.0, **overrides
    )
    spec = RankerDataSpec(
        num_users=VOCAB, num_items=VOCAB, rating_mean=3.0, use_rating_signal=True,
        use_time_signal=True,
    )  # fmt: skip
    genres = np.eye(VOCAB, 3, dtype=np.float32)  # a content table, to exercise ItemTower
    tower = ItemTower(VOCAB, DIM, genre_table=genres, name="item_tower")
    keras.utils.set_random_seed(0)
    return LSTMRanker(config, spec, item_tower=tower)


def _features(history, candidates, ratings=None, log_dt=None):
    history = np.asarray(history, np.int32)
    out = {
        "history": history,
        "candidates": np.asarray(candidates, np.int32),
        "user": np.full(len(history), 2, np.int32),
    }
    if ratings is not None:
        out["history_rating"] = np.asarray(ratings, np.float32)
        out["history_log_dt"] = np.asarray(log_dt, np.float32)
    return out


def _pad(features, extra):
    """Adds `extra` left-padding columns to every history feature."""
    out = dict(features)
    for key in ("history", "history_rating", "history_log_dt"):
        if key in out:
            value = out[key]
            out[key] = np.concatenate([np.zeros((len(value), extra), value.dtype), value], 1)
    return out


@pytest.mark.parametrize("interaction", ["concat", "attention"])
@pytest.mark.parametrize("use_cross", [False, True])
def test_shapes_and_padding_never_changes_scores(interaction, use_cross):
    model = _ranker(interaction=interaction, use_cross=use_cross)
    base = _features(
        [[3, 4, 5], [0, 0, 6]],
        [[2, 3, 7, 8], [9, 2, 3, 4]],
        ratings=[[4, 5, 1], [0, 0, 3]],
        log_dt=[[0, 1, 2], [0, 0, 5]],
    )
    scores = model(base).numpy()
    assert scores.shape == (2, 4)
    padded = model(_pad(base, 5)).numpy()  # 5 more padding steps in front
    np.testing.assert_allclose(padded, scores, atol=1e-6)
    # Garbage ratings/gaps at padding positions are ignored too.
    noisy = _pad(base, 2)
    noisy["history_rating"][:, :2] = 5.0
    noisy["history_log_dt"][:, :2] = 9.0
    np.testing.assert_allclose(model(noisy).numpy(), scores, atol=1e-6)


def test_unknown_history_items_are_skipped():
    model = _ranker()
    clean = model(_features([[0, 3, 4]], [[5, 6]])).numpy()
    with_oov = model(_features([[3, 1, 4]], [[5, 6]])).numpy()  # OOV (1) in the middle
    np.testing.assert_allclose(with_oov, clean, atol=1e-6)


def test_empty_history_fallback_is_finite_and_history_free():
    # Documented fallback: no real history item -> zero history vector, so an
    # all-padding row, an all-OOV row and a length-1 padding row score identically.
    model = _ranker(interaction="attention")
    a = model(_features([[0, 0, 0]], [[2, 3, 4]])).numpy()
    b = model(_features([[1, 1, 0]], [[2, 3, 4]])).numpy()
    c = model(_features([[0]], [[2, 3, 4]])).numpy()
    assert np.isfinite(a).all()
    np.testing.assert_allclose(b, a, atol=1e-6)
    np.testing.assert_allclose(c, a, atol=1e-6)
    d = model(_features([[0, 0, 7]], [[2, 3, 4]])).numpy()
    assert not np.allclose(d, a)  # a real history does change the scores


def test_mismatched_batch_sizes_raise():
    model = _ranker()
    bad = _features([[3, 4]], [[2, 3], [4, 5]])
    bad["user"] = np.array([2], np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        model(bad)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        model({"history": np.array([[3, 4]]), "candidates": np.array([2, 3])})  # 1-D


def test_layers_config_json_round_trip():
    layers = [
        EventSignals(
            use_rating=True, use_time=False, rating_mean=3.5, rating_scale=1.1,
            log_dt_mean=2.0, log_dt_scale=0.5, signal_dropout=0.2, name="signals",
        ),
        CandidateAttention(3, name="attention"),
        RankingTask(objective="next_item", loss="bce", ndcg_k=5, name="task"),
        ListAUC(name="auc"),
        ListNDCG(k=3),
    ]  # fmt: skip
    for layer in layers:
        config = json.loads(json.dumps(layer.get_config()))
        clone = type(layer).from_config(config)
        assert clone.get_config() == layer.get_config(), type(layer).__name__


def test_ranking_config_json_round_trip_and_validation():
    config = RankingConfig(
        objective="next_item", mlp_layers=[8, 4], use_cross=True, loss=RankingLossConfig(kind="bce")
    )
    assert RankingConfig.from_json(config.to_json()) == config
    spec = RankerDataSpec(num_users=5, num_items=7, rating_mean=3.2, use_time_signal=True)
    assert RankerDataSpec.from_json(spec.to_json()) == spec
    for field, value in [
        ("objective", "clicks"),
        ("loss", {"kind": "hinge"}),
        ("interaction", "dot"),
        ("loss", {"negative_sampling": "random"}),
        ("loss", {"num_negatives": 0}),
        ("mlp_layers", []),
        ("dropout", 1.0),
        ("validation_fraction", 0.0),
        ("optimizer", {"learning_rate": 0.0}),
        ("training", {"batch_size": 0}),
    ]:
        with pytest.raises(ValueError, match=f"RankingConfig.{field}"):
            RankingConfig.from_dict({field: value})


def test_list_metrics_match_the_evaluation_module():
    # List 1: positive (last) scored 0.9 vs negatives 0.1, 0.5, 0.9 -> pairs won
    # 1, 1, tie 1/2 -> AUC 2.5/3. List 2: positive ranked last -> AUC 0.
    labels = np.array([[0, 0, 0, 1], [0, 0, 0, 1]], np.float32)
    scores = np.array([[0.1, 0.5, 0.9, 0.9], [0.3, 0.2, 0.4, 0.1]], np.float32)
    auc = ListAUC()
    auc.update_state(labels, scores)
    assert float(auc.result()) == pytest.approx(mean_list_auc(labels, scores))
    assert float(auc.result()) == pytest.approx((2.5 / 3 + 0.0) / 2)
    ndcg = ListNDCG(k=2)
    ndcg.update_state(labels, scores)
    # List 1: tie 0.9/0.9 -> lower column first, positive at rank 2 -> 1/log2(3);
    # list 2: positive at rank 4 > k -> 0.
    assert float(ndcg.result()) == pytest.approx(list_ndcg(labels, scores, 2))
    assert float(ndcg.result()) == pytest.approx((1 / np.log2(3)) / 2)


def test_task_losses_hand_computed():
    labels = tf.constant([[0.0, 1.0]])
    logits = tf.constant([[0.0, 0.0]])
    softmax = RankingTask(objective="next_item", loss="softmax")
    assert float(softmax(labels, logits)) == pytest.approx(np.log(2.0))  # uniform over 2
    bce = RankingTask(objective="next_item", loss="bce")
    assert float(bce(labels, logits)) == pytest.approx(np.log(2.0))  # sigmoid(0) = 1/2
    mse = RankingTask(objective="rating")
    assert float(mse(tf.constant([[4.0]]), tf.constant([[2.0]]))) == pytest.approx(4.0)
