"""The worker side of multi-worker training: TF_CONFIG, the strategy, fault tolerance.

Each worker process of a ``MultiWorkerMirroredStrategy`` cluster (started by
``tfrec train --workers N`` on this machine, or one pod per worker on a cluster)
calls :func:`connect` at start-up, before TensorFlow runs anything:

* :func:`read_tf_config` checks ``TF_CONFIG`` (``{"cluster": {"worker": [...]},
  "task": {"type": "worker", "index": i}}``; ``--worker-index`` may supply the
  task); worker 0 (or the ``chief`` task) is the chief;
* :func:`rendezvous` waits until every peer's port answers, or fails after the
  timeout naming the address it waited for (TensorFlow's own wait for the
  cluster blocks the interpreter and cannot time out); then the strategy is
  created with RING collectives (CPU collectives over gRPC);
* :func:`backup_dir` is ``<chief run dir>/backup``, shared by every worker
  (``BackupAndRestore`` restores each worker from the chief's backup, so the run
  directory must be on a file system every worker sees).

:class:`WorkerBackup` extends ``BackupAndRestore`` with tfrec's own training
state (history, early stopping), and :func:`mean_over_workers` makes validation
metrics bitwise identical on every worker, so early stopping stops all of them
after the same epoch (every worker must run the same number of steps).

:func:`parse_tf_config`, :func:`task_index` and :func:`wait_for_peers` are also
the ``TF_CONFIG`` reading and start-up wait of parameter-server training
(:mod:`tfrec.training.parameter_server`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds a worker waits for the others before it gives up (``--worker-timeout``).
DEFAULT_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """One worker's place in the cluster (from ``TF_CONFIG``).

    Attributes:
        addresses: ``host:port`` of every task, the chief first (``chief`` job,
            then ``worker`` job, in ``TF_CONFIG`` order).
        index: This task's position in ``addresses``.
        tf_config: The complete ``TF_CONFIG`` (task included) as a dict.
    """

    addresses: tuple[str, ...]
    index: int
    tf_config: dict[str, Any]

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes the run's files (the first task)."""
        return self.index == 0

    @property
    def num_workers(self) -> int:
        """Tasks in the cluster."""
        return len(self.addresses)


def _task_list(cluster: Mapping[str, Any], job: str) -> list[str]:
    tasks = cluster.get(job, [])
    if not isinstance(tasks, list) or not all(isinstance(a, str) and ":" in a for a in tasks):
        raise ValueError(
            f"TF_CONFIG cluster.{job}={tasks!r}; expected a list of 'host:port' strings"
        )
    return tasks


def parse_tf_config(
    text: str | None, jobs: tuple[str, ...], unset: str, strategy: str
) -> tuple[dict[str, list[str]], Any]:
    """The checked ``cluster`` jobs and the raw ``task`` (None when absent) of ``TF_CONFIG``.

    Shared by :func:`read_tf_config` (``MultiWorkerMirroredStrategy``) and
    :func:`tfrec.training.parameter_server.read_cluster`.

    Args:
        text: The JSON (the environment variable's value).
        jobs: The cluster jobs the strategy takes (others are an error).
        unset: The message when ``text`` is empty.
        strategy: The strategy's name, for the message about unknown jobs.

    Returns:
        ``({job: ["host:port", ...]} for every job of ``jobs``, task or None)``.

    Raises:
        ValueError: Unset, not JSON, no cluster object, an unknown job or a bad address.
    """
    if not text:
        raise ValueError(unset)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err.msg} at char {err.pos})") from err
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG={text!r}: expected an object with a 'cluster' object")
    unknown = sorted(set(cluster) - set(jobs))
    if unknown:
        other = (
            "; a cluster with 'ps' tasks trains with --strategy parameter_server"
            if "ps" in unknown
            else ""
        )
        raise ValueError(
            f"TF_CONFIG cluster has job(s) {unknown}; {strategy} takes "
            f"{', '.join(repr(job) for job in jobs)}{other}"
        )
    return {job: _task_list(cluster, job) for job in jobs}, config.get("task")


def read_tf_config(text: str | None, worker_index: int | None = None) -> WorkerSpec:
    """Parses and checks a ``TF_CONFIG`` value.

    Args:
        text: The JSON (the environment variable's value).
        worker_index: ``--worker-index``: the ``worker`` task index, used when
            ``TF_CONFIG`` has no ``task`` (one cluster spec shared by all pods).

    Raises:
        ValueError: Unset, not JSON, no workers, a bad address or task, or a
            ``task`` that disagrees with ``worker_index``.
    """
    unset = (
        "TF_CONFIG is not set; multi-worker training needs "
        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
    )
    cluster, task = parse_tf_config(text, ("chief", "worker"), unset, "MultiWorkerMirroredStrategy")
    chiefs, workers = cluster["chief"], cluster["worker"]
    if not workers and not chiefs:
        raise ValueError("TF_CONFIG cluster.worker is empty; expected at least one 'host:port'")
    if task is None:
        if worker_index is None:
            raise ValueError("TF_CONFIG has no 'task'; set it or pass --worker-index")
        task = {"type": "worker", "index": worker_index}
    if not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task={task!r}; expected {{'type': 'worker', 'index': i}}")
    index = task_index(task, cluster)
    if worker_index is not None and (task["type"], index) != ("worker", worker_index):
        raise ValueError(f"--worker-index {worker_index} disagrees with TF_CONFIG task {task!r}")
    position = index if task["type"] == "chief" else len(chiefs) + index
    full = {
        "cluster": {k: v for k, v in cluster.items() if v},
        "task": {"type": task["type"], "index": index},
    }
    return WorkerSpec(addresses=tuple(chiefs + workers), index=position, tf_config=full)


def task_index(task: Mapping[str, Any], cluster: Mapping[str, list[str]]) -> int:
    """The checked ``index`` of ``task`` (default 0) within ``cluster[task["type"]]``.

    Raises:
        ValueError: Not an integer in ``0 .. len(cluster[type]) - 1``.
    """
    index = task.get("index", 0)
    count = len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise ValueError(
            f"TF_CONFIG task index {index!r}; expected 0..{count - 1} "
            f"(cluster.{task['type']} has {count} address(es))"
        )
    return index


def reachable(address: str, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _accept_until(listener: socket.socket, stop: threading.Event) -> None:
    """Accepts (and closes) probe connections until ``stop`` is set."""
    while not stop.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        connection.close()


def rendezvous(spec: WorkerSpec, timeout: float, poll_seconds: float = 0.2) -> None:
    """Waits until every peer's address answers, listening on this worker's port meanwhile.

    TensorFlow's own wait for the cluster cannot be interrupted (it holds the
    interpreter), so the workers meet first in Python: each listens on its
    ``TF_CONFIG`` port and connects to every other one. A peer counts as up when
    its port answers, either this listener or, once it moved on, TensorFlow's
    server on the same port.

    Raises:
        TimeoutError: A peer did not answer within ``timeout`` seconds (the
            message names its index and address).
        OSError: This worker's port cannot be listened on.
    """
    wait_for_peers(
        f"worker {spec.index}",
        spec.addresses[spec.index],
        [(f"worker {i}", a) for i, a in enumerate(spec.addresses) if i != spec.index],
        timeout,
        hint="start every worker of TF_CONFIG's cluster (or raise --worker-timeout)",
        poll_seconds=poll_seconds,
    )


def wait_for_peers(
    label: str,
    own: str,
    peers: Sequence[tuple[str, str]],
    timeout: float,
    *,
    hint: str,
    listen: bool = True,
    poll_seconds: float = 0.2,
) -> None:
    """Waits until every ``(label, host:port)`` of ``peers`` answers a TCP connection.

    Args:
        label: This task, e.g. ``"worker 0"`` or ``"chief"``.
        own: This task's ``host:port``.
        peers: The tasks to wait for.
        timeout: Seconds before giving up.
        hint: What to do, appended to the timeout message.
        listen: Accept (and close) connections on ``own``'s port meanwhile, so
            peers waiting for this task see it (:func:`rendezvous`).
        poll_seconds: Seconds between attempts.

    Raises:
        TimeoutError: A peer did not answer within ``timeout`` (named with its address).
        OSError: ``listen`` and this task's port cannot be listened on.
    """
    listener, stop, thread = None, threading.Event(), None
    if listen:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("", int(own.rpartition(":")[2])))
        except OSError as err:
            listener.close()
            raise OSError(f"{label} cannot listen on {own} ({err.strerror})") from err
        listener.listen(64)
        listener.settimeout(poll_seconds)
        thread = threading.Thread(target=_accept_until, args=(listener, stop), daemon=True)
        thread.start()
    pending = list(peers)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            pending = [(n, a) for n, a in pending if not reachable(a, timeout=poll_seconds)]
            if pending and time.monotonic() >= deadline:
                missing = ", ".join(f"{n} at {a}" for n, a in pending)
                raise TimeoutError(
                    f"{label} ({own}) waited {timeout:g} s for {missing}, which did not "
                    f"answer; {hint}"
                )
            if pending:
                time.sleep(poll_seconds)
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        if listener is not None:
            listener.close()


_STATE: dict[str, Any] = {}


def connect(
    spec: WorkerSpec,
    timeout: float = DEFAULT_TIMEOUT,
    run_dir: str | os.PathLike[str] | None = None,
) -> Any:
    """Creates this process's ``MultiWorkerMirroredStrategy`` (call once, at start-up).

    Args:
        spec: This worker (:func:`read_tf_config`).
        timeout: Seconds to wait for every peer (:func:`rendezvous`).
        run_dir: The chief's run directory (the shared ``backup/`` lives there).

    Returns:
        The strategy (also returned by ``get_strategy("multi_worker")`` afterwards).

    Raises:
        ValueError: ``timeout <= 0``, or another cluster was already joined.
        TimeoutError: A peer did not answer within ``timeout`` (named).
    """
    if not timeout > 0:
        raise ValueError(f"--worker-timeout {timeout}; expected > 0 seconds")
    if "strategy" in _STATE:
        if _STATE["spec"] != spec:
            raise ValueError("this process already joined another multi-worker cluster")
        return _STATE["strategy"]
    import tensorflow as tf  # noqa: PLC0415

    import tfrec  # noqa: F401, PLC0415  (Keras-2 guard)

    os.environ["TF_CONFIG"] = json.dumps(spec.tf_config)
    logger.info(
        "worker %d of %d (%s): waiting for the cluster", spec.index, spec.num_workers,
        spec.addresses[spec.index],
    )  # fmt: skip
    rendezvous(spec, timeout)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    logger.info(
        "Distribution: MultiWorkerMirroredStrategy, %d worker(s), %d replica(s)",
        spec.num_workers,
        strategy.num_replicas_in_sync,
    )
    _STATE.update(spec=spec, strategy=strategy, run_dir=Path(run_dir) if run_dir else None)
    return strategy


def current() -> WorkerSpec | None:
    """This process's worker (None when it joined no cluster)."""
    return _STATE.get("spec")


def joined_strategy(timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The strategy of :func:`connect`, joining the cluster of ``TF_CONFIG`` if needed."""
    if "strategy" not in _STATE:
        connect(read_tf_config(os.environ.get("TF_CONFIG")), timeout)
    return _STATE["strategy"]


def backup_dir() -> Path | None:
    """``<chief run dir>/backup`` of this worker (None outside a cluster or without a run dir)."""
    run_dir = _STATE.get("run_dir")
    return None if run_dir is None else run_dir / "backup"


def chief_run_dir() -> Path | None:
    """The chief's run directory (None outside a cluster)."""
    return _STATE.get("run_dir")


def mean_over_workers(strategy: Any, metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean of each metric over all replicas (identical on every worker).

    Every worker computes the same validation metrics from the same mirrored
    weights; the all-reduce removes any last-bit difference, so the early
    stopping decision is the same everywhere.
    """
    import tensorflow as tf  # noqa: PLC0415

    keys = sorted(metrics)
    if not keys:
        return {}
    values = tf.constant([float(metrics[k]) for k in keys], dtype=tf.float64)
    per_replica = strategy.run(lambda: tf.identity(values))
    reduced = strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None).numpy()
    return {key: float(value) for key, value in zip(keys, reduced, strict=True)}
