"""Model versions: discovery, loading per version policy, hot reload, resolution.

:class:`ModelManager` mirrors TF Serving's file-system source + manager:

* every ``file_system_poll_wait_seconds`` it rescans each model's
  ``base_path`` (integer folders holding ``saved_model.pb`` only, see
  :mod:`tfrec.serving.versions`), loads the versions the policy wants and
  unloads the others, without a restart;
* unloading is availability-preserving: old versions stay until at least one
  wanted version is AVAILABLE, so a broken new version never takes a model
  down;
* a version that fails to load is reported in status (state END with the
  error) and retried on later polls up to ``max_load_attempts`` times;
* requests resolve ``model_spec`` (name, version or version_label) to a
  loaded :class:`~tfrec.serving.servable.Servable` or get NOT_FOUND.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from tfrec.serving.errors import not_found
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.servable import Servable
from tfrec.serving.versions import list_versions, select_versions

log = logging.getLogger(__name__)

# tensorflow.serving.ModelVersionStatus.State values.
START, LOADING, AVAILABLE, UNLOADING, END = 10, 20, 30, 40, 50


@dataclasses.dataclass
class VersionRecord:
    """What the manager knows about one version (a row of GetModelStatus)."""

    version: int
    path: Path
    state: int = START
    error: str = ""
    attempts: int = 0
    servable: Servable | None = None


LoadFn = Callable[[str, int, Path], Servable]


def load_servable(name: str, version: int, path: Path) -> Servable:
    """Default loader: loads the SavedModel and replays its warmup requests."""
    servable = Servable(name, version, path)
    servable.warmup()
    return servable


class ModelManager:
    """Keeps each configured model's wanted versions loaded.

    Args:
        models: The models to serve.
        load_fn: Builds a servable from (name, version, path); raises on failure.
        max_load_attempts: Load attempts per version before giving up.
    """

    def __init__(
        self,
        models: Sequence[ModelEntry],
        load_fn: LoadFn = load_servable,
        max_load_attempts: int = 5,
    ):
        self._load_fn = load_fn
        self._max_attempts = max_load_attempts
        self._lock = threading.Lock()  # guards _models/_records
        self._poll_lock = threading.Lock()  # one poll at a time
        self._models: dict[str, ModelEntry] = {}
        self._records: dict[str, dict[int, VersionRecord]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_models(models)

    # ----------------------------------------------------------------- configuration

    @property
    def models(self) -> dict[str, ModelEntry]:
        """The configured models by name."""
        with self._lock:
            return dict(self._models)

    def set_models(self, models: Sequence[ModelEntry]) -> None:
        """Replaces the served models; removed models are unloaded at the next poll."""
        with self._lock:
            self._models = {m.name: m for m in models}
            for name in self._models:
                self._records.setdefault(name, {})

    # ----------------------------------------------------------------------- polling

    def poll(self) -> None:
        """Scans every model's base_path once, loading and unloading versions."""
        with self._poll_lock:
            for name in list(self._records):
                entry = self.models.get(name)
                if entry is None:
                    self._unload(name, set(self._records[name]))
                    with self._lock:
                        self._records.pop(name, None)
                    continue
                self._poll_model(entry)

    def _poll_model(self, entry: ModelEntry) -> None:
        on_disk = list_versions(entry.base_path)
        wanted = select_versions(entry.version_policy, on_disk, entry.num_versions, entry.versions)
        records = self._records[entry.name]
        for version in sorted(wanted, reverse=True):
            record = records.get(version)
            if record is None or record.path != on_disk[version]:
                record = VersionRecord(version=version, path=on_disk[version])
                with self._lock:
                    records[version] = record
            if record.state == AVAILABLE or record.attempts >= self._max_attempts:
                continue
            self._load(entry.name, record)
        if not wanted and not on_disk:
            log.warning("model %s: no versions found under %s", entry.name, entry.base_path)
        if any(records[v].state == AVAILABLE for v in wanted):
            loaded = {v for v, r in records.items() if r.servable is not None}
            self._unload(entry.name, loaded - wanted)

    def _load(self, name: str, record: VersionRecord) -> None:
        record.state, record.attempts = LOADING, record.attempts + 1
        log.info("model %s: loading version %d from %s", name, record.version, record.path)
        try:
            servable = self._load_fn(name, record.version, record.path)
        except Exception as err:  # any failure is reported in status, never fatal
            record.state, record.error = END, f"{type(err).__name__}: {err}"
            log.error(
                "model %s: version %d failed to load (attempt %d/%d): %s",
                name,
                record.version,
                record.attempts,
                self._max_attempts,
                err,
            )
            return
        with self._lock:
            record.servable, record.state, record.error = servable, AVAILABLE, ""
            record.attempts = 0
        log.info("model %s: version %d is AVAILABLE", name, record.version)

    def _unload(self, name: str, versions: set[int]) -> None:
        for version in sorted(versions):
            record = self._records[name].get(version)
            if record is None or record.servable is None:
                continue
            with self._lock:
                record.state = UNLOADING
                record.servable = None  # in-flight requests keep their own reference
                record.state = END
            log.info("model %s: unloaded version %d", name, version)

    def start(self, poll_wait_seconds: float) -> None:
        """Polls now, then every ``poll_wait_seconds`` in a daemon thread (0 = never again)."""
        self.poll()
        if poll_wait_seconds <= 0:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(poll_wait_seconds):
                try:
                    self.poll()
                except Exception:  # keep polling whatever happens
                    log.exception("version poll failed")

        self._thread = threading.Thread(target=loop, name="tfrec-version-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the poll thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # -------------------------------------------------------------------- resolution

    def resolve(self, name: str, version: int | None = None, label: str = "") -> Servable:
        """Finds the servable for a model spec.

        Args:
            name: Model name.
            version: Explicit version, or None.
            label: Version label (used when ``version`` is None), or "".

        Returns:
            The loaded servable: the explicit/labelled version, else the highest
            AVAILABLE one.

        Raises:
            ServingError: NOT_FOUND for an unknown model, label or version, or a
                version that is not loaded.
        """
        with self._lock:
            entry = self._models.get(name)
            records = self._records.get(name, {})
            if entry is None:
                raise not_found(
                    f"Servable not found for request: model {name!r} is not served "
                    f"(served models: {sorted(self._models)})"
                )
            if version is None and label:
                if label not in entry.version_labels:
                    raise not_found(
                        f"Unrecognized servable version label: {label!r} for model {name!r} "
                        f"(labels: {sorted(entry.version_labels)})"
                    )
                version = entry.version_labels[label]
            if version is None:
                available = [r for r in records.values() if r.servable is not None]
                if not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                return max(available, key=lambda r: r.version).servable  # type: ignore[return-value]
            record = records.get(version)
            if record is None or record.servable is None:
                loaded = sorted(v for v, r in records.items() if r.servable is not None)
                via = f" (label {label!r})" if label else ""
                raise not_found(
                    f"Servable not found for request: Specific({name}, {version}){via}; "
                    f"available versions: {loaded}"
                )
            return record.servable

    def status(self, name: str, version: int | None = None) -> list[VersionRecord]:
        """Version records of a model (all, or the one asked), highest version first.

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version never seen.
        """
        with self._lock:
            if name not in self._models:
                raise not_found(f"Could not find any versions of model {name!r}")
            records = self._records.get(name, {})
            if version is not None:
                if version not in records:
                    raise not_found(f"Could not find version {version} of model {name!r}")
                return [dataclasses.replace(records[version])]
            if not records:
                raise not_found(f"Could not find any versions of model {name!r}")
            return [dataclasses.replace(r) for _, r in sorted(records.items(), reverse=True)]
