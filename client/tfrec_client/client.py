"""Thin typed gRPC client for tfrec models on TF Serving (or tfrec's local server).

Needs only ``grpcio``, ``protobuf`` and ``numpy``: the TF Serving messages come
from tfrec_client's own compiled protos (:mod:`tfrec_client._wire`) and arrays
are converted by :mod:`tfrec_client.tensors`, so TensorFlow is never imported.

Example:
    >>> with RecommenderClient("127.0.0.1:8500", "retrieval") as client:
    ...     recs = client.recommend(user_ids=["42"], histories=[["7", "12"]], k=10)
    ...     recs.item_ids[0], recs.scores[0]
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from tfrec_client import _wire
from tfrec_client.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServingError,
    UnavailableError,
    from_rpc_error,
)
from tfrec_client.tensors import dtype_name, make_ndarray, make_tensor_proto
from tfrec_client.types import ModelMetadata, Recommendations, Signature, TensorSpec, VersionStatus

# tfrec.serving.client *is* this module (it replaces itself in sys.modules), so the typed
# errors and message types are exported here too, beside tfrec_client's top level.
__all__ = [
    "DeadlineExceededError",
    "InvalidArgumentError",
    "ModelMetadata",
    "NotFoundError",
    "Recommendations",
    "RecommenderClient",
    "ResourceExhaustedError",
    "ServingError",
    "Signature",
    "TensorSpec",
    "UnavailableError",
    "VersionStatus",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_sleep = time.sleep  # indirection so tests can observe backoff

_PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
_MODEL_SERVICE = "tensorflow.serving.ModelService"


def _strings(values: Sequence[Any] | np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]


def _pad(rows: Sequence[Sequence[Any]] | np.ndarray, left: bool, where: str) -> np.ndarray:
    """Ragged string rows -> object array [B, max_len] padded with b"" (min length 1)."""
    if isinstance(rows, (str, bytes)):
        raise ValueError(f"{where}: expected one sequence of ids per row, got a single string")
    encoded = [_strings(list(row)) for row in rows]
    width = max([1, *(len(r) for r in encoded)])
    out = np.full((len(encoded), width), b"", dtype=object)
    for i, row in enumerate(encoded):
        if row:
            if left:
                out[i, width - len(row) :] = row
            else:
                out[i, : len(row)] = row
    return out


def _to_proto(name: str, value: Any, out: Any) -> None:
    try:
        make_tensor_proto(value, out=out)
    except (TypeError, ValueError) as err:
        raise ValueError(f"input {name!r}: cannot become a tensor: {err}") from err


def _decode(array: np.ndarray) -> np.ndarray:
    flat = [v.decode("utf-8", errors="replace") for v in array.reshape(-1)]
    return np.array(flat, dtype=str).reshape(array.shape)


_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16"}


def _spec(info: Any) -> TensorSpec:
    dtype = dtype_name(info.dtype).removeprefix("DT_").lower()
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorSpec(dtype=dtype, shape=dims)


def _is_loopback(target: str) -> bool:
    """Whether ``host:port`` names this machine (127.0.0.0/8, localhost, [::1])."""
    host = target.rsplit(":", 1)[0].strip("[]") if ":" in target else target
    return host in ("localhost", "::1") or host.startswith("127.")


def _stub(channel: grpc.Channel, service: str, method: str, request: type, response: type) -> Any:
    """A unary-unary callable on TF Serving's real method path."""
    return channel.unary_unary(
        _wire.method_path(service, method),
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


class RecommenderClient:
    """Typed client for one model on a TF Serving gRPC endpoint.

    Args:
        target: ``host:port`` of the server.
        model_name: ``model_spec.name``.
        version: Pin a version (default: the latest AVAILABLE one).
        version_label: Or address a label such as ``"stable"``/``"canary"``.
        signature_name: Signature for :meth:`recommend`, :meth:`rank`, :meth:`predict`.
        timeout: Deadline of every call, in seconds.
        max_retries: Retries after UNAVAILABLE (exponential backoff); other
            errors are raised at once.
        backoff_seconds: First backoff; doubles after each retry.
        max_message_bytes: Largest response accepted.

    Raises:
        ValueError: Both ``version`` and ``version_label``, or bad numbers.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = "serving_default",
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_seconds: float = 0.1,
        max_message_bytes: int = 64 * 1024 * 1024,
    ):
        if version is not None and version_label:
            raise ValueError(f"give version={version} or version_label={version_label!r}, not both")
        if timeout <= 0 or max_retries < 0 or backoff_seconds < 0:
            raise ValueError(
                f"timeout={timeout}, max_retries={max_retries}, backoff_seconds="
                f"{backoff_seconds}: expected timeout > 0 and non-negative retries/backoff"
            )
        self.target = target
        self.model_name = model_name
        self.signature_name = signature_name
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._spec = _wire.ModelSpec(name=model_name, signature_name=signature_name)
        if version is not None:
            self._spec.version.value = version
        elif version_label:
            self._spec.version_label = version_label
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
                # http(s)_proxy must not capture loopback traffic to a local server
                ("grpc.enable_http_proxy", 0 if _is_loopback(target) else 1),
            ],
        )
        self._predict_rpc = _stub(
            self._channel,
            _PREDICTION_SERVICE,
            "Predict",
            _wire.PredictRequest,
            _wire.PredictResponse,
        )
        self._metadata_rpc = _stub(
            self._channel,
            _PREDICTION_SERVICE,
            "GetModelMetadata",
            _wire.GetModelMetadataRequest,
            _wire.GetModelMetadataResponse,
        )
        self._status_rpc = _stub(
            self._channel,
            _MODEL_SERVICE,
            "GetModelStatus",
            _wire.GetModelStatusRequest,
            _wire.GetModelStatusResponse,
        )
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------- calls

    def _call(self, method: Callable[..., T], request: Any) -> T:
        """One RPC with a deadline; retries UNAVAILABLE with exponential backoff."""
        for attempt in range(self.max_retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if not isinstance(error, UnavailableError) or attempt == self.max_retries:
                    raise error from None
                delay = self.backoff_seconds * 2**attempt
                log.warning(
                    "%s unavailable (%s); retry %d/%d in %.2f s",
                    self.target,
                    error.details,
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                _sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def predict(
        self, inputs: Mapping[str, Any], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Calls Predict with arbitrary inputs.

        Args:
            inputs: Input name -> array-like (str arrays are sent as DT_STRING;
                numbers keep their numpy dtype, so pass e.g. ``np.int32``).
            output_filter: Only these outputs (default: all).

        Returns:
            Output name -> array (strings as ``bytes`` objects).

        Raises:
            ServingError: The RPC failed (a subclass per status code).
            ValueError: An input cannot be converted to a tensor.
        """
        request = _wire.PredictRequest(model_spec=self._spec, output_filter=output_filter)
        request_inputs = request.inputs
        for name, value in inputs.items():
            _to_proto(name, value, request_inputs[name])  # filled in place, no copy
        response = self._call(self._predict_rpc, request)
        return {name: make_ndarray(proto) for name, proto in response.outputs.items()}

    def recommend(
        self,
        user_ids: Sequence[str] | None = None,
        histories: Sequence[Sequence[str]] | None = None,
        k: int = 10,
    ) -> Recommendations:
        """Top-k items for a batch of users (retrieval / recommender signature).

        Args:
            user_ids: ``[B]`` user ids (default ``""`` = unknown user).
            histories: ``[B]`` item-id lists, oldest first; ragged lists are
                left-padded with ``""`` (default: empty history).
            k: Items per user, >= 1 (the server rejects k > catalogue).

        Returns:
            ``item_ids`` ``[B, k]`` (str) and ``scores`` ``[B, k]`` (float32).

        Raises:
            ValueError: Neither input given, batch sizes differ, or k < 1.
            ServingError: The RPC failed.
        """
        if user_ids is None and histories is None:
            raise ValueError("recommend: give user_ids, histories or both")
        if int(k) < 1:  # checked here too: on TF Serving a bad k fails its whole batch
            raise ValueError(f"recommend: k={k}, expected >= 1")
        if isinstance(user_ids, (str, bytes)):
            raise ValueError(f"user_ids={user_ids!r}: expected a sequence of ids, not one string")
        size = len(user_ids) if user_ids is not None else len(histories)  # type: ignore[arg-type]
        if histories is not None and len(histories) != size:
            raise ValueError(
                f"recommend: {size} user_ids but {len(histories)} histories; expected equal"
            )
        users = np.array(_strings(user_ids) if user_ids is not None else [b""] * size, dtype=object)
        history = _pad(histories if histories is not None else [[]] * size, True, "histories")
        outputs = self.predict(
            {"user_id": users, "history": history, "k": np.full(size, int(k), dtype=np.int32)}
        )
        return Recommendations(
            item_ids=_decode(outputs["item_ids"][:, :k]),
            scores=outputs["scores"][:, :k].astype(np.float32),
        )

    def rank(
        self,
        histories: Sequence[Sequence[str]],
        candidates: Sequence[Sequence[str]],
        user_ids: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Scores candidates for a batch of users (ranking signature).

        Args:
            histories: ``[B]`` item-id lists, oldest first (left-padded).
            candidates: ``[B]`` candidate lists (right-padded with ``""``).
            user_ids: Optional ``[B]`` user ids (default ``""``).

        Returns:
            float32 ``[B, C]`` with C the longest candidate list; positions
            beyond a row's own candidates are NaN.

        Raises:
            ValueError: Batch sizes differ.
            ServingError: The RPC failed.
        """
        size = len(histories)
        if len(candidates) != size or (user_ids is not None and len(user_ids) != size):
            raise ValueError(
                f"rank: {size} histories, {len(candidates)} candidates, "
                f"{'no' if user_ids is None else len(user_ids)} user_ids; expected equal sizes"
            )
        cands = _pad(candidates, False, "candidates")
        users = np.array(_strings(user_ids) if user_ids is not None else [b""] * size, dtype=object)
        scores = self.predict(
            {"user_id": users, "history": _pad(histories, True, "histories"), "candidates": cands}
        )["scores"].astype(np.float32)
        for row, items in enumerate(candidates):
            scores[row, len(items) :] = np.nan
        return scores

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=8, thread_name_prefix="tfrec-client"
                )
            return self._executor.submit(fn, *args, **kwargs)

    def recommend_async(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """:meth:`recommend` in a background thread; the Future yields Recommendations."""
        return self._submit(self.recommend, *args, **kwargs)

    def predict_async(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        """:meth:`predict` in a background thread."""
        return self._submit(self.predict, *args, **kwargs)

    # ---------------------------------------------------------------------- metadata

    def metadata(self) -> ModelMetadata:
        """The served version's signatures (GetModelMetadata)."""
        request = _wire.GetModelMetadataRequest(
            model_spec=self._spec, metadata_field=["signature_def"]
        )
        response = self._call(self._metadata_rpc, request)
        signature_map = _wire.SignatureDefMap()
        if not response.metadata["signature_def"].Unpack(signature_map):
            raise ServingError(
                grpc.StatusCode.INTERNAL,
                "metadata['signature_def'] is a "
                f"{response.metadata['signature_def'].type_url!r}, expected a SignatureDefMap",
            )
        return ModelMetadata(
            model_name=response.model_spec.name,
            version=response.model_spec.version.value,
            signatures={
                key: Signature(
                    inputs={n: _spec(i) for n, i in sig.inputs.items()},
                    outputs={n: _spec(o) for n, o in sig.outputs.items()},
                )
                for key, sig in signature_map.signature_def.items()
                if not key.startswith("__")  # e.g. __saved_model_init_op
            },
        )

    def status(self) -> list[VersionStatus]:
        """Version states (GetModelStatus) of the model (or of the pinned version)."""
        spec = _wire.ModelSpec()
        spec.CopyFrom(self._spec)
        spec.ClearField("signature_name")
        request = _wire.GetModelStatusRequest(model_spec=spec)
        response = self._call(self._status_rpc, request)
        states = _wire.VERSION_STATE.values_by_number
        return [
            VersionStatus(
                version=row.version,
                state=states[row.state].name if row.state in states else str(row.state),
                error_code=int(row.status.error_code),
                error_message=row.status.error_message,
            )
            for row in response.model_version_status
        ]

    def wait_until_available(self, timeout: float = 60.0, poll_seconds: float = 0.2) -> None:
        """Blocks until a version is AVAILABLE.

        Raises:
            UnavailableError: Not available within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                if any(s.state == "AVAILABLE" for s in self.status()):
                    return
                last = "no AVAILABLE version yet"
            except (UnavailableError, NotFoundError) as err:
                last = err.details
            _sleep(poll_seconds)
        raise UnavailableError(
            grpc.StatusCode.UNAVAILABLE,
            f"model {self.model_name!r} at {self.target} not available after {timeout} s: {last}",
        )

    # --------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Closes the channel (and the async worker threads)."""
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
