"""Batched full-catalogue top-K (tfrec.evaluation.topk) against the dense numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from tfrec.evaluation import ranking_metrics
from tfrec.evaluation.sparse import TopKRankingMetrics
from tfrec.evaluation.topk import CatalogueTopK, batch_size_for, evaluate_full_ranking_topk

KS = (1, 2, 5, 20)  # 20 > the 10 items: -1 padding past the rankable items


def _case(seed: int, num_queries: int = 9):
    """Vocab 10, dim 4, small integer vectors: products are exact and ties are frequent."""
    rng = np.random.default_rng(seed)
    items = rng.integers(-1, 2, size=(10, 4)).astype(np.float32)
    items[5] = items[3]  # identical rows: every query ties items 3 and 5
    queries = rng.integers(-1, 2, size=(num_queries, 4)).astype(np.float32)
    relevant = [rng.choice(np.arange(2, 10), rng.integers(1, 3), replace=False) for _ in queries]
    exclude = [rng.choice(np.arange(2, 10), rng.integers(0, 4), replace=False) for _ in queries]
    relevant[0] = np.array([3, 5])  # tied relevant items
    exclude[1] = np.concatenate([exclude[1], relevant[1]])  # every target masked: a miss
    relevant[2] = np.array([0, 1])  # only invalid items: a skipped user
    return items, queries, relevant, exclude


def _reference(items, queries, relevant, exclude, **kwargs):
    scores = queries @ items.T
    scores[:, :2] = -np.inf  # as TwoTowerModel.score
    return ranking_metrics(scores, relevant, exclude, **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mask_exclude", [True, False])
def test_equals_the_dense_reference_with_ties_and_masked_targets(seed, mask_exclude):
    items, queries, relevant, exclude = _case(seed)
    expected = _reference(items, queries, relevant, exclude, ks=KS, mask_exclude=mask_exclude)
    got = evaluate_full_ranking_topk(
        lambda ids: queries[ids], items, np.arange(len(queries)), relevant, exclude,
        ks=KS, batch_size=4, mask_exclude=mask_exclude,
    )  # fmt: skip
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["skipped_users"] == 1
    if mask_exclude:  # query 1's targets are all in its history
        assert got["masked_target_users"] >= 1


def test_tie_rule_lower_index_first_and_rank_beyond_top_k():
    # All 8 real items score 1 against the query (items 0/1 are invalid): positions
    # follow the item index, so target 9 is at 0-based position 7 and its MRR is 1/8;
    # with item 4 in the history it moves to position 6 (MRR 1/7).
    items = np.zeros((10, 4), np.float32)
    items[:, 0] = 1.0
    query = np.array([[1.0, 0, 0, 0]], np.float32)
    for history, mrr in (([], 1 / 8), ([4], 1 / 7)):
        got = evaluate_full_ranking_topk(
            lambda ids: query[ids], items, np.array([0]), [np.array([9])], [np.array(history)],
            ks=(1, 5),
        )  # fmt: skip
        assert got["mrr"] == pytest.approx(mrr)
        assert got["hr@5"] == 0.0


def test_two_level_top_k_is_exact_with_chunks():
    # chunk=1 and chunk=3 (4 chunks of 3 columns, 2 padded) must give tf.math.top_k's order.
    items, queries, relevant, exclude = _case(3)
    acc = TopKRankingMetrics(ks=(5,))
    targets = acc.prepare(10, relevant, exclude)
    results = [CatalogueTopK(items, 3, chunk=c).rank(queries, targets) for c in (1, 3)]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    has_target = (targets.relevant >= 0).any(axis=1)  # other rows' ranks are unused
    np.testing.assert_array_equal(results[0][1][has_target], results[1][1][has_target])
    scores = queries @ items.T
    scores[:, :2] = -np.inf
    for row, masked in enumerate(exclude):
        scores[row, masked] = -np.inf
    order = np.lexsort((np.arange(10)[None, :].repeat(len(queries), 0), -scores), axis=1)
    np.testing.assert_array_equal(results[1][0], order[:, :3])


def test_non_finite_vectors_use_the_dense_path_and_nan_is_rejected():
    items, queries, relevant, exclude = _case(4)
    items[7] = [np.inf, 0, 0, 0]  # +-inf scores (and NaN where the query has a 0)
    rows = np.flatnonzero(queries[:, 0] != 0)  # these queries score item 7 at +-inf, no NaN
    q, rel, excl = queries[rows], [relevant[i] for i in rows], [exclude[i] for i in rows]
    expected = _reference(items, q, rel, excl, ks=KS)
    got = evaluate_full_ranking_topk(lambda ids: q[ids], items, np.arange(len(q)), rel, excl, ks=KS)
    assert got == pytest.approx(expected, abs=1e-6)
    zero = np.flatnonzero(queries[:, 0] == 0)[:1]  # 0 * inf = NaN
    with pytest.raises(ValueError, match="NaN scores"):
        evaluate_full_ranking_topk(lambda ids: queries[zero], items, np.array([0]), [np.array([2])])


def test_confidence_interval_matches_a_hand_computation():
    # Three users, hr@1 per user = 1, 0, 0 (mean 1/3): sample variance
    # ((2/3)^2 + 2 * (1/3)^2) / 2 = 1/3, half-width 1.96 * sqrt(1/3 / 3) = 1.96 / 3 = 0.6533.
    items = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]  # items 2..4 = unit vectors e1, e2, e3
    queries = np.eye(4, dtype=np.float32)[[1, 1, 1]]  # every query prefers item 2
    relevant = [np.array([2]), np.array([3]), np.array([4])]
    got = evaluate_full_ranking_topk(
        lambda ids: queries[ids], items, np.arange(3), relevant, ks=(1,), with_ci=True
    )
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["hr@1_ci95"] == pytest.approx(1.959963984540054 / 3, rel=1e-9)


def test_batch_size_is_bounded_by_the_memory_budget():
    # 300k items * 4 bytes = 1.2 MB per query row; 256 MiB / 1.2 MB = 223 rows.
    assert batch_size_for(300_000) == 223
    assert batch_size_for(300_000, max_batch=64) == 64
    assert batch_size_for(10**9) == 1
    with pytest.raises(ValueError, match="num_items=0"):
        batch_size_for(0)


def test_bad_query_vectors_and_lists_are_reported():
    items, queries, relevant, _ = _case(5)
    ids = np.arange(len(queries))
    with pytest.raises(ValueError, match="query_fn: expected query vectors of shape"):
        evaluate_full_ranking_topk(lambda i: queries[:1], items, ids, relevant)
    bad = [*relevant[:-1], np.array([10])]
    with pytest.raises(ValueError, match=r"relevant\[0\]: item index 10 out of range"):
        evaluate_full_ranking_topk(lambda i: queries[i], items, ids, bad, batch_size=1)


def test_default_chunks_on_a_larger_catalogue_equal_the_reference():
    # 300 items in {-1, 0, 1}^4 (81 distinct vectors: heavy ties), k = 10 -> chunk 30 (10 chunks).
    rng = np.random.default_rng(6)
    items = rng.integers(-1, 2, size=(300, 4)).astype(np.float32)
    queries = rng.integers(-1, 2, size=(40, 4)).astype(np.float32)
    relevant = [rng.choice(np.arange(2, 300), 3, replace=False) for _ in queries]
    exclude = [rng.choice(np.arange(2, 300), 20, replace=False) for _ in queries]
    expected = _reference(items, queries, relevant, exclude, ks=(1, 5, 10))
    got = evaluate_full_ranking_topk(
        lambda ids: queries[ids], items, np.arange(40), relevant, exclude, ks=(1, 5, 10),
        batch_size=16,
    )  # fmt: skip
    assert got == pytest.approx(expected, abs=1e-6)
