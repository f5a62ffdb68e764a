"""Two-tower retrieval model (TFRS) and its typed config (:mod:`tfrec.models.retrieval_config`).

Architecture (B users, L history positions, I item indices, D = embedding_dim)::

    history [B, L] -> ItemTower [B, L, D] -> causal encoder [B, L, D] (+ user [B, D])
        = query vectors, position t predicts target[:, t]
    item index -> ItemTower (id embedding + genres + title tokens) [D]
    loss: RetrievalTask on (query at each non-zero target, target item vector)

The query side embeds history items with the same ItemTower as the candidate
side (SASRec-style weight tying) unless ``share_item_embeddings=False``.
Training is ``model.compile(optimizer); model.fit(dataset)`` on batches of the
model input contract (``user`` [B], ``history`` [B, L], ``target`` [B, L]).

ID-only mode (``encoder="none"``, needs ``use_user_embedding=True``): the classic
matrix-factorisation two-tower, ``query = user_embedding[user]`` [B, D] (a
:class:`~tfrec.layers.user_tower.UserQueryTower`), no history encoder. Batches
need only ``user`` [B] and ``target`` ([B] or [B, L]); a ``history`` feature is
accepted and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrec.data.item_features import ItemFeatureTables
from tfrec.data.vocab import NUM_RESERVED, OOV_INDEX
from tfrec.layers.encoders import NO_ENCODER, get_encoder
from tfrec.layers.scenario import ScenarioEncoder
from tfrec.layers.towers import ItemTower, QueryTower, compact_history, trim_leading_padding
from tfrec.layers.user_tower import UserQueryTower
from tfrec.models.base import TfrecModel
from tfrec.models.masked_items import BERT4REC, masked_item_queries
from tfrec.models.retrieval_config import RetrievalConfig  # re-exported: its historical home
from tfrec.tasks.retrieval import RetrievalTask

logger = logging.getLogger(__name__)


def item_log_probabilities(target_counts: np.ndarray) -> np.ndarray:
    """Log of each item's share of the training targets, for logQ correction.

    Args:
        target_counts: ``[I]`` how often each item index is a training target.

    Returns:
        ``[I]`` float32 ``log(count / total)``; items never seen get the log of
        half a count (so the correction stays finite).

    Raises:
        ValueError: Negative counts or no counts at all.
    """
    counts = np.asarray(target_counts, np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError("target_counts: expected a 1-D array of non-negative counts with sum > 0")
    counts = np.where(counts > 0, counts, 0.5)
    return np.log(counts / counts.sum()).astype(np.float32)


def build_history_encoder(config: RetrievalConfig) -> keras.layers.Layer:
    """The query tower's history encoder that ``config`` describes.

    Args:
        config: A config with a history encoder (not ``encoder="none"``).

    Returns:
        :func:`~tfrec.layers.encoders.get_encoder`'s layer, wrapped in a
        :class:`~tfrec.layers.scenario.ScenarioEncoder` when ``config.scenario_layers``.
    """
    encoder = get_encoder(
        config.encoder,
        config.embedding_dim,
        config.encoder_positions,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        dropout=config.dropout,
    )
    return scenario_encoder(encoder, config) if config.scenario_layers else encoder


def scenario_encoder(encoder: keras.layers.Layer, config: RetrievalConfig) -> ScenarioEncoder:
    """``encoder`` (possibly shared by several scenarios) in this scenario's layers.

    Args:
        encoder: A history encoder layer (not a ScenarioEncoder).
        config: The scenario's config (its ``mean_expert``, ``scenario_adapter_dim``).
    """
    return ScenarioEncoder(
        encoder,
        mean_expert=config.mean_expert,
        adapter_dim=config.scenario_adapter_dim,
        name="scenario_encoder",
    )


class TwoTowerModel(TfrecModel):
    """Two-tower retrieval model on the integer model-input contract.

    ``query_tower`` is a :class:`~tfrec.layers.towers.QueryTower` (history
    encoder) or, with ``config.encoder="none"``, a
    :class:`~tfrec.layers.user_tower.UserQueryTower` (ID-only: user embedding,
    no history; see the module docstring).

    Args:
        config: Hyper-parameters.
        num_users: User vocabulary size (padding and OOV included).
        num_items: Item vocabulary size I (padding and OOV included).
        item_features: Content tables from
            :func:`tfrec.data.item_features.build_item_feature_tables`, used when
            ``config.use_item_features``.
        item_log_probs: ``[I]`` log item sampling probabilities (see
            :func:`item_log_probabilities`) for logQ correction with
            ``loss="sampled"``; without them the correction is skipped (logged).
        encoder: The history encoder layer of the query tower, used as given
            (e.g. a :class:`~tfrec.layers.scenario.ScenarioEncoder` around an
            encoder other models share); None builds it from ``config``
            (:func:`~tfrec.layers.encoders.get_encoder`, wrapped in a
            ScenarioEncoder when ``config.scenario_layers``).

    Raises:
        ValueError: Bad sizes, ``item_log_probs`` of the wrong shape, or an
            ``encoder`` with ``config.encoder="none"``.
    """

    def __init__(
        self,
        config: RetrievalConfig,
        num_users: int,
        num_items: int,
        item_features: ItemFeatureTables | None = None,
        item_log_probs: np.ndarray | None = None,
        *,
        encoder: keras.layers.Layer | None = None,
    ):
        super().__init__(name="two_tower")
        if num_items < NUM_RESERVED + 1:
            raise ValueError(
                f"TwoTowerModel: num_items={num_items}; expected >= {NUM_RESERVED + 1}"
            )
        if num_users < NUM_RESERVED:
            raise ValueError(f"TwoTowerModel: num_users={num_users}; expected >= {NUM_RESERVED}")
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        dim = config.embedding_dim
        features = item_features if config.use_item_features else None

        def item_tower(name: str) -> ItemTower:
            return ItemTower(
                num_items,
                dim,
                genre_table=None if features is None else features.genres,
                title_table=None if features is None else features.titles,
                title_vocab_size=0 if features is None else features.title_vocab_size,
                l2=config.l2,
                name=name,
            )

        self.item_tower = item_tower("item_tower")
        self.query_tower: QueryTower | UserQueryTower
        if config.encoder == NO_ENCODER:
            if encoder is not None:
                raise ValueError(
                    "TwoTowerModel: an encoder was given but config.encoder='none' "
                    "(the ID-only query tower has no history encoder)"
                )
            self.query_tower = UserQueryTower(num_users, dim, l2=config.l2, name="query_tower")
        else:
            history_tower = (
                self.item_tower
                if config.share_item_embeddings
                else item_tower("history_item_tower")
            )
            if encoder is None:
                encoder = build_history_encoder(config)
            self.query_tower = QueryTower(
                history_tower,
                encoder,
                num_users=num_users if config.use_user_embedding else 0,
                context_dim=config.context_dim,
                l2=config.l2,
                name="query_tower",
            )
        self.task = RetrievalTask(
            loss=config.loss.kind,
            temperature=config.loss.temperature,
            remove_accidental_hits=config.loss.remove_accidental_hits,
            num_hard_negatives=config.loss.num_hard_negatives,
            name="retrieval_task",
        )
        self._log_probs = None
        if config.loss.kind == "sampled" and config.loss.logq_correction:
            if item_log_probs is None:
                logger.warning("logq_correction is on but no item_log_probs were given: skipped")
            else:
                log_probs = np.asarray(item_log_probs, np.float32)
                if log_probs.shape != (num_items,):
                    raise ValueError(
                        f"TwoTowerModel: item_log_probs has shape {log_probs.shape}; "
                        f"expected ({num_items},)"
                    )
                self._log_probs = tf.constant(log_probs)

    @property
    def encodes_history(self) -> bool:
        """False in ID-only mode (``encoder="none"``): the query ignores any history."""
        return self.config.encoder != NO_ENCODER

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Returns the causal query vectors ``[B, L, D]`` of a batch (``[B, 1, D]`` ID-only)."""
        return self.query_tower(features, training=training)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Loss of a batch of the model input contract.

        Queries are taken at every position with a real target (``target > 1``)
        and a real history item, so "all positions" and "last item" examples
        both work; padding positions cost nothing in the softmax, and columns
        that are padding in every row of the batch are skipped by the encoder.
        In ID-only mode every real target is a (user, target) pair, whatever
        the history (which is not read). BERT4Rec: the queries at randomly masked
        positions of each row's sequence (:mod:`tfrec.models.masked_items`).

        Args:
            features: ``"user"`` [B], ``"history"`` [B, L], ``"target"`` [B, L]
                (and ``"context"`` [B, L, C] when ``context_dim > 0``). ID-only:
                ``"user"`` [B] and ``"target"`` [B] or [B, L].
            training: Enables dropout.

        Returns:
            Scalar float32 loss.
        """
        if self.config.encoder == BERT4REC:
            query, target_ids = masked_item_queries(
                self.query_tower, features, self.config, training
            )
        elif self.encodes_history:
            with_prefix = self.config.loss.exclude_history
            query, target_ids, prefix = self._history_queries(features, training, with_prefix)
            return self._task_loss(query, target_ids, history_ids=prefix)  # [N, D], [N]
        else:
            query, target_ids = self._user_queries(features)  # [N, D], [N]
        return self._task_loss(query, target_ids)

    def _task_loss(
        self, query: tf.Tensor, target_ids: tf.Tensor, history_ids: tf.Tensor | None = None
    ) -> tf.Tensor:
        """The RetrievalTask loss of queries ``[N, D]`` against their target items ``[N]``.

        ``history_ids`` ``[N, L]``: items left out of each query's full softmax.
        """
        if self.task.needs_full_catalogue:
            candidates = self.item_tower.all_items()  # [I, D]
            return self.task(query, candidates, target_ids, history_ids=history_ids)
        candidate_ids = target_ids  # [N]: in-batch negatives
        extra = self.config.loss.num_uniform_negatives
        if extra:
            uniform = tf.random.uniform([extra], NUM_RESERVED, self.num_items, dtype=tf.int32)
            candidate_ids = tf.concat([target_ids, uniform], axis=0)  # [N + M]
        candidates = self.item_tower(candidate_ids)  # [N + M, D]
        probability = None
        if self._log_probs is not None:
            probability = tf.exp(tf.gather(self._log_probs, candidate_ids))  # [N + M]
            if extra:  # per-draw probability of each candidate under the N + M mixture
                num_queries = tf.cast(tf.shape(target_ids)[0], tf.float32)
                catalogue = float(self.num_items - NUM_RESERVED)
                counts = num_queries * probability + extra / catalogue  # expected counts
                probability = counts / (num_queries + extra)  # <= 1: TFRS clips at 1
        return self.task(
            query,
            candidates,
            target_ids,
            candidate_sampling_probability=probability,
            candidate_ids=candidate_ids,
        )

    def _history_queries(
        self, features: Mapping[str, tf.Tensor], training: bool, with_prefix: bool = False
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """Queries at real (history, target) positions.

        Returns:
            Query vectors ``[N, D]``, target ids ``[N]`` and, with ``with_prefix``,
            each query's history prefix ``[N, L']`` (the row's items up to its
            position, 0 after it; None otherwise).
        """
        features = trim_leading_padding(features)  # [B, L'] with L' <= L
        history = tf.cast(features["history"], tf.int32)  # [B, L]
        target = tf.cast(features["target"], tf.int32)  # [B, L]
        queries = self.query_tower(features, training=training)  # [B, L, D]
        valid = tf.logical_and(target > OOV_INDEX, history > OOV_INDEX)  # [B, L]
        positions = tf.where(valid)  # [N, 2]
        prefix = None
        if with_prefix:
            rows = tf.gather(history, positions[:, 0])  # [N, L]
            upto = tf.range(tf.shape(history)[1], dtype=positions.dtype)[tf.newaxis, :]
            prefix = tf.where(upto <= positions[:, 1:2], rows, 0)  # [N, L]
        return tf.gather_nd(queries, positions), tf.gather_nd(target, positions), prefix

    def _user_queries(self, features: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        """ID-only: the user vector ``[N, D]`` of every real target ``[N]`` (history unread)."""
        target = tf.cast(features["target"], tf.int32)
        if target.shape.rank == 1:
            target = target[:, tf.newaxis]  # [B, 1]
        users = self.query_tower(features)[:, 0, :]  # [B, D]
        positions = tf.where(target > OOV_INDEX)  # [N, 2]
        return tf.gather(users, positions[:, 0]), tf.gather_nd(target, positions)

    def query_embeddings(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """Query vectors for inference.

        OOV history entries are treated as padding, padding is moved left and
        only the ``max_history`` most recent items are kept, so the query is the
        encoder output after the most recent real item. In ID-only mode the
        query is the user vector and ``history`` is ignored (may be None).

        Args:
            user: int ``[B]`` user indices (ignored without the user embedding).
            history: int ``[B, L]`` item indices, oldest first; required unless
                the model is ID-only.

        Returns:
            ``[B, D]`` float32 query vectors.

        Raises:
            ValueError: ``history`` is None but the model encodes a history.
        """
        if not self.encodes_history:
            return self.query_tower.final_query(user)
        if history is None:
            raise ValueError(
                f"TwoTowerModel.query_embeddings: history=None but encoder="
                f"{self.config.encoder!r} encodes a history; pass int [B, L] item indices"
            )
        recent = compact_history(history)[:, -self.config.max_history :]  # [B, <= max_history]
        return self.query_tower.final_query(user, recent)

    def candidate_embeddings(self) -> tf.Tensor:
        """Returns ``[I, D]`` float32 vectors of every item index (rows 0/1 included)."""
        return tf.cast(self.item_tower.all_items(), tf.float32)

    def score(
        self,
        user: tf.Tensor,
        history: tf.Tensor | None = None,
        candidates: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Scores every item for each query (history items are NOT excluded).

        Args:
            user: int ``[B]`` user indices.
            history: int ``[B, L]`` item indices, oldest first (ignored, may be
                None, in ID-only mode).
            candidates: Optional precomputed :meth:`candidate_embeddings` (saves
                recomputing them for every batch during evaluation).

        Returns:
            ``[B, I]`` float32 scores; columns 0 (padding) and 1 (OOV) are ``-inf``.

        Raises:
            ValueError: ``history`` is None but the model encodes a history.
        """
        if candidates is None:
            candidates = self.candidate_embeddings()
        scores = tf.matmul(self.query_embeddings(user, history), candidates, transpose_b=True)
        reserved = tf.range(tf.shape(scores)[1]) < NUM_RESERVED  # [I]
        return tf.where(reserved[tf.newaxis, :], -np.inf, scores)
