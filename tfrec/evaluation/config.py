"""Experiment configuration shared by the retrieval and ranking runners.

An experiment is data (which dataset, which split) + a model config +
evaluation settings. The whole thing is one typed :class:`~tfrec.config.JsonConfig`
saved as ``config.json`` beside every trained model.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any, Literal

import numpy as np

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.sequences import history_matrix, seen_items, user_sequences
from tfrec.data.vocab import IdVocabulary, build_vocabularies
from tfrec.evaluation.metrics import DEFAULT_KS
from tfrec.evaluation.protocol import ScoreFn, evaluate_full_ranking, evaluate_sampled

logger = logging.getLogger(__name__)

# Re-exported for the runners: the data layer owns these.
concat_parts = concat_interactions
__all__ = [
    "EVAL_MASKS",
    "DataConfig",
    "EvalConfig",
    "EvalMask",
    "EvalQueries",
    "build_vocabularies",
    "concat_parts",
    "eval_queries",
    "protocol_metrics",
]


#: How each user's history (the items before the held-out part) is treated in
#: evaluation. ``history``: removed from the ranking, as the exported model does;
#: a held-out item that repeats a history item is a miss (keys ``<part>/...``).
#: ``none``: every item stays rankable, for repeat-consumption domains (music,
#: groceries, restaurants) where a repeat can be hit (keys ``<part>_unmasked/...``).
#: ``both``: the two reports. Every user with a held-out item is in the denominator
#: in every mode.
EvalMask = Literal["history", "none", "both"]
EVAL_MASKS: tuple[str, ...] = typing.get_args(EvalMask)

#: Key suffix of the part name per masking: ``test/...`` and ``test_unmasked/...``.
MASK_SUFFIX: dict[bool, str] = {True: "", False: "_unmasked"}


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
            Test metrics always use every user.
    """

    ks: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_KS))
    mask: EvalMask = "history"
    sampled_negatives: int = 0
    sampled_strategy: Literal["uniform", "popularity"] = "uniform"
    batch_size: int = 512
    valid_max_users: int = 0

    def __post_init__(self) -> None:
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"EvalConfig.ks={self.ks}; expected positive integers")
        if self.mask not in EVAL_MASKS:
            raise ValueError(f"EvalConfig.mask={self.mask!r}; expected one of {list(EVAL_MASKS)}")
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


def protocol_metrics(
    score_fn: ScoreFn,
    queries: EvalQueries,
    config: EvalConfig,
    *,
    masked: bool,
    sampled: bool = False,
    item_counts: np.ndarray | None = None,
    seed: int = 0,
    log_every_s: float = 30.0,
) -> dict[str, float]:
    """One evaluation report over ``queries``: full ranking or sampled, masked or not.

    The users' history (``queries.seen``) is always passed: removed from the
    ranking when ``masked`` (a held-out item that repeats it is a miss), kept
    rankable otherwise; in both cases counted. Every query with a held-out item
    is in the denominator ``users``.

    Args:
        score_fn: ``rows [b] -> scores [b, I]`` over ``queries``.
        queries: The evaluation queries of one split part.
        config: Cutoffs, batch size and sampled-protocol settings.
        masked: Remove each user's history from the ranking.
        sampled: The sampled protocol (``config.sampled_negatives`` negatives)
            instead of full ranking; cutoffs above the list length are dropped.
        item_counts: ``[I]`` item counts for popularity sampling.
        seed: Seed of the sampled negatives.
        log_every_s: Seconds between progress log lines.

    Returns:
        Plain keys (``"ndcg@10"``, ``"users"``, ``"masked_target_users"``,
        ``"repeat_target_users"``, ...) plus ``"mask_history"`` (1.0 or 0.0).
    """
    rows = np.arange(len(queries))
    common = {"batch_size": config.batch_size, "log_every_s": log_every_s, "mask_exclude": masked}
    if sampled:
        metrics = evaluate_sampled(
            score_fn,
            rows,
            queries.relevant,
            queries.seen,
            ks=[k for k in config.ks if k <= config.sampled_negatives + 1],
            num_negatives=config.sampled_negatives,
            sampling=config.sampled_strategy,
            item_counts=item_counts,
            seed=seed,
            **common,
        )
    else:
        metrics = evaluate_full_ranking(
            score_fn, rows, queries.relevant, queries.seen, ks=config.ks, **common
        )
    metrics["mask_history"] = float(masked)
    return metrics
