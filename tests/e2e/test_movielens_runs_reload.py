"""ml-100k through ``tfrec train``: a retrieval run and a ranking run reopen and reproduce.

For each kind, ``tfrec.load_experiment(dir).evaluate()`` gives the test metrics of
the run's ``metrics.json`` (to 1e-4), and ``tfrec evaluate`` / ``tfrec export
--model-dir`` work on it. One epoch of 30 batches each (the presets' split and models
otherwise): what is checked is the reopening, not the training.
"""

from __future__ import annotations

import json

import pytest

import tfrec
from tfrec.cli.main import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("retrieval", ("test/ndcg@10", "test/users")), ("ranking", ("test/rmse", "test/mae"))],
)
def test_a_run_reopens_and_reproduces_its_test_metrics(
    kind, expected, shared_datasets, tmp_path, capsys
):
    out = tmp_path / kind
    argv = ["train", "--model", kind, "--dataset", "ml-100k", "--data-dir", str(shared_datasets)]
    short = ["--epochs", "1", "--set", "training.steps_per_epoch=30", "--no-export"]
    assert main([*argv, "--output-dir", str(out), *short]) == 0
    capsys.readouterr()
    saved = json.loads((out / "metrics.json").read_text())
    tests = {key: value for key, value in saved.items() if key.startswith("test/")}
    assert set(expected) <= set(tests)
    if kind == "retrieval":
        assert tests["test/users"] == 943  # every ml-100k user has test ratings
    experiment = tfrec.load_experiment(out)
    assert experiment.kind == kind
    metrics = experiment.evaluate()
    assert {key: metrics[key] for key in tests} == pytest.approx(tests, abs=1e-4)

    assert main(["evaluate", "--model-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[expected[0]] == pytest.approx(tests[expected[0]], abs=1e-4)
    base = tmp_path / "serving"
    assert main(["export", "--model-dir", str(out), "--export-dir", str(base)]) == 0
    assert (base / kind / "1" / "saved_model.pb").is_file()
