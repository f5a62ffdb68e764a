"""The multi_scenario kind: config, mixed batches, fit/evaluate/save/reload, sub-runs, transfer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfrec
from tfrec.data.scenarios import SYNTHETIC_SCENARIOS, SyntheticScenario
from tfrec.evaluation.config import EvalConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig
from tfrec.training.experiment import experiment_class
from tfrec.training.multi_scenario import MultiScenarioExperiment, mixed_dataset
from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig, default_weights
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import PRESETS, RetrievalExperimentConfig

TINY = [
    SyntheticScenario("tiny_a", num_users=60, num_items=20, seed=1),
    SyntheticScenario("tiny_b", num_users=30, num_items=30, seed=2),
]


def _tiny_config() -> MultiScenarioExperimentConfig:
    return MultiScenarioExperimentConfig(
        scenarios=["tiny_a", "tiny_b"],
        synthetic_scenarios=TINY,
        model=RetrievalConfig(
            encoder="gru",
            embedding_dim=8,
            max_history=10,
            scenario_adapter_dim=2,  # each scenario saved, reloaded, exported with its adapter
            training=TrainingConfig(batch_size=32, epochs=4, patience=4),
        ),
        evaluation=EvalConfig(ks=[5, 10]),
        user_embeddings=[False, True],
        mean_experts=[True, False],  # tiny_a is saved, reloaded and exported with its gate
        model_name="tiny",
    )


# ---------------------------------------------------------------- config


def test_config_defaults_come_from_the_first_scenario_preset():
    config = MultiScenarioExperimentConfig.for_scenarios(["beauty", "lastfm", "ml-latest-small"])
    assert config.kind == "multi_scenario" and config.weights is None
    assert config.model == PRESETS["beauty"].model  # transformer, full softmax, lr 2e-3
    assert config.evaluation.mask == "both"
    sub = config.scenario_config("ml-latest-small")
    assert sub.kind == "retrieval" and sub.model_name == "multi_scenario_ml-latest-small"
    assert sub.data == PRESETS["ml-latest-small"].data  # its own split (random, 0.75)
    # The shared model; its own user embedding, as its preset has one (Beauty's has not),
    # and the mean expert, as ml-latest-small and Last.fm have by default (Beauty not)
    assert sub.model == dataclasses.replace(
        config.model, scenario_layers=True, use_user_embedding=True, mean_expert=True
    )
    lastfm = config.scenario_config("lastfm").model
    assert lastfm == dataclasses.replace(config.model, scenario_layers=True, mean_expert=True)
    beauty = config.scenario_config("beauty").model
    assert beauty == dataclasses.replace(config.model, scenario_layers=True)
    assert not config.model.scenario_layers and not config.model.use_user_embedding
    assert not config.model.mean_expert
    gated = dataclasses.replace(config.model, mean_expert=True)
    everywhere = dataclasses.replace(config, model=gated)
    assert all(everywhere.scenario_config(n).model.mean_expert for n in config.scenarios)
    listed = dataclasses.replace(config, mean_experts=[True, False, False])
    assert [listed.scenario_config(n).model.mean_expert for n in config.scenarios] == [
        True, False, False
    ]  # fmt: skip
    chosen = dataclasses.replace(config, user_embeddings=[True, True, False])
    assert [chosen.scenario_config(n).model.use_user_embedding for n in chosen.scenarios] == [
        True, True, False
    ]  # fmt: skip
    again = MultiScenarioExperimentConfig.from_json(config.to_json())
    assert again == config
    synthetic = MultiScenarioExperimentConfig.from_json(_tiny_config().to_json())
    assert synthetic.synthetic_scenarios == TINY
    assert synthetic.scenario_config("tiny_b").data == TINY[1].data_config()
    assert config.scenario_config("lastfm").data.data_dir is None
    with_dir = dataclasses.replace(config, data_dir="/data")
    assert with_dir.scenario_config("lastfm").data.data_dir == "/data"
    assert experiment_class("multi_scenario") is MultiScenarioExperiment


def test_config_errors_name_the_field():
    make = MultiScenarioExperimentConfig
    with pytest.raises(ValueError, match=r"scenarios: unknown \['nope'\]"):
        make(scenarios=["beauty", "nope"])
    with pytest.raises(ValueError, match=r"scenarios=\['lastfm', 'lastfm'\]; expected distinct"):
        make(scenarios=["lastfm", "lastfm"])
    with pytest.raises(ValueError, match=r"scenarios=\[\]"):
        make(scenarios=[])
    with pytest.raises(ValueError, match=r"weights=\[1.0\]; expected 2 finite numbers > 0"):
        make(scenarios=["beauty", "lastfm"], weights=[1.0])
    with pytest.raises(ValueError, match=r"weights=\[1.0, 0.0\]"):
        make(scenarios=["beauty", "lastfm"], weights=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"user_embeddings=\[True\]; expected 2 booleans"):
        make(scenarios=["beauty", "lastfm"], user_embeddings=[True])
    with pytest.raises(ValueError, match=r"mean_experts=\[True\]; expected 2 booleans"):
        make(scenarios=["beauty", "lastfm"], mean_experts=[True])
    id_only = RetrievalConfig(encoder="none", use_user_embedding=True)
    with pytest.raises(ValueError, match=r"model.encoder='none'; expected a history encoder"):
        make(scenarios=["lastfm"], model=id_only)
    xla = RetrievalConfig(encoder="gru", training=TrainingConfig(jit_compile=True))
    with pytest.raises(ValueError, match=r"jit_compile=True; expected False: XLA does not"):
        make(scenarios=["lastfm"], model=xla)
    with pytest.raises(ValueError, match=r"kind='retrieval'"):
        make(scenarios=["lastfm"], kind="retrieval")
    single = RetrievalExperimentConfig.for_dataset("synthetic")
    single.model = dataclasses.replace(single.model, mean_expert=True)
    with pytest.raises(ValueError, match=r"model.mean_expert=True needs scenario_layers=True"):
        RetrievalExperiment(single)
    single.model = dataclasses.replace(single.model, mean_expert=False, scenario_adapter_dim=4)
    with pytest.raises(ValueError, match=r"model.scenario_adapter_dim=4 needs scenario_layers"):
        RetrievalExperiment(single)
    with pytest.raises(ValueError, match=r"scenario_adapter_dim=-2; expected an integer >= 0"):
        RetrievalConfig(scenario_adapter_dim=-2)
    with pytest.raises(ValueError, match=r"SyntheticScenario.num_users=0"):
        SyntheticScenario("x", num_users=0)
    # budgets 100 x 2 = 200 and 10 x 10 = 100 examples -> 2/3 and 1/3
    assert default_weights([100, 10], [2, 10]) == pytest.approx([2 / 3, 1 / 3])
    with pytest.raises(ValueError, match=r"examples=\[100\], epochs=\[2, 10\]; expected one"):
        default_weights([100], [2, 10])
    assert sorted(SYNTHETIC_SCENARIOS) == [
        "synthetic_a",
        "synthetic_b",
        "synthetic_new",
        "synthetic_small",
    ]


# ---------------------------------------------------------------- mixed batches


def test_mixed_dataset_draws_each_batch_from_one_scenario_by_weight():
    # Scenario 0's batches hold target 7, scenario 1's target 9 (two rows each).
    datasets = [
        tf.data.Dataset.from_tensors({"target": tf.fill([2, 1], value)}) for value in (7, 9)
    ]
    batches = list(mixed_dataset(datasets, [3.0, 1.0], seed=0).take(2000).as_numpy_iterator())
    scenarios = np.array([batch["scenario"] for batch in batches])  # [2000, 2]
    targets = np.array([batch["target"][:, 0] for batch in batches])  # [2000, 2]
    assert (scenarios[:, 0] == scenarios[:, 1]).all()  # one scenario per batch
    np.testing.assert_array_equal(targets, np.where(scenarios == 0, 7, 9))
    # Weights 3:1 -> 3/4 of the batches from scenario 0 (binomial sd 0.01 over 2000 draws).
    assert scenarios[:, 0].mean() == pytest.approx(0.25, abs=0.03)
    switches = (scenarios[1:, 0] != scenarios[:-1, 0]).mean()
    assert switches > 0.3  # interleaved (2 * 3/4 * 1/4 = 0.375 expected), not in blocks


# ---------------------------------------------------------------- a saved run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, MultiScenarioExperiment]:
    root = tmp_path_factory.mktemp("multi") / "run"
    keras.utils.set_random_seed(0)
    experiment = MultiScenarioExperiment(_tiny_config(), output_dir=root)
    experiment.fit()
    experiment.evaluate()
    experiment.save()
    return root, experiment


def test_metrics_are_reported_per_scenario(run):
    root, experiment = run
    saved = json.loads((root / "metrics.json").read_text())
    assert saved == pytest.approx(experiment.metrics)
    for name in ("tiny_a", "tiny_b"):
        for part in ("test", "valid"):
            assert 0.0 <= saved[f"{name}/{part}/ndcg@10"] <= saved[f"{name}/{part}/hr@10"] <= 1.0
        assert saved[f"{name}/test/users"] == {"tiny_a": 60, "tiny_b": 30}[name]
    assert saved["epochs_run"] == 4 and "train_seconds" in saved
    history = json.loads((root / "history.json").read_text())
    # The monitored value is the mean over scenarios, epoch by epoch.
    for epoch in range(4):
        pair = [history[f"val_{name}/ndcg@10"][epoch] for name in ("tiny_a", "tiny_b")]
        assert history["val_ndcg@10"][epoch] == pytest.approx(np.mean(pair))
    sub_history = json.loads((root / "tiny_b" / "history.json").read_text())
    assert sub_history["val_ndcg@10"] == history["val_tiny_b/ndcg@10"]
    assert sub_history["loss"] == history["loss"]


def test_each_scenario_is_reported_at_its_own_best_validation_epoch(run):
    root, _ = run
    saved = json.loads((root / "metrics.json").read_text())
    history = json.loads((root / "history.json").read_text())
    for name in ("tiny_a", "tiny_b"):
        curve = history[f"val_{name}/ndcg@10"]
        best = int(np.argmax(curve))  # the first maximum, as a later tie is no improvement
        assert saved[f"{name}/best_epoch"] == best + 1
        # re-evaluating the validation part with its snapshot gives that epoch's value
        assert saved[f"{name}/valid/ndcg@10"] == pytest.approx(curve[best], abs=1e-5)
    # the monitor: the mean over scenarios of each one's best so far
    running = [np.maximum.accumulate(history[f"val_{n}/ndcg@10"]) for n in ("tiny_a", "tiny_b")]
    np.testing.assert_allclose(history["val_best_ndcg@10"], np.mean(running, axis=0), rtol=1e-6)
    state = json.loads((root / "scenario_best.json").read_text())
    assert state["epochs"] == {n: saved[f"{n}/best_epoch"] - 1 for n in ("tiny_a", "tiny_b")}


def test_a_reopened_run_evaluates_each_scenario_with_its_snapshot(run):
    root, _ = run
    saved = json.loads((root / "metrics.json").read_text())
    reopened = tfrec.load_experiment(root)
    # Scramble the shared encoder: the snapshots (read back from the sub-runs) still rule.
    rng = np.random.default_rng(0)
    encoder = reopened.model.encoder
    encoder.set_weights([rng.normal(size=w.shape) for w in encoder.get_weights()])
    keys = [f"{name}/valid/ndcg@10" for name in ("tiny_a", "tiny_b")]
    got = reopened.evaluate(["valid"])
    assert {k: got[k] for k in keys} == pytest.approx({k: saved[k] for k in keys}, abs=1e-5)
    reopened.best.forget()  # now the scrambled encoder is what they run on
    scrambled = reopened.evaluate(["valid"])
    assert all(abs(scrambled[k] - saved[k]) > 1e-3 for k in keys), (scrambled, saved)


def test_the_run_layout_holds_the_multi_model_and_complete_sub_runs(run):
    root, _ = run
    assert json.loads((root / "config.json").read_text())["kind"] == "multi_scenario"
    assert (root / "weights" / "model.index").is_file()
    assert (root / "checkpoints" / "last.index").is_file()
    metrics = json.loads((root / "metrics.json").read_text())
    for name in ("tiny_a", "tiny_b"):
        sub = root / name
        config = json.loads((sub / "config.json").read_text())
        assert config["kind"] == "retrieval" and config["model"]["scenario_layers"] is True
        assert config["model_name"] == f"tiny_{name}"
        # user_embeddings=[False, True]: only tiny_b's query tower has a user vector;
        # mean_experts=[True, False]: only tiny_a's encoder is gated
        assert config["model"]["use_user_embedding"] is (name == "tiny_b")
        assert config["model"]["mean_expert"] is (name == "tiny_a")
        assert config["model"]["scenario_adapter_dim"] == 2
        assert (f"{name}/mean_expert_weight" in metrics) is (name == "tiny_a")
        for file in ("user_vocab.txt", "item_vocab.txt", "weights/model.index", "history.json"):
            assert (sub / file).is_file(), (name, file)
        own = json.loads((sub / "metrics.json").read_text())
        assert own["test/ndcg@10"] == metrics[f"{name}/test/ndcg@10"]


def test_each_scenario_trains_its_own_adapter(run):
    _, experiment = run
    ups = {}
    for name in ("tiny_a", "tiny_b"):
        encoder = experiment.model.scenarios[name].query_tower.encoder
        adapter = encoder.adapter
        assert adapter.down_kernel.shape == (8, 2) and adapter.up_kernel.shape == (2, 8)  # r = 2
        ups[name] = adapter.up_kernel.numpy()
        assert np.abs(ups[name]).max() > 0  # initialised at zero, moved by training
    assert not np.allclose(ups["tiny_a"], ups["tiny_b"])


def test_from_dir_reproduces_the_saved_metrics(run):
    root, _ = run
    saved = json.loads((root / "metrics.json").read_text())
    reopened = tfrec.load_experiment(root)
    assert isinstance(reopened, MultiScenarioExperiment)
    assert reopened.metrics == saved
    metrics = reopened.evaluate(["test"])
    keys = [f"{name}/test/{m}" for name in ("tiny_a", "tiny_b") for m in ("ndcg@10", "mrr")]
    assert {k: metrics[k] for k in keys} == pytest.approx({k: saved[k] for k in keys}, abs=1e-5)


def test_a_sub_run_loads_alone_and_exports_with_the_shared_encoder(run, tmp_path):
    root, experiment = run
    saved = json.loads((root / "metrics.json").read_text())
    alone = tfrec.load_experiment(root / "tiny_b")
    assert isinstance(alone, RetrievalExperiment)
    assert alone.evaluate(["test"])["test/ndcg@10"] == pytest.approx(
        saved["tiny_b/test/ndcg@10"], abs=1e-5
    )
    # Its encoder holds the shared weights the multi model had at tiny_b's best epoch.
    with experiment.best.applied("tiny_b", experiment.model.scenarios["tiny_b"]):
        shared = experiment.model.encoder.get_weights()
    for got, want in zip(
        alone.model.query_tower.encoder.encoder.get_weights(), shared, strict=True
    ):
        np.testing.assert_allclose(got, want)
    [path] = alone.export(tmp_path / "exports", version=1)
    assert path == tmp_path / "exports" / "tiny_tiny_b" / "1"
    # The servable scores like the in-process scenario model (history excluded).
    queries = alone.queries("test")
    rows = np.arange(4)
    tokens = [[alone.item_vocab.token(int(i)) for i in h if i > 1] for h in queries.history[rows]]
    width = max(len(t) for t in tokens)
    history = np.array([[""] * (width - len(t)) + t for t in tokens], dtype=object)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](
        user_id=tf.constant(np.asarray(queries.user_ids)[rows].astype(object)),
        history=tf.constant(history),
        k=tf.constant([5] * len(rows), tf.int32),
    )
    model = experiment.model.scenarios["tiny_b"]
    with experiment.best.applied("tiny_b", model):  # its own best epoch's weights
        scores = model.score(
            tf.constant(queries.users[rows]), tf.constant(queries.history[rows])
        ).numpy()
    for row, seen in enumerate(queries.history[rows]):
        scores[row, seen[seen > 1]] = -np.inf
    expected = -np.sort(-scores, axis=1)[:, :5]
    np.testing.assert_allclose(served["scores"].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_export_writes_one_servable_per_scenario(run, tmp_path):
    _, experiment = run
    paths = experiment.export(tmp_path, version=3, model_name="shop")
    assert paths == [tmp_path / "shop_tiny_a" / "3", tmp_path / "shop_tiny_b" / "3"]
    assert all((p / "saved_model.pb").is_file() for p in paths)


# ---------------------------------------------------------------- planted structure


@pytest.mark.slow
def test_the_joint_model_beats_a_separate_model_on_the_smallest_scenario():
    """The same successor dynamics in two scenarios; the small one has ~3 events per item.

    Measured (GRU 32, lr 3e-3, uniform weights): with these registered scenarios the
    joint model's test NDCG@10 on ``synthetic_small`` is 0.496 against 0.343 for the
    separate model (+0.15; training seeds 1 and 2: +0.11, +0.14). Over 8 other data
    seeds the gain was +0.03 to +0.16 (mean +0.11): the data draw matters more than
    the initialisation. The assertion asks for +0.05, under half the smallest gain
    measured on this data, so other machines' numerics do not flip it.
    """
    model = RetrievalConfig(
        encoder="gru",
        embedding_dim=32,
        optimizer=OptimizerConfig(learning_rate=3e-3),
        training=TrainingConfig(batch_size=64, epochs=40, patience=5, seed=0),
    )
    keras.utils.set_random_seed(0)
    joint = MultiScenarioExperiment(
        MultiScenarioExperimentConfig(scenarios=["synthetic_a", "synthetic_small"], model=model)
    )
    joint.fit()
    joint_ndcg = joint.evaluate(["test"])["synthetic_small/test/ndcg@10"]
    # The separate model: the same architecture trained on synthetic_small alone, one
    # batch per epoch, 300 epochs (more steps on this scenario than the joint run's
    # ~120), the best validation epoch kept.
    keras.utils.set_random_seed(0)
    config = joint.config.scenario_config("synthetic_small")
    loop = dataclasses.replace(model.training, epochs=300, patience=300)
    config.model = dataclasses.replace(model, training=loop)
    separate = RetrievalExperiment(config)
    separate.fit()
    separate_ndcg = separate.evaluate(["test"])["test/ndcg@10"]
    assert joint_ndcg > separate_ndcg + 0.05, (joint_ndcg, separate_ndcg)


def test_a_resumed_run_keeps_the_snapshots_of_the_epochs_before(tmp_path):
    config = _tiny_config()
    keras.utils.set_random_seed(0)
    MultiScenarioExperiment(config, output_dir=tmp_path).fit(epochs=2)
    resumed = MultiScenarioExperiment(config, output_dir=tmp_path)
    resumed.fit(epochs=4, resume=True)
    history = resumed.history
    assert len(history["loss"]) == 4
    for name in ("tiny_a", "tiny_b"):
        curve = history[f"val_{name}/ndcg@10"]
        # epochs 1-2 ran in the first process; a best among them survives the restart
        assert resumed.best.epochs[name] == int(np.argmax(curve))
        assert resumed.best.values[name] == pytest.approx(max(curve))


def test_a_gated_first_preset_does_not_gate_every_scenario():
    # lastfm's own preset has the mean expert; listed first it gives the shared model
    # its architecture, but the gate stays a per-scenario default (Beauty: none).
    config = MultiScenarioExperimentConfig(scenarios=["lastfm", "beauty"])
    assert not config.model.mean_expert and not config.model.scenario_layers
    assert [config.scenario_config(n).model.mean_expert for n in config.scenarios] == [True, False]


def test_a_listed_history_longer_than_the_shared_positions_widens_the_encoder():
    # The shared model asks for 6 positions, a scenario reads 10: the encoder gets 10 and
    # each sub-run carries them (the shorter one too), instead of failing its own check.
    config = _tiny_config()
    config.model = dataclasses.replace(config.model, max_history=4, max_positions=6)
    config = dataclasses.replace(config, max_histories=[10, 4])
    assert config.encoder_positions == 10
    subs = [config.scenario_config(name).model for name in config.scenarios]
    assert [(m.max_history, m.max_positions) for m in subs] == [(10, None), (4, 10)]


def test_scenarios_read_their_own_history_lengths_on_one_encoder(tmp_path):
    config = dataclasses.replace(_tiny_config(), max_histories=[4, 10])
    loop = dataclasses.replace(config.model.training, epochs=1)
    config.model = dataclasses.replace(config.model, encoder="transformer", training=loop)
    keras.utils.set_random_seed(0)
    experiment = MultiScenarioExperiment(config, output_dir=tmp_path / "run")
    # One transformer with the longest history's 10 positions (embedding_dim 8).
    weights = {w.name.split("/")[-2]: w.shape for w in experiment.model.encoder.weights}
    assert weights["positions"] == (10, 8)
    subs = {name: sub.config.model for name, sub in experiment.experiments.items()}
    assert (subs["tiny_a"].max_history, subs["tiny_a"].max_positions) == (4, 10)
    assert (subs["tiny_b"].max_history, subs["tiny_b"].max_positions) == (10, None)
    # The mixed stream carries each scenario's batches at its own width.
    dataset, _ = experiment.train_dataset()
    widths = {0: set(), 1: set()}
    for batch in dataset.take(20).as_numpy_iterator():
        widths[int(batch["scenario"][0])].add(batch["history"].shape[1])
    assert widths == {0: {4}, 1: {10}}
    experiment.fit()
    saved = experiment.evaluate(["test"])
    experiment.save()
    # tiny_a's sub-run rebuilds the 10-position encoder alone and reproduces its metrics.
    alone = tfrec.load_experiment(tmp_path / "run" / "tiny_a")
    assert alone.config.model.encoder_positions == 10
    got = alone.evaluate(["test"])["test/ndcg@10"]
    assert got == pytest.approx(saved["tiny_a/test/ndcg@10"], abs=1e-5)
    with pytest.raises(ValueError, match=r"max_histories=\[4\]; expected 2 integers >= 1"):
        dataclasses.replace(config, max_histories=[4])
