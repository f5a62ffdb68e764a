"""LSTMRanker: history-aware ranking model (TFRS) and its typed config.

Architecture (shapes with B examples, L history positions, C candidates)::

    history [B, L] -> item tower [B, L, D] (+ event signals [B, L, 4])
        -> masked LSTM (RNNEncoder) [B, L, H]
    candidates [B, C] -> item tower [B, C, D]
    interaction: "concat"    -> LSTM state at the most recent real item, [B, 1, H]
                 "attention" -> candidate-aware attention over the LSTM outputs (DIN), [B, C, H]
        -> Dense(D) = h [B, C, D]
    features [h, c, h*c, u, u*c] (u = user embedding, optional) [B, C, F]
        -> optional DCN Cross layers -> MLP -> Dense(1) -> [B, C]
        + global bias + user bias + item bias (optional)  = scores [B, C]

Padding (item index 0) and unknown history items (OOV, 1) never change the
scores: the LSTM skips those steps (its state stays at the zero initial state
until the first real item), the attention gives them zero weight, and the state
used is the one at the most recent real item. **Empty history fallback:** a
history with no real item gives the zero history vector, so ``h`` is the bias of
the history projection and the score depends only on the candidate, the user
and the biases.

The model's one contract is :meth:`LSTMRanker.compute_loss` (``features`` with
``labels`` ``[B, C]``); :meth:`LSTMRanker.call` returns the scores.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import JsonConfig
from tfrec.data.vocab import OOV_INDEX
from tfrec.layers.encoders import RNNEncoder
from tfrec.layers.ranking import CandidateAttention, EventSignals
from tfrec.layers.towers import ItemTower
from tfrec.models.base import TfrecModel
from tfrec.names import RankerInteraction, RankingObjective
from tfrec.tasks.config import RANKING_FLAT_FIELDS, RankingLossConfig
from tfrec.tasks.ranking import RankingTask
from tfrec.training.config import OptimizerConfig, TrainingConfig, nest_flat_fields


@dataclasses.dataclass
class RankingConfig(JsonConfig):
    """Hyper-parameters of the ranker and its training.

    Attributes:
        objective: ``"rating"`` (explicit ratings, MSE) or ``"next_item"``
            (true next item vs sampled negatives).
        loss: ``next_item`` only: the loss and its training lists (bce or softmax,
            negatives and how they are drawn:
            :class:`~tfrec.tasks.config.RankingLossConfig`).
        eval_negatives: Negatives per list in next-item list evaluation (uniform).
        embedding_dim: Item/user embedding size D.
        lstm_units: LSTM size H.
        mlp_layers: Hidden sizes of the scoring MLP.
        interaction: ``"concat"`` or ``"attention"`` (candidate-aware, DIN-style).
        use_cross: Put DCN ``tfrs.layers.dcn.Cross`` layers before the MLP.
        cross_layers: How many Cross layers when ``use_cross``.
        use_user: Learn a user embedding (1 = unknown user shares one row).
        use_biases: Global + user + item bias terms.
        use_item_features: Feed genres / title tokens through the item tower.
        use_event_signals: Feed per-event rating and log time gap when the data has them.
        signal_dropout: Training-time probability of hiding an example's event
            signals, so the model also scores histories sent without them (the
            ``serving_default`` signature).
        dropout: Dropout rate (LSTM input and MLP).
        l2: L2 penalty on embeddings and dense kernels.
        validation_fraction: Share of training examples held out for early stopping
            when the split has no validation part (each user's most recent ones).
        max_history: History length L.
        min_history: Drop training examples with fewer history events (next_item).
        ndcg_k: Cutoff of the list NDCG metric.
        num_candidates: Retrieval top-N re-ranked by the two-stage pipeline.
        retrieval_weight: Two-stage final score = ranker score + this * retrieval
            score (0 = ranker only); pick it on validation
            (:func:`tfrec.evaluation.two_stage.tune_retrieval_weight`).
        optimizer: The optimizer (default Adam, learning rate 2e-3).
        training: The training loop (default 20 epochs of batch 512, patience 3;
            ``training.monitor`` defaults to ``rmse`` for ratings, else
            ``ndcg@<ndcg_k>``; the seed also draws the negatives).
    """

    objective: RankingObjective = "rating"
    loss: RankingLossConfig = dataclasses.field(default_factory=RankingLossConfig)
    eval_negatives: int = 100
    # Defaults measured on MovieLens 100K ratings (u1/u2 test RMSE 0.915/0.905).
    embedding_dim: int = 48
    lstm_units: int = 48
    mlp_layers: list[int] = dataclasses.field(default_factory=lambda: [64])
    interaction: RankerInteraction = "concat"
    use_cross: bool = False
    cross_layers: int = 1
    use_user: bool = True
    use_biases: bool = True
    use_item_features: bool = True
    use_event_signals: bool = True
    signal_dropout: float = 0.1
    dropout: float = 0.25
    l2: float = 5e-5
    validation_fraction: float = 0.05
    max_history: int = 50
    min_history: int = 1
    ndcg_k: int = 10
    num_candidates: int = 100
    retrieval_weight: float = 0.0
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=2e-3)
    )
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=20, batch_size=512, patience=3)
    )

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Nests the flat loss/optimizer/training fields of configs saved by earlier versions."""
        return nest_flat_fields(nest_flat_fields(data), RANKING_FLAT_FIELDS)

    def default_monitor(self) -> str:
        """The validation metric early stopping uses when ``training.monitor`` is unset."""
        return "rmse" if self.objective == "rating" else f"ndcg@{self.ndcg_k}"

    def __post_init__(self) -> None:
        positive = (
            "eval_negatives", "embedding_dim", "lstm_units", "cross_layers", "max_history",
            "ndcg_k", "num_candidates",
        )  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RankingConfig.{name}: expected an integer >= 1, got {value!r}")
        if not isinstance(self.min_history, int) or self.min_history < 0:
            raise ValueError(f"RankingConfig.min_history: expected >= 0, got {self.min_history!r}")
        if not self.mlp_layers or any(
            isinstance(u, bool) or not isinstance(u, int) or u < 1 for u in self.mlp_layers
        ):
            raise ValueError(
                f"RankingConfig.mlp_layers: expected a non-empty list of integers >= 1, "
                f"got {self.mlp_layers!r}"
            )
        self._check_fractions()
        for name in ("retrieval_weight", "l2"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"RankingConfig.{name}: expected >= 0, got {value!r}")

    def _check_fractions(self) -> None:
        """Rates and shares: (name, excludes 0, excludes 1)."""
        for name, open_low, open_high in (
            ("dropout", False, True),
            ("signal_dropout", False, True),
            ("validation_fraction", True, True),
        ):
            value = getattr(self, name)
            low_ok = value > 0.0 if open_low else value >= 0.0
            high_ok = value < 1.0 if open_high else value <= 1.0
            if not (low_ok and high_ok):
                text = f"0 {'<' if open_low else '<='} {name} {'<' if open_high else '<='} 1"
                raise ValueError(f"RankingConfig.{name}: expected {text}, got {value!r}")


@dataclasses.dataclass
class RankerDataSpec(JsonConfig):
    """What the ranker learned from the data (sizes, which signals, their scales).

    Attributes:
        num_users: User vocabulary size (with padding and OOV).
        num_items: Item vocabulary size (with padding and OOV).
        rating_mean: Mean training rating (initial global bias), 0 without ratings.
        use_rating_signal: History events carry ratings.
        use_time_signal: History events carry real time gaps.
        rating_scale: Standard deviation of training ratings.
        log_dt_mean: Mean log1p time gap of training events.
        log_dt_scale: Standard deviation of the log1p time gap.
    """

    num_users: int
    num_items: int
    rating_mean: float = 0.0
    use_rating_signal: bool = False
    use_time_signal: bool = False
    rating_scale: float = 1.0
    log_dt_mean: float = 0.0
    log_dt_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items"):
            if getattr(self, name) < 3:
                raise ValueError(
                    f"RankerDataSpec.{name}: expected >= 3 (padding, OOV and one id), "
                    f"got {getattr(self, name)}"
                )
        for name in ("rating_scale", "log_dt_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RankerDataSpec.{name}: expected > 0, got {getattr(self, name)}")


def _last_real(states: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
    """State at the most recent real position ``[B, H]`` (zeros for an empty history)."""
    length = tf.shape(padding_mask)[1]
    mask = tf.cast(padding_mask, tf.int32)  # [B, L]
    positions = tf.range(length)[None, :] * mask  # [B, L]
    last = tf.reduce_max(positions, axis=1)  # [B]
    picked = tf.gather(states, last, batch_dims=1)  # [B, H]
    has_any = tf.cast(tf.reduce_any(mask > 0, axis=1), states.dtype)[:, None]
    return picked * has_any


class LSTMRanker(TfrecModel):
    """Scores candidate items given the user's recent history (see module docstring).

    Args:
        config: Hyper-parameters.
        spec: Vocabulary sizes, rating mean and which event signals exist.
        item_tower: Layer mapping item indices ``[...]`` to ``[..., D]`` (shared by
            history and candidates), usually a :class:`tfrec.layers.towers.ItemTower`
            with content tables; None builds an id-only ``ItemTower``.
    """

    def __init__(
        self,
        config: RankingConfig,
        spec: RankerDataSpec,
        item_tower: keras.layers.Layer | None = None,
    ):
        super().__init__()
        self.config = config
        self.spec = spec
        dim = config.embedding_dim
        reg = keras.regularizers.l2(config.l2) if config.l2 else None
        self.item_tower = item_tower or ItemTower(
            spec.num_items, dim, l2=config.l2, name="item_tower"
        )
        self.use_signals = config.use_event_signals and (
            spec.use_rating_signal or spec.use_time_signal
        )
        self.signals = EventSignals(
            use_rating=spec.use_rating_signal,
            use_time=spec.use_time_signal,
            rating_mean=spec.rating_mean,
            rating_scale=spec.rating_scale,
            log_dt_mean=spec.log_dt_mean,
            log_dt_scale=spec.log_dt_scale,
            signal_dropout=config.signal_dropout,
            name="event_signals",
        )
        self.encoder = RNNEncoder(
            config.lstm_units, cell="lstm", dropout=config.dropout, name="lstm_encoder"
        )
        self.attention = (
            CandidateAttention(config.lstm_units, name="candidate_attention")
            if config.interaction == "attention"
            else None
        )
        self.history_projection = keras.layers.Dense(
            dim, kernel_regularizer=reg, name="history_projection"
        )
        self.user_embedding = (
            keras.layers.Embedding(
                spec.num_users, dim, embeddings_regularizer=reg, name="user_embedding"
            )
            if config.use_user
            else None
        )
        self.cross = [
            tfrs.layers.dcn.Cross(kernel_regularizer=reg, name=f"cross_{i}")
            for i in range(config.cross_layers if config.use_cross else 0)
        ]
        self.mlp = [
            keras.layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"mlp_{i}")
            for i, units in enumerate(config.mlp_layers)
        ]
        self.mlp_dropout = keras.layers.Dropout(config.dropout)
        self.output_layer = keras.layers.Dense(1, name="score")
        if config.use_biases:
            self.user_bias = keras.layers.Embedding(
                spec.num_users, 1, embeddings_initializer="zeros", embeddings_regularizer=reg,
                name="user_bias",
            )  # fmt: skip
            self.item_bias = keras.layers.Embedding(
                spec.num_items, 1, embeddings_initializer="zeros", embeddings_regularizer=reg,
                name="item_bias",
            )  # fmt: skip
        self.global_bias = tf.Variable(
            spec.rating_mean if config.objective == "rating" else 0.0,
            trainable=config.use_biases,
            dtype=tf.float32,
            name="global_bias",
        )
        self.task = RankingTask(
            objective=config.objective,
            loss=config.loss.kind,
            ndcg_k=config.ndcg_k,
            name="ranking_task",
        )

    def encode_history(
        self, features: dict[str, tf.Tensor], training: bool | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Runs the LSTM over the history.

        Args:
            features: ``history`` int ``[B, L]`` and optional ``history_rating`` /
                ``history_log_dt`` float ``[B, L]``.
            training: Training mode (dropout).

        Returns:
            ``(states [B, L, H], padding_mask bool [B, L])``.
        """
        history = tf.cast(features["history"], tf.int32)  # [B, L]
        mask = history > OOV_INDEX  # [B, L]: padding and unknown items are skipped
        inputs = self.item_tower(history)  # [B, L, D]
        if self.use_signals:
            signals = self.signals(
                mask,
                features.get("history_rating"),
                features.get("history_log_dt"),
                training=training,
            )  # [B, L, 4]
            inputs = tf.concat([inputs, tf.cast(signals, inputs.dtype)], axis=-1)
        states = self.encoder(inputs, padding_mask=mask, training=training)  # [B, L, H]
        return states, mask

    def call(self, features: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Scores the candidates.

        Args:
            features: ``history`` int ``[B, L]`` (left-padded with 0),
                ``candidates`` int ``[B, C]``, optional ``user`` int ``[B]`` (absent =
                unknown user 1) and optional event signals (see :meth:`encode_history`).
            training: Training mode.

        Returns:
            float32 ``[B, C]`` scores (predicted ratings or logits).

        Raises:
            InvalidArgumentError: ``history``, ``candidates`` and ``user`` batch
                sizes differ, or ``candidates`` is not 2-D.
        """
        candidates = tf.cast(features["candidates"], tf.int32)  # [B, C]
        history = features["history"]
        checks = [
            tf.debugging.assert_rank(candidates, 2, message="candidates must be [batch, C]"),
            tf.debugging.assert_equal(
                tf.shape(candidates)[0],
                tf.shape(history)[0],
                message="candidates and history must have the same batch size",
            ),
        ]
        user = features.get("user")
        if user is None:
            user = tf.ones(tf.shape(candidates)[:1], dtype=tf.int32)
        else:
            user = tf.cast(user, tf.int32)
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(user)[0],
                    tf.shape(candidates)[0],
                    message="user and candidates must have the same batch size",
                )
            )
        with tf.control_dependencies(checks):
            candidates = tf.identity(candidates)
        states, mask = self.encode_history(features, training=training)  # [B, L, H]
        cand = self.item_tower(candidates)  # [B, C, D]
        if self.attention is not None:
            pooled = self.attention(cand, states, mask)  # [B, C, H]
        else:
            pooled = _last_real(states, mask)[:, None, :]  # [B, 1, H]
        hist = self.history_projection(pooled)  # [B, C or 1, D]
        hist = hist + tf.zeros_like(cand)  # broadcast to [B, C, D]
        parts = [hist, cand, hist * cand]
        if self.user_embedding is not None:
            user_vec = self.user_embedding(user)[:, None, :] + tf.zeros_like(cand)  # [B, C, D]
            parts += [user_vec, user_vec * cand]
        x = tf.concat(parts, axis=-1)  # [B, C, F]
        x0 = x
        for cross in self.cross:
            x = cross(x0, x)
        for dense in self.mlp:
            x = self.mlp_dropout(dense(x), training=training)
        scores = tf.squeeze(self.output_layer(x), axis=-1)  # [B, C]
        scores = scores + self.global_bias
        if self.config.use_biases:
            scores = (
                scores
                + self.user_bias(user)[:, :1]
                + tf.squeeze(self.item_bias(candidates), axis=-1)
            )
        return scores

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Scores ``features`` and returns the task loss (updating the metrics).

        Args:
            features: Model features (see :meth:`call`) plus ``labels`` float ``[B, C]``.
            training: Training mode.

        Returns:
            Scalar loss.
        """
        scores = self(features, training=training)  # [B, C]
        labels = tf.cast(features["labels"], scores.dtype)
        # List metrics (pairwise AUC) are skipped in training steps to keep them fast.
        metrics = not training or self.config.objective == "rating"
        return self.task(labels=labels, predictions=scores, compute_metrics=metrics)
