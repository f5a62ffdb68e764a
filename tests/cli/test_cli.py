"""The ``tfrec`` command line, end to end on synthetic data (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfrec.cli.main import COMMANDS, main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tfrec {command}")
    assert len(out.splitlines()) > 5  # a real description and options, not a stub


def test_train_requires_a_dataset_or_config(tmp_path, capsys):
    assert main(["train", "--output-dir", str(tmp_path)]) == 2
    assert "--dataset is required" in capsys.readouterr().err


def test_train_on_a_missing_csv_names_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    code = main(
        ["train", "--dataset", "csv", "--path", str(missing), "--output-dir", str(tmp_path / "o")]
    )
    assert code == 1  # a runtime error (missing file), not a usage error
    assert str(missing) in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--output-dir",
            str(out),
            "--epochs",
            "2",
            "--encoder",
            "gru",
            "--set",
            "embedding_dim=8",
        ]
    )
    assert code == 0
    return out


def test_train_writes_config_metrics_and_a_versioned_export(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["encoder"] == "gru" and config["model"]["embedding_dim"] == 8
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("test/ndcg@10", "test/hr@10", "test/recall@10", "test/mrr", "valid/ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    # 300 synthetic users, leave-one-out: every user is one test query
    assert metrics["test/users"] == 300
    assert (trained / "export" / "retrieval" / "1" / "saved_model.pb").is_file()
    assert (trained / "user_vocab.txt").is_file() and (trained / "item_vocab.txt").is_file()


def test_evaluate_reproduces_the_saved_test_metrics(trained, capsys):
    before = json.loads((trained / "metrics.json").read_text())
    assert main(["evaluate", "--model-dir", str(trained)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test/ndcg@10"] == pytest.approx(before["test/ndcg@10"], abs=1e-4)
    assert printed["test/hr@10"] == pytest.approx(before["test/hr@10"], abs=1e-4)


def test_export_adds_a_new_version_and_never_overwrites(trained, tmp_path):
    base = tmp_path / "serving"
    assert main(["export", "--model-dir", str(trained), "--export-dir", str(base)]) == 0
    assert main(["export", "--model-dir", str(trained), "--export-dir", str(base)]) == 0
    versions = sorted(p.name for p in (base / "retrieval").iterdir())
    assert versions == ["1", "2"]
    code = main(
        ["export", "--model-dir", str(trained), "--export-dir", str(base), "--version", "1"]
    )
    assert code == 1  # existing version refused (FileExistsError: runtime)


def test_recommend_prints_top_k_with_titles(trained, capsys):
    code = main(
        ["recommend", "--export", str(trained), "--user", "u3", "--history", "i1,i2", "-k", "4"]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "top-4 for user 'u3' (history: 2 items)"
    ranked = lines[1:]
    assert [line.split()[0] for line in ranked] == ["1.", "2.", "3.", "4."]
    # synthetic titles look like "Item 17 jazz"; history items are excluded
    assert all("Item" in line for line in ranked)
    assert not any(line.split()[1] in ("i1", "i2") for line in ranked)


def test_recommend_json_and_argument_errors(trained, capsys):
    assert main(["recommend", "--export", str(trained), "--history", "i5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and len(rows[0]["items"]) == 10
    code = main(
        ["recommend", "--export", str(trained), "--user", "a", "--user", "b", "--history", "i1"]
    )
    assert code == 2
    assert "--history given 1 times but 2 queries" in capsys.readouterr().err


def test_train_streams_from_prepared_tfrecords(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    code = main(
        ["prepare", "--dataset", "synthetic", "--output-dir", str(prepared), "--max-len", "20"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--prepared",
            str(prepared),
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--max-history",
            "20",
            "--encoder",
            "mean",
            "--no-export",
        ]
    )
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["prepared_dir"] == str(prepared)
    metrics = json.loads((out / "metrics.json").read_text())
    # the prepared split is used: one test query per user of the prepared test part
    test_users = summary["rows"]["test"]  # leave-one-out: one test row per user
    assert metrics["test/users"] == test_users
    code = main(
        [
            "train",
            "--prepared",
            str(prepared),
            "--output-dir",
            str(tmp_path / "bad"),
            "--max-history",
            "7",
        ]
    )
    assert code == 2
    assert "histories of length 20 but model.max_history=7" in capsys.readouterr().err
