"""TF Serving's REST API on ``--rest_api_port`` (subset used by recommenders).

* ``GET  /v1/models/NAME[/versions/N | /labels/L]``: model status.
* ``GET  /v1/models/NAME[/versions/N | /labels/L]/metadata``: signature defs.
* ``POST /v1/models/NAME[/versions/N | /labels/L]:predict`` with the row
  (``{"instances": [...]}`` -> ``{"predictions": [...]}``) or columnar
  (``{"inputs": ...}`` -> ``{"outputs": ...}``) format; strings may be sent
  as ``{"b64": "..."}``; output names ending in ``_bytes`` come back base64.
* ``GET  <prometheus path>``: metrics, when monitoring is enabled.

Errors are ``{"error": "..."}`` with TF Serving's HTTP status for the code.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format, wrappers_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

from tfrec.serving.core import SIGNATURE_DEF_FIELD, ServingCore
from tfrec.serving.errors import ServingError, invalid_argument
from tfrec.serving.model_config import MonitoringSettings
from tfrec.serving.tensors import SignatureInfo, coerce_inputs

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<op>/metadata|:predict|:classify|:regress)?$"
)
MAX_BODY_BYTES = 64 * 1024 * 1024


def _decode_b64(value: Any) -> Any:
    """Replaces ``{"b64": "..."}`` objects by bytes, recursively."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError) as err:
            raise invalid_argument(f"invalid base64 value {value!r}: {err}") from err
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_b64(v) for k, v in value.items()}
    return value


def _to_json(value: Any, as_b64: bool) -> Any:
    """Array (as lists) -> JSON values; bytes become text (or ``{"b64"}``)."""
    if isinstance(value, list):
        return [_to_json(v, as_b64) for v in value]
    if isinstance(value, bytes):
        if as_b64:
            return {"b64": base64.b64encode(value).decode("ascii")}
        return value.decode("utf-8", errors="replace")
    return value


def parse_predict_body(signature: SignatureInfo, body: Any) -> tuple[dict[str, Any], bool]:
    """Extracts named input values from a REST predict body.

    Args:
        signature: The signature being called.
        body: The parsed JSON object.

    Returns:
        (input name -> nested lists, True for the row "instances" format).

    Raises:
        ServingError: INVALID_ARGUMENT for a malformed body.
    """
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise invalid_argument('request body must be a JSON object with "instances" or "inputs"')
    names = sorted(signature.inputs)
    if "instances" in body:
        instances = _decode_b64(body["instances"])
        if not isinstance(instances, list) or not instances:
            raise invalid_argument('"instances" must be a non-empty list')
        if all(isinstance(i, dict) for i in instances) and not (
            len(names) == 1 and set(instances[0]) != set(names)
        ):
            keys = {frozenset(i) for i in instances}
            if len(keys) != 1:
                raise invalid_argument("every instance must have the same named inputs")
            return {k: [i[k] for i in instances] for k in instances[0]}, True
        if len(names) != 1:
            raise invalid_argument(
                f"the signature has inputs {names}: each instance must be an object with them"
            )
        return {names[0]: instances}, True
    inputs = _decode_b64(body["inputs"])
    if isinstance(inputs, dict) and not (len(names) == 1 and set(inputs) != set(names)):
        return inputs, False
    if len(names) != 1:
        raise invalid_argument(f'"inputs" must be an object with the signature inputs {names}')
    return {names[0]: inputs}, False


class RestServer:
    """HTTP front end sharing the gRPC server's :class:`ServingCore`.

    Args:
        core: Model resolution and execution.
        host: Interface to bind.
        port: Port (0 = pick a free one; see :attr:`port`).
        monitoring: Serves Prometheus metrics at its path when enabled.
    """

    def __init__(
        self, core: ServingCore, host: str, port: int, monitoring: MonitoringSettings | None
    ):
        self.core = core
        self.monitoring = monitoring
        handler = type("Handler", (_Handler,), {"rest": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as err:
            raise OSError(f"cannot bind the REST port {host}:{port}: {err}") from err
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="tfrec-rest", daemon=True
        )

    def start(self) -> None:
        """Serves in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stops accepting connections."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def spec(self, match: re.Match[str]) -> model_pb2.ModelSpec:
        """The ModelSpec of a matched URL."""
        spec = model_pb2.ModelSpec(name=match["name"])
        if match["version"]:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=int(match["version"])))
        elif match["label"]:
            spec.version_label = match["label"]
        return spec

    def get(self, match: re.Match[str]) -> Any:
        """Status or metadata JSON."""
        spec = self.spec(match)
        if match["op"] == "/metadata":
            response = self.core.metadata(spec, [SIGNATURE_DEF_FIELD])
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
        if match["op"]:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"use POST for {match['op']}")
        return json_format.MessageToDict(
            self.core.status(spec),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )

    def predict(self, match: re.Match[str], body: Any) -> Any:
        """Runs a REST predict request."""
        if match["op"] != ":predict":
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{match['op'] or 'POST without a verb'} is not implemented; use :predict",
            )
        spec = self.spec(match)
        servable = self.core.resolve(spec)
        signature_name = body.get("signature_name", "") if isinstance(body, dict) else ""
        signature = servable.signature(signature_name)
        values, rows = parse_predict_body(signature, body)
        outputs = self.core.run(servable, signature, coerce_inputs(signature, values))
        named = {n: _to_json(a.tolist(), n.endswith("_bytes")) for n, a in outputs.items()}
        if rows:
            if len(named) == 1:
                return {"predictions": next(iter(named.values()))}
            size = len(next(iter(named.values())))
            return {"predictions": [{n: v[i] for n, v in named.items()} for i in range(size)]}
        return {"outputs": next(iter(named.values())) if len(named) == 1 else named}


class _Handler(BaseHTTPRequestHandler):
    rest: RestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("REST %s", format % args)

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, method: str) -> None:
        start = time.perf_counter()
        path = self.path.split("?", 1)[0]
        monitoring = self.rest.monitoring
        if (
            method == "GET"
            and monitoring is not None
            and monitoring.prometheus_enable
            and path == monitoring.prometheus_path
        ):
            text = self.rest.core.metrics.prometheus_text().encode()
            self._send(200, text, "text/plain; version=0.0.4")
            return
        match = _ROUTE.match(path)
        model_name = match["name"] if match else ""
        api = f"REST {method}"
        try:
            if match is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"malformed request: {method} {path}")
            if method == "GET":
                result = self.rest.get(match)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    raise ServingError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"request body of {length} bytes exceeds {MAX_BODY_BYTES}",
                    )
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise invalid_argument(f"request body is not valid JSON: {err}") from err
                result = self.rest.predict(match, body)
        except ServingError as err:
            self.rest.core.metrics.record(
                api, model_name, err.code.name, time.perf_counter() - start
            )
            payload = json.dumps({"error": err.message}).encode()
            self._send(err.http_status, payload, "application/json")
            return
        except Exception as err:  # keep serving
            log.exception("REST %s %s failed", method, path)
            self.rest.core.metrics.record(api, model_name, "INTERNAL", time.perf_counter() - start)
            payload = json.dumps({"error": f"{type(err).__name__}: {err}"}).encode()
            self._send(500, payload, "application/json")
            return
        self.rest.core.metrics.record(api, model_name, "OK", time.perf_counter() - start)
        self._send(200, json.dumps(result).encode(), "application/json")

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")
