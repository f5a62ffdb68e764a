"""Hostile inputs against ``tfrec serve`` (subprocesses on 127.0.0.1), batching off and on.

The fast part: every request class of ``benchmarks/hostile.py`` a few times (about
450 requests in all, ~20 s with the two server starts) against the expected status table
(``benchmarks/_hostile_table.py``), huge declared shapes with the server's RSS
watched, cancelled and disconnected clients, concurrent clients, an oversized
batch. The slow test runs the whole campaign on a small budget; the full
5,000+ request run is ``python -m benchmarks.hostile``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from testing_utils import import_benchmark

hostile = import_benchmark("hostile")
phases = import_benchmark("_hostile_phases")
requests = import_benchmark("_hostile_requests")
rest = import_benchmark("_hostile_rest")
table = import_benchmark("_hostile_table")

SETTINGS = dataclasses.replace(hostile.QUICK, oversized_per_variant=1)
MODES = ("off", "on")
PER_CLASS = 3  # requests per class and mode
CLIENT_TIMEOUT_S = 5.0  # the fast tests' bound on one request


@dataclasses.dataclass
class Served:
    server: object
    ctx: object


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """One export; two servers (batching off / on) started side by side; reference answers."""
    work = tmp_path_factory.mktemp("hostile")
    ids = hostile.build_export(work / "export", SETTINGS)
    servers = {}
    try:
        for label in MODES:
            (work / label).mkdir()
            servers[label] = hostile.launch_server(
                work / "export", work / label, label == "on", SETTINGS
            )
        out = {}
        for label, server in servers.items():
            hostile.wait_ready(server, SETTINGS)
            ctx = requests.Context(
                server.target, server.rest_port, hostile.MODEL_NAME, *ids, SETTINGS.max_history
            )
            phases.take_references(ctx, SETTINGS.references)
            out[label] = Served(server, ctx)
        yield out
    finally:
        for server in servers.values():
            server.stop()


def _still_serving(item: Served) -> None:
    assert item.server.proc.poll() is None, item.server.tail()
    assert phases.answers_identical(item.ctx)
    assert phases.rest_matches(item.ctx)


@pytest.mark.parametrize("cls", phases.MIXED_CLASSES)
@pytest.mark.parametrize("mode", MODES)
def test_each_request_class_gets_its_expected_outcome(
    served: dict[str, Served], mode: str, cls: str
) -> None:
    ctx = served[mode].ctx
    builder = requests.GRPC_BUILDERS.get(cls) or rest.REST_BUILDERS[cls]
    outcomes = []
    for seed in range(PER_CLASS):
        case = builder(np.random.default_rng(seed), ctx)
        case.timeout = min(case.timeout, CLIENT_TIMEOUT_S)
        outcomes.append(phases.send(ctx, case))
    expected = table.ALL_EXPECTED[cls].outcomes
    assert set(outcomes) <= expected, f"{cls} ({mode}): got {outcomes}, expected {sorted(expected)}"


@pytest.mark.parametrize("mode", MODES)
def test_huge_declared_shapes_are_rejected_without_an_rss_jump(
    served: dict[str, Served], mode: str
) -> None:
    item = served[mode]
    tally = phases.Tally()
    monitor = phases.RssMonitor(item.server.proc.pid, SETTINGS.rss_guard_mb, item.server.proc.kill)
    monitor.start()
    try:
        stats = phases.run_oversized(item.ctx, tally, monitor, SETTINGS, deadline=float("inf"))
    finally:
        monitor.stop()
    # 3 variants x 1 request, each ~100 bytes declaring 2^26..2^40 elements.
    assert tally.summary()["oversized_shape"]["sent"] == 3
    for label, rows in stats.items():
        for row in rows:
            assert row["outcome"] in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, (label, row)
            assert row["rss_jump_mb"] <= SETTINGS.rss_jump_bound_mb, (label, row)
            assert row["seconds"] < 2.0, (label, row)  # rejected up front, not computed
    _still_serving(item)


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_and_vanishing_clients_leave_the_server_serving(
    served: dict[str, Served], mode: str
) -> None:
    item = served[mode]
    tally = phases.Tally()
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        for cls in ("cancelled", "deadline", "disconnect"):
            tally.record(cls, phases.send(item.ctx, requests.GRPC_BUILDERS[cls](rng, item.ctx)))
        tally.record(
            "rest_disconnect",
            phases.send(item.ctx, rest.REST_BUILDERS["rest_disconnect"](rng, item.ctx)),
        )
    summary = tally.summary()
    assert sum(row["sent"] for row in summary.values()) == 32
    assert all(row["mismatches"] == 0 for row in summary.values()), summary
    _still_serving(item)


@pytest.mark.parametrize("mode", MODES)
def test_concurrent_clients_get_the_sequential_answers(
    served: dict[str, Served], mode: str
) -> None:
    item = served[mode]
    tally = phases.Tally()
    phases.run_concurrent(
        item.ctx, tally, clients=16, per_client=2, timeout=CLIENT_TIMEOUT_S, deadline=float("inf")
    )
    row = tally.summary()["concurrent_valid"]
    assert (row["sent"], row["outcomes"]) == (32, {"OK": 32})
    _still_serving(item)


@pytest.mark.parametrize("mode", MODES)
def test_a_request_above_max_batch_size(served: dict[str, Served], mode: str) -> None:
    """Batching off: 100 rows are answered. On (max_batch_size 32): rejected, while the
    one-row requests sent around it all succeed (issue 9 defect 3)."""
    item = served[mode]
    tally = phases.Tally()
    settings = dataclasses.replace(SETTINGS, large_rounds=2, small_threads=8, small_per_thread=3)
    phases.run_large(item.ctx, tally, settings, mode == "on", deadline=float("inf"))
    summary = tally.summary()
    if mode == "off":
        assert summary["large_request"]["outcomes"] == {"OK": 2}
    else:
        assert summary["oversized_batch"]["outcomes"] == {"INVALID_ARGUMENT": 2}
        small = summary["small_during_oversized_batch"]
        assert small["sent"] >= 8 and small["mismatches"] == 0, small
    _still_serving(item)


@pytest.mark.slow
def test_campaign_on_a_small_budget(tmp_path: Path) -> None:
    """Both modes through every phase (~600 requests). Stalled connections wait for the
    server's header / body timeouts, here 2 s / 3 s (defaults 10 s / 30 s), so every one
    must be closed within the 6 s limit."""
    timeouts = ("--rest_api_header_timeout_seconds", "2", "--rest_api_body_timeout_seconds", "3")
    settings = dataclasses.replace(
        hostile.QUICK, stall_connections=6, stall_limit_s=6.0, server_args=timeouts
    )
    results = hostile.run_campaign(tmp_path, hostile.with_budget(settings, 600))
    total = sum(mode["requests"] for mode in results["modes"].values())
    assert total >= 500
    failed = {k: v for k, v in results["acceptance"]["checks"].items() if not v["ok"]}
    assert not failed, failed
