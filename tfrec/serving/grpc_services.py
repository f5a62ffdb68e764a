"""gRPC servicers speaking TF Serving's exact API (``tensorflow-serving-api`` protos).

* ``tensorflow.serving.PredictionService``: ``Predict`` and ``GetModelMetadata``;
  ``Classify``, ``Regress`` and ``MultiInference`` answer UNIMPLEMENTED.
* ``tensorflow.serving.ModelService``: ``GetModelStatus`` and
  ``HandleReloadConfigRequest`` (a new ``model_config_list``).

Every failure ends the RPC with its status code and a message; the server
keeps serving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tfrec.serving.core import ServingCore, error_status_name, require_model_spec
from tfrec.serving.errors import ServingError
from tfrec.serving.model_config import parse_models_config
from tfrec.serving.tensors import check_output_filter, decode_inputs, encode_outputs

log = logging.getLogger(__name__)
R = TypeVar("R")


def _handle(
    core: ServingCore,
    api: str,
    model_name: str,
    context: grpc.ServicerContext,
    body: Callable[[], R],
) -> R:
    """Runs ``body``, counting it and turning errors into gRPC statuses."""
    start = time.perf_counter()
    try:
        result = body()
    except ServingError as err:
        core.metrics.record(api, model_name, err.code.name, time.perf_counter() - start)
        context.abort(err.code, err.message)
    except Exception as err:  # never let a request take the server down
        log.exception("%s on model %r failed", api, model_name)
        core.metrics.record(api, model_name, error_status_name(err), time.perf_counter() - start)
        context.abort(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}")
    core.metrics.record(api, model_name, "OK", time.perf_counter() - start)
    return result


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``."""

    def __init__(self, core: ServingCore):
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Runs one signature of the resolved model version."""

        def body() -> predict_pb2.PredictResponse:
            require_model_spec(request)
            servable = self.core.resolve(request.model_spec)
            signature = servable.signature(request.model_spec.signature_name)
            inputs = decode_inputs(signature, request.inputs, self.core.request_memory_budget)
            output_filter = list(request.output_filter)
            check_output_filter(output_filter, list(signature.outputs))
            outputs = self.core.run(servable, signature, inputs)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(self.core.response_spec(servable, signature.name))
            encode_outputs(outputs, output_filter, into=response.outputs)
            return response

        return _handle(self.core, "Predict", request.model_spec.name, context, body)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Returns the signature_def map of the resolved version."""

        def body() -> Any:
            require_model_spec(request)
            return self.core.metadata(request.model_spec, request.metadata_field)

        return _handle(self.core, "GetModelMetadata", request.model_spec.name, context, body)

    def _unimplemented(self, api: str, request: Any, context: grpc.ServicerContext) -> Any:
        def body() -> Any:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{api} is not implemented by tfrec's local server: tfrec models expose "
                "Predict signatures only (use Predict)",
            )

        return _handle(self.core, api, request.model_spec.name, context, body)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """UNIMPLEMENTED."""
        return self._unimplemented("Classify", request, context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """UNIMPLEMENTED."""
        return self._unimplemented("Regress", request, context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """UNIMPLEMENTED (the request has no single model_spec)."""

        def body() -> Any:
            raise ServingError(
                grpc.StatusCode.UNIMPLEMENTED,
                "MultiInference is not implemented by tfrec's local server (use Predict)",
            )

        return _handle(self.core, "MultiInference", "", context, body)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``."""

    def __init__(self, core: ServingCore):
        self.core = core

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Version states of a model (the health check)."""

        def body() -> Any:
            require_model_spec(request)
            return self.core.status(request.model_spec)

        return _handle(self.core, "GetModelStatus", request.model_spec.name, context, body)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Replaces the served models with ``request.config.model_config_list``."""

        def body() -> model_management_pb2.ReloadConfigResponse:
            config: model_server_config_pb2.ModelServerConfig = request.config
            try:
                models = parse_models_config(
                    text_format.MessageToString(config), source="ReloadConfigRequest"
                )
            except ValueError as err:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from err
            self.core.manager.set_models(models)
            self.core.manager.poll()
            return model_management_pb2.ReloadConfigResponse()

        return _handle(self.core, "HandleReloadConfigRequest", "", context, body)


def add_services(server: grpc.Server, core: ServingCore) -> None:
    """Registers both services on a grpc server."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
