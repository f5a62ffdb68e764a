import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.tasks.retrieval import RetrievalTask, sparse_softmax_cross_entropy

# Catalogue of 4 indices (0 = padding, 1 = OOV, 2 and 3 real items), dim 2.
CATALOGUE = tf.constant([[9.0, 9.0], [9.0, 9.0], [1.0, 0.0], [0.0, 2.0]])


def test_full_softmax_hand_computed():
    # query [1, 0]: logits = [9, 9, 1, 0]; columns 0/1 are masked, so the softmax is
    # over [1, 0]. Target 2: loss = -log(e^1 / (e^1 + e^0)) = log(1 + e^-1) = 0.313262.
    # Query [0, 1], target 3: logits [.., 0, 2]: loss = log(1 + e^-2) = 0.126928.
    task = RetrievalTask(loss="full")
    loss = task(tf.constant([[1.0, 0.0], [0.0, 1.0]]), CATALOGUE, tf.constant([2, 3]))
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2  # 0.220095
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_full_softmax_temperature_and_weights():
    # temperature 0.5 doubles the logits: [2, 0] -> log(1 + e^-2) = 0.126928 for row 0;
    # row 1 [0, 4] -> log(1 + e^-4) = 0.018150. Weights [3, 1]: (3 * 0.126928 + 0.018150) / 4.
    task = RetrievalTask(loss="full", temperature=0.5)
    loss = task(
        tf.constant([[1.0, 0.0], [0.0, 1.0]]),
        CATALOGUE,
        tf.constant([2, 3]),
        sample_weight=tf.constant([3.0, 1.0]),
    )
    expected = (3 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-4))) / 4
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


QUERIES = tf.constant([[1.0, 0.0], [0.0, 1.0]])
POSITIVES = tf.constant([[1.0, 0.0], [0.0, 2.0]])  # vectors of the targets 2 and 3


def test_sampled_softmax_hand_computed():
    # In-batch scores = queries @ positives^T = [[1, 0], [0, 2]], labels on the diagonal.
    # row 0: log(1 + e^(0 - 1)) = 0.313262; row 1: log(1 + e^(0 - 2)) = 0.126928.
    task = RetrievalTask(loss="sampled")
    loss = task(QUERIES, POSITIVES, tf.constant([2, 3]))
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)


def test_sampled_softmax_logq_correction():
    # p = [0.5, 0.25]: scores - log p column-wise = [[1 + .6931, 0 + 1.3863], [.6931, 2 + 1.3863]]
    # row 0: log(1 + e^(1.3863 - 1.6931)) = log(1 + e^-0.3069) = 0.551444
    # row 1: log(1 + e^(0.6931 - 3.3863)) = log(1 + e^-2.6931) = 0.065476
    task = RetrievalTask(loss="sampled")
    loss = task(
        QUERIES,
        POSITIVES,
        tf.constant([2, 3]),
        candidate_sampling_probability=tf.constant([0.5, 0.25]),
    )
    row0 = math.log1p(math.exp(math.log(4) - (1 + math.log(2))))
    row1 = math.log1p(math.exp(math.log(2) - (2 + math.log(4))))
    np.testing.assert_allclose(loss.numpy(), (row0 + row1) / 2, rtol=1e-5)


def test_sampled_softmax_accidental_hits():
    # Both queries target item 2, so each one's in-batch negative is an accidental hit.
    # Removed: only the positive remains in each row -> loss 0.
    # Kept: the same as the hand-computed 0.220095 above.
    targets = tf.constant([2, 2])
    removed = RetrievalTask(loss="sampled", remove_accidental_hits=True)
    kept = RetrievalTask(loss="sampled", remove_accidental_hits=False)
    np.testing.assert_allclose(removed(QUERIES, POSITIVES, targets).numpy(), 0.0, atol=1e-6)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2))) / 2
    np.testing.assert_allclose(kept(QUERIES, POSITIVES, targets).numpy(), expected, rtol=1e-6)


def test_sampled_softmax_with_extra_uniform_candidates():
    # Mixed negative sampling: the 2 in-batch candidates, then extra items 3 and 2 drawn
    # uniformly (vectors [0, 2] and [1, 0]). Scores = queries @ candidates^T:
    #   row 0 (target 2): [1, 0, 0, 1]; the extra item 2 (column 3) is its accidental hit
    #   row 1 (target 3): [0, 2, 2, 0]; the extra item 3 (column 2) is its accidental hit
    # Candidate probabilities [.3, .3, .2, .2]: subtract log p per column, l = log(.3 / .2):
    #   row 0 over columns 0, 1, 2: [1 - l, -l, 0] (+ log 5, the same for every column)
    #     loss = log(e^.594535 + e^-.405465 + 1) - .594535 = 0.652168
    #   row 1 over columns 0, 1, 3: [-l, 2 - l, 0] -> log(e^-.405465 + e^1.594535 + 1) - 1.594535
    #     = 0.291429; mean 0.471798
    extra = tf.constant([[0.0, 2.0], [1.0, 0.0]])
    task = RetrievalTask(loss="sampled")
    loss = task(
        QUERIES,
        tf.concat([POSITIVES, extra], axis=0),
        tf.constant([2, 3]),
        candidate_sampling_probability=tf.constant([0.3, 0.3, 0.2, 0.2]),
        candidate_ids=tf.constant([2, 3, 3, 2]),
    )
    np.testing.assert_allclose(loss.numpy(), (0.652168 + 0.291429) / 2, rtol=1e-5)


def test_sampled_hard_negatives():
    # 3 queries, scores q_i . c_j; with 1 hard negative each row keeps its positive and
    # its single highest negative. Row 0 scores [2, 1, 0] -> keeps [2, 1]: log(1 + e^-1).
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positives = tf.constant([[2.0, 0.0], [1.0, 3.0], [0.0, 0.0]])
    task = RetrievalTask(loss="sampled", num_hard_negatives=1, remove_accidental_hits=False)
    loss = task(queries, positives, tf.constant([2, 3, 4]))
    # scores = [[2, 1, 0], [0, 3, 0], [2, 4, 0]]
    # row 0: keep 2 (pos) and 1 -> log(1 + e^(1-2)); row 1: keep 3 and 0 -> log(1 + e^-3);
    # row 2: pos 0, hardest negative 4 -> log(1 + e^(4-0)).
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-3)) + math.log1p(math.exp(4))) / 3
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_metrics_are_updated():
    metric = keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")
    task = RetrievalTask(loss="full", metrics=[metric])
    # Query [1, 0] ranks item 2 first (target 2: hit); query [0, 1] ranks 3 first (target 2: miss).
    task(tf.constant([[1.0, 0.0], [0.0, 1.0]]), CATALOGUE, tf.constant([2, 2]))
    np.testing.assert_allclose(metric.result().numpy(), 0.5)


def test_float16_inputs_give_float32_loss():
    task = RetrievalTask(loss="full")
    loss = task(
        tf.constant([[1.0, 0.0]], tf.float16), tf.cast(CATALOGUE, tf.float16), tf.constant([2])
    )
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), math.log1p(math.exp(-1)), rtol=1e-3)


def test_empty_batch_gives_zero_loss():
    task = RetrievalTask(loss="full")
    loss = task(tf.zeros((0, 2)), CATALOGUE, tf.zeros((0,), tf.int32))
    assert loss.numpy() == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="loss='bpr'"):
        RetrievalTask(loss="bpr")
    with pytest.raises(ValueError, match="temperature=0"):
        RetrievalTask(temperature=0)
    with pytest.raises(ValueError, match="needs loss='sampled'"):
        RetrievalTask(loss="full", num_hard_negatives=3)


def test_config_json_round_trip():
    task = RetrievalTask(loss="full", temperature=0.2, remove_accidental_hits=False, name="t")
    clone = RetrievalTask.from_config(json.loads(json.dumps(task.get_config())))
    assert clone.get_config() == task.get_config()


def test_fast_cross_entropy_matches_tensorflow():
    rng = np.random.default_rng(0)
    logits = tf.Variable(rng.normal(size=(5, 7)) * 3, dtype=tf.float32)
    labels = tf.constant([0, 6, 3, 3, 1])
    with tf.GradientTape(persistent=True) as tape:
        ours = sparse_softmax_cross_entropy(labels, logits)
        reference = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        weights = tf.constant([1.0, 2.0, 0.5, 0.0, 3.0])
        ours_sum, reference_sum = tf.reduce_sum(ours * weights), tf.reduce_sum(reference * weights)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        tape.gradient(ours_sum, logits).numpy(),
        tape.gradient(reference_sum, logits).numpy(),
        rtol=1e-5,
        atol=1e-7,
    )


def test_full_softmax_without_history_items():
    # Catalogue: items 2 [1, 0] and 3 [0, 2]. Query [1, 0], target 3, history [2, 0]:
    # item 2 leaves the softmax, so only the target remains: loss 0. Query [0, 1],
    # target 3, history [3, 2]: 3 is the target (a repeat) and stays, 2 goes: loss 0.
    # Query [1, 0], target 2, history [0, 0]: logits [1, 0]: log(1 + e^-1) = 0.313262.
    task = RetrievalTask(loss="full")
    query = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    history = tf.constant([[2, 0], [3, 2], [0, 0]])
    loss = task(query, CATALOGUE, tf.constant([3, 3, 2]), history_ids=history)
    np.testing.assert_allclose(loss.numpy(), math.log1p(math.exp(-1)) / 3, rtol=1e-5)
    with pytest.raises(ValueError, match="history_ids needs loss='full'"):
        sampled = RetrievalTask(loss="sampled")
        sampled(query, CATALOGUE[:3], tf.constant([2, 3, 2]), history_ids=history)
