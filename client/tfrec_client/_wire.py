"""TF Serving's messages and method paths, without TensorFlow or generated ``_pb2`` modules.

``pip install ./client`` compiles ``client/protos/tfrec_client/*.proto`` (a
wire-compatible subset of TF Serving's API) into ``_wire.binpb``, a
``FileDescriptorSet``. Here it is loaded into a *private* descriptor pool, so
the messages keep TF Serving's full names (``tensorflow.serving.PredictRequest``:
``Any`` type URLs and gRPC paths stay the real ones) without ever clashing with
TensorFlow's own generated modules in the default pool when both are imported
in one process.
"""

from __future__ import annotations

import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DESCRIPTOR_SET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wire.binpb")


def _load_pool(path: str) -> descriptor_pool.DescriptorPool:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError as err:
        raise ImportError(
            f"{path} is missing: tfrec_client was not built from its .proto files; "
            "install it with `pip install ./client` (the build compiles client/protos)"
        ) from err
    pool = descriptor_pool.DescriptorPool()
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(file_proto)  # protoc writes dependencies first
    return pool


POOL = _load_pool(DESCRIPTOR_SET)


def _message(full_name: str) -> type:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


TensorProto = _message("tensorflow.TensorProto")
ModelSpec = _message("tensorflow.serving.ModelSpec")
PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")
GetModelMetadataRequest = _message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap = _message("tensorflow.serving.SignatureDefMap")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")
ModelVersionStatus = _message("tensorflow.serving.ModelVersionStatus")

DATA_TYPE = POOL.FindEnumTypeByName("tensorflow.DataType")
VERSION_STATE = ModelVersionStatus.DESCRIPTOR.enum_types_by_name["State"]


def method_path(service: str, method: str) -> str:
    """The gRPC path of ``service.method``, e.g. ``/tensorflow.serving.PredictionService/Predict``.

    Raises:
        KeyError: The service or method is not in the compiled protos.
    """
    found = POOL.FindServiceByName(service).methods_by_name[method]
    return f"/{found.containing_service.full_name}/{found.name}"
