"""The direct TensorProto <-> numpy paths agree with tf.make_ndarray / tf.make_tensor_proto."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from tfrec.serving.errors import ServingError
from tfrec.serving.tensor_proto import _fast_ndarray, to_tensor_proto
from tfrec.serving.tensors import (
    SignatureInfo,
    TensorSpecInfo,
    decode_inputs,
)


def _signature(dtype: tf.DType, shape: tuple[int | None, ...]) -> SignatureInfo:
    spec = TensorSpecInfo("x", dtype, shape)
    return SignatureInfo(name="serving_default", inputs={"x": spec}, outputs={})


@pytest.mark.parametrize(
    "array",
    [
        np.array([[b"a", b""], [b"\xff", b"bc"]], dtype=object),  # strings, non-UTF-8 kept
        np.array([[1.5, -2.0, 3.25]], dtype=np.float32),
        np.array([7, -1], dtype=np.int32),
        np.array([[2**40]], dtype=np.int64),
        np.array([0.1], dtype=np.float64),
        np.zeros((0, 3), dtype=np.float32),  # empty batch
    ],
)
def test_round_trip_matches_tensorflow(array: np.ndarray) -> None:
    proto = to_tensor_proto(array)
    # Whatever the encoding, TensorFlow's own decoder reads back the same values.
    decoded = tf.make_ndarray(proto)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tolist() == array.tolist()
    assert proto.dtype == tf.make_tensor_proto(array).dtype
    # And the fast decoder reads TensorFlow's encoding like tf.make_ndarray does.
    fast = _fast_ndarray(tf.make_tensor_proto(array), array.shape)
    assert fast is not None and fast.dtype == array.dtype and fast.tolist() == array.tolist()


def test_value_fields_are_decoded() -> None:
    # A client that fills int_val (as TF Serving's C++/Java clients may) instead of tensor_content.
    proto = tensor_pb2.TensorProto(dtype=tf.int32.as_datatype_enum, int_val=[3, 4, 5])
    proto.tensor_shape.dim.add(size=3)
    assert decode_inputs(_signature(tf.int32, (None,)), {"x": proto})["x"].tolist() == [3, 4, 5]


def test_broadcast_value_is_padded_like_tensorflow() -> None:
    # One float_val for shape [2, 2]: TensorFlow pads with the last value; the fast
    # path now does the same (after decode_inputs checked the memory budget).
    proto = tensor_pb2.TensorProto(dtype=tf.float32.as_datatype_enum, float_val=[1.5])
    proto.tensor_shape.dim.add(size=2)
    proto.tensor_shape.dim.add(size=2)
    assert _fast_ndarray(proto, (2, 2)).tolist() == tf.make_ndarray(proto).tolist()
    array = decode_inputs(_signature(tf.float32, (None, None)), {"x": proto})["x"]
    assert array.tolist() == [[1.5, 1.5], [1.5, 1.5]]


def test_short_tensor_content_is_rejected() -> None:
    # 2 float32 values (8 bytes) declared as shape [3]: not a valid tensor.
    proto = tensor_pb2.TensorProto(
        dtype=tf.float32.as_datatype_enum, tensor_content=np.float32([1, 2]).tobytes()
    )
    proto.tensor_shape.dim.add(size=3)
    assert _fast_ndarray(proto, (3,)) is None
    with pytest.raises(ServingError) as err:
        decode_inputs(_signature(tf.float32, (None,)), {"x": proto})
    assert "x" in err.value.message


def test_other_dtypes_use_make_tensor_proto() -> None:
    array = np.array([True, False])
    proto = to_tensor_proto(array)
    assert proto == tf.make_tensor_proto(array)  # bool is not on the fast path
    assert tf.make_ndarray(proto).tolist() == [True, False]
