"""Local server over a real loopback port, driven by RecommenderClient and raw stubs.

Expected values come from the tiny models in conftest.py: retrieval score of
item i (a=0 .. f=5) is (6 - i) + bias + 0.01 * len(user_id), history excluded.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from process_utils import wait_for
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrec.export.warmup import WARMUP_PATH, build_warmup_records
from tfrec.serving.client import (
    InvalidArgumentError,
    NotFoundError,
    RecommenderClient,
    ResourceExhaustedError,
    ServingError,
)
from tfrec.serving.model_config import ModelEntry, write_serving_configs


def entries(export_dir: Path, **retrieval: object) -> list[ModelEntry]:
    return [
        ModelEntry(name="retrieval", base_path=str(export_dir / "retrieval"), **retrieval),
        ModelEntry(name="ranking", base_path=str(export_dir / "ranking")),
    ]


def client(server, model: str = "retrieval", **kwargs) -> RecommenderClient:
    return RecommenderClient(f"127.0.0.1:{server.port}", model, max_retries=0, **kwargs)


def test_predict_metadata_status(export_dir, start_server) -> None:
    server = start_server(entries(export_dir))
    with client(server) as retrieval:
        recs = retrieval.recommend(user_ids=["u", "uu"], histories=[["a"], ["b", "c"]], k=3)
        # u: a excluded -> b 5.01, c 4.01, d 3.01; uu: b, c excluded -> a 6.02, d 3.02, e 2.02
        assert recs.item_ids.tolist() == [["b", "c", "d"], ["a", "d", "e"]]
        np.testing.assert_allclose(recs.scores, [[5.01, 4.01, 3.01], [6.02, 3.02, 2.02]], rtol=1e-6)
        # user only (history filled with "") and history only (user_id "")
        assert retrieval.recommend(user_ids=["u"], k=1).item_ids.tolist() == [["a"]]
        only_history = retrieval.recommend(histories=[["a", "b"]], k=2)
        np.testing.assert_allclose(only_history.scores, [[4.0, 3.0]])

        meta = retrieval.metadata()
        assert (meta.model_name, meta.version) == ("retrieval", 1)
        sig = meta.signatures["serving_default"]
        assert {n: (s.dtype, s.shape) for n, s in sig.inputs.items()} == {
            "user_id": ("string", (None,)),
            "history": ("string", (None, None)),
            "k": ("int32", (None,)),
        }
        assert sig.outputs["scores"].dtype == "float32"
        assert [(s.version, s.state) for s in retrieval.status()] == [(1, "AVAILABLE")]

    with client(server, "ranking") as ranking:
        scores = ranking.rank(histories=[["a", "a"], []], candidates=[["a", "bb", "c"], ["dd"]])
        # a: len 1 + 10 * 2 repeats = 21; bb: 2; c: 1; row 2: dd = 2, then NaN padding
        np.testing.assert_allclose(scores, [[21.0, 2.0, 1.0], [2.0, np.nan, np.nan]])


def test_raw_stub_metadata_is_the_saved_model_signature_def_map(export_dir, start_server) -> None:
    server = start_server(entries(export_dir))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.GetModelMetadata(
        get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=model_pb2.ModelSpec(name="retrieval"), metadata_field=["signature_def"]
        ),
        timeout=10,
    )
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "scale"} <= set(signature_map.signature_def)
    assert (
        signature_map.signature_def["serving_default"].method_name == "tensorflow/serving/predict"
    )
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelMetadata(
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=model_pb2.ModelSpec(name="retrieval")
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(
            classification_pb2.ClassificationRequest(
                model_spec=model_pb2.ModelSpec(name="retrieval")
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # output_filter keeps only the asked outputs, and echoes the resolved version
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="retrieval"), output_filter=["scores"]
    )
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([b"u"], dtype=object)))
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.array([[b""]], dtype=object)))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.int32([2])))
    response = stub.Predict(request, timeout=10)
    assert list(response.outputs) == ["scores"]
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    channel.close()


def test_versions_labels_and_specific_policy(export_dir, saved_models, start_server) -> None:
    shutil.copytree(saved_models["retrieval_v2"], export_dir / "retrieval" / "2")
    models = entries(
        export_dir,
        version_policy="specific",
        versions=[1, 2],
        version_labels={"stable": 1, "canary": 2, "broken": 7},
    )
    server = start_server(models)
    target = f"127.0.0.1:{server.port}"

    def top_score(**spec) -> float:
        with RecommenderClient(target, "retrieval", max_retries=0, **spec) as c:
            return float(c.recommend(user_ids=["u"], k=1).scores[0, 0])

    assert top_score() == pytest.approx(16.01)  # latest = v2 (bias 10): a = 6 + 10 + 0.01
    assert top_score(version=1) == pytest.approx(6.01)
    assert top_score(version_label="stable") == pytest.approx(6.01)
    assert top_score(version_label="canary") == pytest.approx(16.01)
    # TF Serving: an unknown label is INVALID_ARGUMENT (server_core.cc GetModelVersionForLabel)
    with pytest.raises(InvalidArgumentError, match="Unrecognized servable version label: nightly"):
        top_score(version_label="nightly")
    with pytest.raises(NotFoundError, match=r"Specific\(retrieval, 7\)"):
        top_score(version_label="broken")  # label points to a version that is not loaded
    with pytest.raises(NotFoundError, match=r"Specific\(retrieval, 3\)"):
        top_score(version=3)
    with client(server) as c:
        assert [(s.version, s.state) for s in c.status()] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    with client(server, version=1) as c:
        assert [s.version for s in c.status()] == [1]


def test_hot_reload_new_version_and_ignore_temp_dirs(
    export_dir, saved_models, start_server
) -> None:
    server = start_server(entries(export_dir), file_system_poll_wait_seconds=0.1)
    base = export_dir / "retrieval"
    # a version still being copied under a temporary name, and an empty integer dir
    shutil.copytree(saved_models["retrieval_v2"], base / "3.tmp-copy")
    (base / "4").mkdir()
    time.sleep(0.4)
    with client(server) as c:
        assert [(s.version, s.state) for s in c.status()] == [(1, "AVAILABLE")]
        # publish version 2 atomically (copy under a temp name, then rename)
        shutil.copytree(saved_models["retrieval_v2"], base / ".incoming-2")
        (base / ".incoming-2").rename(base / "2")
        wait_for(
            lambda: [(s.version, s.state) for s in c.status()] == [(2, "AVAILABLE"), (1, "END")]
        )
        assert float(c.recommend(user_ids=["u"], k=1).scores[0, 0]) == pytest.approx(16.01)
    with client(server, version=1) as old, pytest.raises(NotFoundError):
        old.recommend(user_ids=["u"], k=1)
    assert server.manager.resolve("retrieval").version == 2


def test_failed_version_is_reported_and_previous_keeps_serving(export_dir, start_server) -> None:
    server = start_server(
        entries(export_dir), file_system_poll_wait_seconds=0.1, max_num_load_retries=0
    )
    broken = export_dir / "retrieval" / "5"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00 definitely not a SavedModel")
    with client(server) as c:
        wait_for(lambda: c.status()[0].version == 5 and c.status()[0].state == "END")
        status = {s.version: s for s in c.status()}
        assert status[5].error_code != 0 and "not a SavedModel" in status[5].error_message
        assert status[1].state == "AVAILABLE"  # availability preserved
        assert c.recommend(user_ids=["u"], k=1).item_ids.tolist() == [["a"]]


def test_warmup_requests_replayed_on_load_and_failing_warmup_fails_the_version(
    export_dir, saved_models, start_server
) -> None:
    good = {"user_id": np.array(["u"]), "history": np.array([[""]]), "k": np.int32([1])}
    (export_dir / "retrieval" / "1" / "assets.extra").mkdir()
    (export_dir / "retrieval" / "1" / WARMUP_PATH).write_bytes(
        build_warmup_records("retrieval", [good, good])
    )
    bad_dir = export_dir / "ranking_bad" / "1"
    shutil.copytree(saved_models["retrieval_v1"], bad_dir)
    (bad_dir / "assets.extra").mkdir()
    (bad_dir / WARMUP_PATH).write_bytes(build_warmup_records("x", [{**good, "k": np.int32([0])}]))
    models = [*entries(export_dir), ModelEntry("bad", str(bad_dir.parent))]
    server = start_server(models, max_num_load_retries=0)
    assert server.manager.resolve("retrieval").run_count == 2  # the two warmup requests
    with client(server, "bad") as c:
        [status] = c.status()
        assert status.state == "END" and "warmup request 0 failed" in status.error_message
        with pytest.raises(NotFoundError):
            c.recommend(user_ids=["u"], k=1)


def test_error_statuses_and_server_keeps_serving(export_dir, start_server) -> None:
    server = start_server(entries(export_dir), grpc_max_message_bytes=20_000)
    good = {
        "user_id": np.array(["u"]),
        "history": np.array([["a"]]),
        "k": np.int32([2]),
    }
    with client(server) as c:
        cases = [
            ({**good, "k": np.int64([2])}, "expected dtype int32, got int64"),
            ({**good, "history": np.array(["a"])}, "input 'history': shape"),
            ({"user_id": good["user_id"], "k": good["k"]}, r"Missing but required: \['history'\]"),
            ({**good, "extra": np.int32([1])}, r"Sent extra: \['extra'\]"),
            ({**good, "k": np.int32([0])}, "k must be > 0"),
            ({**good, "k": np.int32([7])}, "k must be <= the catalogue size"),
        ]
        for inputs, message in cases:
            with pytest.raises(InvalidArgumentError, match=message) as err:
                c.predict(inputs)
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(InvalidArgumentError, match="unknown output alias"):
            c.predict(good, output_filter=["nope"])
        with pytest.raises(ResourceExhaustedError) as err:
            c.predict({**good, "history": np.array([["x" * 30_000]])})
        assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.recommend(user_ids=["u"], histories=[["a"]], k=2).item_ids.tolist() == [["b", "c"]]
    with client(server, "nope") as c, pytest.raises(NotFoundError, match="'nope' is not served"):
        c.recommend(user_ids=["u"], k=1)
    # TF Serving: an unknown signature is FAILED_PRECONDITION (predict_util.cc)
    with client(server, signature_name="nope") as c, pytest.raises(ServingError) as err:
        c.recommend(user_ids=["u"], k=1)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert 'Serving signature key "nope" not found' in err.value.details
    assert server.metrics.count(api="Predict", status="INVALID_ARGUMENT") == 7
    assert server.metrics.count(api="Predict", status="NOT_FOUND") == 1
    assert server.metrics.count(api="Predict", status="FAILED_PRECONDITION") == 1


def test_reload_config_request_and_config_file(export_dir, start_server, tmp_path) -> None:
    paths = write_serving_configs(tmp_path / "cfg", entries(export_dir))
    server = start_server(model_config_file=paths.models_config)
    assert sorted(server.manager.models) == ["ranking", "retrieval"]
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = model_management_pb2.ReloadConfigRequest()
    block = request.config.model_config_list.config.add()
    block.name, block.base_path = "ranking", str(export_dir / "ranking")
    stub.HandleReloadConfigRequest(request, timeout=10)
    with client(server) as c, pytest.raises(NotFoundError):
        c.status()
    with client(server, "ranking") as c:
        assert [s.state for s in c.status()] == ["AVAILABLE"]
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.model_config_list.config.add(name="x")  # no base_path
    with pytest.raises(grpc.RpcError) as err:
        stub.HandleReloadConfigRequest(bad, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_model_config_file_is_re_read_while_serving(export_dir, start_server, tmp_path) -> None:
    paths = write_serving_configs(tmp_path / "cfg", entries(export_dir))
    server = start_server(
        model_config_file=paths.models_config, model_config_file_poll_wait_seconds=0.1
    )
    with client(server, "ranking") as c:
        assert [s.state for s in c.status()] == ["AVAILABLE"]
        # drop "ranking" from the file: the server unloads it without a restart
        write_serving_configs(tmp_path / "cfg", entries(export_dir)[:1])
        wait_for(lambda: "ranking" not in server.manager.models)
        with pytest.raises(NotFoundError):
            c.status()
        # a broken edit is logged and ignored: the current models keep serving
        paths.models_config.write_text("model_config_list { this is not a proto }")
        time.sleep(0.5)
    with client(server) as c:
        assert c.recommend(user_ids=["u"], k=1).item_ids.tolist() == [["a"]]
