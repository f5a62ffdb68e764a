"""ID-only query tower: the user embedding alone, no history.

The query side of the classic matrix-factorisation two-tower
(``RetrievalConfig.encoder="none"``): ``score(user, item) = user_vector . item_vector``
with the item vector from :class:`tfrec.layers.towers.ItemTower`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.vocab import NUM_RESERVED
from tfrec.layers.towers import check_embedding_args


@keras.saving.register_keras_serializable(package="tfrec")
class UserQueryTower(keras.layers.Layer):
    """ID-only query tower: user index -> user embedding, no history.

    The query side of the classic matrix-factorisation two-tower
    (``RetrievalConfig.encoder="none"``). It has the same interface as
    :class:`QueryTower`, so models, evaluation and export use either: ``call``
    returns one "position" ``[B, 1, D]`` (the query at position ``L - 1 = 0``) and
    ``final_query`` ignores any history.

    Args:
        num_users: User vocabulary size (padding and OOV included, >= 2).
        embedding_dim: Query vector size D.
        l2: L2 penalty on the user embedding.
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: ``num_users < 2``, ``embedding_dim < 1`` or ``l2 < 0``.
    """

    def __init__(self, num_users: int, embedding_dim: int, l2: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        check_embedding_args(
            "UserQueryTower", ("num_users", num_users, NUM_RESERVED), embedding_dim, l2
        )
        self.num_users = num_users
        self.embedding_dim = embedding_dim
        self.l2 = l2
        self._users = keras.layers.Embedding(
            num_users,
            embedding_dim,
            embeddings_regularizer=keras.regularizers.l2(l2) if l2 > 0 else None,
            name="user_embedding",
        )

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Looks up the user vectors.

        Args:
            features: ``"user"`` int ``[B]``; anything else (e.g. ``"history"``) is ignored.
            training: Unused (no dropout).

        Returns:
            ``[B, 1, D]`` query vectors (one position).

        Raises:
            ValueError: ``features`` has no ``"user"``.
        """
        if "user" not in features:
            raise ValueError("UserQueryTower: features has no 'user'")
        return self._users(tf.cast(features["user"], tf.int32))[:, tf.newaxis, :]  # [B, 1, D]

    def final_query(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """Inference query: the user vector.

        Args:
            user: int ``[B]`` user indices.
            history: Ignored (accepted for the :class:`QueryTower` interface).

        Returns:
            ``[B, D]`` float32 query vectors.
        """
        del history
        return tf.cast(self({"user": user}, training=False)[:, 0, :], tf.float32)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {
            **super().get_config(),
            "num_users": self.num_users,
            "embedding_dim": self.embedding_dim,
            "l2": self.l2,
        }
