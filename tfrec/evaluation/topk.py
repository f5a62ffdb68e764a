"""Batched full-catalogue top-K on the model's device: only top-K ids and target ranks leave it.

:class:`CatalogueTopK` holds the catalogue matrix ``[I, D]`` once as a tensor on
its device (zero-padded to whole chunks). One ``tf.function`` per batch of query
vectors does the matmul, removes each row's masked items by a sparse scatter of
``-inf`` (global invalid items, chunk padding and, when masking, the user's
history), counts the items ranked before the row's best relevant item (an XLA
fused pass, so MRR is exact beyond the top K), and returns ``tf.math.top_k``'s
ids. Top-K is two-level: the maxima of chunks of ``chunk`` columns are ranked
first, the best ``K`` chunks (sorted by index) are gathered and ranked again.
This is exact, ties included: every item scored above the K-th chunk maximum
lies in a chosen chunk, and the chosen chunks with a maximum equal to it are
the lowest-index ones, which hold the lowest-index tied items.

Tie policy (that of :mod:`tfrec.evaluation.metrics`): equal scores are ordered
by lower item index, which is ``tf.math.top_k``'s order; the rank of the best
relevant item counts the items scored above it plus the equal ones of lower
index. These identities need finite scores for every rankable item (a masked
item is ``-inf``), which holds when the query and item vectors are finite and the
product of their largest norms cannot overflow float32; other batches are scored
densely and fed to the numpy reference path (:meth:`RankingMetrics.update`), which
also rejects NaN scores as before.

Memory is bounded by the batch: ``[B, I]`` float32 scores and a ``[B, K * chunk]``
gather; :func:`batch_size_for` picks ``B`` from a byte budget (default 256 MB).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.evaluation.metrics import DEFAULT_INVALID_ITEMS, DEFAULT_KS, IndexLists
from tfrec.evaluation.sparse import SparseTargets, TopKRankingMetrics

logger = logging.getLogger(__name__)

#: Bytes of ``[B, I]`` float32 scores allowed per batch.
MEMORY_BUDGET_BYTES = 256 * 2**20
#: Columns per chunk of the two-level top-K (fastest of 32..512 measured on 300k x 64).
DEFAULT_CHUNK = 64
#: Largest product of query and item norms whose dot products cannot overflow float32.
_SAFE_NORM_PRODUCT = 1e37

QueryFn = Callable[[np.ndarray], "tf.Tensor | np.ndarray"]


def batch_size_for(
    num_items: int, budget_bytes: int = MEMORY_BUDGET_BYTES, max_batch: int | None = None
) -> int:
    """Queries per batch such that ``batch * num_items * 4`` bytes fit ``budget_bytes``.

    Raises:
        ValueError: ``num_items`` or ``budget_bytes`` < 1.
    """
    if num_items < 1 or budget_bytes < 1:
        raise ValueError(
            f"batch_size_for: num_items={num_items}, budget_bytes={budget_bytes}; expected >= 1"
        )
    size = max(1, budget_bytes // (4 * num_items))
    return size if max_batch is None else max(1, min(size, max_batch))


def _count_before(scores: tf.Tensor, best: tf.Tensor, first: tf.Tensor) -> tf.Tensor:
    """Per row: items scored above ``best``, plus those equal to it with index < ``first``."""
    col = tf.range(tf.shape(scores)[1])
    tied_before = (scores == best[:, None]) & (col[None, :] < first[:, None])
    before = (scores > best[:, None]) | tied_before
    return tf.reduce_sum(tf.cast(before, tf.int32), axis=1)


@functools.lru_cache(maxsize=8)
def _kernel(k: int, chunk: int) -> Callable[..., tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """The per-batch graph for ``k`` results and ``chunk`` columns (one trace per pair)."""
    count_before = tf.function(_count_before, jit_compile=True)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),  # queries [B, D]
            tf.TensorSpec([None, None], tf.float32),  # padded catalogue [C * chunk, D]
            tf.TensorSpec([None, 2], tf.int32),  # (row, item) pairs to remove
            tf.TensorSpec([None, None], tf.int32),  # rankable relevant items [B, R], -1 padded
        ]
    )
    def ranked(queries, table, masked, relevant):
        scores = tf.matmul(queries, table, transpose_b=True)  # [B, C * chunk]
        fill = tf.fill(tf.shape(masked)[:1], tf.constant(-np.inf, tf.float32))
        scores = tf.tensor_scatter_nd_update(scores, masked, fill)
        rel_scores = tf.gather(scores, tf.maximum(relevant, 0), batch_dims=1)  # [B, R]
        rel_scores = tf.where(relevant >= 0, rel_scores, -np.inf)
        best = tf.reduce_max(rel_scores, axis=1)
        tied = (rel_scores == best[:, None]) & (relevant >= 0)
        first = tf.reduce_min(tf.where(tied, relevant, tf.int32.max), axis=1)
        ranks = count_before(scores, best, first)
        rows = tf.shape(scores)[0]
        blocks = tf.reshape(scores, [rows, -1, chunk])  # [B, C, chunk]
        _, chunk_ids = tf.math.top_k(tf.reduce_max(blocks, axis=2), k)
        chunk_ids = tf.sort(chunk_ids, axis=1)  # index order, so top_k's ties stay index-ordered
        gathered = tf.reshape(tf.gather(blocks, chunk_ids, batch_dims=1), [rows, k * chunk])
        values, pos = tf.math.top_k(gathered, k)
        items = tf.gather(chunk_ids, pos // chunk, batch_dims=1) * chunk + pos % chunk
        return values, items, ranks

    return ranked


class CatalogueTopK:
    """Top-K over a fixed catalogue for batches of query vectors (see the module docstring).

    Args:
        candidates: ``[I, D]`` item vectors (a tensor stays on its device).
        k: Results per row; capped at ``I``.
        invalid_items: Item indices never ranked.
        chunk: Columns per chunk of the two-level top-K (capped so that ``I / chunk >= k``).

    Raises:
        ValueError: ``candidates`` not ``[I, D]`` with ``I >= 1``, ``k`` or ``chunk`` < 1,
            or an invalid item out of range.
    """

    def __init__(
        self,
        candidates: tf.Tensor | np.ndarray,
        k: int,
        invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        table = tf.convert_to_tensor(candidates, tf.float32)
        if table.shape.rank != 2 or table.shape[0] == 0:
            raise ValueError(f"candidates: expected [num_items, dim], got {table.shape}")
        if k < 1 or chunk < 1:
            raise ValueError(f"CatalogueTopK: k={k}, chunk={chunk}; expected >= 1")
        self.num_items = int(table.shape[0])
        bad = [i for i in invalid_items if not 0 <= i < self.num_items]
        if bad:
            raise ValueError(f"invalid_items: indices {bad} out of range [0, {self.num_items})")
        self.k = min(int(k), self.num_items)
        self.chunk = max(1, min(int(chunk), self.num_items // self.k))
        padded = math.ceil(self.num_items / self.chunk) * self.chunk
        with tf.device(table.device or None):  # created once, on the model's device
            self._table = tf.concat([table, tf.zeros([padded - self.num_items, table.shape[1]])], 0)
        self._blocked = np.concatenate(
            [np.asarray(invalid_items, dtype=np.int64), np.arange(self.num_items, padded)]
        )
        real = np.ones(self.num_items, dtype=bool)
        real[list(invalid_items)] = False
        vectors = table.numpy()[real] if real.any() else np.zeros((1, 1), np.float32)
        finite = bool(np.isfinite(vectors).all())
        self._item_norm = float(np.linalg.norm(vectors, axis=1).max()) if finite else math.inf
        self._kernel = _kernel(self.k, self.chunk)

    def safe(self, queries: np.ndarray) -> bool:
        """True when every score of ``queries`` against the real items is finite."""
        if not np.isfinite(queries).all():
            return False
        norm = float(np.linalg.norm(queries, axis=1).max(initial=0.0))
        return norm * self._item_norm < _SAFE_NORM_PRODUCT

    def rank(self, queries: np.ndarray, targets: SparseTargets) -> tuple[np.ndarray, np.ndarray]:
        """Top-K items (-1 past the rankable ones) and best-relevant ranks of one batch.

        Args:
            queries: float32 ``[B, D]`` query vectors (:meth:`safe` ones).
            targets: The batch's :meth:`TopKRankingMetrics.prepare` result.

        Returns:
            ``(items int64 [B, k], ranks int64 [B])``.
        """
        num_rows = queries.shape[0]
        blocked_rows = np.repeat(np.arange(num_rows), self._blocked.size)
        rows = np.concatenate([blocked_rows, targets.masked_rows])
        cols = np.concatenate([np.tile(self._blocked, num_rows), targets.masked_cols])
        masked = np.stack([rows, cols], axis=1).astype(np.int32)
        values, items, ranks = self._kernel(queries, self._table, masked, targets.relevant)
        items = np.where(np.isneginf(values.numpy()), -1, items.numpy().astype(np.int64))
        return items, ranks.numpy().astype(np.int64)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """Dense ``[B, I]`` scores (invalid items ``-inf``) for the reference path."""
        scores = tf.matmul(queries, self._table[: self.num_items], transpose_b=True).numpy()
        scores[:, self._blocked[self._blocked < self.num_items]] = -np.inf
        return scores


def evaluate_full_ranking_topk(
    query_fn: QueryFn,
    candidates: tf.Tensor | np.ndarray,
    query_ids: np.ndarray,
    relevant: IndexLists,
    exclude: IndexLists | None = None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int | None = None,
    memory_budget: int = MEMORY_BUDGET_BYTES,
    log_every_s: float = 10.0,
    invalid_items: Sequence[int] = DEFAULT_INVALID_ITEMS,
    mask_exclude: bool = True,
    with_ci: bool = False,
) -> dict[str, float]:
    """:func:`~tfrec.evaluation.protocol.evaluate_full_ranking` for dot-product scores, batched.

    Scores are ``query_fn(ids) @ candidates.T``; the metrics equal the dense
    protocol's on those scores (see the module docstring for the tie policy).

    Args:
        query_fn: ``query_ids [b] -> [b, D]`` query vectors, rows aligned with the batch.
        candidates: ``[I, D]`` item vectors.
        query_ids: ``[Q]`` ids passed to ``query_fn`` in batches.
        relevant: Q integer arrays of relevant item indices.
        exclude: Q integer arrays of item indices removed from the ranking, or None.
        ks: Cutoffs K.
        batch_size: Queries per batch; default (None) from ``memory_budget``; an
            explicit size is still capped by it.
        memory_budget: Bytes of ``[B, I]`` float32 scores per batch.
        log_every_s: Seconds between progress log lines.
        invalid_items: Item indices never ranked.
        mask_exclude: False keeps the ``exclude`` items rankable (only counted).
        with_ci: Also report ``<metric>_ci95`` (see :mod:`tfrec.evaluation.intervals`).

    Returns:
        The keys of :func:`~tfrec.evaluation.protocol.evaluate_full_ranking`
        (plus the ``_ci95`` keys with ``with_ci``).

    Raises:
        ValueError: Inconsistent lengths, bad arguments, badly shaped query vectors,
            or NaN scores.
    """
    from tfrec.evaluation.protocol import _check_inputs, _run_batches  # noqa: PLC0415

    ranker = CatalogueTopK(candidates, max(ks), invalid_items)
    size = batch_size_for(ranker.num_items, memory_budget, batch_size)
    queries = _check_inputs(query_ids, relevant, exclude, size, log_every_s)
    accumulator = TopKRankingMetrics(ks=ks, invalid_items=invalid_items, mask_exclude=mask_exclude)
    feed = functools.partial(_rank_batch, ranker, accumulator, query_fn, queries)
    return _run_batches(accumulator, feed, queries, "full", with_ci=with_ci, log=logger)


def _rank_batch(
    ranker: CatalogueTopK,
    accumulator: TopKRankingMetrics,
    query_fn: QueryFn,
    queries: tuple,
    rows: slice,
) -> None:
    """Scores the query rows ``rows`` and adds them to ``accumulator``."""
    start, stop = rows.start, rows.stop
    vectors = np.asarray(query_fn(queries.ids[rows]), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != stop - start:
        raise ValueError(
            f"query_fn: expected query vectors of shape [{stop - start}, dim] for query rows "
            f"{start}:{stop}, got {vectors.shape}"
        )
    relevant = queries.relevant[rows]
    exclude = None if queries.exclude is None else queries.exclude[rows]
    if not ranker.safe(vectors):  # non-finite or overflowing scores: the exact dense path
        logger.debug("query rows %d:%d: scores not all finite, dense reference path", start, stop)
        accumulator.update(ranker.scores(vectors), relevant, exclude)
        return
    targets = accumulator.prepare(ranker.num_items, relevant, exclude)
    accumulator.add_ranked(targets, *ranker.rank(vectors, targets))
