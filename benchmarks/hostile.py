"""Hostile-input campaign against ``tfrec serve``: malformed, oversized, cancelled, concurrent.

Acceptance (issue 9): at least 5,000 malformed, oversized, cancelled and
concurrent requests over gRPC and REST, with batching off and on; no crash, no
hang, no connection held past its timeout, RSS bounded, the right status code
per request class (the table, with TF Serving's source for each code, is
:mod:`benchmarks._hostile_table` and is printed in the report), and a valid
request answered the same before and after. Request builders:
:mod:`benchmarks._hostile_requests` (gRPC), :mod:`benchmarks._hostile_rest` (raw
HTTP); loops, tally and RSS monitor: :mod:`benchmarks._hostile_phases`; verdict
and markdown: :mod:`benchmarks._hostile_report`.

How it runs, once per batching mode (off, then on with the default
BatchingParameters: max_batch_size 32, max_enqueued_batches 100):

* a tiny retrieval model (transformer, user embedding, 200 items) is trained
  for one step on random ids and exported as ``tfrec train`` exports;
* ``tfrec serve --backend local`` runs it as a subprocess on 127.0.0.1 (gRPC +
  REST); a thread samples its VmRSS every 20 ms and kills it above a guard;
* reference answers of 24 valid requests are taken sequentially;
* phases (each bounded by a request count and a deadline): a mix cycling through
  every request class from 8 threads; 64 concurrent clients sending the
  reference requests; 48 idle/stalled REST connections held until the server
  closes them (limit ``stall_limit_s``) while valid requests are sent; a 3,500-row
  request (with batching: 32 threads of one-row requests around it); tiny
  requests declaring huge tensors, one at a time with their RSS jump, and one
  65 MiB request;
* at the end: the process must be alive, answer the reference requests
  identically, have kept its peak RSS (VmHWM) within ``rss_growth_bound_mb`` of
  its level after warm-up, and exit 0 on SIGTERM.

Every response is classified (status name, ``HTTP_<code>``, ``TIMEOUT``, ...) and
counted per class; mismatches are reported per class, never raised.

Run from the repository root::

    python -m benchmarks.hostile                          # full run (>= 5,000 requests)
    python -m benchmarks.hostile --budget 300             # a small run (hostile_small)
    python -m benchmarks.hostile --quick --output /tmp/x  # smoke run (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

import tfrec  # noqa: F401  (light: sets the Keras-2 guard before any TensorFlow import)
from benchmarks import _report
from benchmarks._hostile_phases import (
    MIXED_CLASSES,
    RssMonitor,
    Tally,
    answers_identical,
    proc_status_mb,
    rest_matches,
    run_concurrent,
    run_large,
    run_mixed,
    run_oversized,
    run_stall,
    socket_count,
    take_references,
)
from benchmarks._hostile_report import acceptance, render
from benchmarks._hostile_requests import Context
from benchmarks._hostile_table import ALL_EXPECTED
from benchmarks._load_clients import Server
from tfrec.training.config import TrainingConfig

NAME = "hostile"
MODEL_NAME = "retrieval"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class Settings:
    """Sizes and bounds of one run (per batching mode unless said otherwise)."""

    num_users: int = 50
    num_items: int = 200
    embedding_dim: int = 8
    max_history: int = 10
    references: int = 24
    mixed_requests: int = 2_200
    mixed_threads: int = 8
    concurrent_clients: int = 64
    requests_per_client: int = 8
    stall_connections: int = 48
    stall_probes: int = 4
    stall_limit_s: float = 35.0
    large_rows: int = 3_500
    large_rounds: int = 4
    small_threads: int = 32
    small_per_thread: int = 8
    oversized_per_variant: int = 3
    message_too_large: int = 1
    request_timeout_s: float = 10.0
    oversized_timeout_s: float = 30.0
    phase_limit_s: float = 300.0
    rss_growth_bound_mb: float = 512.0
    rss_jump_bound_mb: float = 64.0
    rss_guard_mb: float = 8192.0
    startup_timeout_s: float = 240.0
    min_requests: int = 5_000
    server_args: tuple[str, ...] = ()


QUICK = Settings(
    num_users=10,
    num_items=40,
    references=6,
    mixed_requests=len(MIXED_CLASSES),
    mixed_threads=4,
    concurrent_clients=8,
    requests_per_client=2,
    stall_connections=3,
    stall_probes=1,
    stall_limit_s=3.0,
    large_rows=100,
    large_rounds=1,
    small_threads=4,
    small_per_thread=2,
    oversized_per_variant=1,
    message_too_large=0,
    oversized_timeout_s=20.0,
    phase_limit_s=60.0,
    min_requests=0,
)


SMALL = dataclasses.replace(
    Settings(),
    requests_per_client=1,
    stall_connections=6,
    stall_probes=1,
    large_rounds=1,
    small_per_thread=1,
    oversized_per_variant=1,
    min_requests=0,
)


def fixed_requests(s: Settings, batching: bool) -> int:
    """Requests of one mode outside the mixed phase (at most; skips lower it)."""
    count = s.concurrent_clients * s.requests_per_client + s.stall_connections + s.stall_probes
    count += s.large_rounds + 3 * s.oversized_per_variant + s.message_too_large
    return count + (s.small_threads * s.small_per_thread if batching else 0)


def with_budget(s: Settings, budget: int) -> Settings:
    """``s`` with the mixed phase sized so both modes together send about ``budget``."""
    rest = budget - fixed_requests(s, False) - fixed_requests(s, True)
    return dataclasses.replace(s, mixed_requests=max(len(MIXED_CLASSES), -(-rest // 2)))


# ------------------------------------------------------------------- model and server


def build_export(base_dir: Path, s: Settings) -> tuple[list[str], list[str]]:
    """Trains a tiny TwoTowerModel one step on random ids and exports it; returns the ids."""
    import tensorflow as tf
    import tf_keras

    from tfrec.data.vocab import IdVocabulary
    from tfrec.export.retrieval import export_retrieval
    from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel

    users = [f"u{i}" for i in range(s.num_users)]
    items = [f"i{i}" for i in range(s.num_items)]
    user_vocab, item_vocab = IdVocabulary(users, "user"), IdVocabulary(items, "item")
    config = RetrievalConfig(
        embedding_dim=s.embedding_dim,
        max_history=s.max_history,
        num_layers=1,
        use_user_embedding=True,
        use_item_features=False,
        training=TrainingConfig(batch_size=32),
    )
    tf.random.set_seed(0)
    model = TwoTowerModel(config, user_vocab.size, item_vocab.size)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))  # one step: quality is irrelevant
    rng = np.random.default_rng(0)
    sequence = rng.integers(2, item_vocab.size, size=(32, s.max_history + 1)).astype(np.int32)
    data = {
        "user": rng.integers(2, user_vocab.size, size=32).astype(np.int32),
        "history": sequence[:, :-1],
        "target": sequence[:, 1:],
    }
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), verbose=0)
    export_retrieval(model, user_vocab, item_vocab, base_dir, model_name=MODEL_NAME, version=1)
    return users, items


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HostileServer(Server):
    """``tfrec serve --backend local`` with gRPC and REST on loopback (stop(): SIGTERM)."""

    def __init__(
        self, export_dir: Path, log_path: Path, batching_file: Path | None, extra: Sequence[str]
    ):
        self.port, self.rest_port = _free_port(), _free_port()
        self.target = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tfrec.cli.main", "serve", "--backend", "local"]
        command += ["--export_dir", str(export_dir), "--port", str(self.port)]
        command += ["--rest_api_port", str(self.rest_port), "--file_system_poll_wait_seconds", "0"]
        if batching_file is not None:
            command += ["--enable_batching", "--batching_parameters_file", str(batching_file)]
        self.command = [*command, *extra]
        self.facts: dict[str, Any] = {}
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  (closed in stop)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)


def launch_server(export_dir: Path, work: Path, batching: bool, s: Settings) -> HostileServer:
    """Starts the server process (batching with the default parameters); does not wait."""
    from tfrec.serving.model_config import BatchingConfig, batching_parameters_text

    label = "on" if batching else "off"
    batching_file = None
    if batching:
        batching_file = work / "batching_parameters.txt"
        batching_file.write_text(batching_parameters_text(BatchingConfig()), encoding="utf-8")
    server = HostileServer(export_dir, work / f"server_{label}.log", batching_file, s.server_args)
    server.facts = {"command": shlex.join(server.command)}
    return server


def wait_ready(server: HostileServer, s: Settings) -> HostileServer:
    """Waits for AVAILABLE (the process is stopped if it never gets there)."""
    try:
        seconds = server.wait_available(MODEL_NAME, s.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    server.facts["start_to_available_s"] = round(seconds, 3)
    return server


# ------------------------------------------------------------------------- one mode


def final_checks(server: HostileServer, ctx: Context) -> dict[str, Any]:
    """Alive, same answers (gRPC and REST), and the process's RSS/sockets at the end."""
    alive = server.proc.poll() is None
    out = {
        "alive_at_end": alive,
        "answers_identical": alive and answers_identical(ctx),
        "rest_answer_matches": alive and rest_matches(ctx),
    }
    if ctx.channel is not None:
        ctx.channel.close()
    time.sleep(0.5)  # let the server see the closed connections
    out["end"] = {**proc_status_mb(server.proc.pid), "sockets": socket_count(server.proc.pid)}
    return out


def _phases(ctx: Context, tally: Tally, monitor: RssMonitor, s: Settings, batching: bool) -> dict:
    """Runs the phases in order (a phase is skipped once the server is gone)."""
    out: dict[str, Any] = {"phase_seconds": {}}

    def timed(name: str, phase: Any) -> Any:
        if monitor.tripped or not proc_status_mb(monitor.pid):
            out["phase_seconds"][name] = None
            return None
        start = time.monotonic()
        value = phase(start + s.phase_limit_s)
        out["phase_seconds"][name] = round(time.monotonic() - start, 2)
        return value

    mixed = {"count": s.mixed_requests, "threads": s.mixed_threads, "seed": 11}
    timed("mixed", lambda d: run_mixed(ctx, tally, deadline=d, **mixed))
    clients = {"clients": s.concurrent_clients, "per_client": s.requests_per_client}
    timed(
        "concurrent",
        lambda d: run_concurrent(ctx, tally, timeout=s.request_timeout_s, deadline=d, **clients),
    )
    out["stall"] = timed("stall", lambda d: run_stall(ctx, tally, s))
    timed("large", lambda d: run_large(ctx, tally, s, batching, d))
    out["oversized"] = timed("oversized", lambda d: run_oversized(ctx, tally, monitor, s, d))
    return out


def run_mode(
    export_dir: Path, work: Path, ids: tuple[list[str], list[str]], s: Settings, batching: bool
) -> dict:
    """One server (batching off or on) through every phase and the final checks."""
    server = wait_ready(launch_server(export_dir, work, batching, s), s)
    pid = server.proc.pid
    ctx = Context(server.target, server.rest_port, MODEL_NAME, ids[0], ids[1], s.max_history)
    monitor = RssMonitor(pid, s.rss_guard_mb, server.proc.kill)
    tally = Tally()
    try:
        try:
            take_references(ctx, s.references)
        except grpc.RpcError as err:
            raise RuntimeError(
                f"a valid reference request failed ({err.code().name}: {err.details()}); "
                f"server log: {server.tail()}"
            ) from err
        baseline = {**proc_status_mb(pid), "sockets": socket_count(pid)}
        monitor.start()
        result = _phases(ctx, tally, monitor, s, batching)
        result.update(final_checks(server, ctx))
    finally:
        monitor.stop()
        server.facts["exit_code"] = server.stop()
    end = result.pop("end")
    peak = max(end.get("VmHWM", 0.0), monitor.peak_mb)
    start_mb = max(baseline.get("VmHWM", 0.0), baseline.get("VmRSS", 0.0))
    result.update(
        server=server.facts,
        classes=tally.summary(),
        references=[
            {"inputs": _listed(r.inputs), "answer": _listed(r.answer)} for r in ctx.references
        ],
        rss_mb={
            "baseline_rss": round(baseline.get("VmRSS", 0.0), 1),
            "baseline_hwm": round(baseline.get("VmHWM", 0.0), 1),
            "sampled_peak": round(monitor.peak_mb, 1),
            "end_hwm": round(end.get("VmHWM", 0.0), 1),
            "hwm_growth": round(peak - start_mb, 1),
            "guard_tripped": monitor.tripped,
        },
        sockets={"baseline": baseline["sockets"], "end": end.get("sockets")},
    )
    result["requests"] = sum(c["sent"] for c in result["classes"].values())
    return result


def _listed(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        n: [[v.decode() if isinstance(v, bytes) else v for v in row] for row in a.tolist()]
        if a.ndim == 2
        else [v.decode() if isinstance(v, bytes) else v for v in a.tolist()]
        for n, a in arrays.items()
    }


# ----------------------------------------------------------------------------- main


def run_campaign(work: Path, s: Settings) -> dict[str, Any]:
    """Builds the export, runs both modes; returns the results (with ``acceptance``)."""
    start = time.monotonic()
    ids = build_export(work / "export", s)
    modes = {}
    for label, batching in (("off", False), ("on", True)):
        mode_dir = work / label
        mode_dir.mkdir()
        modes[label] = run_mode(work / "export", mode_dir, ids, s, batching)
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(s),
        "expected": {
            c: {
                "api": e.api,
                "outcomes": sorted(e.outcomes),
                "request": e.request,
                "source": e.source,
            }
            for c, e in ALL_EXPECTED.items()
        },
        "modes": modes,
        "wall_s": round(time.monotonic() - start, 1),
    }
    results["acceptance"] = acceptance(results, s)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (tests)")
    parser.add_argument("--budget", type=int, help="total requests of both modes (sizes the mix)")
    parser.add_argument("--stall-limit", type=float, help="seconds a stalled connection may stay")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `tfrec serve` flag (repeatable)"
    )
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s, name = (QUICK, f"{NAME}_quick") if args.quick else (Settings(), NAME)
    if args.budget:
        small = not args.quick and args.budget < Settings().min_requests
        s, name = (SMALL, f"{NAME}_small") if small else (s, name)
        s = with_budget(s, args.budget)
    s = dataclasses.replace(s)
    if args.stall_limit:
        s.stall_limit_s = args.stall_limit
    s.server_args = tuple(args.server_arg)
    facts = _report.machine_facts()
    with tempfile.TemporaryDirectory(prefix="tfrec-hostile-") as tmp:
        results = run_campaign(Path(tmp), s)
    results["quick"] = args.quick
    results["run"] = "quick" if args.quick else "small" if name.endswith("_small") else "full"
    return _report.publish(name, results, render(results), facts=facts, output_dir=args.output)


if __name__ == "__main__":
    sys.exit(main())
