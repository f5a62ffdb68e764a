"""Signature specs, request tensor validation and TensorProto conversion.

Requests are checked against the signature's ``TensorInfo`` (names, dtype,
rank, known dimensions, size) *before* the model runs, so a malformed request
is rejected with INVALID_ARGUMENT and a message naming the input, instead of an
opaque error from inside the graph.

Memory: a TensorProto may hold fewer values than its shape has elements
(TensorFlow's ``Tensor::FromProto`` pads with the last value, or the dtype's
default when there is none), so a 95-byte request can declare a string tensor
of 2^26 elements. Before anything is allocated, :func:`decode_inputs` checks the
value count against the shape (more values than elements, or a
``tensor_content`` of the wrong length, is INVALID_ARGUMENT) and the request's
estimated memory (:func:`estimate_proto_bytes`) against a per-request budget
(RESOURCE_EXHAUSTED). :func:`check_memory_budget` is the same check for arrays
that already exist (REST JSON after :func:`coerce_inputs`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, MutableMapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfrec.serving.errors import invalid_argument, resource_exhausted

# A request tensor larger than this is rejected before it is materialised (a
# tiny TensorProto can declare a huge shape with one broadcast value).
MAX_TENSOR_ELEMENTS = 1 << 26

# Default per-request budget of estimated input memory (all inputs together).
DEFAULT_REQUEST_MEMORY_BYTES = 64 << 20
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
    array = None
    enum = proto.dtype
    if enum == _STRING_ENUM:
        if not proto.tensor_content:
            values = list(proto.string_val)
            if len(values) == size:  # the usual case: one value per element
                array = np.array(values, dtype=object) if size else np.empty(0, dtype=object)
            else:
                array = _padded(values, size, np.dtype(object), b"")
    elif enum in _FAST_NUMERIC:
        np_dtype = _FAST_NUMERIC[enum]
        content = proto.tensor_content
        if size == 0:
            array = np.empty(0, dtype=np_dtype)
        elif content:
            if len(content) == size * np_dtype.itemsize:
                array = np.frombuffer(content, dtype=np_dtype)
        else:
            values = getattr(proto, _VALUE_FIELDS[enum][0])
            if len(values) <= size:
                array = _padded(list(values), size, np_dtype, 0)
    return None if array is None else array.reshape(shape)


def to_tensor_proto(
    array: np.ndarray, out: tensor_pb2.TensorProto | None = None
) -> tensor_pb2.TensorProto:
    """A model output as a ``TensorProto`` (same content as ``tf.make_tensor_proto``).

    ``out``: an empty TensorProto to fill (e.g. a ``PredictResponse.outputs`` entry).
    """
    enum = _FAST_NUMERIC_BY_NUMPY.get(array.dtype)
    fast_string = array.dtype.kind == "O" and all(type(v) is bytes for v in array.flat)
    proto = tensor_pb2.TensorProto() if out is None else out
    if enum is None and not fast_string:
        proto.CopyFrom(tf.make_tensor_proto(array))
        return proto
    proto.dtype = _STRING_ENUM if fast_string else enum
    dims = proto.tensor_shape.dim
    for dim in array.shape:
        dims.add(size=dim)
    if fast_string:
        proto.string_val.extend(array.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """One input or output of a signature.

    Attributes:
        name: The alias clients use (key of ``inputs``/``outputs``).
        dtype: TensorFlow dtype.
        shape: Dimensions (None = unknown), or None for an unknown rank.
    """

    name: str
    dtype: tf.DType
    shape: tuple[int | None, ...] | None

    @classmethod
    def from_tensor_info(cls, name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpecInfo:
        """Reads a ``TensorInfo`` of a ``SignatureDef``."""
        proto_shape = info.tensor_shape
        shape = (
            None
            if proto_shape.unknown_rank
            else tuple(None if d.size < 0 else int(d.size) for d in proto_shape.dim)
        )
        return cls(name=name, dtype=tf.as_dtype(info.dtype), shape=shape)

    def describe(self) -> str:
        """E.g. ``string [?, ?]``."""
        dims = (
            "?"
            if self.shape is None
            else ", ".join("?" if d is None else str(d) for d in self.shape)
        )
        return f"{self.dtype.name} [{dims}]"


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """The inputs and outputs of one signature."""

    name: str
    inputs: dict[str, TensorSpecInfo]
    outputs: dict[str, TensorSpecInfo]

    @classmethod
    def from_signature_def(cls, name: str, signature: meta_graph_pb2.SignatureDef) -> SignatureInfo:
        """Reads a ``SignatureDef``."""
        return cls(
            name=name,
            inputs={k: TensorSpecInfo.from_tensor_info(k, v) for k, v in signature.inputs.items()},
            outputs={
                k: TensorSpecInfo.from_tensor_info(k, v) for k, v in signature.outputs.items()
            },
        )

    @property
    def batchable(self) -> bool:
        """True when every input and output has an unknown leading (batch) dimension."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(s.shape and s.shape[0] is None for s in specs)


def _check_names(signature: SignatureInfo, names: set[str]) -> None:
    expected = set(signature.inputs)
    if names != expected:
        extra = sorted(names - expected)
        missing = sorted(expected - names)
        raise invalid_argument(
            f"input names do not match signature {signature.name!r}: got {sorted(names)}, "
            f"expected {sorted(expected)}. Sent extra: {extra}. Missing but required: {missing}."
        )


def check_shape(spec: TensorSpecInfo, shape: tuple[int, ...]) -> None:
    """Raises INVALID_ARGUMENT if ``shape`` does not fit ``spec``."""
    if spec.shape is None:
        return
    fits = len(shape) == len(spec.shape) and all(
        want is None or want == got for want, got in zip(spec.shape, shape, strict=True)
    )
    if not fits:
        raise invalid_argument(
            f"input {spec.name!r}: shape {list(shape)} does not match the signature's "
            f"{spec.describe()}"
        )


def _declared_shape(
    signature: SignatureInfo, name: str, proto: tensor_pb2.TensorProto
) -> tuple[int, ...]:
    """Checks ``proto``'s dtype and shape against the signature; returns the shape."""
    spec = signature.inputs[name]
    if proto.dtype != spec.dtype.as_datatype_enum:
        try:
            got = tf.as_dtype(proto.dtype).name
        except TypeError:
            got = f"enum {proto.dtype}"
        raise invalid_argument(
            f"input {name!r}: expected dtype {spec.dtype.name}, got {got} "
            f"(signature {signature.name!r} wants {spec.describe()})"
        )
    tensor_shape = proto.tensor_shape
    if tensor_shape.unknown_rank:
        raise invalid_argument(f"input {name!r}: the tensor has an unknown rank")
    shape = tuple([d.size for d in tensor_shape.dim])
    if shape and min(shape) < 0:
        raise invalid_argument(f"input {name!r}: negative dimension in shape {list(shape)}")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise invalid_argument(
            f"input {name!r}: shape {list(shape)} has more than {MAX_TENSOR_ELEMENTS} elements"
        )
    check_shape(spec, shape)
    return shape


def _to_array(name: str, proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> np.ndarray:
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


def decode_inputs(
    signature: SignatureInfo,
    tensors: Mapping[str, tensor_pb2.TensorProto],
    memory_budget: int = DEFAULT_REQUEST_MEMORY_BYTES,
) -> dict[str, np.ndarray]:
    """Validates request ``TensorProto``s and converts them to numpy.

    Everything is checked (names, dtypes, shapes, value counts, the memory
    budget) before the first array is allocated.

    Args:
        signature: The signature being called.
        tensors: ``PredictRequest.inputs``.
        memory_budget: Largest estimated input memory of the request in bytes
            (see :func:`estimate_proto_bytes`); 0 disables the check.

    Returns:
        Input name -> array (strings as ``object`` arrays of ``bytes``).

    Raises:
        ServingError: INVALID_ARGUMENT for missing/extra inputs, a wrong dtype,
            shape or size, or a malformed TensorProto; RESOURCE_EXHAUSTED when
            the request is over ``memory_budget``.
    """
    items = [(name, proto) for name, proto in tensors.items()]
    _check_names(signature, {name for name, _ in items})
    checked = [(n, p, _declared_shape(signature, n, p)) for n, p in items]
    check_memory_budget(sum(estimate_proto_bytes(*c) for c in checked), memory_budget)
    return {name: _to_array(name, proto, shape) for name, proto, shape in checked}


def coerce_inputs(
    signature: SignatureInfo,
    values: Mapping[str, object],
    memory_budget: int = DEFAULT_REQUEST_MEMORY_BYTES,
) -> dict[str, np.ndarray]:
    """Converts plain values (e.g. parsed JSON lists) to arrays of the signature's dtypes.

    Args:
        signature: The signature being called.
        values: Input name -> nested lists / scalars.
        memory_budget: Largest estimated input memory of the request in bytes
            (checked after conversion: JSON has no broadcast, so its size
            already bounds the arrays); 0 disables the check.

    Raises:
        ServingError: INVALID_ARGUMENT for wrong names, values that do not fit the
            dtype, ragged lists or a wrong shape; RESOURCE_EXHAUSTED over
            ``memory_budget``.
    """
    _check_names(signature, set(values))
    arrays = {}
    for name, value in values.items():
        spec = signature.inputs[name]
        try:
            if spec.dtype == tf.string:
                array = np.asarray(value, dtype=object)
                flat = [v.encode("utf-8") if isinstance(v, str) else v for v in array.reshape(-1)]
                if not all(isinstance(v, bytes) for v in flat):
                    raise ValueError("expected strings")
                array = np.asarray(flat, dtype=object).reshape(array.shape)
            else:
                array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        except (ValueError, TypeError, OverflowError) as err:
            raise invalid_argument(
                f"input {name!r}: cannot convert to {spec.describe()}: {err}"
            ) from err
        check_shape(spec, array.shape)
        arrays[name] = array
    check_memory_budget(sum(estimate_array_bytes(a) for a in arrays.values()), memory_budget)
    return arrays


def check_output_filter(names: list[str] | tuple[str, ...], available: list[str]) -> None:
    """TF Serving's ``output_filter`` checks, done before the model runs.

    Args:
        names: ``PredictRequest.output_filter`` (empty = every output).
        available: The signature's output aliases.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown or repeated alias.
    """
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise invalid_argument(
            f"output tensor alias not found in signature: {unknown[0]} (output_filter: unknown "
            f"output alias(es) {unknown}; the signature has {sorted(available)})"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise invalid_argument(f"duplicate output tensor alias: {repeated[0]}")


def encode_outputs(
    outputs: Mapping[str, np.ndarray],
    output_filter: list[str] | tuple[str, ...] = (),
    into: MutableMapping[str, tensor_pb2.TensorProto] | None = None,
) -> MutableMapping[str, tensor_pb2.TensorProto]:
    """Converts model outputs to ``TensorProto``s, keeping only ``output_filter`` if given.

    Fills ``into`` in place (e.g. ``PredictResponse.outputs``, saving a copy per
    output) and returns it, or returns a new dict when ``into`` is None.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown or repeated name in
            ``output_filter`` (see :func:`check_output_filter`).
    """
    check_output_filter(output_filter, list(outputs))
    names = list(output_filter) or list(outputs)
    if into is None:
        return {name: to_tensor_proto(outputs[name]) for name in names}
    for name in names:
        to_tensor_proto(outputs[name], out=into[name])
    return into
