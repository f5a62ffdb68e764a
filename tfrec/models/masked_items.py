"""Masked-item training batches of the BERT4Rec encoder (``RetrievalConfig.encoder="bert4rec"``).

The retrieval data pipeline feeds next-item rows (``history`` ``[B, L]``, ``target``
``[B, L]``, left-padded, the most recent training item in ``target[:, -1]``). For
masked-item prediction each row becomes the user's sequence up to and including
that item, ``history + [target[:, -1]]`` (compacted, the ``max_history + 1`` most
recent items). Real positions are masked with probability ``mask_rate`` (a row
with none masked gets its most recent item masked, so every sequence trains, and
this is also the exact inference situation); the query tower encodes the sequence
bidirectionally with the mask vector at the masked positions, and the training
pairs are (output at a masked position, the original item there), fed to the same
:class:`~tfrec.tasks.retrieval.RetrievalTask` as the causal encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.vocab import OOV_INDEX
from tfrec.layers.towers import compact_history, trim_leading_padding

#: ``RetrievalConfig.encoder`` value trained by masked-item prediction.
BERT4REC = "bert4rec"


def check_masked_item_config(config: Any) -> None:
    """Checks ``config.mask_rate`` and the fields BERT4Rec cannot combine with.

    Args:
        config: A :class:`~tfrec.models.retrieval.RetrievalConfig`.

    Raises:
        ValueError: ``mask_rate`` outside ``(0, 1)``; ``encoder="bert4rec"`` with
            context features or scenario layers.
    """
    rate = config.mask_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
        raise ValueError(f"RetrievalConfig.mask_rate={rate!r}; expected 0 < mask_rate < 1")
    if config.encoder != BERT4REC:
        return
    if config.context_dim:
        raise ValueError(
            f"RetrievalConfig.context_dim={config.context_dim} with encoder='bert4rec'; "
            "expected 0: the masked-item sequences have no context for their last item"
        )
    if config.scenario_layers:
        raise ValueError(
            "RetrievalConfig.scenario_layers=True with encoder='bert4rec'; expected False: "
            "the scenario wrapper does not pass masked positions to the encoder"
        )


def masked_item_sequences(history: tf.Tensor, target: tf.Tensor, max_history: int) -> tf.Tensor:
    """Each row's sequence up to its most recent training item, for masked-item training.

    Args:
        history: ``[B, L]`` int left-padded item indices.
        target: ``[B, L]`` int next-item targets; ``target[:, -1]`` is the row's most
            recent item (padding there adds nothing).
        max_history: The encoder's ``max_length``: ``max_history + 1`` items are kept.

    Returns:
        ``[B, min(L + 1, max_history + 1)]`` int32 left-padded sequences (OOV entries
        dropped as padding, :func:`~tfrec.layers.towers.compact_history`).
    """
    last = tf.cast(target, tf.int32)[:, -1:]  # [B, 1]
    sequence = tf.concat([tf.cast(history, tf.int32), last], axis=1)  # [B, L + 1]
    return compact_history(sequence)[:, -(max_history + 1) :]


def sample_masked_positions(
    sequence: tf.Tensor, mask_rate: float, seed: int | None = None
) -> tf.Tensor:
    """Draws the masked positions of a batch of sequences.

    Args:
        sequence: ``[B, L]`` int item indices (``<= 1``: padding/OOV, never masked).
        mask_rate: Probability of masking each real position.
        seed: Op seed of the draw (None: the global seed only).

    Returns:
        ``[B, L]`` bool: each real position with probability ``mask_rate``; in a row
        with a real item but no draw, its most recent real item.
    """
    real = tf.cast(sequence, tf.int32) > OOV_INDEX  # [B, L]
    draw = tf.random.uniform(tf.shape(real), seed=seed) < mask_rate  # [B, L]
    masked = tf.logical_and(real, draw)
    recent = tf.cumsum(tf.cast(real, tf.int32), axis=1, reverse=True)  # [B, L]
    last = tf.logical_and(real, tf.equal(recent, 1))  # the most recent real item
    none = tf.logical_not(tf.reduce_any(masked, axis=1, keepdims=True))  # [B, 1]
    return tf.logical_or(masked, tf.logical_and(last, none))


def masked_item_queries(
    query_tower: keras.layers.Layer,
    features: Mapping[str, tf.Tensor],
    config: Any,
    training: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Queries ``[N, D]`` at the masked positions of a batch and the items there ``[N]``.

    Args:
        query_tower: A :class:`~tfrec.layers.towers.QueryTower` with a
            :class:`~tfrec.layers.bert4rec.Bert4RecEncoder`.
        features: ``"history"`` ``[B, L]``, ``"target"`` ``[B, L]`` and, with the user
            embedding, ``"user"`` ``[B]``.
        config: The model's :class:`~tfrec.models.retrieval.RetrievalConfig`
            (``mask_rate``; ``max_history``, the encoder's ``max_length``).
        training: Enables dropout.

    Returns:
        The query vectors at the N masked positions and the original item indices there.
    """
    inputs = {
        "history": masked_item_sequences(
            features["history"], features["target"], config.max_history
        )
    }
    if "user" in features:
        inputs["user"] = features["user"]
    inputs = trim_leading_padding(inputs)  # [B, L'] with L' <= L + 1
    sequence = inputs["history"]
    inputs["masked_positions"] = sample_masked_positions(sequence, config.mask_rate)  # [B, L']
    queries = query_tower(inputs, training=training)  # [B, L', D]
    positions = tf.where(inputs["masked_positions"])  # [N, 2]
    return tf.gather_nd(queries, positions), tf.gather_nd(sequence, positions)
