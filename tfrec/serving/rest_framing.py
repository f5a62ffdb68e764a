"""HTTP/1.1 framing of one REST connection, with deadlines and limits on every read.

``http.server`` reads without deadlines (a stalled body pins its thread forever)
and waits for a newline before looking at the first bytes (a TLS ClientHello
gets no answer). Here (defaults of :class:`~tfrec.serving.rest_http.HttpLimits`):

* **header timeout, 10 s** for the request line and headers, counted from the
  accept or the previous response: a partial head gets 408 and the connection
  is closed; an idle keep-alive connection is closed silently.
* **body timeout, 30 s** for the whole body (``Content-Length`` or chunked)
  after the head, else 408 and close; it also bounds sending a response.
* **64 MiB body**: a larger ``Content-Length`` gets 413 before anything is read,
  a chunked body once it exceeds it. **64 KiB head**, 100 header lines: 431.

Malformed framing gets an immediate 400 and the connection is closed: bytes that
cannot begin a request line (a TLS handshake, binary: seen on the first bytes),
a bad request or header line, a ``Content-Length`` that is not a decimal number
(``-1``, ``abc``) or several different ones, both ``Content-Length`` and
``Transfer-Encoding``, a malformed chunk. ``Transfer-Encoding: chunked`` is
accepted (other codings: 501); ``Expect: 100-continue`` is answered; HTTP
versions other than 1.0/1.1 get 505. After an error the server drains what the
client still sends for ``linger_seconds`` so the client reads the answer, not a
TCP reset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfrec.serving.rest_http import ByteBudget, HttpLimits

log = logging.getLogger(__name__)

_TOKEN_CHARS = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN = re.compile(rb"[" + _TOKEN_CHARS + rb"]+")
_REQUEST_LINE = re.compile(
    rb"([" + _TOKEN_CHARS + rb"]{1,32}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])"
)
# What the first line may look like while it is still arriving.
_REQUEST_LINE_PREFIX = re.compile(
    rb"[" + _TOKEN_CHARS + rb"]{0,32}(?: [\x21-\x7e]*(?: [HTP/0-9.]{0,8}\r?)?)?"
)
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_HEADER_LINES = 100
_MAX_REQUEST_LINE = 16 * 1024
_MAX_LINGER_BYTES = 1 << 20
_RECV_BYTES = 1 << 16


@dataclasses.dataclass
class HttpRequest:
    """A fully read request.

    Attributes:
        method: E.g. ``"POST"`` (case as sent).
        target: The request target as sent (path and query).
        path: The path without the query (still percent-encoded).
        headers: (lower-case name, value) pairs in order.
        body: The body (de-chunked).
        keep_alive: Whether the client wants the connection kept open.
    """

    method: str
    target: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    keep_alive: bool = True

    def header_values(self, name: str) -> list[str]:
        """Every value of the header ``name`` (lower case)."""
        return [value for key, value in self.headers if key == name]


@dataclasses.dataclass
class HttpResponse:
    """What the application answers."""

    status: int
    body: bytes
    content_type: str = "application/json"


class HttpError(Exception):
    """A framing error answered with ``status`` before the application sees the request."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def format_response(response: HttpResponse, keep_alive: bool, head_only: bool = False) -> bytes:
    """The bytes of a response (status line, headers and, unless ``head_only``, the body)."""
    lines = [
        f"HTTP/1.1 {response.status} {_reason(response.status)}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class ClientGoneError(Exception):
    """The client closed the connection (or nothing arrived before the idle timeout)."""


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Unknown"


def error_body(message: str) -> bytes:
    """TF Serving's error payload ``{"error": "..."}``."""
    return json.dumps({"error": message}).encode()


def _content_length(values: list[str], max_body_bytes: int) -> int:
    """The declared body size; 400 when malformed, 413 when above the limit."""
    items = [item.strip() for value in values for item in value.split(",")]
    if not all(item.isascii() and item.isdigit() for item in items):
        raise HttpError(400, f"Content-Length {', '.join(values)!r}: expected a decimal number")
    if len(set(items)) != 1:
        raise HttpError(400, f"conflicting Content-Length values {items}")
    digits = items[0].lstrip("0") or "0"
    if len(digits) > 18 or int(digits) > max_body_bytes:
        raise HttpError(413, f"request body of {digits} bytes exceeds {max_body_bytes} bytes")
    return int(digits)


def _parse_head(head: bytes) -> tuple[str, str, int, list[tuple[str, str]]]:
    """(method, target, minor version, headers) of a request head (without the empty line)."""
    lines = head.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise HttpError(400, f"malformed request line {lines[0][:100]!r}")
    method, target, major, minor = match.groups()
    if (major, minor) not in ((b"1", b"0"), (b"1", b"1")):
        raise HttpError(505, f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    if len(lines) - 1 > _MAX_HEADER_LINES:
        raise HttpError(431, f"more than {_MAX_HEADER_LINES} header lines")
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete header line folding is not supported")
        name, sep, value = line.partition(b":")
        text = value.strip(b" \t").decode("latin-1")
        if not sep or not _TOKEN.fullmatch(name) or _BAD_VALUE_CHARS.search(text):
            raise HttpError(400, f"malformed header line {line[:100]!r}")
        headers.append((name.decode("ascii").lower(), text))
    return method.decode("ascii"), target.decode("ascii"), int(minor), headers


def _keep_alive(minor: int, headers: list[tuple[str, str]]) -> bool:
    tokens = {
        token.strip().lower() for key, value in headers if key == "connection"
        for token in value.split(",")
    }  # fmt: skip
    return "close" not in tokens if minor == 1 else "keep-alive" in tokens


def _request_path(target: str) -> str:
    """The path of an origin-form (``/a?b``) or absolute-form (``http://h/a``) target."""
    if not target.startswith("/") and "://" in target:
        return urllib.parse.urlsplit(target).path or "/"
    return target.split("?", 1)[0].split("#", 1)[0]


class Connection:
    """One client connection: reads requests under deadlines, writes responses.

    Args:
        sock: The accepted socket (owned: closed by :meth:`serve`).
        limits: Timeouts and sizes.
        budget: The server-wide budget of request body bytes in flight.
    """

    def __init__(self, sock: socket.socket, limits: HttpLimits, budget: ByteBudget):
        self.sock = sock
        self.limits = limits
        self.budget = budget
        self.reserved = 0  # bytes of ``budget`` held for the current request
        self.buffer = bytearray()
        self.busy = False  # answering a request (not reading one)
        self.lock = threading.Lock()

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(_RECV_BYTES)
        except TimeoutError:
            raise
        except OSError as err:
            raise ClientGoneError from err
        if not data:
            raise ClientGoneError
        return data

    def _first_line_done(self) -> bool:
        """400 as soon as the buffer cannot begin a request; True once line 1 is complete."""
        newline = self.buffer.find(b"\n")
        if newline < 0:
            if len(self.buffer) > _MAX_REQUEST_LINE:
                raise HttpError(414, f"request line longer than {_MAX_REQUEST_LINE} bytes")
            valid = _REQUEST_LINE_PREFIX.fullmatch(self.buffer)
        else:
            line = bytes(self.buffer[:newline]).removesuffix(b"\r")
            valid = _REQUEST_LINE.fullmatch(line)
        if not valid:
            first = bytes(self.buffer[: newline if newline >= 0 else 100])
            raise HttpError(400, f"malformed request line {first[:100]!r}")
        return newline >= 0

    def _read_head(self, deadline: float) -> bytes:
        """Bytes up to the empty line ending the head; checks the request line as it arrives."""
        limit = self.limits.max_header_bytes
        line_done, scanned = False, 0
        while True:
            if not line_done:
                while self.buffer[:1] in (b"\r", b"\n"):  # tolerated before a request
                    del self.buffer[:1]
                line_done = self._first_line_done()
            end = _HEAD_END.search(self.buffer, max(0, scanned - 3)) if line_done else None
            if end is not None:
                head = bytes(self.buffer[: end.start()])
                del self.buffer[: end.end()]
                if len(head) > limit:
                    raise HttpError(431, f"request head exceeds {limit} bytes")
                return head
            scanned = len(self.buffer) if line_done else 0
            if len(self.buffer) > limit:
                raise HttpError(431, f"request head exceeds {limit} bytes")
            try:
                data = self._recv(deadline)
            except TimeoutError:
                if not self.buffer:
                    raise ClientGoneError from None
                raise HttpError(408, "timed out reading the request head") from None
            self.buffer += data

    def _reserve(self, size: int) -> None:
        self.budget.reserve(size)
        self.reserved += size

    def release(self) -> None:
        """Gives back the body bytes held for the request just answered."""
        self.budget.release(self.reserved)
        self.reserved = 0

    def _read_exact(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            self.buffer += self._recv(deadline)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _read_line(self, deadline: float, limit: int) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) > limit:
                raise HttpError(400, "malformed chunked body: line too long")
            self.buffer += self._recv(deadline)

    def _read_chunked(self, deadline: float) -> bytes:
        cap = self.limits.max_body_bytes
        parts, total = [], 0
        while True:
            line = self._read_line(deadline, 4096)
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise HttpError(400, f"malformed chunk size line {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > cap:
                raise HttpError(413, f"chunked request body exceeds {cap} bytes")
            self._reserve(size)
            parts.append(self._read_exact(size, deadline))
            if self._read_line(deadline, 2) != b"":
                raise HttpError(400, "malformed chunked body: chunk data not followed by CRLF")
        trailer_bytes = 0
        while line := self._read_line(deadline, self.limits.max_header_bytes):
            trailer_bytes += len(line)
            if trailer_bytes > self.limits.max_header_bytes:
                raise HttpError(431, "chunked body trailers are too large")
        return b"".join(parts)

    def read_request(self) -> HttpRequest:
        """Reads one request (head and body) within the header and body deadlines.

        Raises:
            HttpError: Malformed framing, a limit exceeded or a partial request timed out.
            ClientGoneError: The client closed the connection or stayed idle.
        """
        head = self._read_head(time.monotonic() + self.limits.header_timeout_seconds)
        method, target, minor, headers = _parse_head(head)
        request = HttpRequest(
            method, target, _request_path(target), headers, keep_alive=_keep_alive(minor, headers)
        )
        codings = [
            c.strip().lower()
            for v in request.header_values("transfer-encoding")
            for c in v.split(",")
        ]
        lengths = request.header_values("content-length")
        if codings and lengths:
            raise HttpError(400, "both Transfer-Encoding and Content-Length are set")
        if codings and (codings[-1] != "chunked" or minor == 0):
            raise HttpError(400, f"Transfer-Encoding {codings}: the last coding must be chunked")
        if len(codings) > 1:
            raise HttpError(501, f"Transfer-Encoding {codings}: only chunked is supported")
        length = _content_length(lengths, self.limits.max_body_bytes) if lengths else 0
        expect = [v.strip().lower() for v in request.header_values("expect")]
        if expect and expect != ["100-continue"]:
            raise HttpError(417, f"Expect {expect}: only 100-continue is supported")
        self._reserve(length)
        if expect and minor == 1 and (codings or length):
            self._send_bytes(b"HTTP/1.1 100 Continue\r\n\r\n")
        deadline = time.monotonic() + self.limits.body_timeout_seconds
        try:
            request.body = (
                self._read_chunked(deadline) if codings else self._read_exact(length, deadline)
            )
        except TimeoutError:
            raise HttpError(408, "timed out reading the request body") from None
        return request

    def _send_bytes(self, data: bytes) -> None:
        self.sock.settimeout(self.limits.body_timeout_seconds)
        self.sock.sendall(data)

    def send(self, response: HttpResponse, keep_alive: bool, head_only: bool = False) -> None:
        """Writes a response (raises OSError if the client does not take it in time)."""
        self._send_bytes(format_response(response, keep_alive, head_only))

    def interrupt_read(self) -> None:
        """Ends the reading of a request, or the wait for one (server shutdown)."""
        with self.lock:
            if not self.busy:
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RD)

    def close(self, linger: bool) -> None:
        """Closes the socket, first draining what the client still sends when ``linger``."""
        try:
            if linger:
                self.sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + self.limits.linger_seconds
                drained = 0
                while drained < _MAX_LINGER_BYTES:
                    drained += len(self._recv(deadline))
        except (OSError, TimeoutError, ClientGoneError):
            pass
        finally:
            self.sock.close()

    def _answer(
        self,
        app: Callable[[HttpRequest], HttpResponse],
        request: HttpRequest,
        stopping: threading.Event,
    ) -> bool:
        """Runs the application on ``request`` and sends its answer; True to keep alive."""
        try:
            response = app(request)
        except Exception as err:  # the application answers its own errors: a bug
            log.exception("REST %s %s failed", request.method, request.path)
            response = HttpResponse(500, error_body(f"{type(err).__name__}: {err}"))
            request.keep_alive = False
        keep_alive = request.keep_alive and not stopping.is_set()
        self.send(response, keep_alive, head_only=request.method == "HEAD")
        self.release()
        return keep_alive

    def serve(self, app: Callable[[HttpRequest], HttpResponse], stopping: threading.Event) -> None:
        """Answers requests until the client closes, an error, or the server stops."""
        linger = False
        try:
            while not stopping.is_set():
                try:
                    request = self.read_request()
                except HttpError as err:
                    linger = True
                    log.debug("REST framing error %d: %s", err.status, err.message)
                    self.send(HttpResponse(err.status, error_body(err.message)), keep_alive=False)
                    return
                with self.lock:
                    self.busy = True
                keep_alive = self._answer(app, request, stopping)
                with self.lock:
                    self.busy = False
                if not keep_alive:
                    linger = True
                    return
        except (ClientGoneError, OSError):
            linger = False
        finally:
            self.release()
            self.close(linger)
