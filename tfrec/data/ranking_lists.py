"""Training inputs of the ranker: shuffled datasets, per-epoch negatives, validation lists.

Rating objective: shuffled batches of :func:`~tfrec.data.ranking_examples.rating_features`.
Next-item objective: each training list is the true item plus ``num_negatives``
negatives re-drawn every epoch (seeded by ``(seed, epoch)``); with
``negative_sampling="hard"`` the negatives come from a retrieval model's top items
(:func:`tfrec.data.negatives.retrieval_pool`). Without a ``valid`` split part,
:func:`split_validation` holds out each user's most recent examples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.negatives import retrieval_pool, sample_negatives
from tfrec.data.ranking_examples import (
    RankingExamples,
    eval_lists,
    list_features,
    rating_features,
)
from tfrec.data.vocab import NUM_RESERVED

if TYPE_CHECKING:  # the data layer builds model inputs; it never builds models
    from tfrec.models.ranking import RankerDataSpec, RankingConfig
    from tfrec.models.two_stage import RetrievalScorer

logger = logging.getLogger(__name__)


def draw_negatives(
    config: RankingConfig,
    positives: np.ndarray,
    num_items: int,
    rng: np.random.Generator,
    *,
    popularity: np.ndarray | None,
    pool: np.ndarray | None,
) -> np.ndarray:
    """``loss.num_negatives`` per example; ``"hard"`` mixes in uniform ones (``hard_fraction``)."""
    lists = config.loss
    total = lists.num_negatives
    num_hard = round(total * lists.hard_fraction) if lists.negative_sampling == "hard" else 0
    parts = []
    if lists.negative_sampling != "hard":
        parts.append(
            sample_negatives(
                lists.negative_sampling, positives, total, num_items, rng, popularity=popularity
            )
        )
    else:
        if num_hard:
            parts.append(sample_negatives("hard", positives, num_hard, num_items, rng, pool=pool))
        if total - num_hard:
            parts.append(sample_negatives("uniform", positives, total - num_hard, num_items, rng))
    return np.concatenate(parts, axis=1)


class _ListBatches:
    """Generator of shuffled next-item training batches, negatives re-drawn each epoch."""

    def __init__(
        self,
        examples: RankingExamples,
        config: RankingConfig,
        num_items: int,
        popularity: np.ndarray | None,
        pool: np.ndarray | None,
        *,
        epoch: int = 0,
    ):
        self.examples = examples
        self.config = config
        self.num_items = num_items
        self.popularity = popularity
        self.pool = pool
        self.epoch = epoch  # the next epoch's number: seeds its negatives

    def __call__(self) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.config.training.seed, self.epoch])
        self.epoch += 1
        ex = self.examples
        negatives = draw_negatives(
            self.config, ex.item, self.num_items, rng, popularity=self.popularity, pool=self.pool
        )
        order = rng.permutation(len(ex))
        for start in range(0, len(ex), self.config.training.batch_size):
            rows = order[start : start + self.config.training.batch_size]
            yield list_features(ex.take(rows), negatives[rows])

    def dataset(self) -> tf.data.Dataset:
        """The generator as a ``tf.data.Dataset`` (one pass = one epoch)."""
        length = self.examples.max_history
        count = self.config.loss.num_negatives + 1
        signature = {
            "user": tf.TensorSpec([None], tf.int32),
            "history": tf.TensorSpec([None, length], tf.int32),
            "history_rating": tf.TensorSpec([None, length], tf.float32),
            "history_log_dt": tf.TensorSpec([None, length], tf.float32),
            "candidates": tf.TensorSpec([None, count], tf.int32),
            "labels": tf.TensorSpec([None, count], tf.float32),
        }
        return tf.data.Dataset.from_generator(self, output_signature=signature).prefetch(2)


def split_validation(
    examples: RankingExamples, fraction: float, seed: int
) -> tuple[RankingExamples, RankingExamples]:
    """Holds out each user's most recent examples, about ``fraction`` of them: ``(train, valid)``.

    Holding out the *latest* events keeps validation clean: a held-out event is
    never the history of a training example (every later event of the user is
    held out too), and the users stay known to the model, as they are at test
    time. User ``u`` with ``n`` examples gives ``floor(fraction * n + r)`` of them
    (``r`` uniform in [0, 1), seeded), at most ``n - 1``; so the expected share is
    ``fraction`` and every user keeps a training example. At least one example
    is held out when some user has two or more.
    """
    n = len(examples)
    order = np.lexsort((examples.end, examples.user))  # by user, then time
    users = examples.user[order]
    first = np.r_[True, users[1:] != users[:-1]] if n else np.zeros(0, dtype=bool)
    block_start = np.flatnonzero(first)
    sizes = np.diff(np.r_[block_start, n])  # examples per user
    rng = np.random.default_rng([seed, 11])
    take = np.floor(fraction * sizes + rng.random(len(sizes))).astype(np.int64)
    take = np.minimum(take, sizes - 1)
    if take.sum() == 0 and len(sizes) and sizes.max() >= 2:
        take[np.argmax(sizes)] = 1
    block_end = np.repeat(block_start + sizes, sizes)  # one past each row's user block
    from_end = block_end - 1 - np.arange(n)  # 0 = the user's latest example
    held = np.zeros(n, dtype=bool)
    held[order] = from_end < np.repeat(take, sizes)
    return examples.take(np.flatnonzero(~held)), examples.take(np.flatnonzero(held))


def ranker_datasets(
    config: RankingConfig,
    spec: RankerDataSpec,
    train: RankingExamples,
    valid: RankingExamples,
    retrieval: RetrievalScorer | None,
    *,
    initial_epoch: int = 0,
) -> tuple[tf.data.Dataset, dict[str, np.ndarray]]:
    """Training dataset (shuffled; next-item negatives re-drawn per epoch), validation features.

    ``initial_epoch``: the first epoch the dataset is iterated for (a resumed
    run), so next-item negatives follow the same per-epoch seeds.
    """
    if config.objective == "rating":
        rng = np.random.default_rng([config.training.seed, 3])
        train = train.take(rng.permutation(len(train)))
        train_ds = tf.data.Dataset.from_tensor_slices(rating_features(train))
        train_ds = train_ds.shuffle(min(len(train), 100_000), seed=config.training.seed)
        train_ds = train_ds.batch(config.training.batch_size).prefetch(2)
        valid_features = rating_features(valid)
    else:
        popularity = np.bincount(train.item, minlength=spec.num_items).astype(np.float64)
        pool = None
        if config.loss.negative_sampling == "hard":
            if retrieval is None:
                raise ValueError("negative_sampling='hard' needs a retrieval scorer")
            train, pool, valid_features = _retrieved_lists(
                config, spec.num_items, train, valid, retrieval
            )
        else:
            valid_features = eval_lists(
                valid, spec.num_items, config.eval_negatives, config.training.seed
            )
        batches = _ListBatches(train, config, spec.num_items, popularity, pool, epoch=initial_epoch)
        train_ds = batches.dataset()
    return train_ds, valid_features


def _retrieved_lists(
    config: RankingConfig,
    num_items: int,
    train: RankingExamples,
    valid: RankingExamples,
    retrieval: RetrievalScorer,
) -> tuple[RankingExamples, np.ndarray, dict[str, np.ndarray]]:
    """Hard-negative inputs: ``(train examples, their retrieval pools, validation lists)``.

    Validation lists are what the two-stage ranker sees: the true item among the
    retrieval model's top candidates. With ``retrieved_only`` both parts keep
    only the examples whose true item retrieval ranks in its top N.
    """
    score_fn = _numpy_scorer(retrieval)
    train_pool = retrieval_pool(
        score_fn,
        train.history,
        train.user,
        train.item,
        pool_size=config.loss.hard_pool_size,
        exclude=train.user_items(),  # the user's other items are positives, not negatives
    )
    pool = train_pool.items
    valid = valid.take(np.flatnonzero(valid.item >= NUM_RESERVED))
    valid_pool = retrieval_pool(
        score_fn, valid.history, valid.user, valid.item,
        pool_size=config.eval_negatives, exclude=valid.user_items(),
    )  # fmt: skip
    valid_items = valid_pool.items
    if config.loss.retrieved_only:
        keep = np.flatnonzero(train_pool.positive_in_top())
        train, pool = train.take(keep), pool[keep]
        keep = np.flatnonzero(valid_pool.positive_in_top(config.num_candidates))
        valid, valid_items = valid.take(keep), valid_items[keep]
        if not len(train) or not len(valid):
            raise ValueError(
                f"retrieved_only: {len(train)} training / {len(valid)} validation "
                "examples have their true item in the retrieval top-N; need at "
                "least one of each (raise hard_pool_size / num_candidates)"
            )
        logger.info(
            "retrieved_only: %d training / %d validation examples have the true item "
            "in the retrieval top-N",
            len(train),
            len(valid),
        )
    rng = np.random.default_rng([config.training.seed, 7])
    valid_negatives = sample_negatives(
        "hard", valid.item, config.eval_negatives, num_items, rng, pool=valid_items
    )
    return train, pool, list_features(valid, valid_negatives)


def _numpy_scorer(retrieval: RetrievalScorer) -> Any:
    graph = tf.function(retrieval.__call__, reduce_retracing=True)  # traced once

    def score(histories: np.ndarray, users: np.ndarray) -> np.ndarray:
        return graph({"history": histories, "user": users}).numpy()

    return score
