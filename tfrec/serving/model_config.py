"""TF Serving config files: ``models.config``, batching parameters, monitoring.

The same files drive production ``tensorflow_model_server`` and tfrec's local
server (:mod:`tfrec.serving.server`):

* ``models.config``: text ``tensorflow.serving.ModelServerConfig`` with a
  ``model_config_list`` (name, base_path, ``model_version_policy``
  latest/specific/all, ``version_labels``), for ``--model_config_file``.
* batching parameters: text ``BatchingParameters``, for
  ``--batching_parameters_file`` (with ``--enable_batching``).
* monitoring: text ``MonitoringConfig`` (Prometheus endpoint), for
  ``--monitoring_config_file``.

All files are produced and parsed with the protobuf messages and
``google.protobuf.text_format``, and written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import text_format

from tfrec.config import JsonConfig, atomic_write_text
from tfrec.serving.config_protos import BatchingParameters, MonitoringConfig
from tfrec.serving.versions import list_versions

VersionPolicy = typing.Literal["latest", "specific", "all"]

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
MODELS_CONFIG_NAME = "models.config"
BATCHING_CONFIG_NAME = "batching_parameters.txt"
# TF Serving's splitting fields, read and written once config_protos declares them.
_SPLITTING_FIELDS = ("enable_large_batch_splitting", "max_execution_batch_size")
_SPLITTING = set(_SPLITTING_FIELDS) <= set(BatchingParameters.DESCRIPTOR.fields_by_name)
MONITORING_CONFIG_NAME = "monitoring.config"
# BatchingConfig fields that BatchingParameters holds as wrapped (optional) integers.
_WRAPPED_INT_FIELDS = (
    "max_batch_size",
    "batch_timeout_micros",
    "num_batch_threads",
    "max_enqueued_batches",
)


def _model_server_config_pb2() -> typing.Any:
    # Imported lazily: the tensorflow_serving protos import TensorFlow.
    from tensorflow_serving.config import model_server_config_pb2  # noqa: PLC0415

    return model_server_config_pb2


@dataclasses.dataclass
class ModelEntry(JsonConfig):
    """One served model: a ``config { ... }`` block of ``model_config_list``.

    Args:
        name: Model name clients put in ``model_spec.name``.
        base_path: Folder holding integer version subfolders (``<base>/<version>/``).
        version_policy: ``"latest"`` (the ``num_versions`` highest versions),
            ``"specific"`` (exactly ``versions``) or ``"all"``.
        num_versions: How many versions the ``latest`` policy keeps loaded.
        versions: The versions the ``specific`` policy serves.
        version_labels: Label -> version, e.g. ``{"stable": 1, "canary": 2}``;
            clients address them with ``model_spec.version_label``.
    """

    name: str
    base_path: str
    version_policy: VersionPolicy = "latest"
    num_versions: int = 1
    versions: list[int] = dataclasses.field(default_factory=list)
    version_labels: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ValueError(f"model name {self.name!r}: expected a non-empty name without '/'")
        if not self.base_path:
            raise ValueError(f"model {self.name!r}: base_path is empty")
        if self.version_policy not in ("latest", "specific", "all"):
            raise ValueError(
                f"model {self.name!r}: version_policy={self.version_policy!r}, "
                "expected 'latest', 'specific' or 'all'"
            )
        if self.version_policy == "latest" and self.num_versions < 1:
            raise ValueError(
                f"model {self.name!r}: num_versions={self.num_versions}, expected >= 1"
            )
        if self.version_policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: the 'specific' policy needs versions")
        for version in self.versions:
            if version < 0:
                raise ValueError(f"model {self.name!r}: version {version} is negative")
        for label, version in self.version_labels.items():
            if not label or version < 0:
                raise ValueError(
                    f"model {self.name!r}: version label {label!r} -> {version}: expected a "
                    "non-empty label and a version >= 0"
                )


@dataclasses.dataclass
class BatchingConfig(JsonConfig):
    """Server-side batching (TF Serving's ``BatchingParameters``).

    The defaults suit tfrec's local (Python) server on CPU: no timeout (TF
    Serving's default too) and one batch thread, so while a batch runs the next
    requests queue up and form the next batch by themselves, and TensorFlow's
    intra-op threads use the cores inside each batch. Measured with
    ``benchmarks/serving_load.py`` (see its report): with the previous defaults
    (2 threads, 2 ms timeout) merged batches averaged 4.6 requests at 32
    concurrent clients, with these 14.

    Args:
        max_batch_size: Largest request accepted (a bigger one gets
            INVALID_ARGUMENT, as in TF Serving) and, without splitting, the
            largest merged batch (sum of the requests' batch sizes).
        batch_timeout_micros: How long the first queued request waits for others.
        num_batch_threads: Threads running merged batches in parallel.
        max_enqueued_batches: Queue bound; beyond it requests get UNAVAILABLE.
        pad_variable_length_inputs: Pad differing non-batch dimensions (at the
            end, with ``""`` / 0) so such requests can be merged.
        allowed_batch_sizes: Optional increasing sizes a batch is padded up to
            (the last must equal the largest executed batch); empty = no padding.
        enable_large_batch_splitting: Split a request that does not fit the
            open batch into pieces of at most ``max_execution_batch_size``
            rows, run in separate batches and joined back.
        max_execution_batch_size: With splitting, the largest merged batch
            (0 = ``max_batch_size``, TF Serving's default).
    """

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    num_batch_threads: int = 1
    max_enqueued_batches: int = 100
    pad_variable_length_inputs: bool = True
    allowed_batch_sizes: list[int] = dataclasses.field(default_factory=list)
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching {name}={getattr(self, name)}, expected >= 1")
        if self.batch_timeout_micros < 0:
            raise ValueError(
                f"batching batch_timeout_micros={self.batch_timeout_micros}, expected >= 0"
            )
        if not 0 <= self.max_execution_batch_size <= self.max_batch_size:
            raise ValueError(
                f"batching max_execution_batch_size={self.max_execution_batch_size}: expected "
                f"0 (= max_batch_size) to max_batch_size={self.max_batch_size}"
            )
        sizes, largest = self.allowed_batch_sizes, self.execution_batch_size
        if sizes and (sorted(set(sizes)) != sizes or sizes[-1] != largest):
            raise ValueError(
                f"batching allowed_batch_sizes={sizes}: expected strictly increasing sizes "
                f"ending with the largest executed batch {largest}"
            )

    @property
    def execution_batch_size(self) -> int:
        """The largest batch the model runs on."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size


@dataclasses.dataclass
class MonitoringSettings(JsonConfig):
    """Prometheus monitoring (TF Serving's ``MonitoringConfig``).

    Args:
        prometheus_enable: Expose metrics on the REST port.
        prometheus_path: URL path of the metrics endpoint.
    """

    prometheus_enable: bool = True
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH

    def __post_init__(self) -> None:
        if not self.prometheus_path.startswith("/"):
            raise ValueError(
                f"prometheus_path={self.prometheus_path!r}: expected a URL path starting with '/'"
            )


@dataclasses.dataclass
class ServingConfigPaths:
    """Where :func:`write_serving_configs` put the files."""

    models_config: Path
    batching_parameters: Path
    monitoring_config: Path


# --------------------------------------------------------------------- models.config


def models_config_proto(models: Sequence[ModelEntry]) -> typing.Any:
    """Builds a ``ModelServerConfig`` message.

    Args:
        models: The models to serve; names must be unique.

    Returns:
        A ``tensorflow.serving.ModelServerConfig``.

    Raises:
        ValueError: No models, or a duplicated name.
    """
    if not models:
        raise ValueError("models: expected at least one ModelEntry")
    names = [m.name for m in models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"models: duplicated model name(s) {duplicated}")
    pb2 = _model_server_config_pb2()
    config = pb2.ModelServerConfig()
    for model in models:
        entry = config.model_config_list.config.add(
            name=model.name, base_path=model.base_path, model_platform="tensorflow"
        )
        policy = entry.model_version_policy
        if model.version_policy == "latest":
            policy.latest.num_versions = model.num_versions
        elif model.version_policy == "specific":
            policy.specific.versions.extend(sorted(set(model.versions)))
        else:
            policy.all.SetInParent()
        for label, version in sorted(model.version_labels.items()):
            entry.version_labels[label] = version
    return config


def models_config_text(models: Sequence[ModelEntry]) -> str:
    """Returns the ``models.config`` text for ``--model_config_file``."""
    return text_format.MessageToString(models_config_proto(models))


def parse_models_config(text: str, source: str = "<models.config>") -> list[ModelEntry]:
    """Parses ``models.config`` text into :class:`ModelEntry` objects.

    Args:
        text: Text-format ``ModelServerConfig``.
        source: Name used in error messages (usually the file path).

    Returns:
        One entry per ``config`` block, in file order.

    Raises:
        ValueError: Not a valid ``ModelServerConfig``, a ``custom_model_config``,
            a non-TensorFlow platform, or invalid entries.
    """
    pb2 = _model_server_config_pb2()
    config = pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValueError(f"{source}: not a valid ModelServerConfig text proto: {err}") from err
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(
            f"{source}: expected a model_config_list (custom_model_config unsupported)"
        )
    models = []
    for block in config.model_config_list.config:
        where = f"{source}: model {block.name!r}"
        if block.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"{where}: model_platform={block.model_platform!r}, expected tensorflow"
            )
        policy = block.model_version_policy
        which = policy.WhichOneof("policy_choice")
        kwargs: dict[str, typing.Any] = {}
        if which == "specific":
            kwargs = {"version_policy": "specific", "versions": list(policy.specific.versions)}
        elif which == "all":
            kwargs = {"version_policy": "all"}
        elif which == "latest":
            kwargs = {"num_versions": policy.latest.num_versions or 1}
        try:
            models.append(
                ModelEntry(
                    name=block.name,
                    base_path=block.base_path,
                    version_labels=dict(block.version_labels),
                    **kwargs,
                )
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    models_config_proto(models)  # checks there is one at least and names are unique
    return models


def load_model_config(path: str | os.PathLike[str]) -> list[ModelEntry]:
    """Reads a ``models.config`` file (see :func:`parse_models_config`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a valid model server config.
    """
    path = Path(path)
    return parse_models_config(path.read_text(encoding="utf-8"), source=str(path))


# ------------------------------------------------------------------- batching, monitoring


def batching_parameters_text(config: BatchingConfig) -> str:
    """Returns the text ``BatchingParameters`` for ``--batching_parameters_file``."""
    params = BatchingParameters()
    for name in _WRAPPED_INT_FIELDS:
        getattr(params, name).value = getattr(config, name)
    params.allowed_batch_sizes.extend(config.allowed_batch_sizes)
    params.pad_variable_length_inputs = config.pad_variable_length_inputs
    if config.enable_large_batch_splitting and _SPLITTING:
        params.enable_large_batch_splitting.value = True
        if config.max_execution_batch_size:
            params.max_execution_batch_size.value = config.max_execution_batch_size
    return text_format.MessageToString(params)


def parse_batching_parameters(text: str, source: str = "<batching>") -> BatchingConfig:
    """Parses text ``BatchingParameters``; unset fields take :class:`BatchingConfig` defaults.

    Raises:
        ValueError: Not a valid ``BatchingParameters`` text proto or invalid values.
    """
    params = BatchingParameters()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as err:
        raise ValueError(f"{source}: not a valid BatchingParameters text proto: {err}") from err
    wrapped = _WRAPPED_INT_FIELDS + (_SPLITTING_FIELDS if _SPLITTING else ())
    kwargs: dict[str, typing.Any] = {
        name: getattr(params, name).value for name in wrapped if params.HasField(name)
    }
    kwargs["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    kwargs["allowed_batch_sizes"] = list(params.allowed_batch_sizes)
    try:
        return BatchingConfig(**kwargs)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


def load_batching_parameters(path: str | os.PathLike[str]) -> BatchingConfig:
    """Reads a ``--batching_parameters_file`` (see :func:`parse_batching_parameters`)."""
    path = Path(path)
    return parse_batching_parameters(path.read_text(encoding="utf-8"), source=str(path))


def monitoring_config_text(config: MonitoringSettings) -> str:
    """Returns the text ``MonitoringConfig`` for ``--monitoring_config_file``."""
    message = MonitoringConfig()
    message.prometheus_config.enable = config.prometheus_enable
    message.prometheus_config.path = config.prometheus_path
    return text_format.MessageToString(message)


def load_monitoring_config(path: str | os.PathLike[str]) -> MonitoringSettings:
    """Reads a ``--monitoring_config_file``.

    Raises:
        ValueError: Not a valid ``MonitoringConfig`` text proto.
    """
    path = Path(path)
    message = MonitoringConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message)
    except text_format.ParseError as err:
        raise ValueError(f"{path}: not a valid MonitoringConfig text proto: {err}") from err
    prometheus = message.prometheus_config
    return MonitoringSettings(
        prometheus_enable=prometheus.enable,
        prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH,
    )


# ------------------------------------------------------------------------ generation


def discover_models(
    export_dir: str | os.PathLike[str], base_prefix: str | None = None
) -> list[ModelEntry]:
    """One ``latest`` entry per subfolder of a tfrec export dir that holds versions.

    Args:
        export_dir: tfrec export base (``<export_dir>/<model_name>/<version>/``).
        base_prefix: Path the export dir has inside the server (e.g. ``/models``
            in the tensorflow/serving container); default: the absolute local path.

    Returns:
        Entries sorted by model name.

    Raises:
        ValueError: No subfolder holds a loadable version.
    """
    root = Path(export_dir).resolve()
    models = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if list_versions(child):
            base = f"{base_prefix.rstrip('/')}/{child.name}" if base_prefix else str(child)
            models.append(ModelEntry(name=child.name, base_path=base))
    if not models:
        raise ValueError(
            f"export_dir {root}: no <model_name>/<version>/saved_model.pb found; "
            "export a model first (tfrec export)"
        )
    return models


def write_serving_configs(
    out_dir: str | os.PathLike[str],
    models: Sequence[ModelEntry],
    batching: BatchingConfig | None = None,
    monitoring: MonitoringSettings | None = None,
) -> ServingConfigPaths:
    """Writes models.config, batching_parameters.txt and monitoring.config atomically.

    Args:
        out_dir: Folder to write into (created if missing).
        models: The models to serve.
        batching: Batching parameters (default :class:`BatchingConfig`).
        monitoring: Monitoring settings (default :class:`MonitoringSettings`).

    Returns:
        The three paths.
    """
    out = Path(out_dir)
    paths = ServingConfigPaths(
        models_config=out / MODELS_CONFIG_NAME,
        batching_parameters=out / BATCHING_CONFIG_NAME,
        monitoring_config=out / MONITORING_CONFIG_NAME,
    )
    texts = (
        models_config_text(models),
        batching_parameters_text(batching or BatchingConfig()),
        monitoring_config_text(monitoring or MonitoringSettings()),
    )
    for path, text in zip(dataclasses.astuple(paths), texts, strict=True):
        atomic_write_text(path, text)
    return paths
