"""Issue 9 (2, 3, 7, 8, 16) against the running local server: TF Serving's status codes,
load retries that outlast a slow copy, batching limits end to end, memory budget over
gRPC, and a shutdown bounded by its grace."""

from __future__ import annotations

import json
import resource
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from process_utils import wait_for
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrec.cli.main import main
from tfrec.serving.client import RecommenderClient
from tfrec.serving.manager import AVAILABLE, END, LOADING, ModelManager, load_servable
from tfrec.serving.model_config import BatchingConfig, ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions
from tfrec.serving.tensors import SignatureInfo, TensorSpecInfo


def hostile_request() -> predict_pb2.PredictRequest:
    """The campaign's 95-byte request: `history` declares [1, 2**26] with two strings."""
    request = retrieval_request(model_pb2.ModelSpec(name="retrieval"))
    history = request.inputs["history"]
    history.string_val[:] = [b"1", b"2"]
    history.tensor_shape.dim[1].size = 2**26
    return request


def retrieval_request(spec: model_pb2.ModelSpec, rows: int = 1) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=spec)
    users = np.array([f"u{i}".encode() for i in range(rows)], dtype=object)
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(users))
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.full((rows, 1), b"a", object)))
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.full(rows, 2, np.int32)))
    return request


@pytest.fixture
def stubs(export_dir, start_server):
    server = start_server(
        [
            ModelEntry("retrieval", str(export_dir / "retrieval"), version_labels={"stable": 1}),
            ModelEntry("ranking", str(export_dir / "ranking")),
        ]
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)
    return err.value


# ------------------------------------------------------------------------ status codes


def test_status_codes_follow_tf_serving(stubs) -> None:
    predict, models = stubs
    label = model_pb2.ModelSpec(name="retrieval", version_label="nightly")
    for call, request in [
        (predict.Predict, retrieval_request(label)),
        (
            predict.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=label, metadata_field=["signature_def"]
            ),
        ),
        # the label is checked before the model name (server_core.cc)
        (predict.Predict, retrieval_request(model_pb2.ModelSpec(name="nope", version_label="x"))),
    ]:
        err = rpc_error(call, request)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("Unrecognized servable version label: ")
    err = rpc_error(predict.Predict, retrieval_request(model_pb2.ModelSpec()))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    )
    for call, request in [
        (predict.Predict, predict_pb2.PredictRequest()),
        (
            predict.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
        ),
        (models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()),
    ]:
        err = rpc_error(call, request)
        assert (err.code(), err.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        )
    spec = model_pb2.ModelSpec(name="retrieval", signature_name="nope")
    err = rpc_error(predict.Predict, retrieval_request(spec))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details().startswith('Serving signature key "nope" not found.')
    request = retrieval_request(model_pb2.ModelSpec(name="retrieval"))
    request.output_filter.extend(["scores", "scores"])
    err = rpc_error(predict.Predict, request)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: scores",
    )
    err = rpc_error(predict.Predict, retrieval_request(model_pb2.ModelSpec(name="nope")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().startswith("Servable not found for request: Latest(nope)")


def test_model_status_ignores_the_version_label_like_tf_serving(stubs) -> None:
    _, models = stubs
    spec = model_pb2.ModelSpec(name="retrieval", version_label="no-such-label")
    response = models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=spec), timeout=10
    )
    assert [(v.version, v.state) for v in response.model_version_status] == [(1, AVAILABLE)]
    for spec, message in [
        (model_pb2.ModelSpec(name="nope"), "Could not find any versions of model nope"),
        (model_pb2.ModelSpec(name="retrieval", version={"value": 7}),
         "Could not find version 7 of model retrieval"),
    ]:  # fmt: skip
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        err = rpc_error(models.GetModelStatus, request)
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, message)


def test_rest_maps_the_new_codes_to_400(export_dir, start_server, free_port) -> None:
    start_server([ModelEntry("retrieval", str(export_dir / "retrieval"))], rest_api_port=free_port)
    body = json.dumps({"instances": [{"user_id": "u", "history": ["a"], "k": 2}]}).encode()
    for path, payload in [
        ("/v1/models/retrieval/labels/nightly:predict", body),
        (
            "/v1/models/retrieval:predict",
            json.dumps({"signature_name": "nope", "instances": [1]}).encode(),
        ),
    ]:
        request = urllib.request.Request(f"http://127.0.0.1:{free_port}{path}", data=payload)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 400


def test_memory_budget_over_grpc_leaves_the_server_small(stubs) -> None:
    predict, _ = stubs
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    err = rpc_error(predict.Predict, hostile_request())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100 * 1024
    answer = predict.Predict(retrieval_request(model_pb2.ModelSpec(name="retrieval")), timeout=10)
    # u0, history a excluded: b = 5 + 0.02, c = 4 + 0.02
    assert tf.make_ndarray(answer.outputs["item_ids"]).tolist() == [[b"b", b"c"]]


# ------------------------------------------------------------------------ batching e2e


def test_batching_rejects_only_the_oversized_request(export_dir, start_server) -> None:
    models = [ModelEntry("retrieval", str(export_dir / "retrieval"))]
    plain = start_server(models)
    batched = start_server(
        models,
        enable_batching=True,
        batching=BatchingConfig(max_batch_size=4, max_enqueued_batches=2),
    )
    split = start_server(
        models,
        enable_batching=True,
        batching=BatchingConfig(
            max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=2
        ),
    )
    spec = model_pb2.ModelSpec(name="retrieval")

    def ask(server, rows: int):
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(retrieval_request(spec, rows), timeout=30)
            return {n: tf.make_ndarray(p).tolist() for n, p in response.outputs.items()}
        finally:
            channel.close()

    err = rpc_error(
        prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{batched.port}")
        ).Predict,
        retrieval_request(spec, 5),
    )
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Task size 5 is larger than maximum input batch size 4",
    )
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(ask(batched, 1))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and all(r["item_ids"] == [[b"b", b"c"]] for r in results)
    # with splitting the 5-row request runs in pieces of <= 2 rows and equals the unbatched answer
    assert ask(split, 5) == ask(plain, 5)
    assert split.batcher.batches_run >= 3


# --------------------------------------------------------------------- load retries


class FlakyLoader:
    """Fails while the version folder lacks a `complete` file; counts attempts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, name: str, version: int, path: Path):
        self.calls += 1
        if not (path / "complete").exists():
            raise ValueError(f"{path}: incomplete")
        return f"servable {name} {version}"


def version_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model" / "1"
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"half")
    return path


def test_retries_follow_tf_serving_then_resume_when_the_files_change(tmp_path) -> None:
    path = version_dir(tmp_path)
    loader = FlakyLoader()
    manager = ModelManager(
        [ModelEntry("m", str(path.parent))], loader, load_retry_interval_seconds=0.01
    )
    manager.start(poll_wait_seconds=0.02)
    try:
        # the default 5 retries: 6 attempts (the old limit was 5), then END with the error
        wait_for(lambda: manager.status("m")[0].state == END)
        assert loader.calls == 6 and "incomplete" in manager.status("m")[0].error
        time.sleep(0.2)
        assert loader.calls == 6  # nothing changed on disk: no more attempts
        (path / "complete").write_text("done")  # the slow copy finishes
        wait_for(lambda: manager.status("m")[0].state == AVAILABLE)
        assert manager.resolve("m") == "servable m 1" and loader.calls == 7
    finally:
        manager.stop()


def test_a_version_waiting_for_its_retry_is_loading(tmp_path) -> None:
    path = version_dir(tmp_path)
    loader = FlakyLoader()
    manager = ModelManager(
        [ModelEntry("m", str(path.parent))],
        loader,
        max_num_load_retries=2,
        load_retry_interval_seconds=60.0,
    )
    manager.start(poll_wait_seconds=0.02)
    try:
        time.sleep(0.2)
        [record] = manager.status("m")
        assert (record.state, loader.calls) == (LOADING, 1)  # next attempt in a minute
    finally:
        manager.stop()


def test_retries_run_even_when_the_folder_is_scanned_once(tmp_path) -> None:
    path = version_dir(tmp_path)
    loader = FlakyLoader()
    manager = ModelManager([ModelEntry("m", str(path.parent))], loader, 1, 0.3)
    manager.start(poll_wait_seconds=0)  # TF Serving's "poll once"
    try:
        (path / "complete").write_text("done")  # completed before the retry is due
        wait_for(lambda: manager.status("m")[0].state == AVAILABLE)
        assert loader.calls == 2
    finally:
        manager.stop()


def test_slowly_written_saved_model_is_served(tmp_path, saved_models, start_server) -> None:
    base = tmp_path / "retrieval"
    shutil.copytree(saved_models["retrieval_v1"], base / "1")
    graph = (base / "1" / "saved_model.pb").read_bytes()
    (base / "1" / "saved_model.pb").write_bytes(graph[: len(graph) // 2])  # copy in progress
    attempts: list[int] = []

    def counting_loader(name: str, version: int, path: Path):
        attempts.append(version)
        return load_servable(name, version, path)

    server = ModelServer(
        [ModelEntry("retrieval", str(base))],
        ServerOptions(
            port=0, file_system_poll_wait_seconds=0.05, load_retry_interval_micros=10_000
        ),
        load_fn=counting_loader,
    )
    server.start()
    try:
        with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval", max_retries=0) as c:
            wait_for(lambda: c.status()[0].state == "END")
            assert len(attempts) == 6
            (base / "1" / "saved_model.pb").write_bytes(graph)  # the copy completes
            wait_for(lambda: c.status()[0].state == "AVAILABLE")
            # u: a = 6 + 0.01
            assert c.recommend(user_ids=["u"], k=1).scores[0, 0] == pytest.approx(6.01)
    finally:
        server.stop(grace=1.0)


def test_serve_flags_carry_tf_serving_defaults(export_dir, monkeypatch, capsys) -> None:
    import tfrec.serving.server as server_module

    started: list[ModelServer] = []
    monkeypatch.setattr(server_module, "serve_until_signal", lambda s: started.append(s) or 0)
    base = ["serve", "--backend=local", f"--model_base_path={export_dir / 'retrieval'}"]
    assert main(base) == 0
    given_flags = [
        "--max_num_load_retries=2",
        "--load_retry_interval_micros=5",
        "--shutdown_grace_seconds=3",
        "--request_memory_budget_bytes=1000",
    ]
    assert main([*base, *given_flags]) == 0
    defaults, given = (s.options for s in started)
    fields = ("max_num_load_retries", "load_retry_interval_micros", "shutdown_grace_seconds")
    assert [getattr(defaults, f) for f in fields] == [5, 60_000_000, 30.0]
    assert [getattr(given, f) for f in fields] == [2, 5, 3.0]
    assert given.request_memory_budget_bytes == 1000
    assert main([*base, "--load_retry_interval_micros=7", "--dry_run"]) == 0
    assert "--load_retry_interval_micros=7" in capsys.readouterr().out.split()


# ------------------------------------------------------------------------ shutdown grace


class SlowServable:
    """y = 2 * x after sleeping max(x) seconds."""

    def __init__(self, name: str, version: int, path: Path):
        self.name, self.version, self.path = name, version, path
        self.signature_defs: dict = {}
        spec = TensorSpecInfo("x", tf.float32, (None,))
        self.info = SignatureInfo("serving_default", {"x": spec}, {"y": spec})

    def signature(self, name: str) -> SignatureInfo:
        return self.info

    def run(self, signature_name: str, inputs):
        time.sleep(float(inputs["x"].max()))
        return {"y": inputs["x"] * 2}


@pytest.mark.parametrize("batching", [False, True])
def test_shutdown_honours_a_small_grace(tmp_path, free_port, batching) -> None:
    version = tmp_path / "slow" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"unused by the fake loader")
    options = ServerOptions(
        port=0,
        rest_api_port=free_port,
        shutdown_grace_seconds=1.0,
        enable_batching=batching,
        batching=BatchingConfig(max_batch_size=1, num_batch_threads=2),  # never merged
    )
    server = ModelServer(
        [ModelEntry("slow", str(version.parent))], options, load_fn=SlowServable
    ).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(seconds: float):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="slow"))
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.float32([seconds])))
        return stub.Predict.future(request, timeout=30)

    quick, slow = call(0.5), call(4.0)
    time.sleep(0.15)  # both in flight
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.0 + 0.8
    assert tf.make_ndarray(quick.result(timeout=5).outputs["y"]).tolist() == [1.0]
    with pytest.raises(grpc.RpcError) as err:
        slow.result(timeout=5)
    assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert server.abandoned_requests == 1
    with pytest.raises(urllib.error.URLError):  # REST is closed too
        urllib.request.urlopen(f"http://127.0.0.1:{free_port}/v1/models/slow", timeout=2)
    channel.close()
