"""Signature specs and request tensor validation.

Requests are checked against the signature's ``TensorInfo`` (names, dtype,
rank, known dimensions, size) *before* the model runs, so a malformed request
is rejected with INVALID_ARGUMENT and a message naming the input, instead of an
opaque error from inside the graph. :func:`decode_inputs` also checks each
TensorProto's payload and the request's estimated memory before anything is
allocated (:mod:`tfrec.serving.tensor_proto`, which converts the tensors);
:func:`coerce_inputs` applies the same budget to REST JSON after conversion.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, MutableMapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from tfrec.serving.errors import invalid_argument
from tfrec.serving.tensor_proto import (
    check_memory_budget,
    estimate_array_bytes,
    estimate_proto_bytes,
    proto_to_array,
    to_tensor_proto,
)

# A request tensor larger than this is rejected before it is materialised (a
# tiny TensorProto can declare a huge shape with one broadcast value).
MAX_TENSOR_ELEMENTS = 1 << 26

# Default per-request budget of estimated input memory (all inputs together).
DEFAULT_REQUEST_MEMORY_BYTES = 64 << 20


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

    @functools.cached_property
    def input_checks(self) -> dict[str, tuple[int, tuple[int | None, ...] | None]]:
        """Input name -> (dtype enum, shape): what every request is checked against."""
        return {n: (s.dtype.as_datatype_enum, s.shape) for n, s in self.inputs.items()}

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
    enum, want = signature.input_checks[name]
    if proto.dtype != enum:
        spec = signature.inputs[name]
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
    if shape:
        if min(shape) < 0:
            raise invalid_argument(f"input {name!r}: negative dimension in shape {list(shape)}")
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise invalid_argument(
                f"input {name!r}: shape {list(shape)} has more than {MAX_TENSOR_ELEMENTS} elements"
            )
    if want is not None and (
        len(shape) != len(want)
        or any(w is not None and w != g for w, g in zip(want, shape, strict=True))
    ):
        check_shape(signature.inputs[name], shape)  # raises with the message
    return shape


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
    items = list(tensors.items())
    checks = signature.input_checks
    if len(items) != len(checks) or not all(name in checks for name, _ in items):
        _check_names(signature, {name for name, _ in items})
    checked = [(n, p, _declared_shape(signature, n, p)) for n, p in items]
    check_memory_budget(sum([estimate_proto_bytes(*c) for c in checked]), memory_budget)
    return {name: proto_to_array(name, proto, shape) for name, proto, shape in checked}


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
    if not names:  # the usual case: every output
        return
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
