"""The expected outcome of every request class of ``benchmarks/hostile.py``.

Outcomes: a gRPC status name; ``HTTP_<code>`` for REST; ``OK_WRONG_ANSWER`` /
``HTTP_200_WRONG_ANSWER`` for an answer that fails its check; ``CLOSED`` /
``RESET`` (the server ended the connection without answering), ``TIMEOUT``
(nothing within the client timeout), ``SENT`` (the client hung up on purpose)
and ``HELD`` (a stalled connection still open at the limit). Any outcome outside
a class's set counts as a mismatch.

The status codes follow TF Serving (``tensorflow/serving``, paths below are in
that repository unless said otherwise), whose REST API maps codes to HTTP as
``tfrec/serving/errors.py`` does (INVALID_ARGUMENT and FAILED_PRECONDITION 400,
NOT_FOUND 404, RESOURCE_EXHAUSTED 429).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Expect:
    """The expected result of one request class."""

    api: str
    outcomes: frozenset[str]
    request: str
    source: str


def _e(api: str, outcomes: str, request: str, source: str) -> Expect:
    return Expect(api, frozenset(outcomes.split()), request, source)


_PREDICT = "servables/tensorflow/predict_util.cc"
_CORE = "model_servers/server_core.cc"
_HANDLER = "model_servers/http_rest_api_handler.cc"
_JSON = "util/json_tensor.cc"
_CLOSE = "CLOSED RESET HTTP_400 HTTP_408 HTTP_503"  # 503: over the connection limit
_ASSERT = "tfrec export: in-graph assert -> INVALID_ARGUMENT"

GRPC_EXPECTED: dict[str, Expect] = {
    "valid": _e("gRPC", "OK", "well-formed request, B 1..3", "answer = sequential reference"),
    "wrong_dtype": _e(
        "gRPC", "INVALID_ARGUMENT", "k float32/int64, user_id int64, history int32", _PREDICT
    ),
    "values_mismatch": _e(
        "gRPC",
        "INVALID_ARGUMENT",
        "more values than the shape; tensor_content of the wrong size",
        "tensorflow Tensor::FromProto fails -> " + _PREDICT,
    ),
    "oversized_shape": _e(
        "gRPC",
        "INVALID_ARGUMENT RESOURCE_EXHAUSTED",
        "history [1, 2^26] or [1, 2^40] from 2 strings; k [2^26] from 1 int (~100 bytes)",
        "issue 9 defect 2: rejected before allocating, no RSS jump",
    ),
    "bad_utf8": _e(
        "gRPC",
        "OK INVALID_ARGUMENT",
        "invalid UTF-8 bytes as user_id and history ids",
        "TF strings are bytes: an OK must equal the unknown-id answer",
    ),
    "bad_k": _e("gRPC", "INVALID_ARGUMENT", "k 0, -3, -2^31, 2^31-1, catalogue+1", _ASSERT),
    "unknown_model": _e("gRPC", "NOT_FOUND", "model name nope, 300 chars, retrieval/1", _CORE),
    "empty_model_name": _e(
        "gRPC",
        "INVALID_ARGUMENT",
        "model name ''",
        _CORE + " ServableRequestFromModelSpec: 'ModelSpec has no name specified.'",
    ),
    "unknown_version": _e("gRPC", "NOT_FOUND", "version 99, 0, -1, 2^62", _CORE),
    "unknown_label": _e(
        "gRPC",
        "INVALID_ARGUMENT",
        "version_label nope",
        _CORE + ": 'Unrecognized servable version label'",
    ),
    "unknown_signature": _e(
        "gRPC",
        "FAILED_PRECONDITION",
        "signature_name nope",
        _PREDICT + ": 'Serving signature key \"nope\" not found.'",
    ),
    "input_names": _e("gRPC", "INVALID_ARGUMENT", "an input missing, extra or renamed", _PREDICT),
    "batch_mismatch": _e("gRPC", "INVALID_ARGUMENT", "user_id [2], history [3, L]", _ASSERT),
    "empty_history": _e(
        "gRPC", "OK", "history [B, 0]", "docs/architecture.md: = the all-'' history answer"
    ),
    "empty_batch": _e("gRPC", "OK", "B = 0 (history [0, 0] or [0, L])", "an empty answer"),
    "garbage_bytes": _e(
        "gRPC", "INTERNAL INVALID_ARGUMENT", "unparsable or truncated request bytes", "grpc"
    ),
    "message_too_large": _e(
        "gRPC", "RESOURCE_EXHAUSTED", "65 MiB request (limit 64 MiB)", "grpc max receive size"
    ),
    "cancelled": _e("gRPC", "CANCELLED OK", "the client cancels after 1-3 ms", "client side"),
    "deadline": _e("gRPC", "DEADLINE_EXCEEDED OK", "a 1-3 ms deadline", "client side"),
    "disconnect": _e("gRPC", "CANCELLED OK", "the client closes its channel mid-call", "client"),
    "concurrent_valid": _e("gRPC", "OK", "64 clients at once", "answer = sequential reference"),
    "large_request": _e("gRPC", "OK", "B = 3,500 rows, batching off", "answer [B, max k]"),
    "oversized_batch": _e(
        "gRPC",
        "INVALID_ARGUMENT",
        "B = 3,500 rows > max_batch_size 32, batching on",
        "batching/batching_session.cc: 'larger than maximum input batch size'",
    ),
    "small_during_oversized_batch": _e(
        "gRPC", "OK", "one-row requests around it", "issue 9 defect 3: all succeed"
    ),
}

REST_EXPECTED: dict[str, Expect] = {
    "rest_valid": _e("REST", "HTTP_200", "row or columnar body", "answer = gRPC reference"),
    "rest_chunked": _e(
        "REST", "HTTP_200", "valid body, Transfer-Encoding: chunked", "libevent evhttp accepts it"
    ),
    "rest_empty_history": _e(
        "REST", "HTTP_200", '"history": [] (issue 9 defect 1)', "= the all-'' history answer"
    ),
    "rest_malformed_json": _e("REST", "HTTP_400", "truncated/invalid JSON, empty body", _JSON),
    "rest_bad_utf8": _e("REST", "HTTP_400", "invalid UTF-8 inside a JSON string", "RFC 8259"),
    "rest_bad_k_type": _e(
        "REST", "HTTP_400", 'k 10.7, "10", true, null, {}', _JSON + ": integer checks"
    ),
    "rest_bad_k_value": _e(
        "REST", "HTTP_400", "k 0, -3, 2^31-1, 2^31, catalogue+1", _JSON + "; " + _ASSERT
    ),
    "rest_bad_signature_name": _e(
        "REST",
        "HTTP_400",
        "signature_name [], {}, 100, true",
        _HANDLER + ": 'must be a string value'",
    ),
    "rest_unknown_signature": _e(
        "REST", "HTTP_400", "signature_name nope", "FAILED_PRECONDITION -> 400"
    ),
    "rest_deep_json": _e("REST", "HTTP_400", "JSON nested 50,000 deep", "rapidjson parse error"),
    "rest_bad_content_length": _e(
        "REST", "HTTP_400", "Content-Length -1, abc, '1, 2', 0x10", "issue 9 defect 4"
    ),
    "rest_huge_content_length": _e(
        "REST",
        "HTTP_400 HTTP_413 HTTP_429",
        "Content-Length 10^12, no body",
        "rejected before reading",
    ),
    "rest_unknown_model": _e("REST", "HTTP_404", "/v1/models/nope:predict", "NOT_FOUND"),
    "rest_unknown_version": _e("REST", "HTTP_404", "/versions/99", "NOT_FOUND"),
    "rest_huge_version": _e(
        "REST", "HTTP_400 HTTP_404", "/versions/2^70", _HANDLER + ": version parse"
    ),
    "rest_unknown_label": _e("REST", "HTTP_400", "/labels/nope", "INVALID_ARGUMENT (label)"),
    "rest_tls_hello": _e("REST", "HTTP_400 CLOSED RESET", "TLS ClientHello bytes", "no hang"),
    "rest_disconnect": _e(
        "REST", "SENT", "the client hangs up mid-body or before the answer", "server lives on"
    ),
    "rest_idle": _e("REST", _CLOSE, "a connection that sends nothing", "header timeout"),
    "rest_stalled_headers": _e(
        "REST", _CLOSE, "a request line + 1 header, then nothing", "header timeout"
    ),
    "rest_stalled_body": _e("REST", _CLOSE, "Content-Length 100, 15 bytes sent", "body timeout"),
    "rest_valid_during_stall": _e(
        "REST", "HTTP_200", "valid requests while the stalled ones are open", "issue 9 defect 4"
    ),
}

ALL_EXPECTED: dict[str, Expect] = {**GRPC_EXPECTED, **REST_EXPECTED}
