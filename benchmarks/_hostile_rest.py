"""Hostile REST requests for ``benchmarks/hostile.py``: raw HTTP/1.1 over loopback sockets.

Requests are written as raw bytes (so framing can be broken on purpose: a
negative ``Content-Length``, a chunked body, TLS bytes on the HTTP port) and
answers are read with a deadline. Outcomes: ``HTTP_<code>`` (``HTTP_200_WRONG_ANSWER``
when a 200's answer fails its check), ``CLOSED`` (end of stream before any
answer), ``RESET``, ``TIMEOUT`` (nothing within the client timeout), ``SENT``
(the client hung up on purpose) and, for stalled connections, ``HELD`` (still
open when the stall limit ran out).
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._hostile_requests import Arrays, Case, Context, Reference, same_answer

# ------------------------------------------------------------------------ HTTP plumbing


def http(
    path: str,
    body: bytes = b"",
    *,
    method: str = "POST",
    length: str | None = None,
    chunks: list[bytes] | None = None,
) -> bytes:
    """A raw HTTP/1.1 request (``Connection: close``); ``length`` overrides Content-Length."""
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    head.append("Content-Type: application/json")
    if chunks is not None:
        head.append("Transfer-Encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    elif method == "POST" or length is not None:
        head.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return match is not None and len(body) >= int(match[1])


def _parse(data: bytes) -> tuple[str, bytes]:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    if match is None:
        return "NOT_HTTP", b""
    return f"HTTP_{int(match[1])}", data.partition(b"\r\n\r\n")[2]


def read_response(sock: socket.socket, deadline: float) -> tuple[str, bytes]:
    """Reads one answer until it is complete, the server closes, or ``deadline``."""
    data, ended = b"", "TIMEOUT"
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            part = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset by the server
            ended = "RESET"
            break
        if not part:
            ended = "CLOSED"
            break
        data += part
        if _complete(data):
            break
    return _parse(data) if data else (ended, b"")


def exchange(port: int, raw: bytes, timeout: float, *, hang_up: bool = False) -> tuple[str, bytes]:
    """Sends ``raw`` to 127.0.0.1:``port`` and reads the answer (or hangs up: ``SENT``)."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return "REFUSED", b""
    with sock:
        try:
            sock.sendall(raw)
        except TimeoutError:
            return "TIMEOUT", b""
        except OSError:
            pass  # the server answered and closed early: read what it said
        if hang_up:
            return "SENT", b""
        return read_response(sock, deadline)


def answer_arrays(payload: Any) -> Arrays:
    """``{"predictions": [...]}`` or ``{"outputs": {...}}`` as item_ids / scores arrays."""
    if "predictions" in payload:
        rows = payload["predictions"]
        ids = [row["item_ids"] for row in rows]
        scores = [row["scores"] for row in rows]
    else:
        ids, scores = payload["outputs"]["item_ids"], payload["outputs"]["scores"]
    id_array = np.array([[s.encode() for s in row] for row in ids], dtype=object)
    return {
        "item_ids": id_array.reshape(len(ids), -1),
        "scores": np.asarray(scores, dtype=np.float32).reshape(len(ids), -1),
    }


def send_rest(ctx: Context, case: Case) -> str:
    """Sends one REST case; a 200 is checked with ``case.check`` when it has one."""
    outcome, body = exchange(
        ctx.rest_port, case.payload, case.timeout, hang_up=case.kind == "hangup"
    )
    if outcome != "HTTP_200" or case.check is None:
        return outcome
    try:
        answer = answer_arrays(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "HTTP_200_WRONG_ANSWER"
    return "HTTP_200" if case.check(answer) else "HTTP_200_WRONG_ANSWER"


# ------------------------------------------------------------------------ REST builders


def predict_path(ctx: Context, suffix: str = "") -> str:
    """``/v1/models/<name>[suffix]:predict``."""
    return f"/v1/models/{ctx.model_name}{suffix}:predict"


def body_of(inputs: Arrays, columnar: bool = False, **extra: Any) -> bytes:
    """A predict body for ``inputs`` (row ``instances`` or columnar ``inputs`` format)."""
    users = [u.decode() for u in inputs["user_id"]]
    history = [[h.decode() for h in row] for row in inputs["history"]]
    k = [int(v) for v in inputs["k"]]
    if columnar:
        payload = {"inputs": {"user_id": users, "history": history, "k": k}}
    else:
        payload = {
            "instances": [
                {"user_id": u, "history": h, "k": kk}
                for u, h, kk in zip(users, history, k, strict=True)
            ]
        }
    return json.dumps({**extra, **payload}).encode()


def _checker(ref: Reference) -> Callable[[Arrays], bool]:
    return lambda out: same_answer(out, ref.answer, ref.inputs["k"])


def _pick(rng: np.random.Generator, options: list[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _valid(rng: np.random.Generator, ctx: Context) -> Case:
    ref = _pick(rng, ctx.references)
    body = body_of(ref.inputs, columnar=bool(rng.integers(2)))
    return Case("rest_valid", "rest", http(predict_path(ctx), body), _checker(ref))


def _chunked(rng: np.random.Generator, ctx: Context) -> Case:
    ref = _pick(rng, ctx.references)
    body = body_of(ref.inputs)
    cut = sorted(int(c) for c in rng.integers(1, len(body), size=2))
    chunks = [body[: cut[0]], body[cut[0] : cut[1]], body[cut[1] :]]
    raw = http(predict_path(ctx), chunks=[c for c in chunks if c])
    return Case("rest_chunked", "rest", raw, _checker(ref))


def _empty_history(rng: np.random.Generator, ctx: Context) -> Case:
    ref = _pick(rng, ctx.empty_refs)
    inputs = {**ref.inputs, "history": np.zeros((len(ref.inputs["k"]), 0), dtype=object)}
    return Case(
        "rest_empty_history", "rest", http(predict_path(ctx), body_of(inputs)), _checker(ref)
    )


def _body_case(cls: str, bodies: Callable[[Context], list[bytes]]) -> Callable[..., Case]:
    def build(rng: np.random.Generator, ctx: Context) -> Case:
        return Case(cls, "rest", http(predict_path(ctx), _pick(rng, bodies(ctx))))

    return build


def _instance(ctx: Context, **override: Any) -> bytes:
    instance = {"user_id": ctx.users[0], "history": [ctx.items[0], ctx.items[1]], "k": 3}
    instance.update(override)
    return json.dumps({"instances": [instance]}).encode()


def _malformed(ctx: Context) -> list[bytes]:
    good = _instance(ctx)
    return [b"{", b'{"instances": [}', b"nul", good[:-3], good.replace(b",", b",,", 1), b""]


def _bad_utf8(ctx: Context) -> list[bytes]:
    return [
        _instance(ctx).replace(ctx.users[0].encode(), bad) for bad in (b"\xff\xfe", b"\xc3\x28")
    ]


def _deep(ctx: Context) -> list[bytes]:
    depth = 50_000
    return [b"[" * depth + b"]" * depth, b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"]


def _signature_names(ctx: Context) -> list[bytes]:
    values: list[Any] = [[], {}, 100, True]
    return [
        json.dumps({"signature_name": v, **json.loads(_instance(ctx))}).encode() for v in values
    ]


def _path_case(cls: str, path: Callable[[Context], str]) -> Callable[..., Case]:
    def build(rng: np.random.Generator, ctx: Context) -> Case:
        return Case(cls, "rest", http(path(ctx), _instance(ctx)))

    return build


def _content_length(rng: np.random.Generator, ctx: Context) -> Case:
    value = _pick(rng, ["-1", "abc", "1, 2", "0x10"])
    return Case("rest_bad_content_length", "rest", http(predict_path(ctx), b"{}", length=value))


def _huge_content_length(rng: np.random.Generator, ctx: Context) -> Case:
    raw = http(predict_path(ctx), b"", length=str(10**12))
    return Case("rest_huge_content_length", "rest", raw)


def tls_client_hello(rng: np.random.Generator) -> bytes:
    """A TLS 1.2 record header + ClientHello start, with random session bytes."""
    body = b"\x03\x03" + rng.bytes(32) + b"\x00\x00\x04\x13\x01\x13\x02\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2, "big") + handshake


def _tls(rng: np.random.Generator, ctx: Context) -> Case:
    return Case("rest_tls_hello", "rest", tls_client_hello(rng), timeout=5.0)


def _disconnect(rng: np.random.Generator, ctx: Context) -> Case:
    raw = http(predict_path(ctx), body_of(_pick(rng, ctx.references).inputs))
    if rng.integers(2):
        raw = raw[: len(raw) - 10]  # hang up in the middle of the body
    return Case("rest_disconnect", "hangup", raw)


REST_BUILDERS: dict[str, Callable[[np.random.Generator, Context], Case]] = {
    "rest_valid": _valid,
    "rest_chunked": _chunked,
    "rest_empty_history": _empty_history,
    "rest_malformed_json": _body_case("rest_malformed_json", _malformed),
    "rest_bad_utf8": _body_case("rest_bad_utf8", _bad_utf8),
    "rest_bad_k_type": _body_case(
        "rest_bad_k_type", lambda c: [_instance(c, k=v) for v in (10.7, "10", True, None, {})]
    ),
    "rest_bad_k_value": _body_case(
        "rest_bad_k_value",
        lambda c: [_instance(c, k=v) for v in (0, -3, 2**31 - 1, 2**31, len(c.items) + 1)],
    ),
    "rest_bad_signature_name": _body_case("rest_bad_signature_name", _signature_names),
    "rest_unknown_signature": _body_case(
        "rest_unknown_signature",
        lambda c: [json.dumps({"signature_name": "nope", **json.loads(_instance(c))}).encode()],
    ),
    "rest_deep_json": _body_case("rest_deep_json", _deep),
    "rest_bad_content_length": _content_length,
    "rest_huge_content_length": _huge_content_length,
    "rest_unknown_model": _path_case("rest_unknown_model", lambda c: "/v1/models/nope:predict"),
    "rest_unknown_version": _path_case(
        "rest_unknown_version", lambda c: predict_path(c, "/versions/99")
    ),
    "rest_huge_version": _path_case(
        "rest_huge_version", lambda c: predict_path(c, f"/versions/{2**70}")
    ),
    "rest_unknown_label": _path_case(
        "rest_unknown_label", lambda c: predict_path(c, "/labels/nope")
    ),
    "rest_tls_hello": _tls,
    "rest_disconnect": _disconnect,
}


# ---------------------------------------------------------------- stalled connections


def _stall_bytes(ctx: Context, cls: str) -> bytes:
    if cls == "rest_idle":
        return b""
    if cls == "rest_stalled_headers":
        return f"POST {predict_path(ctx)} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    return http(predict_path(ctx), b"", length="100") + b'{"instances": ['


def stall(ctx: Context, n: int, limit_s: float, probes: int) -> list[tuple[str, str, float]]:
    """Holds ``n`` stalled connections open until the server closes them or ``limit_s``.

    While they are open, ``probes`` valid requests are sent (each may wait up to
    ``limit_s``): the server must still answer them.

    Returns:
        (class, outcome, seconds until closed or the limit) per connection and probe.
    """
    classes = ["rest_idle", "rest_stalled_headers", "rest_stalled_body"]
    selector, start, out = selectors.DefaultSelector(), time.monotonic(), []
    opened: dict[socket.socket, tuple[str, bytearray]] = {}
    for i in range(n):
        cls = classes[i % 3]
        try:
            sock = socket.create_connection(("127.0.0.1", ctx.rest_port), timeout=5.0)
            sock.sendall(_stall_bytes(ctx, cls))
        except OSError:
            out.append((cls, "REFUSED", time.monotonic() - start))
            continue
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened[sock] = (cls, bytearray())
    probe_out: list[tuple[str, str, float]] = []
    probe = threading.Thread(target=_probe, args=(ctx, probes, limit_s, probe_out), daemon=True)
    probe.start()
    while opened and time.monotonic() - start < limit_s:
        for key, _ in selector.select(timeout=min(0.2, limit_s)):
            sock = key.fileobj
            cls, data = opened[sock]
            try:
                part = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                part = None
            if part:
                data.extend(part)
                continue
            ended = _parse(bytes(data))[0] if data else ("RESET" if part is None else "CLOSED")
            out.append((cls, ended, time.monotonic() - start))
            selector.unregister(sock)
            sock.close()
            del opened[sock]
    for sock, (cls, _) in opened.items():
        out.append((cls, "HELD", time.monotonic() - start))
        sock.close()
    selector.close()
    probe.join(limit_s + 10.0)
    return out + probe_out


def _probe(ctx: Context, count: int, limit_s: float, out: list[tuple[str, str, float]]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(count):
        case = _valid(rng, ctx)
        case.timeout = limit_s
        start = time.monotonic()
        out.append(("rest_valid_during_stall", send_rest(ctx, case), time.monotonic() - start))
