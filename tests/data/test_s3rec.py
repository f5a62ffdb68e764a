"""The S3-Rec release reader: sequences, attributes as genres, the named releases, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from testing_utils import raises_data_error as raises

from tfrec.data.config import DataConfig
from tfrec.data.loaders import load_dataset
from tfrec.data.s3rec import RELEASES, load_s3rec, read_attributes, read_sequences


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """User 1 saw 5, 6, 7, 9; user 2 saw 6, 8, 5; item 8 has no attribute entry."""
    sequences = write(tmp_path / "Toy.txt", "1 5 6 7 9\n2 6 8 5\n")
    attributes = write(
        tmp_path / "Toy_item2attributes.json",
        json.dumps({"5": [3, 1, 3], "6": [1], "7": [], "9": [2, 3], "11": [4]}),
    )
    return sequences, attributes


def test_sequences_use_the_position_as_time(pair: tuple[Path, Path]) -> None:
    inter = load_s3rec(pair[0])
    assert inter.name == "Toy" and inter.items is None
    assert inter.frame["user_id"].tolist() == ["1"] * 4 + ["2"] * 3
    assert inter.frame["item_id"].tolist() == ["5", "6", "7", "9", "6", "8", "5"]
    assert inter.frame["timestamp"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert not inter.has_ratings and not inter.has_timestamps
    assert inter.frame["rating"].isna().all()


def test_attributes_become_genres_of_the_item_table(pair: tuple[Path, Path]) -> None:
    inter = load_s3rec(*pair)
    items = inter.items.set_index("item_id")
    # every item of the file, cold item 11 included; repeats removed in first-seen order
    assert sorted(items.index) == ["11", "5", "6", "7", "9"]
    assert items.loc["5", "genres"] == ["3", "1"]
    assert items.loc["7", "genres"] == []
    assert (items["title"] == "").all()  # the release has no titles
    # item 8 (one interaction, user 2) has no attribute entry
    assert inter.notes == ["1 interaction(s) refer to items absent from the item table"]


def test_attributes_feed_the_candidate_towers_multi_hot_genres(pair: tuple[Path, Path]) -> None:
    from tfrec.data.item_features import build_item_feature_tables
    from tfrec.data.vocab import IdVocabulary

    inter = load_s3rec(*pair)
    vocab = IdVocabulary(["5", "6", "7", "8", "9"])  # indices 2..6
    tables = build_item_feature_tables(inter.items, vocab)
    assert tables.genre_names == ["1", "2", "3", "4"]
    assert tables.titles is None
    expected = np.array(
        [
            [0, 0, 0, 0],  # padding
            [0, 0, 0, 0],  # out-of-vocabulary
            [1, 0, 1, 0],  # 5: attributes 3, 1
            [1, 0, 0, 0],  # 6: 1
            [0, 0, 0, 0],  # 7: none
            [0, 0, 0, 0],  # 8: not in the attribute file
            [0, 1, 1, 0],  # 9: 2, 3
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(tables.genres, expected)


def test_leave_one_out_on_s3rec_sequences(pair: tuple[Path, Path]) -> None:
    config = DataConfig(dataset="s3rec", path=str(pair[0]), attributes_path=str(pair[1]))
    split = config.make_split(config.load())
    by_user = {
        part: getattr(split, part).frame.groupby("user_id")["item_id"].apply(list).to_dict()
        for part in ("train", "valid", "test")
    }
    # user 1: 5 6 | 7 | 9; user 2: 6 | 8 | 5
    assert by_user["train"] == {"1": ["5", "6"], "2": ["6"]}
    assert by_user["valid"] == {"1": ["7"], "2": ["8"]}
    assert by_user["test"] == {"1": ["9"], "2": ["5"]}
    assert split.train.items is not None  # the item features travel with every part


def test_registry_and_config_resolve_paths(pair: tuple[Path, Path]) -> None:
    sequences, attributes = pair
    relative = load_dataset(
        "s3rec", data_dir=sequences.parent, path=sequences.name, attributes_path=attributes.name
    )
    assert (len(relative), len(relative.items)) == (7, 5)
    with pytest.raises(ValueError, match="dataset 's3rec' needs path="):
        load_dataset("s3rec")
    with pytest.raises(ValueError, match=r"DataConfig\.path is required for dataset 's3rec'"):
        DataConfig(dataset="s3rec").load()
    with pytest.raises(ValueError, match=r"attributes_path='a\.json' is read only by dataset"):
        DataConfig(dataset="beauty", attributes_path="a.json")
    with pytest.raises(FileNotFoundError, match=r"attribute file .*nope\.json not found"):
        load_s3rec(sequences, sequences.parent / "nope.json")


def test_cli_attributes_flag_reaches_the_data_config() -> None:
    import argparse

    from tfrec.cli import train
    from tfrec.cli.train import experiment_config

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers(dest="command"))
    argv = ["train", "--dataset", "s3rec", "--path", "T.txt", "--output-dir", "x"]
    args = parser.parse_args([*argv, "--attributes-path", "T.json"])
    _, config = experiment_config(args)
    assert (config.data.dataset, config.data.path, config.data.attributes_path) == (
        "s3rec",
        "T.txt",
        "T.json",
    )
    assert parser.parse_args([*argv, "--attributes", "U.json"]).attributes_path == "U.json"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("1 5 6\n2 7 x8\n", ["line 2, field 3 (item id): got 'x8'; expected an integer id"]),
        ("u1 5 6\n", ["line 1, field 1 (user id): got 'u1'; expected an integer id"]),
        ("1 5 6\n\n2 7\n", ["line 2: the line is empty; expected 'user_id item_1 item_2 ...'"]),
        ("1 5\n2\n", ["line 2: found only 1 field; expected a user id followed by at least one"]),
        ("1 5\n2 6\n1 7\n", ["line 3: user 1 already has line 1; expected", "one line per user"]),
        ("", ["no data (the file is empty)"]),
    ],
)
def test_malformed_sequence_lines_are_located(tmp_path: Path, text: str, needles: list[str]):
    path = write(tmp_path / "Bad.txt", text)
    raises(lambda: read_sequences(path), f"{path}:", *needles)


def test_non_utf8_sequence_file_is_located(tmp_path: Path) -> None:
    path = tmp_path / "Bad.txt"
    path.write_bytes(b"1 5 6\n2 7 \xff\n")
    raises(lambda: read_sequences(path), f"{path}", "line 2")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[[1, 2]]", ["line 1: got a JSON array; expected a JSON object mapping each item id"]),
        ('\n\n"x"', ["line 3: got a JSON str; expected a JSON object"]),
        # line 2 is ' "2": [2,}': a value is expected at the "}", column 10
        ('{"1": [1],\n "2": [2,}', ["line 2, column 10: not valid JSON", "expected a JSON object"]),
        (
            '{"1": [1],\n "2": [2, "a"]}',
            ["line 2, column 2: item '2': got [2, \"a\"]; expected a list of non-negative integer"],
        ),
        ('{"1": 4}', ["line 1, column 2: item '1': got 4; expected a list of non-negative"]),
        ('{"1": [true]}', ["item '1': got [true]; expected a list of non-negative integer"]),
        ('{"1": [1],\n"b7": [2]}', ["line 2, column 1: got item id 'b7'; expected an integer"]),
        ('{"1": [1],\n"1": [2]}', ["line 2, column 1: item '1' is given again; expected each"]),
    ],
)
def test_malformed_attribute_files_are_located(tmp_path: Path, text: str, needles: list[str]):
    path = write(tmp_path / "Bad_item2attributes.json", text)
    raises(lambda: read_attributes(path), f"{path}:", *needles)


def test_named_release_reads_attributes_beside_it_and_warns_on_counts(tmp_path, caplog) -> None:
    folder = tmp_path / "lastfm-s3rec"
    write(folder / "LastFM.txt", "1 1 2 3\n2 2 3\n")
    write(folder / "LastFM_item2attributes.json", '{"1": [7, 7], "2": [8], "3": [7, 9]}')
    with caplog.at_level(logging.WARNING, logger="tfrec.data.s3rec"):
        inter = load_dataset("lastfm", data_dir=tmp_path)
    assert (inter.name, len(inter), inter.num_users, inter.num_items) == ("lastfm", 5, 2, 3)
    assert inter.items.set_index("item_id").loc["1", "genres"] == ["7"]
    warnings = [r.getMessage() for r in caplog.records]
    # 5 rows / 2 users / 3 items / 3 attribute items / 3 attributes against the published ones
    for what, got, published in [
        ("interactions", 5, "52,551"),
        ("users", 2, "1,090"),
        ("items", 3, "3,646"),
        ("distinct attributes", 3, "388"),
    ]:
        assert any(f"has {got} {what}; the published file has {published}" in w for w in warnings)
    assert len(warnings) == 5  # items of the sequences and of the attribute file


def test_named_release_without_attributes_or_final_newline(tmp_path, caplog) -> None:
    folder = tmp_path / "amazon-sports-s3rec"
    path = write(folder / "Sports_and_Outdoors.txt", "1 1 2\n")
    with caplog.at_level(logging.WARNING, logger="tfrec.data.s3rec"):
        inter = load_dataset("sports", data_dir=tmp_path)
    assert inter.items is None
    assert any("loading without item attributes" in r.getMessage() for r in caplog.records)
    path.write_text("1 1 2\n2 3 4")
    raises(lambda: load_dataset("sports", data_dir=tmp_path), f"{path}: line 2:", "newline")
    with pytest.raises(FileNotFoundError, match=r"(?s)LastFM\.txt.*RUCAIBox/CIKM2020-S3Rec"):
        load_dataset("lastfm", data_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RELEASES))
def test_real_release_matches_the_published_counts(name: str, caplog, shared_datasets) -> None:
    release = RELEASES[name]
    for file in (release.sequences, release.attributes):
        if not (shared_datasets / release.folder / file).is_file():
            pytest.fail(f"{shared_datasets / release.folder / file} not found")
    with caplog.at_level(logging.WARNING, logger="tfrec.data.s3rec"):
        inter = load_dataset(name, data_dir=shared_datasets)
    assert caplog.records == []  # no count differs from the published one
    # the shared datasets' README: Beauty 198,502 / 22,363 / 12,101, 637 attributes;
    # Sports 296,337 / 35,598 / 18,357, 2,277; Last.fm 52,551 / 1,090 / 3,646, 388
    published = {
        "beauty": (198_502, 22_363, 12_101, 12_101, 637),
        "sports": (296_337, 35_598, 18_357, 18_357, 2_277),
        "lastfm": (52_551, 1_090, 3_646, 3_646, 388),
    }
    attributes = {a for genres in inter.items["genres"] for a in genres}
    counts = (len(inter), inter.num_users, inter.num_items, len(inter.items), len(attributes))
    assert counts == published[name]
    assert inter.frame.groupby("user_id").size().min() >= 3  # leave-one-out holds out 2 per user
