"""item_stratified_split: per-item cuts, determinism, cold drops, errors; its NDCG definition."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions
from tfrec.data.splits import item_stratified_split
from tfrec.evaluation.metrics import ranking_metrics

# Raters per item: u 8, t 8, v 5, w 4, z 3, y 2, x 1 (only "solo", who rates nothing else).
RATERS = {
    "u": "abcdefgh",
    "t": "abcdefgh",
    "v": "abcde",
    "w": "abcd",
    "z": "abc",
    "y": "ab",
}
# Kept rows (train + valid) per item at ratio .75: r/n <= .75 <=> r <= floor(.75 n).
KEPT_75 = {"u": 6, "t": 6, "v": 3, "w": 3, "z": 2, "y": 1}  # x: floor(.75) = 0
# Train rows per item at ratio .75 - valid .25 = .5: floor(n / 2).
TRAIN_50 = {"u": 4, "t": 4, "v": 2, "w": 2, "z": 1, "y": 1}


def rows(inter: Interactions | None) -> set[tuple[str, str]]:
    if inter is None:
        return set()
    return set(zip(inter.frame["user_id"], inter.frame["item_id"], strict=True))


def per_item(inter: Interactions) -> dict[str, int]:
    return inter.frame.groupby("item_id").size().to_dict()


def log() -> Interactions:
    pairs = [(user, item) for item, users in RATERS.items() for user in users]
    pairs.append(("solo", "x"))
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    frame["timestamp"] = np.arange(len(frame))
    return Interactions.from_frame(frame, name="tiny", has_timestamps=True)


def expected_test(source: Interactions, kept: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Held-out rows whose user and item both occur in the kept rows (the drop rule)."""
    users = {u for u, _ in kept}
    items = {i for _, i in kept}
    return {(u, i) for u, i in rows(source) - kept if u in users and i in items}


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_per_item_sizes_and_cold_drops(seed):
    source = log()
    split = item_stratified_split(source, ratio=0.75, seed=seed)
    assert split.protocol == "item_stratified"
    assert split.valid is None
    assert per_item(split.train) == KEPT_75
    train = rows(split.train)
    # x (one rating) is test-only by the cut, then dropped with its user: neither is in train.
    assert ("solo", "x") not in rows(split.test)
    assert rows(split.test) == expected_test(source, train)
    assert not rows(split.test) & train
    assert "1 item(s) with one rating are test-only" in split.notes[0]
    assert any("absent from train + valid" in note for note in split.notes)


def test_validation_share_carved_per_item_and_test_rows_kept():
    source = log()
    plain = item_stratified_split(source, ratio=0.75, seed=3)
    split = item_stratified_split(source, ratio=0.75, valid_ratio=0.25, seed=3)
    assert per_item(split.train) == TRAIN_50
    kept = rows(split.train) | rows(split.valid)
    # Same keys: the kept (train + valid) rows are the same rows as without validation,
    # so the valid part is floor(.75 n) - floor(n / 2) per item: u 2, t 2, v 1, w 1, z 1, y 0.
    assert kept == rows(plain.train)
    assert per_item(split.valid) == {"u": 2, "t": 2, "v": 1, "w": 1, "z": 1}
    assert not rows(split.train) & rows(split.valid)
    assert rows(split.test) == rows(plain.test)


def test_seeded_determinism():
    first = item_stratified_split(log(), ratio=0.75, valid_ratio=0.25, seed=7)
    again = item_stratified_split(log(), ratio=0.75, valid_ratio=0.25, seed=7)
    other = item_stratified_split(log(), ratio=0.75, valid_ratio=0.25, seed=8)
    for name in ("train", "valid", "test"):
        assert getattr(first, name).frame.equals(getattr(again, name).frame)
    assert rows(first.train) != rows(other.train)


def test_users_absent_from_train_are_dropped_from_test():
    # "b" rates only y (n=2: one train row, one test row) and "c" only z with "a" (n=2).
    # Per item one of the two raters is held out; a held-out "b"/"c" row is dropped.
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "c"],
            "item_id": ["p", "y", "z", "y", "z"],
            "timestamp": [1, 2, 3, 4, 5],
        }
    )
    source = Interactions.from_frame(frame, name="pair", has_timestamps=True)
    for seed in range(6):
        split = item_stratified_split(source, ratio=0.75, seed=seed)
        train_users = set(split.train.frame["user_id"])
        assert set(split.test.frame["user_id"]) <= train_users
        assert rows(split.test) == expected_test(source, rows(split.train))


def test_bad_ratios():
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\), got 1.0"):
        item_stratified_split(log(), ratio=1.0)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\), got 0"):
        item_stratified_split(log(), ratio=0)
    with pytest.raises(ValueError, match=r"valid_ratio must be in \[0, ratio = 0.75\), got 0.75"):
        item_stratified_split(log(), ratio=0.75, valid_ratio=0.75)
    with pytest.raises(ValueError, match=r"valid_ratio must be in \[0, ratio = 0.5\), got -0.1"):
        item_stratified_split(log(), ratio=0.5, valid_ratio=-0.1)


def test_data_config_dispatch():
    config = DataConfig(split="item_stratified", train_ratio=0.75, valid_fraction=0.25, seed=3)
    split = config.make_split(log())
    assert split.protocol == "item_stratified"
    assert per_item(split.train) == TRAIN_50
    with pytest.raises(ValueError, match=r"valid_fraction=0\.8 must be below train_ratio=0\.75"):
        DataConfig(split="item_stratified", train_ratio=0.75, valid_fraction=0.8)


def test_ndcg_matches_microsoft_definition():
    # microsoft/recommenders ndcg_at_k: binary gains, natural-log discount 1/ln(1 + rank),
    # ideal DCG over min(|rel|, k) hits; seen (history) items removed before ranking.
    # Items 2..7; history {7} has the top score; relevant {4, 5, 6}; k = 2.
    # Ranking without 7: 3 (miss), 4 (hit), ... -> DCG = 1/ln 3; IDCG = 1/ln 2 + 1/ln 3.
    scores = np.array([[0.0, 0.0, 0.0, 8.0, 7.0, 1.0, 0.5, 9.0]])
    got = ranking_metrics(scores, [np.array([4, 5, 6])], [np.array([7])], ks=[2])
    assert got["ndcg@2"] == pytest.approx((1 / math.log(3)) / (1 / math.log(2) + 1 / math.log(3)))
    assert got["precision@2"] == pytest.approx(1 / 2)  # hits / k
    assert got["recall@2"] == pytest.approx(1 / 3)  # hits / |rel|
    assert got["map@2"] == pytest.approx((1 / 2) / 2)  # precision at the hit / min(|rel|, k)
