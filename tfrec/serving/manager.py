"""Model versions: discovery, loading per version policy, hot reload, resolution.

:class:`ModelManager` mirrors TF Serving's file-system source + manager:

* every ``file_system_poll_wait_seconds`` it rescans each model's
  ``base_path`` (integer folders holding ``saved_model.pb`` only, see
  :mod:`tfrec.serving.versions`), loads the versions the policy wants and
  unloads the others, without a restart;
* unloading is availability-preserving: old versions stay until at least one
  wanted version is AVAILABLE, so a broken new version never takes a model
  down;
* a version that fails to load is retried like TF Serving does
  (``--max_num_load_retries``, default 5 retries after the first attempt,
  ``--load_retry_interval_micros`` apart, default 1 minute); it stays LOADING
  while retries remain and ends END with the error. Beyond TF Serving: a
  version that ran out of retries is tried again (with fresh retries) once its
  folder's files change and then stay unchanged for one poll, so a copy that
  completes late is still served without a restart;
* requests resolve ``model_spec`` (name, version or version_label) to a
  loaded :class:`~tfrec.serving.servable.Servable` (TF Serving's statuses:
  NOT_FOUND for a model or version that is not loaded, INVALID_ARGUMENT for an
  unknown label).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tfrec.serving.errors import invalid_argument, not_found
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.servable import Servable
from tfrec.serving.versions import (
    Fingerprint,
    list_versions,
    select_versions,
    version_fingerprint,
)

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
    retry_at: float = 0.0  # time.monotonic() of the next retry (state LOADING)
    failed_files: Fingerprint | None = None  # the folder's files at the last failure
    seen_files: Fingerprint | None = None  # ... when last seen changing
    seen_at: float = 0.0  # time.monotonic() of that


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
        max_num_load_retries: Retries after a version's first failed load
            (TF Serving's flag, default 5; 0 = one attempt).
        load_retry_interval_seconds: Wait between retries (TF Serving's
            ``load_retry_interval_micros``, default 1 minute; < 0 = no wait).
        on_change: Called (in the polling thread) after a poll that loaded or
            unloaded a version.
    """

    def __init__(
        self,
        models: Sequence[ModelEntry],
        load_fn: LoadFn = load_servable,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        on_change: Callable[[], None] | None = None,
    ):
        self._load_fn = load_fn
        self._on_change = on_change
        self._changed = False
        self._max_attempts = 1 + max(0, max_num_load_retries)
        self._retry_interval = max(0.0, load_retry_interval_seconds)
        # How long changed files must stay unchanged before a retry (set by start()).
        self._settle_seconds = 1.0
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

    def is_configured(self, name: str) -> bool:
        """Whether ``name`` is a configured model (no copy, no lock: per-request use).

        ``set_models`` replaces the whole dict, so reading its current reference is safe.
        """
        return name in self._models

    def set_models(self, models: Sequence[ModelEntry]) -> None:
        """Replaces the served models; removed models are unloaded at the next poll."""
        with self._lock:
            self._models = {m.name: m for m in models}
            for name in self._models:
                self._records.setdefault(name, {})

    # ----------------------------------------------------------------------- polling

    def poll(self, scan: bool = True) -> None:
        """Scans every model's base_path once, loading and unloading versions.

        Args:
            scan: False only retries failed loads that are due, without
                looking for new versions (``file_system_poll_wait_seconds=0``).
        """
        with self._poll_lock:
            self._changed = False
            for name in list(self._records):
                entry = self.models.get(name)
                if entry is None:
                    self._unload(name, set(self._records[name]))
                    with self._lock:
                        self._records.pop(name, None)
                elif scan:
                    self._poll_model(entry)
                else:
                    for record in list(self._records[name].values()):
                        if record.state == LOADING and self._load_due(record):
                            self._load(name, record)
            if self._changed and self._on_change is not None:
                self._on_change()

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
            if record.state != AVAILABLE and self._load_due(record):
                self._load(entry.name, record)
        for version, record in records.items():
            if version not in wanted and record.state == LOADING:
                record.state = END  # no longer wanted: drop its pending retries
        if not wanted and not on_disk:
            log.warning("model %s: no versions found under %s", entry.name, entry.base_path)
        if any(records[v].state == AVAILABLE for v in wanted):
            loaded = {v for v, r in records.items() if r.servable is not None}
            self._unload(entry.name, loaded - wanted)

    def _load_due(self, record: VersionRecord) -> bool:
        """Whether to (re)try loading a version that is not AVAILABLE now."""
        if record.attempts == 0:
            return True
        files = version_fingerprint(record.path)
        if files == record.failed_files:
            return record.attempts < self._max_attempts and time.monotonic() >= record.retry_at
        # Changed since the failed load (a copy in progress, or just completed):
        # start over once the files stay unchanged for a settle period.
        now = time.monotonic()
        if files != record.seen_files:
            record.seen_files, record.seen_at = files, now
            record.retry_at = now + self._settle_seconds
            return False
        if now - record.seen_at < self._settle_seconds:
            return False
        log.info("version %d: %s changed since it failed to load", record.version, record.path)
        record.attempts = 0
        return True

    def _load(self, name: str, record: VersionRecord) -> None:
        record.state, record.attempts = LOADING, record.attempts + 1
        log.info("model %s: loading version %d from %s", name, record.version, record.path)
        try:
            servable = self._load_fn(name, record.version, record.path)
        except Exception as err:  # any failure is reported in status, never fatal
            self._failed(name, record, err)
            return
        with self._lock:
            record.servable, record.state, record.error = servable, AVAILABLE, ""
            record.attempts, record.failed_files = 0, None
        self._changed = True
        log.info("model %s: version %d is AVAILABLE", name, record.version)

    def _failed(self, name: str, record: VersionRecord, err: Exception) -> None:
        record.error = f"{type(err).__name__}: {err}"
        record.failed_files = record.seen_files = version_fingerprint(record.path)
        record.seen_at = time.monotonic()
        if record.attempts < self._max_attempts:  # like TF Serving: LOADING while retrying
            record.retry_at = time.monotonic() + self._retry_interval
            log.warning(
                "model %s: version %d failed to load (attempt %d of %d), retrying in %.3g s: %s",
                name,
                record.version,
                record.attempts,
                self._max_attempts,
                self._retry_interval,
                err,
            )
            return
        record.state = END
        log.error(
            "model %s: version %d failed to load after %d attempts; giving up until its "
            "files change: %s",
            name,
            record.version,
            record.attempts,
            err,
        )

    def _unload(self, name: str, versions: set[int]) -> None:
        for version in sorted(versions):
            record = self._records[name].get(version)
            if record is None or record.servable is None:
                continue
            with self._lock:
                record.state = UNLOADING
                record.servable = None  # in-flight requests keep their own reference
                record.state = END
            self._changed = True
            log.info("model %s: unloaded version %d", name, version)

    def _next_retry(self) -> float | None:
        """The earliest pending retry time, or None."""
        with self._lock:
            times = [
                r.retry_at
                for records in self._records.values()
                for r in records.values()
                if r.state == LOADING and r.attempts
            ]
        return min(times, default=None)

    def start(self, poll_wait_seconds: float) -> None:
        """Polls now, then every ``poll_wait_seconds`` in a daemon thread.

        With ``poll_wait_seconds <= 0`` the folders are scanned once (TF
        Serving's meaning of 0), but failed loads are still retried.
        """
        if poll_wait_seconds > 0:
            self._settle_seconds = min(1.0, poll_wait_seconds)
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(poll_wait_seconds,), name="tfrec-version-poller", daemon=True
        )
        self._thread.start()

    def _loop(self, poll_wait_seconds: float) -> None:
        scan_every = poll_wait_seconds if poll_wait_seconds > 0 else None
        next_scan = time.monotonic() + scan_every if scan_every else None
        while True:
            due = [t for t in (next_scan, self._next_retry()) if t is not None]
            timeout = min([*due, time.monotonic() + 1.0]) - time.monotonic()
            if self._stop.wait(max(0.0, timeout)):
                return
            try:
                if next_scan is not None and time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + scan_every
                    self.poll()
                else:
                    self.poll(scan=False)
            except Exception:  # keep polling whatever happens
                log.exception("version poll failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stops the poll thread, waiting at most ``timeout`` s for a load in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, timeout))
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
            ServingError: INVALID_ARGUMENT for an empty name or an unknown
                label (checked first, as TF Serving does); NOT_FOUND for an
                unknown model or a version that is not loaded.
        """
        if not name:
            raise invalid_argument("ModelSpec has no name specified.")
        with self._lock:
            entry = self._models.get(name)
            records = self._records.get(name, {})
            if version is None and label:
                labels = entry.version_labels if entry is not None else {}
                if label not in labels:
                    raise invalid_argument(
                        f"Unrecognized servable version label: {label} (model {name!r} has "
                        f"labels {sorted(labels)})"
                    )
                version = labels[label]
            if entry is not None:
                if version is None:
                    latest = None
                    for record in records.values():
                        if record.servable is not None and (
                            latest is None or record.version > latest.version
                        ):
                            latest = record
                    if latest is not None:
                        return latest.servable
                else:
                    record = records.get(version)
                    if record is not None and record.servable is not None:
                        return record.servable
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            if entry is None:
                raise not_found(
                    f"Servable not found for request: {request}: model {name!r} is not served "
                    f"(served models: {sorted(self._models)})"
                )
            if version is None:
                raise not_found(f"Servable not found for request: {request}")
            loaded = sorted(v for v, r in records.items() if r.servable is not None)
            via = f" (label {label!r})" if label else ""
            raise not_found(
                f"Servable not found for request: {request}{via}; available versions: {loaded}"
            )

    def status(self, name: str, version: int | None = None) -> list[VersionRecord]:
        """Version records of a model (all, or the one asked), highest version first.

        Raises:
            ServingError: NOT_FOUND for an unknown model or a version never seen.
        """
        with self._lock:
            if name not in self._models:
                raise not_found(f"Could not find any versions of model {name}")
            records = self._records.get(name, {})
            if version is not None:
                if version not in records:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [dataclasses.replace(records[version])]
            if not records:
                raise not_found(f"Could not find any versions of model {name}")
            return [dataclasses.replace(r) for _, r in sorted(records.items(), reverse=True)]
