"""Loaders on tiny files written in each real format (no real data needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfrec.config import choices
from tfrec.data.download import DatasetNotFoundError
from tfrec.data.interactions import Interactions
from tfrec.data.loaders import DATASETS, load_dataset, load_interactions_file
from tfrec.names import DatasetName

GENRES = "unknown|0\nAction|1\nComedy|2\n\n"


def write_ml100k(folder: Path, data: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(
        data
        if data is not None
        # user 2 rated item 10 twice at the same time (exact duplicate -> dropped)
        else "1\t10\t5\t100\n1\t20\t3\t50\n2\t10\t4\t70\n2\t10\t4\t70\n"
    )
    (folder / "u.genre").write_text(GENRES)
    # Latin-1 title: 0xe9 is "é"
    (folder / "u.item").write_bytes(
        b"10|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|0\n"
        b"20|Two Genres (1996)|01-Jan-1996||http://y|0|1|1\n"
        b"30|Never Rated (1997)|||http://z|1|0|0\n"
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|T8H1N\n")
    return folder


def test_ml100k_shared_layout_items_users_and_duplicate_policy(tmp_path):
    write_ml100k(tmp_path / "ml-100k")
    inter = load_dataset("ml-100k", data_dir=tmp_path)
    # 4 rows minus 1 exact duplicate = 3; users 1, 2; items 10, 20
    assert (len(inter), inter.num_users, inter.num_items) == (3, 2, 2)
    assert inter.has_ratings and inter.has_timestamps
    # sorted by (user, timestamp): user 1 -> (20 @50, 10 @100), user 2 -> (10 @70)
    assert inter.frame["item_id"].tolist() == ["20", "10", "10"]
    assert inter.frame["timestamp"].tolist() == [50, 100, 70]
    assert inter.frame["rating"].dtype == np.float32
    assert inter.frame["rating"].tolist() == [3.0, 5.0, 4.0]
    assert any("1 exact duplicate" in note for note in inter.notes)
    items = inter.items.set_index("item_id")
    assert items.loc["10", "title"] == "Café (1995)"
    assert items.loc["20", "genres"] == ["Action", "Comedy"]
    assert items.loc["30", "genres"] == ["unknown"]  # cold-start item kept in the catalogue
    assert inter.users["zip"].tolist() == ["85711", "T8H1N"]
    assert inter.users["age"].tolist() == [24, 53]


def test_ml100k_flat_layout_and_env_var(tmp_path, monkeypatch):
    write_ml100k(tmp_path)  # files directly in the data dir
    monkeypatch.setenv("TFREC_DATA_DIR", str(tmp_path))
    inter = load_dataset("ml-100k")
    assert len(inter) == 3


def test_repeated_consumption_at_different_times_is_kept(tmp_path):
    write_ml100k(tmp_path, data="1\t10\t5\t100\n1\t10\t4\t200\n")
    inter = load_dataset("ml-100k", data_dir=tmp_path)
    assert inter.frame["timestamp"].tolist() == [100, 200]
    assert inter.notes == []


def test_ml_latest_small_quoted_titles_and_no_genres(tmp_path):
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,0.5,964981247\n2,2,3.5,1\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,La cravate (1957),(no genres listed)\n"
        "3,Unrated (2000),Drama\n"
    )
    inter = load_dataset("ml-latest-small", data_dir=tmp_path)
    assert (len(inter), inter.num_users, inter.num_items, len(inter.items)) == (3, 2, 2, 3)
    items = inter.items.set_index("item_id")
    assert items.loc["1", "title"] == "American President, The (1995)"
    assert items.loc["1", "genres"] == ["Comedy", "Drama", "Romance"]
    assert items.loc["2", "genres"] == []
    assert inter.frame["rating"].tolist() == [0.5, 4.0, 3.5]  # user 1 sorted by time


def test_beauty_s3rec_positions_as_timestamps(tmp_path):
    folder = tmp_path / "amazon-beauty-s3rec"
    folder.mkdir()
    (folder / "Beauty.txt").write_text("1 5 6 7\n2 6 8\n")
    inter = load_dataset("beauty", data_dir=tmp_path)
    assert inter.frame["user_id"].tolist() == ["1", "1", "1", "2", "2"]
    assert inter.frame["item_id"].tolist() == ["5", "6", "7", "6", "8"]
    assert inter.frame["timestamp"].tolist() == [0, 1, 2, 0, 1]
    assert not inter.has_ratings and not inter.has_timestamps
    assert inter.frame["rating"].isna().all()


def test_beauty_bert4rec_pairs(tmp_path):
    folder = tmp_path / "amazon-beauty-bert4rec"
    folder.mkdir()
    (folder / "beauty.txt").write_text("1 3\n1 2\n2 2\n1 9\n")
    inter = load_dataset("beauty-bert4rec", data_dir=tmp_path)
    # user 1's rows keep file order: 3, 2, 9 at positions 0, 1, 2
    assert inter.frame["item_id"].tolist() == ["3", "2", "9", "2"]
    assert inter.frame["timestamp"].tolist() == [0, 1, 2, 0]


def test_generic_csv_with_datetime_strings_and_items(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "who,what,when,stars\n"
        "alice,a,2020-01-01 00:00:10,4\n"
        "alice,b,2020-01-01 00:00:00,5\n"
        "bob,a,2020-01-02,1.5\n"
    )
    items = tmp_path / "items.csv"
    items.write_text('what,name,tags\na,"Alpha, the",x;y\nb,Beta,\nc,Gamma,z\n')
    inter = load_dataset(
        "csv",
        path=path,
        user_col="who",
        item_col="what",
        time_col="when",
        rating_col="stars",
        items_path=items,
        title_col="name",
        genres_col="tags",
        genres_sep=";",
    )
    # 2020-01-01T00:00:00Z = 1577836800
    assert inter.frame["timestamp"].tolist() == [1577836800, 1577836810, 1577836800 + 86400]
    assert inter.frame["item_id"].tolist() == ["b", "a", "a"]
    assert inter.frame["rating"].tolist() == [5.0, 4.0, 1.5]
    assert inter.name == "events"
    table = inter.items.set_index("item_id")
    assert table.loc["a", "title"] == "Alpha, the"
    assert table.loc["a", "genres"] == ["x", "y"]
    assert table.loc["b", "genres"] == []


def test_generic_csv_without_time_uses_row_order(tmp_path):
    path = tmp_path / "e.tsv"
    path.write_text("u\t i \nx\t3\nx\t1\ny\t2\n")  # header names are stripped
    inter = load_interactions_file(path, "u", "i")
    assert inter.frame["item_id"].tolist() == ["3", "1", "2"]
    assert inter.frame["timestamp"].tolist() == [0, 1, 0]
    assert not inter.has_timestamps and not inter.has_ratings


def test_generic_parquet_with_datetime_and_int_ids(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame(
        {
            "user": [7, 7, 8],
            "item": [1, 2, 1],
            "t": pd.to_datetime(
                ["1970-01-01 00:00:05", "1970-01-01 00:00:03", "1970-01-02 00:00:00"]
            ),
        }
    ).to_parquet(path)
    inter = load_interactions_file(path, "user", "item", time_col="t")
    assert inter.frame["user_id"].tolist() == ["7", "7", "8"]
    assert inter.frame["item_id"].tolist() == ["2", "1", "1"]
    assert inter.frame["timestamp"].tolist() == [3, 5, 86400]


def test_k_core_filter_is_iterative_and_reported(tmp_path):
    # u1: a b c, u2: a b, u3: c. min_user=2 drops u3 -> c has 1 row (u1) ->
    # min_item=2 drops c -> u1 has a b (2 rows), u2 a b: stable.
    path = tmp_path / "e.csv"
    path.write_text("u,i\nu1,a\nu1,b\nu1,c\nu2,a\nu2,b\nu3,c\n")
    inter = load_interactions_file(path, "u", "i", min_user_interactions=2, min_item_interactions=2)
    assert sorted(zip(inter.frame["user_id"], inter.frame["item_id"], strict=True)) == [
        ("u1", "a"),
        ("u1", "b"),
        ("u2", "a"),
        ("u2", "b"),
    ]
    assert len(inter.notes) == 2
    assert "1 user(s) with fewer than 2" in inter.notes[0]
    assert "1 item(s) with fewer than 2" in inter.notes[1]


def test_k_core_removing_everything_is_an_error(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("u,i\nu1,a\n")
    with pytest.raises(ValueError, match="removed every interaction"):
        load_interactions_file(path, "u", "i", min_user_interactions=5)


def test_registry_and_argument_errors(tmp_path):
    # every name of the one list (tfrec.names.DatasetName) has a loader, and no other
    assert sorted(DATASETS) == sorted(choices(DatasetName))
    assert all(info.description for info in DATASETS.values())
    with pytest.raises(ValueError, match=r"unknown dataset 'ml-1m'; expected one of"):
        load_dataset("ml-1m")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['user_column'\]"):
        load_dataset("csv", path="x.csv", user_column="u")
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("csv")


def test_csv_relative_path_resolved_in_data_dir(tmp_path):
    (tmp_path / "e.csv").write_text("u,i\nx,1\n")
    inter = load_dataset("csv", data_dir=tmp_path, path="e.csv", user_col="u", item_col="i")
    assert len(inter) == 1


def test_synthetic_via_registry_and_filter():
    inter = load_dataset("synthetic", num_users=20, num_items=12, min_user_interactions=6, seed=1)
    assert isinstance(inter, Interactions)
    assert inter.frame.groupby("user_id").size().min() >= 6


def test_missing_file_error_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("ml-100k", data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path / "ml-100k" / "u.data") in message
    assert str(tmp_path / "u.data") in message
    for needle in (
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "--download",
        "--data-dir",
        "TFREC_DATA_DIR",
    ):
        assert needle in message
    with pytest.raises(DatasetNotFoundError, match=r"(?s)Beauty\.txt.*RUCAIBox/CIKM2020-S3Rec"):
        load_dataset("beauty", data_dir=tmp_path, download=True)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("beauty-bert4rec", data_dir=tmp_path)
    assert (
        "save data/beauty.txt from the BERT4Rec repository (github.com/FeiSun/BERT4Rec) "
        "as amazon-beauty-bert4rec/beauty.txt in the data directory"
    ) in str(info.value)


def test_notes_are_independent_between_copies():
    frame = pd.DataFrame({"user_id": ["a"], "item_id": ["x"]})
    first = Interactions.from_frame(frame)
    second = first.with_frame(first.frame)
    second.add_note("only here")
    assert first.notes == [] and second.notes == ["only here"]
    assert math.isnan(first.frame["rating"].iloc[0])
