"""Experiment configuration shared by the retrieval and ranking runners.

An experiment is data (which dataset, which split) + a model config +
evaluation settings. The whole thing is one typed :class:`~tfrec.config.JsonConfig`
saved as ``config.json`` beside every trained model.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.sequences import history_matrix, seen_items, user_sequences
from tfrec.data.vocab import IdVocabulary, build_vocabularies
from tfrec.evaluation.metrics import DEFAULT_KS

logger = logging.getLogger(__name__)

# Re-exported for the runners: the data layer owns these.
concat_parts = concat_interactions
__all__ = [
    "DataConfig",
    "EvalConfig",
    "EvalQueries",
    "build_vocabularies",
    "concat_parts",
    "eval_queries",
]


@dataclasses.dataclass
class EvalConfig(JsonConfig):
    """How models are evaluated (full ranking over the whole catalogue).

    Attributes:
        ks: Cutoffs K.
        mask_history: Remove each user's already-seen items from the ranking.
        report_unmasked: Also report the metrics without masking (``<part>_unmasked/``).
        sampled_negatives: If > 0, also report the sampled protocol with this many
            negatives per user (``<part>_sampled/``).
        sampled_strategy: ``uniform`` or ``popularity`` negatives.
        batch_size: Users scored per batch.
        valid_max_users: Score at most this many validation users (a seeded
            random sample) in the per-epoch early-stopping evaluation; 0 = all.
            Test metrics always use every user.
    """

    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    mask_history: bool = True
    report_unmasked: bool = False
    sampled_negatives: int = 0
    sampled_strategy: Literal["uniform", "popularity"] = "uniform"
    batch_size: int = 512
    valid_max_users: int = 0

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


@dataclasses.dataclass
class EvalQueries:
    """Evaluation queries for one split part.

    Attributes:
        user_ids: String id per query user.
        users: int32 ``[Q]`` user indices.
        history: int32 ``[Q, L]`` left-padded history (context before the part).
        relevant: Per query, the part's item indices.
        seen: Per query, every item index of the context (for masking).
    """

    user_ids: list[str]
    users: np.ndarray
    history: np.ndarray
    relevant: list[np.ndarray]
    seen: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.user_ids)

    def sample(self, max_users: int, seed: int) -> EvalQueries:
        """A seeded random subset of at most ``max_users`` queries (order kept)."""
        if max_users <= 0 or max_users >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), max_users, replace=False))
        return EvalQueries(
            user_ids=[self.user_ids[r] for r in rows],
            users=self.users[rows],
            history=self.history[rows],
            relevant=[self.relevant[r] for r in rows],
            seen=[self.seen[r] for r in rows],
        )


def eval_queries(
    context: Interactions,
    part: Interactions,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    max_len: int,
) -> EvalQueries:
    """Queries for evaluating on ``part`` given the interactions before it.

    Args:
        context: What the model may see (train, or train + valid for test).
        part: The held-out interactions; each of its users is one query.
        user_vocab: User vocabulary.
        item_vocab: Item vocabulary.
        max_len: History length L.

    Returns:
        :class:`EvalQueries`; users of ``part`` absent from ``context`` get an
        empty history (they are kept, not dropped).
    """
    ctx = user_sequences(context, user_vocab, item_vocab)
    position = {u: i for i, u in enumerate(ctx.user_ids)}
    held = user_sequences(part, user_vocab, item_vocab)
    empty = np.zeros(0, dtype=np.int32)
    lists = [ctx.items[position[u]] if u in position else empty for u in held.user_ids]
    return EvalQueries(
        user_ids=held.user_ids,
        users=held.users,
        history=history_matrix(lists, max_len),
        relevant=[np.unique(items) for items in held.items],
        seen=seen_items(lists),
    )
