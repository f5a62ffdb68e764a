"""REST connections under hostile clients: raw sockets, tiny timeouts and limits.

The server under test has a 0.5 s header timeout, a 0.5 s body timeout, 3
connections, a 2048-byte body cap and a 3000-byte in-flight body budget, so
every test takes well under 2 s.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tfrec.serving.model_config import ModelEntry
from tfrec.serving.rest import RestServer
from tfrec.serving.rest_http import HttpLimits

LIMITS = HttpLimits(
    header_timeout_seconds=0.5,
    body_timeout_seconds=0.5,
    max_connections=3,
    max_body_bytes=2048,
    max_header_bytes=1024,
    max_inflight_body_bytes=3000,
    linger_seconds=0.2,
)
PREDICT = "/v1/models/retrieval:predict"
BODY = json.dumps({"instances": [{"user_id": "u", "history": ["a"], "k": 2}]}).encode()
# u, history a -> items b, c (scores 5.01, 4.01: see conftest)
EXPECTED_ITEMS = ["b", "c"]


@pytest.fixture
def rest(export_dir, start_server) -> Iterator[RestServer]:
    server = start_server([ModelEntry("retrieval", str(export_dir / "retrieval"))])
    rest = RestServer(server.core, "127.0.0.1", 0, None, limits=LIMITS)
    rest.start()
    yield rest
    rest.stop(grace=1.0)


def head(method: str = "POST", path: str = PREDICT, headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(body: bytes = BODY, **headers: str) -> bytes:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    headers.setdefault("Content-Length", str(len(body)))
    return head(headers=headers) + body


def connect(rest: RestServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", rest.port), timeout=3.0)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """(status, head, body) of one response, read by its Content-Length; (0, b"", b"") on EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return 0, data, b""
        data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in raw_head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(raw_head.split(b" ")[1]), raw_head, body


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed its side (EOF or reset) within the socket timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def exchange(rest: RestServer, data: bytes) -> tuple[int, bytes, float]:
    """Sends ``data`` on a new connection: (status, body, seconds until the answer)."""
    with connect(rest) as sock:
        start = time.monotonic()
        sock.sendall(data)
        status, _, body = read_response(sock)
        return status, body, time.monotonic() - start


def test_valid_request_and_keep_alive(rest) -> None:
    with connect(rest) as sock:
        for _ in range(2):  # two requests on one connection
            sock.sendall(request())
            status, raw_head, body = read_response(sock)
            assert status == 200 and b"Connection: keep-alive" in raw_head
            assert json.loads(body)["predictions"][0]["item_ids"] == EXPECTED_ITEMS


@pytest.mark.parametrize("length", ["-1", "abc", "1, 2", "+5", "0x10", ""])
def test_malformed_content_length_is_400_and_closed(rest, length) -> None:
    with connect(rest) as sock:
        sock.sendall(head(headers={"Content-Length": length}) + b"{}")
        status, _, body = read_response(sock)
        assert status == 400  # not the 408 a wait for the body would give
        assert "Content-Length" in json.loads(body)["error"]
        assert closed_by_server(sock)


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("16030100a5010000a10303") + bytes(32),  # TLS ClientHello, no newline
        b"\x00\x01\x02\x03",
        b"GET /v1/models/retrieval HTTP/1.1\x00\r\n\r\n",
        b"G" * 40,  # a "method" longer than any real one
    ],
)
def test_non_http_bytes_are_400_at_once(rest, data) -> None:
    with connect(rest) as sock:
        start = time.monotonic()
        sock.sendall(data)
        status, _, _ = read_response(sock)
        assert status == 400
        assert time.monotonic() - start < LIMITS.header_timeout_seconds
        assert closed_by_server(sock)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Length": "2", "Transfer-Encoding": "chunked"}, 400),
        ({"Transfer-Encoding": "gzip"}, 400),  # the last coding must be chunked
        ({"Transfer-Encoding": "gzip, chunked"}, 501),
        ({"Expect": "something-else"}, 417),
        ({"X-Big": "v" * 2000}, 431),  # head above max_header_bytes (1024)
    ],
)
def test_framing_errors(rest, headers, status) -> None:
    got, _, _ = exchange(rest, head(headers=headers))
    assert got == status


def test_other_http_versions_are_505(rest) -> None:
    assert exchange(rest, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")[0] == 505


def test_body_above_the_cap_is_413_before_it_is_sent(rest) -> None:
    for length in ("2049", "9" * 40):  # 1 byte over max_body_bytes; absurdly large
        status, body, _ = exchange(rest, head(headers={"Content-Length": length}))
        assert status == 413 and "exceeds 2048" in json.loads(body)["error"]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """``body`` cut in chunks of ``sizes`` (the rest in a last chunk), with an extension
    and a trailer."""
    out, start = b"", 0
    for size in [*sizes, len(body)]:
        part = body[start : start + size]
        start += len(part)
        if part:
            out += f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


def test_chunked_body_is_answered_like_the_plain_one(rest) -> None:
    plain = exchange(rest, request())
    chunked_request = head(headers={"Transfer-Encoding": "chunked"}) + chunked(BODY, [5, 17])
    assert exchange(rest, chunked_request)[:2] == plain[:2]
    assert plain[0] == 200


def test_chunked_body_above_the_cap_is_413(rest) -> None:
    data = head(headers={"Transfer-Encoding": "chunked"}) + chunked(b" " * 3000, [1000, 1000])
    assert exchange(rest, data)[0] == 413


@pytest.mark.parametrize("chunk", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"])
def test_malformed_chunks_are_400(rest, chunk) -> None:
    assert exchange(rest, head(headers={"Transfer-Encoding": "chunked"}) + chunk)[0] == 400


def test_expect_100_continue(rest) -> None:
    with connect(rest) as sock:
        sock.sendall(head(headers={"Content-Length": str(len(BODY)), "Expect": "100-continue"}))
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(BODY)
        assert read_response(sock)[0] == 200


def test_stalled_head_times_out_with_408(rest) -> None:
    with connect(rest) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /v1/models/retrieval:predict HTTP/1.1\r\nHost: x\r\n")
        status, _, _ = read_response(sock)
        elapsed = time.monotonic() - start
        assert status == 408 and closed_by_server(sock)
        assert LIMITS.header_timeout_seconds - 0.05 < elapsed < 1.5


def test_head_dripped_byte_by_byte_still_times_out(rest) -> None:
    """The header timeout bounds the whole head, not the wait for each byte."""
    with connect(rest) as sock:
        start = time.monotonic()
        answer = b""
        for byte in request():
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(1024)
            sock.setblocking(True)
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 1.5


def test_stalled_body_times_out_with_408(rest) -> None:
    with connect(rest) as sock:
        start = time.monotonic()
        sock.sendall(head(headers={"Content-Length": "100"}) + b'{"instances": ')  # 15 of 100
        status, _, _ = read_response(sock)
        assert status == 408 and closed_by_server(sock)
        assert time.monotonic() - start < 1.5


def test_idle_connection_is_closed_silently(rest) -> None:
    with connect(rest) as sock:
        start = time.monotonic()
        assert closed_by_server(sock)  # EOF, no response bytes
        assert LIMITS.header_timeout_seconds - 0.05 < time.monotonic() - start < 1.5


def wait_for(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_connections_above_the_cap_get_503_and_threads_do_not_pile_up(rest) -> None:
    threads_before = threading.active_count()
    stalled = [connect(rest) for _ in range(LIMITS.max_connections)]
    for sock in stalled:
        sock.sendall(head(headers={"Content-Length": "100"}))  # a body that never comes
    assert wait_for(lambda: rest.active_connections == LIMITS.max_connections)
    for _ in range(5):
        status, body, elapsed = exchange(rest, request())
        assert status == 503 and "too many connections" in json.loads(body)["error"]
        assert elapsed < LIMITS.header_timeout_seconds  # refused at once, not queued
    assert threading.active_count() <= threads_before + LIMITS.max_connections
    for sock in stalled:  # each stalled connection ends with its body timeout
        assert read_response(sock)[0] == 408
        sock.close()
    assert wait_for(lambda: rest.active_connections == 0)
    assert exchange(rest, request())[0] == 200  # and the server serves again


def test_bodies_above_the_inflight_budget_get_503(rest) -> None:
    with connect(rest) as holder:
        holder.sendall(head(headers={"Content-Length": "2000"}))  # holds 2000 of 3000 bytes
        assert wait_for(lambda: rest.active_connections == 1)
        time.sleep(0.05)
        status, body, _ = exchange(rest, head(headers={"Content-Length": "1500"}))
        assert status == 503 and "max_inflight_body_bytes" in json.loads(body)["error"]
        assert exchange(rest, request())[0] == 200  # a small body still fits
        assert read_response(holder)[0] == 408
    assert wait_for(lambda: rest.active_connections == 0)
    assert exchange(rest, head(headers={"Content-Length": "1500"}) + b" " * 1500)[0] == 400


def test_stop_ends_idle_and_stalled_connections_at_once(export_dir, start_server) -> None:
    server = start_server([ModelEntry("retrieval", str(export_dir / "retrieval"))])
    rest = RestServer(server.core, "127.0.0.1", 0, None, limits=HttpLimits())  # 10 s / 30 s
    rest.start()
    with connect(rest) as idle, connect(rest) as stalled:
        idle.sendall(request())
        assert read_response(idle)[0] == 200  # now idle on a keep-alive connection
        stalled.sendall(head(headers={"Content-Length": "100"}) + b"{")
        assert wait_for(lambda: rest.active_connections == 2)
        start = time.monotonic()
        rest.stop(grace=5.0)
        assert closed_by_server(idle) and closed_by_server(stalled)
        assert time.monotonic() - start < 1.0  # neither the idle nor the body timeout
