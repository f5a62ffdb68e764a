"""Scale synthetic interaction logs generated in blocks with bounded memory (``tfrec synth``).

Unlike :mod:`tfrec.data.synthetic` (a small in-memory generator for tests), this
one yields logs of any size block by block; :mod:`tfrec.data.synth_writer`
streams them to Parquet. Memory is ``O(items + users)`` for a few numeric
arrays plus one block. The model:

* **Catalogue.** Item ``i`` (id ``"i<i>"``) has a popularity rank (a random
  permutation) with Zipf weight ``1 / (rank + 1) ** zipf_exponent`` and one of
  ``num_categories`` categories (balanced, random membership). Its title holds
  two tokens of its category's own vocabulary (``c<c>w<j>``) and two shared
  tokens (``w<v>``, Zipf over 1,000), so content features predict the category
  (cold start). Items nobody draws stay in the item file as cold items.
* **Activity.** User ``u`` (id ``"u<u>"``) gets ``min_len`` events plus a share
  of the rest proportional to a lognormal weight (``activity_sigma``), capped
  at ``max_len``: long-tailed, and the total is exactly ``num_interactions``.
* **Planted sequences.** Each category's items form one random cycle; the
  *successor* of an item is the next item on its cycle. A user's first item is
  a popularity draw; each next item is the previous item's successor with
  probability ``p_successor``, else a new popularity draw. A sequence model can
  learn the successors; popularity cannot. (A cycle, unlike a popularity-weighted
  successor map, never leads a chain back to an item within a category's size.)
* **No repeats** (unless ``allow_repeats``): an item a user already has is
  redrawn (which turns a successor step into a popularity draw; the realised
  successor fraction is reported), so held-out targets are never in the history.
  An item then has at most ``num_users`` events, which flattens the head of the
  Zipf law when users are few for the exponent (the top-1% share is reported).
* **Time.** Each user starts at a random second of a year after ``start_time``;
  gaps are ``1 + Exponential(mean_gap_seconds)`` seconds, so times increase.

Users are generated in fixed blocks of :data:`USER_BLOCK` with a random
generator seeded from ``(seed, block)``, so the rows depend on the config only,
not on how they are buffered (with the same numpy version: numpy does not promise
identical streams across versions). Each user's rows are contiguous and in time order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from tfrec.config import JsonConfig

USER_BLOCK = 1024  # users generated together (fixed: the output must not depend on buffering)
ZIPF_ROUNDS = 30  # redraw rounds from popularity before uniform redraws, then an exact fallback
UNIFORM_ROUNDS = 10
YEAR_SECONDS = 365 * 86400


@dataclasses.dataclass
class SynthConfig(JsonConfig):
    """What :func:`write_synthetic` generates (see the module docstring for the model).

    Attributes:
        num_users: Users (ids ``u0`` ...).
        num_items: Catalogue items (ids ``i0`` ...), cold ones included.
        num_interactions: Exact number of rows.
        seed: Seed (>= 0); equal configs give identical rows.
        zipf_exponent: Exponent of the popularity law (0 = uniform).
        p_successor: Probability that the next item is the previous one's successor.
        num_categories: Categories (default ``min(100, num_items)``).
        min_len: Fewest events per user.
        max_len: Most events per user (default ``num_items``, or unbounded with repeats).
        activity_sigma: Sigma of the lognormal activity weights (0 = nearly equal).
        allow_repeats: Whether a user may get the same item twice.
        start_time: Unix seconds of the earliest possible user start.
        mean_gap_seconds: Mean gap between a user's consecutive events.
    """

    num_users: int
    num_items: int
    num_interactions: int
    seed: int = 0
    zipf_exponent: float = 1.05
    p_successor: float = 0.5
    num_categories: int | None = None
    min_len: int = 3
    max_len: int | None = None
    activity_sigma: float = 1.0
    allow_repeats: bool = False
    start_time: int = 1_600_000_000
    mean_gap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "num_interactions", "min_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"SynthConfig.{name}={getattr(self, name)}; expected >= 1")
        checks = {
            "seed": (self.seed >= 0, ">= 0"),
            "zipf_exponent": (self.zipf_exponent >= 0, ">= 0"),
            "p_successor": (0.0 <= self.p_successor <= 1.0, "in [0, 1]"),
            "activity_sigma": (self.activity_sigma >= 0, ">= 0"),
            "mean_gap_seconds": (self.mean_gap_seconds > 0, "> 0"),
            "num_categories": (
                1 <= self.categories <= self.num_items,
                f"in [1, num_items={self.num_items}]",
            ),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"SynthConfig.{name}={getattr(self, name)}; expected {expected}")
        if not self.allow_repeats and self.user_cap > self.num_items:
            raise ValueError(
                f"SynthConfig.max_len={self.max_len} exceeds num_items={self.num_items}; "
                "without repeats a user has at most num_items events (or allow repeats)"
            )
        if self.user_cap < self.min_len:
            raise ValueError(f"SynthConfig: max_len={self.max_len} < min_len={self.min_len}")
        low, high = self.num_users * self.min_len, self.num_users * self.user_cap
        if not low <= self.num_interactions <= high:
            raise ValueError(
                f"SynthConfig.num_interactions={self.num_interactions}; expected in "
                f"[{low}, {high}] for {self.num_users} users with {self.min_len}.."
                f"{self.user_cap} events each (change the users, min_len or max_len)"
            )

    @property
    def categories(self) -> int:
        """The number of categories (the default resolved)."""
        return self.num_categories if self.num_categories is not None else min(100, self.num_items)

    @property
    def user_cap(self) -> int:
        """The most events a user can get (the default resolved)."""
        if self.max_len is not None:
            return self.max_len
        return self.num_interactions if self.allow_repeats else self.num_items


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator of one part of the output: ``(seed, key)`` -> an independent stream."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """Item popularity, categories and the successor cycles (all ``O(num_items)``).

    Attributes:
        cdf: float64 ``[I]``: cumulative Zipf weights by popularity rank.
        by_rank: int32 ``[I]``: the item at each popularity rank.
        category: int32 ``[I]``: each item's category.
        cycle: int32 ``[I]``: items grouped by category, each group in its cycle order.
        position: int32 ``[I]``: each item's index in ``cycle``.
        cat_start: int64 ``[C]``: where each category starts in ``cycle``.
        cat_size: int64 ``[C]``: items per category.
    """

    cdf: np.ndarray
    by_rank: np.ndarray
    category: np.ndarray
    cycle: np.ndarray
    position: np.ndarray
    cat_start: np.ndarray
    cat_size: np.ndarray

    @property
    def num_items(self) -> int:
        """Catalogue size."""
        return len(self.by_rank)

    def probabilities(self) -> np.ndarray:
        """float64 ``[I]``: each item's probability under one popularity draw."""
        weights = np.diff(self.cdf, prepend=0.0) / self.cdf[-1]
        out = np.empty_like(weights)
        out[self.by_rank] = weights
        return out

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent popularity draws (int32 item indices)."""
        ranks = np.searchsorted(self.cdf, rng.random(size) * self.cdf[-1], side="right")
        return self.by_rank[np.minimum(ranks, self.num_items - 1)]

    def successor(self, items: np.ndarray, steps: np.ndarray | int = 1) -> np.ndarray:
        """The item ``steps`` places after each item on its category's cycle (0 = itself)."""
        items = np.asarray(items)
        cat = self.category[items]
        start, size = self.cat_start[cat], self.cat_size[cat]
        return self.cycle[start + (self.position[items] - start + steps) % size]


def build_catalogue(config: SynthConfig) -> Catalogue:
    """The catalogue of ``config`` (deterministic by ``config.seed``)."""
    rng = seeded_rng(config.seed, 2)
    n, c = config.num_items, config.categories
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** config.zipf_exponent
    by_rank = rng.permutation(n).astype(np.int32)
    category = np.empty(n, dtype=np.int32)
    category[rng.permutation(n)] = np.arange(n) % c
    cycle = np.lexsort((rng.random(n), category)).astype(np.int32)
    position = np.empty(n, dtype=np.int32)
    position[cycle] = np.arange(n, dtype=np.int32)
    cat_size = np.bincount(category, minlength=c).astype(np.int64)
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]]).astype(np.int64)
    return Catalogue(np.cumsum(weights), by_rank, category, cycle, position, cat_start, cat_size)


def user_lengths(config: SynthConfig) -> np.ndarray:
    """int64 ``[U]``: events per user, long-tailed, summing to ``num_interactions`` exactly."""
    rng = seeded_rng(config.seed, 0)
    weights = rng.lognormal(0.0, config.activity_sigma, config.num_users)
    lengths = np.full(config.num_users, config.min_len, dtype=np.int64)
    remaining = config.num_interactions - int(lengths.sum())
    open_users = np.ones(config.num_users, dtype=bool)
    while remaining > 0:  # hand out the rest by weight; what a cap cuts off goes round again
        index = np.flatnonzero(open_users)
        share = weights[index] / weights[index].sum()
        lengths[index] += rng.multinomial(remaining, share)
        over = np.maximum(lengths - config.user_cap, 0)
        remaining = int(over.sum())
        lengths -= over
        open_users &= lengths < config.user_cap
    return lengths


@dataclasses.dataclass(frozen=True)
class Block:
    """The rows of users ``[first_user, first_user + len(lengths))``, user by user in time order.

    Attributes:
        first_user: Index of the block's first user.
        lengths: int64: events per user of the block.
        items: int32 item index per row.
        timestamps: int64 unix seconds per row.
        successor_pairs: Consecutive pairs of a user whose item is the previous one's successor.
        repeats: Rows repeating an item their user already had.
    """

    first_user: int
    lengths: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    successor_pairs: int
    repeats: int


def _expand(catalogue: Catalogue, fresh: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Items of whole users' rows: a fresh row takes its draw, others follow the successor chain."""
    index = np.arange(len(fresh))
    start = np.maximum.accumulate(np.where(fresh, index, 0))
    return catalogue.successor(draws[start], index - start)


def _repeated_rows(user: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted row indices whose (user, item) appeared in an earlier row."""
    keys = user.astype(np.int64) * num_items + items
    order = np.argsort(keys, kind="stable")
    same = keys[order][1:] == keys[order][:-1]
    return np.sort(order[1:][same])


def _user_rows(offsets: np.ndarray, lengths: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Row indices of ``users`` (whole users, in order)."""
    counts = lengths[users]
    starts = np.repeat(offsets[users] - np.cumsum(counts) + counts, counts)
    return starts + np.arange(int(counts.sum()))


def _remove_repeats(  # noqa: PLR0917  (the block's state, passed once)
    catalogue: Catalogue,
    rng: np.random.Generator,
    lengths: np.ndarray,
    user: np.ndarray,
    fresh: np.ndarray,
    draws: np.ndarray,
    items: np.ndarray,
) -> None:
    """Redraws repeated items in place: popularity rounds, uniform rounds, then exact picks."""
    offsets = np.cumsum(lengths) - lengths
    rows = np.arange(len(items))
    for round_index in range(ZIPF_ROUNDS + UNIFORM_ROUNDS):
        repeated = rows[_repeated_rows(user[rows], items[rows], catalogue.num_items)]
        if repeated.size == 0:
            return
        fresh[repeated] = True
        if round_index < ZIPF_ROUNDS:
            draws[repeated] = catalogue.draw(rng, repeated.size)
        else:
            draws[repeated] = rng.integers(0, catalogue.num_items, repeated.size, dtype=np.int32)
        rows = _user_rows(offsets, lengths, np.unique(user[repeated]))
        items[rows] = _expand(catalogue, fresh[rows], draws[rows])
    repeated = rows[_repeated_rows(user[rows], items[rows], catalogue.num_items)]
    for u in np.unique(user[repeated]):  # rare: users holding a large part of the catalogue
        own = slice(offsets[u], offsets[u] + lengths[u])
        bad = repeated[user[repeated] == u]
        unseen = np.setdiff1d(np.arange(catalogue.num_items), items[own])
        items[bad] = rng.choice(unseen, size=bad.size, replace=False)


def generate_block(
    config: SynthConfig, catalogue: Catalogue, lengths: np.ndarray, block: int
) -> Block:
    """The rows of user block ``block`` (users ``block * USER_BLOCK`` ...).

    Args:
        config: The generator's config.
        catalogue: ``build_catalogue(config)``.
        lengths: ``user_lengths(config)`` (all users).
        block: Block index.

    Returns:
        The block's rows and its counts of successor pairs and repeats.
    """
    first = block * USER_BLOCK
    own = lengths[first : first + USER_BLOCK]
    rng = seeded_rng(config.seed, 1, block)
    rows = int(own.sum())
    user = np.repeat(np.arange(len(own), dtype=np.int32), own)
    offsets = np.cumsum(own) - own
    starts = config.start_time + rng.integers(0, YEAR_SECONDS, len(own))
    gaps = 1 + np.floor(rng.exponential(config.mean_gap_seconds, rows)).astype(np.int64)
    elapsed = np.cumsum(gaps)
    timestamps = starts[user] + elapsed - (elapsed[offsets] - gaps[offsets])[user]
    fresh = rng.random(rows) >= config.p_successor
    fresh[offsets] = True
    draws = catalogue.draw(rng, rows)
    items = _expand(catalogue, fresh, draws)
    if config.allow_repeats:
        repeats = len(_repeated_rows(user, items, catalogue.num_items))
    else:
        _remove_repeats(catalogue, rng, own, user, fresh, draws, items)
        repeats = 0
    follows = items[1:] == catalogue.successor(items[:-1])
    follows[offsets[1:] - 1] = False  # pairs across two users
    return Block(first, own, items.astype(np.int32), timestamps, int(follows.sum()), repeats)


def generate_blocks(config: SynthConfig) -> Iterator[Block]:
    """All user blocks of ``config``, in user order (for tests and custom writers)."""
    catalogue = build_catalogue(config)
    lengths = user_lengths(config)
    for block in range(-(-config.num_users // USER_BLOCK)):
        yield generate_block(config, catalogue, lengths, block)
