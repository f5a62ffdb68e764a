"""The ``mf`` kind: learning a low-rank matrix, export parity, CLI, from_dir round trip."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from process_utils import run_fresh_child
from testing_utils import import_benchmark, successor_walks

import tfrec
from tfrec.cli.main import main
from tfrec.data.interactions import Interactions
from tfrec.data.splits import leave_one_out
from tfrec.models.mf import MFConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import experiment_class
from tfrec.training.mf import MFExperiment, MFExperimentConfig


def _low_rank(num_users: int = 16, num_items: int = 10) -> Interactions:
    """Every user rates every item 3 + 1.5 * a_u * c_i, with a_u, c_i = +-1 (half each).

    A rank-1 signed pattern: each user's and each item's mean rating is 3, so
    biases alone (and the global mean) predict 3 for all, RMSE 1.5 exactly;
    the factors p_u = a_u, q_i = 1.5 c_i recover every rating.
    """
    rng = np.random.default_rng(0)
    signs_u = np.where(np.arange(num_users) % 2 == 0, 1.0, -1.0)
    signs_i = np.where(np.arange(num_items) % 2 == 0, 1.0, -1.0)
    rows = []
    for u in range(num_users):
        for t, i in enumerate(rng.permutation(num_items)):  # each user's own order in time
            rows.append((f"u{u}", f"i{i}", 100 * t, 3.0 + 1.5 * signs_u[u] * signs_i[i]))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return Interactions.from_frame(frame, name="low_rank", has_timestamps=True)


def _config(**model: object) -> MFExperimentConfig:
    mf = MFConfig(
        embedding_dim=4,
        l2=0.001,
        optimizer=OptimizerConfig(learning_rate=0.05),
        training=TrainingConfig(epochs=60, batch_size=32, patience=10),
        **model,  # type: ignore[arg-type]
    )
    return MFExperimentConfig(ranking=mf)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["biased", "pmf"])
def test_fit_recovers_a_low_rank_matrix_far_below_the_global_mean(variant):
    split = leave_one_out(_low_rank())  # test: each user's last item; valid: the one before
    experiment = MFExperiment(_config(variant=variant), split=split)
    experiment.fit()
    metrics = experiment.evaluate()
    # The global mean (3) misses every test rating (1.5 or 4.5) by 1.5: RMSE 1.5.
    test = split.test.frame["rating"].to_numpy()
    assert np.sqrt(np.mean((test - 3.0) ** 2)) == pytest.approx(1.5)
    assert metrics["test/rmse"] < 0.5, metrics  # a third of the baseline's error at most
    assert metrics["test/examples"] == 16 and metrics["valid/rmse"] < 0.5


def test_data_without_ratings_is_refused():
    split = leave_one_out(successor_walks(num_users=4))
    with pytest.raises(ValueError, match="matrix factorisation needs ratings"):
        MFExperiment(MFExperimentConfig(), split=split)


def test_the_kind_is_registered_with_its_config():
    assert experiment_class("mf") is MFExperiment
    assert MFExperiment.exports == ("ranking",)
    with pytest.raises(ValueError, match=r"MFExperimentConfig\.kind='ranking'; expected 'mf'"):
        MFExperimentConfig(kind="ranking")
    preset = MFExperiment.default_config("ml-100k")
    assert preset.kind == "mf" and preset.data.dataset == "ml-100k"
    assert MFExperiment.default_config("synthetic").ranking == MFConfig()  # no preset


REQUEST = {
    "user_id": np.array(["u0", "u0", "nobody", "u3"], dtype=object),
    "history": np.array(  # rows 0 and 1 differ only in the history: MF ignores it
        [["i1", "i2", ""], ["", "", ""], ["i4", "unknown-item", ""], ["i7", "i0", "i5"]],
        dtype=object,
    ),
    "candidates": np.array(
        [["i3", "i4"], ["i3", "i4"], ["i1", "no-such-item"], ["i0", ""]], dtype=object
    ),
}
_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    job = json.loads(sys.argv[1])
    serve = tf.saved_model.load(job["export"]).signatures["serving_default"]
    data = np.load(job["inputs"], allow_pickle=True)
    result = serve(**{k: tf.constant(data[k].astype(str)) for k in data.files})
    np.save(job["outputs"], result["scores"].numpy())
    assert "tfrec" not in sys.modules, "the serving check must not import tfrec"
    """
)


@pytest.mark.slow
def test_export_reloads_in_a_fresh_process_with_the_same_scores(tmp_path):
    experiment = MFExperiment(_config(nonnegative=True), split=leave_one_out(_low_rank()))
    experiment.fit(epochs=3)
    (path,) = experiment.export(tmp_path / "models")
    assert path == tmp_path / "models" / "ranking" / "1"
    trained = experiment.trained
    features = {
        "user": trained.user_vocab.lookup(REQUEST["user_id"]),
        "candidates": trained.item_vocab.lookup(REQUEST["candidates"]),
    }
    expected = trained.model(features).numpy()
    expected = np.where(features["candidates"] == 0, -np.inf, expected)

    np.savez(tmp_path / "inputs.npz", **REQUEST)
    job = {"export": str(path), "inputs": str(tmp_path / "inputs.npz")}
    job["outputs"] = str(tmp_path / "scores.npy")
    run_fresh_child(_CHILD, job, tmp_path)
    served = np.load(tmp_path / "scores.npy")
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served[0], served[1])  # the history has no effect
    assert np.isneginf(served[3, 1])  # the "" candidate
    # Unknown user: mu + b_i; unknown item too: mu alone (no error).
    mu = float(trained.model.global_mean.numpy())
    item_bias = trained.model.item_bias.get_weights()[0][:, 0]
    assert served[2, 0] == pytest.approx(mu + item_bias[trained.item_vocab.lookup(["i1"])[0]])
    assert served[2, 1] == pytest.approx(mu)
    config = json.loads((path / "assets.extra" / "tfrec_config.json").read_text())
    assert config["kind"] == "ranking" and config["model_config"]["nonnegative"] is True


@pytest.mark.slow
def test_cli_train_writes_rmse_and_the_run_reopens(tmp_path, capsys):
    out = tmp_path / "mf"
    code = main(
        ["train", "--model", "mf", "--dataset", "synthetic", "--output-dir", str(out),
         "--epochs", "2", "--embedding-dim", "8", "--set", "nonnegative=true"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "mf"
    assert config["ranking"]["nonnegative"] is True and config["ranking"]["embedding_dim"] == 8
    assert config["ranking"]["training"]["epochs"] == 2
    metrics = json.loads((out / "metrics.json").read_text())
    # synthetic ratings are 1..5: an RMSE above 4 would mean predictions off the scale
    assert 0.0 < metrics["test/rmse"] < 4.0 and metrics["test/mae"] <= metrics["test/rmse"]
    assert metrics["epochs_run"] == 2
    assert (out / "export" / "ranking" / "1" / "saved_model.pb").is_file()

    reopened = tfrec.load_experiment(out)  # from_dir through config.json's kind
    assert isinstance(reopened, MFExperiment) and reopened.metrics == metrics
    assert reopened.config == MFExperimentConfig.load(out / "config.json")
    again = reopened.evaluate(["test"])  # the synthetic data is regenerated from its seed
    assert again["test/rmse"] == pytest.approx(metrics["test/rmse"], abs=1e-5)
    model = reopened.trained.model  # built (and its weights restored) by the evaluation
    assert model.user_factors.get_weights()[0].min() >= 0.0  # still non-negative
    with pytest.raises(FileNotFoundError, match=r"data_spec\.json not found"):
        (out / "data_spec.json").unlink()
        MFExperiment.from_dir(out)


def test_from_dir_of_another_kind_names_the_mismatch(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "mf", "ranking": {"lstm_units": 4}}))
    with pytest.raises(ValueError, match="unknown field"):
        MFExperiment.from_dir(tmp_path)


@pytest.mark.slow
def test_rating_benchmark_measures_mf_with_the_same_folds(tmp_path):
    ranking_rating = import_benchmark("ranking_rating")
    args = ["--quick", "--model", "mf", "--folds", "1", "--output", str(tmp_path)]
    assert ranking_rating.main([*args, "--set", "nonnegative=true"]) == 0
    report = json.loads((tmp_path / "ranking_rating_mf_quick.json").read_text())
    results = report["results"]
    assert results["model"] == "mf" and results["config"]["nonnegative"] is True
    fold = results["folds"]["s1"]
    assert fold["rmse"] >= fold["mae"] > 0 and fold["epochs_run"] == 1
    markdown = (tmp_path / "ranking_rating_mf_quick.md").read_text()
    assert "Matrix factorisation (biased, nonnegative=True)" in markdown
    assert "| Surprise NMF (5-fold CV) | 0.963 | 0.758 |" in markdown
