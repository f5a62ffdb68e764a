"""The two towers of the retrieval model.

* :class:`ItemTower` (candidate tower): item index -> ``[D]`` vector, the sum of an
  id embedding and, when the catalogue has them, projections of constant per-item
  content features (genres multi-hot, title tokens: the tables of
  :func:`tfrec.data.item_features.build_item_feature_tables`). A catalogue item that never
  occurs in training still gets a useful vector from its content (cold start).
* :class:`QueryTower`: a user's history ``[B, L]`` -> causal ``[B, L, D]`` query
  vectors: item vectors of the history (through the shared ItemTower), a causal
  history encoder, plus optional user embedding and context features.

The ID-only query tower (user embedding, no history) is
:class:`tfrec.layers.user_tower.UserQueryTower`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrec.data.vocab import NUM_RESERVED, OOV_INDEX


def check_embedding_args(
    layer: str, rows: tuple[str, int, int], embedding_dim: int, l2: float
) -> None:
    """Checks the arguments of an ID embedding table (a tower's).

    Args:
        layer: The layer named in the error.
        rows: ``(argument name, vocabulary size, the smallest size allowed)``.
        embedding_dim: The vector size, >= 1.
        l2: The L2 penalty of the table, >= 0.

    Raises:
        ValueError: A value out of range (the message names the layer and argument).
    """
    name, size, minimum = rows
    if size < minimum:
        raise ValueError(f"{layer}: {name}={size}; expected >= {minimum}")
    if embedding_dim < 1:
        raise ValueError(f"{layer}: embedding_dim={embedding_dim}; expected >= 1")
    if l2 < 0:
        raise ValueError(f"{layer}: l2={l2}; expected >= 0")


@keras.saving.register_keras_serializable(package="tfrec")
class ItemTower(keras.layers.Layer):
    """Candidate tower: item index -> ``[D]`` vector.

    ``vector(i) = id_embedding[i] + genres[i] @ W_g + masked_mean(title_embedding[titles[i]])``
    (the content terms only when the tables are given). The tables are stored as
    non-trainable weights.

    Args:
        num_items: Item vocabulary size I (padding and OOV included).
        embedding_dim: Output size D.
        genre_table: ``[I, G]`` multi-hot genres (nested lists or array) or None.
        title_table: ``[I, T]`` title token ids (0 = padding) or None.
        title_vocab_size: Title token vocabulary size (required with ``title_table``).
        l2: L2 penalty on the embedding tables.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: A table whose row count is not ``num_items`` or a bad size.
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int,
        *,
        genre_table: Any = None,
        title_table: Any = None,
        title_vocab_size: int = 0,
        l2: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_embedding_args(
            "ItemTower", ("num_items", num_items, NUM_RESERVED + 1), embedding_dim, l2
        )
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.genre_table = None if genre_table is None else np.asarray(genre_table, np.float32)
        self.title_table = None if title_table is None else np.asarray(title_table, np.int32)
        self.title_vocab_size = title_vocab_size
        self.l2 = l2
        for name, table in (("genre_table", self.genre_table), ("title_table", self.title_table)):
            if table is not None and (table.ndim != 2 or table.shape[0] != num_items):
                raise ValueError(
                    f"ItemTower: {name} has shape {table.shape}; expected [{num_items}, n]"
                )
        if self.title_table is not None and title_vocab_size <= int(self.title_table.max()):
            raise ValueError(
                f"ItemTower: title_vocab_size={title_vocab_size} but title_table holds token "
                f"id {int(self.title_table.max())}"
            )
        regularizer = keras.regularizers.l2(l2) if l2 > 0 else None
        self._ids = keras.layers.Embedding(
            num_items, embedding_dim, embeddings_regularizer=regularizer, name="item_embedding"
        )
        self._genres = None
        self._titles = None
        if self.genre_table is not None:
            self._genre_weights = self.add_weight(
                name="genre_table",
                shape=self.genre_table.shape,
                dtype=tf.float32,
                initializer=keras.initializers.Constant(self.genre_table),
                trainable=False,
            )
            self._genres = keras.layers.Dense(
                embedding_dim, use_bias=False, name="genre_projection"
            )
        if self.title_table is not None:
            self._title_weights = self.add_weight(
                name="title_table",
                shape=self.title_table.shape,
                dtype=tf.int32,
                initializer=keras.initializers.Constant(self.title_table),
                trainable=False,
            )
            self._titles = keras.layers.Embedding(
                title_vocab_size,
                embedding_dim,
                embeddings_regularizer=regularizer,
                name="title_token_embedding",
            )

    @property
    def uses_content_features(self) -> bool:
        """Whether genres or titles contribute to the item vectors."""
        return self._genres is not None or self._titles is not None

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Looks up item vectors.

        Args:
            item_ids: int item indices, any shape ``[...]``.

        Returns:
            ``[..., D]`` item vectors.
        """
        item_ids = tf.cast(item_ids, tf.int32)
        vectors = self._ids(item_ids)  # [..., D]
        if self.uses_content_features:
            vectors += self._content(item_ids, vectors.dtype)
        return vectors

    def _content(self, item_ids: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Sum of the genre projection and the mean title-token embedding, ``[..., D]``."""
        parts = []
        if self._genres is not None:
            genres = tf.gather(self._genre_weights, item_ids)  # [..., G]
            parts.append(tf.cast(self._genres(genres), dtype))
        if self._titles is not None:
            tokens = tf.gather(self._title_weights, item_ids)  # [..., T]
            token_mask = tf.cast(tokens > 0, dtype)[..., tf.newaxis]  # [..., T, 1]
            token_vectors = tf.cast(self._titles(tokens), dtype) * token_mask  # [..., T, D]
            count = tf.maximum(
                tf.reduce_sum(token_mask, axis=-2), tf.ones_like(token_mask[..., 0, :])
            )
            parts.append(tf.reduce_sum(token_vectors, axis=-2) / count)
        return tf.add_n(parts)

    def all_items(self) -> tf.Tensor:
        """Returns the vectors of every item index, ``[I, D]`` (rows 0/1 included).

        The id part is the embedding table itself rather than a gather of every
        row, so its gradient is dense (a full-catalogue softmax touches every row
        anyway, and dense Adam updates are several times faster than sparse ones).
        """
        if not self.built:
            self(tf.zeros([1], tf.int32))
        # tf.identity reads the variable: callers get a snapshot, never the variable.
        vectors = tf.identity(tf.cast(self._ids.embeddings, self._ids.compute_dtype))  # [I, D]
        if self.uses_content_features:
            vectors = vectors + self._content(tf.range(self.num_items), vectors.dtype)
        return vectors

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config; the tables are included as nested lists."""
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "embedding_dim": self.embedding_dim,
            "genre_table": None if self.genre_table is None else self.genre_table.tolist(),
            "title_table": None if self.title_table is None else self.title_table.tolist(),
            "title_vocab_size": self.title_vocab_size,
            "l2": self.l2,
        }


def compact_history(history: tf.Tensor) -> tf.Tensor:
    """Treats OOV entries as padding and moves all padding to the left.

    Real items keep their order, so position ``L - 1`` holds the most recent real
    item even when a caller right-padded or sent unknown ids. A ``[B, 0]``
    history (a brand-new user) becomes one padding column: the same empty history.

    Args:
        history: ``[B, L]`` int item indices (0 = padding, 1 = OOV), ``L >= 0``.

    Returns:
        ``[B, max(L, 1)]`` left-padded indices with no OOV entries.
    """
    history = tf.cast(history, tf.int32)
    history = tf.where(history == OOV_INDEX, tf.zeros_like(history), history)
    history = _pad_left(history)  # [B, L + 1]; column 0 is padding
    real = tf.cast(history > 0, tf.int32)  # [B, L + 1]
    order = tf.argsort(real, axis=1, stable=True)  # padding first, real items in order
    history = tf.gather(history, order, batch_dims=1)  # column 0 is still padding
    return history[:, tf.minimum(1, tf.shape(history)[1] - 1) :]  # drop it unless L = 0


def _pad_left(value: tf.Tensor) -> tf.Tensor:
    """Prepends one zero column to ``value`` ``[B, L, ...]`` (static rank >= 2)."""
    rank = value.shape.rank
    if rank is None or rank < 2:
        raise ValueError(f"expected a tensor of rank >= 2 ([B, L, ...]), got shape {value.shape}")
    return tf.pad(value, [[0, 0], [1, 0]] + [[0, 0]] * (rank - 2))


def trim_leading_padding(
    features: Mapping[str, tf.Tensor], keys: tuple[str, ...] = ("history", "target", "context")
) -> dict[str, tf.Tensor]:
    """Drops the leading columns that are padding in every row of ``features["history"]``.

    The encoders are padding-invariant, so this changes no output at a real
    position; it only saves compute when a batch holds short histories (e.g.
    batches grouped by history length). A batch without real items keeps its
    ``L`` columns; ``L = 0`` gets one padding column. Stock ops only: it runs in
    exported graphs (TF Serving) for any ``B >= 0`` and ``L >= 0``.

    Args:
        features: ``"history"`` ``[B, L]`` plus other features.
        keys: The per-position features (``[B, L, ...]``, static rank) to cut with it.

    Returns:
        A new dict with those features cut to ``[B, L']``, ``1 <= L' <= max(L, 1)``;
        the others unchanged.
    """
    # A padding column in front: ArgMax never sees an empty axis, even for L = 0 or B = 0.
    padded = {name: _pad_left(value) if name in keys else value for name, value in features.items()}
    real_columns = tf.reduce_any(padded["history"] > 0, axis=0)  # [L + 1]; column 0 is False
    length = tf.shape(real_columns)[0] - 1  # L
    first_real = tf.argmax(tf.cast(real_columns, tf.int32), output_type=tf.int32)  # 0 if none
    # No real item: keep the L original columns, or the added one when L = 0.
    first = tf.where(tf.reduce_any(real_columns), first_real, tf.minimum(1, length))
    return {name: value[:, first:] if name in keys else value for name, value in padded.items()}


@keras.saving.register_keras_serializable(package="tfrec")
class QueryTower(keras.layers.Layer):
    """Query tower: history (+ user, + context) -> causal ``[B, L, D]`` query vectors.

    ``query[b, t] = encoder(item_tower(history) + context_projection(context))[b, t]
    + user_embedding[user[b]]`` where entries ``<= 1`` (padding and OOV) of the
    history are masked out.

    Args:
        item_tower: The ItemTower that embeds history items (shared with the
            candidate side for weight tying), or its serialised config.
        encoder: A causal encoder from :func:`tfrec.layers.encoders.get_encoder`,
            or its serialised config; its output size must be the tower's D.
        num_users: User vocabulary size; 0 disables the user embedding.
        context_dim: Size C of optional per-position context features
            ``features["context"]`` ``[B, L, C]``; 0 disables them.
        l2: L2 penalty on the user embedding.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: A negative size.
    """

    def __init__(
        self,
        item_tower: ItemTower | dict[str, Any],
        encoder: keras.layers.Layer | dict[str, Any],
        num_users: int = 0,
        context_dim: int = 0,
        l2: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(item_tower, dict):
            item_tower = keras.layers.deserialize(item_tower)
        if isinstance(encoder, dict):
            encoder = keras.layers.deserialize(encoder)
        if num_users < 0 or context_dim < 0:
            raise ValueError(
                f"QueryTower: num_users={num_users}, context_dim={context_dim}; expected >= 0"
            )
        self.item_tower = item_tower
        self.encoder = encoder
        self.num_users = num_users
        self.context_dim = context_dim
        self.l2 = l2
        dim = item_tower.embedding_dim
        self._users = None
        if num_users:
            self._users = keras.layers.Embedding(
                num_users,
                dim,
                embeddings_regularizer=keras.regularizers.l2(l2) if l2 > 0 else None,
                name="user_embedding",
            )
        self._context = keras.layers.Dense(dim, name="context_projection") if context_dim else None

    @property
    def embedding_dim(self) -> int:
        """The query vector size D."""
        return self.item_tower.embedding_dim

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Computes the causal query vectors.

        Args:
            features: ``"history"`` int ``[B, L]`` (left-padded item indices),
                ``"user"`` int ``[B]`` when the user embedding is on, and
                ``"context"`` float ``[B, L, C]`` when ``context_dim > 0``;
                ``"masked_positions"`` bool ``[B, L]`` is passed on to the encoder when
                present (BERT4Rec's masked-item training).
            training: Enables dropout in the encoder.

        Returns:
            ``[B, L, D]`` query vectors; position ``t`` depends on history ``<= t``.

        Raises:
            ValueError: A required feature is missing.
        """
        history = tf.cast(features["history"], tf.int32)  # [B, L]
        mask = history > OOV_INDEX  # [B, L]
        x = self.item_tower(history)  # [B, L, D]
        if self._context is not None:
            if "context" not in features:
                raise ValueError("QueryTower: context_dim > 0 but features has no 'context'")
            x += tf.cast(self._context(features["context"]), x.dtype)
        extra = {k: features[k] for k in ("masked_positions",) if k in features}
        outputs = self.encoder(x, padding_mask=mask, training=training, **extra)  # [B, L, D]
        if self._users is not None:
            if "user" not in features:
                raise ValueError("QueryTower: the user embedding is on but features has no 'user'")
            user = self._users(tf.cast(features["user"], tf.int32))  # [B, D]
            outputs += tf.cast(user, outputs.dtype)[:, tf.newaxis, :]
        return outputs

    def final_query(self, user: tf.Tensor, history: tf.Tensor) -> tf.Tensor:
        """Inference query: the output after the most recent real history item.

        OOV entries are treated as padding and padding is moved left first
        (:func:`compact_history`), so right-padded or partly unknown histories work;
        columns that are padding in every row are skipped (:func:`trim_leading_padding`).

        Args:
            user: int ``[B]`` user indices (ignored without the user embedding).
            history: int ``[B, L]`` item indices, oldest first.

        Returns:
            ``[B, D]`` float32 query vectors.
        """
        features = {"user": tf.cast(user, tf.int32), "history": compact_history(history)}
        features = trim_leading_padding(features)
        return tf.cast(self(features, training=False)[:, -1, :], tf.float32)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config with the item tower and encoder serialised."""
        return {
            **super().get_config(),
            "item_tower": keras.layers.serialize(self.item_tower),
            "encoder": keras.layers.serialize(self.encoder),
            "num_users": self.num_users,
            "context_dim": self.context_dim,
            "l2": self.l2,
        }
