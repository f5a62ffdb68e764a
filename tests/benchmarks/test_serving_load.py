"""benchmarks/serving_load.py: the --quick smoke run and the pure report arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import import_benchmark

serving_load = import_benchmark("serving_load")
load_clients = import_benchmark("_load_clients")


def _cell(latencies: list[float], window: float, server_cpu: float) -> dict:
    return {
        "latencies": latencies,
        "errors": [],
        "window_s": window,
        "client_cpu_s": 0.0,
        "server_cpu_s": server_cpu,
        "client_processes": 1,
    }


def test_summarize_pools_rounds() -> None:
    # Round 1: 3 requests in 1 s; round 2: 1 request in 1 s -> 4 / 2 s = 2 req/s pooled.
    # Latencies 1, 2, 3, 4 ms -> p50 = 2.5 ms. Server CPU 0.004 s / 4 requests = 1 ms.
    row = load_clients.summarize(
        8, [_cell([0.001, 0.002, 0.003], 1.0, 0.003), _cell([0.004], 1.0, 0.001)]
    )
    assert row["requests_per_s"] == 2.0
    assert row["requests_per_s_by_round"] == [3.0, 1.0]
    assert row["p50_ms"] == 2.5
    assert row["server_cpu_ms_per_request"] == 1.0
    assert (row["rounds"], row["requests"], row["errors"]) == (2, 4, 0)


def test_acceptance_uses_the_highest_concurrency() -> None:
    off = [
        {
            "concurrency": 1,
            "requests_per_s": 100.0,
            "requests_per_s_by_round": [100.0],
            "errors": 0,
        },
        {
            "concurrency": 32,
            "requests_per_s": 200.0,
            "requests_per_s_by_round": [200.0],
            "errors": 0,
        },
    ]
    on = [
        {"concurrency": 1, "requests_per_s": 90.0, "requests_per_s_by_round": [90.0], "errors": 0},
        {
            "concurrency": 32,
            "requests_per_s": 290.0,
            "requests_per_s_by_round": [290.0],
            "errors": 0,
        },
    ]
    verdict = serving_load.acceptance({"overhead_ratio_p50": 1.25}, off, on)
    # 290 / 200 = 1.45 < 2 -> fail although the overhead ratio 1.25 <= 1.3 passes.
    assert verdict["checks"]["batching_speedup_c32"]["value"] == 1.45
    assert not verdict["checks"]["batching_speedup_c32"]["ok"]
    assert verdict["checks"]["overhead_ratio_c1"]["ok"]
    assert verdict["passed"] is False


@pytest.mark.slow
def test_quick_run_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert serving_load.main(["--quick", "--output", str(out)]) == 0
    report = json.loads((out / "serving_load.json").read_text(encoding="utf-8"))
    markdown = (out / "serving_load.md").read_text(encoding="utf-8")
    results = report["results"]
    assert results["quick"] is True
    assert report["command"].startswith("python")
    assert len(results["load_start"]) == 3 and len(results["load_end"]) == 3
    concurrencies = list(serving_load.QUICK.concurrencies)
    for label in ("off", "on"):
        rows = results["load"][label]
        assert [r["concurrency"] for r in rows] == concurrencies
        for row in rows:
            assert row["errors"] == 0 and row["requests"] > 0 and row["requests_per_s"] > 0
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        server = results["servers"][label]
        assert server["server_exit_code"] == 0  # stopped by SIGTERM, shut down cleanly
        assert 0 < server["start_to_available_s"] < server["start_to_first_answer_s"]
    overhead = results["overhead"]
    ratio = overhead["grpc_client"]["p50_ms"] / overhead["in_process"]["p50_ms"]
    assert overhead["overhead_ratio_p50"] == pytest.approx(ratio, abs=1e-3)
    top = max(concurrencies)
    assert set(results["acceptance"]["checks"]) == {
        "overhead_ratio_c1",
        f"batching_speedup_c{top}",
        "errors",
    }
    assert results["model"]["saved_model_load_s"] > 0
    assert "QUICK smoke run" in markdown and "## Acceptance:" in markdown
