"""Verdict and markdown of ``benchmarks/hostile.py`` (pure functions of the results dict)."""

from __future__ import annotations

from typing import Any

from benchmarks import _report


def _classes(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (label, cls, row)
        for label, mode in results["modes"].items()
        for cls, row in mode["classes"].items()
    ]


def _check(value: Any, target: str, ok: bool) -> dict[str, Any]:
    return {"value": value, "target": target, "ok": bool(ok)}


def acceptance(results: dict[str, Any], s: Any) -> dict[str, Any]:
    """The issue's checks over both modes; each is ``{"value", "target", "ok"}``."""
    modes = results["modes"]
    rows = _classes(results)
    total = sum(m["requests"] for m in modes.values())
    mismatching = sorted({f"{cls} ({label})" for label, cls, r in rows if r["mismatches"]})
    held = sum(r["outcomes"].get("HELD", 0) for _, _, r in rows)
    growth = max(m["rss_mb"]["hwm_growth"] for m in modes.values())
    jumps = sum(n for _, _, r in rows for o, n in r["outcomes"].items() if "RSS_JUMP" in o)
    tripped = any(m["rss_mb"]["guard_tripped"] for m in modes.values())
    exit_codes = {label: m["server"].get("exit_code") for label, m in modes.items()}
    references = [m["references"] for m in modes.values()]
    checks = {
        "requests": _check(total, f">= {s.min_requests}", total >= s.min_requests),
        "status_table": _check(
            sum(r["mismatches"] for _, _, r in rows),
            "0 mismatches (classes: " + (", ".join(mismatching) or "none") + ")",
            not mismatching,
        ),
        "no_crash": _check(
            {"alive_at_end": {k: m["alive_at_end"] for k, m in modes.items()}, "exit": exit_codes},
            "alive at the end, exit 0 on SIGTERM",
            all(m["alive_at_end"] for m in modes.values())
            and all(c == 0 for c in exit_codes.values()),
        ),
        "no_hang": _check(
            sum(r["hangs"] for _, _, r in rows),
            "0 unexpected timeouts",
            not any(r["hangs"] for _, _, r in rows),
        ),
        "connections_closed": _check(
            held, f"0 stalled connections open after {s.stall_limit_s} s", held == 0
        ),
        "rss_bounded": _check(
            {"max_hwm_growth_mb": growth, "oversized_rss_jumps": jumps, "guard_tripped": tripped},
            f"growth <= {s.rss_growth_bound_mb} MiB, jumps > {s.rss_jump_bound_mb} MiB: 0",
            growth <= s.rss_growth_bound_mb and jumps == 0 and not tripped,
        ),
        "answers_unchanged": _check(
            {k: m["answers_identical"] and m["rest_answer_matches"] for k, m in modes.items()},
            "reference requests answered identically at the end (gRPC; REST = gRPC)",
            all(m["answers_identical"] and m["rest_answer_matches"] for m in modes.values()),
        ),
        "same_answers_off_on": _check(
            references[0] == references[-1],
            "batching off and on: same references",
            references[0] == references[-1],
        ),
    }
    return {"checks": checks, "passed": all(c["ok"] for c in checks.values())}


def _outcomes(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    text = ", ".join(f"{o} {n}" for o, n in row["outcomes"].items())
    return text + (f", skipped {row['skipped']}" if row["skipped"] else "")


def class_table(results: dict[str, Any]) -> str:
    """One row per class: expected outcomes, then sent / mismatches / outcomes per mode."""
    modes = results["modes"]
    rows = []
    for cls, expect in results["expected"].items():
        cells = [modes[label]["classes"].get(cls) for label in ("off", "on")]
        if not any(cells):
            continue
        row = [cls, expect["api"], " ".join(expect["outcomes"])]
        for cell in cells:
            row += (
                ["-", "-", "-"]
                if cell is None
                else [cell["sent"], cell["mismatches"], _outcomes(cell)]
            )
        rows.append(row)
    headers = ["class", "API", "expected"]
    headers += [
        f"{label} {h}" for label in ("off", "on") for h in ("sent", "mismatches", "outcomes")
    ]
    return _report.markdown_table(headers, rows)


def expected_table(results: dict[str, Any]) -> str:
    """The documented status table: class, API, request, expected outcomes, reference."""
    rows = [
        [cls, e["api"], e["request"], " or ".join(e["outcomes"]), e["source"]]
        for cls, e in results["expected"].items()
    ]
    return _report.markdown_table(["class", "API", "request", "expected", "reference"], rows)


def _server_tables(results: dict[str, Any]) -> str:
    modes = results["modes"]
    rss = _report.markdown_table(
        [
            "batching",
            "requests",
            "RSS after warm-up MiB",
            "VmHWM start",
            "VmHWM end",
            "growth",
            "sampled peak",
            "sockets start/end",
            "start -> AVAILABLE s",
            "phases s",
        ],
        [
            [
                label,
                m["requests"],
                m["rss_mb"]["baseline_rss"],
                m["rss_mb"]["baseline_hwm"],
                m["rss_mb"]["end_hwm"],
                m["rss_mb"]["hwm_growth"],
                m["rss_mb"]["sampled_peak"],
                f"{m['sockets']['baseline']}/{m['sockets']['end']}",
                m["server"].get("start_to_available_s"),
                m["phase_seconds"],
            ]
            for label, m in modes.items()
        ],
    )
    oversized = _report.markdown_table(
        ["batching", "request", "outcome / seconds / RSS jump MiB"],
        [
            [
                label,
                variant,
                "; ".join(f"{r['outcome']} {r['seconds']} s {r['rss_jump_mb']}" for r in rows),
            ]
            for label, m in modes.items()
            for variant, rows in (m.get("oversized") or {}).items()
        ],
    )
    stall = _report.markdown_table(
        ["batching", "limit s", "held at limit", "longest open s per class"],
        [
            [label, m["stall"]["limit_s"], m["stall"]["held_at_limit"], m["stall"]["max_open_s"]]
            for label, m in modes.items()
            if m.get("stall")
        ],
    )
    return (
        f"## Server\n\n{rss}\n## Oversized declared shapes\n\n{oversized}\n"
        f"## Stalled connections\n\n{stall}"
    )


def render(results: dict[str, Any]) -> str:
    """The markdown body of the report."""
    verdict = results["acceptance"]
    checks = _report.markdown_table(
        ["check", "measured", "target", "ok"],
        [[k, v["value"], v["target"], v["ok"]] for k, v in verdict["checks"].items()],
    )
    total = sum(m["requests"] for m in results["modes"].values())
    grpc = sum(
        r["sent"]
        for m in results["modes"].values()
        for c, r in m["classes"].items()
        if results["expected"][c]["api"] == "gRPC"
    )
    banner = {
        "quick": "**QUICK smoke run: a few requests per class, not the acceptance run.**\n\n",
        "small": "**SMALL run (`--budget`): every class and phase, not the 5,000 run.**\n\n",
    }.get(results.get("run", "full"), "")
    s = results["settings"]
    return (
        f"{banner}{total:,} requests ({grpc:,} gRPC, {total - grpc:,} REST) against `tfrec serve "
        f"--backend local` on 127.0.0.1, batching off then on; {s['num_items']} items, max_history "
        f"{s['max_history']}; wall {results['wall_s']} s.\n\n"
        f"## Acceptance: {'PASS' if verdict['passed'] else 'FAIL'}\n\n{checks}\n"
        f"## Outcomes per class\n\nA mismatch is an outcome outside the expected set.\n\n"
        f"{class_table(results)}\n{_server_tables(results)}\n"
        f"## Expected status table\n\n{expected_table(results)}\n{NOTES}"
    )


NOTES = """## Notes

- Outcomes: a gRPC status name; `OK_WRONG_ANSWER` / `HTTP_200_WRONG_ANSWER` when the answer
  differs from the sequential reference (ids may swap only between equal scores, scores within
  1e-4); `HTTP_<code>`; `CLOSED` / `RESET` (the server ended the connection without an
  answer); `TIMEOUT` (nothing within the client timeout); `SENT` (the client hung up on
  purpose); `HELD` (a stalled connection still open at the limit); `+RSS_JUMP` appended when
  one request raised the server's RSS by more than the jump bound.
- A class with 3 unexpected timeouts is not sent again in that mode (`skipped`), and a
  huge-shape variant stops at its first mismatch: an unfixed server can spend GiBs and
  seconds on one such request.
- RSS is the server process's `/proc/<pid>/status`: growth = VmHWM at the end minus
  max(VmRSS, VmHWM) after warm-up; sampled every 20 ms, the process is killed above the guard.
- `cancelled`, `deadline` and `disconnect` outcomes are what the client saw; the server's
  health after them is checked by the final identical answers.
"""
