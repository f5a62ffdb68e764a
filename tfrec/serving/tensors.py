"""Signature specs, request tensor validation and TensorProto conversion.

Requests are checked against the signature's ``TensorInfo`` (names, dtype,
rank, known dimensions, size) *before* the model runs, so a malformed request
is rejected with INVALID_ARGUMENT and a message naming the input, instead of an
opaque error from inside the graph.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfrec.serving.errors import invalid_argument

# A request tensor larger than this is rejected before it is materialised (a
# tiny TensorProto can declare a huge shape with one broadcast value).
MAX_TENSOR_ELEMENTS = 1 << 26

# Direct TensorProto <-> numpy conversion for the common cases (strings in
# ``string_val``, numbers in ``tensor_content`` or ``int_val``/``float_val``):
# ~10x cheaper than ``tf.make_ndarray``/``tf.make_tensor_proto``, which stay the
# fallback for everything else (broadcast values, half/bool/complex...).
_STRING_ENUM = tf.string.as_datatype_enum
_FAST_NUMERIC = {
    dtype.as_datatype_enum: np.dtype(dtype.as_numpy_dtype)
    for dtype in (tf.float32, tf.float64, tf.int32, tf.int64)
}
_FAST_NUMERIC_BY_NUMPY = {np_dtype: enum for enum, np_dtype in _FAST_NUMERIC.items()}
_VALUE_FIELDS = {
    tf.float32.as_datatype_enum: "float_val",
    tf.float64.as_datatype_enum: "double_val",
    tf.int32.as_datatype_enum: "int_val",
    tf.int64.as_datatype_enum: "int64_val",
}


def _fast_ndarray(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> np.ndarray | None:
    """``proto`` as an array of ``shape`` without ``tf.make_ndarray``, or None if not simple."""
    size = math.prod(shape)
    array = None
    if proto.dtype == _STRING_ENUM:
        if len(proto.string_val) == size:
            array = np.empty(size, dtype=object)
            array[:] = list(proto.string_val)
    elif proto.dtype in _FAST_NUMERIC:
        np_dtype = _FAST_NUMERIC[proto.dtype]
        values = getattr(proto, _VALUE_FIELDS[proto.dtype])
        if proto.tensor_content:
            if len(proto.tensor_content) == size * np_dtype.itemsize:
                array = np.frombuffer(proto.tensor_content, dtype=np_dtype)
        elif len(values) == size:
            array = np.array(values, dtype=np_dtype)
    return None if array is None else array.reshape(shape)


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A model output as a ``TensorProto`` (same content as ``tf.make_tensor_proto``)."""
    enum = _FAST_NUMERIC_BY_NUMPY.get(array.dtype)
    fast_string = array.dtype.kind == "O" and all(type(v) is bytes for v in array.flat)
    if enum is None and not fast_string:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=_STRING_ENUM if fast_string else enum)
    for dim in array.shape:
        proto.tensor_shape.dim.add(size=dim)
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


def decode_inputs(
    signature: SignatureInfo, tensors: Mapping[str, tensor_pb2.TensorProto]
) -> dict[str, np.ndarray]:
    """Validates request ``TensorProto``s and converts them to numpy.

    Args:
        signature: The signature being called.
        tensors: ``PredictRequest.inputs``.

    Returns:
        Input name -> array (strings as ``object`` arrays of ``bytes``).

    Raises:
        ServingError: INVALID_ARGUMENT for missing/extra inputs, a wrong dtype,
            shape or size, or a malformed TensorProto.
    """
    _check_names(signature, set(tensors))
    arrays = {}
    for name, proto in tensors.items():
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
        if proto.tensor_shape.unknown_rank:
            raise invalid_argument(f"input {name!r}: the tensor has an unknown rank")
        shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
        if any(d < 0 for d in shape):
            raise invalid_argument(f"input {name!r}: negative dimension in shape {list(shape)}")
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise invalid_argument(
                f"input {name!r}: shape {list(shape)} has more than {MAX_TENSOR_ELEMENTS} elements"
            )
        check_shape(spec, shape)
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
        arrays[name] = array
    return arrays


def coerce_inputs(signature: SignatureInfo, values: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Converts plain values (e.g. parsed JSON lists) to arrays of the signature's dtypes.

    Raises:
        ServingError: INVALID_ARGUMENT for wrong names, values that do not fit the
            dtype, ragged lists or a wrong shape.
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
    return arrays


def encode_outputs(
    outputs: Mapping[str, np.ndarray], output_filter: list[str] | tuple[str, ...] = ()
) -> dict[str, tensor_pb2.TensorProto]:
    """Converts model outputs to ``TensorProto``s, keeping only ``output_filter`` if given.

    Raises:
        ServingError: INVALID_ARGUMENT for an unknown name in ``output_filter``.
    """
    names = list(output_filter) or list(outputs)
    unknown = sorted(set(names) - set(outputs))
    if unknown:
        raise invalid_argument(
            f"output_filter: unknown output alias(es) {unknown}; the signature has "
            f"{sorted(outputs)}"
        )
    return {name: to_tensor_proto(outputs[name]) for name in names}
