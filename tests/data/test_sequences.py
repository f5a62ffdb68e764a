"""Sequences and fixed-length examples, checked against hand-written arrays."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tfrec.data.interactions import Interactions
from tfrec.data.sequences import (
    UserSequences,
    heldout_examples,
    history_matrix,
    interaction_pairs,
    retrieval_examples,
    seen_items,
    user_sequences,
)
from tfrec.data.vocab import IdVocabulary


def one_user(items: list[int], ratings=None, times=None) -> UserSequences:
    n = len(items)
    return UserSequences(
        user_ids=["u"],
        users=np.array([2], dtype=np.int32),
        items=[np.array(items, dtype=np.int32)],
        ratings=[np.array(ratings if ratings is not None else [np.nan] * n, dtype=np.float32)],
        timestamps=[np.array(times if times is not None else range(n), dtype=np.int64)],
    )


def test_user_sequences_orders_by_time_and_maps_vocab():
    frame = pd.DataFrame(
        {
            "user_id": ["b", "a", "a", "a", "c"],
            "item_id": ["x", "z", "y", "new", "y"],
            "timestamp": [5, 30, 10, 30, 1],
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    inter = Interactions(frame)  # deliberately unsorted frame
    users = IdVocabulary(["a", "b"])  # a=2, b=3, c unknown=1
    items = IdVocabulary(["x", "y", "z"])  # x=2, y=3, z=4, "new" unknown=1
    seqs = user_sequences(inter, users, items)
    assert seqs.user_ids == ["b", "a", "c"]  # order of first appearance
    assert seqs.users.tolist() == [3, 2, 1]
    # a: y@10, then the tie at 30 keeps frame order: z, new
    assert seqs.items[1].tolist() == [3, 4, 1]
    assert seqs.ratings[1].tolist() == [3.0, 2.0, 4.0]
    assert seqs.timestamps[1].tolist() == [10, 30, 30]
    assert seqs.items[1].dtype == np.int32 and seqs.lengths().tolist() == [1, 3, 1]


def test_all_mode_windows_from_the_end():
    # s = [2, 3, 4, 5], L = 2. Pairs (2->3), (3->4), (4->5): 3 targets, 2 windows.
    # latest window: history [3, 4], target [4, 5]
    # earliest window (left-padded): history [0, 2], target [0, 3]
    ex = retrieval_examples(one_user([2, 3, 4, 5]), max_len=2, mode="all")
    np.testing.assert_array_equal(ex["history"], [[0, 2], [3, 4]])
    np.testing.assert_array_equal(ex["target"], [[0, 3], [4, 5]])
    np.testing.assert_array_equal(ex["user"], [2, 2])
    assert ex["history"].dtype == ex["target"].dtype == ex["user"].dtype == np.int32


def test_all_mode_short_sequence_single_padded_row():
    # s = [7, 8, 9], L = 4: history [0, 0, 7, 8], target [0, 0, 8, 9]
    ex = retrieval_examples(one_user([7, 8, 9]), max_len=4)
    np.testing.assert_array_equal(ex["history"], [[0, 0, 7, 8]])
    np.testing.assert_array_equal(ex["target"], [[0, 0, 8, 9]])


def test_last_mode_one_row_per_target():
    # s = [2, 3, 4, 5], L = 2:
    # t=1: history [0, 2] target [0, 3]; t=2: [2, 3] -> [0, 4]; t=3: [3, 4] -> [0, 5]
    ex = retrieval_examples(one_user([2, 3, 4, 5]), max_len=2, mode="last")
    np.testing.assert_array_equal(ex["history"], [[0, 2], [2, 3], [3, 4]])
    np.testing.assert_array_equal(ex["target"], [[0, 3], [0, 4], [0, 5]])


def test_last_mode_target_mask():
    # only positions 1 and 3 are targets: rows for t=1 and t=3
    seqs = one_user([2, 3, 4, 5])
    ex = retrieval_examples(
        seqs, max_len=3, mode="last", target_mask=[np.array([1, 1, 0, 1], bool)]
    )
    # t=0 cannot be a target (no history) even though the mask says True
    np.testing.assert_array_equal(ex["history"], [[0, 0, 2], [2, 3, 4]])
    np.testing.assert_array_equal(ex["target"], [[0, 0, 3], [0, 0, 5]])
    with pytest.raises(ValueError, match="aligned"):
        retrieval_examples(seqs, 3, "last", target_mask=[np.array([True])])
    with pytest.raises(ValueError, match="only supported with mode='last'"):
        retrieval_examples(seqs, 3, "all", target_mask=[np.array([1, 1, 0, 1], bool)])


def test_extras_rating_and_log_dt():
    # times 100, 110, 111, ratings 4, NaN, 2; L = 3, mode all -> one row
    # history = [0, 2, 3] (s[:-1] left-padded), its events are #0 and #1:
    # ratings [0, 4, 0(NaN)], dt [0, log1p(0) (first event), log1p(10)]
    seqs = one_user([2, 3, 4], ratings=[4.0, np.nan, 2.0], times=[100, 110, 111])
    ex = retrieval_examples(seqs, max_len=3, extras=True)
    np.testing.assert_array_equal(ex["history"], [[0, 2, 3]])
    np.testing.assert_array_equal(ex["history_rating"], [[0.0, 4.0, 0.0]])
    np.testing.assert_allclose(ex["history_dt"], [[0.0, 0.0, math.log1p(10)]], rtol=1e-6)
    assert ex["history_dt"].dtype == ex["history_rating"].dtype == np.float32


def test_multiple_users_and_short_users_yield_nothing():
    seqs = UserSequences(
        user_ids=["a", "b", "c"],
        users=np.array([2, 3, 4], np.int32),
        items=[np.array([5], np.int32), np.array([6, 7], np.int32), np.array([], np.int32)],
        ratings=[np.zeros(1, np.float32), np.zeros(2, np.float32), np.zeros(0, np.float32)],
        timestamps=[np.zeros(1, np.int64), np.array([0, 1]), np.zeros(0, np.int64)],
    )
    for mode in ("all", "last"):
        ex = retrieval_examples(seqs, max_len=2, mode=mode)
        np.testing.assert_array_equal(ex["user"], [3])
        np.testing.assert_array_equal(ex["history"], [[0, 6]])
        np.testing.assert_array_equal(ex["target"], [[0, 7]])


def test_all_mode_keeps_every_target_exactly_once():
    rng = np.random.default_rng(0)
    lists = [rng.integers(2, 50, size=n) for n in (1, 2, 5, 9, 17)]
    seqs = UserSequences(
        user_ids=[str(i) for i in range(5)],
        users=np.arange(2, 7, dtype=np.int32),
        items=[s.astype(np.int32) for s in lists],
        ratings=[np.zeros(len(s), np.float32) for s in lists],
        timestamps=[np.arange(len(s)) for s in lists],
    )
    ex = retrieval_examples(seqs, max_len=4)
    for u, s in zip(range(2, 7), lists, strict=True):
        rows = ex["user"] == u
        targets = ex["target"][rows]
        assert targets[targets > 0].tolist() == s[1:].tolist()  # all, in order
        hist = ex["history"][rows]
        assert hist[hist > 0].tolist() == s[:-1].tolist()
    assert ex["history"].shape[1] == 4


def test_history_matrix_and_seen_items():
    # [[2, 3, 4, 5], [6], []] with L = 3 -> [[3, 4, 5], [0, 0, 6], [0, 0, 0]]
    lists = [[2, 3, 4, 5], [6], []]
    np.testing.assert_array_equal(history_matrix(lists, 3), [[3, 4, 5], [0, 0, 6], [0, 0, 0]])
    assert history_matrix(one_user([2, 3]), 1).tolist() == [[3]]
    seen = seen_items([[5, 2, 5, 0], [7]])
    assert [s.tolist() for s in seen] == [[2, 5], [7]]
    with pytest.raises(ValueError, match="max_len must be >= 1, got 0"):
        history_matrix(lists, 0)


def test_heldout_examples_use_context_history():
    # context: u -> [2, 3, 4] (times 0, 5, 6; ratings 1, 2, 3); held-out: u -> [7, 8], v -> [9]
    # v has no context: all-padding history. L = 2:
    # rows: (u, [3, 4] -> 7), (u, [3, 4] -> 8), (v, [0, 0] -> 9)
    context = UserSequences(
        user_ids=["u"],
        users=np.array([2], np.int32),
        items=[np.array([2, 3, 4], np.int32)],
        ratings=[np.array([1, 2, 3], np.float32)],
        timestamps=[np.array([0, 5, 6])],
    )
    heldout = UserSequences(
        user_ids=["u", "v"],
        users=np.array([2, 1], np.int32),
        items=[np.array([7, 8], np.int32), np.array([9], np.int32)],
        ratings=[np.zeros(2, np.float32), np.zeros(1, np.float32)],
        timestamps=[np.array([7, 8]), np.array([3])],
    )
    ex = heldout_examples(context, heldout, max_len=2, extras=True)
    np.testing.assert_array_equal(ex["user"], [2, 2, 1])
    np.testing.assert_array_equal(ex["history"], [[3, 4], [3, 4], [0, 0]])
    np.testing.assert_array_equal(ex["target"], [[0, 7], [0, 8], [0, 9]])
    np.testing.assert_array_equal(ex["history_rating"], [[2, 3], [2, 3], [0, 0]])
    # gaps of context events 3 and 4: 5 - 0 = 5 and 6 - 5 = 1
    np.testing.assert_allclose(
        ex["history_dt"], [[math.log1p(5), math.log1p(1)]] * 2 + [[0, 0]], rtol=1e-6
    )


def _three_users() -> UserSequences:
    # a (index 2): items 5, 6, 7; b (3): a single item 8; c (unknown user, 1): OOV item 1, then 4
    items = [np.array([5, 6, 7], np.int32), np.array([8], np.int32), np.array([1, 4], np.int32)]
    return UserSequences(
        user_ids=["a", "b", "c"],
        users=np.array([2, 3, 1], np.int32),
        items=items,
        ratings=[np.zeros(len(s), np.float32) for s in items],
        timestamps=[np.arange(len(s), dtype=np.int64) for s in items],
    )


def test_interaction_pairs_one_row_per_interaction_first_items_included():
    ex = interaction_pairs(_three_users())
    assert sorted(ex) == ["target", "user"]  # no history: the ID-only model does not read one
    # by user, then time: a->5, a->6, a->7, b->8 (single interaction), c->1 (OOV kept), c->4
    np.testing.assert_array_equal(ex["user"], [2, 2, 2, 3, 1, 1])
    np.testing.assert_array_equal(ex["target"], [[5], [6], [7], [8], [1], [4]])
    assert ex["user"].dtype == ex["target"].dtype == np.int32
    # the sequence rows of the same users lose the first items 5, 8 and 1 (b has no row):
    # a -> targets 6, 7; c -> target 4
    last = retrieval_examples(_three_users(), max_len=2, mode="last")
    np.testing.assert_array_equal(last["target"][:, -1], [6, 7, 4])


def test_interaction_pairs_of_no_users_are_empty():
    empty = UserSequences([], np.zeros(0, np.int32), [], [], [])
    ex = interaction_pairs(empty)
    assert ex["user"].shape == (0,) and ex["target"].shape == (0, 1)
