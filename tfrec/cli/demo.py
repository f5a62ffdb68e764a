"""``tfrec demo``: the whole path on one machine: train, evaluate, export, serve, query."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end demo: train, evaluate, export, serve, query over gRPC",
        description=(
            "Train a retrieval model on MovieLens 100K when its files are found (or can be "
            "downloaded with --download), otherwise on the synthetic dataset (saying so); "
            "evaluate it, export a SavedModel, start a TF Serving endpoint (the real "
            "tensorflow_model_server when it is on PATH, else tfrec's local TF-Serving-compatible "
            "server), query it with the gRPC client, print top-10 recommendations with titles "
            "for a few users, and shut the server down cleanly."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        choices=("auto", "ml-100k", "synthetic"),
        default="auto",
        help="auto: ml-100k if found, else synthetic",
    )
    parser.add_argument("--data-dir", help="folder with ml-100k/ (default: $TFREC_DATA_DIR, cache)")
    parser.add_argument("--download", action="store_true", help="download ml-100k if missing")
    parser.add_argument("--output-dir", default="tfrec-demo", help="where the run is written")
    parser.add_argument("--epochs", type=int, default=10, help="maximum training epochs")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0 = a free port)")
    parser.add_argument("--users", type=int, default=3, help="how many users to query")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="items per user")
    parser.add_argument(
        "--backend",
        choices=("auto", "local", "tfserving"),
        default="auto",
        help="auto: tensorflow_model_server when on PATH, else the local server",
    )


def _pick_dataset(args: argparse.Namespace) -> str:
    if args.dataset != "auto":
        return args.dataset
    from tfrec.data.loaders import load_dataset  # noqa: PLC0415

    try:
        load_dataset("ml-100k", data_dir=args.data_dir, download=args.download)
    except FileNotFoundError as err:
        print(f"[demo] MovieLens 100K not found ({err}); using the SYNTHETIC dataset instead.")
        return "synthetic"
    except OSError as err:  # e.g. download failed: no network
        print(f"[demo] MovieLens 100K unavailable ({err}); using the SYNTHETIC dataset instead.")
        return "synthetic"
    return "ml-100k"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(export_dir: Path, port: int, backend: str, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tfrec.cli.main",
        "serve",
        f"--backend={backend}",
        f"--export_dir={export_dir}",
        f"--port={port}",
        "--file_system_poll_wait_seconds=2",
    ]
    print(f"[demo] starting the server: {' '.join(command[2:])} (log: {log_path})")
    log_file = log_path.open("w")
    return subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy()
    )


def _query_and_print(client, experiment, num_users: int, k: int) -> None:
    """Queries the server for a few test users and prints their top-k with titles."""
    queries = experiment.queries("test")
    count = min(num_users, len(queries))
    users = queries.user_ids[:count]
    histories = [
        [experiment.item_vocab.token(int(i)) for i in row if i > 1]
        for row in queries.history[:count]
    ]
    print(f"[demo] 5/5 querying {count} users over gRPC (TF Serving Predict API)")
    result = client.recommend(user_ids=users, histories=histories, k=k)
    titles = {}
    if experiment.data.items is not None:
        items = experiment.data.items
        titles = dict(zip(items["item_id"], items["title"], strict=True))
    for user, history, ids, scores in zip(
        users, histories, result.item_ids, result.scores, strict=True
    ):
        recent = ", ".join(titles.get(i, i) for i in history[-3:])
        print(f"\nuser {user} (last watched: {recent})")
        for rank, (item, score) in enumerate(zip(ids, scores, strict=True), start=1):
            print(f"  {rank:>2}. {titles.get(str(item), str(item))}  ({score:.3f})")


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec demo``."""
    from tfrec.serving.client import RecommenderClient  # noqa: PLC0415
    from tfrec.training.retrieval import (  # noqa: PLC0415
        RetrievalExperiment,
        RetrievalExperimentConfig,
    )

    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    dataset = _pick_dataset(args)
    print(f"[demo] 1/5 training a two-tower retrieval model on {dataset} -> {output_dir}")
    config = RetrievalExperimentConfig.for_dataset(dataset, data_dir=args.data_dir)
    config.model.epochs = args.epochs
    experiment = RetrievalExperiment(config, output_dir=output_dir)
    experiment.fit(verbose=2 if not sys.stdout.isatty() else 1)
    print("[demo] 2/5 evaluating (full ranking over the whole catalogue, seen items masked)")
    metrics = experiment.evaluate()
    experiment.save(output_dir)
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if k in ("test/ndcg@10", "test/hr@10", "test/recall@10", "test/mrr")
    }
    print(f"[demo]     {json.dumps(shown)}")
    print("[demo] 3/5 exporting a TF Serving SavedModel")
    export_base = output_dir / "export"
    path = experiment.export(export_base)
    print(f"[demo]     {path}")
    port = args.port or _free_port()
    server = _start_server(export_base, port, args.backend, output_dir / "server.log")
    try:
        print(f"[demo] 4/5 waiting for the server on 127.0.0.1:{port}")
        with RecommenderClient(f"127.0.0.1:{port}", config.model_name, timeout=30.0) as client:
            client.wait_until_available(timeout=120.0)
            status = client.status()
            print(f"[demo]     model status: {[(s.version, s.state) for s in status]}")
            _query_and_print(client, experiment, args.users, args.top_k)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        print(f"\n[demo] server stopped (exit code {code})")
    print(f"[demo] done in {time.perf_counter() - started:.0f} s; everything is in {output_dir}")
    return 0 if code == 0 else 1
