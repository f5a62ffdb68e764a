"""``tfrec train --workers``/``--worker-index``: the flags, their checks, the launch and a worker.

``--workers N`` starts N worker processes of this machine (:func:`launch`, through
:func:`tfrec.training.multiworker.launch`), each running ``tfrec train
--worker-index I``; with ``--worker-index I`` the process joins the ``TF_CONFIG``
cluster as worker I (:func:`run_worker`, :mod:`tfrec.training.worker`). The group's
parser also gets the parameter-server flags
(:mod:`tfrec.training.parameter_server_cli`). This module imports no TensorFlow
(``tfrec --help`` reads it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tfrec.training import multiworker, parameter_server_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Multi-worker training flags (:mod:`tfrec.training.multiworker`, ``worker``)."""
    group = parser.add_argument_group("multi-worker training (MultiWorkerMirroredStrategy)")
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=(
            "train on N worker processes of this machine (loopback ports; retrieval runs); "
            "prints the TF_CONFIG of each worker. --batch-size stays the global batch"
        ),
    )
    group.add_argument(
        "--max-restarts",
        type=int,
        default=0,
        help="with --workers: restart all workers after one fails, up to R times "
        "(training continues from the last finished epoch: BackupAndRestore)",
    )
    group.add_argument(
        "--worker-index",
        type=int,
        metavar="I",
        help="run as worker I of the cluster in TF_CONFIG (set by --workers; on a cluster "
        "give each worker its index, or set TF_CONFIG's task); worker 0 writes --output-dir",
    )
    group.add_argument(
        "--worker-timeout",
        type=float,
        default=120.0,
        help="seconds a worker waits for the others before failing with their addresses",
    )
    parser.set_defaults(_train_parser=parser)
    parameter_server_cli.add_arguments(parser)


def check(args: argparse.Namespace, kind: str) -> None:
    """Rejects flag combinations multi-worker training does not support."""
    if kind != "retrieval":
        raise ValueError(f"--workers/--worker-index: retrieval runs only, got --model {kind}")
    if args.resume:
        raise ValueError(
            "--resume with --workers/--worker-index: a restarted cluster continues by itself "
            "from <output-dir>/backup (BackupAndRestore); start the same command again"
        )
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers {args.workers}; expected >= 1")
    if args.workers is not None and args.worker_index is not None:
        raise ValueError("--workers starts the workers itself; do not pass --worker-index")


def launch(args: argparse.Namespace) -> int:
    """Runs ``--workers`` worker processes of this machine until they succeed.

    Each one runs this command with ``--worker-index I``; ``--max-restarts``
    restarts them all after a failure.

    Returns:
        The exit code (0).

    Raises:
        tfrec.cli.main.CommandError: A worker failed (named).
    """
    command = args._train_parser
    try:
        multiworker.launch(
            lambda i: multiworker.tfrec_command(
                multiworker.worker_argv(command, args, i), verbose=args.verbose
            ),
            args.workers,
            max_restarts=args.max_restarts,
        )
    except multiworker.WorkersFailedError as err:
        from tfrec.cli.main import CommandError  # noqa: PLC0415

        raise CommandError(str(err)) from err
    print(f"wrote {Path(args.output_dir) / 'metrics.json'} (worker 0)")
    return 0


def run_worker(args: argparse.Namespace, train: Callable[[Path], int]) -> int:
    """Joins the TF_CONFIG cluster as worker ``--worker-index`` and trains.

    Worker 0 (the chief) writes ``--output-dir``; the others write the same
    files to a temporary directory they delete (every worker must run the same
    saves, which may hold collective operations).

    Args:
        args: The parsed ``tfrec train`` arguments.
        train: Fits, evaluates, saves and exports the run into the directory given.

    Returns:
        ``train``'s exit code.
    """
    import os  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from tfrec.training import worker  # noqa: PLC0415

    spec = worker.read_tf_config(os.environ.get("TF_CONFIG"), args.worker_index)
    worker.connect(spec, args.worker_timeout, run_dir=args.output_dir)
    if spec.is_chief:
        return train(Path(args.output_dir))
    scratch = Path(tempfile.mkdtemp(prefix=f"tfrec-worker{spec.index}-"))
    try:
        return train(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
