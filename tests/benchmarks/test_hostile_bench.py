"""benchmarks/hostile.py: its classification arithmetic, HTTP plumbing and the --quick report."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from testing_utils import import_benchmark

hostile = import_benchmark("hostile")
phases = import_benchmark("_hostile_phases")
report = import_benchmark("_hostile_report")
requests = import_benchmark("_hostile_requests")
rest = import_benchmark("_hostile_rest")
table = import_benchmark("_hostile_table")


def test_class_summary_counts_mismatches_and_hangs() -> None:
    # "valid" expects OK: INVALID_ARGUMENT x2 and DEADLINE_EXCEEDED x1 are 3 mismatches,
    # the timeout among them is a hang.
    row = phases.class_summary("valid", {"OK": 3, "INVALID_ARGUMENT": 2, "DEADLINE_EXCEEDED": 1})
    assert (row["sent"], row["mismatches"], row["hangs"]) == (6, 3, 1)
    # "deadline" expects DEADLINE_EXCEEDED or OK: nothing is a mismatch or a hang.
    row = phases.class_summary("deadline", {"DEADLINE_EXCEEDED": 2, "OK": 1}, skipped=4)
    assert (row["sent"], row["mismatches"], row["hangs"], row["skipped"]) == (3, 0, 0, 4)


def test_tally_stops_a_class_after_three_unexpected_timeouts() -> None:
    tally = phases.Tally()
    for _ in range(2):
        tally.record("rest_tls_hello", "TIMEOUT")
        tally.record("deadline", "DEADLINE_EXCEEDED")
    assert not tally.hung("rest_tls_hello")
    tally.record("rest_tls_hello", "TIMEOUT")
    tally.record("deadline", "DEADLINE_EXCEEDED")
    assert tally.hung("rest_tls_hello")
    assert not tally.hung("deadline")  # expected there
    with pytest.raises(ValueError, match="unknown request class 'nope'"):
        tally.record("nope", "OK")


def _answer(ids: list[list[str]], scores: list[list[float]]) -> dict[str, np.ndarray]:
    return {
        "item_ids": np.array([[i.encode() for i in row] for row in ids], dtype=object),
        "scores": np.array(scores, dtype=np.float32),
    }


def test_same_answer_allows_only_ties_to_differ() -> None:
    want = _answer([["a", "b", "c"]], [[3.0, 2.0, 2.0]])
    k = np.array([3])
    assert requests.same_answer(_answer([["a", "c", "b"]], [[3.0, 2.0, 2.0]]), want, k)  # b = c
    assert not requests.same_answer(_answer([["b", "a", "c"]], [[3.0, 2.0, 2.0]]), want, k)
    # d ties with the last kept score 2.0 -> a different cut, same answer.
    assert requests.same_answer(_answer([["a", "b", "d"]], [[3.0, 2.0, 2.0]]), want, k)
    assert not requests.same_answer(_answer([["a", "b", "c"]], [[3.0, 2.0, 1.9]]), want, k)
    # A batched answer may have more columns: only the first k = 2 count.
    assert requests.same_answer(_answer([["a", "b", "z"]], [[3.0, 2.0, 9.0]]), want, np.array([2]))
    assert not requests.same_answer(_answer([["a", "b"]], [[3.0, 2.0]]), want, k)  # too few


def test_with_budget_sizes_the_mix() -> None:
    s = hostile.Settings()
    # Outside the mix, per mode: 64 x 8 concurrent + 48 stalled + 4 probes + 4 large
    # + 3 x 3 huge shapes + 1 too large = 578; with batching + 32 x 8 small = 834.
    assert (hostile.fixed_requests(s, False), hostile.fixed_requests(s, True)) == (578, 834)
    # (6000 - 578 - 834) / 2 = 2294 per mode.
    assert hostile.with_budget(s, 6000).mixed_requests == 2294
    # A budget below the fixed part still sends every mixed class once per mode.
    assert hostile.with_budget(s, 10).mixed_requests == len(phases.MIXED_CLASSES)


def test_chunked_request_framing() -> None:
    raw = rest.http("/v1/models/m:predict", chunks=[b"ab", b"cde"])
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    assert b"Content-Length: -1\r\n" in rest.http("/x", b"{}", length="-1")


@pytest.fixture
def one_shot_server() -> Iterator[Callable[[str], int]]:
    """A loopback socket that accepts one connection and behaves as asked."""
    socks = []

    def start(behaviour: str) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        socks.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            socks.append(conn)
            conn.recv(65536)
            if behaviour == "answer":
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n{}")
            if behaviour in ("answer", "close"):
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    yield start
    for sock in socks:
        sock.close()


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("answer", ("HTTP_400", b"{}")), ("close", ("CLOSED", b"")), ("silent", ("TIMEOUT", b""))],
)
def test_exchange_classifies_what_the_server_did(one_shot_server, behaviour, expected) -> None:
    port = one_shot_server(behaviour)
    assert rest.exchange(port, rest.http("/x", b"{}"), timeout=0.5) == expected


def _mode(classes: dict[str, dict[str, int]], growth: float) -> dict:
    return {
        "classes": {c: phases.class_summary(c, counts) for c, counts in classes.items()},
        "requests": sum(sum(counts.values()) for counts in classes.values()),
        "rss_mb": {"hwm_growth": growth, "guard_tripped": False},
        "server": {"exit_code": 0},
        "alive_at_end": True,
        "answers_identical": True,
        "rest_answer_matches": True,
        "references": [{"answer": [[1.0]]}],
    }


def test_acceptance_names_the_failing_classes_and_bounds() -> None:
    results = {
        "modes": {
            "off": _mode({"valid": {"OK": 2, "INVALID_ARGUMENT": 1}}, growth=10.0),
            "on": _mode({"rest_idle": {"CLOSED": 1, "HELD": 1}}, growth=600.0),
        }
    }
    settings = hostile.Settings(min_requests=5)
    checks = report.acceptance(results, settings)["checks"]
    assert checks["requests"]["value"] == 5 and checks["requests"]["ok"]  # 3 + 2 sent
    assert checks["status_table"]["value"] == 2  # INVALID_ARGUMENT (off) + HELD (on)
    assert "rest_idle (on)" in checks["status_table"]["target"]
    assert "valid (off)" in checks["status_table"]["target"]
    assert checks["connections_closed"]["value"] == 1 and not checks["connections_closed"]["ok"]
    assert not checks["rss_bounded"]["ok"]  # 600 MiB > 512 MiB
    assert checks["no_crash"]["ok"] and checks["answers_unchanged"]["ok"]


def test_every_class_has_a_builder_or_a_phase() -> None:
    phase_classes = {
        "oversized_shape",
        "message_too_large",
        "concurrent_valid",
        "large_request",
        "oversized_batch",
        "small_during_oversized_batch",
        "rest_idle",
        "rest_stalled_headers",
        "rest_stalled_body",
        "rest_valid_during_stall",
    }
    assert set(table.ALL_EXPECTED) == set(phases.MIXED_CLASSES) | phase_classes


@pytest.mark.slow
def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert hostile.main(["--quick", "--output", str(out)]) == 0
    report_json = json.loads((out / "hostile_quick.json").read_text(encoding="utf-8"))
    markdown = (out / "hostile_quick.md").read_text(encoding="utf-8")
    results = report_json["results"]
    assert report_json["name"] == "hostile_quick" and results["quick"] is True
    assert report_json["command"].startswith("python")
    assert set(results["expected"]) == set(table.ALL_EXPECTED)
    for label in ("off", "on"):
        mode = results["modes"][label]
        classes = mode["classes"]
        # every mixed class is sent (or skipped after hangs) in both modes
        assert all(classes[c]["sent"] + classes[c]["skipped"] >= 1 for c in phases.MIXED_CLASSES)
        for cls, row in classes.items():
            assert row["sent"] == sum(row["outcomes"].values())
            expected = set(table.ALL_EXPECTED[cls].outcomes)
            bad = sum(n for o, n in row["outcomes"].items() if o not in expected)
            assert row["mismatches"] == bad
        assert mode["requests"] == sum(row["sent"] for row in classes.values())
        assert mode["server"]["exit_code"] == 0  # SIGTERM: a clean shutdown
        assert mode["alive_at_end"] is True
        assert mode["rss_mb"]["baseline_rss"] > 0 and mode["rss_mb"]["end_hwm"] > 0
        assert set(mode["phase_seconds"]) == {"mixed", "concurrent", "stall", "large", "oversized"}
    assert "large_request" in results["modes"]["off"]["classes"]
    assert "oversized_batch" in results["modes"]["on"]["classes"]
    assert set(results["acceptance"]["checks"]) == {
        "requests",
        "status_table",
        "no_crash",
        "no_hang",
        "connections_closed",
        "rss_bounded",
        "answers_unchanged",
        "same_answers_off_on",
    }
    assert "QUICK smoke run" in markdown and "## Acceptance:" in markdown
    assert "## Expected status table" in markdown
