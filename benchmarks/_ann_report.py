"""Acceptance summary and markdown of ``benchmarks/ann.py`` (pure functions of the results dict).

:func:`summarize` gives the issue's acceptance numbers at recall@10 >=
:data:`TARGET_RECALL`; :func:`render` the report body.
"""

from __future__ import annotations

from typing import Any

from benchmarks import _report

TARGET_RECALL = 0.95


def _first_reaching(rows: list[dict], target: float) -> dict | None:
    """The first (cheapest) row whose recall@10 reaches ``target``."""
    return next((row for row in rows if row.get("recall_at_10", 0.0) >= target), None)


def p50_at_recall(rows: list[dict], target: float) -> float | None:
    """p50 ms at recall@10 = ``target``, interpolated linearly between the sweep points around it.

    The first row reaching ``target`` gives the value when it is the first row;
    None when no row reaches it.
    """
    for i, row in enumerate(rows):
        if row.get("recall_at_10", 0.0) >= target:
            if i == 0 or row["recall_at_10"] == rows[i - 1]["recall_at_10"]:
                return row["p50_ms"]
            before = rows[i - 1]
            share = (target - before["recall_at_10"]) / (
                row["recall_at_10"] - before["recall_at_10"]
            )
            return round(before["p50_ms"] + share * (row["p50_ms"] - before["p50_ms"]), 4)
    return None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance numbers at recall@10 >= 0.95 (None where not measured).

    ``ivf_nprobe`` is the first swept ``nprobe`` reaching the target; the speed-ups
    over brute force use its measured p50 (in-process and through the server).
    ``p50_at_target_ms`` interpolates every curve at exactly the target recall,
    and ``ratio_to_faiss_ivf`` compares the IVF export with Faiss IVF-Flat there
    (``_session``: the export run by the Session runtime, as TF Serving runs it).
    """
    ivf = results["ivf"]
    anchors = results.get("faiss") or {}
    curves = {
        "ivf_in_process": ivf["in_process"],
        "ivf_in_process_session": ivf.get("in_process_session") or [],
        "ivf_server": ivf.get("server") or [],
        "faiss_ivf_flat": (anchors.get("ivf_flat") or {}).get("rows", []),
        "faiss_hnsw": (anchors.get("hnsw") or {}).get("rows", []),
    }
    at = {name: p50_at_recall(rows, TARGET_RECALL) for name, rows in curves.items()}
    out: dict[str, Any] = {"target_recall_at_10": TARGET_RECALL, "p50_at_target_ms": at}
    best = _first_reaching(ivf["in_process"], TARGET_RECALL)
    out["ivf_nprobe"] = None if best is None else best["nprobe"]
    if best is None:
        return out
    out["ivf_recall_at_10"] = best["recall_at_10"]
    out["speedup_in_process"] = round(results["brute"]["in_process"]["p50_ms"] / best["p50_ms"], 2)
    server = {row["nprobe"]: row for row in curves["ivf_server"]}
    if best["nprobe"] in server and results["brute"].get("server"):
        ratio = results["brute"]["server"]["p50_ms"] / server[best["nprobe"]]["p50_ms"]
        out["speedup_server"] = round(ratio, 2)
    for curve, key in (
        ("ivf_in_process", "ratio_to_faiss_ivf"),
        ("ivf_in_process_session", "ratio_to_faiss_ivf_session"),
    ):
        if at[curve] and at["faiss_ivf_flat"]:
            out[key] = round(at[curve] / at["faiss_ivf_flat"], 2)
    return out


def _table(rows: list[dict], setting: str) -> str:
    headers = [setting, "recall@10", "p50 ms", "p99 ms"]
    cells = [[r[setting], r.get("recall_at_10", "-"), r["p50_ms"], r["p99_ms"]] for r in rows]
    return _report.markdown_table(headers, cells)


def _export_cells(name: str, info: dict[str, Any]) -> list[Any]:
    size = info["size_bytes"] / 1e6
    return [name, info["export_s"], size, info["load_s"], info.get("server_available_s", "-")]


def render(results: dict[str, Any], k: int) -> str:
    """The markdown body: exports, sweeps, Faiss anchors, acceptance (``k``: the top-k asked)."""
    s, ex = results["settings"], results["exports"]
    lines = [
        f"Synthetic table: {s['items']:,} items, d = {s['dim']}, {s['clusters']} Gaussian "
        f"clusters (spread {s['spread']}, log-normal norm factor sigma {s['norm_sigma']}); "
        f"{s['queries']} queries from the same mixture; batch 1, k = {k}, no history.\n",
        "## Exports\n",
        _report.markdown_table(
            ["export", "export s", "size MB", "load s (in-process)", "server AVAILABLE s"],
            [_export_cells(name, ex[name]) for name in ("brute", "ivf")],
        ),
        f"\nIVF index: `{ex['ivf']['index']}`\n",
        "## Brute force (batch 1 unless named; per request)\n",
        _report.markdown_table(
            ["where", "p50 ms", "p99 ms"],
            [[w, r["p50_ms"], r["p99_ms"]] for w, r in results["brute"].items() if r],
        ),
        "\n## IVF export, in-process (recall against the brute-force export)\n",
        "TF2 `signatures[...]` calls on tensors:\n",
        _table(results["ivf"]["in_process"], "nprobe"),
    ]
    if results["ivf"].get("in_process_session"):
        lines += [
            "\nThe same SavedModel run as TF Serving runs it (`tfrec.serving.servable."
            "Servable`: a TF1 Session callable, ops in the calling thread, numpy in and "
            "out):\n",
            _table(results["ivf"]["in_process_session"], "nprobe"),
        ]
    if results["ivf"].get("server"):
        lines += [
            "\n## IVF export, local server (gRPC)\n",
            _table(results["ivf"]["server"], "nprobe"),
        ]
    anchors = results.get("faiss") or {}
    for key, title, setting in (
        ("ivf_flat", "Faiss IVF-Flat", "nprobe"),
        ("hnsw", "Faiss HNSW", "ef_search"),
    ):
        if anchors.get(key):
            a = anchors[key]
            lines += [
                f"\n## {title} (in-process; build {a['build_s']} s, size "
                f"{a['size_bytes'] / 1e6:.1f} MB, load {a['load_s']} s)\n",
                _table(a["rows"], setting),
            ]
    lines += ["\n## At recall@10 >= 0.95\n", f"`{results['summary']}`\n"]
    lines += [f"\n![recall vs latency]({results['plot']})\n"]
    return "\n".join(lines)
