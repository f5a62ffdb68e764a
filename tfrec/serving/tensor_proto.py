"""TensorProto payloads: value counts, memory estimates and fast numpy conversion.

Memory: a TensorProto may hold fewer values than its shape has elements
(TensorFlow's ``Tensor::FromProto`` pads with the last value, or the dtype's
default when there is none), so a 95-byte request can declare a string tensor
of 2^26 elements. Before anything is allocated,
:func:`tfrec.serving.tensors.decode_inputs` checks the value count against the
shape (more values than elements, or a ``tensor_content`` of the wrong length,
is INVALID_ARGUMENT) and the request's estimated memory
(:func:`estimate_proto_bytes`) against a per-request budget
(RESOURCE_EXHAUSTED). :func:`check_memory_budget` is the same check for arrays
that already exist (REST JSON after :func:`tfrec.serving.tensors.coerce_inputs`).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from tfrec.serving.errors import invalid_argument, resource_exhausted

# Estimated bytes per string element besides its characters: the numpy object
# pointer (8) and TensorFlow's ``tstring`` (24) it becomes in ``tf.constant``.
STRING_ELEMENT_OVERHEAD_BYTES = 32

# Direct TensorProto <-> numpy conversion for the common cases (strings in
# ``string_val``, numbers in ``tensor_content`` or ``int_val``/``float_val``):
# ~10x cheaper than ``tf.make_ndarray``/``tf.make_tensor_proto``, which stay the
# fallback for everything else (half/bool/complex...).
_STRING_ENUM = tf.string.as_datatype_enum
_FAST_NUMERIC = {
    dtype.as_datatype_enum: np.dtype(dtype.as_numpy_dtype)
    for dtype in (tf.float32, tf.float64, tf.int32, tf.int64)
}
_FAST_NUMERIC_BY_NUMPY = {np_dtype: enum for enum, np_dtype in _FAST_NUMERIC.items()}
# The typed field holding each dtype's values (TensorFlow's ProtoHelper<T>), and
# how many field entries make one value (complex numbers take two).
_VALUE_FIELDS = {
    **{d.as_datatype_enum: ("int_val", 1) for d in (tf.int32, tf.int16, tf.int8, tf.uint8)},
    **{d.as_datatype_enum: ("int_val", 1) for d in (tf.uint16, tf.qint8, tf.quint8, tf.qint32)},
    **{d.as_datatype_enum: ("half_val", 1) for d in (tf.float16, tf.bfloat16)},
    tf.float32.as_datatype_enum: ("float_val", 1),
    tf.float64.as_datatype_enum: ("double_val", 1),
    tf.int64.as_datatype_enum: ("int64_val", 1),
    tf.uint32.as_datatype_enum: ("uint32_val", 1),
    tf.uint64.as_datatype_enum: ("uint64_val", 1),
    tf.bool.as_datatype_enum: ("bool_val", 1),
    tf.complex64.as_datatype_enum: ("scomplex_val", 2),
    tf.complex128.as_datatype_enum: ("dcomplex_val", 2),
    _STRING_ENUM: ("string_val", 1),
}


# Byte size per dtype enum (tf.as_dtype per request costs more than the checks).
_ITEMSIZE = {enum: tf.as_dtype(enum).size for enum in _VALUE_FIELDS}


def _value_count(proto: tensor_pb2.TensorProto) -> int:
    """How many values the typed ``*_val`` field of ``proto``'s dtype holds."""
    field, per_value = _VALUE_FIELDS.get(proto.dtype, (None, 1))
    return 0 if field is None else len(getattr(proto, field)) // per_value


def estimate_proto_bytes(name: str, proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> int:
    """Checks that ``proto``'s payload fits ``shape`` and estimates its decoded size.

    The rules are TensorFlow's ``Tensor::FromProto``: a ``tensor_content`` must
    hold exactly the shape's bytes; typed values may be fewer than the elements
    (padded with the last value, or the default when there is none). Unlike
    TensorFlow, which ignores extra values, more values than elements is an
    error here (it is always a client bug).

    Args:
        name: Input name, for messages.
        proto: The request tensor (dtype already validated).
        shape: Its declared shape (non-negative dimensions).

    Returns:
        Estimated bytes once decoded: the itemsize per number;
        ``STRING_ELEMENT_OVERHEAD_BYTES`` plus the length per string, padded
        elements included.

    Raises:
        ServingError: INVALID_ARGUMENT when the payload does not fit the shape.
    """
    size = math.prod(shape)
    enum = proto.dtype
    content = proto.tensor_content
    if content:
        if enum == _STRING_ENUM:  # TensorFlow's encoded string list; decoding checks it
            return size * STRING_ELEMENT_OVERHEAD_BYTES + len(content)
        itemsize = _ITEMSIZE.get(enum) or tf.as_dtype(enum).size
        if size and len(content) != size * itemsize:
            raise invalid_argument(
                f"input {name!r}: tensor_content holds {len(content)} bytes but "
                f"shape {list(shape)} of {tf.as_dtype(enum).name} needs {size * itemsize}"
            )
        return size * itemsize
    count = _value_count(proto)
    if count > size:
        raise invalid_argument(
            f"input {name!r}: the tensor holds {count} values, more than the {size} elements "
            f"of its shape {list(shape)} (fewer values are padded with the last one)"
        )
    if enum != _STRING_ENUM:
        return size * max(_ITEMSIZE.get(enum) or tf.as_dtype(enum).size, 1)
    values = proto.string_val
    payload = sum(map(len, values))
    if 0 < count < size:
        payload += (size - count) * len(values[-1])
    return size * STRING_ELEMENT_OVERHEAD_BYTES + payload


def estimate_array_bytes(array: np.ndarray) -> int:
    """Estimated memory of a decoded input, counted like :func:`estimate_proto_bytes`."""
    if array.dtype.kind != "O":
        return int(array.nbytes)
    lengths = sum(len(v) for v in array.flat if isinstance(v, bytes | str))
    return array.size * STRING_ELEMENT_OVERHEAD_BYTES + lengths


def check_memory_budget(estimated_bytes: int, budget: int) -> None:
    """Raises RESOURCE_EXHAUSTED if a request's estimated input memory is over ``budget``.

    Args:
        estimated_bytes: Sum over the request's inputs (see :func:`estimate_proto_bytes`).
        budget: Bytes allowed per request; 0 or less disables the check.
    """
    if budget > 0 and estimated_bytes > budget:
        raise resource_exhausted(
            f"the request's input tensors need an estimated {estimated_bytes} bytes, more than "
            f"the per-request budget of {budget} bytes (request_memory_budget_bytes; a string "
            f"element counts {STRING_ELEMENT_OVERHEAD_BYTES} bytes plus its length)"
        )


def _padded(values: list, size: int, dtype: np.dtype, default: object) -> np.ndarray:
    """``values`` (at most ``size``) as a flat array, padded with the last value."""
    array = np.full(size, values[-1] if values else default, dtype=dtype)
    array[: len(values)] = values
    return array


def _fast_ndarray(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> np.ndarray | None:
    """``proto`` as an array of ``shape`` without ``tf.make_ndarray``, or None if not simple.

    Call :func:`estimate_proto_bytes` first: it rejects payloads that do not fit.
    """
    size = math.prod(shape)
    enum = proto.dtype
    if enum == _STRING_ENUM:
        array = None if proto.tensor_content else _strings(list(proto.string_val), size)
    elif enum in _FAST_NUMERIC:
        array = _numbers(proto, _FAST_NUMERIC[enum], size)
    else:
        array = None
    return None if array is None else array.reshape(shape)


def _strings(values: list[bytes], size: int) -> np.ndarray:
    """A flat object array of ``size`` strings (fewer values are padded with the last)."""
    if len(values) == size:  # the usual case: one value per element
        return np.array(values, dtype=object) if size else np.empty(0, dtype=object)
    return _padded(values, size, np.dtype(object), b"")


def _numbers(proto: tensor_pb2.TensorProto, dtype: np.dtype, size: int) -> np.ndarray | None:
    """A flat array of ``size`` numbers from ``tensor_content`` or the typed values."""
    if size == 0:
        return np.empty(0, dtype=dtype)
    content = proto.tensor_content
    if content:
        if len(content) != size * dtype.itemsize:
            return None
        return np.frombuffer(content, dtype=dtype)
    values = list(getattr(proto, _VALUE_FIELDS[proto.dtype][0]))
    if len(values) == size:
        return np.array(values, dtype=dtype)
    return None if len(values) > size else _padded(values, size, dtype, 0)


def to_tensor_proto(
    array: np.ndarray, out: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """A model output as a ``TensorProto`` (same content as ``tf.make_tensor_proto``).

    ``out``: an empty TensorProto to fill (e.g. a ``PredictResponse.outputs`` entry).
    """
    proto = tensor_pb2.TensorProto() if out is None else out
    if array.dtype.kind == "O":
        flat = array.ravel().tolist()
        if all(type(v) is bytes for v in flat):
            proto.dtype = _STRING_ENUM
            _set_shape(proto, array.shape)
            proto.string_val.extend(flat)
            return proto
    else:
        enum = _FAST_NUMERIC_BY_NUMPY.get(array.dtype)
        if enum is not None:
            proto.dtype = enum
            _set_shape(proto, array.shape)
            proto.tensor_content = np.ascontiguousarray(array).tobytes()
            return proto
    proto.CopyFrom(tf.make_tensor_proto(array))
    return proto


def _set_shape(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> None:
    dims = proto.tensor_shape.dim
    for dim in shape:
        dims.add(size=dim)


def proto_to_array(name: str, proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> np.ndarray:
    """A request tensor as a numpy array of ``shape`` (its payload already checked).

    Args:
        name: Input name, for messages.
        proto: The request tensor, accepted by :func:`estimate_proto_bytes`.
        shape: Its declared shape.

    Raises:
        ServingError: INVALID_ARGUMENT for a malformed TensorProto or values
            that do not fill ``shape``.
    """
    try:
        array = _fast_ndarray(proto, shape)
        if array is None:
            array = tf.make_ndarray(proto)
    except (ValueError, TypeError, IndexError) as err:
        raise invalid_argument(f"input {name!r}: malformed TensorProto: {err}") from err
    if array.shape != shape:
        raise invalid_argument(
            f"input {name!r}: the tensor holds {array.size} values, which do not fill "
            f"its shape {list(shape)}"
        )
    return array
