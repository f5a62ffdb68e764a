"""Signatures run through a TF1 ``Session`` callable: the way TF Serving runs a SavedModel.

The local server used to call each signature as a TF2 ``ConcreteFunction``
(:class:`tfrec.serving.servable.SignatureRunner`). A function call costs Python
work on every request (one ``tf.constant`` per input, binding the inputs,
``.numpy()`` per output) and TensorFlow runs the function's graph
asynchronously on its inter-op thread pool while the calling thread waits: one
thread hand-off per call. :class:`SessionSignatures` instead loads the ``serve``
MetaGraph into its own graph and ``Session`` (as ``tensorflow_model_server``
does) and makes one ``Session`` callable per signature:

* the numpy inputs are fed as they are (strings as ``object`` arrays of
  ``bytes`` are converted in C++) and the outputs come back as numpy arrays;
* with ``inter_op_parallelism_threads = -1`` the graph runs in the calling
  thread (big ops still use the intra-op pool), so there is no hand-off;
* the graph is optimised once per callable (function calls inlined).

On the retrieval benchmark model (2 cores) a batch-1 call took 0.55 ms instead
of 0.84 ms and 0.62 ms of CPU instead of 0.80 ms; batches of 13 cost the same
per row (``docs/serving_performance.md``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

log = logging.getLogger(__name__)

# Session threading for the servables this process loads (set by
# tfrec.serving.server.configure_tf_threads; -1 inter-op = the calling thread).
_OPTIONS = {"inter_op": -1, "intra_op": 0, "thread_spinning": None}


def configure_sessions(
    inter_op: int = -1, intra_op: int = 0, thread_spinning: bool | None = None
) -> None:
    """Sets the threading of the Sessions created from now on.

    Args:
        inter_op: ``inter_op_parallelism_threads``: -1 runs every op of a call
            in the calling thread (the default here), 0 TensorFlow's pool, > 0
            a pool of that size.
        intra_op: Threads per op (0 = TensorFlow's default). TensorFlow shares
            one intra-op pool per process: the first value used wins.
        thread_spinning: False sets ``disable_thread_spinning``; None leaves
            TensorFlow's default.
    """
    _OPTIONS.update(inter_op=inter_op, intra_op=intra_op, thread_spinning=thread_spinning)


def session_config() -> config_pb2.ConfigProto:
    """The ConfigProto of a servable's Session (see :func:`configure_sessions`)."""
    config = config_pb2.ConfigProto(
        inter_op_parallelism_threads=_OPTIONS["inter_op"],
        intra_op_parallelism_threads=_OPTIONS["intra_op"],
        allow_soft_placement=True,
    )
    if _OPTIONS["thread_spinning"] is not None:
        config.experimental.disable_thread_spinning = not _OPTIONS["thread_spinning"]
    return config


def _quiet_deprecation() -> contextlib.AbstractContextManager:
    """Hides the v1 loader's deprecation warning (TF Serving's loader is the v1 one)."""
    try:
        from tensorflow.python.util import deprecation  # noqa: PLC0415  (private)

        return deprecation.silence()
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


def _tensor_names(infos: Mapping[str, meta_graph_pb2.TensorInfo]) -> list[tuple[str, str]]:
    """(alias, tensor name) sorted by alias.

    Raises:
        ValueError: A tensor is not a plain named tensor (sparse/composite encodings).
    """
    names = []
    for alias, info in sorted(infos.items()):
        if info.WhichOneof("encoding") != "name":
            raise ValueError(f"{alias!r} is a {info.WhichOneof('encoding')} tensor")
        names.append((alias, info.name))
    return names


class _Signature:
    """One signature's Session callable and its feed/fetch order."""

    def __init__(self, session: tf.compat.v1.Session, signature: meta_graph_pb2.SignatureDef):
        feeds = _tensor_names(signature.inputs)
        fetches = _tensor_names(signature.outputs)
        self.inputs = [alias for alias, _ in feeds]
        self.outputs = [alias for alias, _ in fetches]
        self.dtypes = [
            tf.as_dtype(signature.inputs[alias].dtype).as_numpy_dtype for alias in self.inputs
        ]
        options = config_pb2.CallableOptions(
            feed=[name for _, name in feeds], fetch=[name for _, name in fetches]
        )
        self.call = session._make_callable_from_options(options)  # the C++ MakeCallable


class SessionSignatures:
    """A SavedModel's ``serve`` MetaGraph in its own Session, one callable per signature.

    Args:
        path: The version folder.
        signature_defs: The signatures to make callable (key -> SignatureDef).
        tags: MetaGraph tags to load.

    Raises:
        ValueError: The model cannot run this way (the caller then uses TF2
            functions): it fails to load as a v1 SavedModel, or a signature has
            a sparse/composite input or output.
    """

    def __init__(
        self,
        path: Path,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        tags: tuple[str, ...] = ("serve",),
    ):
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph, config=session_config())
        try:
            with graph.as_default(), _quiet_deprecation():
                tf.compat.v1.saved_model.loader.load(self._session, list(tags), str(path))
            self._signatures = {
                key: _Signature(self._session, value) for key, value in signature_defs.items()
            }
        except Exception as err:  # TF raises many error types; the caller falls back
            self._session.close()
            reason = f"{type(err).__name__}: {err}"
            raise ValueError(f"{path}: cannot run in a Session: {reason}") from err

    def __contains__(self, key: str) -> bool:
        return key in self._signatures

    def run(self, key: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs signature ``key`` on validated inputs (name -> array of the signature's dtype).

        Returns:
            Output name -> array (strings as ``object`` arrays of ``bytes``).

        Raises:
            tf.errors.OpError: The graph failed (e.g. an in-graph assert).
            KeyError: An input is missing.
        """
        signature = self._signatures[key]
        args = []
        for name, dtype in zip(signature.inputs, signature.dtypes, strict=True):
            value = inputs[name]
            if value.dtype != dtype and dtype is not object:
                value = value.astype(dtype)  # (callers pass the signature's dtypes already)
            args.append(value)
        return dict(zip(signature.outputs, signature.call(*args), strict=True))

    def close(self) -> None:
        """Releases the Session (its variables and tables)."""
        self._session.close()
