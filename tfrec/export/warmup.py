"""SavedModel warmup requests: ``assets.extra/tf_serving_warmup_requests``.

TF Serving replays the ``PredictionLog`` records of this TFRecord file right
after loading a version and before marking it AVAILABLE, so the first real
request does not pay for graph tracing and kernel initialisation. tfrec's
local server replays them the same way. Exporters call
:func:`build_warmup_records` and pass the bytes in their ``assets_extra``
argument under :data:`WARMUP_FILE`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from tfrec.export.layout import disk_full_error

WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = os.path.join("assets.extra", WARMUP_FILE)
MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many records.


def _predict_request(
    model_name: str, inputs: Mapping[str, np.ndarray], signature_name: str, where: str
) -> predict_pb2.PredictRequest:
    if not inputs:
        raise ValueError(f"{where}: expected a non-empty dict of input name -> array")
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.kind == "U":
            array = array.astype(object)
        try:
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: input {name!r} cannot become a tensor: {err}") from err
    return request


def build_warmup_records(
    model_name: str,
    requests: Sequence[Mapping[str, np.ndarray]],
    signature_name: str = "serving_default",
) -> bytes:
    """Serialises Predict warmup requests as TFRecord bytes.

    Args:
        model_name: Model name put in each request's ``model_spec``.
        requests: One dict of input name -> array per request, e.g.
            ``{"user_id": ["u1"], "history": [["i1", ""]], "k": np.int32([10])}``.
            String inputs may be ``str`` or ``bytes`` arrays.
        signature_name: Signature the requests call.

    Returns:
        The contents of ``assets.extra/tf_serving_warmup_requests``: one
        ``PredictionLog(predict_log=PredictLog(request=...))`` per record.

    Raises:
        ValueError: No requests, more than 1000, or an input that is not a tensor.
        ExportError: No space left for the temporary TFRecord file.
    """
    if not requests or len(requests) > MAX_WARMUP_RECORDS:
        raise ValueError(
            f"requests: got {len(requests)} warmup requests, expected 1..{MAX_WARMUP_RECORDS}"
        )
    records = [
        prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(
                request=_predict_request(model_name, inputs, signature_name, f"requests[{i}]")
            )
        ).SerializeToString()
        for i, inputs in enumerate(requests)
    ]
    with tempfile.TemporaryDirectory(prefix="tfrec-warmup-") as tmp:
        path = os.path.join(tmp, WARMUP_FILE)
        try:
            with tf.io.TFRecordWriter(path) as writer:
                for record in records:
                    writer.write(record)
        except (OSError, tf.errors.OpError) as err:
            disk_full = disk_full_error(err, path)
            if disk_full is not None:
                raise disk_full from err
            raise
        return Path(path).read_bytes()


def read_warmup_records(path: str | os.PathLike[str]) -> list[prediction_log_pb2.PredictionLog]:
    """Reads a warmup file (or a SavedModel folder holding one).

    Args:
        path: The TFRecord file, or a version folder with ``assets.extra/``.

    Returns:
        The ``PredictionLog`` records in file order.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A record is corrupt or not a ``PredictionLog``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WARMUP_PATH
    if not path.is_file():
        raise FileNotFoundError(f"warmup file {path} does not exist")
    logs = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except DecodeError as err:
                raise ValueError(f"{path}: record {index} is not a PredictionLog: {err}") from err
            if log.WhichOneof("log_type") is None:
                raise ValueError(f"{path}: record {index} is not a PredictionLog")
            logs.append(log)
    except tf.errors.DataLossError as err:
        raise ValueError(f"{path}: corrupt TFRecord file: {err.message}") from err
    return logs
