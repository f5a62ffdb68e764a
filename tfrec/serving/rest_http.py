"""The REST API's HTTP server: a bounded number of connections, one thread each.

Each connection is read and answered by :class:`~tfrec.serving.rest_framing.Connection`
under the deadlines and size limits of :class:`HttpLimits`. At most
``max_connections`` (256) are served at once: the next one is answered 503 and
closed right away, so hostile clients cannot pile up threads (a stalled client
holds its thread until its header or body timeout). Rejected (and
answered) sockets are drained for ``linger_seconds`` by one closer thread before
they are closed, so the client reads the 503 instead of a TCP reset.

Memory: a JSON body takes about 15 times its size while it is parsed and
converted, so the bodies held at once are bounded server-wide
(``max_inflight_body_bytes``, 128 MiB: about 2 GiB at worst); a body that does
not fit is answered 503 before it is read.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

from tfrec.config import JsonConfig
from tfrec.serving.rest_framing import (
    Connection,
    HttpError,
    HttpRequest,
    HttpResponse,
    error_body,
    format_response,
)

log = logging.getLogger(__name__)

_RECV_BYTES = 1 << 16


@dataclasses.dataclass
class HttpLimits(JsonConfig):
    """Per-connection limits of the REST server (see the module docstring).

    Args:
        header_timeout_seconds: Time for the request line and headers (and the
            idle time allowed between keep-alive requests).
        body_timeout_seconds: Time for the whole request body, and for sending a response.
        max_connections: Connections served at once; more get 503.
        max_body_bytes: Largest request body; larger ones get 413.
        max_header_bytes: Largest request head; larger ones get 431.
        max_inflight_body_bytes: Request bodies held at once, server-wide (a
            JSON body takes ~15x its size in memory while it is parsed); a body
            that does not fit gets 503. At least ``max_body_bytes`` is used.
        linger_seconds: How long an error response waits for the client to
            close before the socket is closed.
    """

    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections: int = 256
    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    max_inflight_body_bytes: int = 128 * 1024 * 1024
    linger_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_seconds", "body_timeout_seconds", "linger_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpLimits.{name}={getattr(self, name)}: expected > 0")
        for name in (
            "max_connections",
            "max_body_bytes",
            "max_header_bytes",
            "max_inflight_body_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"HttpLimits.{name}={getattr(self, name)}: expected >= 1")


class ByteBudget:
    """Bytes shared by all connections (request bodies in flight)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> None:
        """Takes ``size`` bytes, or raises HttpError 503 when they are not available."""
        with self._lock:
            if self.used + size > self.capacity:
                raise HttpError(
                    503,
                    f"server busy: a {size}-byte request body does not fit in the "
                    f"{self.capacity - self.used} bytes left of max_inflight_body_bytes; retry",
                )
            self.used += size

    def release(self, size: int) -> None:
        """Gives back bytes taken by :meth:`reserve`."""
        with self._lock:
            self.used -= size


class _Closer:
    """Drains and closes rejected connections in one thread (bounded), without blocking accepts."""

    def __init__(self, linger_seconds: float, max_sockets: int = 256):
        self._linger = linger_seconds
        self._max = max_sockets
        self._new: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfrec-rest-closer", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket) -> None:
        """Takes ownership of ``sock`` (already answered): closes it after a short drain."""
        with self._lock:
            accepted = self._pending < self._max and not self._stop.is_set()
            self._pending += accepted
        if accepted:
            self._new.put(sock)
        else:
            sock.close()

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            while not self._stop.is_set():
                while not self._new.empty():
                    sock = self._new.get()
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ, time.monotonic() + self._linger)
                now = time.monotonic()
                for key in list(selector.get_map().values()):
                    if key.data < now:
                        self._drop(selector, key.fileobj)
                for key, _ in selector.select(0.05) if selector.get_map() else ():
                    try:
                        if key.fileobj.recv(_RECV_BYTES):
                            continue
                    except OSError:
                        pass
                    self._drop(selector, key.fileobj)
                if not selector.get_map():
                    self._stop.wait(0.05)
            for key in list(selector.get_map().values()):
                self._drop(selector, key.fileobj)

    def _drop(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()
        with self._lock:
            self._pending -= 1

    def stop(self) -> None:
        """Closes everything still draining."""
        self._stop.set()
        self._thread.join()
        while not self._new.empty():
            self._new.get().close()


class HttpServer:
    """Accepts connections and serves each in its own thread, at most ``max_connections``.

    Args:
        app: Called with each request; returns the response (must not raise).
        host: Interface to bind.
        port: Port (0 = pick a free one; see :attr:`port`).
        limits: Timeouts and size limits.

    Raises:
        OSError: The port cannot be bound.
    """

    def __init__(
        self,
        app: Callable[[HttpRequest], HttpResponse],
        host: str,
        port: int,
        limits: HttpLimits | None = None,
    ):
        self.app = app
        self.limits = limits or HttpLimits()
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self._listener = socket.socket(family, kind, proto)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(min(socket.SOMAXCONN, 1024))
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        limits = self.limits
        self._budget = ByteBudget(max(limits.max_inflight_body_bytes, limits.max_body_bytes))
        self._connections: set[Connection] = set()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._closer: _Closer | None = None
        self._thread = threading.Thread(target=self._accept_loop, name="tfrec-rest", daemon=True)

    @property
    def active_connections(self) -> int:
        """Connections being served right now."""
        with self._lock:
            return len(self._connections)

    def start(self) -> None:
        """Accepts connections in a background thread."""
        self._closer = _Closer(self.limits.linger_seconds)
        self._thread.start()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(0.05):
                    continue
                try:
                    sock, _ = self._listener.accept()
                except BlockingIOError:
                    continue
                except OSError as err:  # e.g. out of file descriptors: back off
                    log.warning("REST accept failed: %s", err)
                    self._stopping.wait(0.05)
                    continue
                if not self._slots.acquire(blocking=False):
                    self._reject(sock)
                    continue
                thread = threading.Thread(target=self._serve_connection, args=(sock,), daemon=True)
                try:
                    thread.start()
                except RuntimeError as err:  # the OS refuses more threads
                    log.warning("REST cannot start a connection thread: %s", err)
                    self._slots.release()
                    self._reject(sock)

    def _reject(self, sock: socket.socket) -> None:
        message = f"too many connections: the server serves {self.limits.max_connections} at once"
        log.debug("REST %s", message)
        response = HttpResponse(503, error_body(message))
        try:
            sock.setblocking(False)
            sock.send(format_response(response, keep_alive=False))  # small: fits the buffer
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if self._closer is None:
            sock.close()
        else:
            self._closer.add(sock)

    def _serve_connection(self, sock: socket.socket) -> None:
        connection = Connection(sock, self.limits, self._budget)
        with self._lock:
            self._connections.add(connection)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.serve(self.app, self._stopping)
        except Exception:  # never let a connection thread die silently
            log.exception("REST connection failed")
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._lock.notify_all()
            self._slots.release()

    def stop(self, grace: float = 0.0) -> None:
        """Stops accepting and reading requests; waits up to ``grace`` s for those being answered.

        Connections waiting for or reading a request are closed at once;
        a request being answered completes (``Connection: close``).
        """
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._listener.close()
        with self._lock:
            for connection in self._connections:
                connection.interrupt_read()
            self._lock.wait_for(lambda: not self._connections, timeout=grace)
        if self._closer is not None:
            self._closer.stop()
