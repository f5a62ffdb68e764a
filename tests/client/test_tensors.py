"""tfrec_client.tensors against TensorFlow's make_tensor_proto / make_ndarray."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tfrec_client import _wire, make_ndarray, make_tensor_proto

ARRAYS = {
    "float32 2x3": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
    "float64": np.array([1e-300, -2.5, np.inf]),
    "float16 2x2": np.array([[0.5, -1.0], [65504.0, 1e-4]], dtype=np.float16),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "int16": np.array([-32768, 32767], dtype=np.int16),
    "int32": np.array([-(2**31), 2**31 - 1, 5], dtype=np.int32),
    "int64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "uint8": np.array([0, 255], dtype=np.uint8),
    "uint16": np.array([0, 65535], dtype=np.uint16),
    "uint32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "uint64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "bool": np.array([[True, False, True]]),
    "complex64": np.array([1 + 2j, -3.5j], dtype=np.complex64),
    "complex128": np.array([1e-200 + 1j], dtype=np.complex128),
    "float32 scalar": np.float32(2.5),
    "int32 scalar": np.int32(-7),
    "float16 one": np.array([1.5], dtype=np.float16),
    "bool scalar": np.bool_(True),
    "float32 empty 0x3": np.zeros((0, 3), dtype=np.float32),
    "int64 empty": np.zeros((4, 0), dtype=np.int64),
    "str": np.array([["a", "ü"], ["", "long id 42"]]),
    "bytes": np.array([b"x", b"\xff\xfe"]),
    "object bytes with NUL": np.array([b"a\x00b", b""], dtype=object),
    "string scalar": np.array("only"),
    "string empty 2x0": np.zeros((2, 0), dtype=object),
}


def as_tf(ours) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto.FromString(ours.SerializeToString())


def as_ours(theirs: tensor_pb2.TensorProto):
    return _wire.TensorProto.FromString(theirs.SerializeToString())


@pytest.mark.parametrize("name", list(ARRAYS))
def test_encoding_equals_tensorflows(name: str) -> None:
    array = ARRAYS[name]
    assert as_tf(make_tensor_proto(array)) == tf.make_tensor_proto(array)


@pytest.mark.parametrize("name", list(ARRAYS))
def test_decoding_equals_tensorflows(name: str) -> None:
    theirs = tf.make_tensor_proto(ARRAYS[name])
    expected = tf.make_ndarray(theirs)
    got = make_ndarray(as_ours(theirs))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert got.flags.writeable


def test_python_values_take_numpys_dtype_unless_given() -> None:
    assert as_tf(make_tensor_proto([1, 2])) == tf.make_tensor_proto(np.array([1, 2]))
    assert as_tf(make_tensor_proto([1, 2])).dtype == types_pb2.DT_INT64
    int32 = as_tf(make_tensor_proto([1, 2], dtype=np.int32))
    assert int32 == tf.make_tensor_proto(np.int32([1, 2]))
    mixed = as_tf(make_tensor_proto(np.array(["a", b"b"], dtype=object)))
    assert list(mixed.string_val) == [b"a", b"b"]


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.array([1, 258], dtype=">i4")
    proto = make_tensor_proto(array)
    # little-endian int32: 1 -> 01 00 00 00, 258 = 0x102 -> 02 01 00 00
    assert proto.tensor_content == b"\x01\x00\x00\x00\x02\x01\x00\x00"
    assert tf.make_ndarray(as_tf(proto)).tolist() == [1, 258]


def typed(dtype: int, shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


@pytest.mark.parametrize(
    ("proto", "expected"),
    [
        # fewer values than elements: the last value repeats (TF's broadcast)
        (typed(types_pb2.DT_FLOAT, [2, 3], float_val=[1.0, 2.0]), [[1, 2, 2], [2, 2, 2]]),
        (typed(types_pb2.DT_INT32, [3], int_val=[7]), [7, 7, 7]),
        # no values at all: zeros
        (typed(types_pb2.DT_INT64, [2], int64_val=[]), [0, 0]),
        # C++ TF Serving packs booleans and numbers in tensor_content
        (typed(types_pb2.DT_BOOL, [3], tensor_content=b"\x01\x00\x01"), [True, False, True]),
        (
            typed(types_pb2.DT_INT32, [2], tensor_content=b"\x01\x00\x00\x00\xff\xff\xff\xff"),
            [1, -1],
        ),
        # float16 1.5 = sign 0, exponent 15, mantissa 0x200 -> bits 0x3E00 = 15872
        (typed(types_pb2.DT_HALF, [2], half_val=[15872]), [1.5, 1.5]),
        (typed(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0, -2.0]), [1 - 2j]),
        (typed(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"]), [b"a", b"b", b"b"]),
    ],
)
def test_typed_value_fields_decode_like_tensorflow(proto, expected) -> None:
    got = make_ndarray(as_ours(proto))
    assert got.tolist() == expected
    assert np.array_equal(got, tf.make_ndarray(proto))
    assert got.dtype == tf.make_ndarray(proto).dtype


def test_empty_string_tensor_decodes_to_empty_bytes() -> None:
    # TF returns str "" here (its padding default); tfrec_client keeps every
    # element of a DT_STRING array a bytes object.
    got = make_ndarray(as_ours(typed(types_pb2.DT_STRING, [2])))
    assert got.tolist() == [b"", b""]


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (typed(types_pb2.DT_INT32, [3], tensor_content=b"\x00" * 8), "has 8 bytes, expected 12"),
        (typed(types_pb2.DT_FLOAT, [1], float_val=[1.0, 2.0]), "2 values in float_val"),
        (typed(types_pb2.DT_STRING, [1], string_val=[b"a", b"b"]), "2 values for a shape of 1"),
        (typed(types_pb2.DT_FLOAT, [-1], float_val=[1.0]), "every dimension >= 0"),
        (typed(types_pb2.DT_BFLOAT16, [1], half_val=[1]), "dtype DT_BFLOAT16"),
        (typed(types_pb2.DT_RESOURCE, [1]), "dtype DT_RESOURCE"),
        (typed(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0]), "1 numbers, expected"),
    ],
)
def test_malformed_tensors_raise_located_errors(proto, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_ndarray(as_ours(proto))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array(["a", 3], dtype=object), "element 1 is int 3"),
        (np.array(["2024-01-01"], dtype="datetime64[D]"), "dtype datetime64"),
        (np.array([b"\x00"], dtype="V1"), "dtype \\|V1"),
    ],
)
def test_values_a_tensor_cannot_hold_raise(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_tensor_proto(values)
