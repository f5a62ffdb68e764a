"""``tfrec recommend --explain``: "because ..." lines from an export and from a local server.

The export is :func:`testing_utils.hand_mean_model`'s; for the history i0, i1, i2
the top-2 items are i4 (score 4/3) and i5 (1), explained by i0 (+5/6), i1 (-1/6),
i2 (-2/3) and i2 (+1/2), i1 (0), i0 (-1/2): the hand computation is in
tests/export/test_explanations.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from testing_utils import hand_mean_model

from tfrec.cli.main import main
from tfrec.export.retrieval import export_retrieval
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions

ARGS = ["--user", "u0", "--history", "i0,i1,i2", "-k", "2", "--explain"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    model, users, items = hand_mean_model()
    return export_retrieval(
        model,
        users,
        items,
        tmp_path_factory.mktemp("explain"),
        experiment_config={"data": {"dataset": "ml-100k"}},
    )


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_prints_because_lines_under_each_item(export, capsys):
    code, out, err = run_cli(capsys, "recommend", "--export", str(export), *ARGS)
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert lines[1].startswith("1. i4") and lines[3].startswith("2. i5"), out
    assert lines[2] == "because you watched: i0 (+0.83), i1 (-0.17), i2 (-0.67)"
    assert lines[4] == "because you watched: i2 (+0.50), i1 (+0.00), i0 (-0.50)"


def test_explain_json_and_titles(export, tmp_path, capsys):
    titles = tmp_path / "titles.json"
    titles.write_text(json.dumps({"i0": "Zero", "i2": "Two"}))
    argv = ["recommend", "--export", str(export), *ARGS, "--titles", str(titles)]
    code, out, _ = run_cli(capsys, *argv, "--json")
    assert code == 0
    because = json.loads(out)[0]["items"][1]["because"]
    assert [(c["item_id"], c["title"]) for c in because] == [
        ("i2", "Two"),
        ("i1", ""),
        ("i0", "Zero"),
    ]
    assert because[0]["contribution"] == pytest.approx(0.5, abs=1e-6)
    _, table, _ = run_cli(capsys, *argv)
    assert "because you watched: Two (+0.50), i1 (+0.00), Zero (-0.50)" in table


def test_explain_without_a_known_dataset_says_because_of(tmp_path, capsys):
    model, users, items = hand_mean_model()
    export = export_retrieval(model, users, items, tmp_path)  # no experiment_config
    code, out, _ = run_cli(capsys, "recommend", "--export", str(export), *ARGS)
    assert code == 0
    assert "because of: i0 (+0.83), i1 (-0.17), i2 (-0.67)" in out


def test_explain_through_the_local_server(export, tmp_path, capsys):
    base = tmp_path / "models"
    shutil.copytree(export, base / "retrieval" / "1")
    server = ModelServer(
        [ModelEntry("retrieval", str(base / "retrieval"))], ServerOptions(host="127.0.0.1", port=0)
    ).start()
    try:
        argv = ["recommend", "--server", f"127.0.0.1:{server.port}", *ARGS]
        code, out, err = run_cli(capsys, *argv)
    finally:
        server.stop(grace=1.0)
    assert code == 0, err
    # a server does not say which dataset the model learnt from: "because of"
    assert "because of: i0 (+0.83), i1 (-0.17), i2 (-0.67)" in out
    assert "because of: i2 (+0.50), i1 (+0.00), i0 (-0.50)" in out


def test_explain_on_an_id_only_export_is_refused_with_the_reason(tmp_path, capsys):
    model, users, items = hand_mean_model("none")
    export = export_retrieval(model, users, items, tmp_path)
    code, out, err = run_cli(capsys, "recommend", "--export", str(export), *ARGS)
    assert code == 1 and out == ""
    assert "no explain signature" in err
    assert "ID-only (encoder='none'): it reads no history" in err
    code, out, _ = run_cli(capsys, "recommend", "--export", str(export), *ARGS[:-1])
    assert code == 0 and "because" not in out  # without --explain it recommends as before


@pytest.mark.slow
def test_export_explain_top_reaches_the_signature(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--output-dir", str(run), "--epochs", "1"]
    assert main([*argv, "--encoder", "gru", "--set", "embedding_dim=4"]) == 0
    for top in ("1", "0"):
        code, _, err = run_cli(
            capsys, "export", "--model-dir", str(run), "--export-dir", str(tmp_path / top),
            "--explain-top", top,
        )  # fmt: skip
        assert code == 0, err
    vocab = next((tmp_path / "1").glob("*/1/assets.extra/item_vocab.txt"))
    history = ",".join(vocab.read_text().split()[:3])  # three known items
    code, out, err = run_cli(
        capsys, "recommend", "--export", str(tmp_path / "1"), "--history", history, "-k", "2",
        "--explain", "--json",
    )  # fmt: skip
    assert code == 0, err
    items = json.loads(out)[0]["items"]
    assert len(items) == 2 and all(len(item["because"]) == 1 for item in items)  # m = 1
    code, _, err = run_cli(
        capsys, "recommend", "--export", str(tmp_path / "0"), "--history", history, "--explain"
    )
    assert code == 1 and "no explain signature" in err and "explain_top=0" in err
