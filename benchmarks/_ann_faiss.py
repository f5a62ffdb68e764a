"""The Faiss anchor curves of ``benchmarks/ann.py``: IVF-Flat and HNSW, in-process.

Faiss (``faiss-cpu``, the ``bench`` extra) indexes the same item vectors with
inner-product metric:

* IVF-Flat: a flat inner-product quantizer over the same number of partitions as
  the TF export, trained with spherical k-means (``cp.spherical``: unit-length
  centroids, the partitioning of :mod:`tfrec.export.ivf`) on 64 rows per
  partition and 10 iterations (the export's settings); swept over ``nprobe``.
* HNSW-Flat: ``M`` links per node, ``efConstruction`` 40 (Faiss' default); swept
  over ``efSearch``.

Recall@10 is against the brute-force export's answers; latency is one query per
``search`` call (batch 1). "Size" is the serialized index, "load" the time to
deserialize it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _latency_ms(search: Any, queries: np.ndarray, calls: int) -> dict[str, float]:
    """p50/p99 in ms of ``search(query[None])`` over the first ``calls`` queries."""
    for row in queries[: min(20, len(queries))]:  # warm caches and thread pools
        search(row[None])
    seconds = []
    for row in queries[:calls]:
        start = time.perf_counter()
        search(row[None])
        seconds.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` [Q, k] found in the same row of ``found``."""
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth, strict=True)]
    return float(np.sum(hits) / truth.size)


def _size_and_load(faiss: Any, index: Any) -> tuple[int, float]:
    blob = faiss.serialize_index(index)
    start = time.perf_counter()
    faiss.deserialize_index(blob)
    return int(blob.nbytes), time.perf_counter() - start


def faiss_curves(
    items: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    num_partitions: int,
    nprobes: Sequence[int],
    hnsw_m: int,
    ef_searches: Sequence[int],
    latency_calls: int,
    seed: int,
    hnsw: bool = True,
) -> dict[str, Any]:
    """Builds and sweeps Faiss IVF-Flat (and HNSW); rows of recall/latency per setting.

    Args:
        items: ``[I, D]`` float32 item vectors (row ``i`` is item ``i``).
        queries: ``[Q, D]`` float32 queries.
        truth: ``[Q, 10]`` brute-force top-10 item rows.
        num_partitions: IVF lists.
        nprobes: IVF ``nprobe`` values.
        hnsw_m: HNSW links per node.
        ef_searches: HNSW ``efSearch`` values.
        latency_calls: Batch-1 searches timed per setting.
        seed: k-means seed.
        hnsw: Also build HNSW (minutes at 10^6 items).

    Returns:
        ``{"ivf_flat": {...}, "hnsw": {...} | None}`` with build seconds, size,
        load seconds and ``rows`` (setting, recall, p50/p99 ms).
    """
    import faiss

    k = truth.shape[1]
    quantizer = faiss.IndexFlatIP(items.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, items.shape[1], num_partitions, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.spherical = True
    ivf.cp.niter = 10
    ivf.cp.seed = seed
    ivf.cp.max_points_per_centroid = 64
    start = time.perf_counter()
    ivf.train(items)
    ivf.add(items)
    out: dict[str, Any] = {"ivf_flat": {"build_s": round(time.perf_counter() - start, 2)}}
    size, load = _size_and_load(faiss, ivf)
    out["ivf_flat"].update(size_bytes=size, load_s=round(load, 4), rows=[])
    for nprobe in nprobes:
        ivf.nprobe = min(nprobe, num_partitions)
        found = ivf.search(queries, k)[1]
        row = {"nprobe": ivf.nprobe, "recall_at_10": round(recall_at_k(found, truth), 4)}
        row.update(_latency_ms(lambda q: ivf.search(q, k), queries, latency_calls))
        out["ivf_flat"]["rows"].append(row)
    out["hnsw"] = None
    if hnsw:
        graph = faiss.IndexHNSWFlat(items.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        graph.add(items)
        out["hnsw"] = {"build_s": round(time.perf_counter() - start, 2), "m": hnsw_m}
        size, load = _size_and_load(faiss, graph)
        out["hnsw"].update(size_bytes=size, load_s=round(load, 4), rows=[])
        for ef in ef_searches:
            graph.hnsw.efSearch = ef
            found = graph.search(queries, k)[1]
            row = {"ef_search": ef, "recall_at_10": round(recall_at_k(found, truth), 4)}
            row.update(_latency_ms(lambda q: graph.search(q, k), queries, latency_calls))
            out["hnsw"]["rows"].append(row)
    return out


def plot(results: dict[str, Any], path: Any) -> None:
    """Recall@10 (x) vs p50 latency at batch 1 (y, log) for every method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = [
        ("TF IVF export, in-process (TF2 call)", results["ivf"]["in_process"], "o-"),
        ("TF IVF export, in-process (Session)", results["ivf"].get("in_process_session"), "d-"),
        ("TF IVF export, local server (gRPC)", results["ivf"].get("server") or [], "s--"),
    ]
    anchors = results.get("faiss") or {}
    if anchors.get("ivf_flat"):
        curves.append(("Faiss IVF-Flat", anchors["ivf_flat"]["rows"], "^-"))
    if anchors.get("hnsw"):
        curves.append(("Faiss HNSW", anchors["hnsw"]["rows"], "v-"))
    for label, rows, style in curves:
        if rows:  # None or [] when not measured
            ax.plot(
                [r["recall_at_10"] for r in rows], [r["p50_ms"] for r in rows], style, label=label
            )
    for where, marker in (("in_process", "*"), ("server", "P")):
        brute = results["brute"].get(where)
        if brute:
            ax.plot([1.0], [brute["p50_ms"]], marker, markersize=12, label=f"brute force, {where}")
    ax.set_xlabel("recall@10 against brute force")
    ax.set_ylabel("p50 latency at batch 1 (ms, log)")
    ax.set_yscale("log")
    ax.set_title(f"{results['settings']['items']:,} items, d = {results['settings']['dim']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
