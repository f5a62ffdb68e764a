"""The Experiment contract: what every model kind implements, its registry, its saved layout.

An experiment is one model kind (``retrieval``, ``ranking``, ``pipeline``, ...)
run end to end on one dataset::

    experiment = experiment_class("ranking")(config, output_dir="runs/r1")
    experiment.fit()                 # best validation epoch restored
    experiment.evaluate()            # {"test/...": ..., "valid/...": ...}
    experiment.save()                # runs/r1/ in the RunLayout
    experiment.export("exports")     # TF Serving SavedModel(s)

    tfrec.load_experiment("runs/r1").evaluate()   # any kind, from its config.json

Every kind saves the same :class:`RunLayout` (``config.json`` carrying ``"kind"``,
``metrics.json``, vocabularies, ``weights/model``, ``checkpoints/last``, ...) and
registers its class with :func:`register_experiment`, so the CLI and the notebooks
never branch on the kind. This module imports no TensorFlow (the classes are
imported on first use).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from tfrec.config import atomic_write_text, choices
from tfrec.names import ExperimentKind, IndexKind
from tfrec.training.export_request import ExportRequest, select_exports

#: The built-in kinds and the module that registers each one (imported on first use).
_BUILTIN_MODULES: dict[str, str] = {
    kind: f"tfrec.training.{kind}" for kind in choices(ExperimentKind)
}
EXPERIMENT_KINDS: tuple[str, ...] = tuple(_BUILTIN_MODULES)
_REGISTRY: dict[str, type[Experiment]] = {}
#: The methods a registered class must have.
_CONTRACT_METHODS = ("fit", "evaluate", "save", "export", "from_dir")

E = TypeVar("E", bound=type)
C = TypeVar("C")


class _RunFile:
    """A read-only :class:`RunLayout` attribute: a path below the run's root."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: RunLayout | None, owner: type | None = None) -> Path:
        if layout is None:  # the class attribute itself (documentation tools)
            return Path(*self.parts)
        return layout.root.joinpath(*self.parts)


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The files of a saved run, the same for every kind.

    ``root/``: ``config.json`` (the experiment config, with ``"kind"``),
    ``metrics.json``, ``user_vocab.txt``, ``item_vocab.txt``, ``weights/model``
    (TF-format weights of the best validation epoch), ``checkpoints/last`` (the
    last finished epoch, for resuming; ``checkpoints/last.json`` holds its
    epoch number and early-stopping state), ``tensorboard/``, ``history.json``
    (per-epoch training logs) and ``export/`` (``tfrec train``'s SavedModels).
    A kind may add its own files (the ranker's ``data_spec.json``) or complete
    sub-runs (a pipeline's ``retrieval/`` and ``ranking/``).
    """

    root: Path

    #: ``config.json``.
    config = _RunFile("config.json")
    #: ``metrics.json``.
    metrics = _RunFile("metrics.json")
    #: ``user_vocab.txt``.
    user_vocab = _RunFile("user_vocab.txt")
    #: ``item_vocab.txt``.
    item_vocab = _RunFile("item_vocab.txt")
    #: The weights prefix ``weights/model`` (files ``model.index``, ``model.data-*``).
    weights = _RunFile("weights", "model")
    #: The last-epoch weights prefix ``checkpoints/last``.
    checkpoint = _RunFile("checkpoints", "last")
    #: ``checkpoints/last.json``: the epoch count and early-stopping state of ``last``.
    checkpoint_state = _RunFile("checkpoints", "last.json")
    #: ``tensorboard/``.
    tensorboard = _RunFile("tensorboard")
    #: ``history.json``.
    history = _RunFile("history.json")
    #: ``export/``: where ``tfrec train`` writes the SavedModels.
    export = _RunFile("export")

    def sub_run(self, name: str) -> RunLayout:
        """The layout of a complete sub-run saved in ``root/name/``."""
        return RunLayout(self.root / name)


@runtime_checkable
class Experiment(Protocol):
    """What every model kind implements (see the module docstring).

    Attributes:
        kind: The registered kind, also ``config.kind`` and ``config.json``'s ``"kind"``.
        exports: The models :meth:`export` writes, by role (e.g. ``("retrieval",)``).
        config: The experiment config (a :class:`~tfrec.config.JsonConfig` with
            ``data``, ``evaluation`` and ``kind`` fields).
        metrics: The metrics so far (what ``metrics.json`` holds).
    """

    kind: ClassVar[str]
    exports: ClassVar[tuple[str, ...]]
    config: Any
    metrics: dict[str, float]

    def fit(self, epochs: int | None = None, *, resume: bool = False) -> dict[str, list[float]]:
        """Trains (early stopping on validation, best epoch restored); returns the history.

        ``resume=True`` continues from ``checkpoints/last`` of the output directory.
        """
        ...

    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Metrics of ``parts``, merged into :attr:`metrics` and returned.

        ``parts``: ``"valid"`` and/or ``"test"``; None = the kind's standard
        report (test and valid, as ``metrics.json`` holds it after training).
        """
        ...

    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes the run in the :class:`RunLayout`; returns its directory."""
        ...

    def export(
        self, base_dir: str | os.PathLike[str], version: int | None = None, **options: Any
    ) -> list[Path]:
        """Writes TF Serving SavedModels ``<base_dir>/<name>/<version>/``.

        ``options`` are the keyword fields of :class:`ExportRequest`: ``models``
        (a subset of :attr:`exports`, default all), ``model_name`` (the name under
        ``base_dir`` of the one model exported), ``index`` / ``num_partitions`` /
        ``nprobe`` (the retrieval model's candidate index).
        """
        ...

    @classmethod
    def from_dir(cls, run_dir: str | os.PathLike[str], data_dir: str | None = None) -> Experiment:
        """Reopens a run :meth:`save` wrote (``data_dir`` overrides the saved one)."""
        ...

    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: Any) -> Any:
        """The documented preset config of this kind for ``dataset``."""
        ...


def register_experiment(*kinds: str) -> Callable[[E], E]:
    """Class decorator registering an experiment class under ``kinds`` (default its ``kind``).

    Raises:
        ValueError: The class lacks a contract method, or a kind is already
            registered to another class.
    """

    def decorator(cls: E) -> E:
        missing = [name for name in _CONTRACT_METHODS if not callable(getattr(cls, name, None))]
        if missing:
            raise ValueError(
                f"register_experiment: {cls.__name__} lacks {missing} of the Experiment contract"
            )
        for kind in kinds or (cls.kind,):  # type: ignore[attr-defined]
            known = _REGISTRY.get(kind)
            if known is not None and _name(known) != _name(cls):
                raise ValueError(
                    f"register_experiment: kind {kind!r} is already registered to {_name(known)}"
                )
            _REGISTRY[kind] = cls  # type: ignore[assignment]
        return cls

    return decorator


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def experiment_kinds() -> tuple[str, ...]:
    """The built-in kinds, then any other registered one."""
    return (*EXPERIMENT_KINDS, *sorted(set(_REGISTRY) - set(EXPERIMENT_KINDS)))


def experiment_class(kind: str) -> type[Experiment]:
    """The class registered for ``kind`` (a built-in one is imported on first use).

    Raises:
        ValueError: No class is registered for ``kind`` (the message lists the known kinds).
    """
    if kind not in _REGISTRY and kind in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[kind])
    if kind not in _REGISTRY:
        raise ValueError(
            f"unknown experiment kind {kind!r}; known kinds: {list(experiment_kinds())}"
        )
    return _REGISTRY[kind]


def read_kind(config_path: str | os.PathLike[str]) -> str:
    """The ``"kind"`` recorded in a run's ``config.json``.

    Raises:
        FileNotFoundError: The file does not exist (not a saved run).
        ValueError: Not a JSON object, or no string ``"kind"`` in it.
    """
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: expected the output directory of `tfrec train` "
            "(a saved run holds config.json)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (an experiment config)")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(
            f'{path}: no "kind" field (got {kind!r}); expected one of '
            f'{list(experiment_kinds())}, e.g. add "kind": "retrieval" to a retrieval run'
        )
    return kind


def load_experiment(run_dir: str | os.PathLike[str], data_dir: str | None = None) -> Experiment:
    """Reopens any saved run: reads ``config.json``'s ``"kind"`` and calls its ``from_dir``.

    Args:
        run_dir: A directory written by :meth:`Experiment.save` (``tfrec train``'s output).
        data_dir: Overrides the data directory saved in the config.

    Raises:
        FileNotFoundError: No ``config.json`` (or a file of the run is missing).
        ValueError: ``config.json`` has no known ``"kind"``.
    """
    kind = read_kind(RunLayout(Path(run_dir)).config)
    return experiment_class(kind).from_dir(run_dir, data_dir=data_dir)


def read_run_config(
    run_dir: str | os.PathLike[str], config_class: type[C], data_dir: str | None = None
) -> tuple[RunLayout, C]:
    """The layout and config of a saved run (``data_dir`` overrides the saved data directory).

    Raises:
        FileNotFoundError: No ``config.json`` in ``run_dir``.
        ValueError: ``config.json`` does not match ``config_class``.
    """
    layout = RunLayout(Path(run_dir))
    if not layout.config.is_file():
        raise FileNotFoundError(
            f"{layout.config} not found: expected the output directory of `tfrec train`"
        )
    config = config_class.load(layout.config)
    if data_dir is not None:
        config.data.data_dir = data_dir
    return layout, config


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes ``data`` as pretty, key-sorted JSON, atomically (``metrics.json``, ...)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str], default: Any = None) -> Any:
    """Reads a JSON file written by :func:`write_json`; ``default`` when it does not exist.

    Raises:
        ValueError: The file is not valid JSON (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err


class ExperimentBase:
    """What the built-in kinds share: the export entry point and the run-layout chores.

    A subclass sets :attr:`kind`, :attr:`exports`, ``config``, ``output_dir``,
    ``metrics`` and ``train_seconds`` and implements :meth:`_export` (the
    models chosen by :meth:`export`, already checked).
    """

    kind: ClassVar[str]
    exports: ClassVar[tuple[str, ...]]
    config: Any
    output_dir: Path | None
    metrics: dict[str, float]
    train_seconds: float

    def export(
        self,
        base_dir: str | os.PathLike[str],
        version: int | None = None,
        *,
        models: Sequence[str] | None = None,
        model_name: str | None = None,
        index: IndexKind = "brute",
        num_partitions: int | None = None,
        nprobe: int | None = None,
        explain_top: int | None = None,
    ) -> list[Path]:
        """Writes TF Serving SavedModels ``<base_dir>/<name>/<version>/``.

        Args:
            base_dir: The model base directory.
            version: The version directory (default: the next free one).
            models: A subset of :attr:`exports` (default all).
            index: The retrieval model's candidate index, ``brute`` or ``ivf``
                (see :class:`ExportRequest`).
            num_partitions: ``ivf``: k-means partitions (default: the exporter's).
            nprobe: ``ivf``: partitions probed by ``serving_default`` (default: tuned).
            model_name: The name under ``base_dir`` of the one model exported.
            explain_top: History items per recommended item of the ``explain``
                signature (default 3; 0: no ``explain``; ID-only models have none).

        Returns:
            The version directories written.

        Raises:
            ValueError: A model this kind does not export, or ``model_name``
                with more than one model.
        """
        chosen = select_exports(self.kind, self.exports, models, model_name)
        request = ExportRequest(
            Path(base_dir), version, tuple(chosen), model_name, index, num_partitions, nprobe,
            explain_top,
        )  # fmt: skip
        return self._export(request)

    def _export(self, request: ExportRequest) -> list[Path]:
        """Writes the models of ``request`` (checked by :meth:`export`)."""
        raise NotImplementedError

    def _save_config(self) -> RunLayout | None:
        """Writes ``config.json`` into the output directory (if any) before training."""
        if self.output_dir is None:
            return None
        layout = RunLayout(self.output_dir)
        self.config.save(layout.config)
        return layout

    def _save_layout(self, output_dir: str | os.PathLike[str] | None) -> RunLayout:
        """The layout :meth:`save` writes (``output_dir``, the run's or ``.``), created."""
        layout = RunLayout(Path(output_dir or self.output_dir or "."))
        layout.root.mkdir(parents=True, exist_ok=True)
        return layout

    def _finish_report(
        self, metrics: dict[str, float], history: dict[str, list[float]]
    ) -> dict[str, float]:
        """Adds ``train_seconds`` and ``epochs_run`` to ``metrics``; merges into :attr:`metrics`."""
        metrics["train_seconds"] = round(self.train_seconds, 2)
        if history or "epochs_run" not in self.metrics:  # a run saved without history
            metrics["epochs_run"] = float(len(history.get("loss", [])))
        self.metrics.update(metrics)
        return metrics

    def _restore_metrics(self, layout: RunLayout) -> None:
        """Reads ``metrics.json`` (and the recorded training time) of a reopened run."""
        self.metrics = read_json(layout.metrics, {})
        self.train_seconds = float(self.metrics.get("train_seconds", 0.0))


def export_extra_files(metrics: dict[str, float], items: Any) -> dict[str, str]:
    """``assets.extra`` files of an export: ``metrics.json`` and, with an item table, titles."""
    extra = {"metrics.json": json.dumps(metrics, indent=2, sort_keys=True) + "\n"}
    if items is not None:
        titles = dict(zip(items["item_id"], items["title"], strict=True))
        extra["item_titles.json"] = json.dumps(titles, ensure_ascii=False)
    return extra


def save_model_run(
    layout: RunLayout,
    config: Any,
    *,
    metrics: dict[str, float],
    vocabs: tuple[Any, Any],
    model: Any,
    history: dict[str, list[float]],
) -> None:
    """Writes a one-model run's config, metrics, vocabularies, weights and history."""
    from tfrec.training.checkpoints import save_weights  # noqa: PLC0415  (imports TensorFlow)

    config.save(layout.config)
    write_json(layout.metrics, metrics)
    vocabs[0].save(layout.user_vocab)
    vocabs[1].save(layout.item_vocab)
    save_weights(model, layout.weights)
    write_json(layout.history, history)
