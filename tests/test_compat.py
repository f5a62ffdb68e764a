"""The Keras-2 guard: tfrec sets TF_USE_LEGACY_KERAS and refuses a Keras-3-bound TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_importing_tfrec_first_gives_tf_keras():
    result = _run(
        """
        import tfrec, os
        import tensorflow as tf, tensorflow_recommenders as tfrs
        print(os.environ["TF_USE_LEGACY_KERAS"], tf.keras.__name__.split(".")[0])
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "tf_keras"]


@pytest.mark.slow
def test_tensorflow_bound_to_keras3_first_raises_a_clear_error():
    result = _run(
        """
        import tensorflow as tf
        tf.keras.layers  # resolves tf.keras to Keras 3
        try:
            import tfrec
        except ImportError as err:
            print(type(err).__name__, "|", err)
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    name, message = result.stdout.split("|", 1)
    assert name.strip() == "KerasVersionError"
    assert "import tfrec before tensorflow" in message
    assert "TF_USE_LEGACY_KERAS=1" in message
