"""TF Serving's REST API on ``--rest_api_port`` (subset used by recommenders).

* ``GET  /v1/models/NAME[/versions/N | /labels/L]``: model status.
* ``GET  /v1/models/NAME[/versions/N | /labels/L]/metadata``: signature defs.
* ``POST /v1/models/NAME[/versions/N | /labels/L]:predict`` with the row
  (``{"instances": [...]}`` -> ``{"predictions": [...]}``) or columnar
  (``{"inputs": ...}`` -> ``{"outputs": ...}``) format; strings may be sent
  as ``{"b64": "..."}``; output names ending in ``_bytes`` come back base64.
* ``<prometheus path>``: metrics, when monitoring is enabled.

URLs are matched as TF Serving matches them (``http_rest_api_util.cc``):
case-insensitively, with the model name and label percent-decoded and the
version a decimal int64 (a larger one is 400 "Failed to convert version").
Any other ``/v1/`` URL, and methods other than GET and POST, are 400
"Malformed request"; paths outside ``/v1/`` are 404. ``:classify`` and
``:regress`` are 501 (tfrec exports no Example-based signatures).

Errors are ``{"error": "..."}`` with TF Serving's HTTP status for the gRPC code
(:mod:`tfrec.serving.errors`); an unknown ``signature_name`` is 400, as in TF
Serving's REST API. The JSON <-> tensor rules are in
:mod:`tfrec.serving.rest_json`; connections (timeouts, size and connection
limits, chunked bodies) in :mod:`tfrec.serving.rest_framing` and
:mod:`tfrec.serving.rest_http`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, wrappers_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

from tfrec.serving.core import SIGNATURE_DEF_FIELD, ServingCore
from tfrec.serving.errors import ServingError, invalid_argument, not_found
from tfrec.serving.model_config import MonitoringSettings
from tfrec.serving.rest_framing import HttpRequest, HttpResponse, error_body
from tfrec.serving.rest_http import HttpLimits, HttpServer
from tfrec.serving.rest_json import parse_json_body, predict_inputs, signature_name_of
from tfrec.serving.tensors import check_memory_budget, estimate_array_bytes

log = logging.getLogger(__name__)

_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICT_URL = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_URL = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
_INT64_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Route:
    """A parsed ``/v1/models/...`` URL.

    Attributes:
        method: ``GET`` or ``POST``.
        name: Model name ("" when a GET names none).
        version: Explicit version, or None.
        label: Version label, or None.
        action: The POST verb as sent (``predict``...), ``metadata`` (GET), or "".
    """

    method: str
    name: str
    version: int | None
    label: str | None
    action: str

    def spec(self) -> model_pb2.ModelSpec:
        """The ModelSpec the URL designates."""
        spec = model_pb2.ModelSpec(name=self.name)
        if self.version is not None:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=self.version))
        elif self.label is not None:
            spec.version_label = self.label
        return spec


def parse_route(method: str, path: str) -> Route:
    """Matches a ``/v1/`` path like TF Serving's REST handler.

    Raises:
        ServingError: INVALID_ARGUMENT for a malformed request or a version
            that is not an int64.
    """
    if method == "POST":
        match = _PREDICT_URL.fullmatch(path)
    else:
        match = _STATUS_URL.fullmatch(path) if method == "GET" else None
    if match is None:
        raise invalid_argument(f"Malformed request: {method} {path[:200]}")
    name, version_text, label, action = match.groups()
    version = None
    if version_text:
        digits = version_text.lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > _INT64_MAX:
            shown = version_text if len(version_text) <= 40 else version_text[:40] + "..."
            raise invalid_argument(f"Failed to convert version: {shown} to numeric.")
        version = int(digits)
    return Route(
        method=method,
        name=urllib.parse.unquote(name or "", errors="replace"),
        version=version,
        label=urllib.parse.unquote(label, errors="replace") if label else None,
        action=action or "",
    )


def _bytes_to_json(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_bytes_to_json(v, as_b64) for v in value]
    if isinstance(value, bytes):
        if as_b64:
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")
    return value


def outputs_to_json(outputs: Mapping[str, np.ndarray], rows: bool) -> dict[str, Any]:
    """The predict response: ``{"predictions": ...}`` for rows, else ``{"outputs": ...}``.

    Output names ending in ``_bytes`` come back as ``{"b64": ...}`` objects.

    Raises:
        ServingError: INVALID_ARGUMENT when the row format cannot hold the outputs
            (a scalar output, or outputs with different batch sizes).
    """
    named = {
        name: _bytes_to_json(array.tolist(), name.endswith("_bytes"))
        for name, array in outputs.items()
    }
    if not rows:
        return {"outputs": next(iter(named.values())) if len(named) == 1 else named}
    sizes = set()
    for name, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise invalid_argument(
            f"the outputs have different batch sizes {sorted(sizes)}: use the columnar "
            '"inputs" format'
        )
    if len(named) == 1:
        return {"predictions": next(iter(named.values()))}
    size = sizes.pop() if sizes else 0
    return {"predictions": [{n: v[i] for n, v in named.items()} for i in range(size)]}


class RestServer:
    """HTTP front end sharing the gRPC server's :class:`ServingCore`.

    Args:
        core: Model resolution and execution.
        host: Interface to bind.
        port: Port (0 = pick a free one; see :attr:`port`).
        monitoring: Serves Prometheus metrics at its path when enabled.
        limits: Connection timeouts and size limits (default :class:`HttpLimits`).

    Raises:
        OSError: The port cannot be bound.
    """

    def __init__(
        self,
        core: ServingCore,
        host: str,
        port: int,
        monitoring: MonitoringSettings | None,
        *,
        limits: HttpLimits | None = None,
    ):
        self.core = core
        self.monitoring = monitoring
        try:
            self._http = HttpServer(self.handle, host, port, limits)
        except OSError as err:
            raise OSError(f"cannot bind the REST port {host}:{port}: {err}") from err
        self.port = self._http.port

    @property
    def active_connections(self) -> int:
        """Connections being served right now."""
        return self._http.active_connections

    def start(self) -> None:
        """Serves in background threads."""
        self._http.start()

    def stop(self, grace: float = 0.0) -> None:
        """Stops accepting connections; waits up to ``grace`` s for requests in flight."""
        self._http.stop(grace)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answers one request (never raises: unexpected errors are 500 and logged)."""
        start = time.perf_counter()
        monitoring = self.monitoring
        if (
            monitoring is not None
            and monitoring.prometheus_enable
            and request.path == monitoring.prometheus_path
        ):
            text = self.core.metrics.prometheus_text().encode()
            return HttpResponse(200, text, "text/plain; version=0.0.4")
        method = request.method if request.method in ("GET", "POST") else "OTHER"
        model_name = ""
        try:
            if not _API_PATH.fullmatch(request.path):
                raise not_found(f"no handler for {request.method} {request.path[:200]}")
            route = parse_route(request.method, request.path)
            model_name = route.name
            result = self._dispatch(route, request)
        except ServingError as err:
            status, response = err.code.name, HttpResponse(err.http_status, error_body(err.message))
        except Exception as err:  # a bug: keep serving
            log.exception("REST %s %s failed", request.method, request.path[:200])
            status = "INTERNAL"
            response = HttpResponse(500, error_body(f"{type(err).__name__}: {err}"))
        else:
            status, response = "OK", HttpResponse(200, json.dumps(result).encode())
        self.core.metrics.record(f"REST {method}", model_name, status, time.perf_counter() - start)
        return response

    def _dispatch(self, route: Route, request: HttpRequest) -> Any:
        if route.method == "GET":
            if not route.name:
                raise invalid_argument("Missing model name in request.")
            if route.action == "metadata":
                return self.metadata(route)
            return self.status(route)
        if route.action == "predict":
            return self.predict(route, request.body)
        if route.action in ("classify", "regress"):
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f":{route.action} is not implemented by tfrec's server (no Example-based "
                "signatures); use :predict",
            )
        raise invalid_argument(f"Malformed request: {request.method} {request.path[:200]}")

    def status(self, route: Route) -> dict[str, Any]:
        """GetModelStatus as JSON."""
        return json_format.MessageToDict(
            self.core.status(route.spec()),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )

    def metadata(self, route: Route) -> dict[str, Any]:
        """GetModelMetadata (signature defs) as JSON."""
        response = self.core.metadata(route.spec(), [SIGNATURE_DEF_FIELD])
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return {
            "model_spec": json_format.MessageToDict(
                response.model_spec, preserving_proto_field_name=True
            ),
            "metadata": {
                SIGNATURE_DEF_FIELD: json_format.MessageToDict(
                    signature_map, preserving_proto_field_name=True
                )
            },
        }

    def predict(self, route: Route, body: bytes) -> dict[str, Any]:
        """Runs a REST predict request (TF Serving's order of checks)."""
        doc = parse_json_body(body)
        signature_name = signature_name_of(doc)
        servable = self.core.resolve(route.spec())
        try:
            signature = servable.signature(signature_name)
        except ServingError as err:  # TF Serving's REST API: INVALID_ARGUMENT (gRPC differs)
            key = signature_name or "serving_default"
            raise invalid_argument(
                f'Serving signature name: "{key}" not found in signature def; model '
                f"{servable.name!r} version {servable.version} has {sorted(servable.signatures)}"
            ) from err
        inputs, rows = predict_inputs(signature, doc)
        estimated = sum(estimate_array_bytes(array) for array in inputs.values())
        check_memory_budget(estimated, self.core.request_memory_budget)
        return outputs_to_json(self.core.run(servable, signature, inputs), rows)
