import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.data.item_features import ItemFeatureTables
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel, item_log_probabilities
from tfrec.tasks.config import RetrievalLossConfig
from tfrec.training.config import OptimizerConfig
from tfrec.training.optimizers import make_optimizer


def test_config_json_round_trip():
    config = RetrievalConfig(
        embedding_dim=8,
        encoder="gru",
        dropout=0.1,
        loss=RetrievalLossConfig(kind="sampled", num_hard_negatives=3),
    )
    assert RetrievalConfig.from_json(config.to_json()) == config
    assert RetrievalConfig.from_json(RetrievalConfig().to_json()) == RetrievalConfig()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder": "cnn"}, "RetrievalConfig.encoder='cnn'"),
        ({"embedding_dim": 0}, "RetrievalConfig.embedding_dim=0"),
        ({"dropout": 1.0}, "RetrievalConfig.dropout=1.0"),
        ({"embedding_dim": 6, "num_heads": 4}, "RetrievalConfig.num_heads=4"),
        ({"training_positions": "first"}, "RetrievalConfig.training_positions='first'"),
    ],
)
def test_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        RetrievalConfig(**kwargs)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"optimizer": {"weight_decay": 0.1}},
            "RetrievalConfig.optimizer: OptimizerConfig.weight_",
        ),
        (
            {"optimizer": {"learning_rate": 0}},
            "RetrievalConfig.optimizer: OptimizerConfig.learning",
        ),
        ({"training": {"epochs": 0}}, "RetrievalConfig.training: TrainingConfig.epochs=0"),
        ({"loss": {"temperature": 0.0}}, "RetrievalConfig.loss: RetrievalLossConfig.temperature=0"),
        ({"loss": {"num_hard_negatives": 5}}, "RetrievalLossConfig.num_hard_negatives=5 needs"),
        ({"loss": {"kind": "cnn"}}, "RetrievalConfig.loss.kind: expected one of"),
        ({"training": {"steps_per_epoch": 0}}, "TrainingConfig.steps_per_epoch=0; expected"),
        ({"training": {"strategy": "tpu"}}, "RetrievalConfig.training.strategy: expected one of"),
        (
            {"training": {"monitor": ""}},
            "RetrievalConfig.training: TrainingConfig.monitor is empty",
        ),
    ],
)
def test_sub_config_errors_name_the_path(data, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        RetrievalConfig.from_dict(data)


def _mean_model(loss: str = "full") -> TwoTowerModel:
    # 4 item indices (2 real items), D = 2, item vectors e2 = [1, 0], e3 = [0, 1].
    config = RetrievalConfig(
        embedding_dim=2, encoder="mean", max_history=3, loss=RetrievalLossConfig(kind=loss)
    )
    model = TwoTowerModel(config, num_users=3, num_items=4)
    model({"history": tf.constant([[0, 2, 3]])})
    model.item_tower._ids.set_weights([np.array([[0, 0], [0, 0], [1, 0], [0, 1]], np.float32)])
    return model


def test_compute_loss_all_positions_and_last_item_hand_computed():
    model = _mean_model()
    history = tf.constant([[0, 2, 3]])
    # Position 1: query = mean(e2) = [1, 0], logits over items (2, 3) = [1, 0], target 3:
    #   -log(e^0 / (e^1 + e^0)) = log(1 + e) = 1.313262
    # Position 2: query = mean(e2, e3) = [.5, .5], logits [.5, .5], target 2: log 2 = 0.693147
    all_positions = {
        "user": tf.constant([2]),
        "history": history,
        "target": tf.constant([[0, 3, 2]]),
    }
    expected = (math.log1p(math.e) + math.log(2)) / 2  # 1.003204
    np.testing.assert_allclose(model.compute_loss(all_positions).numpy(), expected, rtol=1e-6)
    last_item = {"user": tf.constant([2]), "history": history, "target": tf.constant([[0, 0, 2]])}
    np.testing.assert_allclose(model.compute_loss(last_item).numpy(), math.log(2), rtol=1e-6)


def test_inference_methods():
    model = _mean_model()
    # History [3, 2] written right-padded with an OOV entry: compacted to [0, 3, 2] -> the
    # query is mean(e3, e2) = [.5, .5]; a user-only empty history gives the zero vector.
    history = tf.constant([[3, 1, 2], [0, 0, 0]])
    query = model.query_embeddings(tf.constant([2, 2]), history).numpy()
    np.testing.assert_allclose(query, [[0.5, 0.5], [0, 0]])
    candidates = model.candidate_embeddings().numpy()
    np.testing.assert_allclose(candidates, [[0, 0], [0, 0], [1, 0], [0, 1]])
    scores = model.score(tf.constant([2, 2]), history).numpy()
    assert scores.shape == (2, 4) and scores.dtype == np.float32
    assert np.all(np.isneginf(scores[:, :2]))
    np.testing.assert_allclose(scores[0, 2:], [0.5, 0.5])


def test_item_log_probabilities():
    # counts [0, 0, 3, 1] -> unseen get 0.5: [.5, .5, 3, 1] / 5
    np.testing.assert_allclose(
        item_log_probabilities(np.array([0, 0, 3, 1])), np.log([0.1, 0.1, 0.6, 0.2]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="target_counts"):
        item_log_probabilities(np.zeros(4))


def test_model_argument_validation():
    config = RetrievalConfig(embedding_dim=2, num_heads=1, loss=RetrievalLossConfig(kind="sampled"))
    with pytest.raises(ValueError, match=r"item_log_probs has shape \(3,\); expected \(5,\)"):
        TwoTowerModel(config, 3, 5, item_log_probs=np.zeros(3))
    with pytest.raises(ValueError, match="num_items=2"):
        TwoTowerModel(config, 3, 2)


def _planted_dataset(num_items: int, length: int, count: int, seed: int):
    # Sequences of consecutive real items (2..num_items-1, wrapping), random starts and
    # random amounts of left padding: the next item is always "previous + 1".
    rng = np.random.default_rng(seed)
    real = num_items - 2
    history = np.zeros((count, length), np.int32)
    target = np.zeros((count, length), np.int32)
    for row in range(count):
        size = rng.integers(2, length + 1)
        start = rng.integers(real)
        seq = 2 + (start + np.arange(size + 1)) % real
        history[row, length - size :] = seq[:-1]
        target[row, length - size :] = seq[1:]
    users = rng.integers(2, 6, size=count).astype(np.int32)
    return {"user": users, "history": history, "target": target}


@pytest.mark.parametrize(("loss", "uniform"), [("full", 0), ("sampled", 0), ("sampled", 4)])
def test_learns_planted_next_item_pattern(loss, uniform):
    keras.utils.set_random_seed(0)
    num_items, length = 10, 5
    config = RetrievalConfig(
        embedding_dim=8,
        encoder="gru",
        max_history=length,
        dropout=0.0,
        optimizer=OptimizerConfig(learning_rate=0.03),
        loss=RetrievalLossConfig(
            kind=loss, num_uniform_negatives=uniform, remove_accidental_hits=True
        ),
    )
    train = _planted_dataset(num_items, length, 256, seed=1)
    model = TwoTowerModel(config, num_users=6, num_items=num_items)
    model.compile(make_optimizer(config.optimizer))
    model.fit(tf.data.Dataset.from_tensor_slices(train).batch(32), epochs=15, verbose=0)
    test = _planted_dataset(num_items, length, 64, seed=2)
    scores = model.score(test["user"], test["history"]).numpy()
    top1 = scores.argmax(axis=1)
    accuracy = float(np.mean(top1 == test["target"][:, -1]))
    # Chance is 1/8 = 0.125 (8 real items); the pattern is deterministic, so a model
    # that learned "next = last + 1" is right on (almost) every test history.
    assert accuracy > 0.9, accuracy


def test_uniform_negatives_are_real_items_and_corrected_by_expected_counts():
    # 6 indices (4 real items 2..5), batch of N = 2 targets, M = 3 uniform extras. The model
    # must draw only real items and pass the mixture probabilities (N q + M / C) / (N + M)
    # (C = 4 real items), e.g. item 3: (2 * .2 + 3 / 4) / 5 = 0.23.
    config = RetrievalConfig(
        embedding_dim=4,
        encoder="mean",
        max_history=2,
        loss=RetrievalLossConfig(kind="sampled", num_uniform_negatives=3),
    )
    log_q = np.log(np.array([1, 1, 4, 2, 1, 1], np.float32) / 10)  # q(2) = .4, q(3) = .2, ...
    model = TwoTowerModel(config, num_users=3, num_items=6, item_log_probs=log_q)
    seen = {}

    class Spy:
        needs_full_catalogue = False

        def __call__(self, query, candidates, target_ids, *, candidate_sampling_probability,
                     candidate_ids):  # fmt: skip
            seen.update(ids=candidate_ids.numpy(), p=candidate_sampling_probability.numpy())
            return tf.constant(0.0)

    model.task = Spy()
    batch = {"history": tf.constant([[2, 3], [3, 4]]), "target": tf.constant([[3, 0], [4, 0]])}
    batch["user"] = tf.constant([1, 2])
    for _ in range(20):
        model.compute_loss(batch)
        ids = seen["ids"]
        assert ids.shape == (2 + 3,) and list(ids[:2]) == [3, 4]
        assert ((ids[2:] >= 2) & (ids[2:] <= 5)).all(), ids
        q = np.exp(log_q[ids])
        np.testing.assert_allclose(seen["p"], (2 * q + 3 / 4) / 5, rtol=1e-6)
        assert seen["p"][0] == pytest.approx(0.23)


def test_uniform_negatives_need_the_sampled_loss():
    with pytest.raises(ValueError, match="num_uniform_negatives=8 needs kind='sampled'"):
        RetrievalConfig(loss=RetrievalLossConfig(kind="full", num_uniform_negatives=8))


@pytest.fixture
def mixed_bfloat16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_mixed_precision_keeps_loss_and_scores_float32(mixed_bfloat16, loss):
    config = RetrievalConfig(
        embedding_dim=4, max_history=3, num_heads=2, loss=RetrievalLossConfig(kind=loss)
    )
    tables = ItemFeatureTables(np.eye(6, 2, dtype=np.float32), ["a", "b"], None, [])
    model = TwoTowerModel(config, num_users=4, num_items=6, item_features=tables)
    batch = {
        "user": tf.constant([2, 3]),
        "history": tf.constant([[0, 2, 3], [4, 5, 2]]),
        "target": tf.constant([[0, 3, 4], [5, 2, 3]]),
    }
    assert model(batch).dtype == tf.bfloat16
    assert model.compute_loss(batch).dtype == tf.float32
    assert model.score(batch["user"], batch["history"]).dtype == tf.float32
    model.compile(make_optimizer(config.optimizer))
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_loss_does_not_depend_on_left_padding(encoder):
    config = RetrievalConfig(embedding_dim=4, encoder=encoder, max_history=6, num_heads=2)
    model = TwoTowerModel(config, num_users=4, num_items=8)
    short = {
        "user": tf.constant([2, 3]),
        "history": tf.constant([[0, 2, 3], [4, 5, 6]]),
        "target": tf.constant([[0, 3, 4], [5, 6, 7]]),
    }
    padded = {
        "user": short["user"],
        "history": tf.pad(short["history"], [[0, 0], [3, 0]]),
        "target": tf.pad(short["target"], [[0, 0], [3, 0]]),
    }
    np.testing.assert_allclose(
        model.compute_loss(short).numpy(), model.compute_loss(padded).numpy(), rtol=1e-6
    )


def test_epoch_loss_is_the_mean_over_batches():
    # Batch 1 (all positions) = 1.003204 and batch 2 (last item) = log 2 = 0.693147, as
    # hand-computed above; with a negligible learning rate the epoch loss is their mean.
    model = _mean_model()
    history = tf.constant([[0, 2, 3]])
    batches = [
        {"user": tf.constant([2]), "history": history, "target": tf.constant([[0, 3, 2]])},
        {"user": tf.constant([2]), "history": history, "target": tf.constant([[0, 0, 2]])},
    ]
    dataset = tf.data.Dataset.from_tensors(batches[0]).concatenate(
        tf.data.Dataset.from_tensors(batches[1])
    )
    model.compile(keras.optimizers.SGD(1e-9))
    logs = model.fit(dataset, epochs=1, verbose=0).history
    expected = ((math.log1p(math.e) + math.log(2)) / 2 + math.log(2)) / 2  # 0.848176
    np.testing.assert_allclose(logs["loss"][0], expected, rtol=1e-5)
    assert logs["regularization_loss"][0] == 0.0


def test_exclude_history_leaves_each_querys_own_prefix_out_of_its_softmax():
    # 5 item indices (3 real items), D = 2: e2 = [1, 0], e3 = [0, 1], e4 = [1, 1].
    config = RetrievalConfig(
        embedding_dim=2, encoder="mean", max_history=3,
        loss=RetrievalLossConfig(kind="full", exclude_history=True),
    )  # fmt: skip
    model = TwoTowerModel(config, num_users=3, num_items=5)
    model({"history": tf.constant([[2, 3, 4]])})
    vectors = np.array([[0, 0], [0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    model.item_tower._ids.set_weights([vectors])
    batch = {"user": tf.constant([2]), "history": tf.constant([[2, 3, 4]])}
    batch["target"] = tf.constant([[3, 4, 2]])
    # Position 0: query e2 = [1, 0], logits (2, 3, 4) = [1, 0, 1]; its prefix [2] leaves
    #   item 2 out (item 4, seen only later, stays): -log(e^0 / (e^0 + e^1)) = 1.313262.
    # Position 1: prefix [2, 3] leaves 2 and 3 out; the target 4 is alone: loss 0.
    # Position 2: target 2 repeats a history item, so it stays; 3 and 4 go: loss 0.
    expected = math.log1p(math.e) / 3  # 0.437754
    np.testing.assert_allclose(model.compute_loss(batch).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder": "bert4rec"}, "exclude_history=True needs a causal history encoder"),
        ({"encoder": "none", "use_user_embedding": True}, "needs a causal history encoder"),
    ],
)
def test_exclude_history_needs_a_causal_encoder(kwargs, message):
    loss = RetrievalLossConfig(kind="full", exclude_history=True)
    with pytest.raises(ValueError, match=message):
        RetrievalConfig(loss=loss, **kwargs)
    with pytest.raises(ValueError, match="exclude_history=True needs kind='full'"):
        RetrievalLossConfig(kind="sampled", exclude_history=True)
