"""Ranking SavedModel and combined (retrieve -> rank) recommender SavedModel for TF Serving.

Ranking ``serving_default``:

* inputs ``history`` string ``[B, L]`` (oldest first, ``""`` = padding, unknown
  ids ignored), ``candidates`` string ``[B, C]``, ``user_id`` string ``[B]``
  (``""``/unknown = out-of-vocabulary user);
* output ``scores`` float32 ``[B, C]`` (predicted rating or logit). A ``""``
  candidate gets ``-inf``; an unknown candidate id is scored with the
  out-of-vocabulary item vector (no error).

A ``[B, 0]`` history is an empty one (same scores as an all-``""`` history);
an empty batch (``B = 0``) gives ``[0, C]`` scores.

Event signals (ratings, time gaps) are not inputs: the history is scored with
its signals hidden, a state the ranker is trained on (``signal_dropout``).

Combined recommender ``serving_default``: the retrieval contract (``user_id``
``[B]``, ``history`` ``[B, L]``, ``k`` int32 ``[B]`` -> ``item_ids`` string
``[B, K]``, ``scores`` float32 ``[B, K]``, ``K = max(k)``). Inside: the
retrieval model scores the catalogue, history items are excluded, the top
``N = num_candidates`` are re-scored by the ranker and the best K returned
(scores are ranker scores, plus ``retrieval_weight`` * retrieval score when
the ranker config sets one). Slots that cannot be filled hold ``""`` / ``-inf``.
A ``[B, 0]`` history is an empty one (a brand-new user); an empty batch
(``B = 0``) gives ``[0, 1]`` outputs (``K = 1`` when ``k`` has no values).
Its ``explain`` signature (retrieval models that encode a history) adds, per
final item, the history items whose removal lowers its *retrieval* score most
(:mod:`tfrec.export.explanations`; the ranker is not re-run per removal).

Mismatched batch sizes, ``k < 1`` or ``k > N`` raise ``InvalidArgumentError``
inside the graph (gRPC ``INVALID_ARGUMENT``). Both SavedModels load with
TensorFlow alone (no tfrec import). Versions are written atomically through
:mod:`tfrec.export.layout` and never overwritten; ``assets.extra/`` holds
``tfrec_config.json``, the vocabularies and the caller's files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary
from tfrec.export.explanations import (
    EXPLAIN_SIGNATURE_NAME,
    explain_description,
    explanation_outputs,
    leave_one_out,
    resolve_explain_top,
)
from tfrec.export.graph_ops import request_checks, string_lookup
from tfrec.export.layout import ASSETS_EXTRA, staged_version, write_assets_extra
from tfrec.export.retrieval import (
    ITEM_VOCAB_FILE,
    RECOMMEND_SIGNATURE,
    SIGNATURE_NAME,
    USER_VOCAB_FILE,
    assets_extra_files,
)
from tfrec.export.schema import CONFIG_FILE, export_config_json
from tfrec.layers.towers import compact_history
from tfrec.models.ranker_state import TrainedRanker
from tfrec.models.retrieval import TwoTowerModel
from tfrec.models.two_stage import RetrievalScorer, TwoStageRecommender

logger = logging.getLogger(__name__)

RETRIEVAL_USER_VOCAB_FILE = "retrieval_user_vocab.txt"


class RankingServingModule(tf.Module):
    """The exported ranking graph: string lookups + the ranker.

    Args:
        trained: The trained ranker with its vocabularies.
    """

    def __init__(self, trained: TrainedRanker):
        super().__init__(name="ranking_serving")
        self.ranker = trained.model
        self.max_history = trained.config.max_history
        self.user_lookup = string_lookup(trained.user_vocab, "user_lookup")
        self.item_lookup = string_lookup(trained.item_vocab, "item_lookup")

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None, None], tf.string, name="candidates"),
            tf.TensorSpec([None], tf.string, name="user_id"),
        ]
    )
    def serve(
        self, history: tf.Tensor, candidates: tf.Tensor, user_id: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Scores the candidates; see the module docstring for the contract."""
        batch = tf.shape(user_id)[0]
        checks = [
            tf.debugging.assert_equal(
                tf.shape(history)[0], batch, message="history must have one row per user_id"
            ),
            tf.debugging.assert_equal(
                tf.shape(candidates)[0], batch, message="candidates must have one row per user_id"
            ),
        ]
        with tf.control_dependencies(checks):
            users = tf.cast(self.user_lookup(user_id), tf.int32)  # [B]
            items = tf.cast(self.item_lookup(history), tf.int32)  # [B, L]
            cands = tf.cast(self.item_lookup(candidates), tf.int32)  # [B, C]
        recent = compact_history(items)[:, -self.max_history :]  # [B, <= L]
        scores = self.ranker(
            {"user": users, "history": recent, "candidates": cands}, training=False
        )  # [B, C]
        scores = tf.where(cands == 0, tf.constant(-float("inf"), scores.dtype), scores)
        return {"scores": tf.cast(scores, tf.float32)}


class RecommenderServingModule(tf.Module):
    """The exported two-stage graph: lookups, retrieval top-N, ranker, top-K.

    Args:
        retrieval_model: The trained two-tower model.
        retrieval_user_vocab: The user vocabulary of the retrieval model.
        item_vocab: The item vocabulary shared by both models.
        trained: The trained ranker (same item vocabulary).
        num_candidates: N, retrieved items re-scored by the ranker.
        explain_top: ``m`` of the ``explain`` signature (None: 3, or 0 for an
            ID-only retrieval model; 0: no ``explain`` signature).

    Raises:
        ValueError: Item vocabularies that differ or do not match the models,
            or ``explain_top >= 1`` with an ID-only retrieval model.
    """

    def __init__(
        self,
        retrieval_model: TwoTowerModel,
        retrieval_user_vocab: IdVocabulary,
        item_vocab: IdVocabulary,
        trained: TrainedRanker,
        num_candidates: int,
        *,
        explain_top: int | None = None,
    ):
        super().__init__(name="recommender_serving")
        if item_vocab.tokens != trained.item_vocab.tokens:
            raise ValueError(
                "item_vocab differs from the ranker's item vocabulary: the retrieval model and "
                "the ranker must be trained with the same item vocabulary"
            )
        if item_vocab.size != retrieval_model.num_items:
            raise ValueError(
                f"item_vocab has {item_vocab.size} indices but the retrieval model has "
                f"num_items={retrieval_model.num_items}"
            )
        if retrieval_user_vocab.size != retrieval_model.num_users:
            raise ValueError(
                f"retrieval_user_vocab has {retrieval_user_vocab.size} indices but the retrieval "
                f"model has num_users={retrieval_model.num_users}"
            )
        self.pipeline = TwoStageRecommender(
            RetrievalScorer(retrieval_model),
            trained.model,
            num_candidates=num_candidates,
            ranker_history=trained.config.max_history,
            retrieval_weight=trained.config.retrieval_weight,
        )
        self.num_candidates = self.pipeline.num_candidates
        self.retrieval_user_lookup = string_lookup(retrieval_user_vocab, "retrieval_user_lookup")
        self.user_lookup = string_lookup(trained.user_vocab, "user_lookup")
        self.item_lookup = string_lookup(item_vocab, "item_lookup")
        self._item_tokens = tf.constant(item_vocab.all_tokens(), dtype=tf.string)  # [I]
        self.explain_top = resolve_explain_top(explain_top, retrieval_model.encodes_history)
        if self.explain_top:
            self.serve_explain = tf.function(self._explain, input_signature=RECOMMEND_SIGNATURE)

    @tf.function(input_signature=RECOMMEND_SIGNATURE)
    def serve(self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-K re-ranked items per user; see the module docstring for the contract."""
        return self._outputs(*self._recommend(user_id, history, k)[:2])

    def _explain(
        self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """``serving_default`` + the retrieval-score explanations of each final item."""
        items, scores, features = self._recommend(user_id, history, k)  # [B, K]
        retrieval = self.pipeline.retrieval
        recent = features["history"][:, -retrieval.max_history :]  # what the query reads
        vectors = tf.gather(retrieval.candidates, items)  # [B, K, D]
        filled = tf.logical_not(tf.math.is_inf(scores))
        causes, drops = leave_one_out(
            retrieval.model.query_tower, features["retrieval_user"], recent, vectors, filled,
            top=self.explain_top,
        )  # fmt: skip
        outputs = self._outputs(items, scores)
        return {**outputs, **explanation_outputs(self._item_tokens, causes, drops)}

    def _recommend(
        self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, dict[str, tf.Tensor]]:
        """``[B, K]`` item indices and final scores, and the pipeline's features."""
        checks = request_checks(
            user_id, history, k, self.num_candidates, "the retrieved candidates N"
        )
        with tf.control_dependencies(checks):
            features = {
                "user": tf.cast(self.user_lookup(user_id), tf.int32),  # [B]
                "retrieval_user": tf.cast(self.retrieval_user_lookup(user_id), tf.int32),
                "history": compact_history(tf.cast(self.item_lookup(history), tf.int32)),
            }
        top = tf.maximum(tf.reduce_max(k), 1)  # K = max(k); 1 for an empty batch
        items, scores = self.pipeline.recommend(features, top)  # [B, K]
        return items, scores, features

    def _outputs(self, items: tf.Tensor, scores: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = tf.gather(self._item_tokens, items)
        ids = tf.where(tf.math.is_inf(scores), tf.constant("", tf.string), ids)
        return {"item_ids": ids, "scores": tf.cast(scores, tf.float32)}


def _save(module: tf.Module, path: Path) -> None:
    """``tf.saved_model.save`` with the serving signature(s) only (+ ``explain`` if any).

    Keras would otherwise also trace every layer's ``call`` for Keras-side
    reloading (4-5x slower); the signature graph is self-contained without them.
    """
    signatures = {SIGNATURE_NAME: module.serve}
    if getattr(module, "explain_top", 0):
        signatures[EXPLAIN_SIGNATURE_NAME] = module.serve_explain
    with keras_option_scope(save_traces=False):
        tf.saved_model.save(module, str(path), signatures=signatures)


def _export_config(
    kind: str,
    trained: TrainedRanker,
    signature: dict[str, Any],
    experiment_config: Mapping[str, Any] | None,
    **fields: Any,
) -> str:
    """``tfrec_config.json`` of a ranker-holding export (:mod:`tfrec.export.schema`).

    ``fields`` may replace ``model_config``, extend ``vocabularies`` /
    ``vocabulary_sizes`` (``extra_vocabularies``, ``extra_sizes``) or add kind fields.
    """
    vocabularies = {"user": USER_VOCAB_FILE, "item": ITEM_VOCAB_FILE}
    vocabularies.update(fields.pop("extra_vocabularies", {}))
    sizes = {"users": trained.spec.num_users, "items": trained.spec.num_items}
    sizes.update(fields.pop("extra_sizes", {}))
    return export_config_json(
        kind=kind,
        signature={"name": SIGNATURE_NAME, **signature},
        vocabularies=vocabularies,
        vocabulary_sizes=sizes,
        num_real_items=trained.item_vocab.size - NUM_RESERVED,
        model_config=fields.pop("model_config", trained.config.to_dict()),
        experiment_config=experiment_config,
        ranker_data_spec=trained.spec.to_dict(),
        **fields,
    )


def export_ranking(
    trained: TrainedRanker,
    base_dir: str | os.PathLike[str],
    *,
    model_name: str = "ranking",
    version: int | None = None,
    assets_extra: Mapping[str, bytes] | None = None,
    extra_files: Mapping[str, str] | None = None,
    experiment_config: Mapping[str, Any] | None = None,
) -> Path:
    """Exports the ranking SavedModel as ``<base_dir>/<model_name>/<version>/``.

    Args:
        trained: The trained ranker.
        base_dir: TF Serving base directory.
        model_name: Model directory name.
        version: Integer version, or None for the next free one.
        assets_extra: Binary files for ``assets.extra/`` (e.g. warmup requests).
        extra_files: Text files for ``assets.extra/`` (e.g. ``metrics.json``).
        experiment_config: The run's ``config.json`` contents (``tfrec_config.json``).

    Returns:
        The final version directory.

    Raises:
        ValueError: Bad name, version or extra file name.
        FileExistsError: The version already exists (never overwritten).
    """
    module = RankingServingModule(trained)
    signature = {
        "inputs": {
            "history": "string [B, L]",
            "candidates": "string [B, C]",
            "user_id": "string [B]",
        },
        "outputs": {"scores": "float32 [B, C]"},
    }
    config = _export_config("ranking", trained, signature, experiment_config)
    files = assets_extra_files(config, assets_extra, extra_files)
    with staged_version(base_dir, model_name, version) as staged:
        _save(module, staged.path)
        directory = write_assets_extra(staged.path, files)
        trained.user_vocab.save(directory / USER_VOCAB_FILE)
        trained.item_vocab.save(directory / ITEM_VOCAB_FILE)
    logger.info(
        "exported ranking model to %s (%s/ %s)", staged.final_path, ASSETS_EXTRA, CONFIG_FILE
    )
    return staged.final_path


def export_recommender(
    retrieval_model: TwoTowerModel,
    retrieval_user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    trained: TrainedRanker,
    base_dir: str | os.PathLike[str],
    *,
    model_name: str = "recommender",
    version: int | None = None,
    num_candidates: int | None = None,
    assets_extra: Mapping[str, bytes] | None = None,
    extra_files: Mapping[str, str] | None = None,
    experiment_config: Mapping[str, Any] | None = None,
    explain_top: int | None = None,
) -> Path:
    """Exports the combined retrieve -> rank SavedModel (retrieval signature).

    Args:
        retrieval_model: The trained two-tower model.
        retrieval_user_vocab: Its user vocabulary.
        item_vocab: The item vocabulary of both models.
        trained: The trained ranker.
        base_dir: TF Serving base directory.
        model_name: Model directory name.
        version: Integer version, or None for the next free one.
        num_candidates: N (default ``trained.config.num_candidates``).
        assets_extra: Binary files for ``assets.extra/``.
        extra_files: Text files for ``assets.extra/``.
        experiment_config: The run's ``config.json`` contents (``tfrec_config.json``).
        explain_top: ``m`` of the ``explain`` signature (history items per final
            item; None: 3, or 0 with an ID-only retrieval model; 0: none).

    Returns:
        The final version directory.

    Raises:
        ValueError: Vocabularies that do not match, bad name/version/file names,
            ``explain_top >= 1`` with an ID-only retrieval model.
        FileExistsError: The version already exists (never overwritten).
    """
    module = RecommenderServingModule(
        retrieval_model,
        retrieval_user_vocab,
        item_vocab,
        trained,
        num_candidates or trained.config.num_candidates,
        explain_top=explain_top,
    )
    config = _recommender_config(module, retrieval_model, trained, experiment_config)
    files = assets_extra_files(config, assets_extra, extra_files)
    if RETRIEVAL_USER_VOCAB_FILE in files:
        raise ValueError(f"{RETRIEVAL_USER_VOCAB_FILE!r} is written by the exporter")
    with staged_version(base_dir, model_name, version) as staged:
        _save(module, staged.path)
        directory = write_assets_extra(staged.path, files)
        trained.user_vocab.save(directory / USER_VOCAB_FILE)
        item_vocab.save(directory / ITEM_VOCAB_FILE)
        retrieval_user_vocab.save(directory / RETRIEVAL_USER_VOCAB_FILE)
    logger.info(
        "exported recommender (retrieval top-%d -> ranker) to %s",
        module.num_candidates,
        staged.final_path,
    )
    return staged.final_path


def _recommender_config(
    module: RecommenderServingModule,
    retrieval_model: TwoTowerModel,
    trained: TrainedRanker,
    experiment_config: Mapping[str, Any] | None,
) -> str:
    """The recommender export's ``tfrec_config.json`` (:mod:`tfrec.export.schema`)."""
    others = {}
    if module.explain_top:
        others["signatures"] = {EXPLAIN_SIGNATURE_NAME: explain_description(module.explain_top)}
    signature = {
        "inputs": {"user_id": "string [B]", "history": "string [B, L]", "k": "int32 [B]"},
        "outputs": {"item_ids": "string [B, K]", "scores": "float32 [B, K]"},
    }
    return _export_config(
        "recommender",
        trained,
        signature,
        experiment_config,
        model_config={
            "retrieval": retrieval_model.config.to_dict(),
            "ranking": trained.config.to_dict(),
        },
        extra_vocabularies={"retrieval_user": RETRIEVAL_USER_VOCAB_FILE},
        extra_sizes={"retrieval_users": retrieval_model.num_users},
        num_candidates=module.num_candidates,
        **others,
    )
