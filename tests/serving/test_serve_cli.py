"""`tfrec serve`: flags, backend choice, graceful SIGTERM/SIGINT shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tfrec.cli.main import main
from tfrec.serving.client import RecommenderClient, UnavailableError
from tfrec.serving.model_config import BatchingConfig, ModelEntry, batching_parameters_text
from tfrec.serving.server import ModelServer, ServerOptions, serve_until_signal


def test_dry_run_prints_the_tensorflow_model_server_command(export_dir, tmp_path, capsys) -> None:
    config_dir = tmp_path / "cfg"
    code = main(
        [
            "serve",
            "--export_dir",
            str(export_dir),
            "--config_dir",
            str(config_dir),
            "--port",
            "9000",
            "--rest_api_port=9001",
            "--enable_batching=true",
            "--dry_run",
        ]
    )
    assert code == 0
    command = capsys.readouterr().out.split()
    assert command == [
        "tensorflow_model_server",
        "--port=9000",
        "--rest_api_port=9001",
        f"--model_config_file={config_dir / 'models.config'}",
        "--enable_batching=true",
        f"--batching_parameters_file={config_dir / 'batching_parameters.txt'}",
        f"--monitoring_config_file={config_dir / 'monitoring.config'}",
        "--file_system_poll_wait_seconds=1",
    ]
    assert 'name: "retrieval"' in (config_dir / "models.config").read_text()


def test_model_source_must_be_exactly_one(export_dir, capsys) -> None:
    code = main(["serve", "--export_dir", str(export_dir), "--model_base_path", "x", "--dry_run"])
    assert code == 2
    assert "exactly one of" in capsys.readouterr().err


def test_sigint_stops_serve_until_signal_cleanly(export_dir) -> None:
    server = ModelServer(
        [ModelEntry("retrieval", str(export_dir / "retrieval"))],
        ServerOptions(host="127.0.0.1", port=0, shutdown_grace_seconds=5),
    )
    answers: list[list[list[str]]] = []

    def use_then_interrupt() -> None:
        while not server.port:
            time.sleep(0.02)
        with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval") as c:
            c.wait_until_available(timeout=20)
            answers.append(c.recommend(user_ids=["u"], k=1).item_ids.tolist())
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own SIGINT handler, as in a shell (a pytest-xdist worker ignores SIGINT).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        thread = threading.Thread(target=use_then_interrupt)
        thread.start()
        assert serve_until_signal(server) == 0  # returns instead of raising KeyboardInterrupt
        thread.join(timeout=10)
        assert answers == [[["a"]]]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    finally:
        signal.signal(signal.SIGINT, outer)


def test_the_stopped_line_is_logged_before_wait_returns(export_dir) -> None:
    # serve_until_signal returns once wait() does; a "server stopped" line written after
    # that (by the shutdown thread) would land after the caller moved on.
    server = ModelServer(
        [ModelEntry("retrieval", str(export_dir / "retrieval"))],
        ServerOptions(host="127.0.0.1", port=0, shutdown_grace_seconds=1),
    )
    seen: list[bool] = []

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "server stopped":
                seen.append(server.wait(timeout=0))

    logger = logging.getLogger("tfrec.serving.server")
    probe, level = Probe(), logger.level
    logger.addHandler(probe)
    logger.setLevel(logging.INFO)
    try:
        server.start()
        server.stop()
    finally:
        logger.removeHandler(probe)
        logger.setLevel(level)
    assert seen == [False]  # wait() was still blocking when the line was written
    assert server.wait(timeout=0)


def serve_subprocess(args: list[str], path_env: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if path_env is not None:
        env["PATH"] = path_env
    return subprocess.Popen(
        [sys.executable, "-m", "tfrec.cli.main", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_finishes_the_in_flight_request_and_exits_0(
    export_dir, tmp_path: Path, free_port
) -> None:
    batching = tmp_path / "batching.txt"
    # a lone request waits up to 3 s in the batch queue: it is in flight when SIGTERM lands
    batching.write_text(batching_parameters_text(BatchingConfig(batch_timeout_micros=3_000_000)))
    process = serve_subprocess(
        [
            "--backend=local",
            f"--port={free_port}",
            "--model_name=retrieval",
            f"--model_base_path={export_dir / 'retrieval'}",
            "--enable_batching",
            f"--batching_parameters_file={batching}",
        ]
    )
    try:
        with RecommenderClient(f"127.0.0.1:{free_port}", "retrieval", timeout=30) as c:
            c.wait_until_available(timeout=90)
            future = c.recommend_async(user_ids=["u"], histories=[["a"]], k=2)
            time.sleep(0.5)
            assert not future.done()
            process.send_signal(signal.SIGTERM)
            recs = future.result(timeout=30)
            assert recs.item_ids.tolist() == [["b", "c"]]
            np.testing.assert_allclose(recs.scores, [[5.01, 4.01]], rtol=1e-6)
            assert process.wait(timeout=30) == 0
        with (
            RecommenderClient(f"127.0.0.1:{free_port}", "retrieval", max_retries=0) as c,
            pytest.raises(UnavailableError),
        ):
            c.recommend(user_ids=["u"], k=1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    assert "received SIGTERM" in process.stderr.read()


@pytest.mark.slow
def test_backend_tfserving_without_the_binary_fails_clearly(export_dir, tmp_path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    process = serve_subprocess(
        ["--backend", "tfserving", "--export_dir", str(export_dir)], path_env=str(empty_bin)
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "tensorflow_model_server is not on PATH" in err


SPINNING_CASES = [([], False), (["--tensorflow_thread_spinning"], True)]


@pytest.mark.parametrize(("flags", "spinning"), SPINNING_CASES)
def test_thread_spinning_flag_reaches_the_runtime_config(export_dir, monkeypatch, flags, spinning):
    import tfrec.serving.server as server_module

    seen = {}

    class NoServer:  # records the options instead of serving
        abandoned_requests = 0

        def __init__(self, models, options, model_config_file):
            seen["port"] = options.port

    def record(intra_op, inter_op, thread_spinning=False):
        seen.update(threads=(intra_op, inter_op), spinning=thread_spinning)

    monkeypatch.setattr(server_module, "configure_tf_threads", record)
    monkeypatch.setattr(server_module, "ModelServer", NoServer)
    monkeypatch.setattr(server_module, "serve_until_signal", lambda server: 0)
    args = ["serve", "--export_dir", str(export_dir), "--port", "0"]
    assert main([*args, "--tensorflow_intra_op_parallelism", "3", *flags]) == 0
    assert seen == {"threads": (3, 0), "spinning": spinning, "port": 0}
