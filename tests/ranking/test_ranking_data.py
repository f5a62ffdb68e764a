"""Ranker training inputs: leak-free validation hold-out and retrieved-only lists."""

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import successor_walks

from tfrec.data.interactions import concat_interactions
from tfrec.data.ranking_examples import build_ranking_examples
from tfrec.data.ranking_lists import ranker_datasets, split_validation
from tfrec.data.splits import leave_one_out
from tfrec.data.vocab import NUM_RESERVED, build_vocabularies
from tfrec.models.ranking import RankerDataSpec, RankingConfig
from tfrec.tasks.config import RankingLossConfig
from tfrec.training.config import TrainingConfig


class _IndexScorer:
    """Stand-in retrieval scorer: item index i scores i, for every query."""

    max_history = 4

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        batch = tf.shape(features["history"])[0]
        row = tf.range(self.vocab_size, dtype=tf.float32)[None, :]  # [1, V]
        return tf.tile(row, [batch, 1])  # [B, V]


def test_split_validation_holds_out_each_users_latest_examples():
    data = successor_walks(num_users=40, length=21)  # 20 examples per user (positions 1..20)
    users, items = build_vocabularies(concat_interactions(*leave_one_out(data).parts().values()))
    examples = build_ranking_examples(data, users, items, max_history=4, min_history=1)
    train, valid = split_validation(examples, fraction=0.25, seed=3)
    assert len(train) + len(valid) == len(examples) == 40 * 20
    # fraction * 20 = 5 exactly, so floor(5 + r) = 5 per user: 200 held out
    assert len(valid) == 200
    for user in np.unique(examples.user):
        kept = train.end[train.user == user]
        held = valid.end[valid.user == user]
        # the held-out events are the user's latest: never history of a training example
        assert len(kept) == 15 and len(held) == 5 and kept.max() < held.min()
    # 0.05 * 20 = 1 per user; a user with one example keeps it for training
    first = np.r_[True, examples.user[1:] != examples.user[:-1]]
    one = examples.take(np.flatnonzero(first))  # each user's first example only
    assert len(one) == 40
    t, v = split_validation(one, fraction=0.5, seed=0)
    assert len(v) == 0 and len(t) == len(one)
    t, v = split_validation(examples, fraction=0.05, seed=0)
    assert len(v) == 40


@pytest.mark.parametrize("retrieved_only", [False, True])
def test_retrieved_only_keeps_lists_with_the_true_item_retrieved(retrieved_only):
    data = successor_walks(num_users=30, length=6)
    split = leave_one_out(data)
    users, items = build_vocabularies(concat_interactions(*split.parts().values()))
    train = build_ranking_examples(split.train, users, items, max_history=4, min_history=1)
    valid = build_ranking_examples(split.valid, users, items, max_history=4, context=split.train)
    spec = RankerDataSpec(num_users=users.size, num_items=items.size)
    config = RankingConfig(
        objective="next_item",
        eval_negatives=3,
        num_candidates=2,
        max_history=4,
        training=TrainingConfig(batch_size=1000),
        loss=RankingLossConfig(
            negative_sampling="hard",
            hard_pool_size=3,
            num_negatives=2,
            retrieved_only=retrieved_only,
        ),
    )
    train_ds, valid_features = ranker_datasets(config, spec, train, valid, _IndexScorer(items.size))
    batch = next(iter(train_ds))
    positives = batch["candidates"].numpy()[:, -1]  # the true item is the last column

    # With scores = index, the true item's rank = the number of higher item indices
    # that are neither reserved, in the history, nor the user's other training items.
    def rank(examples, rows_positive):
        out = []
        for row, positive in enumerate(rows_positive):
            blocked = set(examples.history[row].tolist()) | set(examples.user_items()[row].tolist())
            higher = [i for i in range(positive + 1, items.size) if i not in blocked]
            out.append(len(higher))
        return np.array(out)

    train_ranks = rank(train, train.item)
    if retrieved_only:
        assert len(positives) == int((train_ranks < 3).sum()) < len(train)
        valid_ranks = rank(valid, valid.item)  # valid: the user's own valid item only
        assert len(valid_features["labels"]) == int((valid_ranks < 2).sum())
    else:
        assert len(positives) == len(train)
        assert len(valid_features["labels"]) == int((valid.item >= NUM_RESERVED).sum())
