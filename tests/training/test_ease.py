"""The ease kind: presets, lambda chosen on validation, refit, vs popularity, reload, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from block_graph import a_user_ndcg, block_data_config

from tfrec.cli.main import main
from tfrec.cli.train import _check_privacy
from tfrec.evaluation.config import EvalConfig
from tfrec.models.ease import EASEConfig, item_gram
from tfrec.training.config import TrainingConfig
from tfrec.training.ease import EASEExperiment, EASEExperimentConfig
from tfrec.training.experiment import experiment_class, load_experiment
from tfrec.training.privacy_config import PrivacyConfig
from tfrec.training.retrieval_config import RetrievalExperimentConfig


def block_config(path: Path, **model: object) -> EASEExperimentConfig:
    """A config on ``block_graph`` written to the CSV ``path`` (reloadable by ``from_dir``)."""
    settings = {"l2_grid": (1.0, 10.0, 100.0), "max_history": 10, **model}
    return EASEExperimentConfig(
        data=block_data_config(path), model=EASEConfig(**settings), evaluation=EvalConfig(ks=[10])
    )


def train_valid_weights(experiment: EASEExperiment, l2: float, with_valid: bool) -> np.ndarray:
    """``B`` solved independently of the experiment on its train (+ valid) part."""
    parts = [experiment.split.train, *([experiment.split.valid] if with_valid else [])]
    frame = pd.concat([part.frame for part in parts])
    users = experiment.user_vocab.lookup(frame["user_id"])
    items = experiment.item_vocab.lookup(frame["item_id"])
    return item_gram(users, items, experiment.item_vocab.size).weights(l2)


def test_kind_is_registered_with_the_retrieval_presets_split_and_refuses_dp():
    assert experiment_class("ease") is EASEExperiment
    config = EASEExperiment.default_config("ml-100k", data_dir="/data")
    retrieval = RetrievalExperimentConfig.for_dataset("ml-100k", data_dir="/data")
    assert config.data == retrieval.data and config.evaluation == retrieval.evaluation
    assert config.model == EASEConfig()  # lambda grid 100..1200, refit, L = 1000
    assert EASEExperimentConfig.from_json(config.to_json()) == config
    assert "context_dim" not in config.to_dict()["model"]
    with pytest.raises(ValueError, match="kind='lightgcn'; expected 'ease'"):
        EASEExperimentConfig(kind="lightgcn")
    private = TrainingConfig(privacy=PrivacyConfig(noise_multiplier=1.0))
    with pytest.raises(ValueError, match="the ease kind does not support DP-SGD: EASE is solved"):
        EASEExperimentConfig(model=EASEConfig(training=private))
    config.model = dataclasses.replace(config.model, training=private)
    with pytest.raises(ValueError, match=r"--model ease: DP-SGD .* not supported"):
        _check_privacy("ease", config)


@pytest.mark.parametrize("refit", [False, True])
def test_lambda_with_the_best_validation_metric_is_kept(tmp_path, monkeypatch, refit):
    config = block_config(tmp_path / "blocks.csv", refit_on_valid=refit)
    experiment = EASEExperiment(config, output_dir=tmp_path / "run")
    # One validation value per lambda of the grid (1, 10, 100): 10 is clearly best.
    values = iter([0.1, 0.9, 0.3])
    monkeypatch.setattr(experiment, "_validation_metrics", lambda: {"ndcg@10": next(values)})
    history = experiment.fit()
    assert history == {"l2": [1.0, 10.0, 100.0], "valid/ndcg@10": [0.1, 0.9, 0.3]}
    assert experiment.metrics["ease/l2"] == 10.0
    assert experiment.metrics["ease/refit_on_valid"] == float(refit)
    expected = train_valid_weights(experiment, 10.0, with_valid=refit)
    np.testing.assert_allclose(experiment.model.weights_matrix(), expected, rtol=1e-5, atol=1e-6)
    # The validation report is that of the train-only solve of lambda = 10.
    train_only = train_valid_weights(experiment, 10.0, with_valid=False)
    if refit:  # the refit model saw the validation part: valid is not recomputed
        assert not np.allclose(expected, train_only)
        stored = experiment.metrics["valid/ndcg@10"]
        experiment.model.assign(np.zeros_like(expected))  # a recomputation would give ~0
        assert experiment.evaluate(["valid"])["valid/ndcg@10"] == stored
        experiment.model.assign(train_only)
    recomputed = experiment.evaluate_part("valid")["valid/ndcg@10"]
    assert experiment.metrics["valid/ndcg@10"] == pytest.approx(recomputed)


@pytest.mark.slow
def test_fit_beats_popularity_and_survives_save_and_reload(tmp_path):
    config = block_config(tmp_path / "blocks.csv")
    experiment = EASEExperiment(config, output_dir=tmp_path / "run")
    history = experiment.fit()  # a real sweep: one validation value per lambda
    assert history["l2"] == [1.0, 10.0, 100.0] and len(history["valid/ndcg@10"]) == 3
    assert experiment.metrics["ease/l2"] in history["l2"]
    metrics = experiment.evaluate()
    ndcg = a_user_ndcg(experiment)  # popularity: exactly 0 (see a_user_ndcg)
    # EASE scores the b items of an a-user at 0 or below (no co-occurrence) and its a items above.
    assert ndcg["popularity"] == 0.0 and ndcg["model"] > 0.5, ndcg
    queries = experiment.queries("test")
    experiment.save()
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == history
    reloaded = load_experiment(tmp_path / "run", data_dir=None)
    assert isinstance(reloaded, EASEExperiment)
    np.testing.assert_array_equal(
        reloaded.model.weights_matrix(), experiment.model.weights_matrix()
    )
    user, history_ids = tf.constant(queries.users[:5]), tf.constant(queries.history[:5])
    np.testing.assert_allclose(
        reloaded.model.score(user, history_ids).numpy(),
        experiment.model.score(user, history_ids).numpy(),
    )
    again = reloaded.evaluate()
    assert again["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"])
    assert again["valid/ndcg@10"] == metrics["valid/ndcg@10"]  # the stored train-only report


@pytest.mark.slow
def test_cli_trains_evaluates_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "ease", "--dataset", "synthetic", "--output-dir", str(out)]
    assert main([*args, "--set", "l2_grid=[10,100]", "--max-history", "30"]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ease"
    assert (config["model"]["l2_grid"], config["model"]["max_history"]) == ([10.0, 100.0], 30)
    metrics = json.loads((out / "metrics.json").read_text())
    # 300 synthetic users, leave-one-out: every user is one test query.
    assert metrics["test/users"] == 300 and 0.0 <= metrics["test/ndcg@10"] <= 1.0
    assert metrics["ease/l2"] in (10.0, 100.0) and metrics["epochs_run"] == 0.0
    assert main(["evaluate", "--model-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=1e-4)
    # The retrieval export answers a user unknown at training time from its history.
    request = ["recommend", "--export", str(out), "--user", "newcomer", "--history", "i1,i2"]
    assert main([*request, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top-3 for user 'newcomer'") and len(lines) == 4
