"""Issue 9 (2, 3): request tensors are checked against their payload and a memory
budget before anything is allocated; batching rejects or splits oversized requests
like TF Serving instead of letting them fill the queue."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2

from tfrec.serving.batching import BatchScheduler
from tfrec.serving.errors import ServingError
from tfrec.serving.model_config import BatchingConfig
from tfrec.serving.tensors import (
    SignatureInfo,
    TensorSpecInfo,
    coerce_inputs,
    decode_inputs,
    encode_outputs,
)

RETRIEVAL = SignatureInfo(
    name="serving_default",
    inputs={
        "user_id": TensorSpecInfo("user_id", tf.string, (None,)),
        "history": TensorSpecInfo("history", tf.string, (None, None)),
        "k": TensorSpecInfo("k", tf.int32, (None,)),
    },
    outputs={},
)


def strings(values: list[bytes], shape: list[int]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum, string_val=values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def ints(values: list[int], shape: list[int], content: bytes = b"") -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=tf.int32.as_datatype_enum, int_val=values)
    if content:
        proto.tensor_content = content
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def hostile_request() -> predict_pb2.PredictRequest:
    """The campaign's request: `history` declares [1, 2**26] and holds two strings."""
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="retrieval"))
    request.inputs["user_id"].CopyFrom(strings([b"196"], [1]))
    request.inputs["history"].CopyFrom(strings([b"1", b"2"], [1, 2**26]))
    request.inputs["k"].CopyFrom(ints([5], [1]))
    return request


def test_the_95_byte_request_is_refused_before_allocating() -> None:
    request = hostile_request()
    assert len(request.SerializeToString()) < 100
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ServingError) as err:
            decode_inputs(RETRIEVAL, request.inputs)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "per-request budget of 67108864 bytes" in err.value.message
    # 2**26 string elements would be >= 512 MiB of pointers alone; nothing like it was made
    assert peak < 2 * 1024 * 1024
    assert elapsed < 1.0


def test_fewer_values_are_padded_with_the_last_one_like_tensorflow() -> None:
    request = {
        "user_id": strings([], [2]),  # no value: the dtype's default ""
        "history": strings([b"a", b"b"], [2, 3]),
        "k": ints([4], [2]),
    }
    arrays = decode_inputs(RETRIEVAL, request)
    # TensorFlow's FromProtoField: a, b, then b repeated; k broadcast; "" for no values
    assert arrays["history"].tolist() == [[b"a", b"b", b"b"], [b"b", b"b", b"b"]]
    assert arrays["k"].tolist() == [4, 4] and arrays["k"].dtype == np.int32
    assert arrays["user_id"].tolist() == [b"", b""]  # (tf.make_ndarray would give str "")
    for name in ("history", "k"):
        assert arrays[name].tolist() == tf.make_ndarray(request[name]).tolist()


@pytest.mark.parametrize(
    ("name", "proto", "message"),
    [
        ("history", strings([b"a", b"b", b"c"], [1, 2]), "holds 3 values, more than the 2"),
        ("k", ints([], [3], content=b"\x00" * 8), "tensor_content holds 8 bytes but shape [3]"),
        ("k", ints([1, 2, 3], [2]), "holds 3 values, more than the 2"),
    ],
)
def test_payload_that_does_not_fit_its_shape_is_invalid(name, proto, message) -> None:
    request = {"user_id": strings([b"u"], [1]), "history": strings([b""], [1, 1])}
    request["k"] = ints([1], [1])
    request[name] = proto
    with pytest.raises(ServingError) as err:
        decode_inputs(RETRIEVAL, request)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.message and repr(name) in err.value.message


def test_memory_budget_counts_every_input_and_padding() -> None:
    def request(history_width: int) -> dict[str, tensor_pb2.TensorProto]:
        return {
            "user_id": strings([b"u"], [1]),
            "history": strings([b"abc"], [1, history_width]),
            "k": ints([1], [1]),
        }

    # user_id 32 + 1, k 4 bytes, history width * (32 + 3): width 26 -> 37 + 910 = 947 bytes
    assert decode_inputs(RETRIEVAL, request(26), memory_budget=947)["history"].shape == (1, 26)
    with pytest.raises(ServingError) as err:  # width 27 -> 982 bytes
        decode_inputs(RETRIEVAL, request(27), memory_budget=947)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "estimated 982 bytes" in err.value.message
    # 0 disables the budget
    assert decode_inputs(RETRIEVAL, request(27), memory_budget=0)["history"].shape == (1, 27)


def test_rest_values_are_held_to_the_same_budget() -> None:
    values = {"user_id": ["u"], "history": [["abc"] * 27], "k": [1]}
    with pytest.raises(ServingError) as err:
        coerce_inputs(RETRIEVAL, values, memory_budget=947)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert coerce_inputs(RETRIEVAL, values, memory_budget=982)["history"].shape == (1, 27)


def test_output_filter_repeating_an_alias_is_invalid() -> None:
    outputs = {"scores": np.float32([1.0]), "item_ids": np.array([b"a"], dtype=object)}
    with pytest.raises(ServingError, match="duplicate output tensor alias: scores") as err:
        encode_outputs(outputs, ["scores", "scores"])
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(encode_outputs(outputs, ["scores"])) == ["scores"]


# ----------------------------------------------------------------------------- batching


class Times10:
    """Fake model: y = 10 * x per row (x: [B, W] float); records batch sizes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()
        self.gate = gate

    def __call__(self, inputs):
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.batches.append(int(inputs["x"].shape[0]))
        return {"y": inputs["x"] * 10}


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] for v in values])}


def test_oversized_request_is_rejected_alone_and_small_ones_all_succeed() -> None:
    config = BatchingConfig(max_batch_size=4, max_enqueued_batches=3, batch_timeout_micros=50_000)
    scheduler = BatchScheduler(config)
    model = Times10()
    try:
        with pytest.raises(ServingError) as err:
            scheduler.submit("key", model, rows(*range(5)))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.message == "Task size 5 is larger than maximum input batch size 4"
        # 12 concurrent one-row requests: the queue (3 batches of 4) holds them all
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: scheduler.run("key", model, rows(i)), range(12)))
    finally:
        scheduler.stop()
    assert [r["y"].tolist() for r in results] == [[[10.0 * i]] for i in range(12)]
    assert max(model.batches) <= 4 and sum(model.batches) == 12


def test_large_batch_splitting_runs_pieces_and_joins_the_answer() -> None:
    config = BatchingConfig(
        max_batch_size=8,
        batch_timeout_micros=200_000,
        enable_large_batch_splitting=True,
        max_execution_batch_size=2,
    )
    scheduler = BatchScheduler(config)
    model = Times10()
    try:
        small = scheduler.submit("key", model, {"x": np.array([[1.0, 2.0, 3.0]])})
        big = scheduler.submit("key", model, rows(4.0, 5.0, 6.0, 7.0, 8.0))
        small_out, big_out = small.result(timeout=10), big.result(timeout=10)
        with pytest.raises(ServingError, match="Task size 9 is larger than maximum input"):
            scheduler.submit("key", model, rows(*range(9)))
    finally:
        scheduler.stop()
    # pieces of the 5 rows: 1 (fills the open batch after `small`), 2, 2 -> batches of 2, 2, 2
    assert sorted(model.batches) == [2, 2, 2]
    assert small_out["y"].tolist() == [[10.0, 20.0, 30.0]]
    # the first piece ran merged with the 3-wide request: joined rows are padded with 0
    assert big_out["y"].tolist() == [
        [40.0, 0.0, 0.0],
        [50.0, 0.0, 0.0],
        [60.0, 0.0, 0.0],
        [70.0, 0.0, 0.0],
        [80.0, 0.0, 0.0],
    ]


def test_split_request_fails_with_the_error_of_a_failing_piece() -> None:
    config = BatchingConfig(
        max_batch_size=4, enable_large_batch_splitting=True, max_execution_batch_size=2
    )
    scheduler = BatchScheduler(config)

    def negative_fails(inputs):
        if (inputs["x"] < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative x")
        return {"y": inputs["x"]}

    try:
        future = scheduler.submit("key", negative_fails, rows(1.0, 2.0, -3.0))
        with pytest.raises(ServingError, match="negative x"):
            future.result(timeout=10)
    finally:
        scheduler.stop()


def test_batching_config_checks_the_execution_size() -> None:
    with pytest.raises(ValueError, match="max_execution_batch_size=9"):
        BatchingConfig(max_batch_size=8, max_execution_batch_size=9)
    with pytest.raises(ValueError, match="largest executed batch 2"):
        BatchingConfig(
            max_batch_size=8,
            enable_large_batch_splitting=True,
            max_execution_batch_size=2,
            allowed_batch_sizes=[4, 8],
        )


def test_stop_is_bounded_and_fails_what_is_left() -> None:
    gate = threading.Event()
    scheduler = BatchScheduler(BatchingConfig(max_batch_size=1, batch_timeout_micros=0))
    model = Times10(gate)
    running = scheduler.submit("key", model, rows(1.0))  # stuck in the model
    time.sleep(0.1)
    queued = scheduler.submit("key", model, rows(2.0))  # waits behind it (one thread)
    start = time.monotonic()
    late = scheduler.stop(timeout=0.3)
    assert time.monotonic() - start < 1.0
    assert late == 2
    for future in (running, queued):
        with pytest.raises(ServingError) as err:
            future.result(timeout=1)
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
    gate.set()  # the stuck batch finishes later; its result is dropped without an error
