"""ANN benchmark: the IVF retrieval export (stock TF ops) vs the brute-force export vs Faiss.

Issue 12, item 2. A synthetic embedding table (default 10^6 items, d = 64: a
mixture of 1,000 Gaussians, ``item = center + spread * noise``, scaled by a
log-normal factor so norms differ as they do in trained two-tower tables) is
loaded into an ID-only :class:`~tfrec.models.retrieval.TwoTowerModel`: item
``i<n>`` has vector ``n``, user ``q<j>`` has query vector ``j`` (queries drawn from
the same mixture with another seed: validation-like, not tied to any test set).
The model is exported twice with :func:`~tfrec.export.retrieval.export_retrieval`:
``index="brute"`` and ``index="ivf"`` (default partitions, default ``nprobe``
tuned at export on item vectors).

Measured:

* recall@10 of the IVF export against the brute-force export, for an ``nprobe``
  sweep (``with_nprobe`` signature; no history, k = 10);
* p50/p99 latency at batch 1, in-process (``signatures[...]`` on tensors) and,
  unless ``--no-server``, through ``tfrec serve --backend local`` over gRPC with
  the TensorFlow-free ``tfrec_client`` (both models in one server);
* export time, size on disk and in-process load time of both exports (and the
  server's time to AVAILABLE);
* Faiss IVF-Flat and HNSW on the same vectors, in-process, as the anchor curve
  (:mod:`benchmarks._ann_faiss`; needs ``pip install .[bench]``).

Writes ``benchmarks/results/ann.json``, ``ann.md`` and ``ann.png`` (recall vs p50);
the acceptance summary and the markdown are :mod:`benchmarks._ann_report`.

Run from the repository root (on an otherwise idle machine for the latencies)::

    python -m benchmarks.ann                                   # 10^6 items
    python -m benchmarks.ann --items 20000 --output /tmp/bench # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tfrec  # noqa: F401  (light: sets the Keras-2 guard before any TensorFlow import)
from benchmarks import _report
from benchmarks._ann_faiss import faiss_curves, plot, recall_at_k
from benchmarks._ann_report import render, summarize

NAME = "ann"
log = logging.getLogger("benchmarks.ann")
K = 10
#: Users per request of the batched brute-force measurement through the server.
SERVER_BATCH = 32


@dataclasses.dataclass
class Settings:
    """Sizes and switches of one run."""

    items: int = 1_000_000
    dim: int = 64
    clusters: int = 1000
    spread: float = 1.0
    norm_sigma: float = 0.25
    queries: int = 1000
    latency_calls: int = 300
    nprobes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    partitions: int | None = None
    hnsw_m: int = 32
    ef_searches: tuple[int, ...] = (16, 32, 64, 128, 256)
    recall_batch: int = 16
    seed: int = 0
    faiss: bool = True
    hnsw: bool = True
    server: bool = True


def synthetic_embeddings(s: Settings) -> tuple[np.ndarray, np.ndarray]:
    """``[items, dim]`` item vectors and ``[queries, dim]`` query vectors (float32)."""
    centers = np.random.default_rng(s.seed).standard_normal((s.clusters, s.dim)).astype(np.float32)

    def draw(count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((count, s.dim), np.float32)
        for start in range(0, count, 100_000):  # bounded float64 temporaries
            size = min(100_000, count - start)
            member = rng.integers(s.clusters, size=size)
            noise = rng.standard_normal((size, s.dim)).astype(np.float32)
            scale = np.exp(s.norm_sigma * rng.standard_normal((size, 1))).astype(np.float32)
            out[start : start + size] = (centers[member] + s.spread * noise) * scale
        return out

    return draw(s.items, s.seed + 1), draw(s.queries, s.seed + 2)


def embedding_model(items: np.ndarray, queries: np.ndarray) -> tuple[Any, Any, Any]:
    """An ID-only TwoTowerModel holding the tables, with its user and item vocabularies."""
    import tensorflow as tf

    from tfrec.data.vocab import NUM_RESERVED, IdVocabulary
    from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel

    user_vocab = IdVocabulary([f"q{j}" for j in range(len(queries))], "user")
    item_vocab = IdVocabulary([f"i{n}" for n in range(len(items))], "item")
    config = RetrievalConfig(
        embedding_dim=items.shape[1], encoder="none", use_user_embedding=True,
        use_item_features=False,
    )  # fmt: skip
    model = TwoTowerModel(config, user_vocab.size, item_vocab.size)
    model.candidate_embeddings()  # builds the item tower
    model.query_tower.final_query(tf.constant([NUM_RESERVED]), None)  # builds the user table
    pad = np.zeros((NUM_RESERVED, items.shape[1]), np.float32)
    model.item_tower._ids.embeddings.assign(np.concatenate([pad, items]))
    model.query_tower._users.embeddings.assign(np.concatenate([pad, queries]))
    return model, user_vocab, item_vocab


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_both(model: Any, users: Any, items: Any, base: Path, s: Settings) -> dict[str, Any]:
    """Brute-force and IVF exports: paths, seconds, sizes and the IVF config entry."""
    import json

    from tfrec.export.retrieval import export_retrieval

    out: dict[str, Any] = {}
    for name, kwargs in (
        ("brute", {}),
        ("ivf", {"index": "ivf", "num_partitions": s.partitions}),
    ):
        with _report.Timer() as timer:
            path = export_retrieval(model, users, items, base, model_name=name, version=1, **kwargs)
        config = json.loads((path / "assets.extra" / "tfrec_config.json").read_text())
        out[name] = {
            "path": path,
            "export_s": round(timer.seconds, 2),
            "size_bytes": _dir_bytes(path),
            "index": config["index"],
        }
    return out


def _request(rows: Sequence[int], nprobe: int | None = None) -> dict[str, Any]:
    import tensorflow as tf

    inputs = {
        "user_id": tf.constant([f"q{j}" for j in rows]),
        "history": tf.zeros([len(rows), 0], tf.string),
        "k": tf.fill([len(rows)], K),
    }
    if nprobe is not None:
        inputs["nprobe"] = tf.fill([len(rows)], nprobe)
    return inputs


def _item_rows(ids: np.ndarray) -> np.ndarray:
    """``b"i123"`` -> 123 (-1 for an empty slot)."""
    return np.array([[int(x[1:]) if x else -1 for x in row] for row in ids], np.int64)


def _top_ids(signature: Any, s: Settings, nprobe: int | None = None) -> np.ndarray:
    found = []
    for start in range(0, s.queries, s.recall_batch):
        rows = range(start, min(s.queries, start + s.recall_batch))
        found.append(_item_rows(signature(**_request(rows, nprobe))["item_ids"].numpy()))
    return np.concatenate(found)


def _latency(call: Any, s: Settings) -> dict[str, float]:
    """p50/p99 ms of ``call(j)`` over queries ``0..latency_calls-1`` (after 20 warm-up calls)."""
    calls = min(s.latency_calls, s.queries)
    for j in range(min(20, calls)):
        call(j)
    seconds = []
    for j in range(calls):
        start = time.perf_counter()
        call(j)
        seconds.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.asarray(seconds) * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


def _sweep(exports: dict[str, Any], s: Settings) -> list[int]:
    """The nprobe values measured: the requested ones (clipped to P) and the export's default."""
    index = exports["ivf"]["index"]
    return sorted({min(n, index["num_partitions"]) for n in s.nprobes} | {index["nprobe"]})


def in_process(exports: dict[str, Any], s: Settings) -> tuple[dict, list[dict], np.ndarray]:
    """Loads both exports; brute-force latency, IVF recall/latency rows, the true top-10."""
    import tensorflow as tf

    loaded = {}
    for name in ("brute", "ivf"):
        with _report.Timer() as timer:
            loaded[name] = tf.saved_model.load(str(exports[name]["path"]))
        exports[name]["load_s"] = round(timer.seconds, 3)
    brute = loaded["brute"].signatures["serving_default"]
    truth = _top_ids(brute, s)
    requests = [_request([j]) for j in range(s.queries)]
    brute_row = _latency(lambda j: brute(**requests[j])["item_ids"].numpy(), s)
    with_nprobe = loaded["ivf"].signatures["with_nprobe"]
    rows = []
    for nprobe in _sweep(exports, s):
        recall = recall_at_k(_top_ids(with_nprobe, s, nprobe), truth)
        batch1 = [_request([j], nprobe) for j in range(s.queries)]
        row = {"nprobe": nprobe, "recall_at_10": round(recall, 4)}
        row.update(_latency(lambda j, b=batch1: with_nprobe(**b[j])["item_ids"].numpy(), s))
        rows.append(row)
    return brute_row, rows, truth


def in_session(
    exports: dict[str, Any], s: Settings, recall: dict[int, float]
) -> tuple[dict, list[dict]]:
    """Batch-1 latency of both exports run as TF Serving runs a SavedModel.

    ``tfrec.serving.servable.Servable``: the ``serve`` MetaGraph in a TF1
    Session, one C++ callable per signature, ops in the calling thread, numpy in
    and out (what the local server calls; ``tensorflow_model_server`` does the
    same in C++). ``recall`` (by nprobe) is copied from :func:`in_process`: the
    same graph gives the same answers.
    """
    from tfrec.serving.servable import Servable

    def inputs(j: int, nprobe: int | None = None) -> dict[str, np.ndarray]:
        out = {
            "user_id": np.array([f"q{j}".encode()], dtype=object),
            "history": np.zeros((1, 0), dtype=object),
            "k": np.array([K], np.int32),
        }
        return out if nprobe is None else {**out, "nprobe": np.array([nprobe], np.int32)}

    brute = Servable("brute", 1, exports["brute"]["path"])
    brute_row = _latency(lambda j: brute.run("serving_default", inputs(j)), s)
    ivf = Servable("ivf", 1, exports["ivf"]["path"])
    rows = []
    for nprobe in _sweep(exports, s):
        row = {"nprobe": nprobe, "recall_at_10": recall[nprobe]}
        row.update(_latency(lambda j, n=nprobe: ivf.run("with_nprobe", inputs(j, n)), s))
        rows.append(row)
    return brute_row, rows


def through_server(
    base: Path, exports: dict[str, Any], s: Settings
) -> tuple[dict, dict, list[dict]]:
    """Latency through ``tfrec serve --backend local`` (gRPC, tfrec_client).

    Returns:
        Brute force at batch 1, brute force at batch :data:`SERVER_BATCH`, and
        the IVF sweep at batch 1.
    """
    from tfrec_client import RecommenderClient

    from benchmarks._load_clients import Server

    server = Server(base, base / "server.log", None)
    try:
        for name in ("brute", "ivf"):
            exports[name]["server_available_s"] = round(server.wait_available(name, 900), 2)
        history = np.zeros((1, 0), dtype=object)

        def inputs(j: int, nprobe: int | None = None) -> dict[str, np.ndarray]:
            out = {"user_id": np.array([f"q{j}"]), "history": history, "k": np.array([K], np.int32)}
            return out if nprobe is None else {**out, "nprobe": np.array([nprobe], np.int32)}

        def batch(j: int) -> dict[str, np.ndarray]:  # SERVER_BATCH users per request
            users = [f"q{(j * SERVER_BATCH + r) % s.queries}" for r in range(SERVER_BATCH)]
            empty = np.zeros((SERVER_BATCH, 0), dtype=object)
            return {
                "user_id": np.array(users),
                "history": empty,
                "k": np.full(SERVER_BATCH, K, np.int32),
            }

        with RecommenderClient(server.target, "brute", timeout=60) as client:
            brute_row = _latency(lambda j: client.predict(inputs(j)), s)
            brute_batch = _latency(lambda j: client.predict(batch(j)), s)
        rows = []
        with RecommenderClient(server.target, "ivf", signature_name="with_nprobe") as client:
            for nprobe in _sweep(exports, s):
                row = {"nprobe": nprobe}
                row.update(_latency(lambda j, n=nprobe: client.predict(inputs(j, n)), s))
                rows.append(row)
    finally:
        server.stop()
    return brute_row, brute_batch, rows


def measure(work: Path, s: Settings) -> dict[str, Any]:
    """Builds, exports and measures everything; returns the results dict."""
    with _report.Timer() as timer:
        items, queries = synthetic_embeddings(s)
        model, users, vocab = embedding_model(items, queries)
    results: dict[str, Any] = {"settings": dataclasses.asdict(s), "data_s": round(timer.seconds, 2)}
    log.info("exporting brute force and IVF (%d items)", s.items)
    exports = export_both(model, users, vocab, work, s)
    del model
    log.info("in-process recall and latency")
    brute_row, ivf_rows, truth = in_process(exports, s)
    results["brute"] = {"in_process": brute_row, "server": None}
    results["ivf"] = {"in_process": ivf_rows, "server": None}
    log.info("in-process latency, Session runtime")
    recall = {row["nprobe"]: row["recall_at_10"] for row in ivf_rows}
    results["brute"]["in_process_session"], results["ivf"]["in_process_session"] = in_session(
        exports, s, recall
    )
    if s.server:
        log.info("latency through the local server")
        brute_server, brute_batch, results["ivf"]["server"] = through_server(work, exports, s)
        results["brute"]["server"] = brute_server
        results["brute"][f"server_batch{SERVER_BATCH}"] = brute_batch
        recall = {row["nprobe"]: row["recall_at_10"] for row in ivf_rows}
        for row in results["ivf"]["server"]:  # same model and requests: the same answers
            row["recall_at_10"] = recall[row["nprobe"]]
    results["faiss"] = None
    if s.faiss:
        log.info("Faiss anchors (IVF-Flat%s)", " and HNSW" if s.hnsw else "")
        results["faiss"] = faiss_curves(
            items, queries, truth, num_partitions=exports["ivf"]["index"]["num_partitions"],
            nprobes=s.nprobes, hnsw_m=s.hnsw_m, ef_searches=s.ef_searches,
            latency_calls=min(s.latency_calls, s.queries), seed=s.seed, hnsw=s.hnsw,
        )  # fmt: skip
    for info in exports.values():
        info["path"] = str(info["path"].relative_to(work))
    results["exports"] = exports
    return results


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    """Command-line flags -> Settings (+ output options)."""
    d = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=d.items)
    parser.add_argument("--dim", type=int, default=d.dim)
    parser.add_argument("--clusters", type=int, default=d.clusters)
    parser.add_argument("--queries", type=int, default=d.queries)
    parser.add_argument("--latency-calls", type=int, default=d.latency_calls)
    parser.add_argument(
        "--nprobe", default=",".join(map(str, d.nprobes)), help="sweep, e.g. 1,4,16"
    )
    parser.add_argument("--partitions", type=int, help="IVF partitions (default 4 sqrt(items))")
    parser.add_argument("--ef-search", default=",".join(map(str, d.ef_searches)))
    parser.add_argument("--hnsw-m", type=int, default=d.hnsw_m)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-faiss", action="store_true", help="skip the Faiss anchors")
    parser.add_argument("--no-hnsw", action="store_true", help="skip Faiss HNSW (slow to build)")
    parser.add_argument("--no-server", action="store_true", help="skip the local-server latency")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument("--name", default=NAME, help="report file stem")
    args = parser.parse_args(argv)
    s = Settings(
        items=args.items, dim=args.dim, clusters=args.clusters, queries=args.queries,
        latency_calls=args.latency_calls, partitions=args.partitions, hnsw_m=args.hnsw_m,
        nprobes=tuple(int(x) for x in args.nprobe.split(",")),
        ef_searches=tuple(int(x) for x in args.ef_search.split(",")), seed=args.seed,
        faiss=not args.no_faiss, hnsw=not args.no_hnsw, server=not args.no_server,
    )  # fmt: skip
    if s.items < s.clusters or s.queries < 1 or min(s.nprobes) < 1:
        parser.error(
            f"--items {s.items} must be >= --clusters {s.clusters}; --queries and --nprobe >= 1"
        )
    return s, args


def main(argv: Sequence[str] | None = None) -> int:
    s, args = parse_args(argv)
    _report.configure_logging(logging.WARNING)
    log.setLevel(logging.INFO)  # this script's progress; libraries stay at WARNING
    facts = _report.machine_facts()
    with tempfile.TemporaryDirectory(prefix="tfrec-ann-") as tmp:
        results = measure(Path(tmp), s)
    out_dir = Path(args.output) if args.output else _report.RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    results["plot"] = f"{args.name}.png"
    results["summary"] = summarize(results)
    results["peak_rss_mb"] = _report.peak_rss_mb()
    results["load_end"] = [round(x, 2) for x in os.getloadavg()]
    plot(results, out_dir / results["plot"])
    markdown = render(results, K)
    paths = _report.write_report(args.name, results, markdown, facts=facts, output_dir=out_dir)
    print(markdown)
    print(f"wrote {paths[0]}, {paths[1]} and {out_dir / results['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
