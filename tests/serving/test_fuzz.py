"""Fuzz: a few hundred malformed/random requests (loopback, bounded), then a normal one."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfrec.serving.client import RecommenderClient
from tfrec.serving.model_config import BatchingConfig, ModelEntry

N_REQUESTS = 300
TIME_BUDGET_SECONDS = 90.0
DTYPES = [types_pb2.DT_STRING, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_FLOAT]
NAMES = ["user_id", "history", "k", "candidates", "x", "factor", "extra", ""]


def random_tensor(rng: np.random.Generator) -> tensor_pb2.TensorProto:
    rank = int(rng.integers(0, 4))
    dims = [int(d) for d in rng.integers(0, 4, size=rank)]
    size = int(np.prod(dims)) if dims else 1
    dtype = DTYPES[int(rng.integers(len(DTYPES)))]
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims)
    kind = int(rng.integers(0, 8))
    if kind == 0:  # tensor_content that does not fit the shape
        proto.tensor_content = rng.bytes(int(rng.integers(0, 17)))
    elif kind == 1:  # a huge declared shape with one broadcast value
        proto.tensor_shape.dim.add(size=10**9)
        proto.tensor_shape.dim.add(size=10**9)
    elif kind == 2:  # negative dimension / unknown rank
        proto.tensor_shape.dim.add(size=-3)
        proto.tensor_shape.unknown_rank = bool(rng.integers(0, 2))
    elif kind == 3:  # not a real dtype
        proto.dtype = int(rng.integers(30, 1000))
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(rng.bytes(int(rng.integers(0, 4))) for _ in range(size))
    elif dtype == types_pb2.DT_FLOAT:
        proto.float_val.extend(rng.normal(size=size).tolist())
    elif dtype == types_pb2.DT_INT64:
        proto.int64_val.extend(rng.integers(-(2**40), 2**40, size=size).tolist())
    else:
        proto.int_val.extend(rng.integers(-5, 10, size=size).tolist())
    return proto


def random_spec(rng: np.random.Generator) -> model_pb2.ModelSpec:
    if rng.integers(0, 2) == 0:  # half the time a valid spec, so inputs get validated
        return model_pb2.ModelSpec(name="retrieval")
    spec = model_pb2.ModelSpec(
        name=["retrieval", "ranking", "nope", "", "retrieval/1"][int(rng.integers(5))],
        signature_name=["", "serving_default", "scale", "nope"][int(rng.integers(4))],
    )
    choice = int(rng.integers(4))
    if choice == 1:
        spec.version.value = int(rng.integers(-2, 4))
    elif choice == 2:
        spec.version_label = ["stable", "canary", "", "x" * 50][int(rng.integers(4))]
    return spec


def well_typed_retrieval(rng: np.random.Generator) -> dict[str, tensor_pb2.TensorProto]:
    import tensorflow as tf

    batch = int(rng.integers(0, 4))
    width = int(rng.integers(0, 4))
    history = np.array(
        [
            [["a", "b", "", "zz"][int(i)] for i in rng.integers(0, 4, size=width)]
            for _ in range(batch)
        ],
        dtype=object,
    ).reshape(batch, width)
    return {
        "user_id": tf.make_tensor_proto(np.array(["u"] * batch, dtype=object)),
        "history": tf.make_tensor_proto(history),
        "k": tf.make_tensor_proto(rng.integers(-2, 9, size=batch).astype(np.int32)),
    }


@pytest.mark.slow
def test_fuzzed_requests_never_break_the_server(export_dir, start_server) -> None:
    server = start_server(
        [
            ModelEntry("retrieval", str(export_dir / "retrieval"), version_labels={"stable": 1}),
            ModelEntry("ranking", str(export_dir / "ranking")),
        ],
        enable_batching=True,
        batching=BatchingConfig(batch_timeout_micros=1000),
        grpc_max_message_bytes=100_000,
    )
    target = f"127.0.0.1:{server.port}"
    channel = grpc.insecure_channel(target)
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    raw_predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    rng = np.random.default_rng(1234)
    codes: dict[str, int] = {}
    internal_for_structured = []
    start = time.monotonic()
    for index in range(N_REQUESTS):
        assert time.monotonic() - start < TIME_BUDGET_SECONDS, "fuzz loop over its time budget"
        kind = int(rng.integers(0, 6))
        try:
            if kind == 0:  # raw garbage bytes as the request message
                raw_predict(rng.bytes(int(rng.integers(0, 200))), timeout=5)
            elif kind == 1:
                request = get_model_status_pb2.GetModelStatusRequest(model_spec=random_spec(rng))
                models.GetModelStatus(request, timeout=5)
            elif kind == 2:
                request = get_model_metadata_pb2.GetModelMetadataRequest(
                    model_spec=random_spec(rng),
                    metadata_field=[["signature_def"], [], ["x"]][int(rng.integers(3))],
                )
                predict.GetModelMetadata(request, timeout=5)
            else:
                request = predict_pb2.PredictRequest(model_spec=random_spec(rng))
                if kind == 3:
                    tensors = well_typed_retrieval(rng)
                else:
                    names = rng.choice(NAMES, size=int(rng.integers(0, 5)), replace=False)
                    tensors = {str(n): random_tensor(rng) for n in names}
                for name, proto in tensors.items():
                    request.inputs[name].CopyFrom(proto)
                if rng.integers(0, 10) == 0:
                    request.output_filter.append("nope")
                predict.Predict(request, timeout=5)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as err:
            code = err.code()
            codes[code.name] = codes.get(code.name, 0) + 1
            assert code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), (
                index,
                err.details(),
            )
            if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and kind != 0:
                internal_for_structured.append((kind, err.details()))
    channel.close()
    # every structured request got a precise status, never an internal error
    assert internal_for_structured == []
    assert codes.get("INVALID_ARGUMENT", 0) > 80 and codes.get("NOT_FOUND", 0) > 20
    with RecommenderClient(target, "retrieval") as c:
        recs = c.recommend(user_ids=["u"], histories=[["a"]], k=2)
        assert recs.item_ids.tolist() == [["b", "c"]]
        np.testing.assert_allclose(recs.scores, [[5.01, 4.01]], rtol=1e-6)
        assert [s.state for s in c.status()] == ["AVAILABLE"]
