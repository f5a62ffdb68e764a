"""Test helpers for servers and subprocesses that need no TensorFlow.

Usage from a test (``tests/`` is on ``sys.path`` under pytest's rootdir conftest)::

    from process_utils import stop_process, wait_for
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable


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
