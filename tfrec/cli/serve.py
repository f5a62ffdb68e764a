"""``tfrec serve``: serve exported models (TF Serving gRPC/REST API).

Serve models in the TF Serving layout <base>/<model>/<version>/. Uses the real
tensorflow_model_server when it is on PATH (or --backend tfserving), else tfrec's local
TF-Serving-compatible server. Give one model source: --model_config_file, --export_dir
(every model folder in it) or --model_base_path (+ --model_name).

Flags carry ``tensorflow_model_server``'s names, so the same invocation starts
either backend: the real binary when it is on PATH (``--backend auto``) or
when ``--backend tfserving`` is given, else tfrec's local server.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tfrec.cli.common import add_command
from tfrec.config import choices
from tfrec.names import ServingBackend

if TYPE_CHECKING:
    from tfrec.serving.model_config import BatchingConfig, MonitoringSettings

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``serve`` subcommand."""
    parser = add_command(subparsers, "serve", __doc__, defaults_in_help=False)
    add = parser.add_argument
    add(
        "--backend",
        choices=("auto", *choices(ServingBackend)),
        default="auto",
        help="auto: tensorflow_model_server if on PATH, else local (default: auto)",
    )
    add("--port", type=int, default=8500, help="gRPC port (default 8500)")
    add("--rest_api_port", type=int, default=0, help="REST port, 0 = off (typical: 8501)")
    add(
        "--host",
        default="127.0.0.1",
        help="local backend: interface to bind (default 127.0.0.1; 0.0.0.0 in containers)",
    )
    add("--model_name", default="default", help="model name for --model_base_path")
    add("--model_base_path", help="folder holding the model's integer version folders")
    add("--model_config_file", help="models.config (ModelServerConfig text proto)")
    add(
        "--model_config_file_poll_wait_seconds",
        type=int,
        default=0,
        help="re-read --model_config_file every N s (0 = never)",
    )
    add("--export_dir", help="tfrec export base: serve every <export_dir>/<model>/ folder")
    add(
        "--config_dir",
        help="with --export_dir: where to write models.config etc. (default: a temp dir)",
    )
    add(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="merge concurrent requests server-side",
    )
    _add_server_limits(parser)


def _add_server_limits(parser: argparse.ArgumentParser) -> None:
    """Batching, monitoring, version polling, load retries, limits and thread flags."""
    add = parser.add_argument
    add("--batching_parameters_file", help="BatchingParameters text proto")
    add("--monitoring_config_file", help="MonitoringConfig text proto (Prometheus on REST port)")
    add(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="scan for new/removed versions every N s (0 = once at start; default 1)",
    )
    add(
        "--max_num_load_retries",
        type=int,
        default=None,
        help="retries after a version's first failed load, 0 = one attempt (default 5, as "
        "tensorflow_model_server)",
    )
    add(
        "--load_retry_interval_micros",
        type=int,
        default=None,
        help="wait between those retries in microseconds, < 0 = none (default 60000000 = "
        "1 minute, as tensorflow_model_server)",
    )
    _add_local_limits(parser)


def _add_local_limits(parser: argparse.ArgumentParser) -> None:
    """The local backend's shutdown, memory, REST and gRPC limits and thread flags."""
    add = parser.add_argument
    add(
        "--shutdown_grace_seconds",
        type=float,
        default=None,
        help="local backend: on SIGTERM/SIGINT, how long in-flight requests may finish; the "
        "process exits within it plus about a second (default 30)",
    )
    add(
        "--tensorflow_thread_spinning",
        action="store_true",
        help="local backend: let TensorFlow's idle pool threads spin-wait for work "
        "(TensorFlow's default; off here because on a few cores a spinning thread takes CPU "
        "from the gRPC threads: docs/serving_performance.md)",
    )
    add(
        "--request_memory_budget_bytes",
        type=int,
        default=None,
        help="local backend: estimated input memory one request may need, beyond it "
        "RESOURCE_EXHAUSTED; 0 = no limit (default 67108864 = 64 MiB)",
    )
    add(
        "--rest_api_header_timeout_seconds",
        type=float,
        default=None,
        help="local backend: time a REST client has to send the request line and headers "
        "(also the keep-alive idle time); then 408 and close (default 10)",
    )
    add(
        "--rest_api_body_timeout_seconds",
        type=float,
        default=None,
        help="local backend: time a REST client has to send the whole body (default 30)",
    )
    add(
        "--rest_api_max_connections",
        type=int,
        default=None,
        help="local backend: REST connections served at once; more get 503 (default 256)",
    )
    add("--grpc_max_threads", type=int, default=None, help="gRPC threads (local default 64)")
    add(
        "--grpc_max_message_bytes",
        type=int,
        default=None,
        help="largest request accepted; bigger get RESOURCE_EXHAUSTED (local default 64 MiB)",
    )
    add(
        "--tensorflow_intra_op_parallelism",
        type=int,
        default=0,
        help="threads per op (0 = TensorFlow's default)",
    )
    add(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=0,
        help="ops run in parallel (0 = TensorFlow's default)",
    )
    add(
        "--dry_run",
        action="store_true",
        help="write the configs, print the tensorflow_model_server command, and exit",
    )


def _sources(args: argparse.Namespace) -> None:
    given = [n for n in ("model_config_file", "export_dir", "model_base_path") if getattr(args, n)]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of --model_config_file, --export_dir, --model_base_path "
            f"(got {['--' + n for n in given] or 'none'})"
        )


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec serve``; returns the exit code (0 after SIGTERM/SIGINT)."""
    from tfrec.serving import model_config as mc  # noqa: PLC0415
    from tfrec.serving.tfserving import find_binary, run_tfserving  # noqa: PLC0415

    _sources(args)
    binary = find_binary()
    backend = args.backend
    if backend == "auto":
        backend = "tfserving" if binary else "local"
    if backend == "tfserving" and binary is None and not args.dry_run:
        raise ValueError(
            "--backend tfserving: tensorflow_model_server is not on PATH (install it from the "
            "tensorflow/serving image or Google's apt repository, see serving/README.md), "
            "or use --backend local"
        )
    batching = (
        mc.load_batching_parameters(args.batching_parameters_file)
        if args.batching_parameters_file
        else None
    )
    monitoring = (
        mc.load_monitoring_config(args.monitoring_config_file)
        if args.monitoring_config_file
        else None
    )
    config_file = args.model_config_file
    temp_dir = None
    if args.export_dir:
        models = mc.discover_models(args.export_dir)
        out_dir = args.config_dir
        if not out_dir:
            out_dir = tempfile.mkdtemp(prefix="tfrec-serving-")
            if not args.dry_run:  # a dry run prints paths inside it: keep it
                temp_dir = out_dir
        paths = mc.write_serving_configs(out_dir, models, batching, monitoring)
        log.info("wrote %s", paths.models_config)
        config_file = str(paths.models_config)
        args.batching_parameters_file = str(paths.batching_parameters)
        if args.rest_api_port and not args.monitoring_config_file:
            args.monitoring_config_file = str(paths.monitoring_config)
            monitoring = mc.load_monitoring_config(paths.monitoring_config)
    if backend == "tfserving" or args.dry_run:
        argv = _tfserving_argv(args, config_file, binary or "tensorflow_model_server")
        if args.dry_run:
            print(" ".join(argv))
            return 0
    try:
        if backend == "tfserving":
            return run_tfserving(argv)
        code, abandoned = _run_local(args, config_file, batching, monitoring)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    if abandoned:
        _exit_now(code, abandoned)
    return code


def _exit_now(code: int, abandoned: int) -> None:
    """Exits the process at once, without waiting for abandoned requests.

    Requests that outlasted the shutdown grace still hold (non-daemon) gRPC
    threads, which the interpreter would otherwise wait for at exit.
    """
    log.warning("exiting with %d requests still running after the shutdown grace", abandoned)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _tfserving_argv(args: argparse.Namespace, config_file: str | None, binary: str) -> list[str]:
    """The ``tensorflow_model_server`` command for these flags."""
    from tfrec.serving.tfserving import TfServingFlags, tfserving_command  # noqa: PLC0415

    poll = args.file_system_poll_wait_seconds
    flags = TfServingFlags(
        port=args.port,
        rest_api_port=args.rest_api_port,
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        model_config_file=config_file,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file,
        monitoring_config_file=args.monitoring_config_file,
        file_system_poll_wait_seconds=max(1, round(poll)) if poll else 0,
        max_num_load_retries=args.max_num_load_retries,
        grpc_max_threads=args.grpc_max_threads,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
    )
    argv = tfserving_command(flags, binary)
    if args.load_retry_interval_micros is not None:
        argv.append(f"--load_retry_interval_micros={args.load_retry_interval_micros}")
    return argv


def _run_local(
    args: argparse.Namespace,
    config_file: str | None,
    batching: BatchingConfig | None,
    monitoring: MonitoringSettings | None,
) -> tuple[int, int]:
    """Serves with tfrec's local server until a signal.

    Returns:
        (exit code, requests abandoned at the end of the shutdown grace).
    """
    from tfrec.serving.model_config import ModelEntry  # noqa: PLC0415
    from tfrec.serving.rest_http import HttpLimits  # noqa: PLC0415
    from tfrec.serving.server import (  # noqa: PLC0415
        ModelServer,
        ServerOptions,
        configure_tf_threads,
        serve_until_signal,
    )

    configure_tf_threads(
        args.tensorflow_intra_op_parallelism,
        args.tensorflow_inter_op_parallelism,
        thread_spinning=args.tensorflow_thread_spinning,
    )
    options = ServerOptions(
        host=args.host,
        port=args.port,
        rest_api_port=args.rest_api_port,
        enable_batching=args.enable_batching,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        monitoring=monitoring,
    )
    optional = (
        "grpc_max_threads",
        "grpc_max_message_bytes",
        "max_num_load_retries",
        "load_retry_interval_micros",
        "shutdown_grace_seconds",
        "request_memory_budget_bytes",
    )
    for name in optional:
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    rest_limits = {
        "header_timeout_seconds": args.rest_api_header_timeout_seconds,
        "body_timeout_seconds": args.rest_api_body_timeout_seconds,
        "max_connections": args.rest_api_max_connections,
    }
    options.rest_limits = HttpLimits(**{k: v for k, v in rest_limits.items() if v is not None})
    options.__post_init__()  # validates the values set from flags
    if batching is not None:
        options.batching = batching
    models = None
    if not config_file:
        models = [ModelEntry(name=args.model_name, base_path=str(Path(args.model_base_path)))]
    server = ModelServer(models=models, options=options, model_config_file=config_file)
    code = serve_until_signal(server)
    return code, server.abandoned_requests
