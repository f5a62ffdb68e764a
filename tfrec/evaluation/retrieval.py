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
from tfrec.evaluation.protocol import ScoreFn, evaluate_full_ranking, evaluate_sampled


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
        self._score_graph: Callable[..., tf.Tensor] | None = None

    def queries(self, part: str, valid_max_users: int = 0) -> EvalQueries:
        """Evaluation queries of ``"valid"`` or ``"test"`` (cached).

        ``"valid"`` keeps a seeded sample of at most ``valid_max_users`` users (0 = all).

        Raises:
            ValueError: Another ``part``, or ``"valid"`` on a split without one.
        """
        key = (part, valid_max_users if part == "valid" else 0)
        if key not in self._queries:
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
            queries = eval_queries(context, held, *vocabs, self.max_history)
            if part == "valid":
                queries = queries.sample(valid_max_users, self.seed)
            self._queries[key] = queries
        return self._queries[key]

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
        """
        queries = self.queries(part, config.valid_max_users)
        score_fn = self.score_fn(queries)
        kinds = ("", "_sampled") if extras and config.sampled_negatives > 0 else ("",)
        out: dict[str, float] = {}
        for masked in config.masked_protocols if extras else config.masked_protocols[:1]:
            for kind in kinds:
                metrics = protocol_metrics(
                    score_fn, queries, config, masked=masked, sampled=bool(kind),
                    item_counts=self.item_counts, seed=self.seed, log_every_s=log_every_s,
                )  # fmt: skip
                out.update(prefixed(f"{part}{kind}{MASK_SUFFIX[masked]}", metrics))
        return out
