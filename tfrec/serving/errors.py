"""Server-side error carrying the gRPC status code the request should fail with."""

from __future__ import annotations

import grpc

# TF Serving's HTTP mapping of canonical codes (http_rest_api_util ToHTTPStatusCode).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request failure with its gRPC status.

    Args:
        code: The status the RPC ends with.
        message: What went wrong, for the client.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API uses for this code."""
        return _HTTP_STATUS.get(self.code, 500)


def status_code_from_int(value: int) -> grpc.StatusCode:
    """Maps a canonical error code (e.g. ``tf.errors.OpError.error_code``) to grpc."""
    return _BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


def not_found(message: str) -> ServingError:
    """A NOT_FOUND error (unknown model, or a version that is not loaded)."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def invalid_argument(message: str) -> ServingError:
    """An INVALID_ARGUMENT error (bad request tensors, unknown version label)."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> ServingError:
    """A FAILED_PRECONDITION error (e.g. Predict on a signature the model lacks)."""
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message: str) -> ServingError:
    """A RESOURCE_EXHAUSTED error (a request over a server limit)."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> ServingError:
    """An UNAVAILABLE error (shutting down, batch queue full)."""
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)
