"""One loaded SavedModel version: its signatures, metadata and execution."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from tfrec.export.warmup import WARMUP_PATH, read_warmup_records
from tfrec.serving.errors import ServingError, failed_precondition, status_code_from_int
from tfrec.serving.tensors import SignatureInfo, decode_inputs

log = logging.getLogger(__name__)

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
_INTERNAL_SIGNATURES = ("__saved_model_init_op",)


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

    Args:
        name: Model name.
        version: Version number.
        path: The version folder (holding ``saved_model.pb``).

    Raises:
        ValueError: The folder is not a loadable SavedModel.
    """

    def __init__(self, name: str, version: int, path: Path):
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
        try:
            self._loaded = tf.saved_model.load(str(self.path), tags=[SERVE_TAG])
        except Exception as err:  # TF raises many error types for broken models
            raise ValueError(f"{self.path}: SavedModel failed to load: {err}") from err
        self._functions = dict(self._loaded.signatures)
        self._lock = threading.Lock()
        self.run_count = 0

    def signature(self, name: str) -> SignatureInfo:
        """Returns the signature ``name`` ("" means ``serving_default``).

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature (TF
                Serving's Predict status; its REST API answers 400 too).
        """
        key = name or DEFAULT_SIGNATURE
        if key not in self.signatures or key not in self._functions:
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
        function = self._functions[signature.name]
        with self._lock:
            self.run_count += 1
        try:
            tensors = {
                name: tf.constant(value, dtype=signature.inputs[name].dtype)
                for name, value in inputs.items()
            }
            result = function(**tensors)
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
