"""Hostile gRPC requests for ``benchmarks/hostile.py``: builders, sender, answer checks.

A request is classified by its *outcome*: the gRPC status name (``OK``,
``INVALID_ARGUMENT``, ...) or ``OK_WRONG_ANSWER`` for an OK whose answer fails
its check. The outcomes each class may have are in :mod:`benchmarks._hostile_table`;
the REST classes are built in :mod:`benchmarks._hostile_rest`.

Tensors are built directly as ``TensorProto`` messages (no TensorFlow), so
malformed ones (wrong value counts, huge declared shapes) are easy to express.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

PREDICT = "/tensorflow.serving.PredictionService/Predict"
Arrays = dict[str, np.ndarray]


@dataclasses.dataclass
class Reference:
    """A valid request and the answer it got sequentially at the start."""

    inputs: Arrays
    answer: Arrays


@dataclasses.dataclass
class Context:
    """What the builders and senders need to know about the server under test."""

    grpc_target: str
    rest_port: int
    model_name: str
    users: list[str]
    items: list[str]
    max_history: int
    references: list[Reference] = dataclasses.field(default_factory=list)
    empty_refs: list[Reference] = dataclasses.field(default_factory=list)
    unknown_ref: Reference | None = None
    channel: grpc.Channel | None = None

    def call(self, channel: grpc.Channel | None = None) -> Any:
        """The raw Predict callable (serialized request bytes in, PredictResponse out)."""
        if channel is None:
            if self.channel is None:
                self.channel = grpc.insecure_channel(self.grpc_target)
            channel = self.channel
        return channel.unary_unary(
            PREDICT, response_deserializer=predict_pb2.PredictResponse.FromString
        )


@dataclasses.dataclass
class Case:
    """One request to send.

    ``kind``: ``unary`` (``payload`` is a PredictRequest or raw bytes);
    ``cancelled``, ``deadline``, ``disconnect`` (``payload`` is (request, seconds
    before the cancel / close)); ``rest`` or ``hangup`` (raw HTTP bytes; ``hangup``
    closes the connection right after sending). ``check`` validates an OK answer.
    """

    cls: str
    kind: str
    payload: Any
    check: Callable[[Arrays], bool] | None = None
    timeout: float = 10.0


# ------------------------------------------------------------------- tensors and answers


def tensor(array: Any, dtype: str | None = None) -> tensor_pb2.TensorProto:
    """A TensorProto of ``array`` (strings -> string_val, numbers -> *_val fields)."""
    array = np.asarray(array, dtype=dtype) if dtype else np.asarray(array)
    proto = tensor_pb2.TensorProto()
    for dim in array.shape:
        proto.tensor_shape.dim.add(size=dim)
    flat = array.reshape(-1).tolist()
    if array.dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif array.dtype == np.int32:
        proto.dtype = types_pb2.DT_INT32
        proto.int_val.extend(flat)
    elif array.dtype == np.int64:
        proto.dtype = types_pb2.DT_INT64
        proto.int64_val.extend(flat)
    else:
        proto.dtype = types_pb2.DT_FLOAT
        proto.float_val.extend(flat)
    return proto


def shaped(dtype: int, shape: list[int], **values: Any) -> tensor_pb2.TensorProto:
    """A raw TensorProto with an arbitrary declared shape and value fields."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for dim in shape:
        proto.tensor_shape.dim.add(size=dim)
    return proto


_NUMPY = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_INT32: np.int32}


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A response TensorProto (string or float32/int32) as a numpy array."""
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.dtype == types_pb2.DT_STRING:
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=_NUMPY[proto.dtype])
    else:
        field = proto.float_val if proto.dtype == types_pb2.DT_FLOAT else proto.int_val
        values = np.asarray(list(field), dtype=_NUMPY[proto.dtype])
    if values.size != math.prod(shape):
        raise ValueError(f"output holds {values.size} values for shape {list(shape)}")
    return values.reshape(shape)


def same_answer(got: Arrays, want: Arrays, k: np.ndarray, tol: float = 1e-4) -> bool:
    """True if each row's first ``k`` results equal ``want``'s, up to ties.

    Scores must match position by position; an item in both answers must have
    the same score in both; an item in only one answer must score as the last
    one kept (a tie at the cut). Under batching an answer can have more columns
    (a merged batch with a larger ``k``), so only each row's first ``k[row]``
    columns are compared.
    """
    ids, scores = got.get("item_ids"), got.get("scores")
    if ids is None or scores is None or ids.shape != scores.shape or ids.ndim != 2:
        return False
    if ids.shape[0] != want["item_ids"].shape[0]:
        return False
    for row, k_row in enumerate(np.asarray(k).reshape(-1).tolist()):
        if ids.shape[1] < k_row:
            return False
        if k_row <= 0:
            continue
        got_s, want_s = scores[row, :k_row], want["scores"][row, :k_row]
        if not np.allclose(got_s, want_s, atol=tol, rtol=tol):
            return False
        got_map = dict(zip(ids[row, :k_row].tolist(), got_s.tolist(), strict=True))
        want_map = dict(zip(want["item_ids"][row, :k_row].tolist(), want_s.tolist(), strict=True))
        for item in got_map.keys() | want_map.keys():
            a, b = got_map.get(item), want_map.get(item)
            other = want_s[-1] if b is None else got_s[-1] if a is None else b
            if abs((b if a is None else a) - other) > tol:
                return False
    return True


def request(ctx: Context, inputs: dict[str, Any], **spec: Any) -> predict_pb2.PredictRequest:
    """A PredictRequest; ``inputs`` values are arrays or ready TensorProtos."""
    message = predict_pb2.PredictRequest()
    message.model_spec.name = spec.pop("name", ctx.model_name)
    if "version" in spec:
        message.model_spec.version.value = spec.pop("version")
    if "label" in spec:  # setting the oneof, even to "", would drop a version
        message.model_spec.version_label = spec.pop("label")
    message.model_spec.signature_name = spec.pop("signature", "serving_default")
    for name, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tensor(value)
        message.inputs[name].CopyFrom(proto)
    return message


def random_inputs(ctx: Context, rng: np.random.Generator, batch: int | None = None) -> Arrays:
    """A valid request: B users (10% unknown), left-padded histories, k in 1..10."""
    batch = int(rng.integers(1, 4)) if batch is None else batch
    width = int(rng.integers(1, ctx.max_history + 1))
    history = np.full((batch, width), b"", dtype=object)
    for row in range(batch):
        length = int(rng.integers(0, width + 1))
        chosen = rng.choice(len(ctx.items), size=length, replace=False)
        history[row, width - length :] = [ctx.items[i].encode() for i in chosen]
    users = [ctx.users[int(rng.integers(len(ctx.users)))] for _ in range(batch)]
    users = [u if rng.random() > 0.1 else "nobody" for u in users]
    k = rng.integers(1, min(10, len(ctx.items)) + 1, size=batch).astype(np.int32)
    return {
        "user_id": np.array([u.encode() for u in users], dtype=object),
        "history": history,
        "k": k,
    }


def _checked(cls: str, ref: Reference, kind: str = "unary", **kw: Any) -> Case:
    def check(out: Arrays) -> bool:
        return same_answer(out, ref.answer, ref.inputs["k"])

    return Case(cls, kind, request(kw.pop("ctx"), ref.inputs), check, **kw)


# ------------------------------------------------------------------------- gRPC builders


def _valid(rng: np.random.Generator, ctx: Context) -> Case:
    return _checked("valid", ctx.references[int(rng.integers(len(ctx.references)))], ctx=ctx)


def _wrong_dtype(rng: np.random.Generator, ctx: Context) -> Case:
    inputs: dict[str, Any] = dict(ctx.references[0].inputs)
    choice = int(rng.integers(4))
    if choice == 0:
        inputs["k"] = inputs["k"].astype(np.float32)
    elif choice == 1:
        inputs["k"] = inputs["k"].astype(np.int64)
    elif choice == 2:
        inputs["user_id"] = np.arange(len(inputs["user_id"]), dtype=np.int64)
    else:
        inputs["history"] = np.zeros(inputs["history"].shape, dtype=np.int32)
    return Case("wrong_dtype", "unary", request(ctx, inputs))


def _values_mismatch(rng: np.random.Generator, ctx: Context) -> Case:
    inputs: dict[str, Any] = {"user_id": [b"u0"], "history": [[b"i1", b"i2"]], "k": np.int32([3])}
    choice = int(rng.integers(4))
    if choice == 0:  # 3 strings for shape [1]
        inputs["user_id"] = shaped(types_pb2.DT_STRING, [1], string_val=[b"u0", b"u1", b"u2"])
    elif choice == 1:  # 5 strings for shape [1, 2]
        inputs["history"] = shaped(types_pb2.DT_STRING, [1, 2], string_val=[b"i1"] * 5)
    elif choice == 2:  # 12 bytes of tensor_content for one int32
        inputs["k"] = shaped(types_pb2.DT_INT32, [1], tensor_content=b"\x03\x00\x00\x00" * 3)
    else:  # 3 bytes of tensor_content for one int32
        inputs["k"] = shaped(types_pb2.DT_INT32, [1], tensor_content=b"\x03\x00\x00")
    return Case("values_mismatch", "unary", request(ctx, inputs))


def _bad_utf8(rng: np.random.Generator, ctx: Context) -> Case:
    bad = [b"\xff\xfe", b"\xc3\x28", b"\x80abc", b"\xed\xa0\x80", b"ok\xf0\x28\x8c\x28"]
    pick = rng.permutation(len(bad))
    ref = ctx.unknown_ref
    inputs = {
        "user_id": np.array([bad[pick[0]]], dtype=object),
        "history": np.array([[bad[pick[1]], bad[pick[2]]]], dtype=object),
        "k": ref.inputs["k"],
    }

    def check(out: Arrays) -> bool:
        return same_answer(out, ref.answer, ref.inputs["k"])

    return Case("bad_utf8", "unary", request(ctx, inputs), check)


def _bad_k(rng: np.random.Generator, ctx: Context) -> Case:
    values = [0, -3, -(2**31), 2**31 - 1, len(ctx.items) + 1]
    inputs = dict(ctx.references[0].inputs)
    inputs["k"] = np.full(inputs["k"].shape, values[int(rng.integers(len(values)))], np.int32)
    return Case("bad_k", "unary", request(ctx, inputs))


def _spec_case(cls: str, **spec: Any) -> Callable[[np.random.Generator, Context], Case]:
    def build(rng: np.random.Generator, ctx: Context) -> Case:
        key, options = next(iter(spec.items()))
        value = options[int(rng.integers(len(options)))]
        return Case(cls, "unary", request(ctx, ctx.references[0].inputs, **{key: value}))

    return build


def _input_names(rng: np.random.Generator, ctx: Context) -> Case:
    inputs: dict[str, Any] = dict(ctx.references[0].inputs)
    choice = int(rng.integers(3))
    if choice == 0:
        del inputs[["user_id", "history", "k"][int(rng.integers(3))]]
    elif choice == 1:
        inputs["extra"] = np.array([b"x"], dtype=object)
    else:
        inputs["K"] = inputs.pop("k")
    return Case("input_names", "unary", request(ctx, inputs))


def _batch_mismatch(rng: np.random.Generator, ctx: Context) -> Case:
    inputs = random_inputs(ctx, rng, batch=3)
    if rng.integers(2):
        inputs["user_id"] = inputs["user_id"][:2]
    else:
        inputs["k"] = inputs["k"][:2]
    return Case("batch_mismatch", "unary", request(ctx, inputs))


def _empty_history(rng: np.random.Generator, ctx: Context) -> Case:
    ref = ctx.empty_refs[int(rng.integers(len(ctx.empty_refs)))]
    inputs = {**ref.inputs, "history": np.zeros((len(ref.inputs["k"]), 0), dtype=object)}

    def check(out: Arrays) -> bool:
        return same_answer(out, ref.answer, ref.inputs["k"])

    return Case("empty_history", "unary", request(ctx, inputs), check)


def _empty_batch(rng: np.random.Generator, ctx: Context) -> Case:
    width = [0, 1, ctx.max_history][int(rng.integers(3))]
    inputs = {
        "user_id": np.zeros((0,), dtype=object),
        "history": np.zeros((0, width), dtype=object),
        "k": np.zeros((0,), dtype=np.int32),
    }

    def check(out: Arrays) -> bool:
        ids, scores = out.get("item_ids"), out.get("scores")
        return ids is not None and scores is not None and ids.shape[0] == scores.shape[0] == 0

    return Case("empty_batch", "unary", request(ctx, inputs), check)


def _garbage_bytes(rng: np.random.Generator, ctx: Context) -> Case:
    if rng.integers(2):  # tag 0x0f = field 1 with the invalid wire type 7: never parses
        return Case("garbage_bytes", "unary", b"\x0f" + rng.bytes(int(rng.integers(0, 64))))
    valid = request(ctx, ctx.references[0].inputs).SerializeToString()
    return Case("garbage_bytes", "unary", valid[:-1])  # the last map entry is cut short


def _timing(kind: str) -> Callable[[np.random.Generator, Context], Case]:
    def build(rng: np.random.Generator, ctx: Context) -> Case:
        ref = ctx.references[int(rng.integers(len(ctx.references)))]
        seconds = float(rng.uniform(0.001, 0.003))
        case = _checked(kind, ref, kind=kind, ctx=ctx)
        case.timeout = seconds if kind == "deadline" else 10.0
        case.payload = (case.payload, seconds)
        return case

    return build


GRPC_BUILDERS: dict[str, Callable[[np.random.Generator, Context], Case]] = {
    "valid": _valid,
    "wrong_dtype": _wrong_dtype,
    "values_mismatch": _values_mismatch,
    "bad_utf8": _bad_utf8,
    "bad_k": _bad_k,
    "unknown_model": _spec_case("unknown_model", name=["nope", "x" * 300, "retrieval/1"]),
    "empty_model_name": _spec_case("empty_model_name", name=[""]),
    "unknown_version": _spec_case("unknown_version", version=[99, 0, -1, 2**62]),
    "unknown_label": _spec_case("unknown_label", label=["nope", "canary", "x" * 200]),
    "unknown_signature": _spec_case("unknown_signature", signature=["nope", "SERVING_DEFAULT"]),
    "input_names": _input_names,
    "batch_mismatch": _batch_mismatch,
    "empty_history": _empty_history,
    "empty_batch": _empty_batch,
    "garbage_bytes": _garbage_bytes,
    "cancelled": _timing("cancelled"),
    "deadline": _timing("deadline"),
    "disconnect": _timing("disconnect"),
}


# ------------------------------------------------------------------------------ sending


def _serialized(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else payload.SerializeToString()


def _response_outcome(response: predict_pb2.PredictResponse, case: Case) -> str:
    if case.check is None:
        return "OK"
    try:
        answer = {name: to_array(proto) for name, proto in response.outputs.items()}
    except (ValueError, KeyError):
        return "OK_WRONG_ANSWER"
    return "OK" if case.check(answer) else "OK_WRONG_ANSWER"


def send_grpc(ctx: Context, case: Case, channel: grpc.Channel | None = None) -> str:
    """Sends one gRPC case and returns its outcome (a status name or OK_WRONG_ANSWER).

    Args:
        ctx: The server under test (its shared channel is used by default).
        case: The request.
        channel: A channel of the caller's own (e.g. one per concurrent client).
    """
    try:
        if case.kind == "unary":
            response = ctx.call(channel)(_serialized(case.payload), timeout=case.timeout)
        elif case.kind == "deadline":
            response = ctx.call(channel)(_serialized(case.payload[0]), timeout=case.timeout)
        elif case.kind == "cancelled":
            future = ctx.call(channel).future(_serialized(case.payload[0]), timeout=case.timeout)
            time.sleep(case.payload[1])
            future.cancel()
            response = future.result(timeout=case.timeout)
        else:  # disconnect: a channel of its own, closed while the call is in flight
            own = grpc.insecure_channel(ctx.grpc_target)
            try:
                future = ctx.call(own).future(_serialized(case.payload[0]), timeout=case.timeout)
                time.sleep(case.payload[1])
            finally:
                own.close()
            response = future.result(timeout=case.timeout)
    except grpc.FutureCancelledError:
        return "CANCELLED"
    except grpc.FutureTimeoutError:
        return "DEADLINE_EXCEEDED"
    except grpc.RpcError as err:
        return err.code().name
    return _response_outcome(response, case)


def oversized_requests(ctx: Context) -> list[tuple[str, predict_pb2.PredictRequest]]:
    """Tiny requests declaring huge tensors (the issue's defect 2), with a label each."""
    user, k = np.array([ctx.users[0].encode()], dtype=object), np.array([3], np.int32)
    two = [ctx.items[0].encode(), ctx.items[1].encode()]
    string, int32 = types_pb2.DT_STRING, types_pb2.DT_INT32
    variants = {
        "history [1, 2^26] from 2 strings": {"history": shaped(string, [1, 2**26], string_val=two)},
        "history [1, 2^40] from 2 strings": {"history": shaped(string, [1, 2**40], string_val=two)},
        "k [2^26] from 1 int": {
            "history": np.array([two], dtype=object),
            "k": shaped(int32, [2**26], int_val=[3]),
        },
    }
    return [
        (
            label,
            request(
                ctx, {"user_id": user, "history": np.array([two], dtype=object), "k": k, **parts}
            ),
        )
        for label, parts in variants.items()
    ]


def too_large_request(ctx: Context, megabytes: int = 65) -> predict_pb2.PredictRequest:
    """A well-formed request of ``megabytes`` MiB (above gRPC's 64 MiB default limit)."""
    history = np.array([[b"x" * (1 << 20)] * megabytes], dtype=object)
    inputs = {"user_id": np.array([b"u"], dtype=object), "history": history, "k": np.int32([3])}
    return request(ctx, inputs)


def predict_answer(ctx: Context, inputs: Arrays, timeout: float = 30.0) -> Arrays:
    """Sends a valid request and returns its outputs (raises grpc.RpcError on failure)."""
    response = ctx.call()(request(ctx, inputs).SerializeToString(), timeout=timeout)
    return {name: to_array(proto) for name, proto in response.outputs.items()}
