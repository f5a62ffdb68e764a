"""Typed RPC failures: one subclass of :class:`ServingError` per status code a caller handles."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A failed RPC. ``code`` is the ``grpc.StatusCode``, ``details`` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class NotFoundError(ServingError):
    """Unknown model, version, version label or signature."""


class InvalidArgumentError(ServingError):
    """Bad inputs: names, dtypes, shapes, or values the model rejects (e.g. ``k``)."""


class UnavailableError(ServingError):
    """Server unreachable or shutting down (retried with backoff before raising)."""


class DeadlineExceededError(ServingError):
    """The call took longer than the client's timeout."""


class ResourceExhaustedError(ServingError):
    """The request or response is larger than the server accepts."""


_ERRORS: dict[grpc.StatusCode, type[ServingError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}


def from_rpc_error(err: grpc.RpcError) -> ServingError:
    """The typed error for a failed call (``ServingError`` itself for other codes)."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    return _ERRORS.get(code, ServingError)(code, details or "")
