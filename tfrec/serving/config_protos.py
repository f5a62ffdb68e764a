"""TF Serving config messages that ``tensorflow-serving-api`` does not ship.

``tensorflow_model_server`` reads ``--batching_parameters_file`` as a text
``tensorflow.serving.BatchingParameters`` (session_bundle_config.proto) and
``--monitoring_config_file`` as a text ``tensorflow.serving.MonitoringConfig``
(monitoring_config.proto). The pip package only ships the ``apis`` and
``config/model_server_config`` protos, so this module declares the two messages
with the same field names, numbers and types as upstream, in a private
descriptor pool (no clash if a later package version adds them), so files are
written and validated by ``google.protobuf.text_format`` rather than by hand.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto

# (name, number, type, label, type_name) as in upstream
# tensorflow_serving/servables/tensorflow/session_bundle_config.proto.
_BATCHING_FIELDS = (
    ("max_batch_size", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, _F.LABEL_REPEATED, ""),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, ""),
    # Newer upstream fields (names as in TF Serving's batching scheduler options). Their
    # numbers could not be checked against upstream here; files are only ever read and
    # written as *text* protos, where fields go by name, so the numbers are never used.
    (
        "enable_large_batch_splitting",
        1001,
        _F.TYPE_MESSAGE,
        _F.LABEL_OPTIONAL,
        ".google.protobuf.BoolValue",
    ),
    (
        "max_execution_batch_size",
        1002,
        _F.TYPE_MESSAGE,
        _F.LABEL_OPTIONAL,
        ".google.protobuf.Int64Value",
    ),
)
# tensorflow_serving/config/monitoring_config.proto.
_PROMETHEUS_FIELDS = (
    ("enable", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, ""),
    ("path", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
)
_MONITORING_FIELDS = (
    (
        "prometheus_config",
        1,
        _F.TYPE_MESSAGE,
        _F.LABEL_OPTIONAL,
        ".tensorflow.serving.PrometheusConfig",
    ),
)


def _add_message(
    file_proto: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: tuple[tuple[str, int, int, int, str], ...],
) -> None:
    message = file_proto.message_type.add(name=name)
    for field_name, number, field_type, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=label)
        if type_name:
            field.type_name = type_name
        if label == _F.LABEL_REPEATED and field_type == _F.TYPE_INT64:
            field.options.packed = True


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="tfrec/serving/tf_serving_configs.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers.name],
    )
    _add_message(file_proto, "BatchingParameters", _BATCHING_FIELDS)
    _add_message(file_proto, "PrometheusConfig", _PROMETHEUS_FIELDS)
    _add_message(file_proto, "MonitoringConfig", _MONITORING_FIELDS)
    pool.Add(file_proto)
    return pool


_POOL = _build_pool()
BatchingParameters: type[Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
)
MonitoringConfig: type[Message] = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
)

__all__ = ["BatchingParameters", "MonitoringConfig"]
