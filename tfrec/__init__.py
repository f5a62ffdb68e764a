"""tfrec: two-stage (retrieval + LSTM ranking) recommenders on TensorFlow Recommenders.

Importing tfrec sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is loaded, because
TensorFlow Recommenders needs Keras 2 (tf-keras). Import tfrec before tensorflow.
"""

from tfrec._compat import ensure_legacy_keras as _ensure_legacy_keras

_ensure_legacy_keras()

from tfrec._version import __version__  # noqa: E402

__all__ = ["__version__"]
