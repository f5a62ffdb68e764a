"""Every bad-input error names the file, the 1-based line (or row/column) and the expectation."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from testing_utils import raises_data_error as raises

from tfrec.data.loaders import load_dataset, load_interactions_file


def ml100k(tmp_path, data: str):
    (tmp_path / "u.data").write_text(data)
    return lambda: load_dataset("ml-100k", data_dir=tmp_path)


def test_wrong_field_count_too_few(tmp_path):
    load = ml100k(tmp_path, "1\t2\t3\t4\n1\t3\t3\t5\n1\t4\t3\n")
    raises(load, str(tmp_path / "u.data"), "line 3:", "expected 4 tab-separated fields, found 3")


def test_wrong_field_count_too_many(tmp_path):
    load = ml100k(tmp_path, "1\t2\t3\t4\n1\t3\t3\t5\t9\n")
    raises(load, "u.data: line 2:", "expected 4 tab-separated fields, found 5")


def test_unparsable_rating_counts_blank_lines(tmp_path):
    # the blank line 2 is skipped but still counted: the bad value is on line 3
    load = ml100k(tmp_path, "1\t2\t3\t4\n\n1\t3\tgood\t5\n")
    raises(load, "line 3, column 3 (rating, 'rating'): got 'good'; expected a number")


def test_unparsable_user_id_and_timestamp(tmp_path):
    raises(
        ml100k(tmp_path, "1\t2\t3\t4\nbob\t3\t3\t5\n"), "line 2, column 1 (user id", "integer id"
    )
    raises(ml100k(tmp_path, "1\t2\t3\t4.5\n"), "line 1, column 4 (unix timestamp", "an integer")


def test_empty_file(tmp_path):
    raises(ml100k(tmp_path, ""), "u.data: no data (the file is empty)")


def test_ml100k_bad_genre_flag_and_missing_genre_file(tmp_path):
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    (tmp_path / "u.genre").write_text("a|0\nb|1\n")
    (tmp_path / "u.item").write_text("2|T|d||u|0|1\n3|T|d||u|0|2\n")
    raises(
        lambda: load_dataset("ml-100k", data_dir=tmp_path),
        str(tmp_path / "u.item"),
        "line 2, column 7: got '2'; expected a genre flag 0 or 1",
    )
    (tmp_path / "u.item").write_text("2|T|d||u|0|1|1\n")
    raises(
        lambda: load_dataset("ml-100k", data_dir=tmp_path),
        "u.item: line 1: expected 7 '|'-separated fields, found 8",
    )
    (tmp_path / "u.genre").unlink()
    with pytest.raises(FileNotFoundError, match=r"u\.genre not found"):
        load_dataset("ml-100k", data_dir=tmp_path)


def test_utf8_decode_error_names_line(tmp_path):
    (tmp_path / "ratings.csv").write_bytes(
        b"userId,movieId,rating,timestamp\n1,2,3,4\n1,\xff,3,4\n"
    )
    raises(
        lambda: load_dataset("ml-latest-small", data_dir=tmp_path),
        "ratings.csv: line 3, byte column 3: byte 0xff is not valid utf-8",
    )


def test_missing_column_names_header(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\n1,2,3\n")
    raises(
        lambda: load_dataset("ml-latest-small", data_dir=tmp_path),
        "ratings.csv: line 1 (header): missing column(s) ['timestamp']",
        "the header has ['userId', 'movieId', 'rating']",
    )


def test_header_only_is_empty(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    raises(
        lambda: load_dataset("ml-latest-small", data_dir=tmp_path), "no data rows after the header"
    )


def test_csv_line_numbers_follow_multiline_quoted_fields(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3,4\n1,3,3,5\n")
    # a quoted title spanning lines 2-3, then a duplicate id on line 4
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n2,"Two\nLines",A\n2,Again,B\n')
    raises(
        lambda: load_dataset("ml-latest-small", data_dir=tmp_path),
        "movies.csv: line 4: item id '2' already appeared at line 2; expected one row per item",
    )


def test_generic_csv_bad_datetime_and_rating(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("u,i,t,r\na,x,2020-01-01,1\na,y,yesterday-ish,2\n")
    raises(
        lambda: load_interactions_file(path, "u", "i", time_col="t"),
        str(path),
        "line 3, column 3 (timestamp, 't'): got 'yesterday-ish'; expected a date/time string",
    )
    path.write_text("u,i,t,r\na,x,1,1\na,y,2,\n")
    raises(
        lambda: load_interactions_file(path, "u", "i", time_col="t", rating_col="r"),
        "line 3, column 4 (rating, 'r'): got an empty value; expected a number",
    )
    path.write_text("u,i,t\na,x,100\nb,y,2020-01-01\nc,z,300\n")
    raises(
        lambda: load_interactions_file(path, "u", "i", time_col="t"),
        "line 3, column 3",
        "expected unix seconds (an integer), like the other rows",
    )


def test_generic_csv_missing_column_and_empty_id(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("user,item\na,x\n,y\n")
    raises(lambda: load_interactions_file(path, "u", "item"), "missing column(s) ['u']")
    raises(
        lambda: load_interactions_file(path, "user", "item"),
        "line 3, column 1 (user id, 'user'): got an empty value; expected a non-empty id",
    )


def test_parquet_errors_name_row_and_column(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"u": ["a", None], "i": ["x", "y"]}).to_parquet(path)
    raises(
        lambda: load_interactions_file(path, "u", "i"),
        "e.parquet: row 2, column 'u' (user id): got a null value",
    )
    pd.DataFrame({"u": ["a", "b"], "i": ["x", "y"], "r": ["1", "bad"]}).to_parquet(path)
    raises(
        lambda: load_interactions_file(path, "u", "i", rating_col="r"),
        "row 2, column 'r' (rating): got 'bad'; expected a number",
    )
    raises(lambda: load_interactions_file(path, "u", "item"), "missing column(s) ['item']")


def test_beauty_line_without_items_and_bad_token(tmp_path):
    path = tmp_path / "Beauty.txt"
    path.write_text("1 2 3\n2\n")
    raises(
        lambda: load_dataset("beauty", data_dir=tmp_path),
        "Beauty.txt: line 2: found only 1 field; expected a user id followed by at least one",
    )
    path.write_text("1 2 3\n2 4 x5\n")
    raises(
        lambda: load_dataset("beauty", data_dir=tmp_path),
        "line 2, field 3 (item id): got 'x5'; expected an integer id",
    )


def test_bert4rec_wrong_field_count(tmp_path):
    (tmp_path / "beauty.txt").write_text("1 2\n1 3\n1 4 5\n")
    message = raises(lambda: load_dataset("beauty-bert4rec", data_dir=tmp_path), "line 3:")
    assert re.search(r"expected 2 whitespace-separated fields, found 3", message)
