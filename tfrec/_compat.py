"""Keras 2 (tf-keras) guard.

TensorFlow Recommenders only works with Keras 2, which TensorFlow >= 2.16 serves
as ``tf.keras`` only when ``TF_USE_LEGACY_KERAS=1`` is set before ``tf.keras`` is
first resolved. Importing :mod:`tfrec` calls :func:`ensure_legacy_keras` first.
"""

from __future__ import annotations

import os
import sys

_ENV = "TF_USE_LEGACY_KERAS"
_TRUE = ("1", "true", "True")


class KerasVersionError(ImportError):
    """Raised when TensorFlow is already bound to Keras 3 in this process."""


def ensure_legacy_keras() -> None:
    """Sets ``TF_USE_LEGACY_KERAS=1`` and checks ``tf.keras`` is tf-keras.

    Raises:
        KerasVersionError: TensorFlow was imported and ``tf.keras`` already
            resolved to Keras 3 before tfrec was imported.
    """
    previous = os.environ.get(_ENV)
    os.environ[_ENV] = "1"
    if "tensorflow" not in sys.modules:
        return
    import tensorflow as tf  # noqa: PLC0415  (already imported; cheap)

    module_name = getattr(tf.keras, "__name__", "")
    if not module_name.startswith("tf_keras"):
        raise KerasVersionError(
            "tfrec needs Keras 2 (the tf-keras package), but TensorFlow was imported "
            f"before tfrec with {_ENV}={previous!r} and tf.keras is already bound to "
            f"Keras 3 ({module_name or 'keras'}). Fix: import tfrec before tensorflow, "
            f"or set the environment variable {_ENV}=1 before starting Python "
            f"(e.g. `export {_ENV}=1`, or os.environ['{_ENV}'] = '1' as the first line "
            "of your script or notebook, then restart the kernel)."
        )
