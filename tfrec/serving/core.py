"""What the gRPC and REST front ends share: resolve, run (batched), status, metadata."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
)

from tfrec.serving.batching import BatchScheduler, batch_size_of
from tfrec.serving.errors import ServingError, invalid_argument, unavailable
from tfrec.serving.manager import END, ModelManager
from tfrec.serving.metrics import Metrics
from tfrec.serving.servable import Servable
from tfrec.serving.tensors import DEFAULT_REQUEST_MEMORY_BYTES, SignatureInfo

SIGNATURE_DEF_FIELD = "signature_def"
_MAX_CACHED_SPECS = 256  # response ModelSpecs kept (servables x signatures)


def spec_version(spec: model_pb2.ModelSpec) -> tuple[int | None, str]:
    """(version or None, version_label or "") of a ModelSpec."""
    which = spec.WhichOneof("version_choice")
    if which == "version":
        return int(spec.version.value), ""
    if which == "version_label":
        return None, spec.version_label
    return None, ""


def require_model_spec(request: object) -> None:
    """TF Serving's first check of Predict, GetModelMetadata and GetModelStatus.

    Raises:
        ServingError: INVALID_ARGUMENT "Missing ModelSpec" when the request has none.
    """
    if not request.HasField("model_spec"):  # type: ignore[attr-defined]
        raise invalid_argument("Missing ModelSpec")


class ServingCore:
    """Model resolution and execution behind both APIs.

    Args:
        manager: The loaded models.
        batcher: Batch scheduler, or None to run every request directly.
        metrics: Request counters.
        request_memory_budget: Estimated input bytes a request may need
            (see :func:`tfrec.serving.tensors.decode_inputs`); 0 = no limit.
    """

    def __init__(
        self,
        manager: ModelManager,
        batcher: BatchScheduler | None,
        metrics: Metrics,
        request_memory_budget: int = DEFAULT_REQUEST_MEMORY_BYTES,
    ):
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics
        self.request_memory_budget = request_memory_budget
        self._specs: dict[tuple, model_pb2.ModelSpec] = {}
        self._active = 0
        self._closing = False
        self._idle = threading.Condition(threading.Lock())

    def _enter(self) -> None:
        """Counts a request as in flight (UNAVAILABLE once :meth:`close` was called)."""
        with self._idle:
            if self._closing:
                raise unavailable("server is shutting down")
            self._active += 1

    def _exit(self) -> None:
        with self._idle:
            self._active -= 1
            if self._closing:  # only wait_idle (after close) waits
                self._idle.notify_all()

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Counts a request as in flight, so shutdown can wait for it.

        Raises:
            ServingError: UNAVAILABLE once :meth:`close` was called.
        """
        self._enter()
        try:
            yield
        finally:
            self._exit()

    def close(self) -> None:
        """Refuses new work (UNAVAILABLE); in-flight requests go on."""
        with self._idle:
            self._closing = True
            self._idle.notify_all()

    def wait_idle(self, deadline: float) -> int:
        """Waits until nothing is in flight or ``time.monotonic()`` reaches ``deadline``.

        Returns:
            How many requests are still in flight.
        """
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(deadline - time.monotonic())
            return self._active

    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec designates (NOT_FOUND / INVALID_ARGUMENT, see ModelManager)."""
        version, label = spec_version(spec)
        return self.manager.resolve(spec.name, version, label)

    def run(
        self, servable: Servable, signature: SignatureInfo, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Runs validated inputs, through the batcher when the signature allows it.

        Raises:
            ServingError: The model's error; UNAVAILABLE while shutting down;
                the batcher's INVALID_ARGUMENT / UNAVAILABLE.
        """
        self._enter()  # (not the in_flight context manager: this runs per request)
        try:
            batcher = self.batcher
            if batcher is not None and signature.batchable and batch_size_of(inputs) is not None:
                key = (servable.name, servable.version, id(servable), signature.name)
                return batcher.run(key, lambda x: servable.run(signature.name, x), inputs)
            return servable.run(signature.name, inputs)
        finally:
            self._exit()

    def response_spec(self, servable: Servable, signature_name: str | None) -> model_pb2.ModelSpec:
        """The ModelSpec TF Serving echoes back (name, resolved version, signature).

        Built once per (servable, signature) and shared: callers copy it, never modify it.
        """
        key = (id(servable), servable.name, servable.version, signature_name)
        spec = self._specs.get(key)
        if spec is None:
            spec = model_pb2.ModelSpec(
                name=servable.name, version=wrappers_pb2.Int64Value(value=servable.version)
            )
            if signature_name is not None:
                spec.signature_name = signature_name
            if len(self._specs) >= _MAX_CACHED_SPECS:
                self._specs.clear()
            self._specs[key] = spec
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

        Like TF Serving (get_model_status_impl.cc), a ``version_label`` is
        ignored: the answer lists every version. A failed load shows its error
        once the version is END (while retries remain it is LOADING, status OK).

        Raises:
            ServingError: NOT_FOUND for an unknown model or version.
        """
        version, _label = spec_version(spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.manager.status(spec.name, version):
            row = response.model_version_status.add(version=record.version, state=record.state)
            row.status.SetInParent()  # TF Serving always sends a status (OK when no error)
            if record.error and record.state == END:
                row.status.error_code = 2  # tensorflow.error.UNKNOWN; the message says why
                row.status.error_message = record.error
        return response


def error_status_name(err: BaseException) -> str:
    """The gRPC status name a finished request is counted under."""
    return err.code.name if isinstance(err, ServingError) else "INTERNAL"
