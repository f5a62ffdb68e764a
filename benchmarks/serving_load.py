"""Serving load test: `tfrec serve` over loopback gRPC vs the in-process SavedModel call.

Acceptance (from the issue): closed-loop clients at concurrency 1, 8 and 32 send
top-10 retrieval requests (one user each) for a Beauty-size catalogue (12,101
items, transformer encoder, history length 50), with server-side batching off
and on. Report p50/p95/p99 latency and requests/s, the in-process SavedModel p50
for the same requests, the overhead ratio gRPC p50 / in-process p50 (<= 2 at
concurrency 1) and the batching speed-up at concurrency 32 (>= 1.5x), plus the
model load time and the time to the first answer.

How it measures:

* The model is a :class:`~tfrec.models.retrieval.TwoTowerModel` on synthetic
  ids (12,101 items, dim 64, 2 transformer layers, max_history 50) trained for
  a few steps on random data (quality is irrelevant, the compute shape is what
  matters) and exported with :func:`~tfrec.export.retrieval.export_retrieval`.
* Requests: batch 1, a known user, a history of 1..50 distinct items (lengths
  ~ 1 + geometric(mean 8), as in short e-commerce sessions), left-padded with
  ``""`` to 50, k = 10.
* The server is a ``tfrec serve --backend local`` subprocess on 127.0.0.1,
  always stopped with SIGTERM at the end (killed if it does not exit).
* Load clients are separate Python processes (``--worker``) that import only
  grpc and send pre-serialized PredictRequest bytes (responses are checked to
  be non-empty, not parsed), so the client's CPU per request is as small as
  Python allows; each process runs several closed-loop threads. Every client
  stops at ``max_requests`` or ``duration`` seconds, whichever comes first.
* The overhead ratio is measured separately, interleaving one in-process call
  (numpy in -> ``signatures["serving_default"]`` -> numpy out) and one
  :class:`~tfrec.serving.client.RecommenderClient.predict` call (numpy in ->
  gRPC -> numpy out) per request, so both see the same machine load.

Run from the repository root::

    python -m benchmarks.serving_load                    # full run (~3 minutes)
    python -m benchmarks.serving_load --quick --output /tmp/bench   # smoke run
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import tfrec  # noqa: F401  (light: sets the Keras-2 guard before any TensorFlow import)
from benchmarks import _report

NAME = "serving_load"
MODEL_NAME = "retrieval"
OVERHEAD_TARGET = 2.0
SPEEDUP_TARGET = 1.5
PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclasses.dataclass
class Settings:
    """Sizes of one run (``full`` = the issue's shape, ``quick`` = a smoke test)."""

    num_items: int = 12_101
    num_users: int = 1_000
    embedding_dim: int = 64
    num_layers: int = 2
    max_history: int = 50
    k: int = 10
    train_steps: int = 2
    distinct_requests: int = 512
    concurrencies: tuple[int, ...] = (1, 8, 32)
    threads_per_process: int = 8
    duration_s: float = 12.0
    max_requests_per_client: int = 20_000
    overhead_requests: int = 300
    timeout_s: float = 10.0
    startup_timeout_s: float = 240.0


QUICK = Settings(
    num_items=200,
    num_users=20,
    embedding_dim=8,
    num_layers=1,
    max_history=10,
    train_steps=1,
    distinct_requests=16,
    concurrencies=(1, 4),
    threads_per_process=2,
    duration_s=0.6,
    max_requests_per_client=200,
    overhead_requests=20,
)


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean of latencies in seconds, returned in milliseconds."""
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds, np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 3),
        "p95_ms": round(float(p95), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


# ----------------------------------------------------------------------- client worker


def client_loop(
    call: Any, payloads: list[bytes], offset: int, job: dict[str, Any], out: dict[str, Any]
) -> None:
    """One closed-loop client: send, wait for the answer, repeat until a bound is hit."""
    import grpc

    latencies, errors, ends = out["latencies"], out["errors"], out["ends"]
    stop_at = job["start_at"] + job["duration_s"]
    for n in range(job["max_requests"]):
        if time.time() >= stop_at:
            break
        payload = payloads[(offset + n) % len(payloads)]
        start = time.perf_counter()
        try:
            response = call(payload, timeout=job["timeout_s"])
        except grpc.RpcError as err:
            errors.append(err.code().name)
            continue
        latencies.append(time.perf_counter() - start)
        ends.append(time.time())
        if not response:
            errors.append("EMPTY_RESPONSE")


def run_clients(job: dict[str, Any], payloads: list[bytes], threads: int, first: int) -> dict:
    """Runs ``threads`` closed-loop clients in this process; returns their raw results."""
    import grpc

    channel = grpc.insecure_channel(job["target"])
    call = channel.unary_unary(PREDICT)  # bytes in, bytes out: no client-side protobuf
    for payload in payloads[:2]:  # connect and warm up before the timed window
        call(payload, timeout=job["timeout_s"])
    out: dict[str, Any] = {"latencies": [], "errors": [], "ends": []}
    wait = job["start_at"] - time.time()
    if wait > 0:
        time.sleep(wait)
    cpu0 = os.times()
    workers = [
        threading.Thread(target=client_loop, args=(call, payloads, first + i * 7, job, out))
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu1 = os.times()
    channel.close()
    out["cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return out


def worker_main() -> int:
    """``--worker``: read a job (JSON) on stdin, print ``ready``, read the start time, run."""
    job = json.loads(sys.stdin.readline())
    payloads = [base64.b64decode(p) for p in job["payloads"]]
    print("ready", flush=True)
    job["start_at"] = float(sys.stdin.readline())
    out = run_clients(job, payloads, job["threads"], job["first"])
    print(json.dumps(out), flush=True)
    return 0


def run_load(
    target: str, payloads: list[bytes], concurrency: int, s: Settings, server_pid: int
) -> dict[str, Any]:
    """One closed-loop load cell with clients spread over worker processes."""
    procs_n = max(1, -(-concurrency // s.threads_per_process))
    counts = [concurrency // procs_n + (i < concurrency % procs_n) for i in range(procs_n)]
    encoded = [base64.b64encode(p).decode("ascii") for p in payloads]
    procs = []
    try:
        for i, threads in enumerate(counts):
            job = {
                "target": target,
                "threads": threads,
                "first": i * 101,
                "duration_s": s.duration_s,
                "max_requests": s.max_requests_per_client,
                "timeout_s": s.timeout_s,
                "payloads": encoded,
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.serving_load", "--worker"],
                cwd=_report.REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"load client exited early (code {proc.wait(10)})")
        server_cpu0 = _proc_cpu_seconds(server_pid)
        start_at = time.time() + 0.3
        for proc in procs:
            proc.stdin.write(f"{start_at}\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            line, _ = proc.communicate(timeout=s.duration_s + s.timeout_s + 60)
            results.append(json.loads(line))
        server_cpu = _proc_cpu_seconds(server_pid) - server_cpu0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    latencies = [x for r in results for x in r["latencies"]]
    errors = [e for r in results for e in r["errors"]]
    last_end = max([x for r in results for x in r["ends"]], default=start_at)
    window = max(last_end - start_at, 1e-9)
    return {
        "concurrency": concurrency,
        "client_processes": procs_n,
        "requests": len(latencies),
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
        "window_s": round(window, 3),
        "requests_per_s": round(len(latencies) / window, 2),
        **percentiles_ms(latencies),
        "client_cpu_ms_per_request": round(
            1e3 * sum(r["cpu_s"] for r in results) / max(len(latencies), 1), 3
        ),
        "server_cpu_ms_per_request": round(1e3 * server_cpu / max(len(latencies), 1), 3),
    }


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- model, requests


def build_export(base_dir: Path, s: Settings) -> tuple[list[str], list[str], float]:
    """Trains a synthetic TwoTowerModel for a few steps and exports it; returns ids, seconds."""
    import tensorflow as tf

    from tfrec.data.vocab import IdVocabulary
    from tfrec.export.retrieval import export_retrieval
    from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel, make_optimizer

    items = [f"i{i}" for i in range(s.num_items)]
    users = [f"u{i}" for i in range(s.num_users)]
    item_vocab, user_vocab = IdVocabulary(items, "item"), IdVocabulary(users, "user")
    config = RetrievalConfig(
        embedding_dim=s.embedding_dim,
        encoder="transformer",
        max_history=s.max_history,
        num_layers=s.num_layers,
        use_item_features=False,
        batch_size=64,
    )
    tf.random.set_seed(0)
    model = TwoTowerModel(config, user_vocab.size, item_vocab.size)
    model.compile(optimizer=make_optimizer(config))
    rng = np.random.default_rng(0)
    rows = config.batch_size * s.train_steps
    sequence = rng.integers(2, item_vocab.size, size=(rows, s.max_history + 1))
    data = {
        "user": rng.integers(2, user_vocab.size, size=rows).astype(np.int32),
        "history": sequence[:, :-1].astype(np.int32),
        "target": sequence[:, 1:].astype(np.int32),
    }
    start = time.perf_counter()
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(config.batch_size), verbose=0)
    export_retrieval(model, user_vocab, item_vocab, base_dir, model_name=MODEL_NAME, version=1)
    return users, items, time.perf_counter() - start


def make_requests(users: list[str], items: list[str], s: Settings) -> list[dict[str, np.ndarray]]:
    """Batch-1 requests: a user, a left-padded history of 1..max_history items, k."""
    rng = np.random.default_rng(1)
    requests = []
    for _ in range(s.distinct_requests):
        length = int(min(s.max_history, rng.geometric(1 / 8.0)))
        chosen = rng.choice(len(items), size=length, replace=False)
        history = np.full((1, s.max_history), b"", dtype=object)
        history[0, s.max_history - length :] = [items[i].encode() for i in chosen]
        requests.append(
            {
                "user_id": np.array([users[rng.integers(len(users))].encode()], dtype=object),
                "history": history,
                "k": np.array([s.k], dtype=np.int32),
            }
        )
    return requests


def serialize(requests: list[dict[str, np.ndarray]]) -> list[bytes]:
    """PredictRequest bytes for ``MODEL_NAME``/``serving_default``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    out = []
    for inputs in requests:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = MODEL_NAME
        request.model_spec.signature_name = "serving_default"
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        out.append(request.SerializeToString())
    return out


# --------------------------------------------------------------------------- the server


class Server:
    """A ``tfrec serve`` subprocess; ``stop()`` sends SIGTERM (then kills after 30 s)."""

    def __init__(self, export_dir: Path, log_path: Path, batching_file: Path | None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tfrec.cli.main", "serve", "--backend", "local"]
        command += ["--export_dir", str(export_dir), "--port", str(self.port)]
        command += ["--file_system_poll_wait_seconds", "0"]
        if batching_file is not None:
            command += ["--enable_batching", "--batching_parameters_file", str(batching_file)]
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  (closed in stop)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_available(self, timeout: float) -> float:
        """Seconds from process start until GetModelStatus reports AVAILABLE."""
        from tfrec.serving.client import RecommenderClient, ServingError

        deadline = self.started + timeout
        with RecommenderClient(self.target, MODEL_NAME, timeout=2.0, max_retries=0) as client:
            while time.perf_counter() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
                try:
                    if any(v.state == "AVAILABLE" for v in client.status()):
                        return time.perf_counter() - self.started
                except ServingError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"server not AVAILABLE after {timeout} s: {self.tail()}")

    def tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ------------------------------------------------------------------------- measurements


def measure_overhead(
    signature: Any, target: str, requests: list[dict[str, np.ndarray]], n: int
) -> dict[str, Any]:
    """Interleaves in-process calls and RecommenderClient.predict calls, batch 1 each."""
    import tensorflow as tf

    from tfrec.serving.client import RecommenderClient

    local, remote = [], []
    with RecommenderClient(target, MODEL_NAME, timeout=10.0) as client:
        for i in range(n + 5):
            inputs = requests[i % len(requests)]
            start = time.perf_counter()
            outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
            _ = {k: v.numpy() for k, v in outputs.items()}
            middle = time.perf_counter()
            client.predict(inputs)
            end = time.perf_counter()
            if i >= 5:  # the first calls trace / connect
                local.append(middle - start)
                remote.append(end - middle)
    in_process, grpc_client = percentiles_ms(local), percentiles_ms(remote)
    return {
        "requests": n,
        "in_process": in_process,
        "grpc_client": grpc_client,
        "overhead_ratio_p50": round(grpc_client["p50_ms"] / in_process["p50_ms"], 3),
    }


def serve_and_load(
    export_dir: Path, batching: Any, requests: list, s: Settings, signature: Any
) -> dict[str, Any]:
    """Starts a server, measures startup, (overhead,) then every concurrency; always stops it."""
    from tfrec.serving.client import RecommenderClient
    from tfrec.serving.model_config import batching_parameters_text

    work = export_dir.parent
    label = "on" if batching is not None else "off"
    batching_file = None
    if batching is not None:
        batching_file = work / "batching_parameters.txt"
        batching_file.write_text(batching_parameters_text(batching), encoding="utf-8")
    server = Server(export_dir, work / f"server_batching_{label}.log", batching_file)
    result: dict[str, Any] = {"batching": label, "server_command": server.command}
    try:
        result["start_to_available_s"] = round(server.wait_available(s.startup_timeout_s), 3)
        with RecommenderClient(server.target, MODEL_NAME, timeout=s.timeout_s) as client:
            start = time.perf_counter()
            client.predict(requests[0])
            result["first_answer_latency_s"] = round(time.perf_counter() - start, 4)
        result["start_to_first_answer_s"] = round(time.perf_counter() - server.started, 3)
        if batching is None:
            result["overhead"] = measure_overhead(
                signature, server.target, requests, s.overhead_requests
            )
        payloads = serialize(requests)
        result["load"] = [
            run_load(server.target, payloads, c, s, server.proc.pid) for c in s.concurrencies
        ]
    finally:
        result["server_exit_code"] = server.stop()
    return result


def acceptance(overhead: dict, off: list[dict], on: list[dict]) -> dict[str, Any]:
    """The issue's two checks (plus: no errors)."""
    top = max(row["concurrency"] for row in off)
    rps_off = next(r["requests_per_s"] for r in off if r["concurrency"] == top)
    rps_on = next(r["requests_per_s"] for r in on if r["concurrency"] == top)
    speedup = round(rps_on / rps_off, 3)
    errors = sum(r["errors"] for r in off + on)
    checks = {
        "overhead_ratio_c1": {
            "value": overhead["overhead_ratio_p50"],
            "target": f"<= {OVERHEAD_TARGET}",
            "ok": overhead["overhead_ratio_p50"] <= OVERHEAD_TARGET,
        },
        f"batching_speedup_c{top}": {
            "value": speedup,
            "target": f">= {SPEEDUP_TARGET}",
            "ok": speedup >= SPEEDUP_TARGET,
        },
        "errors": {"value": errors, "target": "0", "ok": errors == 0},
    }
    return {"checks": checks, "passed": all(c["ok"] for c in checks.values())}


def render(results: dict[str, Any]) -> str:
    rows = []
    for run in results["runs"]:
        for r in run["load"]:
            rows.append(
                [
                    run["batching"],
                    *(r[key] for key in ("concurrency", "client_processes", "requests", "errors")),
                    *(r[key] for key in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")),
                    r["server_cpu_ms_per_request"],
                    r["client_cpu_ms_per_request"],
                ]
            )
    load = _report.markdown_table(
        [
            "batching",
            "concurrency",
            "client procs",
            "requests",
            "errors",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "server CPU ms/req",
            "client CPU ms/req",
        ],
        rows,
    )
    o = results["overhead"]
    overhead = _report.markdown_table(
        ["path (batch 1, interleaved)", "requests", "p50 ms", "p95 ms", "p99 ms"],
        [
            ["in-process signature call", o["requests"], *_p(o["in_process"])],
            ["gRPC RecommenderClient.predict", o["requests"], *_p(o["grpc_client"])],
        ],
    )
    startup = _report.markdown_table(
        ["batching", "start -> AVAILABLE s", "start -> first answer s", "first answer latency s"],
        [
            [
                r["batching"],
                r["start_to_available_s"],
                r["start_to_first_answer_s"],
                r["first_answer_latency_s"],
            ]
            for r in results["runs"]
        ],
    )
    checks = _report.markdown_table(
        ["check", "measured", "target", "ok"],
        [[k, v["value"], v["target"], v["ok"]] for k, v in results["acceptance"]["checks"].items()],
    )
    m = results["model"]
    quick = ""
    if results["quick"]:
        quick = "**QUICK smoke run: tiny model, not the acceptance shape.**\n\n"
    return (
        f"{quick}Model: {m['num_items']:,} items, transformer, dim {m['embedding_dim']}, "
        f"{m['num_layers']} layers, max_history {m['max_history']}, k={m['k']}; in-process "
        f"`tf.saved_model.load` {m['saved_model_load_s']} s. Batching parameters (on): "
        f"`{json.dumps(results['batching_parameters'])}`. Load average start "
        f"{results['load_start']}, end {results['load_end']}.\n\n"
        f"## Closed-loop load\n\n{load}\n## Serving overhead (concurrency 1)\n\n{overhead}\n"
        f"## Startup\n\n{startup}\n## Acceptance: "
        f"{'PASS' if results['acceptance']['passed'] else 'FAIL'}\n\n{checks}"
    )


def _p(stats: dict[str, Any]) -> list[Any]:
    return [stats["p50_ms"], stats["p95_ms"], stats["p99_ms"]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, a few seconds")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument("--duration", type=float, help="seconds per load cell")
    parser.add_argument("--threads-per-process", type=int, help="client threads per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    s = dataclasses.replace(QUICK if args.quick else Settings())
    if args.duration:
        s.duration_s = args.duration
    if args.threads_per_process:
        s.threads_per_process = args.threads_per_process
    facts = _report.machine_facts()
    import tensorflow as tf

    from tfrec.serving.model_config import BatchingConfig

    batching = BatchingConfig()
    with tempfile.TemporaryDirectory(prefix="tfrec-serving-load-") as tmp:
        work = Path(tmp)
        users, items, build_s = build_export(work / "export", s)
        requests = make_requests(users, items, s)
        start = time.perf_counter()
        loaded = tf.saved_model.load(str(work / "export" / MODEL_NAME / "1"))
        load_s = time.perf_counter() - start
        signature = loaded.signatures["serving_default"]
        runs = [
            serve_and_load(work / "export", None, requests, s, signature),
            serve_and_load(work / "export", batching, requests, s, signature),
        ]
    results = {
        "quick": args.quick,
        "settings": dataclasses.asdict(s),
        "model": {
            "num_items": s.num_items,
            "embedding_dim": s.embedding_dim,
            "num_layers": s.num_layers,
            "max_history": s.max_history,
            "k": s.k,
            "train_and_export_s": round(build_s, 2),
            "saved_model_load_s": round(load_s, 3),
        },
        "batching_parameters": batching.to_dict(),
        "overhead": runs[0]["overhead"],
        "runs": runs,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    results["acceptance"] = acceptance(results["overhead"], runs[0]["load"], runs[1]["load"])
    markdown = render(results)
    paths = _report.write_report(NAME, results, markdown, facts=facts, output_dir=args.output)
    print(markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
