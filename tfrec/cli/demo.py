"""``tfrec demo``: end-to-end demo: train, evaluate, export, serve, query over gRPC.

Train a retrieval model on MovieLens 100K when its files are found (or can be downloaded
with --download), otherwise on the synthetic dataset (saying so); evaluate it, export a
SavedModel, start a TF Serving endpoint (the real tensorflow_model_server when it is on
PATH, else tfrec's local TF-Serving-compatible server), query it with the gRPC client,
print top-10 recommendations with titles for a few users, and shut the server down
cleanly.
"""

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

from tfrec.cli.common import add_command
from tfrec.config import choices
from tfrec.names import ServingBackend

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``demo`` subcommand."""
    parser = add_command(subparsers, "demo", __doc__)
    parser.add_argument(
        "--dataset",
        choices=("auto", "ml-100k", "synthetic"),
        default="auto",
        help="auto: ml-100k if found, else synthetic",
    )
    parser.add_argument(
        "--data-dir", help="folder with ml-100k/ (unset: $TFREC_DATA_DIR, else the cache)"
    )
    parser.add_argument("--download", action="store_true", help="download ml-100k if missing")
    parser.add_argument("--output-dir", default="tfrec-demo", help="where the run is written")
    parser.add_argument("--epochs", type=int, default=10, help="maximum training epochs")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0 = a free port)")
    parser.add_argument("--users", type=int, default=3, help="how many users to query")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="items per user")
    parser.add_argument(
        "--backend",
        choices=("auto", *choices(ServingBackend)),
        default="auto",
        help="auto: tensorflow_model_server when on PATH, else the local server",
    )


def _pick_dataset(args: argparse.Namespace) -> str:
    if args.dataset != "auto":
        return args.dataset
    from tfrec.data.download import locate, resolve_data_dir  # noqa: PLC0415

    try:  # finds (or downloads) u.data; the experiment loads it
        locate("ml-100k", "ml-100k", "u.data", args.data_dir, download=args.download)
    except FileNotFoundError as err:
        logger.debug("%s", err)  # every path tried, and how to get the data
        _say(
            f"MovieLens 100K not found in {resolve_data_dir(args.data_dir)} (give --data-dir "
            "or --download); using the SYNTHETIC dataset instead."
        )
        return "synthetic"
    except OSError as err:  # e.g. download failed: no network
        reason = " ".join(str(err).split())
        _say(f"MovieLens 100K unavailable ({reason}); using the SYNTHETIC dataset instead.")
        return "synthetic"
    return "ml-100k"


def _say(message: str) -> None:
    """Prints a demo step on stdout, flushed so it stays in order with the log on stderr."""
    print(f"[demo] {message}", flush=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(
    export_dir: Path, port: int, backend: str, log_path: Path, verbose: bool
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tfrec.cli.main",
        *(["--verbose"] if verbose else []),
        "serve",
        f"--backend={backend}",
        f"--export_dir={export_dir}",
        f"--port={port}",
        "--file_system_poll_wait_seconds=2",
    ]
    _say(f"4/5 serving it: tfrec {' '.join(command[3:])} (log: {log_path})")
    with log_path.open("w") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ.copy()
        )


def _wait_for_server(
    server: subprocess.Popen,
    target: str,
    model_name: str,
    log_path: Path,
    *,
    timeout: float,
    verbose: bool,
) -> None:
    """Polls the server's model status until a version is AVAILABLE.

    Prints one line, ``waiting for the server on HOST:PORT ... ready after 3.1 s``
    (completed when ready); each failed poll is logged at DEBUG (seen with -v,
    which ends the line first). The probe client does not retry, so the
    client's per-retry warnings never show.

    Raises:
        ChildProcessError: The server exited before serving (its log is named).
        TimeoutError: No AVAILABLE version within ``timeout`` seconds.
    """
    print(f"[demo]     waiting for the server on {target} ...", end="\n" if verbose else "")
    sys.stdout.flush()
    started = time.monotonic()
    try:
        status = _poll_until_available(server, target, model_name, log_path, timeout)
    except BaseException:
        print(flush=True)  # end the "waiting" line before the error is reported
        raise
    versions = ", ".join(f"version {s.version} {s.state}" for s in status)
    ready = f"ready after {time.monotonic() - started:.1f} s ({versions})"
    print(f"[demo]     {ready}" if verbose else f" {ready}", flush=True)


def _poll_until_available(
    server: subprocess.Popen, target: str, model_name: str, log_path: Path, timeout: float
) -> list:
    """The model's version statuses once one is AVAILABLE (see :func:`_wait_for_server`)."""
    from tfrec.serving.client import (  # noqa: PLC0415
        DeadlineExceededError,
        NotFoundError,
        RecommenderClient,
        UnavailableError,
    )

    started = time.monotonic()
    with RecommenderClient(target, model_name, timeout=5.0, max_retries=0) as probe:
        while True:
            try:
                status = probe.status()
                if any(s.state == "AVAILABLE" for s in status):
                    break
                last = f"versions {[(s.version, s.state) for s in status]}"
            except (UnavailableError, NotFoundError, DeadlineExceededError) as err:
                last = err.details
            logger.debug("server not ready after %.1f s: %s", time.monotonic() - started, last)
            if server.poll() is not None:
                raise ChildProcessError(
                    f"the server exited with code {server.returncode} before serving "
                    f"{model_name!r}; see {log_path}"
                )
            if time.monotonic() - started > timeout:
                raise TimeoutError(
                    f"{model_name!r} not available at {target} after {timeout:.0f} s ({last}); "
                    f"see {log_path}"
                )
            time.sleep(0.5)
    return status


def _query_and_print(client, experiment, num_users: int, k: int) -> None:
    """Queries the server for a few test users and prints their top-k with titles."""
    queries = experiment.queries("test")
    count = min(num_users, len(queries))
    users = queries.user_ids[:count]
    histories = [
        [experiment.item_vocab.token(int(i)) for i in row if i > 1]
        for row in queries.history[:count]
    ]
    _say(f"5/5 top-{k} for {count} test users over gRPC (TF Serving Predict API)")
    result = client.recommend(user_ids=users, histories=histories, k=k)
    titles = {}
    if experiment.data.items is not None:
        items = experiment.data.items
        titles = dict(zip(items["item_id"], items["title"], strict=True))
    for user, history, ids, scores in zip(
        users, histories, result.item_ids, result.scores, strict=True
    ):
        recent = ", ".join(titles.get(i, i) for i in history[-3:])
        print(f"user {user} (last watched: {recent})")
        for rank, (item, score) in enumerate(zip(ids, scores, strict=True), start=1):
            print(f"  {rank:>2}. {titles.get(str(item), str(item))}  ({score:.3f})")
    sys.stdout.flush()


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
    _say(f"1/5 training a two-tower retrieval model on {dataset} -> {output_dir}")
    config = RetrievalExperimentConfig.for_dataset(dataset, data_dir=args.data_dir)
    config.model.training.epochs = args.epochs
    experiment = RetrievalExperiment(config, output_dir=output_dir)
    experiment.fit(verbose=0)  # one log line per epoch (tfrec's ProgressLogger), no Keras bar
    metrics = experiment.evaluate()
    experiment.save(output_dir)
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if k in ("test/ndcg@10", "test/hr@10", "test/recall@10", "test/mrr")
    }
    _say(f"2/5 test metrics (full ranking, seen items masked): {json.dumps(shown)}")
    export_base = output_dir / "export"
    [path] = experiment.export(export_base)
    _say(f"3/5 exported a TF Serving SavedModel: {path}")
    port = args.port or _free_port()
    log_path = output_dir / "server.log"
    verbose = bool(getattr(args, "verbose", False))
    server = _start_server(export_base, port, args.backend, log_path, verbose)
    target = f"127.0.0.1:{port}"
    try:
        _wait_for_server(
            server, target, config.model_name, log_path, timeout=120.0, verbose=verbose
        )
        with RecommenderClient(target, config.model_name, timeout=30.0) as client:
            _query_and_print(client, experiment, args.users, args.top_k)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        _say(f"the server exited with code {code}; see {log_path}")
        return 1
    _say(f"done in {seconds:.0f} s (server stopped); everything is in {output_dir}")
    return 0
