import numpy as np
import pytest

from tfrec.data.negatives import (
    hard_negatives,
    popularity_negatives,
    retrieval_pool,
    sample_negatives,
    uniform_negatives,
)
from tfrec.tasks.config import RankingLossConfig

VOCAB = 10  # indices 0 (pad), 1 (OOV), known items 2..9


def test_uniform_never_positive_nor_reserved_and_is_uniform():
    # Positive 5: the other known items are {2, 3, 4, 6, 7, 8, 9}, each with p = 1/7.
    rng = np.random.default_rng(0)
    positives = np.full(7000, 5)
    negatives = uniform_negatives(positives, 10, VOCAB, rng)
    assert negatives.shape == (7000, 10)
    assert negatives.dtype == np.int32
    assert not (negatives == 5).any()
    assert negatives.min() >= 2 and negatives.max() <= 9
    freq = np.bincount(negatives.ravel(), minlength=VOCAB)[[2, 3, 4, 6, 7, 8, 9]] / negatives.size
    # 70,000 draws: standard error of each share = sqrt(1/7 * 6/7 / 70000) ~ 0.0013.
    np.testing.assert_allclose(freq, 1 / 7, atol=0.01)


def test_uniform_edge_positives_never_drawn():
    rng = np.random.default_rng(1)
    for positive in (2, 9):
        negatives = uniform_negatives(np.array([positive] * 500), 4, VOCAB, rng)
        assert not (negatives == positive).any()
        assert set(np.unique(negatives)) == set(range(2, 10)) - {positive}


def test_popularity_follows_weights_without_positive():
    # weights of items 2, 3, 4 = 1, 2, 3 (others 0). Positive 4 -> the negatives
    # are 2 or 3 with probabilities 1/3 and 2/3.
    popularity = np.zeros(VOCAB)
    popularity[[2, 3, 4]] = [1.0, 2.0, 3.0]
    popularity[[0, 1]] = 100.0  # reserved indices are ignored whatever their weight
    rng = np.random.default_rng(0)
    negatives = popularity_negatives(np.full(3000, 4), 10, popularity, rng)
    assert set(np.unique(negatives)) == {2, 3}
    share_3 = (negatives == 3).mean()
    # 30,000 draws: standard error sqrt(2/9 / 30000) ~ 0.003.
    assert abs(share_3 - 2 / 3) < 0.015


def test_popularity_rejects_positive_as_only_item():
    popularity = np.zeros(VOCAB)
    popularity[5] = 1.0
    with pytest.raises(ValueError, match="only item"):
        popularity_negatives(np.array([5]), 2, popularity, np.random.default_rng(0))


def test_seeded_sampling_is_deterministic():
    positives = np.array([2, 3, 4, 5])
    a = sample_negatives("uniform", positives, 3, VOCAB, np.random.default_rng(7))
    b = sample_negatives("uniform", positives, 3, VOCAB, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_hard_negatives_from_pool_without_replacement():
    pool = np.array([[7, 8, 9, 0], [4, 0, 0, 0]])  # row 1 has a single valid item
    negatives = hard_negatives(pool, 3, np.random.default_rng(0))
    assert sorted(negatives[0].tolist()) == [7, 8, 9]  # all 3 distinct pool items
    np.testing.assert_array_equal(negatives[1], [4, 4, 4])  # repeated to fill the row


def test_retrieval_pool_excludes_positive_history_and_reserved():
    # Scores rank items 9 > 8 > ... > 0. Positive 9 and history item 8 are removed,
    # so the top-3 pool is [7, 6, 5].
    def score_fn(histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        return np.tile(np.arange(VOCAB, dtype=np.float32), (len(users), 1))

    pool = retrieval_pool(
        score_fn, np.array([[0, 8]]), np.array([2]), np.array([9]), pool_size=3
    ).items
    np.testing.assert_array_equal(pool, [[7, 6, 5]])
    # The user's other items (here 7 and 5) can be excluded as well.
    narrower = retrieval_pool(
        score_fn, np.array([[0, 8]]), np.array([2]), np.array([9]), pool_size=3,
        exclude=[np.array([7, 5])],
    ).items  # fmt: skip
    np.testing.assert_array_equal(narrower, [[6, 4, 3]])
    negatives = sample_negatives(
        "hard", np.array([9]), 2, VOCAB, np.random.default_rng(0), pool=pool
    )
    assert set(negatives[0]) <= {5, 6, 7}


def test_retrieval_pool_reports_the_positive_rank_after_exclusions():
    # Scores rank items 9 > 8 > ... > 2 (VOCAB = 10). Row 0: positive 6, history [8],
    # so the proposable items above it are 9 and 7: rank 2. Row 1: positive 9 is the
    # best item: rank 0. Row 2: positive 3, history [9], exclude [8, 7]: above it are
    # 6, 5, 4: rank 3.
    def score_fn(histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        return np.tile(np.arange(VOCAB, dtype=np.float32), (len(users), 1))

    pool = retrieval_pool(
        score_fn,
        np.array([[0, 8], [0, 0], [0, 9]]),
        np.array([2, 3, 4]),
        np.array([6, 9, 3]),
        pool_size=3,
        exclude=[np.array([], dtype=int), np.array([], dtype=int), np.array([8, 7])],
    )
    np.testing.assert_array_equal(pool.positive_rank, [2, 0, 3])
    np.testing.assert_array_equal(pool.items, [[9, 7, 5], [8, 7, 6], [6, 5, 4]])
    np.testing.assert_array_equal(pool.positive_in_top(), [True, True, False])
    np.testing.assert_array_equal(pool.positive_in_top(2), [False, True, False])


def test_bad_arguments_name_the_problem():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="negative_sampling"):
        sample_negatives("nope", np.array([2]), 1, VOCAB, rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_negatives"):
        sample_negatives("uniform", np.array([2]), 0, VOCAB, rng)
    with pytest.raises(ValueError, match="not a known item"):
        sample_negatives("uniform", np.array([1]), 1, VOCAB, rng)
    with pytest.raises(ValueError, match="popularity"):
        sample_negatives("popularity", np.array([2]), 1, VOCAB, rng)
    with pytest.raises(ValueError, match="contains the example's positive"):
        sample_negatives("hard", np.array([2]), 1, VOCAB, rng, pool=np.array([[2, 3]]))


def test_hard_fraction_mixes_pool_and_uniform_negatives():
    from tfrec.data.ranking_lists import draw_negatives
    from tfrec.models.ranking import RankingConfig

    # 4 negatives, hard_fraction 0.5: columns 0-1 come from the pool {8, 9},
    # columns 2-3 are uniform over the known items except the positive 2.
    config = RankingConfig(
        objective="next_item",
        loss=RankingLossConfig(
            negative_sampling="hard", num_negatives=4, hard_pool_size=4, hard_fraction=0.5
        ),
    )
    positives = np.full(500, 2)
    pool = np.tile([8, 9, 0, 0], (500, 1))
    negatives = draw_negatives(
        config, positives, VOCAB, np.random.default_rng(0), popularity=None, pool=pool
    )
    assert negatives.shape == (500, 4)
    assert set(np.unique(negatives[:, :2])) == {8, 9}
    assert set(np.unique(negatives[:, 2:])) == set(range(3, 10))
