"""Test helpers for servers and subprocesses that need no TensorFlow.

Usage from a test (``tests/`` is on ``sys.path`` under pytest's rootdir conftest)::

    from process_utils import run_fresh_child, stop_process, wait_for
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for(
    condition: Callable[[], object], timeout: float = 15.0, interval: float = 0.05
) -> None:
    """Polls ``condition`` every ``interval`` seconds until it is true.

    Raises:
        AssertionError: It is still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Sends SIGTERM and waits; kills the process if it has not exited after ``timeout``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_fresh_child(code: str, job: Any, cwd: Path) -> None:
    """Runs ``python -c code json.dumps(job)`` in a fresh process that cannot import tfrec.

    ``PYTHONPATH`` and ``TF_USE_LEGACY_KERAS`` are removed from the child's
    environment, so it sees a SavedModel as TF Serving would: stock TensorFlow only.

    Raises:
        AssertionError: The child exited non-zero (its stderr's tail is the message).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(job)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"fresh-process check failed:\n{result.stderr[-4000:]}"
