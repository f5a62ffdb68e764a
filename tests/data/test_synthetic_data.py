"""The synthetic generator is deterministic and carries the structure it promises."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from tfrec.data.synthetic import genre_name, make_synthetic, successor


def item_index(item_id: str) -> int:
    return int(item_id[1:])


def test_deterministic_for_a_seed():
    a = make_synthetic(num_users=30, seed=3)
    b = make_synthetic(num_users=30, seed=3)
    c = make_synthetic(num_users=30, seed=4)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.items, b.items)
    assert not a.frame.equals(c.frame)


def test_successor_rule():
    # 10 items, 4 genres: genre 1 holds items 1, 5, 9 -> 1->5, 5->9, 9->1 (wrap)
    assert [successor(i, 10, 4) for i in (1, 5, 9)] == [5, 9, 1]
    assert successor(7, 10, 4) == 3  # genre 3 holds 3, 7


def test_shapes_lengths_times_and_ratings():
    inter = make_synthetic(num_users=50, num_items=40, min_len=4, max_len=9, seed=1)
    assert inter.num_users == 50 and inter.has_ratings and inter.has_timestamps
    sizes = inter.frame.groupby("user_id").size()
    assert sizes.min() >= 4 and sizes.max() <= 9
    for _, group in inter.frame.groupby("user_id"):
        assert np.all(np.diff(group["timestamp"].to_numpy()) > 0)
        assert group["item_id"].is_unique  # never repeats an item
    assert set(inter.frame["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_planted_markov_chain_beats_popularity():
    inter = make_synthetic(num_users=200, seed=0)
    follows, total = 0, 0
    bigrams: Counter = Counter()
    popularity: Counter = Counter()
    hits_markov = hits_pop = 0
    for _, group in inter.frame.groupby("user_id"):
        seq = [item_index(i) for i in group["item_id"]]
        for a, b in pairwise(seq):
            follows += b == successor(a, 60, 4)
            total += 1
        for a, b in pairwise(seq[:-1]):  # training transitions only
            bigrams[(a, b)] += 1
        popularity.update(seq[:-1])
    # With p_successor=0.7 most transitions follow the chain; chance would be 1/60.
    assert follows / total > 0.5
    top_pop = {i for i, _ in popularity.most_common(5)}
    for _, group in inter.frame.groupby("user_id"):
        seq = [item_index(i) for i in group["item_id"]]
        last, target = seq[-2], seq[-1]
        ranked = sorted(range(60), key=lambda j: -bigrams[(last, j)])[:5]
        hits_markov += target in ranked
        hits_pop += target in top_pop
    assert hits_markov > 2 * hits_pop


def test_ratings_follow_user_genre_affinity_and_titles_carry_genre():
    inter = make_synthetic(num_users=100, seed=2)
    prefs = dict(zip(inter.users["user_id"], inter.users["genres"], strict=True))
    assert all(1 <= len(g) <= 2 for g in prefs.values())
    item_genre = dict(zip(inter.items["item_id"], inter.items["genres"], strict=True))
    liked = np.array(
        [
            item_genre[i][0] in prefs[u]
            for u, i in zip(inter.frame["user_id"], inter.frame["item_id"], strict=True)
        ]
    )
    ratings = inter.frame["rating"].to_numpy()
    # preferred genre: mean ~4, others ~2 (round(2 + 2*liked + noise))
    assert ratings[liked].mean() - ratings[~liked].mean() > 1.5
    assert liked.mean() > 0.7  # users mostly consume their genres
    row = inter.items.set_index("item_id").loc["i17"]
    assert row["title"] == f"Item 17 {genre_name(1)}" == "Item 17 rock"
    assert row["genres"] == ["rock"]


def test_cold_start_items_are_in_the_catalogue_only():
    inter = make_synthetic(num_users=40, num_items=20, num_cold_items=5, max_len=10, seed=0)
    assert len(inter.items) == 25
    interacted = set(inter.frame["item_id"])
    assert {f"i{i}" for i in range(20, 25)}.isdisjoint(interacted)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_users": 0}, "num_users must be >= 1, got 0"),
        ({"num_genres": 70}, r"num_genres must be in \[1, num_items=60\], got 70"),
        ({"min_len": 9, "max_len": 3}, "need 1 <= min_len <= max_len"),
        ({"min_len": 61, "max_len": 70}, "min_len=61 exceeds num_items=60"),
        ({"p_successor": 0.8, "p_noise": 0.3}, "p_successor \\+ p_noise <= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic(**kwargs)
