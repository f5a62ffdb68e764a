"""The request/response conversion fast paths give TensorFlow's answer for every dtype."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from tfrec.serving.tensor_proto import _fast_ndarray, to_tensor_proto
from tfrec.serving.tensors import (
    SignatureInfo,
    TensorSpecInfo,
    decode_inputs,
    encode_outputs,
)

# Every dtype a Predict signature input or output can carry through tf.make_tensor_proto.
ARRAYS = [
    np.array([[b"a", b""], [b"\xff\x00", b"bc"]], dtype=object),
    np.array([b"only"], dtype=object),
    np.array(b"scalar", dtype=object),
    np.zeros((2, 0), dtype=object),
    np.array([[1.5, -2.0, 3.25]], dtype=np.float32),
    np.array([0.1, 1e300], dtype=np.float64),
    np.array([7, -1, 2**31 - 1], dtype=np.int32),
    np.array([[2**40, -(2**62)]], dtype=np.int64),
    np.array(3, dtype=np.int32),
    np.zeros((0, 3), dtype=np.float32),
    np.array([True, False, True]),
    np.array([1.5, -0.25], dtype=np.float16),
    np.array([-128, 127], dtype=np.int8),
    np.array([0, 255], dtype=np.uint8),
    np.array([-3, 300], dtype=np.int16),
    np.array([0, 65535], dtype=np.uint16),
    np.array([0, 2**32 - 1], dtype=np.uint32),
    np.array([0, 2**64 - 1], dtype=np.uint64),
    np.array([1 + 2j, -0.5j], dtype=np.complex64),
    np.array([[3 - 1j]], dtype=np.complex128),
]


def _signature(dtype: tf.DType, rank: int) -> SignatureInfo:
    spec = TensorSpecInfo("x", dtype, (None,) * rank)
    return SignatureInfo(name="serving_default", inputs={"x": spec}, outputs={})


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_decode_matches_make_ndarray_on_every_dtype(array: np.ndarray) -> None:
    proto = tf.make_tensor_proto(array)
    want = tf.make_ndarray(proto)
    got = decode_inputs(_signature(tf.as_dtype(proto.dtype), array.ndim), {"x": proto})["x"]
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_encode_in_place_matches_a_new_proto(array: np.ndarray) -> None:
    new = to_tensor_proto(array)
    response = predict_pb2.PredictResponse()
    filled = to_tensor_proto(array, out=response.outputs["x"])
    assert filled is response.outputs["x"]
    assert filled.SerializeToString(deterministic=True) == new.SerializeToString(deterministic=True)
    back = tf.make_ndarray(response.outputs["x"])
    assert back.dtype == array.dtype and back.tolist() == array.tolist()


@pytest.mark.parametrize(
    ("values", "shape", "expected"),
    [
        ([b"x", b"y", b"z"], (3,), [b"x", b"y", b"z"]),  # one value per element
        ([b"x", b"y"], (2, 2), [[b"x", b"y"], [b"y", b"y"]]),  # fewer: the last repeats
        ([], (2,), [b"", b""]),  # none: the default
        ([], (0,), []),
    ],
)
def test_string_values_decode_like_tensorflow(values: list, shape: tuple, expected: list) -> None:
    proto = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum, string_val=values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    fast = _fast_ndarray(proto, shape)
    assert fast.dtype == object and fast.tolist() == expected
    # TensorFlow's C++ Tensor::FromProto fills missing strings with b""; the Python
    # tf.make_ndarray returns str "" then, so compare with it only when values exist.
    if values:
        assert tf.make_ndarray(proto).tolist() == expected


def test_encode_outputs_into_a_response_equals_the_dict_path() -> None:
    outputs = {
        "item_ids": np.array([[b"b", b"c"]], dtype=object),
        "scores": np.array([[5.02, 4.02]], dtype=np.float32),
        "flags": np.array([[True, False]]),
    }
    response = predict_pb2.PredictResponse()
    filled = encode_outputs(outputs, ["scores", "item_ids"], into=response.outputs)
    assert filled is response.outputs and sorted(response.outputs) == ["item_ids", "scores"]
    as_dict = encode_outputs(outputs, ["scores", "item_ids"])
    for name, proto in as_dict.items():
        assert response.outputs[name] == proto
    everything = predict_pb2.PredictResponse()
    encode_outputs(outputs, into=everything.outputs)
    assert tf.make_ndarray(everything.outputs["flags"]).tolist() == [[True, False]]
