"""Ranker layers: per-event signal features and candidate-aware (DIN-style) attention."""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)


@keras.saving.register_keras_serializable(package="tfrec")
class EventSignals(keras.layers.Layer):
    """Per-event signal features ``[B, L, 4]``: rating, has-rating, time gap, has-time.

    Ratings are standardised (``(r - rating_mean) / rating_scale``) and present
    when ``> 0``; the log time gap is standardised and present at real positions
    when it was provided. Missing features (None) and hidden signals give zeros
    with the "has" flag 0, a state the model sees during training through
    ``signal_dropout``.

    Args:
        use_rating: Use the rating feature.
        use_time: Use the time-gap feature.
        rating_mean: Centre of the ratings.
        rating_scale: Scale of the ratings (> 0).
        log_dt_mean: Centre of the log1p time gaps.
        log_dt_scale: Scale of the log1p time gaps (> 0).
        signal_dropout: Training-time probability of hiding an example's signals.
        **kwargs: Passed to ``keras.layers.Layer``.
    """

    def __init__(
        self,
        use_rating: bool = True,
        use_time: bool = True,
        *,
        rating_mean: float = 0.0,
        rating_scale: float = 1.0,
        log_dt_mean: float = 0.0,
        log_dt_scale: float = 1.0,
        signal_dropout: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if rating_scale <= 0 or log_dt_scale <= 0:
            raise ValueError(
                f"EventSignals: rating_scale={rating_scale}, log_dt_scale={log_dt_scale}; "
                "expected both > 0"
            )
        self.use_rating = use_rating
        self.use_time = use_time
        self.rating_mean = rating_mean
        self.rating_scale = rating_scale
        self.log_dt_mean = log_dt_mean
        self.log_dt_scale = log_dt_scale
        self.signal_dropout = signal_dropout

    def call(
        self,
        padding_mask: tf.Tensor,
        history_rating: tf.Tensor | None = None,
        history_log_dt: tf.Tensor | None = None,
        training: bool | None = None,
    ) -> tf.Tensor:
        """Builds the signal features.

        Args:
            padding_mask: bool ``[B, L]``, True at real history items.
            history_rating: float ``[B, L]`` ratings (0 = unknown), or None.
            history_log_dt: float ``[B, L]`` log1p time gaps, or None.
            training: Enables ``signal_dropout``.

        Returns:
            float32 ``[B, L, 4]``.
        """
        real = tf.cast(padding_mask, tf.float32)  # [B, L]
        keep = tf.ones_like(real[:, :1])  # [B, 1]
        if training and self.signal_dropout > 0:
            draw = tf.random.uniform(tf.shape(keep))
            keep = tf.cast(draw >= self.signal_dropout, tf.float32)
        zeros = tf.zeros_like(real)
        rating_value, rating_flag = zeros, zeros
        if self.use_rating and history_rating is not None:
            rating = tf.cast(history_rating, tf.float32)
            rating_flag = tf.cast(rating > 0, tf.float32) * real * keep
            rating_value = (rating - self.rating_mean) / self.rating_scale * rating_flag
        time_value, time_flag = zeros, zeros
        if self.use_time and history_log_dt is not None:
            time_flag = real * keep
            log_dt = tf.cast(history_log_dt, tf.float32)
            time_value = (log_dt - self.log_dt_mean) / self.log_dt_scale * time_flag
        return tf.stack([rating_value, rating_flag, time_value, time_flag], axis=-1)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "use_rating": self.use_rating,
            "use_time": self.use_time,
            "rating_mean": self.rating_mean,
            "rating_scale": self.rating_scale,
            "log_dt_mean": self.log_dt_mean,
            "log_dt_scale": self.log_dt_scale,
            "signal_dropout": self.signal_dropout,
        }


@keras.saving.register_keras_serializable(package="tfrec")
class CandidateAttention(keras.layers.Layer):
    """Candidate-aware attention over history states (DIN-style target attention).

    ``weights[b, c, :] = softmax_l(q(c) . k_l / sqrt(units))`` over real positions
    only; a history without real items gives a zero vector.

    Args:
        units: Size of the attention space (the key size H of the history states).
        **kwargs: Passed to ``keras.layers.Layer``.
    """

    def __init__(self, units: int, **kwargs: Any):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"CandidateAttention: units={units}; expected >= 1")
        self.units = units
        self._query = keras.layers.Dense(units, use_bias=False, name="query")

    def call(self, candidates: tf.Tensor, states: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
        """Pools the history states per candidate.

        Args:
            candidates: ``[B, C, D]`` candidate embeddings.
            states: ``[B, L, H]`` history states (H = ``units``).
            padding_mask: bool ``[B, L]``, True at real items.

        Returns:
            ``[B, C, H]`` attention-weighted history per candidate.
        """
        query = self._query(candidates)  # [B, C, H]
        logits = tf.einsum("bch,blh->bcl", query, states) / math.sqrt(self.units)  # [B, C, L]
        mask = tf.cast(padding_mask, tf.bool)[:, None, :]  # [B, 1, L]
        logits = tf.where(mask, logits, tf.fill(tf.shape(logits), -1e9))
        weights = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, logits.dtype)  # [B, C, L]
        return tf.einsum("bcl,blh->bch", weights, states)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {**super().get_config(), "units": self.units}
