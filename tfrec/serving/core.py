"""What the gRPC and REST front ends share: resolve, run (batched), status, metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from tfrec.serving.batching import BatchScheduler, batch_size_of
from tfrec.serving.errors import ServingError, invalid_argument
from tfrec.serving.manager import ModelManager
from tfrec.serving.metrics import Metrics
from tfrec.serving.servable import Servable
from tfrec.serving.tensors import SignatureInfo

SIGNATURE_DEF_FIELD = "signature_def"


def spec_version(spec: model_pb2.ModelSpec) -> tuple[int | None, str]:
    """(version or None, version_label or "") of a ModelSpec."""
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return int(spec.version.value), ""
    if which == "version_label":
        return None, spec.version_label
    return None, ""


class ServingCore:
    """Model resolution and execution behind both APIs.

    Args:
        manager: The loaded models.
        batcher: Batch scheduler, or None to run every request directly.
        metrics: Request counters.
    """

    def __init__(self, manager: ModelManager, batcher: BatchScheduler | None, metrics: Metrics):
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics

    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec designates (raises NOT_FOUND)."""
        version, label = spec_version(spec)
        return self.manager.resolve(spec.name, version, label)

    def run(
        self, servable: Servable, signature: SignatureInfo, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs validated inputs, through the batcher when the signature allows it."""
        if self.batcher is not None and signature.batchable and batch_size_of(inputs) is not None:
            key = (servable.name, servable.version, id(servable), signature.name)
            return self.batcher.run(key, lambda x: servable.run(signature.name, x), inputs)
        return servable.run(signature.name, inputs)

    def response_spec(self, servable: Servable, signature_name: str | None) -> model_pb2.ModelSpec:
        """The ModelSpec TF Serving echoes back (name, resolved version, signature)."""
        spec = model_pb2.ModelSpec(
            name=servable.name, version=wrappers_pb2.Int64Value(value=servable.version)
        )
        if signature_name is not None:
            spec.signature_name = signature_name
        return spec

    def metadata(
        self, spec: model_pb2.ModelSpec, fields: Iterable[str]
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: the SignatureDefMap of the resolved version.

        Raises:
            ServingError: INVALID_ARGUMENT when ``fields`` is empty or holds
                anything but ``signature_def``; NOT_FOUND for an unknown model.
        """
        fields = list(fields)
        if not fields:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        unsupported = sorted(set(fields) - {SIGNATURE_DEF_FIELD})
        if unsupported:
            raise invalid_argument(
                f"Metadata field(s) {unsupported} not supported; only {SIGNATURE_DEF_FIELD!r}"
            )
        servable = self.resolve(spec)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=self.response_spec(servable, None)
        )
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def status(self, spec: model_pb2.ModelSpec) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: state of every version (or of the one asked).

        Raises:
            ServingError: NOT_FOUND for an unknown model, version or label.
        """
        version, label = spec_version(spec)
        if label:
            version = self.manager.resolve(spec.name, None, label).version
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.manager.status(spec.name, version):
            row = response.model_version_status.add(version=record.version, state=record.state)
            row.status.SetInParent()  # TF Serving always sends a status (OK when no error)
            if record.error:
                row.status.error_code = 2  # tensorflow.error.UNKNOWN; the message says why
                row.status.error_message = record.error
        return response


def error_status_name(err: BaseException) -> str:
    """The gRPC status name a finished request is counted under."""
    return err.code.name if isinstance(err, ServingError) else "INTERNAL"
