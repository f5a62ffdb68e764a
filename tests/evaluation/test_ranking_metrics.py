"""Full-ranking metrics: hand-computed cases and a brute-force property test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tfrec.evaluation import RankingMetrics, metric_keys, ranking_metrics, top_k_items

INVALID = (0, 1)


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# ---------------------------------------------------------------- hand-computed


def test_ties_ordered_by_lower_index_hand_computed() -> None:
    # Items 0, 1 are padding/OOV (never ranked). Valid items 2..6 with scores
    #   2: 0.9, 3: 0.5, 4: 0.5, 5: 0.1, 6: 0.5; relevant {4, 6}.
    # Stable descending order (ties by lower index): 2, 3, 4, 6, 5
    # -> hits at 1-based positions 3 and 4, best relevant at position 3.
    scores = np.array([[0.0, 0.0, 0.9, 0.5, 0.5, 0.1, 0.5]])
    got = ranking_metrics(scores, [arr(4, 6)], ks=(1, 2, 3, 5))
    idcg2 = 1 + 1 / math.log2(3)  # two relevant items at positions 1, 2
    expected = {
        # K = 1, 2: no hit in the top K
        **{f"{m}@{k}": 0.0 for m in ("hr", "recall", "precision", "ndcg", "map") for k in (1, 2)},
        # K = 3: one hit at position 3
        "hr@3": 1.0,
        "recall@3": 1 / 2,
        "precision@3": 1 / 3,
        "ndcg@3": (1 / math.log2(4)) / idcg2,
        "map@3": (1 / 3) / 2,  # precision@3 at the hit, / min(|rel|=2, K=3)
        # K = 5: hits at positions 3 and 4
        "hr@5": 1.0,
        "recall@5": 1.0,
        "precision@5": 2 / 5,
        "ndcg@5": (1 / math.log2(4) + 1 / math.log2(5)) / idcg2,
        "map@5": (1 / 3 + 2 / 4) / 2,
        "mrr": 1 / 3,
        "users": 1.0,
        "skipped_users": 0.0,
        "repeat_target_users": 0.0,
        "masked_target_users": 0.0,
        "conflicts": 0.0,
        "invalid_relevant": 0.0,
    }
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_masked_relevant_item_is_a_miss_and_skipped_user_hand_computed() -> None:
    # User 0: same scores as above, relevant {3, 6}, exclude {3}: item 3 is removed
    #   from the ranking and cannot be hit, but it stays one of the user's |rel| = 2
    #   relevant items (a miss, 1 conflict). Ranking: 2, 4, 6, 5 -> item 6 at position 3.
    # User 1: relevant only the OOV index 1 -> no real relevant item, skipped.
    scores = np.array([[0.0, 0.0, 0.9, 0.5, 0.5, 0.1, 0.5]] * 2)
    got = ranking_metrics(scores, [arr(3, 6), arr(1)], [arr(3), arr()], ks=(1, 3))
    idcg2 = 1 + 1 / math.log2(3)  # ideal: both relevant items at positions 1, 2
    assert got["hr@1"] == 0.0
    assert got["hr@3"] == 1.0
    assert got["recall@3"] == pytest.approx(1 / 2)  # 1 hit / |rel| = 2 (masked one included)
    assert got["precision@3"] == pytest.approx(1 / 3)
    assert got["ndcg@3"] == pytest.approx((1 / math.log2(4)) / idcg2)
    assert got["map@3"] == pytest.approx((1 / 3) / 2)  # / min(|rel| = 2, K = 3)
    assert got["mrr"] == pytest.approx(1 / 3)
    assert (got["users"], got["skipped_users"]) == (1.0, 1.0)
    assert (got["repeat_target_users"], got["masked_target_users"]) == (1.0, 1.0)
    assert (got["conflicts"], got["invalid_relevant"]) == (1.0, 1.0)


def test_k_larger_than_rankable_items_and_invalid_items_ignored() -> None:
    # Padding/OOV have the highest scores but are never ranked; only items 2, 3 remain.
    # Ranking: 2 (0.2), 3 (0.1); relevant {3} at position 2.
    # @5: hr 1, recall 1, precision 1/5 (divides by K), ndcg 1/log2(3), map (1/2)/1.
    scores = np.array([[10.0, 10.0, 0.2, 0.1]])
    got = ranking_metrics(scores, [arr(3)], ks=(1, 5))
    assert got["hr@1"] == 0.0
    assert got["precision@5"] == pytest.approx(1 / 5)
    assert got["ndcg@5"] == pytest.approx(1 / math.log2(3))
    assert got["map@5"] == pytest.approx(1 / 2)
    assert got["mrr"] == pytest.approx(1 / 2)


def test_minus_inf_scores_do_not_mix_with_excluded_items() -> None:
    # Item 2 is excluded, item 3 is relevant; both score -inf. Excluded items are
    # removed, not just pushed to -inf: ranking is 4 (0.3), 3 (-inf) -> position 2.
    # (Masking with -inf would tie 2 and 3 and put the excluded item 2 first.)
    scores = np.array([[0.0, 0.0, -np.inf, -np.inf, 0.3]])
    got = ranking_metrics(scores, [arr(3)], [arr(2)], ks=(1, 2))
    assert (got["hr@1"], got["hr@2"], got["mrr"]) == (0.0, 1.0, 0.5)


def test_mrr_has_no_cutoff() -> None:
    # Relevant item 2 has the lowest score of 5 valid items -> position 5, beyond K = 1.
    scores = np.array([[0.0, 0.0, 0.1, 0.5, 0.4, 0.3, 0.2]])
    got = ranking_metrics(scores, [arr(2)], ks=(1,))
    assert got["hr@1"] == 0.0
    assert got["mrr"] == pytest.approx(1 / 5)


def test_no_user_with_relevant_items_gives_nan_not_zero() -> None:
    got = ranking_metrics(np.zeros((1, 4)), [arr()], ks=(1,))
    assert math.isnan(got["hr@1"]) and math.isnan(got["mrr"])
    assert (got["users"], got["skipped_users"]) == (0.0, 1.0)


def test_keys() -> None:
    got = ranking_metrics(np.ones((1, 4)), [arr(2)], ks=(10, 1))
    assert set(got) == {
        *metric_keys((1, 10)),
        "users",
        "skipped_users",
        "repeat_target_users",
        "masked_target_users",
        "conflicts",
        "invalid_relevant",
    }
    assert "ndcg@10" in got and "hr@1" in got and "mrr" in got


def test_top_k_items_matches_tf_math_top_k() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(3)
    scores = np.round(rng.random((6, 20)), 1).astype(np.float32)  # many ties
    valid = np.ones_like(scores, dtype=bool)
    ours = top_k_items(scores, valid, 8)
    theirs = tf.math.top_k(tf.constant(scores), k=8, sorted=True).indices.numpy()
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("scores", "relevant", "exclude", "match"),
    [
        (np.array([[0.1, np.nan, 0.3]]), [arr(2)], None, "NaN"),
        (np.zeros(3), [arr(2)], None, r"2-D"),
        (np.zeros((1, 3)), [arr(2), arr(2)], None, r"relevant: expected 1 rows"),
        (np.zeros((2, 3)), [arr(2), arr(3)], None, r"relevant\[1\]: item index 3 out of range"),
        (np.zeros((1, 3)), [arr(2)], [arr(-1)], r"exclude\[0\]: item index -1"),
        (np.zeros((1, 3)), [np.array([2.0])], None, r"relevant\[0\]: expected integer"),
    ],
)
def test_update_validation(scores, relevant, exclude, match) -> None:
    with pytest.raises(ValueError, match=match):
        ranking_metrics(scores, relevant, exclude, ks=(1,))


@pytest.mark.parametrize("ks", [(), (0,), (5, -1), (2.5,)])
def test_bad_ks(ks) -> None:
    with pytest.raises(ValueError, match="ks"):
        RankingMetrics(ks=ks)


def test_item_count_must_not_change_between_batches() -> None:
    acc = RankingMetrics(ks=(1,))
    acc.update(np.zeros((1, 4)), [arr(2)])
    with pytest.raises(ValueError, match="5 items per row, but earlier batches had 4"):
        acc.update(np.zeros((1, 5)), [arr(2)])


# ---------------------------------------------------------------- brute force


def brute_force(
    scores, relevant, exclude, ks, *, invalid=INVALID, mask_exclude=True
) -> dict[str, float]:
    """Naive per-user loop with a full stable sort; definitions straight from the docs.

    Every user with a real relevant item counts; with ``mask_exclude`` the excluded
    items leave the ranking, so an excluded relevant item is a miss that still counts
    in ``|rel|``.
    """
    sums = {key: 0.0 for key in metric_keys(ks)}
    users = skipped = repeat_users = conflicts = invalid_relevant = 0
    for u in range(scores.shape[0]):
        excl = set(exclude[u].tolist()) if exclude is not None else set()
        rel_raw = set(relevant[u].tolist())
        invalid_relevant += len(rel_raw & set(invalid))
        rel = rel_raw - set(invalid)  # |rel|: the denominators
        conflicts += len(rel & excl)
        repeat_users += bool(rel & excl)
        if not rel:
            skipped += 1
            continue
        users += 1
        removed = (excl if mask_exclude else set()) | set(invalid)
        candidates = np.array([i for i in range(scores.shape[1]) if i not in removed])
        ranked = candidates[np.argsort(-scores[u, candidates], kind="stable")].tolist()
        gains = [1 if item in rel else 0 for item in ranked]
        first = next((pos for pos, g in enumerate(gains, start=1) if g), None)
        sums["mrr"] += 1.0 / first if first else 0.0
        for k in ks:
            top = gains[:k]
            hits = sum(top)
            sums[f"hr@{k}"] += float(hits > 0)
            sums[f"recall@{k}"] += hits / len(rel)
            sums[f"precision@{k}"] += hits / k
            dcg = sum(g / math.log2(i + 1) for i, g in enumerate(top, start=1))
            idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(rel), k) + 1))
            sums[f"ndcg@{k}"] += dcg / idcg
            ap = sum(sum(top[:i]) / i for i, g in enumerate(top, start=1) if g)
            sums[f"map@{k}"] += ap / min(len(rel), k)
    out = {key: value / users for key, value in sums.items()}
    out.update(
        users=float(users),
        skipped_users=float(skipped),
        repeat_target_users=float(repeat_users),
        masked_target_users=float(repeat_users if mask_exclude else 0),
        conflicts=float(conflicts),
        invalid_relevant=float(invalid_relevant),
    )
    return out


def random_case(
    seed: int, num_users: int = 40, num_items: int = 30, dtype=np.float64, decimals: int | None = 1
):
    rng = np.random.default_rng(seed)
    scores = rng.random((num_users, num_items))
    if decimals is not None:
        scores = np.round(scores, decimals)  # deliberate ties
    scores = scores.astype(dtype)
    relevant, exclude = [], []
    for _ in range(num_users):
        rel = rng.choice(num_items, size=rng.integers(0, 6), replace=False)  # may hit 0/1
        excl = rng.choice(num_items, size=rng.integers(0, 8), replace=False)  # may overlap rel
        relevant.append(rel)
        exclude.append(excl)
    return scores, relevant, exclude


KS = (1, 3, 5, 10, 20, 50)  # 50 > catalogue: exercises K beyond the rankable items
KS_SMALL = (1, 2, 3, 5, 8)  # max K < catalogue: exercises the top-K cut through tied scores


@pytest.mark.parametrize("ks", [KS, KS_SMALL])
@pytest.mark.parametrize(("seed", "decimals"), [(0, 1), (1, 1), (2, 1), (3, None)])
def test_matches_brute_force(seed: int, decimals: int | None, ks: tuple[int, ...]) -> None:
    scores, relevant, exclude = random_case(seed, decimals=decimals)
    expected = brute_force(scores, relevant, exclude, ks)
    assert expected["skipped_users"] > 0 and expected["conflicts"] > 0  # the case is rich enough
    got = ranking_metrics(scores, relevant, exclude, ks=ks)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("seed", "decimals"), [(0, 1), (3, None)])
def test_matches_brute_force_with_exclude_sets_kept_rankable(seed: int, decimals) -> None:
    scores, relevant, exclude = random_case(seed, decimals=decimals)
    expected = brute_force(scores, relevant, exclude, KS_SMALL, mask_exclude=False)
    assert expected["repeat_target_users"] > 0  # some excluded relevant items can be hit
    got = ranking_metrics(scores, relevant, exclude, ks=KS_SMALL, mask_exclude=False)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # Nothing masked: the same as passing no exclude sets, apart from the repeat counts.
    plain = ranking_metrics(scores, relevant, None, ks=KS_SMALL)
    assert (plain["repeat_target_users"], plain["conflicts"]) == (0.0, 0.0)
    counts = {"repeat_target_users", "conflicts"}
    assert {k: v for k, v in got.items() if k not in counts} == pytest.approx(
        {k: v for k, v in plain.items() if k not in counts}, rel=1e-12, abs=1e-15
    )


def test_matches_brute_force_float32_without_exclusions() -> None:
    scores, relevant, _ = random_case(7, dtype=np.float32)
    got = ranking_metrics(scores, relevant, None, ks=KS)
    assert got == pytest.approx(brute_force(scores, relevant, None, KS), rel=1e-12, abs=1e-15)


def test_streaming_batches_equal_one_shot() -> None:
    scores, relevant, exclude = random_case(4, num_users=23)
    acc = RankingMetrics(ks=KS)
    for start in range(0, 23, 5):  # 5, 5, 5, 5, 3 users
        stop = start + 5
        acc.update(scores[start:stop], relevant[start:stop], exclude[start:stop])
    one_shot = ranking_metrics(scores, relevant, exclude, ks=KS)
    assert acc.result() == pytest.approx(one_shot, rel=1e-12, abs=1e-15)
    acc.reset()
    assert acc.result()["users"] == 0.0
