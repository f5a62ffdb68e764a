"""tfrec's local TF-Serving-compatible model server.

``tensorflow_model_server`` cannot be installed everywhere (it is not on PyPI),
so for development, tests and the demo tfrec ships this server: it reads the
same TF Serving layout and ``models.config``, speaks TF Serving's exact gRPC API
(``PredictionService``, ``ModelService``) and optionally its REST API, so
:class:`~tfrec.serving.client.RecommenderClient` works unchanged against both.

Example:
    >>> models = [ModelEntry(name="retrieval", base_path="/exports/retrieval")]
    >>> with ModelServer(models, ServerOptions(port=0)).start() as server:
    ...     print(server.port)
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from types import FrameType
from typing import Any

import grpc

from tfrec.config import JsonConfig
from tfrec.serving.batching import BatchScheduler
from tfrec.serving.core import ServingCore
from tfrec.serving.grpc_services import add_services
from tfrec.serving.manager import LoadFn, ModelManager, load_servable
from tfrec.serving.metrics import Metrics
from tfrec.serving.model_config import (
    BatchingConfig,
    ModelEntry,
    MonitoringSettings,
    load_model_config,
)
from tfrec.serving.rest_http import HttpLimits
from tfrec.serving.tensors import DEFAULT_REQUEST_MEMORY_BYTES

log = logging.getLogger(__name__)

# Extra time stop() allows after the grace (gRPC's cancellations, the poller).
_STOP_MARGIN_SECONDS = 0.5


@dataclasses.dataclass
class ServerOptions(JsonConfig):
    """Local server settings (names follow ``tensorflow_model_server`` flags).

    Args:
        host: Interface to bind (TF Serving binds all; the local server
            defaults to loopback, use ``0.0.0.0`` in a container).
        port: gRPC port (0 = pick a free one; see :attr:`ModelServer.port`).
        rest_api_port: REST port (0 = no REST API).
        grpc_max_threads: Threads handling RPCs concurrently. With batching a
            request waiting for its batch holds a thread, so at most this many
            requests can be queued: keep it above ``max_batch_size *
            num_batch_threads`` (threads are only created when needed).
        grpc_max_message_bytes: Largest request accepted; bigger ones get
            RESOURCE_EXHAUSTED.
        enable_batching: Merge concurrent requests (see :mod:`tfrec.serving.batching`).
        batching: Batching parameters used when ``enable_batching``.
        file_system_poll_wait_seconds: Period of the scan for new/removed
            versions (0 = scan once at start).
        model_config_file_poll_wait_seconds: Period of re-reading the
            ``--model_config_file`` (0 = never).
        monitoring: Prometheus endpoint on the REST port, or None.
        shutdown_grace_seconds: How long in-flight requests may take on
            shutdown; the whole shutdown (gRPC, REST, batcher) ends within it
            plus a fraction of a second, and requests still running then are
            abandoned (gRPC answers them CANCELLED/UNAVAILABLE).
        max_num_load_retries: Retries after a version's first failed load
            (TF Serving's flag and default, 5).
        load_retry_interval_micros: Wait between those retries (TF Serving's
            flag and default, 1 minute; < 0 = no wait).
        request_memory_budget_bytes: Estimated input memory a request may
            need (string elements count 32 bytes plus their length, numbers
            their size); over it: RESOURCE_EXHAUSTED. 0 = no limit.
        rest_limits: REST connection limits: header/body read timeouts, the
            connection cap, body sizes (:class:`tfrec.serving.rest_http.HttpLimits`).
    """

    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int = 0
    grpc_max_threads: int = 64
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    enable_batching: bool = False
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    file_system_poll_wait_seconds: float = 1.0
    model_config_file_poll_wait_seconds: float = 0.0
    monitoring: MonitoringSettings | None = None
    shutdown_grace_seconds: float = 30.0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    request_memory_budget_bytes: int = DEFAULT_REQUEST_MEMORY_BYTES
    rest_limits: HttpLimits = dataclasses.field(default_factory=HttpLimits)

    def __post_init__(self) -> None:
        for name in ("port", "rest_api_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name}={getattr(self, name)}: expected 0..65535")
        if self.grpc_max_threads < 1 or self.grpc_max_message_bytes < 1:
            raise ValueError(
                f"grpc_max_threads={self.grpc_max_threads}, grpc_max_message_bytes="
                f"{self.grpc_max_message_bytes}: expected >= 1"
            )
        for name in ("shutdown_grace_seconds", "max_num_load_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected >= 0")


def configure_tf_threads(
    intra_op: int = 0, inter_op: int = 0, thread_spinning: bool = False
) -> None:
    """Sets TensorFlow's thread pools for serving; call before TensorFlow runs anything.

    Args:
        intra_op: Threads per op (0 = TensorFlow's default, one per core).
        inter_op: Ops run in parallel (0 = TensorFlow's default for TF2
            functions; a servable's Session then runs a request's ops in the
            calling thread, -1 does that everywhere).
        thread_spinning: Let idle pool threads spin-wait for work (TensorFlow's
            default). Off by default here (``ConfigProto.experimental.
            disable_thread_spinning``): a spinning thread burns a core for a
            while after every op, which on a small machine takes the CPU the
            gRPC threads and the other requests need (on 2 cores a batch-1
            retrieval call took 0.80 ms of CPU instead of 1.15 ms; see
            ``docs/serving_performance.md``).
    """
    import tensorflow as tf  # noqa: PLC0415

    from tfrec.serving.graph_session import configure_sessions  # noqa: PLC0415

    # Servables run in Sessions: every op of a request in the calling thread unless
    # an inter-op pool size is given (see tfrec.serving.graph_session).
    configure_sessions(inter_op=inter_op or -1, intra_op=intra_op, thread_spinning=thread_spinning)
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    if not thread_spinning:
        _disable_thread_spinning()


def _disable_thread_spinning() -> None:
    """Sets ``disable_thread_spinning`` in the eager context's config (before it starts)."""
    from tensorflow.python.eager import context  # noqa: PLC0415

    ctx = context.context()
    if getattr(ctx, "_context_handle", None) is not None or not hasattr(ctx, "_config"):
        log.debug("TensorFlow already running: thread spinning left as it is")
        return
    from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415

    config = config_pb2.ConfigProto()
    if ctx._config is not None:
        config.CopyFrom(ctx._config)
    config.experimental.disable_thread_spinning = True
    ctx._config = config


def _freeze_heap() -> None:
    """Moves every live object out of the garbage collector's sight (``gc.freeze``).

    A loaded TensorFlow model leaves millions of long-lived Python objects; each
    full collection walked them all, about 0.03 ms of CPU per request under load
    (0.006 ms frozen, docs/serving_performance.md). Called after every model load
    or unload (unfreezing first, so unloaded versions are collected) and undone by
    :meth:`ModelServer.stop`.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelServer:
    """gRPC (+ optional REST) server over a :class:`ModelManager`.

    Args:
        models: Models to serve (ignored if ``model_config_file`` is given).
        options: Server settings.
        model_config_file: A ``models.config`` to read (and re-read every
            ``model_config_file_poll_wait_seconds``).
        load_fn: Loader of one version (tests inject failures through it).
    """

    def __init__(
        self,
        models: list[ModelEntry] | None = None,
        options: ServerOptions | None = None,
        model_config_file: str | os.PathLike[str] | None = None,
        load_fn: LoadFn = load_servable,
    ):
        self.options = options or ServerOptions()
        self._config_file = Path(model_config_file) if model_config_file else None
        self._config_mtime = 0.0
        if self._config_file is not None:
            self._config_mtime = self._config_file.stat().st_mtime
            models = load_model_config(self._config_file)
        if not models:
            raise ValueError("ModelServer: give models or a model_config_file")
        self.manager = ModelManager(
            models,
            load_fn=load_fn,
            max_num_load_retries=self.options.max_num_load_retries,
            load_retry_interval_seconds=self.options.load_retry_interval_micros / 1e6,
            on_change=_freeze_heap,
        )
        self.metrics = Metrics(is_known=self.manager.is_configured)
        self.batcher: BatchScheduler | None = None
        self.core: ServingCore | None = None
        self._grpc: grpc.Server | None = None
        self._rest: Any = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False
        self.port = 0
        self.rest_port = 0
        self.abandoned_requests = 0  # in flight when the shutdown grace ran out

    def start(self) -> ModelServer:
        """Loads the models, then starts the gRPC (and REST) endpoints.

        Returns:
            self (the bound ports are in :attr:`port` and :attr:`rest_port`).

        Raises:
            OSError: A port cannot be bound.
        """
        opts = self.options
        self.manager.start(opts.file_system_poll_wait_seconds)  # loads (and _freeze_heap)
        self.batcher = BatchScheduler(opts.batching) if opts.enable_batching else None
        full = opts.batching.max_batch_size * opts.batching.num_batch_threads
        if self.batcher is not None and opts.grpc_max_threads < full:
            log.warning(
                "grpc_max_threads=%d < max_batch_size * num_batch_threads = %d: batches can "
                "never fill (a request waiting for its batch holds a gRPC thread)",
                opts.grpc_max_threads,
                full,
            )
        self.core = ServingCore(
            self.manager, self.batcher, self.metrics, opts.request_memory_budget_bytes
        )
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(opts.grpc_max_threads, thread_name_prefix="tfrec-grpc"),
            options=[
                ("grpc.max_receive_message_length", opts.grpc_max_message_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_services(self._grpc, self.core)
        address = f"{opts.host}:{opts.port}"
        try:
            self.port = self._grpc.add_insecure_port(address)
        except RuntimeError as err:
            self.port = 0
            reason = str(err)
        else:
            reason = "address in use or not available"
        if not self.port:
            self.manager.stop()
            if self.batcher is not None:
                self.batcher.stop()
            raise OSError(f"cannot bind the gRPC port {address}: {reason}")
        self._grpc.start()
        if opts.rest_api_port:
            from tfrec.serving.rest import RestServer  # noqa: PLC0415

            self._rest = RestServer(
                self.core, opts.host, opts.rest_api_port, opts.monitoring, limits=opts.rest_limits
            )
            self._rest.start()
            self.rest_port = self._rest.port
        if self._config_file is not None and opts.model_config_file_poll_wait_seconds > 0:
            threading.Thread(
                target=self._watch_config, args=(self._config_file,), daemon=True
            ).start()
        log.info(
            "serving %s on gRPC %s:%d%s",
            sorted(self.manager.models),
            opts.host,
            self.port,
            f", REST :{self.rest_port}" if self.rest_port else "",
        )
        return self

    def _watch_config(self, path: Path) -> None:
        while not self._stopped.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                mtime = path.stat().st_mtime
                if mtime != self._config_mtime:
                    self._config_mtime = mtime
                    self.manager.set_models(load_model_config(path))
                    self.manager.poll()
                    log.info("reloaded %s", path)
            except (OSError, ValueError) as err:
                log.error("cannot reload %s, keeping the current models: %s", path, err)

    def stop(self, grace: float | None = None) -> None:
        """Stops accepting requests, lets in-flight ones finish, then releases everything.

        Everything ends within ``grace`` plus a fraction of a second: requests
        finishing within the grace are answered; gRPC cancels the others, the
        batcher fails them with UNAVAILABLE, and their count is kept in
        :attr:`abandoned_requests` (their threads may still be running).

        Args:
            grace: Seconds in-flight requests may still take (default
                ``options.shutdown_grace_seconds``).
        """
        with self._stop_lock:
            if self._stopping:
                self._stopped.wait()
                return
            self._stopping = True
        grace = self.options.shutdown_grace_seconds if grace is None else max(0.0, grace)
        deadline = time.monotonic() + grace
        final = deadline + _STOP_MARGIN_SECONDS

        def left(until: float) -> float:
            return max(0.0, until - time.monotonic())

        log.info("shutting down (grace %.1f s)", grace)
        if self.core is not None:
            self.core.close()  # new work (e.g. on open REST connections): UNAVAILABLE
        if self.batcher is not None:
            self.batcher.flush()  # queued requests run now, in-flight ones may still enqueue
        done = self._grpc.stop(grace) if self._grpc is not None else None
        rest = None
        if self._rest is not None:  # stops accepting, then waits for its requests
            rest = threading.Thread(target=self._rest.stop, args=(grace,), daemon=True)
            rest.start()
        late = self.core.wait_idle(deadline) if self.core is not None else 0
        if self.batcher is not None:  # fails whatever is still unanswered
            late = max(late, self.batcher.stop(timeout=left(deadline)))
        if rest is not None:
            rest.join(left(final))
        if done is not None:
            done.wait(left(final))
        self.manager.stop(timeout=left(final))
        gc.unfreeze()  # the heap's objects are collectable again
        self.abandoned_requests = late
        if late:
            log.warning("%d requests outlasted the %.1f s shutdown grace", late, grace)
        log.info("server stopped")  # before wait() returns: no line after the caller moved on
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until :meth:`stop` finished; returns False on timeout."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def serve_until_signal(server: ModelServer) -> int:
    """Starts ``server`` and serves until SIGTERM/SIGINT, then shuts down gracefully.

    Returns:
        0 after a clean shutdown.
    """

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="tfrec-shutdown").start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        while not server.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
