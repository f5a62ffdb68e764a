#!/usr/bin/env bash
# Serve tfrec exports with the real TensorFlow Serving in Docker.
#
#   serving/run_tfserving.sh /abs/path/to/exports
#
# Mounts the export dir at /models and serving/config at /config (models.config,
# batching and monitoring configs); gRPC on 8500, REST + metrics on 8501.
set -euo pipefail
EXPORT_DIR=${1:?usage: $0 /abs/path/to/exports}
CONFIG_DIR=$(cd "$(dirname "$0")/config" && pwd)
IMAGE=${TFSERVING_IMAGE:-tensorflow/serving:2.20.0}  # >= the TensorFlow that exported the models

exec docker run --rm --name tfrec-serving \
  -p 8500:8500 -p 8501:8501 \
  -v "${EXPORT_DIR}:/models:ro" \
  -v "${CONFIG_DIR}:/config:ro" \
  "${IMAGE}" \
  --port=8500 \
  --rest_api_port=8501 \
  --model_config_file=/config/models.config \
  --model_config_file_poll_wait_seconds=60 \
  --file_system_poll_wait_seconds=30 \
  --enable_batching=true \
  --batching_parameters_file=/config/batching_parameters.txt \
  --monitoring_config_file=/config/monitoring.config \
  --allow_version_labels_for_unavailable_models=true
