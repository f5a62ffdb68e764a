"""JSON <-> tensors for the REST predict API, with TF Serving's rules.

The rules and messages follow ``tensorflow_serving/util/json_tensor.cc``:

* the body must be a JSON object; ``signature_name``, if present, a string;
  exactly one of ``instances`` (row format, a non-empty list) or ``inputs``
  (columnar format);
* a tensor's shape is read from the first element at every nesting level and
  every list must match it; values sit at the deepest level only;
* values must have the input's type, nothing is coerced: integer dtypes take
  JSON integers in range (not ``10.7``, ``"10"`` or ``true``); float dtypes take
  numbers (integers too) that they represent without loss of precision; bool
  takes ``true``/``false``; string takes JSON strings or ``{"b64": "..."}``
  objects. Other dtypes (half, complex...) are UNIMPLEMENTED, as in TF Serving.

tfrec is stricter than TF Serving in two places (each answered 400): an
``inputs`` object with keys the signature does not have (TF Serving ignores
them) and integers outside a narrow dtype's range (int8/int16/uint8: TF
Serving wraps them).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf

from tfrec.serving.errors import ServingError, invalid_argument
from tfrec.serving.tensors import SignatureInfo, TensorSpecInfo, check_shape

# Tensors nested deeper than this are rejected (TensorFlow itself allows 254 dims).
MAX_JSON_RANK = 64
SIGNATURE_KEY = "signature_name"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_C_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half"}


def _type_name(dtype: tf.DType) -> str:
    """TensorFlow's DataTypeString (``float``, ``int32``, ``string``...)."""
    return _C_TYPE_NAMES.get(dtype.name, dtype.name)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def _render(value: Any, depth: int) -> str:
    """A short JSON rendering: nested containers and long lists are elided."""
    if isinstance(value, list | dict):
        if depth >= 3:
            return "[...]" if isinstance(value, list) else "{...}"
        items = list(value.items())[:4] if isinstance(value, dict) else value[:4]
        if isinstance(value, dict):
            parts = [f"{_render(k, depth + 1)}:{_render(v, depth + 1)}" for k, v in items]
        else:
            parts = [_render(v, depth + 1) for v in items]
        if len(value) > 4:
            parts.append("...")
        text = ",".join(parts)
        return f"[{text}]" if isinstance(value, list) else f"{{{text}}}"
    if isinstance(value, str):
        return json.dumps(value[:64] + ("..." if len(value) > 64 else ""))
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"{str(value)[:30]}...({len(str(abs(value)))} digits)"
    return json.dumps(value)


def short_json(value: Any, limit: int = 200) -> str:
    """``value`` as (at most ``limit`` characters of) JSON, for error messages."""
    text = _render(value, 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Parses a request body that must be a JSON object.

    Raises:
        ServingError: INVALID_ARGUMENT for an empty body, invalid UTF-8, invalid
            or too deeply nested JSON, or a top-level value that is not an object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {err.start}"
        ) from err
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise invalid_argument("JSON Parse error: The document is empty.")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise invalid_argument(f"JSON Parse error: {err.msg} at offset: {err.pos}") from err
    except RecursionError as err:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from err
    except ValueError as err:  # e.g. an integer with more than 4300 digits
        raise invalid_argument(f"JSON Parse error: {err}") from err
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {short_json(doc)} Is not object")
    return doc


def signature_name_of(doc: Mapping[str, Any]) -> str:
    """The optional ``signature_name`` ("" = default), which must be a string."""
    name = doc.get(SIGNATURE_KEY, "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {short_json(doc)} not formatted correctly. 'signature_name' key "
            "must be a string value."
        )
    return name


def _type_error(value: Any, dtype: tf.DType) -> ServingError:
    return invalid_argument(
        f"JSON Value: {short_json(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_type_name(dtype)}"
    )


def _lossless(value: int | float, digits: int, max_abs: float) -> bool:
    """Whether a JSON number converts to a float type without loss (json_tensor's rule)."""
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return abs(value) <= (1 << digits) - 1
    try:
        as_float = float(value)
    except OverflowError:
        return False
    return not math.isfinite(as_float) or abs(as_float) <= max_abs


def _float_converter(dtype: tf.DType) -> Callable[[Any], float]:
    digits, max_abs = (24, _FLOAT32_MAX) if dtype == tf.float32 else (53, float("inf"))

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(value, dtype)
        if not _lossless(value, digits, max_abs):
            raise invalid_argument(
                f"Cannot convert JSON value: {short_json(value)} to {_type_name(dtype)} "
                "without loss of precision."
            )
        return float(value)

    return convert


def _int_converter(dtype: tf.DType) -> Callable[[Any], int]:
    low, high = int(dtype.min), int(dtype.max)

    def convert(value: Any) -> int:
        if type(value) is not int:  # bool is an int subclass: rejected too
            raise _type_error(value, dtype)
        if not low <= value <= high:
            raise invalid_argument(
                f"JSON Value: {short_json(value)} is out of range for {_type_name(dtype)} "
                f"[{low}, {high}]"
            )
        return value

    return convert


def _to_utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate escape such as "\ud800"
        raise invalid_argument(
            f"JSON Parse error: The surrogate pair in string is invalid: {short_json(value)}"
        ) from err


def _decode_b64(value: dict[str, Any]) -> bytes:
    """A ``{"b64": "..."}`` object's bytes (padding optional, as absl::Base64Unescape)."""
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise invalid_argument(
            f"JSON Value: {short_json(value)} not formatted correctly for base64 data"
        )
    text = value["b64"].strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise invalid_argument(f"Unable to base64 decode {short_json(value)}") from err


def _string_converter(dtype: tf.DType) -> Callable[[Any], bytes]:
    def convert(value: Any) -> bytes:
        if isinstance(value, str):
            return _to_utf8(value)
        if isinstance(value, dict):
            return _decode_b64(value)
        raise _type_error(value, dtype)

    return convert


def converter(dtype: tf.DType) -> Callable[[Any], Any]:
    """The function checking and converting one JSON value to ``dtype``.

    Raises:
        ServingError: UNIMPLEMENTED for a dtype TF Serving's JSON API cannot fill.
    """
    if dtype == tf.string:
        return _string_converter(dtype)
    if dtype in (tf.float32, tf.float64):
        return _float_converter(dtype)
    if dtype.is_integer:
        return _int_converter(dtype)
    if dtype == tf.bool:

        def convert_bool(value: Any) -> bool:
            if not isinstance(value, bool):
                raise _type_error(value, dtype)
            return value

        return convert_bool
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON values to type: {_type_name(dtype)} is not supported",
    )


def dense_shape(value: Any) -> list[int]:
    """The shape of a nested list, read from the first element at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_JSON_RANK:
            raise invalid_argument(
                f"JSON list nested more than {MAX_JSON_RANK} deep: tensors of that rank are "
                "not supported"
            )
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], convert: Callable, out: list) -> None:
    """Appends the leaves of ``value`` to ``out`` after checking it is dense of ``shape``."""
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {short_json(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)}"
            )
        out.append(convert(value))
        return
    if level >= len(shape):
        raise invalid_argument(
            f"Encountered list at unexpected level: {level} expected < {len(shape)}"
        )
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    if level + 1 == len(shape) and not any(isinstance(v, list) for v in value):
        out.extend(convert(v) for v in value)
        return
    for item in value:
        _fill(item, level + 1, shape, convert, out)


def json_to_values(value: Any, spec: TensorSpecInfo) -> tuple[list, list[int]]:
    """(flat converted values, shape) of one JSON tensor for the input ``spec``."""
    shape = dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, converter(spec.dtype), flat)
    return flat, shape


def to_array(flat: list, shape: list[int], spec: TensorSpecInfo) -> np.ndarray:
    """Flat values of ``spec.dtype`` as an array of ``shape`` (checked against the signature)."""
    if spec.dtype == tf.string:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        array = np.array(flat, dtype=spec.dtype.as_numpy_dtype)
    array = array.reshape(shape)
    check_shape(spec, array.shape)
    return array


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value: Any) -> bool:
    """An object of named inputs (a base64 object is a value, not named inputs)."""
    return isinstance(value, dict) and not _is_b64(value)


def _with_prefix(prefix: str, err: ServingError) -> ServingError:
    return ServingError(err.code, prefix + err.message)


def _instance_values(
    signature: SignatureInfo, index: int, item: Any, named: bool, rows: dict[str, tuple]
) -> None:
    """Adds one element of "instances" to ``rows`` (name -> (flat values, shape))."""
    names = sorted(signature.inputs)
    if named != _is_named(item):
        got, want = ("value/list", "object") if named else ("object", "value/list")
        raise invalid_argument(f"Expecting {want} but got {got} at item {index} of input list")
    for key, value in (item if named else {names[0]: item}).items():
        where = f"key: {key} " if named else ""
        prefix = f"Failed to process element: {index} {where}of 'instances' list. Error: "
        spec = signature.inputs.get(key)
        if spec is None:
            raise invalid_argument(f"{prefix}JSON object: does not have named input: {key}")
        try:
            flat, shape = json_to_values(value, spec)
        except ServingError as err:
            raise _with_prefix(prefix, err) from err
        if key in rows and rows[key][1] != shape:
            raise invalid_argument(f"{prefix}Expecting shape {rows[key][1]} but got: {shape}")
        rows.setdefault(key, ([], shape))[0].extend(flat)
    if named and set(item) != set(names):
        raise invalid_argument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{short_json(item)} keys must be equal to: {','.join(names)}"
        )


def _from_instances(signature: SignatureInfo, instances: Any) -> dict[str, np.ndarray]:
    """The row format: one element per batch row, each a value or an object of inputs."""
    if not isinstance(instances, list):
        raise invalid_argument(
            f"Expecting 'instances' to be an list/array, got {_json_type(instances)}"
        )
    if not instances:
        raise invalid_argument("No values in 'instances' array: it must be a non-empty list")
    names = sorted(signature.inputs)
    if not isinstance(instances[0], dict) and len(names) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            f"tensors required as per tensorinfo_map (inputs: {names})"
        )
    named = _is_named(instances[0])
    rows: dict[str, tuple] = {}
    for index, item in enumerate(instances):
        _instance_values(signature, index, item, named, rows)
    missing = sorted(set(names) - set(rows))
    if missing:
        raise invalid_argument(f"'instances' do not have the named inputs {missing}")
    return {
        name: to_array(flat, [len(instances), *shape], signature.inputs[name])
        for name, (flat, shape) in rows.items()
    }


def _from_inputs(signature: SignatureInfo, inputs: Any) -> dict[str, np.ndarray]:
    """The columnar format: one value (single input) or an object of named inputs."""
    names = sorted(signature.inputs)
    if not _is_named(inputs):
        if len(names) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                f"tensors required as per tensorinfo_map (inputs: {names})"
            )
        inputs = {names[0]: inputs}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise invalid_argument(
            f"'inputs' object has keys {extra} that are not inputs of signature "
            f"{signature.name!r} (inputs: {names})"
        )
    arrays = {}
    for name in names:
        spec = signature.inputs[name]
        try:
            flat, shape = json_to_values(inputs[name], spec)
        except ServingError as err:
            prefix = f"input {name!r}: cannot convert to {spec.describe()}: "
            raise _with_prefix(prefix, err) from err
        arrays[name] = to_array(flat, shape, spec)
    return arrays


def predict_inputs(
    signature: SignatureInfo, doc: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray], bool]:
    """The input arrays of a predict body, and True for the row ("instances") format.

    Raises:
        ServingError: INVALID_ARGUMENT for a body that does not fit the signature
            (UNIMPLEMENTED for an input dtype JSON cannot express).
    """
    if not signature.inputs:
        raise invalid_argument(f"Failed to get input map for signature: {signature.name}")
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument(
            f"JSON Value: {short_json(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist"
        )
    if "instances" in doc:
        return _from_instances(signature, doc["instances"]), True
    if "inputs" in doc:
        return _from_inputs(signature, doc["inputs"]), False
    raise invalid_argument(
        "Missing 'inputs' or 'instances' key: the body must be a JSON object with "
        '"instances" or "inputs"'
    )
