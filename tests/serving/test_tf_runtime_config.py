"""configure_tf_threads: TensorFlow's thread spinning is off for serving unless asked for."""

from __future__ import annotations

import subprocess
import sys

from tensorflow.python.eager import context

from tfrec.serving.server import configure_tf_threads

CHECK = """
import tfrec
from tfrec.serving.server import configure_tf_threads
configure_tf_threads(0, 0{extra})
import tensorflow as tf
from tensorflow.python.eager import context
tf.constant(1.0) + 1.0  # starts the runtime with the config set above
print(context.context().config.experimental.disable_thread_spinning)
"""


def _spinning_disabled(extra: str = "") -> str:
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(extra=extra)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def test_serving_disables_thread_spinning_before_tensorflow_starts() -> None:
    assert _spinning_disabled() == "True"
    assert _spinning_disabled(", thread_spinning=True") == "False"


def test_once_tensorflow_runs_the_config_is_left_alone() -> None:
    context.ensure_initialized()  # this test process already runs TensorFlow
    before = context.context().config.experimental.disable_thread_spinning
    configure_tf_threads(0, 0)  # must neither raise nor pretend to change a running runtime
    assert context.context().config.experimental.disable_thread_spinning == before
