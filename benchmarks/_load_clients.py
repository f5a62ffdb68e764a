"""Load-test harness for ``benchmarks/serving_load.py``: server process and closed-loop clients.

:class:`Server` runs ``tfrec serve`` as a subprocess on a free loopback port
and stops it with SIGTERM. :func:`run_load` runs one closed-loop cell.

Each client process (``python -m benchmarks._load_clients``) imports only grpc
and numpy: it reads a job (JSON line) on stdin, connects and warms up, prints
``ready``, reads the common start time, runs its closed-loop threads (send
pre-serialized PredictRequest bytes, wait for the answer, repeat) until the
request count or the duration is reached, and prints its raw results as JSON.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report

PREDICT = "/tensorflow.serving.PredictionService/Predict"


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
        self.facts: dict[str, Any] = {}
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  (closed in stop)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_available(self, model_name: str, timeout: float) -> float:
        """Seconds from process start until GetModelStatus reports ``model_name`` AVAILABLE."""
        from tfrec.serving.client import RecommenderClient, ServingError

        deadline = self.started + timeout
        with RecommenderClient(self.target, model_name, timeout=2.0, max_retries=0) as client:
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
    target: str, payloads: list[bytes], concurrency: int, s: Any, server_pid: int
) -> dict[str, Any]:
    """One closed-loop load cell with clients spread over worker processes.

    Args:
        target: ``host:port`` of the server.
        payloads: Serialized PredictRequests, sent round-robin.
        concurrency: Closed-loop clients (threads, ``s.threads_per_process`` per process).
        s: Settings with ``threads_per_process``, ``duration_s``,
            ``max_requests_per_client`` and ``timeout_s``.
        server_pid: The server process, whose CPU time is measured.

    Returns:
        Raw results: ``latencies`` (s), ``errors`` (status names), ``window_s``,
        ``client_cpu_s``, ``server_cpu_s``, ``client_processes``.
    """
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
                [sys.executable, "-m", "benchmarks._load_clients"],
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
    last_end = max([x for r in results for x in r["ends"]], default=start_at)
    return {
        "latencies": [x for r in results for x in r["latencies"]],
        "errors": [e for r in results for e in r["errors"]],
        "window_s": max(last_end - start_at, 1e-9),
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "server_cpu_s": server_cpu,
        "client_processes": procs_n,
    }


def summarize(concurrency: int, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Pools the rounds of one (batching, concurrency) cell: latencies, req/s, CPU per request."""
    latencies = [x for c in cells for x in c["latencies"]]
    errors = [e for c in cells for e in c["errors"]]
    n = max(len(latencies), 1)
    return {
        "concurrency": concurrency,
        "client_processes": cells[0]["client_processes"],
        "rounds": len(cells),
        "requests": len(latencies),
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
        "window_s": round(sum(c["window_s"] for c in cells), 3),
        "requests_per_s": round(len(latencies) / sum(c["window_s"] for c in cells), 2),
        "requests_per_s_by_round": [round(len(c["latencies"]) / c["window_s"], 2) for c in cells],
        **percentiles_ms(latencies),
        "client_cpu_ms_per_request": round(1e3 * sum(c["client_cpu_s"] for c in cells) / n, 3),
        "server_cpu_ms_per_request": round(1e3 * sum(c["server_cpu_s"] for c in cells) / n, 3),
    }


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(worker_main())
