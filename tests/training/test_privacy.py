"""DP-SGD: per-example clipping, Gaussian noise, the dp-accounting budget, config and CLI."""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras
from dp_accounting import rdp
from testing_utils import rotating_walks, successor_walks

from tfrec.cli.main import main
from tfrec.cli.train import _check_privacy
from tfrec.data.interactions import Interactions
from tfrec.data.splits import leave_one_out
from tfrec.models.base import TfrecModel
from tfrec.models.dp_step import DpSgdStep
from tfrec.models.lightgcn import LightGCNConfig
from tfrec.models.mf import MFConfig
from tfrec.models.ranking import RankingConfig
from tfrec.tasks.config import RankingLossConfig
from tfrec.training.config import TrainingConfig
from tfrec.training.experiment import experiment_class, experiment_kinds
from tfrec.training.lightgcn import LightGCNExperiment, LightGCNExperimentConfig
from tfrec.training.mf import MFExperiment, MFExperimentConfig
from tfrec.training.privacy import (
    PrivateTraining,
    attach_dp_sgd,
    compute_epsilon,
    noise_for_epsilon,
)
from tfrec.training.privacy_config import DP_KINDS, DP_REFUSED, PrivacyConfig
from tfrec.training.ranking import RankingExperiment
from tfrec.training.ranking_config import RankingExperimentConfig
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig


class LinearToy(TfrecModel):
    """loss = mean_b (emb[item_b] . x_b + w * z_b): gradients x_b on row item_b, z_b on w."""

    def __init__(self, vocab: int = 10, dim: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.emb = keras.layers.Embedding(vocab, dim, embeddings_initializer="zeros")
        self.w = self.add_weight(name="w", shape=(), initializer="zeros")

    def compute_loss(self, features, training=False):
        rows = self.emb(features["item"])  # [B, D]
        per_example = tf.reduce_sum(rows * features["x"], axis=1) + self.w * features["z"]  # [B]
        return tf.reduce_mean(per_example)


def crafted_batch() -> dict[str, np.ndarray]:
    # example 0: row 1 grad [3,0,0,0], w grad 4 -> norm 5 -> clipped to [0.6,0,0,0], 0.8
    # example 1: row 2 grad [0,0,0,0.5], w grad 0 -> norm 0.5 -> unchanged
    # example 2: row 1 grad [0,100,0,0] (the huge one) -> clipped to [0,1,0,0]
    return {
        "item": np.array([1, 2, 1], np.int32),
        "x": np.array([[3, 0, 0, 0], [0, 0, 0, 0.5], [0, 100, 0, 0]], np.float32),
        "z": np.array([4, 0, 0], np.float32),
    }


def toy(vocab: int = 10, learning_rate: float = 1.0) -> LinearToy:
    model = LinearToy(vocab)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    return model


def one_step(model: LinearToy, batch: dict[str, np.ndarray]) -> None:
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(len(batch["item"]))
    model.fit(dataset, epochs=1, verbose=0)


def test_update_is_the_mean_of_the_clipped_per_example_gradients():
    model = toy()
    attach_dp_sgd(model, l2_clip=1.0, noise_multiplier=0.0)
    one_step(model, crafted_batch())
    table = model.emb.embeddings.numpy()
    # SGD lr 1 from zeros: weights = -(sum of clipped gradients) / 3
    expected = np.zeros([10, 4], np.float32)
    expected[1] = -np.array([0.6, 1.0, 0, 0]) / 3
    expected[2] = -np.array([0, 0, 0, 0.5]) / 3
    np.testing.assert_allclose(table, expected, atol=1e-6)
    assert model.w.numpy() == pytest.approx(-0.8 / 3, abs=1e-6)


def test_every_microbatch_gradient_norm_is_at_most_the_clip():
    model, batch = toy(), crafted_batch()
    model.compute_loss({k: v[:1] for k, v in batch.items()})  # build
    step = DpSgdStep(l2_clip=1.0, noise_multiplier=0.0)
    size = tf.constant(3)
    norms = [
        float(tf.linalg.global_norm(step._clipped(model, batch, tf.constant(i), size)[0]))
        for i in range(3)
    ]
    # clipped norms 1, 0.5 (below the clip: unchanged), 1
    np.testing.assert_allclose(norms, [1.0, 0.5, 1.0], atol=1e-6)


def test_microbatches_of_two_clip_each_group_and_keep_the_short_last_one():
    model = toy()
    attach_dp_sgd(model, l2_clip=1.0, noise_multiplier=0.0, microbatch_size=2)
    one_step(model, crafted_batch())
    # group {0,1}: mean loss -> row1 [1.5,0,0,0], row2 [0,0,0,0.25], w 2; norm sqrt(6.3125)
    # group {2}: row1 [0,100,0,0] -> clipped [0,1,0,0]; K = 2 groups
    scale = 1 / math.sqrt(6.3125)
    row1 = (np.array([1.5, 0, 0, 0]) * scale + np.array([0, 1, 0, 0])) / 2
    np.testing.assert_allclose(model.emb.embeddings.numpy()[1], -row1, atol=1e-6)
    np.testing.assert_allclose(
        model.emb.embeddings.numpy()[2], [0, 0, 0, -0.125 * scale], atol=1e-6
    )
    assert model.w.numpy() == pytest.approx(-2 * scale / 2, abs=1e-6)


def test_noise_covers_every_coordinate_with_the_right_std_and_is_seeded():
    zero = {
        "item": np.array([3], np.int32),
        "x": np.zeros([1, 4], np.float32),
        "z": np.zeros([1], np.float32),
    }
    tables = []
    for _ in range(2):
        model = toy(vocab=1000)
        attach_dp_sgd(model, l2_clip=0.5, noise_multiplier=2.0, seed=7)
        one_step(model, zero)
        tables.append(model.emb.embeddings.numpy())
    # zero gradient, K = 1: the update is pure noise of std sigma * C = 1 on all 4000 coordinates
    noise = -tables[0]
    assert np.all(noise != 0)  # every row, not only the looked-up one
    assert abs(noise.std() - 1.0) < 0.05  # the sample std's own std is ~0.011
    assert abs(noise.mean()) < 0.07  # ~4.4 standard errors
    np.testing.assert_array_equal(tables[0], tables[1])  # same seed, same noise


def test_without_dp_the_step_is_the_plain_gradient_step():
    batch = crafted_batch()
    plain, dp_one_group = toy(), toy()
    attach_dp_sgd(dp_one_group, l2_clip=1e9, noise_multiplier=0.0, microbatch_size=3)
    assert plain.dp_sgd is None
    one_step(plain, batch)
    one_step(dp_one_group, batch)
    # unclipped mean gradient: row1 (x0 + x2) / 3, row2 x1 / 3, w 4 / 3
    expected_row1 = -np.array([3, 100, 0, 0]) / 3
    np.testing.assert_allclose(plain.emb.embeddings.numpy()[1], expected_row1, rtol=1e-6)
    assert plain.w.numpy() == pytest.approx(-4 / 3)
    for a, b in zip(plain.get_weights(), dp_one_group.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_epsilon_is_dp_accountings_own_computation():
    q, sigma, steps, delta = 0.01, 1.1, 1000, 1e-5
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    assert compute_epsilon(q, sigma, steps, delta) == pytest.approx(accountant.get_epsilon(delta))
    assert compute_epsilon(q, 0.0, steps, delta) == math.inf
    assert compute_epsilon(q, sigma, 0, delta) == 0.0


def test_noise_for_epsilon_hits_the_target_from_above():
    q, steps, delta = 0.05, 200, 1e-4
    sigma = noise_for_epsilon(3.0, q, steps, delta)
    assert compute_epsilon(q, sigma, steps, delta) <= 3.0
    assert compute_epsilon(q, sigma * 0.98, steps, delta) > 3.0


def test_private_training_reports_the_run_and_halves_sigma_for_microbatches():
    training = TrainingConfig(batch_size=8, privacy=PrivacyConfig(noise_multiplier=1.0))
    run = PrivateTraining.create(training, num_examples=80)
    run.steps = 30
    report = run.report()
    assert report["privacy/delta"] == pytest.approx(1 / 80)
    assert report["privacy/sampling_rate"] == pytest.approx(0.1)
    assert report["privacy/epsilon"] == pytest.approx(compute_epsilon(0.1, 1.0, 30, 1 / 80))
    grouped = TrainingConfig(batch_size=8, privacy=PrivacyConfig(1.0, microbatches=4))
    run2 = PrivateTraining.create(grouped, num_examples=80)
    run2.steps = 30  # microbatches of 2: sensitivity 2C, the accountant's sigma is 0.5
    assert run2.epsilon() == pytest.approx(compute_epsilon(0.1, 0.5, 30, 1 / 80))
    assert PrivateTraining.create(TrainingConfig(), num_examples=80) is None


def test_tiny_retrieval_run_records_the_budget_of_its_steps(tmp_path):
    config = RetrievalExperimentConfig.for_dataset("synthetic")
    config.model.encoder, config.model.embedding_dim, config.model.max_history = "mean", 4, 4
    config.model.training = TrainingConfig(
        epochs=2, batch_size=16, patience=5, privacy=PrivacyConfig(noise_multiplier=1.5)
    )
    experiment = RetrievalExperiment(config, data=successor_walks(num_users=20, length=6))
    experiment.fit()
    n = experiment.num_examples
    steps = 2 * math.ceil(n / 16)  # two full epochs, no early stop with patience 5
    metrics = experiment.metrics
    assert metrics["privacy/steps"] == steps
    assert metrics["privacy/delta"] == pytest.approx(1 / n)
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(16 / n, dp_accounting.GaussianDpEvent(1.5))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    assert metrics["privacy/epsilon"] == pytest.approx(accountant.get_epsilon(1 / n))


@pytest.mark.slow
def test_cli_flags_land_in_config_json_and_metrics_json_has_epsilon(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--no-export"]
    model = ["--epochs", "1", "--encoder", "mean", "--set", "embedding_dim=4", "--batch-size", "64"]
    dp = ["--dp-noise-multiplier", "1.2", "--dp-l2-clip", "0.5", "--dp-delta", "1e-4"]
    assert main([*args, *model, *dp]) == 0
    privacy = json.loads((out / "config.json").read_text())["model"]["training"]["privacy"]
    assert privacy["noise_multiplier"] == 1.2 and privacy["l2_clip"] == 0.5
    assert privacy["delta"] == 1e-4 and privacy["microbatches"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["privacy/epsilon"] < math.inf and metrics["privacy/delta"] == 1e-4
    assert metrics["privacy/steps"] >= 1 and metrics["privacy/l2_clip"] == 0.5
    assert '"privacy/epsilon"' in capsys.readouterr().out  # the run summary shows it


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"privacy": PrivacyConfig(1.0, microbatches=3)}, "microbatches=3 does not divide"),
        ({"privacy": PrivacyConfig(1.0), "mixed_precision": True}, "mixed_precision=True"),
        ({"privacy": PrivacyConfig(1.0), "strategy": "mirrored"}, "strategy='mirrored'"),
    ],
)
def test_training_config_refuses_what_dp_sgd_does_not_support(kwargs, needle):
    with pytest.raises(ValueError, match=r"TrainingConfig\.privacy") as err:
        TrainingConfig(batch_size=8, **kwargs)
    assert needle in str(err.value)


def test_privacy_config_messages_name_the_field():
    with pytest.raises(ValueError, match=r"noise_multiplier=-1"):
        PrivacyConfig(noise_multiplier=-1)
    with pytest.raises(ValueError, match=r"l2_clip=0"):
        PrivacyConfig(l2_clip=0)
    with pytest.raises(ValueError, match=r"delta=1.5"):
        PrivacyConfig(delta=1.5)
    with pytest.raises(ValueError, match="give one of them"):
        PrivacyConfig(noise_multiplier=1.0, target_epsilon=3.0)
    assert not PrivacyConfig().enabled and PrivacyConfig(target_epsilon=1.0).enabled
    # off: nothing is checked against the loop
    assert TrainingConfig(batch_size=8, mixed_precision=True).privacy.enabled is False


@pytest.mark.slow
def test_ranker_kind_trains_with_dp_sgd_and_records_its_budget():
    training = TrainingConfig(epochs=1, batch_size=4, privacy=PrivacyConfig(noise_multiplier=2.0))
    ranking = RankingConfig(
        objective="next_item", embedding_dim=4, lstm_units=4, mlp_layers=[4], max_history=3,
        eval_negatives=3, num_candidates=4, loss=RankingLossConfig(num_negatives=2),
        training=training,
    )  # fmt: skip
    split = leave_one_out(rotating_walks(num_users=6, length=5))
    experiment = RankingExperiment(RankingExperimentConfig(ranking=ranking), split=split)
    experiment.fit()
    assert experiment.trained.model.dp_sgd is not None
    n = experiment.metrics["privacy/sampling_rate"]  # q = 4 / training rows
    steps = experiment.metrics["privacy/steps"]
    assert steps == int(experiment.trained.model.optimizer.iterations.numpy()) >= 1
    expected = compute_epsilon(n, 2.0, int(steps), experiment.metrics["privacy/delta"])
    assert experiment.metrics["privacy/epsilon"] == pytest.approx(expected)


def test_cli_refuses_dp_for_a_kind_without_dp_sgd():
    config = RetrievalExperimentConfig.for_dataset("synthetic")
    config.model.training = TrainingConfig(privacy=PrivacyConfig(noise_multiplier=1.0))
    _check_privacy("retrieval", config)  # supported: no error
    with pytest.raises(ValueError, match="--model other_kind: DP-SGD"):
        _check_privacy("other_kind", config)
    _check_privacy("mf", MFExperimentConfig(ranking=MFConfig(training=config.model.training)))
    with pytest.raises(ValueError, match=r"--model lightgcn: DP-SGD .*graph built from every"):
        _check_privacy("lightgcn", config)  # the retrieval config's "model" section


def test_every_kind_either_trains_with_dp_sgd_or_refuses_it():
    kinds = set(experiment_kinds())
    assert {"mf", "lightgcn"} <= kinds
    assert set(DP_KINDS) | set(DP_REFUSED) == kinds  # a new kind must be classified
    assert not set(DP_KINDS) & set(DP_REFUSED)


def _ratings(num_users: int = 4, num_items: int = 5) -> Interactions:
    """Every user rates every item once, at times 0, 100, ..."""
    rows = [
        (f"u{u}", f"i{i}", 100 * i, float(1 + (u + i) % 5))
        for u in range(num_users)
        for i in range(num_items)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return Interactions.from_frame(frame, name="ratings", has_timestamps=True)


def test_mf_kind_trains_with_dp_sgd_and_writes_its_budget_to_metrics_json(tmp_path):
    # leave_one_out on 4 users x 5 ratings: test = each user's last rating, valid = the one
    # before, so 4 * 3 = 12 training rows. Batches of 4: 3 steps in the one epoch,
    # q = 4 / 12 and delta = 1 / 12 (the default, 1 / rows).
    training = TrainingConfig(epochs=1, batch_size=4, privacy=PrivacyConfig(noise_multiplier=1.5))
    config = MFExperimentConfig(ranking=MFConfig(embedding_dim=4, training=training))
    experiment = MFExperiment(config, output_dir=tmp_path, split=leave_one_out(_ratings()))
    experiment.fit()
    assert experiment.trained.model.dp_sgd is not None
    experiment.save()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["privacy/steps"] == 3 == experiment.trained.model.optimizer.iterations.numpy()
    assert metrics["privacy/sampling_rate"] == pytest.approx(4 / 12)
    assert metrics["privacy/delta"] == pytest.approx(1 / 12)
    assert metrics["privacy/noise_multiplier"] == 1.5
    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(4 / 12, dp_accounting.GaussianDpEvent(1.5))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, 3))
    assert metrics["privacy/epsilon"] == pytest.approx(accountant.get_epsilon(1 / 12))


@pytest.mark.parametrize(
    ("privacy", "needle"),
    [
        (PrivacyConfig(noise_multiplier=1.0), "noise_multiplier=1.0, target_epsilon=None"),
        (PrivacyConfig(target_epsilon=2.0), "noise_multiplier=0.0, target_epsilon=2.0"),
    ],
)
def test_lightgcn_config_refuses_dp_sgd_with_the_field_and_the_reason(privacy, needle):
    training = TrainingConfig(privacy=privacy)
    with pytest.raises(
        ValueError, match=r"LightGCNExperimentConfig\.model\.training\.privacy"
    ) as err:
        LightGCNExperimentConfig(model=LightGCNConfig(training=training))
    assert needle in str(err.value) and "graph built from every training pair" in str(err.value)
    saved = LightGCNExperimentConfig().to_dict()  # a config.json edited by hand
    saved["model"]["training"]["privacy"] = privacy.to_dict()
    with pytest.raises(ValueError, match="lightgcn kind does not support DP-SGD"):
        LightGCNExperimentConfig.from_dict(saved)


def test_lightgcn_api_refuses_a_config_changed_to_dp_before_training():
    walks = successor_walks(num_users=4, length=4)
    model = LightGCNConfig(embedding_dim=4, num_layers=1, max_history=4)
    config = LightGCNExperimentConfig(model=model)  # DP off: accepted
    config.model.training.privacy.noise_multiplier = 1.0  # changed after the config's check
    with pytest.raises(ValueError, match=r"model\.training\.privacy: noise_multiplier=1\.0"):
        experiment_class("lightgcn")(config, data=walks, split=leave_one_out(walks))
    config.model.training.privacy.noise_multiplier = 0.0
    experiment = LightGCNExperiment(config, data=walks, split=leave_one_out(walks))
    config.model.training.privacy.noise_multiplier = 1.0  # changed after the constructor's
    with pytest.raises(ValueError, match="lightgcn kind does not support DP-SGD"):
        experiment.fit(epochs=1)
    assert experiment.model.optimizer.iterations.numpy() == 0  # not a single step ran
    assert experiment.model.dp_sgd is None
