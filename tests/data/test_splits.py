"""Splits: disjoint, covering, per-user properties, deterministic, and they report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tfrec.data.interactions import Interactions
from tfrec.data.splits import Split, leave_one_out, random_split_per_user, temporal_split
from tfrec.data.synthetic import make_synthetic


def rows(inter: Interactions | None) -> list[tuple]:
    if inter is None:
        return []
    f = inter.frame
    return list(zip(f["user_id"], f["item_id"], f["timestamp"], strict=True))


def check_partition(split: Split, source: Interactions) -> None:
    parts = [rows(p) for p in (split.train, split.valid, split.test)]
    combined = sorted(r for part in parts for r in part)
    assert combined == sorted(rows(source))  # coverage, and no row twice (disjoint)
    for part in split.parts().values():
        f = part.frame
        assert f.equals(f.sort_values(["user_id", "timestamp"], kind="stable"))


def tiny() -> Interactions:
    # a: 4 rows, b: 2 rows, c: 1 row. a's last two timestamps tie at 30 (input order wins).
    frame = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "b", "c"],
            "item_id": ["x", "y", "z", "w", "x", "y", "x"],
            "timestamp": [10, 20, 30, 30, 5, 6, 1],
        }
    )
    return Interactions.from_frame(frame, name="tiny", has_timestamps=True)


def test_leave_one_out_by_hand():
    inter = tiny()
    split = leave_one_out(inter)
    check_partition(split, inter)
    # a: test = w (last of the tie, input order), valid = z, train = x, y
    # b and c have < 3 rows: everything in train, reported.
    assert rows(split.test) == [("a", "w", 30)]
    assert rows(split.valid) == [("a", "z", 30)]
    assert rows(split.train) == [
        ("a", "x", 10),
        ("a", "y", 20),
        ("b", "x", 5),
        ("b", "y", 6),
        ("c", "x", 1),
    ]
    assert split.protocol == "leave_one_out"
    assert split.notes == [
        "leave_one_out: 2 user(s) with fewer than 3 interactions kept entirely in train "
        "(nothing held out for them)"
    ]


def test_leave_one_out_without_validation():
    split = leave_one_out(tiny(), validation=False)
    assert split.valid is None
    # a: test w; b (2 rows) now splittable: test y; c (1 row) stays in train
    assert rows(split.test) == [("a", "w", 30), ("b", "y", 6)]
    assert "1 user(s) with fewer than 2" in split.notes[0]


def test_leave_one_out_per_user_properties_on_synthetic():
    inter = make_synthetic(num_users=40, seed=5)
    split = leave_one_out(inter)
    check_partition(split, inter)
    assert split.test.num_users == split.valid.num_users == 40 == len(split.test)
    last_train = split.train.frame.groupby("user_id")["timestamp"].max()
    valid_t = split.valid.frame.set_index("user_id")["timestamp"]
    test_t = split.test.frame.set_index("user_id")["timestamp"]
    assert (last_train < valid_t.loc[last_train.index]).all()
    assert (valid_t < test_t.loc[valid_t.index]).all()


def test_temporal_split_by_hand():
    # timestamps 1..10, one row each: test_fraction .2 -> t >= 9; valid .3 -> 6 <= t < 9
    frame = pd.DataFrame(
        {"user_id": list("aabbccddee"), "item_id": list("pqrstuvwxy"), "timestamp": range(1, 11)}
    )
    inter = Interactions.from_frame(frame, name="t", has_timestamps=True)
    split = temporal_split(inter, test_fraction=0.2, valid_fraction=0.3)
    check_partition(split, inter)
    assert sorted(split.test.frame["timestamp"]) == [9, 10]
    assert sorted(split.valid.frame["timestamp"]) == [6, 7, 8]
    assert split.train.frame["timestamp"].max() == 5
    # user e (9, 10) is only in test; user d (7, 8) only in valid -> reported as cold
    assert any("test has 1 user(s)" in n for n in split.notes)
    assert any("valid has 1 user(s)" in n for n in split.notes)


def test_temporal_ties_stay_on_one_side():
    frame = pd.DataFrame(
        {"user_id": list("abcd"), "item_id": list("wxyz"), "timestamp": [1, 2, 2, 2]}
    )
    inter = Interactions.from_frame(frame, has_timestamps=True)
    split = temporal_split(inter, test_fraction=0.25)
    # the cut is timestamp 2, which three rows share: all three are test
    assert sorted(split.test.frame["item_id"]) == ["x", "y", "z"] and split.valid is None


def test_temporal_errors():
    inter = tiny()
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        temporal_split(inter, test_fraction=1.5)
    with pytest.raises(ValueError, match="valid_fraction must be in"):
        temporal_split(inter, test_fraction=0.5, valid_fraction=0.5)
    positions = Interactions.from_frame(inter.frame, has_timestamps=False, name="seq")
    with pytest.raises(ValueError, match="seq has no real timestamps"):
        temporal_split(positions)
    ties = Interactions.from_frame(inter.frame.assign(timestamp=7), has_timestamps=True)
    with pytest.raises(ValueError, match="leaves no training rows"):
        temporal_split(ties, test_fraction=0.1)


def test_random_split_per_user_counts_and_determinism():
    inter = make_synthetic(num_users=30, min_len=5, max_len=12, seed=2)
    split = random_split_per_user(inter, ratio=0.6, valid_ratio=0.2, seed=7)
    check_partition(split, inter)
    sizes = inter.frame.groupby("user_id").size()
    for part, expected in (
        (split.train, np.rint(0.6 * sizes)),
        (split.valid, np.rint(0.8 * sizes) - np.rint(0.6 * sizes)),
    ):
        got = part.frame.groupby("user_id").size().reindex(sizes.index, fill_value=0)
        assert (got == expected).all()
    again = random_split_per_user(inter, ratio=0.6, valid_ratio=0.2, seed=7)
    other = random_split_per_user(inter, ratio=0.6, valid_ratio=0.2, seed=8)
    assert rows(again.test) == rows(split.test)
    assert rows(other.test) != rows(split.test)


def test_random_split_by_hand_and_reporting():
    # a has 4 rows: round(.75*4)=3 train, 1 test; c has 1 row: round(.75)=1 -> no test, reported;
    # b has 2 rows: round(1.5)=2 (half to even) -> no test either.
    split = random_split_per_user(tiny(), ratio=0.75, seed=0)
    assert split.valid is None
    assert split.train.frame.groupby("user_id").size().to_dict() == {"a": 3, "b": 2, "c": 1}
    assert split.test.frame["user_id"].tolist() == ["a"]
    assert "2 user(s) have too few interactions for a test row" in split.notes[0]
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\), got 0"):
        random_split_per_user(tiny(), ratio=0)
    with pytest.raises(ValueError, match="valid_ratio must be in"):
        random_split_per_user(tiny(), ratio=0.5, valid_ratio=0.6)
