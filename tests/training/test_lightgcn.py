"""The lightgcn kind: presets, train-only graph, fit vs popularity, save/reload, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from block_graph import a_user_ndcg, block_data_config

from tfrec.cli.main import main
from tfrec.evaluation.config import EvalConfig
from tfrec.models.lightgcn import LightGCNConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import experiment_class, load_experiment
from tfrec.training.lightgcn import LightGCNExperiment, LightGCNExperimentConfig
from tfrec.training.retrieval_config import RetrievalExperimentConfig


def block_config(path: Path, **model: object) -> LightGCNExperimentConfig:
    """A config on ``block_graph`` written to the CSV ``path`` (reloadable by ``from_dir``)."""
    settings = {
        "embedding_dim": 8,
        "num_layers": 2,
        "max_history": 8,
        "optimizer": OptimizerConfig(learning_rate=0.05),
        "training": TrainingConfig(epochs=30, batch_size=32, patience=30, seed=1),
        **model,
    }
    return LightGCNExperimentConfig(
        data=block_data_config(path),
        model=LightGCNConfig(**settings),
        evaluation=EvalConfig(ks=[10]),
    )


def test_kind_is_registered_with_the_retrieval_presets_split():
    assert experiment_class("lightgcn") is LightGCNExperiment
    config = LightGCNExperiment.default_config("ml-100k", data_dir="/data")
    retrieval = RetrievalExperimentConfig.for_dataset("ml-100k", data_dir="/data")
    assert config.data == retrieval.data and config.evaluation == retrieval.evaluation
    assert config.model.max_history == retrieval.model.max_history == 200
    assert (config.model.optimizer.learning_rate, config.model.training.batch_size) == (5e-3, 1024)
    paper = LightGCNExperiment.default_config("synthetic").model  # no preset: the paper's
    assert (paper.embedding_dim, paper.num_layers, paper.loss, paper.l2) == (64, 3, "bpr", 1e-4)
    assert (paper.optimizer.learning_rate, paper.training.batch_size) == (1e-3, 2048)
    assert LightGCNExperimentConfig.from_json(config.to_json()) == config
    assert "context_dim" not in config.to_dict()["model"]
    with pytest.raises(ValueError, match="kind='retrieval'; expected 'lightgcn'"):
        LightGCNExperimentConfig(kind="retrieval")


def test_graph_holds_the_train_pairs_only(tmp_path):
    experiment = LightGCNExperiment(block_config(tmp_path / "blocks.csv"))
    split, users, items = experiment.split, experiment.user_vocab, experiment.item_vocab
    edges = experiment.adjacency.indices.numpy()
    num_users = users.size
    in_graph = {(u, i - num_users) for u, i in edges if u < num_users}
    train = set(
        zip(
            users.lookup(split.train.frame["user_id"]),
            items.lookup(split.train.frame["item_id"]),
            strict=True,
        )
    )
    assert in_graph == train and len(edges) == 2 * len(train)
    for part in (split.valid, split.test):
        held = zip(
            users.lookup(part.frame["user_id"]), items.lookup(part.frame["item_id"]), strict=True
        )
        assert not in_graph & set(held)


@pytest.mark.slow
def test_fit_beats_popularity_and_survives_save_and_reload(tmp_path):
    config = block_config(tmp_path / "blocks.csv")
    experiment = LightGCNExperiment(config, output_dir=tmp_path / "run")
    experiment.fit()
    metrics = experiment.evaluate(["test"])
    ndcg = a_user_ndcg(experiment)  # popularity: exactly 0 (see a_user_ndcg)
    assert ndcg["popularity"] == 0.0 and ndcg["model"] > 0.5, ndcg
    queries = experiment.queries("test")
    experiment.save()
    reloaded = load_experiment(tmp_path / "run", data_dir=None)
    assert isinstance(reloaded, LightGCNExperiment)
    user, history = tf.constant(queries.users[:5]), tf.constant(queries.history[:5])
    np.testing.assert_allclose(
        reloaded.model.score(user, history).numpy(),
        experiment.model.score(user, history).numpy(),
        rtol=1e-5,
    )
    assert reloaded.evaluate(["test"])["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"])


@pytest.mark.slow
def test_cli_trains_evaluates_and_exports(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "lightgcn", "--dataset", "synthetic", "--output-dir", str(out)]
    flags = [
        "--epochs",
        "2",
        "--embedding-dim",
        "4",
        "--set",
        "loss=softmax",
        "--set",
        "num_layers=1",
    ]
    assert main([*args, *flags]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "lightgcn"
    assert (config["model"]["loss"], config["model"]["num_layers"]) == ("softmax", 1)
    metrics = json.loads((out / "metrics.json").read_text())
    # 300 synthetic users, leave-one-out: every user is one test query.
    assert metrics["test/users"] == 300 and 0.0 <= metrics["test/ndcg@10"] <= 1.0
    assert metrics["epochs_run"] == 2.0
    assert main(["evaluate", "--model-dir", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["test/ndcg@10"] == pytest.approx(metrics["test/ndcg@10"], abs=1e-4)
    # The retrieval export answers a user unknown at training time from its history.
    request = ["recommend", "--export", str(out), "--user", "newcomer", "--history", "i1,i2"]
    assert main([*request, "-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top-3 for user 'newcomer'") and len(lines) == 4
