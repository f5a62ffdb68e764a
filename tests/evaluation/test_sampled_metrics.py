"""Sampled-negatives protocol: hand-computed case, determinism, what may be drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfrec.evaluation import (
    SampledRankingMetrics,
    metric_keys,
    sample_eval_negatives,
    sampled_ranking_metrics,
)
from tfrec.evaluation.masks import relevance_masks


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_hand_computed_all_candidates_drawn() -> None:
    # 6 items: 0, 1 invalid; relevant {2}; exclude {5}. Only items 3, 4 can be drawn,
    # so with 2 negatives the list is {2, 3, 4} whatever the seed.
    # Scores 2: 0.5, 3: 0.5, 4: 0.9 (5: 10.0 is excluded and never drawn).
    # Order: 4, then 2 before 3 (tie, lower index first) -> the positive is at position 2.
    scores = np.array([[0.0, 0.0, 0.5, 0.5, 0.9, 10.0]])
    got = sampled_ranking_metrics(scores, [arr(2)], [arr(5)], ks=(1, 2, 3), num_negatives=2)
    assert (got["hr@1"], got["hr@2"], got["recall@2"]) == (0.0, 1.0, 1.0)
    assert got["precision@2"] == pytest.approx(1 / 2)
    assert got["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert got["map@2"] == pytest.approx(1 / 2)
    assert got["precision@3"] == pytest.approx(1 / 3)
    assert got["mrr"] == pytest.approx(1 / 2)
    assert set(got) == {*metric_keys((1, 2, 3)), "users", "skipped_users", "conflicts",
                        "repeat_target_users", "masked_target_users",
                        "invalid_relevant"}  # fmt: skip


def test_user_metrics_are_the_mean_over_relevant_items() -> None:
    # Relevant {2, 3}, the only drawable negative is 4 (num_negatives=1).
    # Scores 2: 0.9 -> beats 4 (0.5): position 1; 3: 0.1 -> position 2.
    # hr@1 = mean(1, 0) = 1/2; mrr = mean(1, 1/2) = 3/4.
    scores = np.array([[0.0, 0.0, 0.9, 0.1, 0.5]])
    got = sampled_ranking_metrics(scores, [arr(2, 3)], ks=(1, 2), num_negatives=1)
    assert got["hr@1"] == pytest.approx(1 / 2)
    assert got["hr@2"] == 1.0
    assert got["mrr"] == pytest.approx(3 / 4)
    assert got["users"] == 1.0


def make_case(seed: int, num_users: int = 30, num_items: int = 60):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((num_users, num_items)), 1)
    relevant = [rng.choice(np.arange(2, num_items), rng.integers(0, 4), replace=False)
                for _ in range(num_users)]  # fmt: skip
    exclude = [rng.choice(np.arange(2, num_items), 5, replace=False) for _ in range(num_users)]
    return scores, relevant, exclude


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_deterministic_and_independent_of_batching(sampling: str) -> None:
    scores, relevant, exclude = make_case(0)
    counts = np.arange(scores.shape[1], dtype=np.float64)  # item i drawn ~ i
    kwargs = dict(ks=(1, 5, 10), num_negatives=20, sampling=sampling, item_counts=counts)
    one = sampled_ranking_metrics(scores, relevant, exclude, seed=3, **kwargs)
    assert one == sampled_ranking_metrics(scores, relevant, exclude, seed=3, **kwargs)
    acc = SampledRankingMetrics(seed=3, **kwargs)
    for start in range(0, 30, 7):
        acc.update(
            scores[start : start + 7], relevant[start : start + 7], exclude[start : start + 7]
        )
    assert acc.result() == pytest.approx(one, rel=1e-12)
    other = sampled_ranking_metrics(scores, relevant, exclude, seed=4, **kwargs)
    assert other != one  # a different seed draws different negatives


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_relevant_excluded_and_invalid_items_are_never_negatives(sampling: str) -> None:
    # Relevant items score in [1, 2) (distinct), excluded and invalid items score 100,
    # every other item scores 0. If any relevant/excluded/invalid item were drawn as a
    # negative, some positive would not be at position 1, so hr@1 == 1 proves none was.
    rng = np.random.default_rng(1)
    num_users, num_items = 25, 40
    scores = np.zeros((num_users, num_items))
    scores[:, :2] = 100.0
    relevant, exclude = [], []
    for u in range(num_users):
        items = rng.permutation(np.arange(2, num_items))
        rel, excl = items[:3], items[3:8]
        scores[u, rel] = 1.0 + rng.random(3)  # a drawn relevant item would beat a positive
        scores[u, excl] = 100.0
        relevant.append(rel)
        exclude.append(excl)
    got = sampled_ranking_metrics(
        scores,
        relevant,
        exclude,
        ks=(1,),
        num_negatives=30,  # exactly all 40 - 2 invalid - 3 relevant - 5 excluded items
        sampling=sampling,
        item_counts=np.ones(num_items),
    )
    assert got["hr@1"] == 1.0
    assert got["users"] == num_users


def test_sample_eval_negatives_respects_forbidden_and_popularity() -> None:
    relevant = [arr(2, 3)]
    exclude = [arr(4)]
    forbidden = relevance_masks(1, 8, relevant, exclude, (0, 1)).forbidden
    # forbidden = {0, 1} invalid + {2, 3} relevant + {4} excluded -> drawable {5, 6, 7}
    np.testing.assert_array_equal(np.flatnonzero(~forbidden[0]), [5, 6, 7])
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_eval_negatives(forbidden[0], 2, rng) for _ in range(200)])
    assert set(draws.tolist()) == {5, 6, 7}
    # popularity: counts 5: 0 (never), 6: 9, 7: 1 -> one draw is item 6 with p = 0.9
    counts = np.array([50, 50, 50, 50, 50, 0, 9, 1], dtype=np.float64)
    one = np.array(
        [sample_eval_negatives(forbidden[0], 1, rng, "popularity", counts)[0] for _ in range(2000)]
    )
    assert set(one.tolist()) == {6, 7}
    assert abs(np.mean(one == 6) - 0.9) < 0.03  # 4.5 standard deviations
    with pytest.raises(ValueError, match="only 2 items can be sampled"):
        sample_eval_negatives(forbidden[0], 3, rng, "popularity", counts)


def test_validation() -> None:
    with pytest.raises(ValueError, match="exceeds the candidate list length"):
        SampledRankingMetrics(ks=(10,), num_negatives=5)
    with pytest.raises(ValueError, match="sampling"):
        SampledRankingMetrics(ks=(1,), sampling="hard")
    with pytest.raises(ValueError, match="item_counts: required"):
        SampledRankingMetrics(ks=(1,), sampling="popularity")
    with pytest.raises(ValueError, match="seed: expected an integer >= 0"):
        SampledRankingMetrics(ks=(1,), seed=-1)
    with pytest.raises(ValueError, match="num_negatives: expected >= 1"):
        SampledRankingMetrics(ks=(1,), num_negatives=0)
    with pytest.raises(ValueError, match="user row 0 of this batch: num_negatives=5"):
        sampled_ranking_metrics(np.zeros((1, 6)), [arr(2)], ks=(1,), num_negatives=5)
    acc = SampledRankingMetrics(ks=(1,), sampling="popularity", item_counts=np.ones(5))
    with pytest.raises(ValueError, match=r"item_counts: length 5 != 6 items"):
        acc.update(np.zeros((1, 6)), [arr(2)])


def test_reset_forgets_users_and_restarts_the_seed_counter() -> None:
    scores, relevant, exclude = make_case(1, num_users=6)
    acc = SampledRankingMetrics(ks=(1, 5), num_negatives=10, seed=2)
    acc.update(scores, relevant, exclude)
    first = acc.result()
    # The same users fed again are users 6..11: other generators, so other negatives.
    acc.update(scores, relevant, exclude)
    assert acc.result()["users"] == 2 * first["users"]
    acc.reset()
    assert acc.result()["users"] == 0.0 and math.isnan(acc.result()["mrr"])
    acc.update(scores, relevant, exclude)  # users 0..5 again: the same draws as at first
    assert acc.result() == first
