"""``tfrec train --encoder none``: the ID-only two-tower through train, evaluate, recommend."""

from __future__ import annotations

import json

import pytest

from tfrec.cli.main import main


def test_train_evaluate_recommend_id_only(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--epochs", "1"]
    # The synthetic preset has no user embedding: the error names both fields.
    assert main([*base, "--encoder", "none"]) == 2
    assert "use_user_embedding=True" in capsys.readouterr().err
    flags = ["--encoder", "none", "--set", "use_user_embedding=true", "--set", "embedding_dim=4"]
    assert main([*base, *flags]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["encoder"] == "none"
    metrics = json.loads((out / "metrics.json").read_text())
    # 300 synthetic users, leave-one-out: every user is one (history-masked) test query.
    assert metrics["test/users"] == 300 and metrics["test/mask_history"] == 1.0
    assert 0.0 <= metrics["test/ndcg@10"] <= 1.0
    assert main(["evaluate", "--model-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=1e-4)
    # The export serves a user without any history.
    assert main(["recommend", "--export", str(out), "--user", "u3", "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "top-3 for user 'u3' (history: 0 items)" and len(lines) == 4
