"""Serving load test: `tfrec serve` over loopback gRPC vs the in-process SavedModel call.

Acceptance (the serving-scale issue, item 4; the first wave's were <= 2 and >= 1.5x):
closed-loop clients at concurrency 1, 8 and 32 send
top-10 retrieval requests (one user each) for a Beauty-size catalogue (12,101
items, transformer encoder, history length 50), with server-side batching off
and on. Report p50/p95/p99 latency and requests/s, the in-process SavedModel p50
for the same requests, the overhead ratio gRPC p50 / in-process p50 (<= 1.3 at
concurrency 1) and the batching speed-up at concurrency 32 (>= 2x), plus the
model load time and the time to the first answer.

How it measures:

* The model is a :class:`~tfrec.models.retrieval.TwoTowerModel` on synthetic
  ids (12,101 items, dim 64, 2 transformer layers, max_history 50) trained for
  a few steps on random data (quality is irrelevant, the compute shape is what
  matters) and exported with :func:`~tfrec.export.retrieval.export_retrieval`
  with 4 TF Serving warmup requests, as ``tfrec train`` exports (the server
  replays them before it reports AVAILABLE, so the first answer is not slowed
  by TensorFlow's first-call graph optimisation).
* Requests: batch 1, a known user, a history of 1..50 distinct items (lengths
  ~ 1 + geometric(mean 8), as in short e-commerce sessions), left-padded with
  ``""`` to 50, k = 10.
* The server is a ``tfrec serve --backend local`` subprocess on 127.0.0.1,
  always stopped with SIGTERM at the end (killed if it does not exit).
* Load clients are separate Python processes (:mod:`benchmarks._load_clients`)
  that import only grpc and send pre-serialized PredictRequest bytes (responses
  are checked to be non-empty, not parsed), so the client's CPU per request is
  as small as Python allows; each process runs several closed-loop threads.
  Every client stops at ``max_requests`` or ``duration`` seconds, whichever
  comes first.
* Both servers (batching off and on) run side by side; each concurrency is
  measured in ``rounds`` alternating off/on cells (off, on, on, off, ...) and
  the rounds are pooled, so drifting load from other jobs on the machine hits
  both alike.
* The overhead ratio is measured separately, interleaving one in-process call
  (numpy in -> ``signatures["serving_default"]`` -> numpy out) and one
  :class:`~tfrec.serving.client.RecommenderClient.predict` call (numpy in ->
  gRPC -> numpy out) per request, so both see the same machine load.

The verdict and the markdown are :mod:`benchmarks._serving_load_report`'s.

Run from the repository root::

    python -m benchmarks.serving_load                    # full run (~4 minutes)
    python -m benchmarks.serving_load --quick --output /tmp/bench   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
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
from benchmarks._load_clients import Server, percentiles_ms, run_load, summarize
from benchmarks._serving_load_report import acceptance, render
from tfrec.training.config import TrainingConfig

NAME = "serving_load"
MODEL_NAME = "retrieval"
NUM_WARMUP = 4  # warmup requests in the export, as tfrec train writes


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
    duration_s: float = 6.0
    rounds: int = 3
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
    duration_s=0.5,
    rounds=1,
    max_requests_per_client=200,
    overhead_requests=20,
)


# ---------------------------------------------------------------------- model, requests


def synthetic_ids(s: Settings) -> tuple[list[str], list[str]]:
    """User and item ids of the synthetic catalogue."""
    return [f"u{i}" for i in range(s.num_users)], [f"i{i}" for i in range(s.num_items)]


def build_export(base_dir: Path, s: Settings, warmup: list[dict[str, np.ndarray]]) -> float:
    """Trains a synthetic TwoTowerModel for a few steps and exports it; returns seconds.

    Like ``tfrec train``'s export, the version carries TF Serving warmup requests
    (``assets.extra/tf_serving_warmup_requests``), which the server replays at load.
    """
    import tensorflow as tf

    from tfrec.data.vocab import IdVocabulary
    from tfrec.export.retrieval import export_retrieval
    from tfrec.export.warmup import build_warmup_records
    from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
    from tfrec.training.optimizers import make_optimizer

    users, items = synthetic_ids(s)
    item_vocab, user_vocab = IdVocabulary(items, "item"), IdVocabulary(users, "user")
    config = RetrievalConfig(
        embedding_dim=s.embedding_dim,
        encoder="transformer",
        max_history=s.max_history,
        num_layers=s.num_layers,
        use_item_features=False,
        training=TrainingConfig(batch_size=64),
    )
    tf.random.set_seed(0)
    model = TwoTowerModel(config, user_vocab.size, item_vocab.size)
    model.compile(optimizer=make_optimizer(config.optimizer))
    rng = np.random.default_rng(0)
    rows = config.training.batch_size * s.train_steps
    sequence = rng.integers(2, item_vocab.size, size=(rows, s.max_history + 1))
    data = {
        "user": rng.integers(2, user_vocab.size, size=rows).astype(np.int32),
        "history": sequence[:, :-1].astype(np.int32),
        "target": sequence[:, 1:].astype(np.int32),
    }
    start = time.perf_counter()
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(config.training.batch_size), verbose=0)
    export_retrieval(
        model,
        user_vocab,
        item_vocab,
        base_dir,
        model_name=MODEL_NAME,
        version=1,
        assets_extra={"tf_serving_warmup_requests": build_warmup_records(MODEL_NAME, warmup)},
    )
    return time.perf_counter() - start


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


# ------------------------------------------------------------------------- measurements


def measure_overhead(
    signature: Any, target: str, requests: list[dict[str, np.ndarray]], n: int, servable: Any
) -> dict[str, Any]:
    """Interleaves in-process calls and RecommenderClient.predict calls, batch 1 each.

    ``servable`` (a :class:`~tfrec.serving.servable.Servable` of the same export) is the
    server's own model call in this process, without gRPC: comparing the gRPC path with it
    isolates the serving overhead from the server's faster model call.
    """
    import tensorflow as tf

    from tfrec.serving.client import RecommenderClient

    local, direct, remote = [], [], []
    with RecommenderClient(target, MODEL_NAME, timeout=10.0) as client:
        for i in range(n + 5):
            inputs = requests[i % len(requests)]
            start = time.perf_counter()
            outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
            _ = {k: v.numpy() for k, v in outputs.items()}
            middle = time.perf_counter()
            servable.run("serving_default", inputs)
            second = time.perf_counter()
            client.predict(inputs)
            end = time.perf_counter()
            if i >= 5:  # the first calls trace / connect
                local.append(middle - start)
                direct.append(second - middle)
                remote.append(end - second)
    in_process, grpc_client = percentiles_ms(local), percentiles_ms(remote)
    server_call = percentiles_ms(direct)
    return {
        "requests": n,
        "in_process": in_process,
        "in_process_server_call": server_call,
        "grpc_client": grpc_client,
        "overhead_ratio_p50": round(grpc_client["p50_ms"] / in_process["p50_ms"], 3),
        "overhead_ratio_vs_server_call_p50": round(
            grpc_client["p50_ms"] / server_call["p50_ms"], 3
        ),
    }


def start_server(export_dir: Path, batching: Any, requests: list, s: Settings) -> Server:
    """Starts ``tfrec serve``, waits for AVAILABLE and a first answer; records the times."""
    from tfrec.serving.client import RecommenderClient
    from tfrec.serving.model_config import batching_parameters_text

    label = "on" if batching is not None else "off"
    batching_file = None
    if batching is not None:
        batching_file = export_dir.parent / "batching_parameters.txt"
        batching_file.write_text(batching_parameters_text(batching), encoding="utf-8")
    server = Server(export_dir, export_dir.parent / f"server_batching_{label}.log", batching_file)
    server.facts = {"batching": label, "server_command": server.command}
    server.facts["start_to_available_s"] = round(
        server.wait_available(MODEL_NAME, s.startup_timeout_s), 3
    )
    with RecommenderClient(server.target, MODEL_NAME, timeout=s.timeout_s) as client:
        start = time.perf_counter()
        client.predict(requests[-1])  # not one of the warmup requests
        server.facts["first_answer_latency_s"] = round(time.perf_counter() - start, 4)
    server.facts["start_to_first_answer_s"] = round(time.perf_counter() - server.started, 3)
    return server


def load_rounds(servers: dict[str, Server], payloads: list[bytes], s: Settings) -> dict:
    """Every concurrency, alternating off/on cells over ``s.rounds`` rounds (drift cancels)."""
    cells: dict[str, dict[int, list]] = {label: {} for label in servers}
    for concurrency in s.concurrencies:
        for round_index in range(s.rounds):
            order = ["off", "on"] if round_index % 2 == 0 else ["on", "off"]
            for label in order:
                server = servers[label]
                cell = run_load(server.target, payloads, concurrency, s, server.proc.pid)
                cells[label].setdefault(concurrency, []).append(cell)
                print(
                    f"batching {label} c={concurrency} round {round_index}: "
                    f"{len(cell['latencies']) / cell['window_s']:.1f} req/s",
                    flush=True,
                )
    return {
        label: [summarize(c, by_c[c]) for c in s.concurrencies] for label, by_c in cells.items()
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, a few seconds")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument("--duration", type=float, help="seconds per load cell and round")
    parser.add_argument("--rounds", type=int, help="off/on rounds per concurrency")
    parser.add_argument("--threads-per-process", type=int, help="client threads per process")
    return parser.parse_args(argv)


def measure(work: Path, s: Settings) -> dict[str, Any]:
    """Builds the model, starts both servers, measures; the servers are always stopped."""
    import tensorflow as tf

    from tfrec.serving.model_config import BatchingConfig
    from tfrec.serving.servable import Servable

    requests = make_requests(*synthetic_ids(s), s)
    build_s = build_export(work / "export", s, warmup=requests[:NUM_WARMUP])
    start = time.perf_counter()
    loaded = tf.saved_model.load(str(work / "export" / MODEL_NAME / "1"))
    load_s = time.perf_counter() - start
    signature = loaded.signatures["serving_default"]
    servable = Servable(MODEL_NAME, 1, work / "export" / MODEL_NAME / "1")
    batching = BatchingConfig()
    servers: dict[str, Server] = {}
    try:
        servers["off"] = start_server(work / "export", None, requests, s)
        servers["on"] = start_server(work / "export", batching, requests, s)
        overhead = measure_overhead(
            signature, servers["off"].target, requests, s.overhead_requests, servable
        )
        load = load_rounds(servers, serialize(requests), s)
    finally:
        for server in servers.values():
            server.facts["server_exit_code"] = server.stop()
    return {
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
        "servers": {label: server.facts for label, server in servers.items()},
        "overhead": overhead,
        "load": load,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = dataclasses.replace(QUICK if args.quick else Settings())
    for flag, field in (("duration", "duration_s"), ("rounds", "rounds")):
        if getattr(args, flag):
            setattr(s, field, getattr(args, flag))
    if args.threads_per_process:
        s.threads_per_process = args.threads_per_process
    facts = _report.machine_facts()
    with tempfile.TemporaryDirectory(prefix="tfrec-serving-load-") as tmp:
        measured = measure(Path(tmp), s)
    results = {
        "quick": args.quick,
        "settings": dataclasses.asdict(s),
        **measured,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    results["acceptance"] = acceptance(
        results["overhead"], results["load"]["off"], results["load"]["on"]
    )
    markdown = render(results, NUM_WARMUP)
    return _report.publish(NAME, results, markdown, facts=facts, output_dir=args.output)


if __name__ == "__main__":
    sys.exit(main())
