"""Running the real ``tensorflow_model_server`` (production backend of ``tfrec serve``).

The binary ships in the ``tensorflow/serving`` Docker image and Google's apt
repository, not on PyPI; when it is on ``PATH`` ``tfrec serve`` runs it with the
generated configs, forwarding SIGTERM/SIGINT so it shuts down gracefully.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import signal
import subprocess
from types import FrameType

log = logging.getLogger(__name__)

BINARY = "tensorflow_model_server"


def find_binary() -> str | None:
    """Path of ``tensorflow_model_server`` on PATH, or None."""
    return shutil.which(BINARY)


@dataclasses.dataclass
class TfServingFlags:
    """``tensorflow_model_server`` flags tfrec sets (None/0 = the binary's default).

    Args:
        port: gRPC port.
        rest_api_port: REST port (0 = off).
        model_name: Single-model mode: the model name.
        model_base_path: Single-model mode: its base path.
        model_config_file: Multi-model mode: ``models.config`` (wins over the above).
        model_config_file_poll_wait_seconds: Re-read period of the config file.
        enable_batching: Server-side batching.
        batching_parameters_file: ``BatchingParameters`` text file.
        monitoring_config_file: ``MonitoringConfig`` text file.
        file_system_poll_wait_seconds: Period of the scan for new versions.
        max_num_load_retries: Load retries of a failing version.
        grpc_max_threads: gRPC handler threads.
        grpc_max_message_bytes: Passed as ``grpc.max_receive_message_length``.
        tensorflow_intra_op_parallelism: Intra-op threads.
        tensorflow_inter_op_parallelism: Inter-op threads.
    """

    port: int = 8500
    rest_api_port: int = 0
    model_name: str | None = None
    model_base_path: str | None = None
    model_config_file: str | None = None
    model_config_file_poll_wait_seconds: int = 0
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None
    file_system_poll_wait_seconds: int = 1
    max_num_load_retries: int | None = None
    grpc_max_threads: int | None = None
    grpc_max_message_bytes: int | None = None
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0


def tfserving_command(flags: TfServingFlags, binary: str = BINARY) -> list[str]:
    """The ``tensorflow_model_server`` argv for ``flags``.

    Raises:
        ValueError: Neither a config file nor a model base path.
    """
    if not flags.model_config_file and not flags.model_base_path:
        raise ValueError("tensorflow_model_server needs --model_config_file or --model_base_path")
    argv = [binary, f"--port={flags.port}", f"--rest_api_port={flags.rest_api_port}"]
    if flags.model_config_file:
        argv.append(f"--model_config_file={flags.model_config_file}")
        if flags.model_config_file_poll_wait_seconds:
            argv.append(
                f"--model_config_file_poll_wait_seconds={flags.model_config_file_poll_wait_seconds}"
            )
    else:
        argv += [
            f"--model_name={flags.model_name or 'default'}",
            f"--model_base_path={flags.model_base_path}",
        ]
    if flags.enable_batching:
        argv.append("--enable_batching=true")
        if flags.batching_parameters_file:
            argv.append(f"--batching_parameters_file={flags.batching_parameters_file}")
    if flags.monitoring_config_file:
        argv.append(f"--monitoring_config_file={flags.monitoring_config_file}")
    argv.append(f"--file_system_poll_wait_seconds={flags.file_system_poll_wait_seconds}")
    optional = {
        "max_num_load_retries": flags.max_num_load_retries,
        "grpc_max_threads": flags.grpc_max_threads,
        "tensorflow_intra_op_parallelism": flags.tensorflow_intra_op_parallelism or None,
        "tensorflow_inter_op_parallelism": flags.tensorflow_inter_op_parallelism or None,
    }
    argv += [f"--{name}={value}" for name, value in optional.items() if value is not None]
    if flags.grpc_max_message_bytes:
        argv.append(
            f"--grpc_channel_arguments=grpc.max_receive_message_length={flags.grpc_max_message_bytes}"
        )
    return argv


def run_tfserving(argv: list[str]) -> int:
    """Runs the binary in the foreground, forwarding SIGTERM/SIGINT to it.

    Returns:
        Its exit code; 0 when it ended because of a forwarded signal.
    """
    log.info("running %s", " ".join(argv))
    process = subprocess.Popen(argv)

    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        forwarded.append(signum)
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = process.wait()
        # the binary has no signal handler: dying of the signal we sent is a clean stop
        return 0 if forwarded and code == -forwarded[-1] else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
