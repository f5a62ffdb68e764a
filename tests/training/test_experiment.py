"""The Experiment contract: registry, load_experiment, one saved layout, reproducible metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tfrec
from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.models.ranking import RankingConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training import experiment as contract
from tfrec.training.config import TrainingConfig
from tfrec.training.experiment import (
    EXPERIMENT_KINDS,
    Experiment,
    RunLayout,
    experiment_class,
    load_experiment,
    register_experiment,
    select_exports,
)
from tfrec.training.ranking import RankingExperiment
from tfrec.training.ranking_config import RankingExperimentConfig
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig

# 60 users x 20 items: each user walks 8..25 items (synthetic), leave-one-out split.
TINY_DATA = {"dataset": "synthetic", "synthetic_users": 60, "synthetic_items": 20}


# ---------------------------------------------------------------- registry


def test_unknown_kind_names_the_known_kinds():
    assert EXPERIMENT_KINDS == (
        "retrieval", "ranking", "pipeline", "multi_scenario", "mf", "lightgcn", "ease"
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=(
            r"unknown experiment kind 'nope'; known kinds: "
            r"\['retrieval', 'ranking', 'pipeline', 'multi_scenario'"
        ),
    ):
        experiment_class("nope")


def test_builtin_kinds_resolve_to_their_classes():
    assert experiment_class("retrieval") is RetrievalExperiment
    assert experiment_class("ranking") is RankingExperiment
    pipeline = experiment_class("pipeline")
    assert pipeline.__name__ == "PipelineExperiment" and pipeline.kind == "pipeline"
    for kind in EXPERIMENT_KINDS:
        assert experiment_class(kind).kind == kind


def test_register_experiment_checks_the_contract(monkeypatch):
    monkeypatch.setattr(contract, "_REGISTRY", dict(contract._REGISTRY))

    class Incomplete:
        kind = "toy"

        def fit(self):  # no evaluate, save, export, from_dir
            return {}

    with pytest.raises(ValueError, match=r"Incomplete lacks \['evaluate', 'save', 'export'"):
        register_experiment()(Incomplete)

    class Toy(Incomplete):
        def evaluate(self, parts=None):
            return {}

        def save(self, output_dir=None):
            return Path(".")

        def export(self, base_dir, version=None, *, models=None, model_name=None):
            return []

        @classmethod
        def from_dir(cls, run_dir, data_dir=None):
            return cls()

    assert register_experiment()(Toy) is Toy
    assert experiment_class("toy") is Toy
    assert contract.experiment_kinds() == (*EXPERIMENT_KINDS, "toy")
    with pytest.raises(ValueError, match=r"kind 'ranking' is already registered to .*Ranking"):
        register_experiment("ranking")(Toy)


def test_select_exports_checks_the_models():
    assert select_exports("pipeline", ("ranking", "retrieval"), None, None) == [
        "ranking",
        "retrieval",
    ]
    with pytest.raises(ValueError, match=r"a retrieval run exports \['retrieval'\]"):
        select_exports("retrieval", ("retrieval",), ["recommender"], None)
    with pytest.raises(ValueError, match="model_name='x' names one model"):
        select_exports("pipeline", ("ranking", "retrieval"), None, "x")


# ---------------------------------------------------------------- load_experiment


def test_load_experiment_errors_name_the_file(tmp_path):
    config = tmp_path / "config.json"
    with pytest.raises(FileNotFoundError, match=rf"{config} not found"):
        load_experiment(tmp_path)
    config.write_text('{"data": {}}')
    with pytest.raises(ValueError, match=rf'{config}: no "kind" field'):
        load_experiment(tmp_path)
    config.write_text('{"kind": "nope"}')
    with pytest.raises(ValueError, match="unknown experiment kind 'nope'"):
        load_experiment(tmp_path)
    config.write_text('{"kind":\n "retrieval",,}')
    with pytest.raises(ValueError, match=rf"{config}: line 2: not valid JSON"):
        load_experiment(tmp_path)


def test_import_tfrec_stays_light():
    code = (
        "import sys, tfrec\n"
        "load = tfrec.load_experiment\n"
        "assert load.__module__ == 'tfrec.training.experiment', load.__module__\n"
        "heavy = [m for m in ('tensorflow', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert tfrec.load_experiment is load_experiment
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfrec.nope  # noqa: B018


# ---------------------------------------------------------------- saved runs


def _retrieval_config() -> RetrievalExperimentConfig:
    return RetrievalExperimentConfig(
        data=DataConfig(**TINY_DATA),
        model=RetrievalConfig(
            encoder="mean",
            embedding_dim=8,
            max_history=10,
            training=TrainingConfig(batch_size=64, epochs=2, patience=2),
        ),
        evaluation=EvalConfig(ks=[1, 5, 10]),
    )


def _ranking_config() -> RankingExperimentConfig:
    ranking = RankingConfig(
        objective="rating",
        embedding_dim=8,
        lstm_units=8,
        mlp_layers=[8],
        max_history=10,
        use_item_features=False,
        training=TrainingConfig(batch_size=128, epochs=2),
    )
    return RankingExperimentConfig(data=DataConfig(**TINY_DATA), ranking=ranking)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A saved retrieval run and a saved ranking run (fit, evaluate, save)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, config in (("retrieval", _retrieval_config()), ("ranking", _ranking_config())):
        experiment = experiment_class(kind)(config, output_dir=root / kind)
        experiment.fit()
        experiment.evaluate()
        experiment.save()
        out[kind] = root / kind
    return out


LAYOUT_FILES = (
    "config.json",
    "metrics.json",
    "user_vocab.txt",
    "item_vocab.txt",
    "history.json",
    "weights/model.index",
    "checkpoints/last.index",
    "checkpoints/last.json",
)


def test_every_kind_saves_the_same_layout(runs):
    for kind, run in runs.items():
        present = {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}
        missing = [name for name in LAYOUT_FILES if name not in present]
        assert not missing, (kind, missing)
        assert json.loads((run / "config.json").read_text())["kind"] == kind
        layout = RunLayout(run)
        assert json.loads(layout.checkpoint_state.read_text())["epoch"] == 2
        history = json.loads(layout.history.read_text())
        assert len(history["loss"]) == json.loads(layout.metrics.read_text())["epochs_run"] == 2
    assert (runs["ranking"] / "data_spec.json").is_file()  # the ranker's own file
    assert not (runs["retrieval"] / "data_spec.json").exists()


@pytest.mark.parametrize("kind", ["retrieval", "ranking"])
def test_load_experiment_reproduces_the_saved_test_metrics(runs, kind):
    saved = json.loads((runs[kind] / "metrics.json").read_text())
    experiment = load_experiment(runs[kind])
    assert isinstance(experiment, Experiment) and experiment.kind == kind
    assert experiment.metrics == saved  # reopened with its metrics
    metrics = experiment.evaluate()
    tests = {key: value for key, value in saved.items() if key.startswith("test/")}
    # retrieval: full-ranking keys; ranking (rating objective): RMSE / MAE / examples
    expected = {"test/ndcg@10", "test/users"} if kind == "retrieval" else {"test/rmse"}
    assert expected <= set(tests)
    assert {key: metrics[key] for key in tests} == pytest.approx(tests, abs=1e-4)


def test_cli_evaluate_and_export_use_the_contract_for_a_ranking_run(runs, tmp_path, capsys):
    from tfrec.cli.main import main

    run = runs["ranking"]
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "--model-dir", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"test/rmse", "test/mae", "test/examples"}
    assert printed["test/rmse"] == pytest.approx(before["test/rmse"], abs=1e-4)
    base = tmp_path / "serving"
    assert main(["export", "--model-dir", str(run), "--export-dir", str(base)]) == 0
    assert capsys.readouterr().out.strip() == str(base / "ranking" / "1")
    assert (base / "ranking" / "1" / "saved_model.pb").is_file()
    code = main(
        ["export", "--model-dir", str(run), "--export-dir", str(base), "--kind", "retrieval"]
    )
    assert code == 2  # a usage error: a ranking run exports only its ranker
    assert "a ranking run exports ['ranking']" in capsys.readouterr().err


# ---------------------------------------------------------------- resume


def test_resume_continues_the_epoch_count_with_the_saved_state(tmp_path):
    config = _ranking_config()
    first = RankingExperiment(config, output_dir=tmp_path)
    first.fit(epochs=1)  # "interrupted" after epoch 1
    saved_loss = first.history["loss"]
    steps = int(first.trained.model.optimizer.iterations.numpy())
    assert steps > 0 and len(saved_loss) == 1

    resumed = RankingExperiment(config, output_dir=tmp_path)  # a new process would do this
    assert int(resumed.trained.model.optimizer.iterations.numpy()) == 0
    history = resumed.fit(epochs=2, resume=True)
    # Epoch 2 ran on top of the checkpoint: the optimizer's step counter, saved with the
    # weights, continued from epoch 1's count (a fresh model would be at 1 x steps).
    assert int(resumed.trained.model.optimizer.iterations.numpy()) == 2 * steps
    assert len(history["loss"]) == 2 and history["loss"][0] == saved_loss[0]
    assert len(history["val_rmse"]) == 2
    state = json.loads(RunLayout(tmp_path).checkpoint_state.read_text())
    assert state["epoch"] == 2 and len(state["early_stopping"]["history"]) == 2

    # Resuming a finished run trains nothing and ends on the best epoch's saved weights
    # (optimizer state included: its step counter is that epoch's).
    again = RankingExperiment(config, output_dir=tmp_path)
    assert again.fit(epochs=2, resume=True) == history
    best_epoch = int(np.argmin(history["val_rmse"]))  # 0-based
    assert int(again.trained.model.optimizer.iterations.numpy()) == (best_epoch + 1) * steps
    # both hold the best epoch's weights: the same predictions
    ours, theirs = again.evaluate(["test"]), resumed.evaluate(["test"])
    assert ours["test/rmse"] == pytest.approx(theirs["test/rmse"], abs=1e-6)


def test_resume_without_a_checkpoint_names_the_run(tmp_path):
    experiment = RankingExperiment(_ranking_config(), output_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="has no checkpoint to resume from"):
        experiment.fit(epochs=1, resume=True)


def test_cli_train_resume_continues_a_retrieval_run(tmp_path, capsys):
    from tfrec.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--output-dir", str(out), "--no-export"]
    flags = ["--dataset", "synthetic", "--encoder", "mean", "--set", "embedding_dim=8"]
    assert main([*argv, *flags, "--epochs", "1"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1
    # --resume reads OUT/config.json (kind, data, model); --epochs raises the total to 2
    assert main([*argv, "--resume", "--epochs", "2"]) == 0
    capsys.readouterr()
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert json.loads((out / "config.json").read_text())["model"]["training"]["epochs"] == 2
    assert len(json.loads((out / "history.json").read_text())["val_ndcg@10"]) == 2
