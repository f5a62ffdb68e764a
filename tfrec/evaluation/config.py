"""``EvalConfig``: how models are evaluated (cutoffs, history masking, sampled protocol).

Shared by every experiment kind and saved inside its ``config.json``
(``"evaluation": {...}``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tfrec.config import JsonConfig
from tfrec.evaluation.metrics import DEFAULT_KS
from tfrec.names import EvalMask, SampledStrategy

logger = logging.getLogger(__name__)


__all__ = ["MASK_SUFFIX", "EvalConfig", "EvalMask", "prefixed"]

#: Key suffix of the part name per masking: ``test/...`` and ``test_unmasked/...``.
MASK_SUFFIX: dict[bool, str] = {True: "", False: "_unmasked"}


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """``{"ndcg@10": v}`` -> ``{"<prefix>/ndcg@10": v}`` (the keys of ``metrics.json``)."""
    return {f"{prefix}/{key}": float(value) for key, value in metrics.items()}


@dataclasses.dataclass
class EvalConfig(JsonConfig):
    """How models are evaluated (full ranking over the whole catalogue).

    Attributes:
        ks: Cutoffs K.
        mask: ``history`` (default), ``none`` or ``both``; see :data:`EvalMask`.
            The first protocol of the mode (masked for ``both``) is also the
            per-epoch early-stopping metric.
        sampled_negatives: If > 0, also report the sampled protocol with this many
            negatives per user (``<part>_sampled/``, and ``<part>_sampled_unmasked/``
            when the history is not masked: SASRec's sampled protocol).
        sampled_strategy: ``uniform`` or ``popularity`` negatives.
        batch_size: Users scored per batch.
        valid_max_users: Score at most this many validation users (a seeded
            random sample) in the per-epoch early-stopping evaluation; 0 = all.
        num_users: Score a seeded random sample of this many users of each
            reported part (``--eval-users``); 0 = all. The report then adds
            ``sample_users``, ``population_users`` and a 95% confidence interval
            ``<metric>_ci95`` per mean metric (:mod:`tfrec.evaluation.intervals`).
            A validation part sampled by ``valid_max_users`` keeps that sample.
    """

    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    mask: EvalMask = "history"
    sampled_negatives: int = 0
    sampled_strategy: SampledStrategy = "uniform"
    batch_size: int = 512
    valid_max_users: int = 0
    num_users: int = 0

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"EvalConfig.ks={self.ks}; expected positive integers")
        if self.sampled_negatives < 0:
            raise ValueError(
                f"EvalConfig.sampled_negatives={self.sampled_negatives}; expected >= 0"
            )
        if self.batch_size < 1:
            raise ValueError(f"EvalConfig.batch_size={self.batch_size}; expected >= 1")
        if self.valid_max_users < 0:
            raise ValueError(
                f"EvalConfig.valid_max_users={self.valid_max_users}; expected >= 0 (0 = all)"
            )
        if self.num_users < 0:
            raise ValueError(f"EvalConfig.num_users={self.num_users}; expected >= 0 (0 = all)")

    @property
    def masked_protocols(self) -> tuple[bool, ...]:
        """Whether the history is masked, per reported protocol; the first one is primary."""
        return {"history": (True,), "none": (False,), "both": (True, False)}[self.mask]

    @classmethod
    def from_dict(cls, data: dict[str, Any], _where: str | None = None) -> EvalConfig:
        """Builds the config; also reads configs saved before ``mask`` existed.

        The old booleans map to ``mask``: ``mask_history=false`` -> ``none``,
        ``report_unmasked=true`` -> ``both``, otherwise ``history``.

        Raises:
            ValueError: Unknown fields, wrong types, or old and new fields mixed.
        """
        where = _where or cls.__name__
        legacy = {key: data[key] for key in ("mask_history", "report_unmasked") if key in data}
        if legacy:
            if "mask" in data:
                raise ValueError(
                    f"{where}: 'mask' and the old {sorted(legacy)} given together; keep 'mask'"
                )
            for key, value in legacy.items():
                if not isinstance(value, bool):
                    raise ValueError(f"{where}.{key}: expected true/false, got {value!r}")
            data = {key: value for key, value in data.items() if key not in legacy}
            if not legacy.get("mask_history", True):
                data["mask"] = "none"
            else:
                data["mask"] = "both" if legacy.get("report_unmasked", False) else "history"
            logger.info("%s: old fields %s read as mask=%r", where, legacy, data["mask"])
        return super().from_dict(data, _where=_where)
