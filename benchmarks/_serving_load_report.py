"""Verdict and markdown of ``benchmarks/serving_load.py`` (pure functions of the results dict).

:func:`acceptance` checks the serving-scale issue's targets (overhead ratio at
concurrency 1, batching speed-up at the highest concurrency, no errors);
:func:`render` writes the report body with its :func:`notes`.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks import _report

OVERHEAD_TARGET = 1.3
SPEEDUP_TARGET = 2.0


def acceptance(overhead: dict, off: list[dict], on: list[dict]) -> dict[str, Any]:
    """The issue's two checks (plus: no errors); the speed-up pools all rounds."""
    top = max(row["concurrency"] for row in off)
    row_off = next(r for r in off if r["concurrency"] == top)
    row_on = next(r for r in on if r["concurrency"] == top)
    speedup = round(row_on["requests_per_s"] / row_off["requests_per_s"], 3)
    by_round = [
        round(b / a, 3)
        for a, b in zip(
            row_off["requests_per_s_by_round"], row_on["requests_per_s_by_round"], strict=True
        )
    ]
    errors = sum(r["errors"] for r in off + on)
    checks = {
        "overhead_ratio_c1": {
            "value": overhead["overhead_ratio_p50"],
            "target": f"<= {OVERHEAD_TARGET}",
            "ok": overhead["overhead_ratio_p50"] <= OVERHEAD_TARGET,
        },
        f"batching_speedup_c{top}": {
            "value": speedup,
            "by_round": by_round,
            "target": f">= {SPEEDUP_TARGET}",
            "ok": speedup >= SPEEDUP_TARGET,
        },
        "errors": {"value": errors, "target": "0", "ok": errors == 0},
    }
    return {"checks": checks, "passed": all(c["ok"] for c in checks.values())}


LOAD_COLUMNS = {
    "concurrency": "concurrency",
    "client_processes": "client procs",
    "requests": "requests",
    "errors": "errors",
    "requests_per_s": "req/s",
    "requests_per_s_by_round": "req/s by round",
    "p50_ms": "p50 ms",
    "p95_ms": "p95 ms",
    "p99_ms": "p99 ms",
    "server_cpu_ms_per_request": "server CPU ms/req",
    "client_cpu_ms_per_request": "client CPU ms/req",
}


def render(results: dict[str, Any], num_warmup: int) -> str:
    """The report body (``num_warmup``: warmup requests in the export)."""
    rows = [
        [label, *(row[key] for key in LOAD_COLUMNS)]
        for label in ("off", "on")
        for row in results["load"][label]
    ]
    load = _report.markdown_table(["batching", *LOAD_COLUMNS.values()], rows)
    o = results["overhead"]
    overhead = _report.markdown_table(
        ["path (batch 1, interleaved)", "requests", "p50 ms", "p95 ms", "p99 ms"],
        [
            ["in-process signature call", o["requests"], *_p(o["in_process"])],
            ["in-process server model call", o["requests"], *_p(o["in_process_server_call"])],
            ["gRPC RecommenderClient.predict", o["requests"], *_p(o["grpc_client"])],
        ],
    )
    startup = _report.markdown_table(
        ["batching", "start -> AVAILABLE s", "start -> first answer s", "first answer latency s"],
        [
            [
                label,
                *(f[key] for key in ("start_to_available_s", "start_to_first_answer_s")),
                f["first_answer_latency_s"],
            ]
            for label, f in results["servers"].items()
        ],
    )
    checks = _report.markdown_table(
        ["check", "measured", "target", "ok"],
        [[k, v["value"], v["target"], v["ok"]] for k, v in results["acceptance"]["checks"].items()],
    )
    m, s = results["model"], results["settings"]
    quick = ""
    if results["quick"]:
        quick = "**QUICK smoke run: tiny model, not the acceptance shape.**\n\n"
    return (
        f"{quick}Model: {m['num_items']:,} items, transformer, dim {m['embedding_dim']}, "
        f"{m['num_layers']} layers, max_history {m['max_history']}, k={m['k']}; in-process "
        f"`tf.saved_model.load` {m['saved_model_load_s']} s. Batching parameters (on): "
        f"`{json.dumps(results['batching_parameters'])}`. Load average start "
        f"{results['load_start']}, end {results['load_end']}.\n\n"
        f"## Closed-loop load\n\nEach cell: {s['rounds']} rounds x {s['duration_s']} s, "
        "off/on alternating, pooled; clients are processes of "
        f"{s['threads_per_process']} threads sending pre-serialized requests.\n\n{load}\n"
        f"## Serving overhead (concurrency 1)\n\n{overhead}\n"
        f"## Startup\n\n{startup}\n## Acceptance: "
        f"{'PASS' if results['acceptance']['passed'] else 'FAIL'}\n\n{checks}\n"
        f"{notes(results, num_warmup)}"
    )


def notes(results: dict[str, Any], num_warmup: int) -> str:
    """How to read the numbers (computed from this run; ``num_warmup`` as for :func:`render`)."""
    off, on = results["load"]["off"][-1], results["load"]["on"][-1]
    client = max(r["client_cpu_ms_per_request"] for rows in results["load"].values() for r in rows)
    cpu_ratio = off["server_cpu_ms_per_request"] / max(on["server_cpu_ms_per_request"], 1e-9)
    return (
        "## Notes\n\n"
        f"- Server CPU per request is the load-independent view: at concurrency "
        f"{off['concurrency']} batching cuts it from {off['server_cpu_ms_per_request']} to "
        f"{on['server_cpu_ms_per_request']} ms ({cpu_ratio:.2f}x). Requests/s also depend on "
        "the CPU share the server gets on a shared machine (load average above); the "
        "speed-up's per-round values are in the JSON (`acceptance.checks`).\n"
        f"- Clients cost at most {client} ms CPU per request (pre-serialized bytes, responses "
        "not parsed), a fraction of the server's, so they do not dominate the 2 cores.\n"
        "- Overhead ratio: in-process = numpy inputs -> `tf.constant` -> "
        '`signatures["serving_default"]` -> `.numpy()`; gRPC = `RecommenderClient.predict` '
        "with the same numpy inputs (request proto, loopback RPC, server, response decode); "
        "one of each per request, interleaved. The server's own model call (`Servable.run`: "
        "a TF1 Session callable run in the calling thread, see docs/serving_performance.md) is "
        "timed in-process too: gRPC p50 / its p50 = "
        f"{results['overhead']['overhead_ratio_vs_server_call_p50']} is the overhead of "
        "serving alone.\n"
        "- Start -> AVAILABLE includes process start, the Python/TensorFlow import, the "
        f"SavedModel load and replaying {num_warmup} warmup requests; the first answer comes "
        "after that.\n"
    )


def _p(stats: dict[str, Any]) -> list[Any]:
    return [stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]]
