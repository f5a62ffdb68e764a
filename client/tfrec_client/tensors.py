"""numpy arrays <-> ``tensorflow.TensorProto``, with TensorFlow's semantics and without TensorFlow.

:func:`make_tensor_proto` encodes like ``tf.make_tensor_proto`` does for a
numpy array: numbers of more than one element as little-endian row-major
``tensor_content``, single numbers, booleans, uint16 and complex numbers in
their typed ``*_val`` field, strings (``str`` as UTF-8, ``bytes`` as is) in ``string_val``.

:func:`make_ndarray` decodes like ``tf.make_ndarray``: ``tensor_content`` for
any non-string dtype (TensorFlow's C++ side also packs booleans there), else
the typed ``*_val`` field, where fewer values than elements repeat the last one
and no values at all mean zeros. Strings decode to an object array of ``bytes``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from tfrec_client import _wire


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How one TensorFlow dtype travels: numpy dtype, ``*_val`` field, packable."""

    dtype: np.dtype
    field: str
    packed: bool  # tf.make_tensor_proto uses tensor_content for > 1 element


_KINDS = {
    "DT_HALF": _Kind(np.dtype(np.float16), "half_val", True),
    "DT_FLOAT": _Kind(np.dtype(np.float32), "float_val", True),
    "DT_DOUBLE": _Kind(np.dtype(np.float64), "double_val", True),
    "DT_INT8": _Kind(np.dtype(np.int8), "int_val", True),
    "DT_INT16": _Kind(np.dtype(np.int16), "int_val", True),
    "DT_INT32": _Kind(np.dtype(np.int32), "int_val", True),
    "DT_INT64": _Kind(np.dtype(np.int64), "int64_val", True),
    "DT_UINT8": _Kind(np.dtype(np.uint8), "int_val", True),
    "DT_UINT16": _Kind(np.dtype(np.uint16), "int_val", False),  # as TF does
    "DT_UINT32": _Kind(np.dtype(np.uint32), "uint32_val", True),
    "DT_UINT64": _Kind(np.dtype(np.uint64), "uint64_val", True),
    "DT_BOOL": _Kind(np.dtype(np.bool_), "bool_val", False),
    "DT_COMPLEX64": _Kind(np.dtype(np.complex64), "scomplex_val", False),
    "DT_COMPLEX128": _Kind(np.dtype(np.complex128), "dcomplex_val", False),
}
_ENUM = {name: _wire.DATA_TYPE.values_by_name[name].number for name in (*_KINDS, "DT_STRING")}
DT_STRING = _ENUM["DT_STRING"]
_BY_NUMPY = {kind.dtype: (_ENUM[name], kind) for name, kind in _KINDS.items()}
_BY_ENUM = {_ENUM[name]: kind for name, kind in _KINDS.items()}
_TWO_GIB = 1 << 31


def dtype_name(number: int) -> str:
    """``DT_*`` name of a ``tensorflow.DataType`` number (``"DT_<n>"`` if unknown)."""
    value = _wire.DATA_TYPE.values_by_number.get(number)
    return value.name if value is not None else f"DT_{number}"


def _encode_string(value: Any, index: int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValueError(
        f"element {index} is {type(value).__name__} {value!r}: a string tensor holds only "
        "str or bytes (cast numbers with numpy first)"
    )


def make_tensor_proto(values: Any, dtype: Any = None, out: Any = None) -> Any:
    """A ``tensorflow.TensorProto`` holding ``values``.

    Args:
        values: Array-like. ``str``/``bytes`` (numpy ``U``/``S``/object arrays)
            become ``DT_STRING``; numbers and booleans keep their numpy dtype
            (so a Python int list is ``DT_INT64``; pass ``dtype`` or a typed
            array for ``DT_INT32``).
        dtype: Optional numpy dtype to cast ``values`` to first.
        out: An empty TensorProto to fill instead of a new one (e.g. a
            ``PredictRequest.inputs`` entry: no copy).

    Returns:
        The TensorProto (a message of tfrec_client's private descriptor pool;
        its bytes are what TF Serving expects).

    Raises:
        ValueError: A dtype TensorProto cannot hold (e.g. datetimes), an object
            array with a non-string element, or more than 2 GiB of content.
    """
    array = np.asarray(values, dtype=dtype)
    proto = _wire.TensorProto() if out is None else out
    kind_char = array.dtype.kind
    if kind_char in "USO":
        flat = array.reshape(-1).tolist()
        if not all(type(v) is bytes for v in flat):  # the usual case needs no encoding
            flat = [_encode_string(v, i) for i, v in enumerate(flat)]
        proto.dtype = DT_STRING
        _set_shape(proto, array.shape)
        proto.string_val.extend(flat)
        return proto
    found = _BY_NUMPY.get(array.dtype.newbyteorder("="))
    if found is None:
        raise ValueError(
            f"dtype {array.dtype}: a TensorProto holds str/bytes, bool, (u)int8-64, "
            "float16/32/64 or complex64/128"
        )
    proto.dtype, kind = found
    _set_shape(proto, array.shape)
    if kind.packed and array.size > 1:
        if array.nbytes >= _TWO_GIB:
            raise ValueError(f"{array.nbytes} bytes: a TensorProto holds less than 2 GiB")
        little = array.astype(kind.dtype.newbyteorder("<"), copy=False)
        proto.tensor_content = np.ascontiguousarray(little).tobytes()
        return proto
    flat = array.astype(kind.dtype, copy=False).reshape(-1)
    if kind.field == "half_val":
        flat = flat.view(np.uint16)
    elif kind.field in ("scomplex_val", "dcomplex_val"):
        flat = flat.view(np.float32 if kind.field == "scomplex_val" else np.float64)
    getattr(proto, kind.field).extend(flat.tolist())
    return proto


def _set_shape(proto: Any, shape: tuple[int, ...]) -> None:
    """Writes ``shape`` (a scalar gets an empty but present shape)."""
    proto.tensor_shape.SetInParent()
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add(size=size)


def _shape(proto: Any) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank or any(dim.size < 0 for dim in shape.dim):
        raise ValueError(
            f"tensor_shape {[d.size for d in shape.dim]} (unknown_rank={shape.unknown_rank}): "
            "a tensor value needs every dimension >= 0"
        )
    return tuple(dim.size for dim in shape.dim)


def _repeat_last(values: list[Any], count: int, dtype: str) -> list[Any]:
    """TensorFlow's broadcast: fewer values than elements repeat the last value."""
    if len(values) > count:
        raise ValueError(f"{dtype}: {len(values)} values for a shape of {count} elements")
    return values + [values[-1]] * (count - len(values)) if values else values


def _typed_values(proto: Any, kind: _Kind) -> np.ndarray:
    values = getattr(proto, kind.field)
    if kind.field == "half_val":
        return np.array(values, dtype=np.uint16).view(np.float16)
    if kind.field in ("scomplex_val", "dcomplex_val"):
        parts = np.array(values, dtype=np.float32 if kind.field == "scomplex_val" else np.float64)
        if parts.size % 2:
            raise ValueError(f"{kind.field}: {parts.size} numbers, expected (real, imag) pairs")
        return parts.view(kind.dtype)
    return np.array(values, dtype=kind.dtype)


def make_ndarray(proto: Any) -> np.ndarray:
    """The numpy array a ``tensorflow.TensorProto`` holds (strings as ``bytes`` objects).

    Args:
        proto: A TensorProto: tfrec_client's, TensorFlow's, or any message
            with the same fields.

    Returns:
        An array of the proto's shape: ``object`` dtype with ``bytes`` for
        ``DT_STRING``, else the matching numpy dtype (native byte order).

    Raises:
        ValueError: An unsupported dtype (bfloat16, float8, quantized,
            resource, variant), an unknown dimension, or a value count or
            ``tensor_content`` length that does not fit the shape.
    """
    shape = _shape(proto)
    count = math.prod(shape)
    if proto.dtype == DT_STRING:
        strings = _repeat_last(list(proto.string_val), count, "DT_STRING")
        out = np.empty(count, dtype=object)
        out[:] = strings if strings else b""
        return out.reshape(shape)
    kind = _BY_ENUM.get(proto.dtype)
    if kind is None:
        raise ValueError(
            f"dtype {dtype_name(proto.dtype)}: tfrec_client decodes DT_STRING, DT_BOOL, "
            "(u)int8-64, DT_HALF/FLOAT/DOUBLE and DT_COMPLEX64/128"
        )
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * kind.dtype.itemsize:
            raise ValueError(
                f"{dtype_name(proto.dtype)} shape {list(shape)}: tensor_content has "
                f"{len(content)} bytes, expected {count * kind.dtype.itemsize}"
            )
        little = np.frombuffer(content, dtype=kind.dtype.newbyteorder("<"))
        return little.astype(kind.dtype).reshape(shape)
    values = _typed_values(proto, kind)
    if values.size == 0:
        return np.zeros(shape, dtype=kind.dtype)
    if values.size > count:
        raise ValueError(
            f"{dtype_name(proto.dtype)} shape {list(shape)}: {values.size} values in "
            f"{kind.field}, expected at most {count}"
        )
    if values.size < count:
        values = np.concatenate([values, np.repeat(values[-1:], count - values.size)])
    return values.reshape(shape)
