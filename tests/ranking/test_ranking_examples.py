import numpy as np
import pandas as pd
import pytest

from tfrec.data.interactions import Interactions
from tfrec.data.ranking_examples import build_ranking_examples
from tfrec.data.vocab import IdVocabulary


@pytest.fixture
def train() -> Interactions:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "item_id": ["x", "y", "z", "x", "z"],
            "timestamp": [10, 20, 40, 5, 6],
            "rating": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    return Interactions.from_frame(frame, has_timestamps=True)


def _vocabs() -> tuple[IdVocabulary, IdVocabulary]:
    # users a=2, b=3; items x=2, y=3, z=4
    return IdVocabulary(["a", "b"], "user"), IdVocabulary(["x", "y", "z"], "item")


def test_training_examples_use_earlier_events_only(train):
    users, items = _vocabs()
    ex = build_ranking_examples(train, users, items, max_history=2)
    # user a: x(10) y(20) z(40); user b: x(5) z(6). L = 2, left padded.
    np.testing.assert_array_equal(ex.history, [[0, 0], [0, 2], [2, 3], [0, 0], [0, 2]])
    np.testing.assert_array_equal(ex.item, [2, 3, 4, 2, 4])
    np.testing.assert_array_equal(ex.user, [2, 2, 2, 3, 3])
    np.testing.assert_array_equal(ex.history_rating[2], [1.0, 2.0])
    # gap of y after x = 10 s -> log1p(10); x is a's first event -> 0.
    np.testing.assert_allclose(ex.history_log_dt[2], [0.0, np.log1p(10.0)], rtol=1e-6)
    assert [s.tolist() for s in ex.seen_items()] == [[], [2], [2, 3], [], [2]]
    # All of the user's items (past and future), e.g. to keep them out of hard negatives.
    assert [s.tolist() for s in ex.user_items()] == [[2, 3, 4]] * 3 + [[2, 4]] * 2


def test_test_examples_take_history_from_context(train):
    users, items = _vocabs()
    test = Interactions.from_frame(
        pd.DataFrame(
            {
                "user_id": ["a", "b", "c"],
                "item_id": ["w", "y", "x"],
                "timestamp": [25, 1, 3],
                "rating": [3.0, 3.0, 3.0],
            }
        )
    )
    ex = build_ranking_examples(test, users, items, max_history=2, context=train)
    # a at t=25 sees x(10), y(20); b at t=1 sees nothing (its events are later);
    # c is unknown (user 1, empty history). Unknown item w -> 1.
    np.testing.assert_array_equal(ex.history, [[2, 3], [0, 0], [0, 0]])
    np.testing.assert_array_equal(ex.user, [2, 3, 1])
    np.testing.assert_array_equal(ex.item, [1, 3, 2])
    assert [s.tolist() for s in ex.user_items()] == [[2, 3, 4], [2, 4], []]


def test_min_history_drops_short_examples(train):
    users, items = _vocabs()
    ex = build_ranking_examples(train, users, items, max_history=3, min_history=2)
    np.testing.assert_array_equal(ex.item, [4])  # only a's z has 2 earlier events


def test_bad_lengths_raise(train):
    users, items = _vocabs()
    with pytest.raises(ValueError, match="max_history"):
        build_ranking_examples(train, users, items, max_history=0)
    with pytest.raises(ValueError, match="min_history"):
        build_ranking_examples(train, users, items, max_history=2, min_history=-1)
