"""Hostile data files: out-of-range integers, binary bytes, cut-off MovieLens files, BOMs,
duplicated header names and ids, the same column named twice. Every error is located."""

from __future__ import annotations

import logging

import pytest
from testing_utils import raises_data_error as raises

from tfrec.data.config import DataConfig
from tfrec.data.loaders import load_dataset, load_interactions_file

INT64_MAX = 9_223_372_036_854_775_807  # 2**63 - 1


def write_csv(tmp_path, text: str, name: str = "events.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ml100k(tmp_path, data: bytes):
    (tmp_path / "u.data").write_bytes(data)
    return lambda: load_dataset("ml-100k", data_dir=tmp_path)


# ------------------------------------------------------------------ int64 range (defect 13)


def test_csv_timestamp_beyond_int64_is_a_located_error(tmp_path):
    path = write_csv(tmp_path, "u,i,t\na,b,1\na,c,100000000000000000000\n")
    raises(
        lambda: load_interactions_file(path, "u", "i", "t"),
        f"{path}: line 3, column 3 (timestamp, 't'): got '100000000000000000000'",
        "in the int64 range -9223372036854775808..9223372036854775807",
    )


def test_csv_timestamp_at_the_int64_limits(tmp_path):
    path = write_csv(tmp_path, f"u,i,t\na,b,{INT64_MAX}\na,c,-{INT64_MAX + 1}\n")
    inter = load_interactions_file(path, "u", "i", "t")
    assert sorted(inter.frame["timestamp"].tolist()) == [-(2**63), INT64_MAX]
    path = write_csv(tmp_path, f"u,i,t\na,b,1\na,c,-{INT64_MAX + 2}\n")
    raises(lambda: load_interactions_file(path, "u", "i", "t"), "line 3, column 3")


def test_ml100k_integer_timestamp_beyond_int64(tmp_path):
    load = ml100k(tmp_path, b"1\t2\t3\t4\n1\t3\t3\t99999999999999999999\n")
    raises(load, "u.data: line 2, column 4 (unix timestamp", "an integer in the int64 range")


# ------------------------------------------------------------- binary data (defect 14)


def test_binary_u_data_is_not_utf8_text_with_line_and_offset(tmp_path):
    # "1\t2\t3\t4\n" is bytes 0..7, "1\t3\t" bytes 8..11: the PNG magic 0x89 is byte 12,
    # line 2, byte column 5
    load = ml100k(tmp_path, b"1\t2\t3\t4\n1\t3\t\x89PNG\r\n\x1a\n")
    raises(
        load,
        "u.data: line 2, byte column 5: byte 0x89 is not valid utf-8 (byte offset 12)",
        "the file is not UTF-8 text",
    )


def test_nul_bytes_are_binary_even_when_they_decode(tmp_path):
    # zero-filled blocks (a crash while writing) are valid UTF-8 but not text: offset 8
    load = ml100k(tmp_path, b"1\t2\t3\t4\n" + b"\x00" * 64 + b"\n")
    raises(load, "u.data: line 2, byte column 1: byte 0x00 (NUL) at byte offset 8", "binary")


def test_binary_bytes_in_a_generic_csv(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"u,i\na,b\n\xff\xfe,c\n")  # 0xff is byte 8: line 3, column 1
    raises(
        lambda: load_interactions_file(path, "u", "i"),
        "events.csv: line 3, byte column 1: byte 0xff is not valid utf-8 (byte offset 8)",
    )


# ------------------------------------------------------ cut-off MovieLens files (defect 14)


def test_u_data_cut_in_a_timestamp_is_an_error_naming_the_last_line(tmp_path):
    load = ml100k(tmp_path, b"1\t2\t3\t881250949\n1\t3\t4\t8812")  # was 881250950\n
    raises(load, "u.data: line 2: the file does not end with a newline", "cut short")


def test_ratings_csv_cut_in_a_timestamp_is_an_error(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,2,3,964982703\n1,3,4,9"
    )
    raises(
        lambda: load_dataset("ml-latest-small", data_dir=tmp_path),
        "ratings.csv: line 3: the file does not end with a newline",
    )


def test_row_counts_differing_from_the_published_files_are_warned(tmp_path, caplog):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n2,2,3,5\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n2,Two (1999),Drama\n")
    with caplog.at_level(logging.WARNING, logger="tfrec.data.movielens"):
        load_dataset("ml-latest-small", data_dir=tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        str(tmp_path / "ratings.csv") in w and "has 2 data rows" in w and "100,836" in w
        for w in warnings
    ), warnings
    assert any("movies.csv has 1 data rows" in w and "9,742" in w for w in warnings), warnings


@pytest.mark.slow
def test_published_files_load_without_a_warning(shared_datasets, caplog):
    with caplog.at_level(logging.WARNING, logger="tfrec.data"):
        load_dataset("ml-100k", data_dir=shared_datasets)
        load_dataset("ml-latest-small", data_dir=shared_datasets)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -------------------------------------------------------------------- duplicate ids


def write_ml100k_items(folder, items: str) -> None:
    (folder / "u.data").write_text("1\t2\t3\t4\n")
    (folder / "u.genre").write_text("a|0\nb|1\n")
    (folder / "u.item").write_bytes(items.encode("latin-1"))


def test_duplicate_id_in_u_item_names_file_and_both_lines(tmp_path):
    write_ml100k_items(tmp_path, "2|Café|d||u|0|1\n3|T|d||u|1|0\n2|Other|d||u|0|1\n")
    raises(
        lambda: load_dataset("ml-100k", data_dir=tmp_path),
        f"{tmp_path / 'u.item'}: line 3: item id '2' already appeared at line 1",
    )


def test_duplicate_id_in_u_user(tmp_path):
    write_ml100k_items(tmp_path, "2|T|d||u|0|1\n")
    (tmp_path / "u.user").write_text("1|24|M|tech|85711\n\n1|53|F|other|94043\n")
    raises(
        lambda: load_dataset("ml-100k", data_dir=tmp_path),
        "u.user: line 3: user id '1' already appeared at line 1; expected one row per user",
    )


# ------------------------------------------------------- headers and columns (defect 15)


def test_utf8_bom_is_stripped_from_the_first_header_name(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes("user_id,item_id\na,b\nc,d\n".encode("utf-8-sig"))
    inter = load_interactions_file(path)
    assert sorted(inter.frame["user_id"]) == ["a", "c"]
    ratings = tmp_path / "ratings.csv"  # also the MovieLens reader
    ratings.write_bytes("userId,movieId,rating,timestamp\n7,2,3,4\n".encode("utf-8-sig"))
    assert load_dataset("ml-latest-small", data_dir=tmp_path).frame["user_id"].tolist() == ["7"]


def test_duplicated_header_name_is_a_located_error(tmp_path):
    path = write_csv(tmp_path, "user,item,user\na,b,c\n")
    raises(
        lambda: load_interactions_file(path, "user", "item"),
        f"{path}: line 1 (header), column 3: column name 'user' already names column 1",
    )


def test_same_column_for_user_and_item_is_rejected_up_front(tmp_path):
    path = write_csv(tmp_path, "user_id,item_id\na,b\n")
    with pytest.raises(ValueError, match=r"--user-col, --item-col\) name the same column"):
        load_interactions_file(path, "user_id", "user_id")
    with pytest.raises(ValueError, match=r"item_col='t' and time_col='t'"):
        load_interactions_file(path, "user_id", "t", time_col="t")
    with pytest.raises(ValueError, match=r"user_col='user_id' and item_col='user_id'"):
        DataConfig(dataset="csv", path=str(path), user_col="user_id", item_col="user_id")
    # the csv-only fields are not checked for other datasets (they are not used there)
    assert DataConfig(dataset="synthetic", user_col="x", item_col="x").dataset == "synthetic"
