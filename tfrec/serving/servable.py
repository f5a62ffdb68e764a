"""One loaded SavedModel version: its signatures, metadata and execution."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from tfrec.export.warmup import WARMUP_PATH, read_warmup_records
from tfrec.serving.errors import ServingError, failed_precondition, status_code_from_int
from tfrec.serving.graph_session import SessionSignatures
from tfrec.serving.tensors import SignatureInfo, decode_inputs

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
_INTERNAL_SIGNATURES = ("__saved_model_init_op",)
SINGLE_THREADED_EXECUTOR = "SINGLE_THREADED_EXECUTOR"

try:  # TensorFlow's per-thread choice of function executor (private, hence optional)
    from tensorflow.python.eager.context import function_executor_type as _executor_type
except ImportError:  # pragma: no cover - depends on the TensorFlow version
    _executor_type = None

Tensors = dict[str, tf.Tensor]


class SignatureRunner:
    """Calls one signature's concrete function with as little work per call as possible.

    Two fast paths, each checked on the first successful call and dropped (with
    a log line) if it fails or answers differently from the plain signature call:

    * **flat call**: the input tensors in the function's flat order (sorted
      names, as ``tf.nest`` flattens keyword inputs) and its captured
      variables, given to ``ConcreteFunction._call_flat``. This skips binding
      the structured inputs and looking the captures up again (~0.1 ms per
      call, see ``docs/serving_performance.md``).
    * **single-threaded executor**: TensorFlow's ``SINGLE_THREADED_EXECUTOR``
      runs the graph's ops one after the other on the calling thread instead of
      handing them to the inter-op thread pool and waiting; the ops still use
      the intra-op pool. It cannot run graphs with low-level control flow
      (``tf.cond``/``tf.while_loop`` lowered to Switch/Merge): such a graph
      fails before running anything and the runner falls back to the default
      executor for good.

    Args:
        function: The signature's ConcreteFunction (keyword inputs).
        fast: Use the fast paths (False = always the plain signature call).
    """

    def __init__(self, function: Any, fast: bool = True):
        self._function = function
        self._lock = threading.Lock()
        self._checked = not fast or not hasattr(function, "_call_flat")
        self._order: list[str] | None = None  # None = plain signature call
        self._captures: list[Any] = []
        self._single_threaded = _executor_type is not None

    @property
    def fast_paths(self) -> tuple[bool, bool]:
        """(flat call in use, single-threaded executor in use)."""
        flat = self._order is not None
        return flat, flat and self._single_threaded

    def __call__(self, tensors: Tensors) -> Tensors:
        """Runs the signature on ``tensors`` (input name -> tensor of the signature's dtype)."""
        order = self._order
        if order is None:
            if self._checked:
                return self._function(**tensors)
            return self._first_call(tensors)
        try:
            return self._call_flat(tensors, order)
        except tf.errors.OpError as err:
            if not self._executor_refused(err):
                raise
            return self._call_flat(tensors, order)

    def _call_flat(self, tensors: Tensors, order: list[str]) -> Tensors:
        args = [tensors[name] for name in order]
        scope = (
            _executor_type(SINGLE_THREADED_EXECUTOR)
            if self._single_threaded
            else contextlib.nullcontext()
        )
        with scope:
            return self._function._call_flat(args, self._captures)

    def _executor_refused(self, err: tf.errors.OpError) -> bool:
        """True (and the default executor from now on) if ``err`` is the executor's refusal."""
        if not self._single_threaded or "Single-threaded executor" not in err.message:
            return False
        self._single_threaded = False
        log.info("signature runs on the default executor: %s", err.message.splitlines()[0])
        return True

    def _first_call(self, tensors: Tensors) -> Tensors:
        """The plain call; then, once, checks the fast paths against its answer."""
        expected = self._function(**tensors)
        with self._lock:
            if not self._checked:
                self._check_fast_paths(tensors, expected)
                self._checked = True
        return expected

    def _check_fast_paths(self, tensors: Tensors, expected: Tensors) -> None:
        """Turns the fast paths on if they reproduce ``expected`` (lock held)."""
        order = sorted(tensors)
        try:
            self._captures = list(self._function.captured_inputs)
            try:
                got = self._call_flat(tensors, order)
            except tf.errors.OpError as err:
                if not self._executor_refused(err):
                    raise
                got = self._call_flat(tensors, order)
            same = _same_outputs(expected, got)
        except Exception as err:  # a private TensorFlow API changed: stay on the plain call
            log.info("signature fast path unavailable (%s: %s)", type(err).__name__, err)
            return
        if same:
            self._order = order
        else:
            log.info("signature fast path disabled: it did not reproduce the signature call")


def _same_outputs(expected: Any, got: Any) -> bool:
    """Whether two signature results hold the same names and values."""
    if not isinstance(got, Mapping) or set(got) != set(expected):
        return False
    for name, tensor in expected.items():
        a, b = tensor.numpy(), got[name].numpy()
        nan = a.dtype.kind in "fc"
        if a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=nan):
            return False
    return True


def read_meta_graph(path: Path) -> meta_graph_pb2.MetaGraphDef:
    """Reads the ``serve``-tagged MetaGraphDef of ``path/saved_model.pb``.

    Raises:
        ValueError: The file is not a SavedModel or has no ``serve`` graph.
    """
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as err:  # protobuf raises DecodeError or RuntimeWarning-ish errors
        raise ValueError(f"{path}/saved_model.pb is not a SavedModel proto: {err}") from err
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ValueError(f"{path}: no MetaGraphDef tagged {SERVE_TAG!r}")


def _concise(message: str) -> str:
    """Keeps the ``assertion failed: ...`` line of a graph error, if there is one."""
    for line in message.splitlines():
        if "assertion failed" in line:
            return line.strip()
    return message


class Servable:
    """A loaded model version.

    Signatures run through a TF1 Session callable, as in TF Serving
    (:class:`~tfrec.serving.graph_session.SessionSignatures`); a model that cannot
    (or ``session=False``) is loaded with ``tf.saved_model.load`` and its
    signatures called as TF2 functions (:class:`SignatureRunner`).

    Args:
        name: Model name.
        version: Version number.
        path: The version folder (holding ``saved_model.pb``).
        session: Try the Session first (False: TF2 functions only).

    Raises:
        ValueError: The folder is not a loadable SavedModel.
    """

    def __init__(self, name: str, version: int, path: Path, session: bool = True):
        self.name = name
        self.version = version
        self.path = Path(path)
        meta_graph = read_meta_graph(self.path)
        self.signature_defs: dict[str, meta_graph_pb2.SignatureDef] = dict(meta_graph.signature_def)
        self.signatures = {
            key: SignatureInfo.from_signature_def(key, value)
            for key, value in self.signature_defs.items()
            if key not in _INTERNAL_SIGNATURES
        }
        self._session: SessionSignatures | None = None
        self._runners: dict[str, Callable[[Tensors], Tensors]] = {}
        if session:
            try:
                self._session = SessionSignatures(
                    self.path, {key: self.signature_defs[key] for key in self.signatures}
                )
            except ValueError as err:
                log.info("model %s version %d runs as TF2 functions: %s", name, version, err)
        if self._session is None:
            try:
                loaded = tf.saved_model.load(str(self.path), tags=[SERVE_TAG])
            except Exception as err:  # TF raises many error types for broken models
                raise ValueError(f"{self.path}: SavedModel failed to load: {err}") from err
            self._loaded = loaded
            self._runners = {
                key: SignatureRunner(function) for key, function in loaded.signatures.items()
            }
        self._lock = threading.Lock()
        self.run_count = 0

    @property
    def runtime(self) -> str:
        """``"session"`` (TF1 Session callables) or ``"function"`` (TF2 functions)."""
        return "session" if self._session is not None else "function"

    def signature(self, name: str) -> SignatureInfo:
        """Returns the signature ``name`` ("" means ``serving_default``).

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature (TF
                Serving's Predict status; its REST API answers 400 too).
        """
        key = name or DEFAULT_SIGNATURE
        runnable = self._session if self._session is not None else self._runners
        if key not in self.signatures or key not in runnable:
            raise failed_precondition(
                f'Serving signature key "{key}" not found. Model {self.name!r} version '
                f"{self.version} has {sorted(self.signatures)}"
            )
        return self.signatures[key]

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs a signature on validated inputs.

        Args:
            signature_name: Signature key ("" = ``serving_default``).
            inputs: Input name -> array, already checked against the signature.

        Returns:
            Output name -> array.

        Raises:
            ServingError: The graph failed (e.g. an in-graph assert gives
                INVALID_ARGUMENT) with the TensorFlow error's code and message.
        """
        signature = self.signature(signature_name)
        with self._lock:
            self.run_count += 1
        try:
            if self._session is not None:
                return self._session.run(signature.name, inputs)
            tensors = {
                name: tf.constant(value, dtype=signature.inputs[name].dtype)
                for name, value in inputs.items()
            }
            result = self._runners[signature.name](tensors)
        except tf.errors.OpError as err:
            raise ServingError(status_code_from_int(err.error_code), _concise(err.message)) from err
        except (TypeError, ValueError) as err:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
        return {name: tensor.numpy() for name, tensor in result.items()}

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` if present (like TF Serving).

        Returns:
            How many warmup requests ran.

        Raises:
            ValueError: The warmup file is unreadable or a request fails.
        """
        path = self.path / WARMUP_PATH
        if not path.is_file():
            return 0
        logs = read_warmup_records(path)
        for index, record in enumerate(logs):
            if record.WhichOneof("log_type") != "predict_log":
                raise ValueError(f"{path}: record {index}: only predict_log warmup is supported")
            request = record.predict_log.request
            try:
                signature = self.signature(request.model_spec.signature_name)
                self.run(signature.name, decode_inputs(signature, request.inputs))
            except ServingError as err:
                raise ValueError(f"{path}: warmup request {index} failed: {err.message}") from err
        log.info("model %s version %d: ran %d warmup requests", self.name, self.version, len(logs))
        return len(logs)
