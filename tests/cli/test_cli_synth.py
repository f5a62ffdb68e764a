"""``tfrec synth``: writes the log and the item file, prints a summary, explains bad input."""

from __future__ import annotations

import json

import pandas as pd

from tfrec.cli.main import main


def synth(tmp_path, *extra: str) -> list[str]:
    return [
        "synth",
        "--users",
        "50",
        "--items",
        "2000",
        "--interactions",
        "1000",
        "--output",
        str(tmp_path / "log.parquet"),
        "--seed",
        "3",
        *extra,
    ]


def test_synth_writes_both_files_and_prints_the_summary(tmp_path, capsys):
    assert main(synth(tmp_path, "--categories", "4", "--p-successor", "0.8")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_interactions"] == 1000 and summary["num_users"] == 50
    assert summary["items_output"] == str(tmp_path / "log.items.parquet")
    log = pd.read_parquet(tmp_path / "log.parquet")
    items = pd.read_parquet(tmp_path / "log.items.parquet")
    assert len(log) == 1000 and log["user_id"].nunique() == 50
    assert len(items) == 2000 and items["genres"].nunique() == 4
    # 950 pairs, 80% planted (a few lost to redrawn repeats): far above the default 0.5
    assert summary["successor_fraction"] > 0.65


def test_synth_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    assert main(synth(tmp_path)) == 0
    first = (tmp_path / "log.parquet").read_bytes()
    capsys.readouterr()
    assert main(synth(tmp_path, "--seed", "4")) == 1  # a runtime error: the file exists
    err = capsys.readouterr().err
    assert err.startswith("tfrec synth: error:") and str(tmp_path / "log.parquet") in err
    assert (tmp_path / "log.parquet").read_bytes() == first
    assert main(synth(tmp_path, "--seed", "4", "--overwrite")) == 0
    assert (tmp_path / "log.parquet").read_bytes() != first


def test_synth_names_the_option_of_an_impossible_size(tmp_path, capsys):
    # 50 users with at least 3 events each need at least 150 interactions.
    code = main([*synth(tmp_path)[:5], "--interactions", "100", *synth(tmp_path)[7:]])
    assert code == 2
    err = capsys.readouterr().err
    assert "--interactions=100; expected in [150, 100000]" in err
    assert not (tmp_path / "log.parquet").exists()


def test_synth_custom_items_output(tmp_path, capsys):
    items = tmp_path / "catalogue" / "items.parquet"
    assert main(synth(tmp_path, "--items-output", str(items))) == 0
    assert json.loads(capsys.readouterr().out)["items_output"] == str(items)
    assert len(pd.read_parquet(items)) == 2000
    assert not (tmp_path / "log.items.parquet").exists()
