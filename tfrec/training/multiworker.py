"""``tfrec train --workers N``: a local ``MultiWorkerMirroredStrategy`` cluster of N processes.

The launcher (this module imports no TensorFlow) picks N free loopback ports,
prints the ``TF_CONFIG`` of each worker (the same JSON, with real host names,
is what each worker of a real cluster needs), and runs N copies of the same
``tfrec train`` command line with ``--worker-index i`` and ``TF_CONFIG`` set.
Their output is prefixed with ``[worker i]``. When a worker fails the others
are stopped (a ``MultiWorkerMirroredStrategy`` cannot continue without it);
with ``--max-restarts R`` the whole cluster is then started again, up to R
times, and ``BackupAndRestore`` continues from the last finished epoch
(:mod:`tfrec.training.backup`). Worker 0 is the chief: only it writes the run
directory; the others write to temporary directories they delete.

With ``--ps M --strategy parameter_server`` (:func:`launch_parameter_server`) it
starts a ``ParameterServerStrategy`` cluster instead: one chief, M parameter
servers and N workers, each running the same command with its own ``TF_CONFIG``
task (:mod:`tfrec.training.parameter_server`); the run ends when the chief does.
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
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

logger = logging.getLogger(__name__)

#: Options of the launcher that its workers do not get.
LAUNCHER_ONLY = ("workers", "max_restarts", "worker_index", "ps")
#: Seconds a stopped worker gets between SIGTERM and SIGKILL.
STOP_GRACE_SECONDS = 5.0


class WorkersFailedError(Exception):
    """A worker failed and no restart was left (the message says which and how)."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` now.

    Raises:
        ValueError: ``count < 1``.
    """
    if count < 1:
        raise ValueError(f"--workers {count}; expected >= 1")
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(addresses: Sequence[str]) -> list[str]:
    """The ``TF_CONFIG`` value of each worker of a cluster (worker ``i`` at ``addresses[i]``).

    Raises:
        ValueError: No address, or one that is not ``host:port``.
    """
    if not addresses:
        raise ValueError("addresses: expected at least one 'host:port'")
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"worker address {address!r}; expected 'host:port'")
    cluster = {"worker": list(addresses)}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(len(addresses))
    ]


def parameter_server_configs(
    chief: str, ps: Sequence[str], workers: Sequence[str]
) -> list[tuple[str, str]]:
    """``(label, TF_CONFIG)`` of every task of a parameter-server cluster, the chief first.

    Raises:
        ValueError: No ps or worker address, or one that is not ``host:port``.
    """
    if not ps or not workers:
        raise ValueError(f"ps={list(ps)}, workers={list(workers)}; expected at least one of each")
    tf_configs([chief, *ps, *workers])  # checks every address
    cluster = {"chief": [chief], "ps": list(ps), "worker": list(workers)}
    tasks = [("chief", 0)] + [("ps", i) for i in range(len(ps))]
    tasks += [("worker", i) for i in range(len(workers))]
    return [
        (
            "chief" if job == "chief" else f"{job} {index}",
            json.dumps({"cluster": cluster, "task": {"type": job, "index": index}}),
        )
        for job, index in tasks
    ]


def task_argv(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The launcher's own ``tfrec train`` arguments minus its options (:data:`LAUNCHER_ONLY`).

    Every option whose value differs from its default is written back in its
    long form (``--set`` once per value).
    """
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in LAUNCHER_ONLY or action.dest == "help":
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def worker_argv(parser: argparse.ArgumentParser, args: argparse.Namespace, index: int) -> list[str]:
    """The ``tfrec train`` arguments of worker ``index``: :func:`task_argv` + ``--worker-index``."""
    return [*task_argv(parser, args), "--worker-index", str(index)]


def _pump(stream: IO[str], prefix: str, out: IO[str]) -> None:
    """Copies ``stream`` to ``out`` line by line with ``prefix``."""
    for line in stream:
        out.write(f"{prefix}{line}")
        out.flush()
    stream.close()


class _Cluster:
    """Running task processes (``[label]``-prefixed output: ``worker i`` by default)."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        configs: Sequence[str],
        labels: Sequence[str] | None = None,
    ):
        self.processes: list[subprocess.Popen[str]] = []
        self.threads: list[threading.Thread] = []
        labels = labels or [f"worker {i}" for i in range(len(commands))]
        for index, (command, config) in enumerate(zip(commands, configs, strict=True)):
            env = {**os.environ, "TF_CONFIG": config}
            process = subprocess.Popen(
                list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            self.processes.append(process)
            for stream, out in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                thread = threading.Thread(
                    target=_pump, args=(stream, f"[{labels[index]}] ", out), daemon=True
                )
                thread.start()
                self.threads.append(thread)
        logger.info("started tasks (pids %s)", ", ".join(str(p.pid) for p in self.processes))

    def wait(
        self, poll_seconds: float = 0.2, until: Sequence[int] | None = None
    ) -> tuple[int, int] | None:
        """Waits until the processes ``until`` (default: all) succeed (None) or one fails.

        Returns:
            None, or ``(index, exit code)`` of the first process that failed.
        """
        until = range(len(self.processes)) if until is None else until
        while True:
            codes = [process.poll() for process in self.processes]
            for index, code in enumerate(codes):
                if code is not None and code != 0:
                    return index, code
            if all(codes[index] == 0 for index in until):
                return None
            time.sleep(poll_seconds)

    def stop(self) -> None:
        """SIGTERM to the workers still running, SIGKILL after :data:`STOP_GRACE_SECONDS`."""
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()  # blocked inside TensorFlow: SIGTERM is not seen
                process.wait()
        for thread in self.threads:
            thread.join(timeout=5)


def describe_exit(code: int) -> str:
    """``"exit code 1"`` or ``"signal SIGKILL"`` (a negative Popen return code)."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def launch(
    command_for: Callable[[int], list[str]],
    num_workers: int,
    *,
    max_restarts: int = 0,
    host: str = "localhost",
    on_start: Callable[[list[int]], None] | None = None,
) -> None:
    """Runs a ``num_workers``-process cluster on loopback until every worker succeeds.

    Args:
        command_for: Worker index -> its command line.
        num_workers: Processes (>= 1).
        max_restarts: Times the whole cluster is started again after a failure.
        host: The host name in ``TF_CONFIG``.
        on_start: Called with the worker pids each time the cluster starts.

    Raises:
        ValueError: ``num_workers < 1`` or ``max_restarts < 0``.
        WorkersFailedError: A worker failed after the last restart.
    """
    if max_restarts < 0:
        raise ValueError(f"--max-restarts {max_restarts}; expected >= 0")
    ports = free_ports(num_workers)
    addresses = [f"{host}:{port}" for port in ports]
    configs = tf_configs(addresses)
    print(f"{num_workers} local worker(s); the TF_CONFIG of each (on a real cluster: its hosts):")
    for index, config in enumerate(configs):
        print(f"  worker {index}: TF_CONFIG='{config}'")
    sys.stdout.flush()
    commands = [command_for(index) for index in range(num_workers)]
    for attempt in range(max_restarts + 1):
        cluster = _Cluster(commands, configs)
        if on_start is not None:
            on_start([process.pid for process in cluster.processes])
        failure = cluster.wait()
        cluster.stop()
        if failure is None:
            return
        index, code = failure
        what = f"worker {index} ({addresses[index]}) ended with {describe_exit(code)}"
        if attempt == max_restarts:
            raise WorkersFailedError(
                f"{what}; stopped the other workers"
                + (f" (after {max_restarts} restart(s))" if max_restarts else "")
                + "; its output above (prefixed [worker N]) says why"
            )
        logger.warning(
            "%s; restarting all %d workers (restart %d of %d)",
            what, num_workers, attempt + 1, max_restarts,
        )  # fmt: skip


def launch_parameter_server(
    command: Sequence[str],
    num_workers: int,
    num_ps: int,
    *,
    host: str = "localhost",
    on_start: Callable[[list[int]], None] | None = None,
) -> None:
    """Runs a chief + ``num_ps`` ps + ``num_workers`` worker cluster on loopback.

    Every task runs ``command``; its ``TF_CONFIG`` task says which it is. The
    run is over when the chief has succeeded (the ps and worker servers are then
    stopped); any task that fails first stops the others.

    Args:
        command: The command line of every task.
        num_workers: Worker processes (>= 1).
        num_ps: Parameter-server processes (>= 1).
        host: The host name in ``TF_CONFIG``.
        on_start: Called with the pids (chief, ps..., workers...) once started.

    Raises:
        ValueError: ``num_workers < 1`` or ``num_ps < 1``.
        WorkersFailedError: A task failed (named with its address and exit).
    """
    if num_workers < 1 or num_ps < 1:
        raise ValueError(f"--workers {num_workers} --ps {num_ps}; expected >= 1 of each")
    addresses = [f"{host}:{port}" for port in free_ports(1 + num_ps + num_workers)]
    tasks = parameter_server_configs(addresses[0], addresses[1 : 1 + num_ps],
                                     addresses[1 + num_ps :])  # fmt: skip
    print(
        f"parameter-server cluster: 1 chief, {num_ps} ps, {num_workers} worker(s) on this "
        "machine; the TF_CONFIG of each task (on a real cluster: its hosts):"
    )
    for label, config in tasks:
        print(f"  {label}: TF_CONFIG='{config}'")
    sys.stdout.flush()
    labels = [label for label, _ in tasks]
    cluster = _Cluster([command] * len(tasks), [config for _, config in tasks], labels)
    if on_start is not None:
        on_start([process.pid for process in cluster.processes])
    failure = cluster.wait(until=[0])
    cluster.stop()
    if failure is not None:
        index, code = failure
        raise WorkersFailedError(
            f"{labels[index]} ({addresses[index]}) ended with {describe_exit(code)}; stopped "
            f"the other tasks; its output above (prefixed [{labels[index]}]) says why"
        )


def tfrec_command(argv: Sequence[str], verbose: bool = False) -> list[str]:
    """``python -m tfrec.cli.main [-v] train ARGV`` with this interpreter."""
    return [sys.executable, "-m", "tfrec.cli.main", *(["-v"] if verbose else []), "train", *argv]
