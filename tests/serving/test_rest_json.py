"""REST JSON rules (TF Serving's json_tensor.cc), URL parsing and status codes.

Expected results come from the tiny models of conftest.py: retrieval scores
item i (a..f) as (6 - i) + 0.01 * len(user_id), history items excluded; its
``scale`` signature returns y = x * factor.
"""

from __future__ import annotations

import http.client
import json
import math
import random
from collections.abc import Iterator

import grpc
import pytest
import tensorflow as tf

from tfrec.serving.errors import ServingError
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.rest import RestServer
from tfrec.serving.rest_json import converter, parse_json_body

PREDICT = "/v1/models/retrieval:predict"
ROW = {"user_id": "u", "history": ["a"], "k": 2}
BIG = 2**70  # 1180591620717411303424


@pytest.fixture
def rest(export_dir, start_server) -> Iterator[RestServer]:
    server = start_server([ModelEntry("retrieval", str(export_dir / "retrieval"))])
    rest = RestServer(server.core, "127.0.0.1", 0, None)
    rest.start()
    yield rest
    rest.stop(grace=1.0)


def call(
    rest: RestServer, path: str, body: object = None, method: str | None = None
) -> tuple[int, dict]:
    """(status, parsed JSON); ``body`` may be raw bytes or a JSON-able object."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
    try:
        connection.request(method or ("GET" if data is None else "POST"), path, body=data)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def assert_error(got: tuple[int, dict], status: int, *fragments: str) -> None:
    assert got[0] == status, got
    for fragment in fragments:
        assert fragment in got[1]["error"], got


# (dtype, JSON value, converted value or None for an INVALID_ARGUMENT)
CONVERSIONS = [
    (tf.int32, 10, 10),
    (tf.int32, -(2**31), -(2**31)),
    (tf.int32, 10.7, None),
    (tf.int32, 10.0, None),  # a JSON float, even whole, is not an integer
    (tf.int32, "10", None),
    (tf.int32, True, None),
    (tf.int32, None, None),
    (tf.int32, 2**31, None),
    (tf.int64, 2**62, 2**62),
    (tf.int64, 2**63, None),
    (tf.uint8, 255, 255),
    (tf.uint8, 256, None),
    (tf.uint8, -1, None),
    (tf.float32, 3, 3.0),  # floats accept integers
    (tf.float32, 2**24 - 1, 16777215.0),
    (tf.float32, 2**24, None),  # not exactly representable by TF Serving's rule
    (tf.float32, 1e39, None),  # above float32's max
    (tf.float32, "1.5", None),
    (tf.float32, False, None),
    (tf.float64, 2**53 - 1, 9007199254740991.0),
    (tf.float64, 2**53, None),
    (tf.bool, True, True),
    (tf.bool, 1, None),
    (tf.string, "é", b"\xc3\xa9"),
    (tf.string, {"b64": "YQ=="}, b"a"),
    (tf.string, {"b64": "YQ"}, b"a"),  # padding optional
    (tf.string, {"b64": "!!"}, None),
    (tf.string, {"b64": "YQ==", "x": 1}, None),
    (tf.string, 5, None),
    (tf.string, "\ud800", None),  # a lone surrogate is not UTF-8
]


@pytest.mark.parametrize(("dtype", "value", "expected"), CONVERSIONS)
def test_value_conversion_rules(dtype, value, expected) -> None:
    convert = converter(dtype)
    if expected is None:
        with pytest.raises(ServingError) as info:
            convert(value)
        assert info.value.http_status == 400
    else:
        assert convert(value) == expected
        assert type(convert(value)) is type(expected)


def test_unsupported_dtype_is_unimplemented() -> None:
    with pytest.raises(ServingError) as info:
        converter(tf.float16)
    assert info.value.http_status == 501 and "half" in info.value.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "The document is empty"),
        (b"  \n", "The document is empty"),
        (b"[]", "Is not object"),
        (b'{"a": ', "JSON Parse error"),
        (b'{"a": "\xff"}', "Invalid encoding"),
        (b'{"a": ' + b"1" * 5000 + b"}", "JSON Parse error"),  # above Python's int digits limit
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ],
)
def test_parse_errors_are_invalid_argument(body, fragment) -> None:
    with pytest.raises(ServingError) as info:
        parse_json_body(body)
    assert info.value.http_status == 400 and fragment in info.value.message


@pytest.mark.parametrize(
    ("k", "fragment"),
    [
        (10.7, "JSON Value: 10.7 Type: Number is not of expected type: int32"),
        ("10", 'JSON Value: "10" Type: String is not of expected type: int32'),
        (True, "JSON Value: true Type: True is not of expected type: int32"),
        (None, "Type: Null"),
        ({}, "Type: Object"),
        (2.0, "JSON Value: 2.0 Type: Number"),
        (2**31, "out of range for int32"),
        ([2], "does not match the signature's int32 [?]"),  # k [B, 1] instead of [B]
    ],
)
def test_k_is_never_coerced(rest, k, fragment) -> None:
    row = {**ROW, "k": k}
    assert_error(call(rest, PREDICT, {"instances": [row]}), 400, fragment)
    columns = {name: [value] for name, value in row.items()}
    assert_error(call(rest, PREDICT, {"inputs": columns}), 400, fragment)


@pytest.mark.parametrize("name", [[], {}, 5, None, True])
def test_signature_name_must_be_a_string(rest, name) -> None:
    got = call(rest, PREDICT, {"signature_name": name, "instances": [ROW]})
    assert_error(got, 400, "'signature_name' key must be a string value")


def test_signature_name_selects_the_signature(rest) -> None:
    assert_error(
        call(rest, PREDICT, {"signature_name": "nope", "instances": [ROW]}),
        400,
        '"nope" not found in signature def',
    )
    body = {"signature_name": "scale", "inputs": {"x": [1, 2.5], "factor": 2}}
    assert call(rest, PREDICT, body) == (200, {"outputs": [2.0, 5.0]})
    body = {"signature_name": "scale", "inputs": {"x": [1], "factor": 2**24 - 1}}
    assert call(rest, PREDICT, body) == (200, {"outputs": [16777215.0]})
    body["inputs"]["factor"] = 2**24 + 1
    assert_error(call(rest, PREDICT, body), 400, "without loss of precision")
    body["inputs"] = {"x": [True], "factor": 2}
    assert_error(call(rest, PREDICT, body), 400, "Type: True is not of expected type: float")
    # the row format gives every input a batch dimension: factor becomes [1], not a scalar
    body = {"signature_name": "scale", "instances": [{"x": 1.0, "factor": 2.0}]}
    assert_error(call(rest, PREDICT, body), 400, "'factor'")


def test_base64_strings(rest) -> None:
    plain = call(rest, PREDICT, {"instances": [ROW]})
    assert plain[0] == 200 and plain[1]["predictions"][0]["item_ids"] == ["b", "c"]
    encoded = {**ROW, "user_id": {"b64": "dQ"}, "history": [{"b64": "YQ=="}]}  # "u", "a"
    assert call(rest, PREDICT, {"instances": [encoded]}) == plain
    bad = {**ROW, "user_id": {"b64": 5}}
    assert_error(call(rest, PREDICT, {"instances": [bad]}), 400, "formatted correctly for base64")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [ROW], "inputs": {}}, "only one of 'inputs' or 'instances'"),
        ({"instances": {}}, "list/array"),
        ({"instances": [ROW, ["u"]]}, "Expecting object but got value/list at item 1"),
        ({"instances": ["u"]}, "instances is a plain list"),
        ({"instances": [ROW, {**ROW, "history": ["a", "b"]}]}, "Expecting shape [1] but got: [2]"),
        ({"instances": [{"user_id": "u", "k": 2}]}, "keys must be equal to: history,k,user_id"),
        ({"instances": [{**ROW, "extra": 1}]}, "does not have named input: extra"),
        ({"instances": [{**ROW, "user_id": "\ud800"}]}, "surrogate"),
        ({"inputs": {"user_id": ["u"], "k": [2]}}, "Missing named input: history"),
        ({"inputs": {**{n: [v] for n, v in ROW.items()}, "extra": [1]}}, "['extra']"),
        ({"inputs": ["u"]}, "inputs is a plain value/list"),
        (
            {"inputs": {"user_id": ["u", "v"], "history": [["a"], ["a", "b"]], "k": [2, 2]}},
            "Encountered list at unexpected size: 2 at level: 1 expected size: 1",
        ),
        (
            {"inputs": {"user_id": ["u"], "history": [["a", ["b"]]], "k": [2]}},
            "Encountered list at unexpected level: 2 expected < 2",
        ),
        ({**ROW}, '"instances" or "inputs"'),
    ],
)
def test_body_structure_errors(rest, body, fragment) -> None:
    assert_error(call(rest, PREDICT, body), 400, fragment)


def test_deep_nesting_is_400(rest) -> None:
    assert_error(call(rest, PREDICT, b"[" * 50_000 + b"]" * 50_000), 400, "nested too deeply")
    deep: object = "a"
    for _ in range(100):  # parses, but no tensor has rank 100
        deep = [deep]
    got = call(rest, PREDICT, {"instances": [{**ROW, "history": deep}]})
    assert_error(got, 400, "nested more than 64 deep")


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("POST", f"/v1/models/retrieval/versions/{BIG}:predict", 400, f"version: {BIG} to"),
        ("GET", f"/v1/models/retrieval/versions/{BIG}", 400, "Failed to convert version"),
        ("GET", f"/v1/models/retrieval/versions/{'9' * 5000}/metadata", 400, "Failed to convert"),
        ("GET", f"/v1/models/retrieval/versions/{2**63 - 1}", 404, ""),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/retrieval:predict", 400, "Malformed request: GET"),
        ("PUT", "/v1/models/retrieval", 400, "Malformed request: PUT"),
        ("POST", "/v1/models/retrieval:PREDICT", 400, "Malformed request"),  # verb is exact-case
        ("POST", "/v1/models/retrieval/metadata", 400, "Malformed request"),
        ("GET", "/v2/models/retrieval", 404, "no handler"),
    ],
)
def test_url_errors(rest, method, path, status, fragment) -> None:
    body = {"instances": [ROW]} if method == "POST" else None
    assert_error(call(rest, path, body, method), status, fragment)


def test_urls_are_matched_like_tf_serving(rest) -> None:
    # case-insensitive, percent-decoded name, leading zeros in the version
    for path in (
        "/V1/MODELS/retrieval",
        "/v1/models/retr%69eval",
        "/v1/models/retrieval/versions/001",
    ):
        status, body = call(rest, path)
        assert status == 200 and body["model_version_status"][0]["version"] == "1"
    call(rest, "/v1/models/retrieval", method="DELETE")
    assert rest.core.metrics.count(api="REST OTHER", status="INVALID_ARGUMENT") == 1


def random_json(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(10 if depth < 3 else 7)
    choices = [
        lambda: rng.randrange(-(2**40), 2**40),
        lambda: rng.choice([0.5, -1e39, math.inf, 2.0, 1e-300]),
        lambda: rng.choice(["", "a", "zz", "\u00e9", "[UNK]"]),
        lambda: rng.choice([True, False, None]),
        lambda: {"b64": rng.choice(["YQ==", "!", ""])},
        lambda: 2 ** rng.randrange(30, 80),
        lambda: {},
        lambda: [random_json(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rng.choice(["user_id", "history", "k", "x"]): random_json(rng, depth + 1)},
        lambda: [random_json(rng, depth + 1)] * rng.randrange(1, 3),
    ]
    return choices[kind]()


def test_random_bodies_never_give_500(rest) -> None:
    rng = random.Random(9)
    statuses = set()
    for _ in range(150):
        row = {name: random_json(rng) for name in ROW if rng.random() < 0.9}
        body = rng.choice([{"instances": [row]}, {"inputs": row}, {"instances": row}, row])
        if rng.random() < 0.2:
            body["signature_name"] = random_json(rng)
        status, payload = call(rest, PREDICT, body)
        statuses.add(status)
        assert status in (200, 400), (body, payload)
    assert call(rest, PREDICT, {"instances": [ROW]})[0] == 200  # still serving
    assert 400 in statuses


def test_request_memory_budget_applies_to_rest(rest) -> None:
    # user_id ["u"]: 32 + 1, history [["a"]]: 32 + 1, k [2] int32: 4 -> 70 estimated bytes
    rest.core.request_memory_budget = 69
    assert_error(call(rest, PREDICT, {"instances": [ROW]}), 429, "estimated 70 bytes")
    rest.core.request_memory_budget = 70
    assert call(rest, PREDICT, {"instances": [ROW]})[0] == 200


# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc), copied by hand
TF_SERVING_HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_http_status_of_every_grpc_code_is_tf_servings(code) -> None:
    assert ServingError(code, "x").http_status == TF_SERVING_HTTP_STATUS[code.name]
