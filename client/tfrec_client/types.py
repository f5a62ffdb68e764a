"""What the client returns: recommendations, signatures, metadata, version states."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Recommendations:
    """Top-k items per user: ``item_ids`` str ``[B, k]``, ``scores`` float32 ``[B, k]``."""

    item_ids: np.ndarray
    scores: np.ndarray


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature tensor: dtype name (``"string"``, ``"int32"``...) and shape (None = any)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclasses.dataclass(frozen=True)
class Signature:
    """Inputs and outputs of one signature."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata: the served version and its signatures."""

    model_name: str
    version: int
    signatures: dict[str, Signature]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One row of GetModelStatus (state: ``"AVAILABLE"``, ``"LOADING"``, ``"END"``...)."""

    version: int
    state: str
    error_code: int
    error_message: str
