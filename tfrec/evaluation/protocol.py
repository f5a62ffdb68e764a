"""Evaluation loops over a score function, independent of models and data classes.

A score function maps a batch of query ids (whatever the caller's closure
understands: user indices, row numbers of a history matrix, ...) to scores of
every catalogue item::

    def score_fn(query_ids: np.ndarray) -> np.ndarray:  # [b] -> [b, num_items]
        ...

Rows of the returned scores must be aligned with the batch. Item indices in
``relevant`` / ``exclude`` are columns of those scores. Metric definitions, tie
policy and masking are documented in :mod:`tfrec.evaluation.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from tfrec.evaluation.metrics import (
    DEFAULT_INVALID_ITEMS,
    DEFAULT_KS,
    IndexLists,
    RankingMetrics,
)
from tfrec.evaluation.sampled import SampledRankingMetrics
from tfrec.logs import Progress

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]


class _Queries(NamedTuple):
    """The validated arguments shared by both protocols (see :func:`_check_inputs`)."""

    ids: np.ndarray  # [Q]
    relevant: IndexLists
    exclude: IndexLists | None
    batch_size: int
    log_every_s: float


def _check_inputs(
    query_ids: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None,
    batch_size: int,
    log_every_s: float,
) -> _Queries:
    """Validates the shared arguments; ``query_ids`` becomes a 1-D array."""
    ids = np.asarray(query_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"query_ids: expected a non-empty 1-D array, got shape {ids.shape}")
    if len(relevant) != ids.size:
        raise ValueError(
            f"relevant: expected one array per query ({ids.size}), got {len(relevant)}"
        )
    if exclude is not None and len(exclude) != ids.size:
        raise ValueError(f"exclude: expected one array per query ({ids.size}), got {len(exclude)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_size: expected an integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if not log_every_s > 0:
        raise ValueError(f"log_every_s: expected a number of seconds > 0, got {log_every_s!r}")
    return _Queries(ids, relevant, exclude, batch_size, log_every_s)


def _run(
    accumulator: RankingMetrics | SampledRankingMetrics,
    score_fn: ScoreFn,
    queries: _Queries,
    label: str,
    with_ci: bool = False,
) -> dict[str, float]:
    """Feeds ``score_fn`` outputs batch by batch into ``accumulator``, logging progress."""

    def feed(rows: slice) -> None:
        start, stop = rows.start, rows.stop
        scores = np.asarray(score_fn(queries.ids[rows]))
        if scores.ndim != 2 or scores.shape[0] != stop - start:
            raise ValueError(
                f"score_fn: expected scores of shape [{stop - start}, num_items] for query "
                f"rows {start}:{stop}, got {scores.shape}"
            )
        batch_exclude = None if queries.exclude is None else queries.exclude[rows]
        accumulator.update(scores, queries.relevant[rows], batch_exclude)

    return _run_batches(accumulator, feed, queries, label, with_ci=with_ci, log=logger)


def _run_batches(
    accumulator: RankingMetrics | SampledRankingMetrics,
    feed: Callable[[slice], None],
    queries: _Queries,
    label: str,
    *,
    with_ci: bool,
    log: logging.Logger,
) -> dict[str, float]:
    """Calls ``feed(rows)`` on each batch of query rows, then reports ``accumulator``.

    Args:
        accumulator: The metrics ``feed`` adds each batch to.
        feed: Scores the query rows ``rows`` and adds them to ``accumulator``.
        queries: The validated queries (their ``batch_size`` and ``log_every_s``).
        label: The protocol named in the log lines (``full``, ``sampled``).
        with_ci: Also report the ``_ci95`` keys.
        log: The logger of the progress lines.

    Returns:
        The accumulator's metrics.
    """
    total = queries.ids.size
    progress = Progress(
        f"{label} evaluation", total, unit="queries", every_seconds=queries.log_every_s, log=log
    )
    for start in range(0, total, queries.batch_size):
        stop = min(start + queries.batch_size, total)
        feed(slice(start, stop))
        progress.update(stop)
    result = accumulator.result()
    if with_ci:
        result.update(accumulator.confidence_intervals())
    elapsed = progress.close()
    # A short evaluation (no progress shown) logs its summary at DEBUG only.
    level = logging.INFO if progress.reported else logging.DEBUG
    _log_summary(label, result, accumulator.mask_exclude, total, elapsed, level=level)
    return result


def _log_summary(
    label: str,
    result: dict[str, float],
    masked: bool,
    total: int,
    elapsed: float,
    *,
    level: int = logging.INFO,
) -> None:
    """Logs the denominators of a finished evaluation and its repeated held-out items."""
    logger.log(
        level,
        "%s evaluation done: %d queries (%d evaluated, %d skipped without relevant items) in %.1fs",
        label,
        total,
        int(result["users"]),
        int(result["skipped_users"]),
        elapsed,
    )
    if result["repeat_target_users"]:
        logger.info(
            "%s evaluation: %d users (%d items) had a held-out item already in their history: %s",
            label,
            int(result["repeat_target_users"]),
            int(result["conflicts"]),
            "masked out, counted as misses" if masked else "kept rankable (history not masked)",
        )


def evaluate_full_ranking(
    score_fn: ScoreFn,
    query_ids: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 256,
    log_every_s: float = 10.0,
    invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
    mask_exclude: bool = True,
    with_ci: bool = False,
) -> dict[str, float]:
    """Full-catalogue ranking metrics for every query.

    Every query with a relevant item is in the denominator; a relevant item that
    is masked out (in ``exclude``) is a miss.

    Args:
        score_fn: ``query_ids [b] -> scores [b, num_items]``, rows aligned with the batch.
        query_ids: ``[Q]`` ids passed to ``score_fn`` in batches.
        relevant: Q integer arrays of relevant item indices.
        exclude: Q integer arrays of item indices removed from the ranking (e.g.
            training history), or None.
        ks: Cutoffs K.
        batch_size: Queries per ``score_fn`` call.
        log_every_s: Seconds between progress log lines (logger ``tfrec.evaluation.protocol``).
        invalid_items: Item indices never ranked (default padding 0 and OOV 1).
        mask_exclude: False keeps the ``exclude`` items rankable (repeat consumption);
            they are then only counted (``repeat_target_users``, ``conflicts``).
        with_ci: Also report ``<metric>_ci95`` (:mod:`tfrec.evaluation.intervals`).

    Returns:
        ``{"hr@10": ..., "ndcg@10": ..., "mrr": ..., "users": ..., "skipped_users": ...,
        "repeat_target_users": ..., "masked_target_users": ..., "conflicts": ...,
        "invalid_relevant": ...}`` (and ``"ndcg@10_ci95"``, ... with ``with_ci``);
        see :mod:`tfrec.evaluation.metrics`.

    Raises:
        ValueError: Inconsistent lengths, bad arguments, or badly shaped scores.
    """
    queries = _check_inputs(query_ids, relevant, exclude, batch_size, log_every_s)
    accumulator = RankingMetrics(ks=ks, invalid_items=invalid_items, mask_exclude=mask_exclude)
    return _run(accumulator, score_fn, queries, "full", with_ci)


def evaluate_sampled(
    score_fn: ScoreFn,
    query_ids: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    num_negatives: int = 100,
    sampling: str = "uniform",
    item_counts: np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 256,
    log_every_s: float = 10.0,
    invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
    mask_exclude: bool = True,
    with_ci: bool = False,
) -> dict[str, float]:
    """Sampled-negatives ranking metrics (see :mod:`tfrec.evaluation.sampled`).

    Args:
        score_fn: ``query_ids [b] -> scores [b, num_items]``, rows aligned with the batch.
        query_ids: ``[Q]`` ids passed to ``score_fn`` in batches.
        relevant: Q integer arrays of relevant item indices.
        exclude: Q integer arrays of excluded item indices (never drawn), or None.
        ks: Cutoffs K, each <= 1 + num_negatives.
        num_negatives: Negatives per query.
        sampling: ``"uniform"`` or ``"popularity"``.
        item_counts: ``[num_items]`` counts for ``"popularity"``.
        seed: Seed; the n-th query uses ``default_rng([seed, n])`` whatever the batch size.
        batch_size: Queries per ``score_fn`` call.
        log_every_s: Seconds between progress log lines.
        invalid_items: Item indices never ranked or drawn.
        mask_exclude: True: a relevant item in ``exclude`` is a miss; False: it is
            ranked against the negatives (SASRec's protocol).
        with_ci: Also report ``<metric>_ci95`` (:mod:`tfrec.evaluation.intervals`).

    Returns:
        Plain metric keys (the caller adds any prefix) and counts.

    Raises:
        ValueError: Inconsistent lengths, bad arguments, badly shaped scores or too
            few items to sample from.
    """
    queries = _check_inputs(query_ids, relevant, exclude, batch_size, log_every_s)
    accumulator = SampledRankingMetrics(
        ks=ks,
        num_negatives=num_negatives,
        sampling=sampling,
        item_counts=item_counts,
        seed=seed,
        invalid_items=invalid_items,
        mask_exclude=mask_exclude,
    )
    return _run(accumulator, score_fn, queries, "sampled", with_ci)
