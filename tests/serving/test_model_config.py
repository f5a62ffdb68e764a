"""models.config / batching / monitoring generation and parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfrec.serving.config_protos import BatchingParameters, MonitoringConfig
from tfrec.serving.model_config import (
    BatchingConfig,
    ModelEntry,
    MonitoringSettings,
    batching_parameters_text,
    discover_models,
    load_batching_parameters,
    load_model_config,
    load_monitoring_config,
    models_config_text,
    parse_models_config,
    write_serving_configs,
)
from tfrec.serving.versions import list_versions, select_versions

MODELS = [
    ModelEntry(name="retrieval", base_path="/models/retrieval", num_versions=2),
    ModelEntry(
        name="ranking",
        base_path="/models/ranking",
        version_policy="specific",
        versions=[1, 2],
        version_labels={"stable": 1, "canary": 2},
    ),
    ModelEntry(name="recommender", base_path="/models/recommender", version_policy="all"),
]


def test_models_config_parses_back_with_the_tf_serving_protos(tmp_path: Path) -> None:
    paths = write_serving_configs(tmp_path, MODELS)
    config = text_format.Parse(
        paths.models_config.read_text(), model_server_config_pb2.ModelServerConfig()
    )
    blocks = {c.name: c for c in config.model_config_list.config}
    assert list(blocks) == ["retrieval", "ranking", "recommender"]
    assert blocks["retrieval"].base_path == "/models/retrieval"
    assert blocks["retrieval"].model_platform == "tensorflow"
    assert blocks["retrieval"].model_version_policy.latest.num_versions == 2
    assert list(blocks["ranking"].model_version_policy.specific.versions) == [1, 2]
    assert dict(blocks["ranking"].version_labels) == {"stable": 1, "canary": 2}
    assert blocks["recommender"].model_version_policy.WhichOneof("policy_choice") == "all"
    # and tfrec's own parser gives the entries back unchanged
    assert load_model_config(paths.models_config) == MODELS


def test_batching_and_monitoring_files_parse_with_their_messages(tmp_path: Path) -> None:
    batching = BatchingConfig(
        max_batch_size=16,
        batch_timeout_micros=500,
        num_batch_threads=3,
        max_enqueued_batches=7,
        pad_variable_length_inputs=True,
        allowed_batch_sizes=[4, 16],
    )
    paths = write_serving_configs(tmp_path, MODELS[:1], batching, MonitoringSettings())
    params = text_format.Parse(paths.batching_parameters.read_text(), BatchingParameters())
    assert params.max_batch_size.value == 16
    assert params.batch_timeout_micros.value == 500
    assert params.num_batch_threads.value == 3
    assert params.max_enqueued_batches.value == 7
    assert params.pad_variable_length_inputs is True
    assert list(params.allowed_batch_sizes) == [4, 16]
    assert load_batching_parameters(paths.batching_parameters) == batching
    # TF Serving's documented text form: wrapper messages as `name { value: N }`
    assert "max_batch_size {\n  value: 16\n}" in paths.batching_parameters.read_text()
    monitoring = text_format.Parse(paths.monitoring_config.read_text(), MonitoringConfig())
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert load_monitoring_config(paths.monitoring_config) == MonitoringSettings()


def test_hand_written_batching_file_with_unset_fields_uses_defaults(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n")
    config = load_batching_parameters(path)
    assert (config.max_batch_size, config.batch_timeout_micros) == (8, 0)
    assert config.num_batch_threads == BatchingConfig().num_batch_threads


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' "
            "base_path: '/y' } }",
            "duplicated model name",
        ),
        ("model_config_list { config { name: 'a' } }", "base_path is empty"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
            "expected tensorflow",
        ),
        ("model_config_list { confg { name: 'a' } }", "not a valid ModelServerConfig"),
        (
            "model_config_list { config { name: 'a' base_path: '/x' model_version_policy "
            "{ specific { } } } }",
            "needs versions",
        ),
    ],
)
def test_invalid_models_config_is_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_models_config(text, source="models.config")


def test_invalid_batching_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_batch_size=0"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        BatchingConfig(max_batch_size=8, allowed_batch_sizes=[4, 6])
    with pytest.raises(ValueError, match="not a valid BatchingParameters"):
        from tfrec.serving.model_config import parse_batching_parameters

        parse_batching_parameters("max_batch_size: 3")  # must be a wrapper message


def test_models_config_text_round_trips_through_json_config() -> None:
    entry = MODELS[1]
    assert ModelEntry.from_json(entry.to_json()) == entry
    assert '    version_labels {\n      key: "canary"\n      value: 2\n    }' in models_config_text(
        [entry]
    )


def test_only_integer_dirs_with_saved_model_pb_are_versions(tmp_path: Path) -> None:
    for name in ("1", "2", "10", "3.tmp", "tmp-4", "x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "5").mkdir()  # half-written: no saved_model.pb yet
    assert sorted(list_versions(tmp_path)) == [1, 2, 10]
    assert list_versions(tmp_path / "missing") == {}


def test_version_policies() -> None:
    assert select_versions("latest", [1, 2, 10], num_versions=2) == {2, 10}
    assert select_versions("specific", [1, 2, 10], versions=[2, 3]) == {2}
    assert select_versions("all", [1, 2, 10]) == {1, 2, 10}
    with pytest.raises(ValueError, match="'newest'"):
        select_versions("newest", [1])


def test_discover_models_lists_model_folders_with_versions(tmp_path: Path) -> None:
    for model in ("retrieval", "ranking"):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    models = discover_models(tmp_path, base_prefix="/models")
    assert [(m.name, m.base_path) for m in models] == [
        ("ranking", "/models/ranking"),
        ("retrieval", "/models/retrieval"),
    ]
    with pytest.raises(ValueError, match=r"no <model_name>/<version>/saved_model\.pb"):
        discover_models(tmp_path / "empty")


def test_committed_example_configs_are_generated_and_parse() -> None:
    config_dir = Path(__file__).resolve().parents[2] / "serving" / "config"
    models = [
        ModelEntry("retrieval", "/models/retrieval"),
        ModelEntry("ranking", "/models/ranking"),
        ModelEntry(
            "recommender",
            "/models/recommender",
            version_policy="specific",
            versions=[1, 2],
            version_labels={"stable": 1, "canary": 2},
        ),
    ]
    batching = BatchingConfig(max_batch_size=64, batch_timeout_micros=2000, num_batch_threads=4)
    assert (config_dir / "models.config").read_text() == models_config_text(models)
    assert load_model_config(config_dir / "models.config") == models
    assert (config_dir / "batching_parameters.txt").read_text() == batching_parameters_text(
        batching
    )
    assert load_monitoring_config(config_dir / "monitoring.config") == MonitoringSettings()


def test_server_options_round_trip_through_json() -> None:
    from tfrec.serving.server import ServerOptions

    options = ServerOptions(
        port=0,
        rest_api_port=8501,
        enable_batching=True,
        batching=BatchingConfig(max_batch_size=4, allowed_batch_sizes=[2, 4]),
        monitoring=MonitoringSettings(prometheus_path="/metrics"),
    )
    assert ServerOptions.from_json(options.to_json()) == options
    with pytest.raises(ValueError, match="port=70000"):
        ServerOptions(port=70000)
    with pytest.raises(ValueError, match="prometheus_path='metrics'"):
        MonitoringSettings(prometheus_path="metrics")
