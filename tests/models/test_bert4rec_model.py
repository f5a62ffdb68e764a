"""TwoTowerModel with ``encoder="bert4rec"``: masked-item batches, config, training, export."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import (
    check_in_fresh_process,
    export_case,
    serving_inputs,
    successor_walks,
    tiny_batch,
    tiny_vocabs,
)

from tfrec.cli.common import apply_overrides, parse_set_options
from tfrec.data.sequences import retrieval_examples, user_sequences
from tfrec.data.vocab import IdVocabulary
from tfrec.models.masked_items import (
    masked_item_queries,
    masked_item_sequences,
    sample_masked_positions,
)
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.tasks.config import RetrievalLossConfig
from tfrec.training.config import OptimizerConfig
from tfrec.training.optimizers import make_optimizer

# Two rows, L = 3: row 0 has history [2, 3] and targets [3, 5]; row 1 history [4], target 6.
HISTORY = tf.constant([[0, 2, 3], [0, 0, 4]])
TARGET = tf.constant([[0, 3, 5], [0, 0, 6]])


def test_sequences_append_the_last_target_and_keep_max_history_plus_one():
    # history + [target[:, -1]]: [0, 2, 3, 5] and [0, 0, 4, 6].
    full = masked_item_sequences(HISTORY, TARGET, max_history=3).numpy()
    np.testing.assert_array_equal(full, [[0, 2, 3, 5], [0, 0, 4, 6]])
    # max_history = 1: the 2 most recent items.
    np.testing.assert_array_equal(masked_item_sequences(HISTORY, TARGET, 1), [[3, 5], [4, 6]])
    # OOV (1) in the history is dropped as padding, the sequence compacted.
    oov = masked_item_sequences(tf.constant([[2, 1, 3]]), tf.constant([[0, 3, 7]]), 3)
    np.testing.assert_array_equal(oov, [[0, 2, 3, 7]])


def test_masked_positions_at_the_extreme_rates():
    sequence = tf.constant([[0, 2, 3, 5], [0, 0, 4, 6], [0, 0, 0, 0]])
    # Rate ~0: no draw, so each non-empty row masks its most recent item; empty rows none.
    low = sample_masked_positions(sequence, 1e-9).numpy()
    np.testing.assert_array_equal(low, [[0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    # Rate ~1: every real position, never padding.
    high = sample_masked_positions(sequence, 1 - 1e-7).numpy()
    np.testing.assert_array_equal(high, [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]])


def test_masked_position_count_matches_the_rate():
    # 4000 rows of 10 real items, rate 0.3: 3 masked per row on average, plus 1 in the
    # rows with no draw (probability 0.7 ** 10 = 0.0282): 3.0282 per row. The standard
    # error of the mean is sqrt(10 * 0.3 * 0.7 / 4000) = 0.0072; allow 0.05.
    tf.random.set_seed(0)
    sequence = tf.fill([4000, 10], 7)
    masked = sample_masked_positions(sequence, 0.3).numpy()
    assert abs(masked.sum(axis=1).mean() - 3.0282) < 0.05
    assert masked.sum(axis=1).min() == 1


class _IdTower:
    """A stand-in query tower: query = [item id, 10 * position]; records its inputs."""

    def __call__(self, inputs, training=False):
        self.inputs = inputs
        history = tf.cast(inputs["history"], tf.float32)  # [B, L]
        position = tf.cast(tf.range(tf.shape(history)[1]), tf.float32)  # [L]
        position = tf.broadcast_to(position[tf.newaxis, :], tf.shape(history))
        return tf.stack([history, 10.0 * position], axis=-1)  # [B, L, 2]


def test_targets_are_the_original_items_at_the_masked_positions():
    tf.random.set_seed(1)
    config = RetrievalConfig(encoder="bert4rec", max_history=3, mask_rate=0.5)
    tower = _IdTower()
    query, targets = masked_item_queries(
        tower, {"history": HISTORY, "target": TARGET, "user": tf.constant([2, 3])}, config, True
    )
    # The tower saw the full sequences (the all-padding first column trimmed) and the user.
    np.testing.assert_array_equal(tower.inputs["history"], [[2, 3, 5], [0, 4, 6]])
    np.testing.assert_array_equal(tower.inputs["user"], [2, 3])
    masked = tower.inputs["masked_positions"].numpy()
    rows, cols = np.nonzero(masked)  # row-major, as tf.where
    sequence = np.array([[2, 3, 5], [0, 4, 6]])
    assert len(targets) == masked.sum() >= 2  # at least one per row
    assert not masked[1, 0]  # padding
    np.testing.assert_array_equal(targets, sequence[rows, cols])
    np.testing.assert_array_equal(query.numpy()[:, 0], sequence[rows, cols])  # same rows
    np.testing.assert_array_equal(query.numpy()[:, 1], 10 * cols)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_rate": 0.0}, r"RetrievalConfig.mask_rate=0.0; expected 0 < mask_rate < 1"),
        ({"mask_rate": 1.0}, r"RetrievalConfig.mask_rate=1.0; expected 0 < mask_rate < 1"),
        ({"mask_rate": "0.2"}, r"RetrievalConfig.mask_rate='0.2'; expected 0 < mask_rate < 1"),
        ({"context_dim": 2}, r"context_dim=2 with encoder='bert4rec'; expected 0"),
        ({"scenario_layers": True}, r"scenario_layers=True with encoder='bert4rec'"),
        ({"embedding_dim": 6, "num_heads": 4}, r"num_heads=4 must divide embedding_dim=6"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetrievalConfig(**{"encoder": "bert4rec", **kwargs})


def test_mask_rate_from_set_and_json():
    config = apply_overrides(
        RetrievalConfig(encoder="bert4rec"), parse_set_options(["mask_rate=0.3"])
    )
    assert config.mask_rate == 0.3
    assert RetrievalConfig.from_json(config.to_json()).mask_rate == 0.3
    assert RetrievalConfig().mask_rate == 0.2


def test_inference_appends_the_mask_to_the_max_history_most_recent_items():
    # max_history = 3: the query after [9, 2, 3, 4] is the query after [2, 3, 4], i.e. the
    # tower's masked-mode output at the 4th position of [2, 3, 4, x] with x masked.
    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4, encoder="bert4rec", max_history=3, num_heads=2, use_user_embedding=True
    )
    model = TwoTowerModel(config, users.size, items.size)
    user = tf.constant([3])
    query = model.query_embeddings(user, tf.constant([[9, 2, 3, 4]])).numpy()
    view = model.query_tower(
        {
            "user": user,
            "history": tf.constant([[2, 3, 4, 8]]),
            "masked_positions": tf.constant([[False, False, False, True]]),
        },
        training=False,
    ).numpy()
    np.testing.assert_allclose(query, view[:, -1], rtol=1e-5, atol=1e-6)


def test_compute_loss_shares_the_task_with_the_sampled_loss_and_logq():
    keras.utils.set_random_seed(0)
    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4,
        encoder="bert4rec",
        max_history=4,
        num_heads=2,
        loss=RetrievalLossConfig(kind="sampled", num_uniform_negatives=3),
    )
    log_probs = np.log(np.full(items.size, 1.0 / items.size))
    model = TwoTowerModel(config, users.size, items.size, item_log_probs=log_probs)
    loss = model.compute_loss({k: tf.constant(v) for k, v in tiny_batch(4).items()}, training=True)
    assert loss.shape == () and np.isfinite(loss.numpy()) and loss.numpy() > 0


def test_mixed_precision_keeps_loss_and_scores_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        config = RetrievalConfig(embedding_dim=4, encoder="bert4rec", max_history=3, num_heads=2)
        model = TwoTowerModel(config, num_users=4, num_items=6)
        batch = {
            "user": tf.constant([2, 3]),
            "history": tf.constant([[0, 2, 3], [4, 5, 2]]),
            "target": tf.constant([[0, 3, 4], [5, 2, 3]]),
        }
        assert model.compute_loss(batch, training=True).dtype == tf.float32
        assert model.score(batch["user"], batch["history"]).dtype == tf.float32
        model.compile(make_optimizer(config.optimizer))
        logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _successor_rows(users: IdVocabulary, items: IdVocabulary, length: int) -> dict:
    data = successor_walks(num_users=120, length=length, seed=3)
    return retrieval_examples(user_sequences(data, users, items), max_len=length - 1)


@pytest.mark.slow
def test_learns_successor_walks_and_exports(tmp_path):
    # Walks of 6 steps on the 8-item cycle: train on the first 5 items of each walk
    # (history + last target), test on the 6th after the first 5 (the successor of
    # the 5th). Scores are NOT masked: chance top-1 is 1/8 = 0.125.
    keras.utils.set_random_seed(0)
    _, items = tiny_vocabs()
    users = IdVocabulary([f"u{i}" for i in range(120)], name="user")
    rows = _successor_rows(users, items, length=6)
    train = {
        "user": rows["user"],
        "history": rows["history"][:, :-1],
        "target": rows["target"][:, :-1],
    }
    config = RetrievalConfig(
        embedding_dim=16,
        encoder="bert4rec",
        max_history=5,
        num_layers=1,
        num_heads=2,
        dropout=0.0,
        mask_rate=0.3,
        use_item_features=False,
        optimizer=OptimizerConfig(learning_rate=0.03),
    )
    model = TwoTowerModel(config, users.size, items.size)
    model.compile(make_optimizer(config.optimizer))
    dataset = tf.data.Dataset.from_tensor_slices(train).batch(32)
    losses = model.fit(dataset, epochs=30, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    history = rows["history"]  # the 5 items before the test target
    scores = model.score(tf.constant(rows["user"]), tf.constant(history)).numpy()
    hits = scores.argmax(axis=1) == rows["target"][:, -1]
    assert hits.mean() > 0.5, hits.mean()  # chance 0.125

    case = export_case(
        "bert4rec", model, users, items, tmp_path / "models", inputs=serving_inputs()
    )
    check_in_fresh_process([case], tmp_path)
