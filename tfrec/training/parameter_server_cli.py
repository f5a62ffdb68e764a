"""``tfrec train --strategy parameter_server``: its flags, their checks, and each task's run.

Every task of a parameter-server cluster runs the same ``tfrec train`` command;
:func:`run` reads the task from ``TF_CONFIG``: the chief connects
(:func:`tfrec.training.parameter_server.connect`) and trains, ps and worker
tasks serve until the chief has ended. With ``--workers N --ps M`` it starts
such a cluster on this machine instead
(:func:`tfrec.training.multiworker.launch_parameter_server`). This module
imports no TensorFlow (``tfrec --help`` reads it).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from tfrec.config import choices
from tfrec.names import StrategyName
from tfrec.training import multiworker, parameter_server

#: How the flag errors name the strategy.
_WHAT = "--strategy parameter_server"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--strategy``, ``--ps`` and ``--min-shard-bytes`` to ``tfrec train``."""
    group = parser.add_argument_group(
        "distribution (parameter servers: tfrec.training.parameter_server)"
    )
    group.add_argument(
        "--strategy",
        choices=choices(StrategyName),
        help=(
            "training.strategy (default: the preset's, auto). parameter_server: "
            "ParameterServerStrategy from TF_CONFIG (chief, ps and worker tasks all run this "
            "command; retrieval runs), large tables sharded over the ps tasks"
        ),
    )
    group.add_argument(
        "--ps",
        type=int,
        metavar="M",
        help=(
            "with --workers N --strategy parameter_server: start a chief, M parameter servers "
            "and N workers on this machine (prints the TF_CONFIG of each task)"
        ),
    )
    group.add_argument(
        "--min-shard-bytes",
        type=int,
        default=parameter_server.DEFAULT_MIN_SHARD_BYTES,
        help=(
            "parameter_server: a variable of S bytes is split into min(#ps, ceil(S / this)) "
            "shards over the ps tasks (MinSizePartitioner; default 256 KiB)"
        ),
    )


def wanted(args: argparse.Namespace, kind: str, strategy: str) -> bool:
    """Whether this ``tfrec train`` is parameter-server training (and its flags fit).

    It is with ``--strategy parameter_server``, or ``auto`` when ``TF_CONFIG``
    names ``ps`` tasks (and ``--workers``/``--worker-index`` are not given).

    Args:
        args: The parsed ``tfrec train`` arguments.
        kind: The experiment kind.
        strategy: The run's ``training.strategy``.

    Raises:
        ValueError: ``--ps`` without ``--strategy parameter_server``; another
            kind than retrieval; ``--worker-index``, ``--resume`` or
            ``--max-restarts``; only one of ``--workers``/``--ps``; a count < 1.
    """
    if args.ps is not None and strategy != "parameter_server":
        raise ValueError(
            f"--ps {args.ps}: parameter servers need --strategy parameter_server "
            f"(training.strategy is {strategy!r})"
        )
    mwms = args.workers is not None or args.worker_index is not None
    auto = strategy == "auto" and not mwms
    if strategy != "parameter_server" and not (
        auto and parameter_server.has_ps_tasks(os.environ.get("TF_CONFIG"))
    ):
        return False
    if kind != "retrieval":
        raise ValueError(f"{_WHAT}: retrieval runs only, got --model {kind}")
    if args.worker_index is not None:
        raise ValueError(
            f"{_WHAT}: --worker-index is for multi_worker; each task's role comes from "
            "TF_CONFIG's task (chief, ps or worker)"
        )
    if args.resume or args.max_restarts:
        raise ValueError(f"{_WHAT}: --resume and --max-restarts are not supported")
    if (args.workers is None) != (args.ps is None):
        raise ValueError(
            f"{_WHAT}: a local cluster needs both --workers N and --ps M "
            f"(got --workers {args.workers}, --ps {args.ps})"
        )
    if args.workers is not None and (args.workers < 1 or args.ps < 1):
        raise ValueError(f"--workers {args.workers} --ps {args.ps}; expected >= 1 of each")
    return True


def run(args: argparse.Namespace, train: Callable[[], int]) -> int:
    """Starts a local cluster (``--workers --ps``), or runs this ``TF_CONFIG`` task.

    Args:
        args: The parsed ``tfrec train`` arguments (:func:`wanted` was true).
        train: Fits, evaluates, saves and exports the run (the chief's work).

    Returns:
        The exit code.

    Raises:
        ValueError: ``TF_CONFIG`` is not a parameter-server cluster (the message says why).
        TimeoutError: A task the chief, ps or worker waited for did not answer (named).
        tfrec.cli.main.CommandError: A task of the local cluster failed (named).
    """
    if args.workers is not None:
        argv = multiworker.task_argv(args._train_parser, args)
        try:
            multiworker.launch_parameter_server(
                multiworker.tfrec_command(argv, verbose=args.verbose), args.workers, args.ps
            )
        except multiworker.WorkersFailedError as err:
            from tfrec.cli.main import CommandError  # noqa: PLC0415

            raise CommandError(str(err)) from err
        print(f"wrote {Path(args.output_dir) / 'metrics.json'} (chief)")
        return 0
    task = parameter_server.read_cluster(os.environ.get("TF_CONFIG"))
    if task.task_type != "chief":
        parameter_server.serve(task, args.worker_timeout)
        return 0
    parameter_server.connect(task, args.worker_timeout, min_shard_bytes=args.min_shard_bytes)
    return train()
