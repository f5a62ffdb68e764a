"""``tfrec adapt`` through the CLI: flags reach AdaptSettings, bad values are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfrec.cli.main import main


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-scenario joint run (tiny GRU, one epoch) saved by ``tfrec train --scenarios``."""
    out = tmp_path_factory.mktemp("joint")
    args = ["train", "--scenarios", "synthetic_a,synthetic_b", "--output-dir", str(out)]
    tiny = ["--encoder", "gru", "--epochs", "1", "--set", "embedding_dim=4", "--no-export"]
    own = ["--scenario-user-embeddings", "yes,no", "--scenario-mean-experts", "no,yes"]
    own += ["--scenario-max-histories", "8,5"]
    assert main([*args, *tiny, *own, "--set", "max_history=8"]) == 0
    return out


def test_adapt_trains_the_new_scenario_with_the_flags_given(source, tmp_path, capsys):
    out = tmp_path / "adapted"
    argv = ["adapt", "--from", str(source), "--dataset", "synthetic_small", "--output-dir"]
    code = main([*argv, str(out), "--epochs", "3", "--patience", "1", "--no-export"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "synthetic_small/test/ndcg@10" in printed and "adapt/train_seconds" in printed
    record = json.loads((out / "adapt.json").read_text())
    assert record["settings"]["epochs"] == 3 and record["settings"]["patience"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    # the old scenarios' metrics are carried over, the new one's added
    assert {"synthetic_a/test/ndcg@10", "synthetic_small/test/ndcg@10"} <= set(metrics)
    # the flag chose a user vector for synthetic_a only; the new scenario gets its preset's (no)
    config = json.loads((out / "config.json").read_text())
    assert config["user_embeddings"] == [True, False, False]
    subs = [json.loads((out / n / "config.json").read_text()) for n in config["scenarios"]]
    assert [sub["model"]["use_user_embedding"] for sub in subs] == [True, False, False]
    # the mean expert likewise: synthetic_b's by the flag, none for the new scenario
    assert config["mean_experts"] == [False, True, False]
    assert [sub["model"]["mean_expert"] for sub in subs] == [False, True, False]
    # history lengths: synthetic_b reads 5 items by the flag, the new scenario the shared 8
    assert config["max_histories"] == [8, 5, 8]
    assert [sub["model"]["max_history"] for sub in subs] == [8, 5, 8]


def test_a_bad_patience_is_a_clear_error(source, tmp_path, capsys):
    argv = ["adapt", "--from", str(source), "--dataset", "synthetic_small", "--output-dir"]
    code = main([*argv, str(tmp_path / "x"), "--patience", "0", "--no-export"])
    assert code == 2
    assert "patience=0; expected >= 1" in capsys.readouterr().err


def test_a_bad_user_embedding_flag_is_a_clear_error(tmp_path, capsys):
    argv = ["train", "--scenarios", "synthetic_a,synthetic_b", "--output-dir", str(tmp_path)]
    assert main([*argv, "--scenario-user-embeddings", "yes,maybe"]) == 2
    assert "--scenario-user-embeddings: 'maybe'; expected yes or no" in capsys.readouterr().err
    assert main([*argv, "--scenario-mean-experts", "yes"]) == 2
    assert "mean_experts=[True]; expected 2 booleans" in capsys.readouterr().err
    for bad in ("0", "x", "\u00b2"):  # "²" passes str.isdigit but not int()
        assert main([*argv, "--scenario-max-histories", f"50,{bad}"]) == 2
        err = capsys.readouterr().err
        assert f"--scenario-max-histories: {bad!r}; expected an integer >= 1" in err


def test_scenario_flags_without_scenarios_are_refused(tmp_path, capsys):
    argv = ["train", "--dataset", "synthetic", "--output-dir", str(tmp_path)]
    assert main([*argv, "--scenario-selection", "mean"]) == 2
    assert "--scenario-selection: only for a multi-scenario run" in capsys.readouterr().err
