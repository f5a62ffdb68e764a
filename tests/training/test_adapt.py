"""tfrec adapt: a new scenario on the frozen shared encoder of a multi-scenario run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tfrec  # noqa: F401
from tfrec.data.scenarios import SyntheticScenario
from tfrec.evaluation.config import EvalConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training.adapt import ADAPT_FILE, AdaptSettings, adapt_scenario
from tfrec.training.config import TrainingConfig
from tfrec.training.experiment import load_experiment
from tfrec.training.multi_scenario import MultiScenarioExperiment
from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig

SCENARIOS = [
    SyntheticScenario("tiny_a", num_users=60, num_items=20, seed=1),
    SyntheticScenario("tiny_b", num_users=30, num_items=30, seed=2),
    SyntheticScenario("tiny_new", num_users=40, num_items=25, seed=3),  # defined, not trained
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved two-scenario run (tiny GRU, 2 epochs) that knows how to build tiny_new."""
    config = MultiScenarioExperimentConfig(
        scenarios=["tiny_a", "tiny_b"],
        synthetic_scenarios=SCENARIOS,
        model=RetrievalConfig(
            encoder="gru",
            embedding_dim=4,
            max_history=8,
            scenario_adapter_dim=2,  # the new scenario gets its own, trained on the frozen encoder
            training=TrainingConfig(batch_size=32, epochs=2, patience=2),
        ),
        evaluation=EvalConfig(ks=[5, 10]),
        model_name="tiny",
    )
    run = tmp_path_factory.mktemp("source")
    experiment = MultiScenarioExperiment(config, run)
    experiment.fit()
    experiment.evaluate()
    experiment.save()
    return run


def _encoder_weights(run: Path) -> list[np.ndarray]:
    return [w.copy() for w in load_experiment(run).model.encoder.get_weights()]


def test_frozen_adaptation_trains_only_the_new_scenario(source: Path, tmp_path: Path) -> None:
    before = load_experiment(source)
    result = adapt_scenario(source, "tiny_new", tmp_path, settings=AdaptSettings(epochs=2))
    assert result.config.scenarios == ["tiny_a", "tiny_b", "tiny_new"]
    # the shared encoder and the old scenarios' item tables are the source's, bit for bit
    encoder = _encoder_weights(tmp_path)
    for old, new in zip(before.model.encoder.get_weights(), encoder, strict=True):
        np.testing.assert_array_equal(old, new)
    for name in ("tiny_a", "tiny_b"):
        np.testing.assert_array_equal(
            before.model.scenarios[name].candidate_embeddings().numpy(),
            result.model.scenarios[name].candidate_embeddings().numpy(),
        )
        # old metrics are carried over unchanged (nothing they depend on moved)
        key = f"{name}/test/ndcg@10"
        assert result.metrics[key] == pytest.approx(before.metrics[key])
    assert 0.0 <= result.metrics["tiny_new/test/ndcg@10"] <= 1.0
    adapter = result.model.scenarios["tiny_new"].query_tower.encoder.adapter
    assert np.abs(adapter.up_kernel.numpy()).max() > 0  # its adapter left its zero start
    assert result.metrics["adapt/train_seconds"] > 0
    record = json.loads((tmp_path / ADAPT_FILE).read_text())
    assert record["dataset"] == "tiny_new" and record["settings"]["epochs"] == 2
    # the new scenario's sub-run reloads alone and scores like the multi model's copy
    sub = load_experiment(tmp_path / "tiny_new")
    np.testing.assert_allclose(
        sub.model.candidate_embeddings().numpy(),
        result.model.scenarios["tiny_new"].candidate_embeddings().numpy(),
        atol=1e-6,
    )
    again = load_experiment(tmp_path)  # the whole adapted run reloads
    assert again.config.scenarios == ["tiny_a", "tiny_b", "tiny_new"]


def test_the_new_scenario_trains_on_its_own_presets_schedule(source: Path, tmp_path: Path) -> None:
    # The source trains 2 epochs with patience 2 (an epoch there is a pass over every
    # scenario); the new scenario alone gets its preset's length and patience, keeping
    # the shared seed and batch size. Explicit settings win over both.
    preset = RetrievalExperimentConfig.for_dataset("synthetic").model.training
    assert (preset.epochs, preset.patience) != (2, 2)  # else the test shows nothing
    result = adapt_scenario(source, "tiny_new", tmp_path / "default")
    training = result.experiments["tiny_new"].config.model.training
    assert (training.epochs, training.patience) == (preset.epochs, preset.patience)
    assert (training.batch_size, training.seed) == (32, result.config.model.training.seed)
    runs = len(result.experiments["tiny_new"].history["loss"])
    assert preset.patience < runs <= preset.epochs  # early stopping waits `patience` epochs
    settings = AdaptSettings(epochs=1, patience=1)
    result = adapt_scenario(source, "tiny_new", tmp_path / "set", settings=settings)
    assert len(result.experiments["tiny_new"].history["loss"]) == 1


def _unfrozen_validation_shifted(monkeypatch: pytest.MonkeyPatch, shift: float) -> None:
    """The unfrozen stage's validation NDCG@10 reported ``shift`` away from the real one.

    Training is real (the encoder moves); only the value the keep-or-discard rule
    reads is pushed above (+1) or below (-1) anything the frozen stage can reach.
    """
    real_fit = RetrievalExperiment.fit

    def fit(self: RetrievalExperiment, epochs: int | None = None, **kwargs: object) -> dict:
        history = real_fit(self, epochs, **kwargs)
        if epochs is not None:  # adapt calls fit(unfreeze_epochs) for the unfrozen stage
            history["val_ndcg@10"] = [v + shift for v in history["val_ndcg@10"]]
        return history

    monkeypatch.setattr(RetrievalExperiment, "fit", fit)


def test_unfrozen_epochs_that_win_on_validation_move_the_encoder_and_remeasure_everyone(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unfrozen_validation_shifted(monkeypatch, +1.0)
    before = _encoder_weights(source)
    settings = AdaptSettings(epochs=1, unfreeze_epochs=2, unfreeze_lr_factor=1.0)
    result = adapt_scenario(source, "tiny_new", tmp_path, settings=settings)
    after = _encoder_weights(tmp_path)
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    for name in ("tiny_a", "tiny_b", "tiny_new"):  # every scenario re-evaluated
        assert f"{name}/test/ndcg@10" in result.metrics
    assert len(result.experiments["tiny_new"].history["loss"]) == 3  # 1 frozen + 2 unfrozen
    assert result.metrics["adapt/unfrozen_kept"] == 1.0
    frozen_seconds = result.metrics["adapt/frozen_train_seconds"]
    assert 0 < frozen_seconds < result.metrics["adapt/train_seconds"]
    assert 0.0 <= result.metrics["tiny_new/frozen/test/ndcg@10"] <= 1.0


def test_unfrozen_epochs_that_lose_on_validation_are_discarded(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _unfrozen_validation_shifted(monkeypatch, -1.0)
    before = load_experiment(source)
    settings = AdaptSettings(epochs=1, unfreeze_epochs=2, unfreeze_lr_factor=1.0)
    result = adapt_scenario(source, "tiny_new", tmp_path, settings=settings)
    # the frozen stage's weights are back: the shared encoder is the source's, bit for bit
    for old, new in zip(
        before.model.encoder.get_weights(), _encoder_weights(tmp_path), strict=True
    ):
        np.testing.assert_array_equal(old, new)
    assert result.metrics["adapt/unfrozen_kept"] == 0.0
    for name in ("tiny_a", "tiny_b"):  # nothing they depend on moved: saved metrics stand
        key = f"{name}/test/ndcg@10"
        assert result.metrics[key] == pytest.approx(before.metrics[key])
    for split in ("valid", "test"):  # the new scenario is measured on the frozen weights
        key = f"{split}/ndcg@10"
        assert result.metrics[f"tiny_new/{key}"] == pytest.approx(
            result.metrics[f"tiny_new/frozen/{key}"]
        )


def test_errors_name_the_problem(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already a scenario"):
        adapt_scenario(source, "tiny_a", tmp_path / "x", settings=AdaptSettings(epochs=1))
    with pytest.raises(ValueError, match="is the source run"):
        adapt_scenario(source, "tiny_new", source)
    retrieval_run = source / "tiny_a"  # a complete retrieval sub-run
    with pytest.raises(ValueError, match="a 'retrieval' run; expected a multi_scenario run"):
        adapt_scenario(retrieval_run, "tiny_new", tmp_path / "y")
    with pytest.raises(ValueError, match="unfreeze_lr_factor"):
        AdaptSettings(unfreeze_lr_factor=0.0)
    with pytest.raises(ValueError, match="patience=0"):
        AdaptSettings(patience=0)
