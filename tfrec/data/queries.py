"""Evaluation queries: one per user of a held-out split part, with the history before it.

A query is what a retrieval model is asked at evaluation time: the user, the
left-padded history it may see (train, or train + valid for test) and the
part's items it should find. ``seen`` holds every history item (not only the
last ``L``), for masking them in the ranking.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfrec.data.interactions import Interactions
from tfrec.data.sequences import history_matrix, seen_items, user_sequences
from tfrec.data.vocab import IdVocabulary


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
