"""Loads every real dataset from the shared folder and checks the published counts."""

from __future__ import annotations

import pytest

from tfrec.data.loaders import load_dataset

pytestmark = pytest.mark.slow


def test_ml_100k(shared_datasets):
    inter = load_dataset("ml-100k", data_dir=shared_datasets)
    assert (len(inter), inter.num_users, inter.num_items) == (100_000, 943, 1_682)
    assert inter.notes == []  # no duplicates to drop in the original file
    genres = {g for gs in inter.items["genres"] for g in gs}
    assert len(genres) == 19
    assert len(inter.items) == 1_682 and len(inter.users) == 943
    assert sorted(inter.frame["rating"].unique().tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert inter.frame["timestamp"].min() == 874_724_710


def test_ml_latest_small(shared_datasets):
    inter = load_dataset("ml-latest-small", data_dir=shared_datasets)
    assert (len(inter), inter.num_users, inter.num_items) == (100_836, 610, 9_724)
    assert len(inter.items) == 9_742
    assert inter.frame["rating"].min() == 0.5


def test_beauty_s3rec(shared_datasets):
    inter = load_dataset("beauty", data_dir=shared_datasets)
    assert (len(inter), inter.num_users, inter.num_items) == (198_502, 22_363, 12_101)
    assert inter.frame.groupby("user_id").size().min() == 5


def test_beauty_bert4rec(shared_datasets):
    inter = load_dataset("beauty-bert4rec", data_dir=shared_datasets)
    assert (len(inter), inter.num_users, inter.num_items) == (353_962, 40_226, 54_542)
