"""The checked export call of an experiment: which models, where, with which index.

:meth:`tfrec.training.experiment.ExperimentBase.export` checks its arguments with
:func:`select_exports` and hands the kind's ``_export`` one :class:`ExportRequest`.
TF-free, like :mod:`tfrec.training.experiment`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfrec.config import check_choice
from tfrec.names import IndexKind


def select_exports(
    kind: str, available: Sequence[str], models: Sequence[str] | None, model_name: str | None
) -> list[str]:
    """The models an :meth:`~tfrec.training.experiment.Experiment.export` call writes, checked.

    Raises:
        ValueError: A model this kind does not export, or ``model_name`` with
            more than one model.
    """
    chosen = list(available) if models is None else list(models)
    unknown = [m for m in chosen if m not in available]
    if unknown or not chosen:
        raise ValueError(
            f"export models={chosen}: a {kind} run exports {list(available)}; pick among them"
        )
    if model_name is not None and len(chosen) != 1:
        raise ValueError(
            f"export model_name={model_name!r} names one model, but {chosen} are exported; "
            "select one model"
        )
    return chosen


@dataclasses.dataclass(frozen=True)
class ExportRequest:
    """One checked :meth:`~tfrec.training.experiment.ExperimentBase.export` call.

    Attributes:
        base_dir: The model base directory.
        version: The version directory (None: the next free one).
        models: The models to write (a subset of the kind's ``exports``).
        model_name: The name under ``base_dir`` of the one model exported (None: default).
        index: The retrieval model's candidate index: ``brute`` (exact) or ``ivf``
            (approximate, :mod:`tfrec.export.ivf`).
        num_partitions: ``ivf``: k-means partitions (None: the exporter's default).
        nprobe: ``ivf``: partitions ``serving_default`` probes (None: tuned for recall).
        explain_top: History items per recommended item of the ``explain`` signature
            (:mod:`tfrec.export.explanations`; None: 3, or 0 for ID-only models; 0: none).
    """

    base_dir: Path
    version: int | None
    models: tuple[str, ...]
    model_name: str | None
    index: IndexKind = "brute"
    num_partitions: int | None = None
    nprobe: int | None = None
    explain_top: int | None = None

    def __post_init__(self) -> None:
        check_choice("export index", self.index, IndexKind)
        if self.index != "ivf" and (self.num_partitions is not None or self.nprobe is not None):
            raise ValueError(
                f"export num_partitions={self.num_partitions}, nprobe={self.nprobe}: these "
                f"set an IVF index; they need index='ivf' (got index={self.index!r})"
            )
        if self.index == "ivf" and "retrieval" not in self.models:
            raise ValueError(
                f"export index='ivf' indexes the retrieval model, but the models exported "
                f"are {list(self.models)}; export 'retrieval' (or use index='brute')"
            )

    def index_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tfrec.export.retrieval.export_retrieval`."""
        return {
            "index": self.index,
            "num_partitions": self.num_partitions,
            "nprobe": self.nprobe,
            "explain_top": self.explain_top,
        }
