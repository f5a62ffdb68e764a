"""Campaign phases for ``benchmarks/hostile.py``: outcome tally, server RSS monitor, loops.

Every loop is bounded by a request count and a deadline; every request has a
client timeout. A class that times out :data:`HANG_LIMIT` times is not sent
again in that run (its later requests are counted as ``skipped``), so a
server that hangs costs seconds, not the whole budget.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks._hostile_requests import (
    GRPC_BUILDERS,
    Case,
    Context,
    Reference,
    oversized_requests,
    predict_answer,
    random_inputs,
    request,
    same_answer,
    send_grpc,
    too_large_request,
)
from benchmarks._hostile_rest import (
    REST_BUILDERS,
    answer_arrays,
    body_of,
    exchange,
    http,
    predict_path,
    send_rest,
    stall,
)
from benchmarks._hostile_table import ALL_EXPECTED

log = logging.getLogger(__name__)

HANG_OUTCOMES = frozenset({"TIMEOUT", "DEADLINE_EXCEEDED"})
HANG_LIMIT = 3
MIXED_CLASSES = [*GRPC_BUILDERS, *REST_BUILDERS]


def class_summary(cls: str, outcomes: dict[str, int], skipped: int = 0) -> dict[str, Any]:
    """Counts of one class: sent, outcomes, mismatches (outside the expected set), hangs.

    A timeout in a class that does not expect one is a hang (the ``deadline``
    class expects DEADLINE_EXCEEDED; nothing expects TIMEOUT).
    """
    expected = ALL_EXPECTED[cls].outcomes
    bad = {o: n for o, n in outcomes.items() if o not in expected}
    return {
        "sent": sum(outcomes.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "expected": sorted(expected),
        "mismatches": sum(bad.values()),
        "hangs": sum(n for o, n in bad.items() if o in HANG_OUTCOMES),
        "skipped": skipped,
    }


class Tally:
    """Thread-safe outcome counts per request class."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.skipped: collections.Counter[str] = collections.Counter()

    def record(self, cls: str, outcome: str) -> None:
        if cls not in ALL_EXPECTED:
            raise ValueError(f"Tally.record: unknown request class {cls!r}")
        with self._lock:
            self.outcomes[cls][outcome] += 1

    def skip(self, cls: str, n: int = 1) -> None:
        with self._lock:
            self.skipped[cls] += n

    def hung(self, cls: str) -> bool:
        """True once ``cls`` had HANG_LIMIT unexpected timeouts (stop sending it)."""
        expected = ALL_EXPECTED[cls].outcomes
        with self._lock:
            counts = self.outcomes.get(cls, {})
            return sum(n for o, n in counts.items() if o in HANG_OUTCOMES - expected) >= HANG_LIMIT

    def summary(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            classes = sorted(set(self.outcomes) | set(self.skipped))
            return {c: class_summary(c, dict(self.outcomes[c]), self.skipped[c]) for c in classes}


# --------------------------------------------------------------------- the server process


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process in MiB, from /proc/<pid>/status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return {}
    return {m[1]: int(m[2]) / 1024 for m in re.finditer(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def socket_count(pid: int) -> int | None:
    """Open sockets of a process (its /proc/<pid>/fd links to ``socket:[...]``)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


class RssMonitor:
    """Samples a process's VmRSS every ``interval`` s; kills it above ``guard_mb``.

    The guard protects the machine from a server that allocates without bound
    (it is reported as a failure). ``window_peak_mb`` is the highest sample since
    the last :meth:`reset_window`.
    """

    def __init__(self, pid: int, guard_mb: float, kill: Callable[[], None], interval: float = 0.02):
        self.pid, self.guard_mb, self.kill, self.interval = pid, guard_mb, kill, interval
        self.peak_mb = 0.0
        self.window_peak_mb = 0.0
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-monitor", daemon=True)

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def reset_window(self) -> float:
        """Starts a new window; returns the current RSS in MiB."""
        rss = proc_status_mb(self.pid).get("VmRSS", 0.0)
        self.window_peak_mb = rss
        return rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = proc_status_mb(self.pid).get("VmRSS")
            if rss is None:
                return  # the process is gone
            self.peak_mb = max(self.peak_mb, rss)
            self.window_peak_mb = max(self.window_peak_mb, rss)
            if rss > self.guard_mb and not self.tripped:
                self.tripped = True
                log.error("server RSS %.0f MiB > guard %.0f MiB: killing it", rss, self.guard_mb)
                self.kill()


# ------------------------------------------------------------------------------ phases


def send(ctx: Context, case: Case, channel: grpc.Channel | None = None) -> str:
    """Sends a gRPC or REST case; a failure of the client itself becomes an outcome."""
    try:
        if case.kind in ("rest", "hangup"):
            return send_rest(ctx, case)
        return send_grpc(ctx, case, channel)
    except Exception as err:  # classify, never stop the campaign
        log.exception("client error on %s", case.cls)
        return f"CLIENT_ERROR_{type(err).__name__}"


def run_mixed(
    ctx: Context, tally: Tally, *, count: int, threads: int, seed: int, deadline: float
) -> int:
    """``count`` requests cycling through every mixed class, from ``threads`` threads."""
    sent = collections.Counter()

    def worker(w: int) -> None:
        rng = np.random.default_rng(seed + w)
        for i in range(w, count, threads):
            cls = MIXED_CLASSES[i % len(MIXED_CLASSES)]
            if time.monotonic() > deadline or tally.hung(cls):
                tally.skip(cls)
                continue
            builder = GRPC_BUILDERS.get(cls) or REST_BUILDERS[cls]
            tally.record(cls, send(ctx, builder(rng, ctx)))
            sent[w] += 1

    _join([threading.Thread(target=worker, args=(w,)) for w in range(threads)])
    return sum(sent.values())


def _join(workers: list[threading.Thread]) -> None:
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _reference_case(ctx: Context, cls: str, index: int, timeout: float) -> Case:
    ref = ctx.references[index % len(ctx.references)]
    return Case(
        cls,
        "unary",
        request(ctx, ref.inputs),
        lambda out: same_answer(out, ref.answer, ref.inputs["k"]),
        timeout,
    )


def run_concurrent(
    ctx: Context, tally: Tally, *, clients: int, per_client: int, timeout: float, deadline: float
) -> None:
    """``clients`` clients (a channel each) start together and send reference requests."""
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        channel = grpc.insecure_channel(ctx.grpc_target)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=30.0)
        try:
            for j in range(per_client):
                if time.monotonic() > deadline:
                    tally.skip("concurrent_valid", per_client - j)
                    return
                case = _reference_case(ctx, "concurrent_valid", c + j, timeout)
                tally.record("concurrent_valid", send(ctx, case, channel))
        finally:
            channel.close()

    _join([threading.Thread(target=client, args=(c,)) for c in range(clients)])


def run_large(ctx: Context, tally: Tally, s: Any, batching: bool, deadline: float) -> None:
    """A request of ``s.large_rows`` rows; with batching, while one-row requests run."""
    rng = np.random.default_rng(3)
    inputs = random_inputs(ctx, rng, batch=s.large_rows)
    rows, k_max = s.large_rows, int(inputs["k"].max())

    def check(out: dict[str, np.ndarray]) -> bool:
        return out.get("item_ids") is not None and out["item_ids"].shape == (rows, k_max)

    big = Case("oversized_batch" if batching else "large_request", "unary", request(ctx, inputs))
    big.check, big.timeout = check, s.oversized_timeout_s
    if not batching:
        for _ in range(s.large_rounds):
            if time.monotonic() < deadline:
                tally.record(big.cls, send(ctx, big))
        return
    done = threading.Event()

    def small(t: int) -> None:
        for j in range(s.small_per_thread):
            if time.monotonic() > deadline:
                break
            case = _reference_case(ctx, "small_during_oversized_batch", t + j, s.request_timeout_s)
            tally.record(case.cls, send(ctx, case))
            if done.is_set() and j >= 1:
                break

    def large() -> None:
        for _ in range(s.large_rounds):
            if time.monotonic() < deadline:
                tally.record(big.cls, send(ctx, big))
        done.set()

    _join(
        [threading.Thread(target=small, args=(t,)) for t in range(s.small_threads)]
        + [threading.Thread(target=large)]
    )


def run_oversized(
    ctx: Context, tally: Tally, monitor: RssMonitor, s: Any, deadline: float
) -> dict[str, Any]:
    """Huge declared shapes one at a time, each with its RSS jump; a variant stops at its
    first mismatch (an unfixed server may spend seconds and GiBs on one)."""
    stats: dict[str, Any] = {}
    expected = ALL_EXPECTED["oversized_shape"].outcomes
    for label, message in oversized_requests(ctx):
        rows = []
        for i in range(s.oversized_per_variant):
            if time.monotonic() > deadline or monitor.tripped:
                tally.skip("oversized_shape", s.oversized_per_variant - i)
                break
            before = monitor.reset_window()
            hwm_before = proc_status_mb(monitor.pid).get("VmHWM", 0.0)
            start = time.monotonic()
            case = Case("oversized_shape", "unary", message, timeout=s.oversized_timeout_s)
            outcome = send(ctx, case)
            seconds = time.monotonic() - start
            time.sleep(2 * monitor.interval)  # let the monitor take a sample after the answer
            hwm_after = proc_status_mb(monitor.pid).get("VmHWM", 0.0)
            peak = max(monitor.window_peak_mb, hwm_after if hwm_after > hwm_before else 0.0)
            jump = max(0.0, peak - before)
            if jump > s.rss_jump_bound_mb:
                outcome += "+RSS_JUMP"
            tally.record("oversized_shape", outcome)
            rows.append(
                {"outcome": outcome, "seconds": round(seconds, 3), "rss_jump_mb": round(jump, 1)}
            )
            if outcome not in expected:
                tally.skip("oversized_shape", s.oversized_per_variant - i - 1)
                break
        stats[label] = rows
    for _ in range(s.message_too_large):
        if time.monotonic() < deadline and not monitor.tripped:
            case = Case("message_too_large", "unary", too_large_request(ctx), timeout=60.0)
            tally.record("message_too_large", send(ctx, case))
    return stats


def run_stall(ctx: Context, tally: Tally, s: Any) -> dict[str, Any]:
    """Stalled/idle REST connections; records their outcomes and how long each stayed open."""
    results = stall(ctx, s.stall_connections, s.stall_limit_s, s.stall_probes)
    seconds: dict[str, float] = {}
    for cls, outcome, held in results:
        tally.record(cls, outcome)
        seconds[cls] = max(seconds.get(cls, 0.0), round(held, 3))
    held = sum(1 for _, outcome, _ in results if outcome == "HELD")
    return {"limit_s": s.stall_limit_s, "max_open_s": seconds, "held_at_limit": held}


# ------------------------------------------------------------------ before and after


def take_references(ctx: Context, count: int) -> None:
    """Sequential reference answers (the same seed in both modes, so they can be compared)."""
    rng = np.random.default_rng(0)
    ctx.references = [
        Reference(inputs, predict_answer(ctx, inputs))
        for inputs in (random_inputs(ctx, rng) for _ in range(count))
    ]
    for batch in (1, 2, 3):  # the all-"" history of width 1 stands for "no history"
        inputs = random_inputs(ctx, rng, batch=batch)
        inputs["history"] = np.full((batch, 1), b"", dtype=object)
        ctx.empty_refs.append(Reference(inputs, predict_answer(ctx, inputs)))
    unknown = {
        "user_id": np.array([b"zz-unknown"], dtype=object),
        "history": np.array([[b"zz-unknown-1", b"zz-unknown-2"]], dtype=object),
        "k": np.array([5], np.int32),
    }
    ctx.unknown_ref = Reference(unknown, predict_answer(ctx, unknown))


def answers_identical(ctx: Context) -> bool:
    """True if every reference request gets its reference answer again.

    Compared with :func:`same_answer`: each row's first ``k`` items and scores.
    Under batching a request merged with a leftover one of larger ``k`` gets
    ``max(k)`` columns (the signature's contract, as with TF Serving's batching),
    so whole arrays are not compared.
    """
    for ref in ctx.references:
        try:
            answer = predict_answer(ctx, ref.inputs)
        except grpc.RpcError:
            return False
        if not same_answer(answer, ref.answer, ref.inputs["k"]):
            return False
    return True


def rest_matches(ctx: Context) -> bool:
    """True if the first reference request over REST gets the gRPC reference answer."""
    ref = ctx.references[0]
    outcome, body = exchange(ctx.rest_port, http(predict_path(ctx), body_of(ref.inputs)), 30.0)
    try:
        answer = answer_arrays(json.loads(body)) if outcome == "HTTP_200" else None
    except (ValueError, KeyError, TypeError):
        answer = None
    return answer is not None and same_answer(answer, ref.answer, ref.inputs["k"])
