"""Item vocabulary caps of ``tfrec prepare``, shared by every engine.

The item vocabulary lists ids in order of first appearance in the log sorted
by ``(user, timestamp, input order)``, then the catalogue-only items of the
item table (count 0). :func:`cap_vocabulary` keeps those with at least
``min_item_count`` interactions and at most the ``max_items`` most frequent;
the others map to the out-of-vocabulary index 1. :func:`vocab_report` says
how many ids and interactions that is.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec.data.vocab import NUM_RESERVED, OOV_INDEX


@dataclasses.dataclass
class VocabReport:
    """What the item vocabulary caps did.

    Attributes:
        distinct: Distinct item ids (interactions and catalogue).
        kept: Ids in the vocabulary.
        oov_ids: Ids mapped to the OOV index 1.
        oov_interactions: Interactions whose item maps to OOV.
        interactions: All interactions.
        min_item_count: The cap used (0 = none).
        max_items: The cap used (0 = none).
    """

    distinct: int
    kept: int
    oov_ids: int
    oov_interactions: int
    interactions: int
    min_item_count: int
    max_items: int

    def note(self) -> str:
        """One line for the summary's notes."""
        share = self.oov_interactions / max(self.interactions, 1)
        return (
            f"item vocabulary: kept {self.kept:,} of {self.distinct:,} item ids "
            f"(--min-item-count {self.min_item_count}, --max-items {self.max_items or 'none'}); "
            f"{self.oov_ids:,} id(s) and {self.oov_interactions:,} interaction(s) "
            f"({share:.2%}) map to the out-of-vocabulary index {OOV_INDEX}"
        )


def cap_vocabulary(counts: np.ndarray, min_item_count: int = 0, max_items: int = 0) -> np.ndarray:
    """Which items keep an index: at least ``min_item_count`` rows, the ``max_items`` most frequent.

    Args:
        counts: Interactions per item, in vocabulary order (first appearance,
            then catalogue-only items with count 0).
        min_item_count: Minimum interactions (0 = no minimum; catalogue-only
            items are then kept, as without caps).
        max_items: Keep at most this many ids (0 = no cap): the most frequent,
            ties broken by vocabulary order.

    Returns:
        bool mask over ``counts``; the kept ids keep their relative order.

    Raises:
        ValueError: A negative cap.
    """
    for name, value in (("min_item_count", min_item_count), ("max_items", max_items)):
        if value < 0:
            raise ValueError(f"{name}={value}; expected >= 0 (0 = no cap)")
    counts = np.asarray(counts, dtype=np.int64)
    keep = counts >= min_item_count
    if max_items and int(keep.sum()) > max_items:
        ranked = np.lexsort((np.arange(len(counts)), -counts))
        ranked = ranked[keep[ranked]][:max_items]
        keep = np.zeros(len(counts), dtype=bool)
        keep[ranked] = True
    return keep


def vocab_report(
    counts: np.ndarray, keep: np.ndarray, min_item_count: int, max_items: int
) -> VocabReport:
    """Counts of what :func:`cap_vocabulary` kept and mapped to OOV."""
    counts = np.asarray(counts, dtype=np.int64)
    return VocabReport(
        distinct=len(counts),
        kept=int(keep.sum()),
        oov_ids=int((~keep).sum()),
        oov_interactions=int(counts[~keep].sum()),
        interactions=int(counts.sum()),
        min_item_count=min_item_count,
        max_items=max_items,
    )


def index_of_code(keep: np.ndarray) -> np.ndarray:
    """int32 vocabulary index per item code (vocabulary order): 2.. when kept, else OOV 1."""
    out = np.full(len(keep), OOV_INDEX, dtype=np.int32)
    out[keep] = np.arange(int(keep.sum()), dtype=np.int32) + NUM_RESERVED
    return out
