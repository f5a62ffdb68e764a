"""tfrec recommend --scenario: one servable per scenario of a multi-scenario model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tfrec.cli.main import main
from tfrec.data.scenarios import SyntheticScenario
from tfrec.evaluation.config import EvalConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions
from tfrec.training.config import TrainingConfig
from tfrec.training.multi_scenario import MultiScenarioExperiment
from tfrec.training.multi_scenario_config import MultiScenarioExperimentConfig

# Disjoint catalogues: tiny_a has 12 items, tiny_b 30 (synthetic ids i0.. per scenario,
# so the vocabularies overlap in name; the item count tells the servables apart).
SCENARIOS = [
    SyntheticScenario("tiny_a", num_users=40, num_items=12, seed=1),
    SyntheticScenario("tiny_b", num_users=30, num_items=30, seed=2),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained (1 epoch), saved and exported two-scenario run."""
    config = MultiScenarioExperimentConfig(
        scenarios=["tiny_a", "tiny_b"],
        synthetic_scenarios=SCENARIOS,
        model=RetrievalConfig(
            encoder="gru", embedding_dim=4, max_history=6, training=TrainingConfig(epochs=1)
        ),
        evaluation=EvalConfig(ks=[5, 10]),
    )
    run = tmp_path_factory.mktemp("multi")
    experiment = MultiScenarioExperiment(config, run)
    experiment.fit()
    experiment.save()
    experiment.export(run / "export")
    return run


def _recommend(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["recommend", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _items(out: str) -> list[str]:
    return [item["item_id"] for item in json.loads(out)[0]["items"]]


def test_export_scenario_picks_that_scenarios_servable(run_dir: Path, capsys) -> None:
    # k = 20 fits tiny_b's 30 items but not tiny_a's 12: each scenario's own catalogue
    code, out, err = _recommend(
        capsys, "--export", str(run_dir), "--scenario", "tiny_b", "--user", "u1", "-k", "20",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert len(set(_items(out))) == 20
    code, _, err = _recommend(
        capsys, "--export", str(run_dir), "--scenario", "tiny_a", "--user", "u1", "-k", "20"
    )
    assert code == 2 and "12 items" in err


def test_unknown_scenario_lists_the_known_ones(run_dir: Path, capsys) -> None:
    code, out, err = _recommend(
        capsys, "--export", str(run_dir), "--scenario", "nope", "--user", "u1"
    )
    assert code == 2 and out == ""
    assert "--scenario 'nope'" in err and "['tiny_a', 'tiny_b']" in err


def test_server_scenario_queries_model_name_underscore_scenario(run_dir: Path, capsys) -> None:
    models = [
        ModelEntry(f"multi_scenario_{name}", str(run_dir / "export" / f"multi_scenario_{name}"))
        for name in ("tiny_a", "tiny_b")
    ]
    server = ModelServer(models, ServerOptions(host="127.0.0.1", port=0)).start()
    try:
        target = f"127.0.0.1:{server.port}"
        code, out, err = _recommend(
            capsys, "--server", target, "--scenario", "tiny_b", "--user", "u1", "-k", "20",
            "--json",
        )  # fmt: skip
        assert code == 0, err
        assert len(_items(out)) == 20
        code, _, err = _recommend(capsys, "--server", target, "--scenario", "nope", "--user", "u1")
        assert code == 1
        assert "multi_scenario_nope" in err and "<model-name>_<scenario>" in err
    finally:
        server.stop(grace=1.0)
