"""End to end on the real MovieLens 100K files: train, evaluate, export, reload, recommend."""

from __future__ import annotations

import json

import numpy as np
import pytest
from testing_utils import ExportCase, check_in_fresh_process, eager_top_k

from tfrec.cli.main import main
from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experiment(shared_datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml100k")
    config = RetrievalExperimentConfig.for_dataset("ml-100k", data_dir=str(shared_datasets))
    config.model.training.epochs = 3
    config.evaluation.sampled_negatives = 100
    exp = RetrievalExperiment(config, output_dir=out)
    exp.fit(verbose=0)
    exp.evaluate()
    exp.save(out)
    return exp


def test_protocol_and_metrics_are_sane(experiment):
    m = experiment.metrics
    # random 75/25 split per user over 943 users who all have >= 20 ratings: all are tested
    assert m["test/users"] == 943
    assert experiment.split.protocol == "random_per_user"
    # 3 epochs is far from converged, but must beat random ranking by a wide margin:
    # ~25 test items per user among ~1,600 unseen -> a random top-10 hits ~1.5% per slot.
    assert m["test/precision@10"] > 0.05
    for k in (1, 5, 10, 20, 50, 100):
        assert 0.0 <= m[f"test/ndcg@{k}"] <= 1.0
        assert m[f"test/hr@{k}"] >= m[f"test/precision@{k}"]
    assert m["test/hr@100"] >= m["test/hr@10"] >= m["test/hr@1"]
    # the sampled protocol (1 positive vs 100 negatives) is much easier than full ranking
    assert m["test_sampled/hr@10"] > m["test/recall@10"]


def test_export_reloads_in_a_fresh_process_with_identical_top_k(experiment, tmp_path):
    [path] = experiment.export(tmp_path / "serving")
    assert path.name == "1" and (path / "saved_model.pb").is_file()
    exported = json.loads((path / "assets.extra" / "tfrec_config.json").read_text())
    assert exported["kind"] == "retrieval" and exported["schema_version"] == 1
    assert exported["experiment_config"] == json.loads(experiment.config.to_json())
    queries = experiment.queries("test")
    rows = np.arange(5)
    history = np.array(
        [[experiment.item_vocab.token(int(i)) for i in queries.history[r]] for r in rows],
        dtype=object,
    )
    inputs = {
        "user_id": np.array([queries.user_ids[r] for r in rows] + ["unknown"], dtype=object),
        "history": np.vstack([history, [["unknown-item"] * history.shape[1]]]),
        "k": np.array([10, 10, 5, 20, 10, 10], dtype=np.int32),
    }
    vocabs = (experiment.user_vocab, experiment.item_vocab)
    ids, scores = eager_top_k(experiment.model, *vocabs, inputs)
    check_in_fresh_process([ExportCase("ml100k", path, inputs, ids, scores)], tmp_path)


def test_cli_recommend_shows_movie_titles(experiment, tmp_path, capsys):
    experiment.export(tmp_path / "serving")
    user = experiment.queries("test").user_ids[0]
    assert main(["recommend", "--export", str(tmp_path / "serving"), "--user", user]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"top-10 for user '{user}'")
    # u.item titles end with the release year, e.g. "Star Wars (1977)"
    assert sum(line.rstrip().endswith(")") for line in out[1:]) == 10
