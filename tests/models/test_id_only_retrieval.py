"""ID-only (history-free) TwoTowerModel: ``encoder="none"``, query = user embedding."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import (
    ExportCase,
    check_in_fresh_process,
    eager_top_k,
    model_test,
    serving_inputs,
    tiny_vocabs,
)

from tfrec.layers.user_tower import UserQueryTower
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.tasks.config import RetrievalLossConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.optimizers import make_optimizer


def _config(**kwargs) -> RetrievalConfig:
    return RetrievalConfig(
        **{"embedding_dim": 4, "encoder": "none", "use_user_embedding": True, **kwargs}
    )


def test_config_requires_the_user_embedding():
    message = r"encoder='none'.*use_user_embedding=True \(got use_user_embedding=False\)"
    with pytest.raises(ValueError, match=message):
        RetrievalConfig(encoder="none")
    with pytest.raises(ValueError, match=r"context_dim=3 needs a history encoder"):
        _config(context_dim=3)
    with pytest.raises(ValueError, match=r"encoder='cnn'; expected one of .*'none'"):
        RetrievalConfig(encoder="cnn")


def test_config_json_round_trip():
    config = _config(loss=RetrievalLossConfig(kind="sampled"), l2=0.01)
    restored = RetrievalConfig.from_json(config.to_json())
    assert restored == config and restored.encoder == "none"
    with pytest.raises(ValueError, match="use_user_embedding"):
        RetrievalConfig.from_dict({**config.to_dict(), "use_user_embedding": False})


def test_user_query_tower_config_json_round_trip_and_validation():
    tower = UserQueryTower(5, 3, l2=0.1, name="users")
    clone = UserQueryTower.from_config(json.loads(json.dumps(tower.get_config())))
    assert clone.get_config() == tower.get_config()
    assert clone({"user": tf.constant([2, 4])}).shape == (2, 1, 3)
    with pytest.raises(ValueError, match="num_users=1"):
        UserQueryTower(1, 3)
    with pytest.raises(ValueError, match="no 'user'"):
        tower({"history": tf.constant([[2]])})


def _hand_model() -> TwoTowerModel:
    # 4 users (u2, u3 real), 4 items (2 real), D = 2.
    # user vectors u2 = [1, 0], u3 = [0, 2]; item vectors e2 = [1, 0], e3 = [0, 1].
    model = TwoTowerModel(_config(embedding_dim=2), num_users=4, num_items=4)
    model({"user": tf.constant([2])})  # builds the user embedding
    model.candidate_embeddings()  # builds the item tower
    model.query_tower._users.set_weights([np.array([[0, 0], [0, 0], [1, 0], [0, 2]], np.float32)])
    model.item_tower._ids.set_weights([np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)])
    return model


def test_query_is_the_user_embedding_row():
    model = _hand_model()
    assert not model.encodes_history
    assert not any("item" in v.name for v in model.query_tower.trainable_variables)
    np.testing.assert_allclose(
        model.query_embeddings(tf.constant([3, 2])).numpy(), [[0, 2], [1, 0]]
    )
    # Any history is ignored: same query with a history.
    history = tf.constant([[2, 3], [0, 0]])
    np.testing.assert_allclose(
        model.query_embeddings(tf.constant([3, 2]), history).numpy(), [[0, 2], [1, 0]]
    )
    assert model({"user": tf.constant([3, 2])}).shape == (2, 1, 2)
    # score(u3) = [-inf, -inf, u3.e2, u3.e3] = [-inf, -inf, 0, 2]
    scores = model.score(tf.constant([3])).numpy()
    np.testing.assert_allclose(scores, [[-np.inf, -np.inf, 0, 2]])


def test_history_model_still_requires_a_history():
    model = TwoTowerModel(RetrievalConfig(embedding_dim=2, encoder="mean"), 4, 4)
    assert model.encodes_history
    with pytest.raises(ValueError, match="history=None but encoder='mean'"):
        model.query_embeddings(tf.constant([2]))


def test_loss_needs_only_a_valid_target_hand_computed():
    model = _hand_model()
    # u2 = [1, 0]: logits over items (2, 3) = [1, 0].
    #   target 3: -log(e^0 / (e^1 + e^0)) = log(1 + e)   = 1.313262
    #   target 2: -log(e^1 / (e^1 + e^0)) = log(1 + 1/e) = 0.313262
    expected = (math.log1p(math.e) + math.log1p(math.exp(-1))) / 2  # 0.813262
    no_history = {"user": tf.constant([2, 2]), "target": tf.constant([3, 2])}
    np.testing.assert_allclose(model.compute_loss(no_history).numpy(), expected, rtol=1e-6)
    # [B, L] targets: padding / OOV targets are skipped; the history (all padding or
    # OOV here, which a history model would filter out) is not read.
    with_history = {
        "user": tf.constant([2]),
        "history": tf.constant([[0, 1, 0]]),
        "target": tf.constant([[3, 1, 2]]),
    }
    np.testing.assert_allclose(model.compute_loss(with_history).numpy(), expected, rtol=1e-6)


def _planted_pairs(pairs_per_user: int, seed: int) -> dict[str, np.ndarray]:
    # Users 2..9, items 2..9: user u's favourite is 2 + 3 * (u - 2) % 8 (a permutation);
    # 3 of 4 pairs are (u, favourite), the rest a uniformly random item.
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(2, 10), pairs_per_user).astype(np.int32)
    random_items = rng.integers(2, 10, size=users.size)
    target = np.where(rng.random(users.size) < 0.75, _favourite(users), random_items)
    return {"user": users, "target": target.astype(np.int32)}


def _favourite(users: np.ndarray) -> np.ndarray:
    return 2 + (3 * (users - 2)) % 8


def _top1_accuracy(model: TwoTowerModel) -> float:
    users = np.arange(2, 10, dtype=np.int32)
    top1 = model.score(tf.constant(users)).numpy().argmax(axis=1)
    return float(np.mean(top1 == _favourite(users)))


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_fit_learns_a_planted_user_item_signal(loss):
    keras.utils.set_random_seed(0)
    config = _config(
        loss=RetrievalLossConfig(kind=loss),
        optimizer=OptimizerConfig(learning_rate=0.05),
        training=TrainingConfig(batch_size=32),
    )
    model = TwoTowerModel(config, num_users=10, num_items=10)
    untrained = _top1_accuracy(model)
    model.compile(make_optimizer(config.optimizer))
    train = tf.data.Dataset.from_tensor_slices(_planted_pairs(24, seed=1)).shuffle(192, seed=0)
    model.fit(train.batch(32), epochs=20, verbose=0)
    trained = _top1_accuracy(model)
    # Chance is 1/8 = 0.125 (8 real items); the favourite is 3/4 + 1/32 of each user's
    # pairs, so a model that learned the signal ranks it first for (almost) every user.
    assert trained >= 7 / 8, (untrained, trained)
    assert trained > untrained


def test_export_reload_in_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    users, items = tiny_vocabs()
    model = TwoTowerModel(_config(), users.size, items.size)
    batch = {"user": np.arange(2, 8, dtype=np.int32), "target": np.arange(3, 9, dtype=np.int32)}
    case = model_test(model, tmp_path, name="id-only", batch=batch, fresh_process=False)
    # The same export asked without a history: a [B, 0] history (nothing excluded).
    inputs = {**serving_inputs(), "history": np.zeros((5, 0), dtype=object)}
    ids, scores = eager_top_k(model, users, items, inputs)
    no_history = ExportCase("id-only-no-history", case.export_dir, inputs, ids, scores)
    # The query ignores the history: with a history, its items only leave the ranking.
    for row, history in enumerate(case.inputs["history"]):
        remaining = [item for item in ids[row] if item not in set(history)]
        assert remaining == [item for item in case.expected_ids[row] if item], row
    check_in_fresh_process([case, no_history], tmp_path)
