"""The CLI's default output is for a reader; ``-v`` shows everything.

Runs ``python -m tfrec.cli.main train`` (synthetic data, 1 epoch, no export: about
15 s) twice in a subprocess, as a user would, with ``TF_CPP_MIN_LOG_LEVEL`` unset:
once quiet, once with ``-v``. The verbose run is the control: it shows that
TensorFlow and absl do print their lines in this environment, so their absence
from the quiet run is tfrec's doing.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# A C++ log line, absl style: "I0000 00:00:1795986680.494066    6758 port.cc:153] oneDNN ..."
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+\.cc:\d+\]", re.MULTILINE)
START_UP_NOISE = ("oneDNN", "cpu_feature_guard", "cuda", "absl::InitializeLog", "Sharding callback")
KERAS_BAR = ("━━", "====>", "[====", "ETA:")
TIMESTAMPED = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ", re.MULTILINE)


def _train(tmp_path: Path, name: str, *flags: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [
        sys.executable,
        "-m",
        "tfrec.cli.main",
        *flags,
        "train",
        "--dataset=synthetic",
        "--epochs=1",
        "--no-export",
        f"--output-dir={tmp_path / name}",
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    tmp_path = tmp_path_factory.mktemp("quiet")
    return {"quiet": _train(tmp_path, "quiet"), "verbose": _train(tmp_path, "verbose", "-v")}


def test_default_output_has_no_library_noise(runs):
    done = runs["quiet"]
    both = done.stdout + done.stderr
    for noise in START_UP_NOISE + KERAS_BAR:
        assert noise not in both, f"{noise!r} in the default output:\n{both}"
    assert not NATIVE_LINE.search(both), both
    # Messages only: no time, level or logger name in front of them.
    assert not TIMESTAMPED.search(done.stderr), done.stderr


def test_default_output_is_one_line_per_epoch_and_the_results(runs):
    done = runs["quiet"]
    epoch_lines = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("epoch 1/1 done:"), done.stderr
    assert "val_ndcg@10=" in epoch_lines[0]
    assert '"test/ndcg@10"' in done.stdout  # the command's result, on stdout


def test_verbose_shows_debug_lines_and_tensorflow_output(runs):
    done = runs["verbose"]
    # MetricEarlyStopping's per-epoch line is DEBUG: hidden by default, shown with -v.
    assert re.search(
        r"^\d\d:\d\d:\d\d DEBUG tfrec\.training\.callbacks: epoch 1 validation",
        done.stderr,
        re.MULTILINE,
    ), done.stderr
    assert "epoch 1 validation" not in runs["quiet"].stderr
    assert NATIVE_LINE.search(done.stderr), "-v should leave TensorFlow's C++ lines alone"
    assert "INFO absl: Sharding callback" in done.stderr  # checkpoint saving, every epoch


def test_demo_waits_on_one_line_and_names_the_log_when_the_server_dies(tmp_path, capsys, caplog):
    from tfrec.cli import demo

    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.wait()
    target = f"127.0.0.1:{demo._free_port()}"  # nothing listens there
    log_path = tmp_path / "server.log"
    with pytest.raises(ChildProcessError, match=r"exited with code 3 .*server\.log"):
        demo._wait_for_server(server, target, "retrieval", log_path, timeout=60.0, verbose=False)
    # One line, ended when the wait failed; no per-retry warning from the client.
    assert capsys.readouterr().out == f"[demo]     waiting for the server on {target} ...\n"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
