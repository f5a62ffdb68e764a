"""Full-ranking (and sampled) evaluation of a two-tower retrieval model on a split.

:class:`RetrievalEvaluator` builds the evaluation queries of a split part
(:func:`tfrec.data.queries.eval_queries`), scores the whole catalogue with the
model and reports every protocol of an :class:`~tfrec.evaluation.config.EvalConfig`
under prefixed keys (``test/ndcg@10``, ``test_unmasked/...``, ``test_sampled/...``).
:func:`protocol_metrics` is one such report over any score function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.interactions import concat_interactions
from tfrec.data.queries import EvalQueries, eval_queries
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary
from tfrec.evaluation.config import MASK_SUFFIX, EvalConfig, prefixed
from tfrec.evaluation.intervals import POPULATION_KEY, SAMPLE_KEY
from tfrec.evaluation.protocol import ScoreFn, evaluate_full_ranking, evaluate_sampled
from tfrec.evaluation.topk import QueryFn, evaluate_full_ranking_topk


def protocol_metrics(
    score_fn: ScoreFn | None,
    queries: EvalQueries,
    config: EvalConfig,
    *,
    masked: bool,
    sampled: bool = False,
    item_counts: np.ndarray | None = None,
    seed: int = 0,
    log_every_s: float = 30.0,
    dot_product: tuple[QueryFn, tf.Tensor] | None = None,
) -> dict[str, float]:
    """One evaluation report over ``queries``: full ranking or sampled, masked or not.

    The users' history (``queries.seen``) is always passed: removed from the
    ranking when ``masked`` (a held-out item that repeats it is a miss), kept
    rankable otherwise; in both cases counted. Every query with a held-out item
    is in the denominator ``users``.

    Args:
        score_fn: ``rows [b] -> scores [b, I]`` over ``queries`` (the sampled
            protocol, and full ranking without ``dot_product``).
        queries: The evaluation queries of one split part.
        config: Cutoffs, batch size and sampled-protocol settings; with
            ``num_users`` the ``<metric>_ci95`` keys are added.
        masked: Remove each user's history from the ranking.
        sampled: The sampled protocol (``config.sampled_negatives`` negatives)
            instead of full ranking; cutoffs above the list length are dropped.
        item_counts: ``[I]`` item counts for popularity sampling.
        seed: Seed of the sampled negatives.
        log_every_s: Seconds between progress log lines.
        dot_product: ``(query_fn, candidates)``: full ranking scores
            ``query_fn(rows) @ candidates.T`` batched on the candidates' device
            (:mod:`tfrec.evaluation.topk`; same metrics, only top-K ids leave it).

    Returns:
        Plain keys (``"ndcg@10"``, ``"users"``, ``"masked_target_users"``,
        ``"repeat_target_users"``, ...) plus ``"mask_history"`` (1.0 or 0.0).
    """
    rows = np.arange(len(queries))
    common = {
        "batch_size": config.batch_size,
        "log_every_s": log_every_s,
        "mask_exclude": masked,
        "with_ci": config.num_users > 0,
    }
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
    elif dot_product is not None:
        query_fn, candidates = dot_product
        metrics = evaluate_full_ranking_topk(
            query_fn, candidates, rows, queries.relevant, queries.seen, ks=config.ks, **common
        )
    else:
        metrics = evaluate_full_ranking(
            score_fn, rows, queries.relevant, queries.seen, ks=config.ks, **common
        )
    metrics["mask_history"] = float(masked)
    return metrics


class RetrievalEvaluator:
    """Evaluates a two-tower model on the ``valid`` and ``test`` parts of a split.

    Args:
        model: The model; ``model.score(user, history, candidates=...)`` and
            ``model.candidate_embeddings()`` are used (read at each evaluation,
            so it follows training).
        split: The split (``valid`` history = train; ``test`` history = train + valid).
        user_vocab: User vocabulary of the model.
        item_vocab: Item vocabulary of the model.
        max_history: History length L of the queries.
        seed: Seed of the validation sample and of sampled negatives.
        item_counts: ``[I]`` training counts, for popularity-sampled negatives.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        split: Split,
        user_vocab: IdVocabulary,
        item_vocab: IdVocabulary,
        *,
        max_history: int,
        seed: int,
        item_counts: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.split = split
        self.user_vocab = user_vocab
        self.item_vocab = item_vocab
        self.max_history = max_history
        self.seed = seed
        self.item_counts = item_counts
        self._queries: dict[tuple[str, int], EvalQueries] = {}
        self._population: dict[str, int] = {}
        self._score_graph: Callable[..., tf.Tensor] | None = None
        self._query_graph: Callable[..., tf.Tensor] | None = None

    def queries(self, part: str, valid_max_users: int = 0, num_users: int = 0) -> EvalQueries:
        """Evaluation queries of ``"valid"`` or ``"test"`` (cached).

        ``"valid"`` keeps a seeded sample of at most ``valid_max_users`` users (0 = all);
        otherwise (and for ``"test"``) a seeded sample of at most ``num_users``
        users (0 = all). Same seed, same users.

        Raises:
            ValueError: Another ``part``, or ``"valid"`` on a split without one.
        """
        cap = valid_max_users if part == "valid" and valid_max_users > 0 else num_users
        key = (part, cap)
        if key not in self._queries:
            full = self._queries.get((part, 0))
            if full is None:
                full = self._part_queries(part)
                self._queries[(part, 0)] = full
                self._population[part] = len(full)
            self._queries[key] = full.sample(cap, self.seed)
        return self._queries[key]

    def _part_queries(self, part: str) -> EvalQueries:
        """Every query of one part (history = train, or train + valid for test)."""
        split = self.split
        if part == "valid":
            if split.valid is None:
                raise ValueError("this split has no validation part")
            context, held = split.train, split.valid
        elif part == "test":
            context, held = concat_interactions(split.train, split.valid), split.test
        else:
            raise ValueError(f"part={part!r}; expected 'valid' or 'test'")
        vocabs = (self.user_vocab, self.item_vocab)
        return eval_queries(context, held, *vocabs, self.max_history)

    def score_fn(self, queries: EvalQueries) -> ScoreFn:
        """``rows [b] -> scores [b, I]`` over ``queries`` (one traced graph per evaluator)."""
        if self._score_graph is None:
            model = self.model
            self._score_graph = tf.function(
                lambda user, history, candidates: model.score(user, history, candidates=candidates),
                input_signature=[
                    tf.TensorSpec([None], tf.int32),  # user [B]
                    tf.TensorSpec([None, self.max_history], tf.int32),  # history [B, L]
                    tf.TensorSpec([None, None], tf.float32),  # candidates [I, D]
                ],
            )
        graph = self._score_graph
        candidates = self.model.candidate_embeddings()  # [I, D], once per evaluation

        def score(rows: np.ndarray) -> np.ndarray:
            return graph(queries.users[rows], queries.history[rows], candidates).numpy()

        return score

    def query_fn(self, queries: EvalQueries) -> QueryFn:
        """``rows [b] -> query vectors [b, D]`` over ``queries`` (one graph per evaluator)."""
        if self._query_graph is None:
            self._query_graph = tf.function(
                self.model.query_embeddings,
                input_signature=[
                    tf.TensorSpec([None], tf.int32),  # user [B]
                    tf.TensorSpec([None, self.max_history], tf.int32),  # history [B, L]
                ],
            )
        graph = self._query_graph

        def vectors(rows: np.ndarray) -> np.ndarray:
            return graph(queries.users[rows], queries.history[rows]).numpy()

        return vectors

    def evaluate_part(
        self, part: str, config: EvalConfig, log_every_s: float = 30.0, extras: bool = True
    ) -> dict[str, float]:
        """Metrics on one split part, prefixed with the part name.

        ``config.mask`` picks the reports: ``history`` gives keys such as
        ``"test/ndcg@10"`` (history removed from the ranking, a repeated held-out
        item is a miss), ``none`` gives ``"test_unmasked/ndcg@10"`` (history
        rankable), ``both`` gives both. With ``sampled_negatives`` also
        ``"test_sampled/..."`` (``"test_sampled_unmasked/..."``). See
        :func:`protocol_metrics` for the counts. ``extras=False`` computes only
        the first full-ranking report, as the per-epoch early-stopping evaluation does.
        With ``config.num_users`` the users are a seeded sample and every report
        adds ``sample_users``, ``population_users`` and ``<metric>_ci95``.
        Full ranking is batched top-K on the model's device (:mod:`~.topk`).
        """
        queries = self.queries(part, config.valid_max_users, config.num_users)
        score_fn = self.score_fn(queries)
        dot_product = (self.query_fn(queries), self.model.candidate_embeddings())
        kinds = ("", "_sampled") if extras and config.sampled_negatives > 0 else ("",)
        out: dict[str, float] = {}
        for masked in config.masked_protocols if extras else config.masked_protocols[:1]:
            for kind in kinds:
                metrics = protocol_metrics(
                    score_fn, queries, config, masked=masked, sampled=bool(kind),
                    item_counts=self.item_counts, seed=self.seed, log_every_s=log_every_s,
                    dot_product=dot_product,
                )  # fmt: skip
                if config.num_users > 0:
                    metrics[SAMPLE_KEY] = float(len(queries))
                    metrics[POPULATION_KEY] = float(self._population[part])
                out.update(prefixed(f"{part}{kind}{MASK_SUFFIX[masked]}", metrics))
        return out
