"""tfrec_client's protos are wire-compatible with TensorFlow's and TF Serving's own.

Every message, field, enum value and gRPC method the client defines is compared
with the descriptor of the same full name in the tensorflow /
tensorflow-serving-api wheels (which this test may import; the client may not).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor, descriptor_pool
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
)
from tfrec_client import _wire, make_tensor_proto

TF_MESSAGES = [
    tensor_pb2.TensorProto,
    predict_pb2.PredictRequest,
    predict_pb2.PredictResponse,
    get_model_metadata_pb2.GetModelMetadataRequest,
    get_model_metadata_pb2.GetModelMetadataResponse,
    get_model_metadata_pb2.SignatureDefMap,
    get_model_status_pb2.GetModelStatusRequest,
    get_model_status_pb2.GetModelStatusResponse,
    get_model_status_pb2.ModelVersionStatus,
]


def field_facts(field: descriptor.FieldDescriptor) -> tuple:
    return (
        field.number,
        field.type,
        field.is_repeated,
        field.message_type.full_name if field.message_type else None,
        field.enum_type.full_name if field.enum_type else None,
        field.containing_oneof.name if field.containing_oneof else None,
    )


def reachable(message: descriptor.Descriptor, seen: dict) -> dict:
    """full name -> descriptor for ``message`` and every message type its fields use."""
    if message.full_name not in seen:
        seen[message.full_name] = message
        for field in message.fields:
            if field.message_type is not None:
                reachable(field.message_type, seen)
    return seen


def test_every_client_field_matches_tensorflow() -> None:
    ours: dict = {}
    for name in [m.DESCRIPTOR.full_name for m in TF_MESSAGES]:
        reachable(_wire.POOL.FindMessageTypeByName(name), ours)
    # ModelSpec, TensorShapeProto(.Dim), SignatureDef, TensorInfo, StatusProto, map entries...
    assert len(ours) >= 20
    compared = 0
    for full_name, message in ours.items():
        theirs = tf_descriptor(full_name)
        for field in message.fields:
            assert field.name in theirs.fields_by_name, f"{full_name}.{field.name} not in TF"
            assert field_facts(field) == field_facts(theirs.fields_by_name[field.name]), (
                f"{full_name}.{field.name}"
            )
            compared += 1
    assert compared >= 60


def tf_descriptor(full_name: str) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(full_name)


def test_enums_match_tensorflow() -> None:
    for name in ["tensorflow.DataType", "tensorflow.error.Code"]:
        ours = {v.name: v.number for v in _wire.POOL.FindEnumTypeByName(name).values}
        theirs = {
            v.name: v.number for v in descriptor_pool.Default().FindEnumTypeByName(name).values
        }
        # DataType: the client leaves out the graph-internal *_REF values only
        assert ours == {k: v for k, v in theirs.items() if not k.endswith("_REF")}, name
    assert _wire.DATA_TYPE.values_by_name["DT_STRING"].number == types_pb2.DT_STRING == 7
    ours_states = {v.name: v.number for v in _wire.VERSION_STATE.values}
    theirs_states = get_model_status_pb2.ModelVersionStatus.State
    assert ours_states == dict(theirs_states.items())


def test_method_paths_and_types_are_tf_servings() -> None:
    services = {
        "tensorflow.serving.PredictionService": prediction_service_pb2.DESCRIPTOR,
        "tensorflow.serving.ModelService": model_service_pb2.DESCRIPTOR,
    }
    checked = []
    for service, file in services.items():
        theirs = file.services_by_name[service.rsplit(".", 1)[1]]
        for method in _wire.POOL.FindServiceByName(service).methods:
            real = theirs.methods_by_name[method.name]
            assert _wire.method_path(service, method.name) == f"/{service}/{real.name}"
            assert method.input_type.full_name == real.input_type.full_name
            assert method.output_type.full_name == real.output_type.full_name
            checked.append(_wire.method_path(service, method.name))
    assert sorted(checked) == [
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.PredictionService/Predict",
    ]


def test_requests_parse_identically_on_the_tensorflow_side() -> None:
    ours = _wire.PredictRequest()
    ours.model_spec.name = "retrieval"
    ours.model_spec.version.value = 3
    ours.model_spec.signature_name = "serving_default"
    ours.output_filter.append("scores")
    ours.inputs["user_id"].CopyFrom(make_tensor_proto(np.array(["u1", "ü"])))
    ours.inputs["k"].CopyFrom(make_tensor_proto(np.int32([2, 5])))

    expected = predict_pb2.PredictRequest()
    expected.model_spec.name = "retrieval"
    expected.model_spec.version.value = 3
    expected.model_spec.signature_name = "serving_default"
    expected.output_filter.append("scores")
    expected.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array(["u1", "ü"])))
    expected.inputs["k"].CopyFrom(tf.make_tensor_proto(np.int32([2, 5])))

    assert predict_pb2.PredictRequest.FromString(ours.SerializeToString()) == expected


def test_tf_serving_fields_the_client_leaves_out_survive_a_round_trip() -> None:
    # TF Serving may send fields tfrec_client does not declare (here a TensorProto
    # variant_val and a request's client_id): they are kept as unknown fields.
    original = predict_pb2.PredictRequest(client_id=b"abc")
    original.inputs["x"].variant_val.add().type_name = "v"
    again = _wire.PredictRequest.FromString(original.SerializeToString())
    assert predict_pb2.PredictRequest.FromString(again.SerializeToString()) == original
