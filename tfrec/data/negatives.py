"""Negative sampling for next-item ranking: uniform, popularity, hard (retrieval) negatives.

All samplers work on item *indices* of an :class:`~tfrec.data.vocab.IdVocabulary`
(0 = padding, 1 = out-of-vocabulary, known items ``2 .. vocab_size - 1``). They
never return 0, 1 or the example's positive item, and they are deterministic for
a given ``numpy.random.Generator`` state.

* ``uniform``: every known item except the positive, with equal probability.
* ``popularity``: proportional to ``popularity[i]`` (e.g. training counts),
  renormalised over the items other than the positive (items with zero count are
  never drawn).
* ``hard``: drawn uniformly without replacement from a per-example pool, the
  top-N items of a retrieval model with the positive (and the history) removed
  (:func:`retrieval_pool`, which also gives the positive's rank).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tfrec.config import choices
from tfrec.data.vocab import NUM_RESERVED, PAD_INDEX
from tfrec.names import NegativeSampling

#: Negative samplers (``RankingLossConfig.negative_sampling``).
Strategy = NegativeSampling

# score_fn(histories [b, L] int32, users [b] int32) -> scores [b, vocab_size] float
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_positives(positives: np.ndarray, vocab_size: int) -> np.ndarray:
    positives = np.asarray(positives)
    if positives.ndim != 1:
        raise ValueError(
            f"positives: expected a 1-D array of item indices, got shape {positives.shape}"
        )
    if positives.size and (positives.min() < NUM_RESERVED or positives.max() >= vocab_size):
        bad = positives[(positives < NUM_RESERVED) | (positives >= vocab_size)][0]
        raise ValueError(
            f"positives: item index {int(bad)} is not a known item; expected "
            f"{NUM_RESERVED} <= index < vocab_size={vocab_size}"
        )
    return positives.astype(np.int64)


def uniform_negatives(
    positives: np.ndarray, num_negatives: int, vocab_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draws negatives uniformly from the known items other than the positive.

    Exact (no rejection): draw ``j`` uniformly from the ``vocab_size - 3``
    slots ``[2, vocab_size - 1)`` and shift it up by one when ``j >= positive``.

    Args:
        positives: ``[N]`` positive item index per example.
        num_negatives: Negatives per example (drawn with replacement).
        vocab_size: Item vocabulary size including the 2 reserved indices.
        rng: Random generator (seeded by the caller).

    Returns:
        int32 ``[N, num_negatives]``.

    Raises:
        ValueError: Fewer than 2 known items, or a positive outside the vocabulary.
    """
    positives = _check_positives(positives, vocab_size)
    if vocab_size - NUM_RESERVED < 2:
        raise ValueError(
            f"vocab_size={vocab_size}: uniform negatives need at least 2 known items "
            f"(vocab_size >= {NUM_RESERVED + 2})"
        )
    draws = rng.integers(NUM_RESERVED, vocab_size - 1, size=(len(positives), num_negatives))
    draws = draws + (draws >= positives[:, None])  # [N, M]
    return draws.astype(np.int32)


def popularity_negatives(
    positives: np.ndarray,
    num_negatives: int,
    popularity: np.ndarray,
    rng: np.random.Generator,
    max_rounds: int = 1000,
) -> np.ndarray:
    """Draws negatives with probability proportional to ``popularity``, never the positive.

    Draws from the full distribution and redraws the entries that hit the
    positive; this samples exactly ``p_i / (1 - p_positive)`` for ``i != positive``.

    Args:
        positives: ``[N]`` positive item index per example.
        num_negatives: Negatives per example (drawn with replacement).
        popularity: ``[vocab_size]`` non-negative weights (entries 0 and 1 are ignored).
        rng: Random generator.
        max_rounds: Redraw rounds before giving up (only reachable when one item
            holds almost all of the mass).

    Returns:
        int32 ``[N, num_negatives]``.

    Raises:
        ValueError: Negative weights, or some positive is the only item with weight.
    """
    weights = np.asarray(popularity, dtype=np.float64).copy()
    if weights.ndim != 1:
        raise ValueError(f"popularity: expected shape [vocab_size], got {weights.shape}")
    vocab_size = len(weights)
    positives = _check_positives(positives, vocab_size)
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("popularity: weights must be finite and non-negative")
    weights[:NUM_RESERVED] = 0.0
    total = weights.sum()
    if positives.size and (total - weights[positives] <= 0).any():
        raise ValueError(
            "popularity: some positive item is the only item with non-zero weight, "
            "so no negative can be drawn for it"
        )
    cdf = np.cumsum(weights / total)
    cdf[-1] = 1.0

    def draw(size: tuple[int, ...]) -> np.ndarray:
        return np.searchsorted(cdf, rng.random(size), side="right").clip(max=vocab_size - 1)

    out = draw((len(positives), num_negatives))  # [N, M]
    for _ in range(max_rounds):
        hits = out == positives[:, None]
        if not hits.any():
            return out.astype(np.int32)
        out[hits] = draw((int(hits.sum()),))
    raise ValueError(f"popularity: could not avoid the positive after {max_rounds} redraws")


def hard_negatives(pool: np.ndarray, num_negatives: int, rng: np.random.Generator) -> np.ndarray:
    """Draws negatives uniformly without replacement from a per-example pool.

    Args:
        pool: int ``[N, P]`` candidate negatives per example (from
            :func:`retrieval_pool` ``.items``, positive already removed); entries
            ``< 2`` are treated as empty slots.
        num_negatives: Negatives per example; rows with fewer valid pool items
            repeat them (with replacement) to fill the row.
        rng: Random generator.

    Returns:
        int32 ``[N, num_negatives]``.

    Raises:
        ValueError: A pool row holds no valid item.
    """
    pool = np.asarray(pool)
    if pool.ndim != 2:
        raise ValueError(f"pool: expected shape [N, P], got {pool.shape}")
    valid = pool >= NUM_RESERVED  # [N, P]
    counts = valid.sum(axis=1)
    if (counts == 0).any():
        row = int(np.argmin(counts))
        raise ValueError(f"pool: row {row} has no valid item to use as a hard negative")
    # Random keys; invalid slots sort last, so the first `counts[n]` are a random permutation.
    keys = np.where(valid, rng.random(pool.shape), 2.0)
    order = np.argsort(keys, axis=1)  # [N, P]
    shuffled = np.take_along_axis(pool, order, axis=1)
    cols = np.arange(num_negatives)[None, :] % counts[:, None]  # wraps when P_valid < M
    return np.take_along_axis(shuffled, cols, axis=1).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class RetrievalPool:
    """What a retrieval model proposes per example, and where it puts the positive.

    Attributes:
        items: int32 ``[N, pool_size]`` top items, best first, positive excluded
            (padding 0 fills rows with fewer proposable items).
        positive_rank: int64 ``[N]``: how many proposable items (the same
            exclusions, positive aside) score strictly higher than the positive, so
            the positive is in the retrieved top-N exactly when ``positive_rank < N``.
    """

    items: np.ndarray
    positive_rank: np.ndarray

    def positive_in_top(self, n: int | None = None) -> np.ndarray:
        """Whether the positive is in the top ``n`` (default: the pool size), ``[N]``."""
        return self.positive_rank < (self.items.shape[1] if n is None else n)


def retrieval_pool(
    score_fn: ScoreFn,
    histories: np.ndarray,
    users: np.ndarray,
    positives: np.ndarray,
    *,
    pool_size: int,
    exclude: Sequence[np.ndarray] | None = None,
    batch_size: int = 1024,
) -> RetrievalPool:
    """Top-``pool_size`` items of a retrieval model per example, and the positive's rank.

    Padding, OOV, the positive, the example's history items and ``exclude`` (e.g.
    the user's later items, which are positives of other examples) are removed,
    so a hard negative is an item the retrieval stage would really propose.

    Args:
        score_fn: ``(histories [b, L], users [b]) -> scores [b, vocab_size]``.
        histories: int ``[N, L]`` left-padded history per example.
        users: int ``[N]`` user index per example.
        positives: int ``[N]`` positive item per example.
        pool_size: Items kept per example.
        exclude: Optional per-example arrays of further item indices to remove.
        batch_size: Examples scored at once.

    Returns:
        The pool (``items`` best first) and each positive's rank among the
        proposable items.

    Raises:
        ValueError: Mismatched lengths, or ``pool_size`` larger than the
            number of items that can be proposed.
    """
    histories = np.asarray(histories)
    users = np.asarray(users)
    positives = np.asarray(positives)
    if exclude is not None and len(exclude) != len(positives):
        raise ValueError(
            f"retrieval_pool: exclude has {len(exclude)} rows for {len(positives)} positives"
        )
    if not len(histories) == len(users) == len(positives):
        raise ValueError(
            f"retrieval_pool: histories ({len(histories)}), users ({len(users)}) and "
            f"positives ({len(positives)}) must have the same length"
        )
    out = np.zeros((len(positives), pool_size), dtype=np.int32)
    ranks = np.zeros(len(positives), dtype=np.int64)
    for start in range(0, len(positives), batch_size):
        stop = start + batch_size
        scores = np.array(score_fn(histories[start:stop], users[start:stop]), dtype=np.float32)
        vocab_size = scores.shape[1]
        if pool_size > vocab_size - NUM_RESERVED - 1:
            raise ValueError(
                f"pool_size={pool_size} exceeds the {vocab_size - NUM_RESERVED - 1} items "
                "that can be proposed besides the positive"
            )
        rows = np.arange(len(scores))[:, None]
        positive_scores = scores[rows[:, 0], positives[start:stop]].copy()  # [b]
        scores[:, :NUM_RESERVED] = -np.inf
        scores[rows, histories[start:stop]] = -np.inf
        scores[rows[:, 0], positives[start:stop]] = -np.inf
        if exclude is not None:
            for row, items in enumerate(exclude[start:stop]):
                scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
        ranks[start:stop] = (scores > positive_scores[:, None]).sum(axis=1)
        top = np.argpartition(-scores, pool_size - 1, axis=1)[:, :pool_size]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        # Rows whose history covers nearly the whole catalogue may reach -inf items: drop them.
        best = np.where(np.take_along_axis(scores, best, axis=1) > -np.inf, best, PAD_INDEX)
        out[start:stop] = best
    return RetrievalPool(items=out, positive_rank=ranks)


def sample_negatives(
    strategy: Strategy,
    positives: np.ndarray,
    num_negatives: int,
    vocab_size: int,
    rng: np.random.Generator,
    *,
    popularity: np.ndarray | None = None,
    pool: np.ndarray | None = None,
) -> np.ndarray:
    """Dispatches to the sampler named by ``strategy``.

    Args:
        strategy: ``"uniform"``, ``"popularity"`` or ``"hard"``.
        positives: ``[N]`` positive item index per example.
        num_negatives: Negatives per example (``>= 1``).
        vocab_size: Item vocabulary size (with the 2 reserved indices).
        rng: Random generator.
        popularity: ``[vocab_size]`` weights, required for ``"popularity"``.
        pool: ``[N, P]`` hard-negative pool, required for ``"hard"``.

    Returns:
        int32 ``[N, num_negatives]``, never containing the positive, 0 or 1.

    Raises:
        ValueError: Unknown strategy, ``num_negatives < 1`` or a missing argument.
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives: expected >= 1, got {num_negatives}")
    if strategy == "uniform":
        return uniform_negatives(positives, num_negatives, vocab_size, rng)
    if strategy == "popularity":
        if popularity is None:
            raise ValueError("negative_sampling='popularity' needs `popularity` weights")
        if len(popularity) != vocab_size:
            raise ValueError(
                f"popularity: length {len(popularity)} != item vocab_size {vocab_size}"
            )
        return popularity_negatives(positives, num_negatives, popularity, rng)
    if strategy == "hard":
        if pool is None:
            raise ValueError("negative_sampling='hard' needs a `pool` (retrieval_pool(...).items)")
        if len(pool) != len(positives):
            raise ValueError(f"pool: {len(pool)} rows for {len(positives)} positives")
        if (np.asarray(pool) == np.asarray(positives)[:, None]).any():
            raise ValueError("pool: contains the example's positive item")
        return hard_negatives(pool, num_negatives, rng)
    raise ValueError(
        f"negative_sampling: expected one of {list(choices(Strategy))}, got {strategy!r}"
    )
