"""tfrec: two-stage (retrieval + LSTM ranking) recommenders on TensorFlow Recommenders.

Importing tfrec sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is loaded, because
TensorFlow Recommenders needs Keras 2 (tf-keras). Import tfrec before tensorflow.

``tfrec.load_experiment(run_dir)`` reopens any saved run (retrieval, ranking,
pipeline, ...); see :mod:`tfrec.training.experiment`. It is imported on first
use, so ``import tfrec`` stays light (no TensorFlow).
"""

from typing import Any

from tfrec._compat import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()

from tfrec._version import __version__  # noqa: E402

__all__ = ["__version__", "load_experiment"]


def __getattr__(name: str) -> Any:
    """``tfrec.load_experiment``, imported on first use."""
    if name == "load_experiment":
        from tfrec.training.experiment import load_experiment  # noqa: PLC0415

        return load_experiment
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
