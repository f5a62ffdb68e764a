"""EASE (Steck, WWW 2019): a closed-form linear item-item autoencoder, and its typed config.

Over the binary user x item matrix ``X`` [U, I] of the TRAIN interactions (padding
and OOV indices 0/1 excluded), EASE's item-item weights are, for a ridge weight
``lambda`` (``EASEConfig.l2``)::

    G = X^T X + lambda I          [I, I]   (item co-occurrence counts)
    P = G^-1
    B_ij = -P_ij / P_jj  (i != j), B_jj = 0

and a user with the binary history row ``x`` [I] gets the scores ``x . B`` [I]
(the sum of the rows of ``B`` of its history items). The solve is dense float64
numpy over the items that have a train interaction (:func:`item_gram`,
:func:`ease_weights`); the other rows and columns of ``B`` are zero (the padding and
OOV indices, and items seen only in valid/test, score 0). A dense ``I x I`` matrix
limits the catalogue: :func:`check_catalogue` refuses more than
``EASEConfig.max_items`` item indices.

Inference has the two-tower interface (``query_embeddings``, ``candidate_embeddings``,
``score``), so the retrieval evaluator and export work unchanged with ``D = I``:
the query of a user is the multi-hot of its history (:class:`HistoryMultiHot`; the
user id is not read, so unknown users are served the same way) and the candidate
vectors are the columns of ``B`` (``candidate_embeddings()`` = ``B^T``), so
``query @ candidates^T = x . B``. The SavedModel holds that one ``[I, I]`` matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import JsonConfig
from tfrec.data.vocab import NUM_RESERVED
from tfrec.training.config import TrainingConfig

#: float64 entries of one dense block of user rows when building ``X^T X`` (256 MB).
_GRAM_BLOCK_ELEMENTS = 2**25


@dataclasses.dataclass
class EASEConfig(JsonConfig):
    """Hyper-parameters of EASE.

    Attributes:
        l2: The ridge weight lambda (> 0) used when ``l2_grid`` is empty, or when the
            split has no validation part.
        l2_grid: The lambdas tried: each is solved on train and scored on validation
            (``training.monitor``, default ``ndcg@10``); the best is kept (the smaller
            one on ties). Empty: ``l2`` only.
        refit_on_valid: After choosing lambda, solve again on train + valid (the
            test part is never used for any choice). The reported validation
            metrics stay those of the train-only solve.
        max_items: Largest item vocabulary (padding and OOV included) accepted: the
            float32 ``I x I`` weights take ``4 I^2`` bytes (10 GB at 50,000), the
            float64 solve ``16 n^2`` more (n = items with train interactions).
        max_history: History length L of the evaluation and serving queries (the
            most recent L items form the query): long, as EASE reads the whole row.
        training: Only ``seed`` (recorded; IVF k-means at export), ``monitor`` (the
            validation metric choosing lambda) and ``privacy`` (refused) are read:
            there is no training loop.
        context_dim: Always 0 (a class constant, not saved): no context features; the
            retrieval export reads it.
    """

    l2: float = 500.0
    l2_grid: tuple[float, ...] = (100.0, 200.0, 300.0, 500.0, 800.0, 1200.0)
    refit_on_valid: bool = True
    max_items: int = 50_000
    max_history: int = 1000
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    context_dim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ValueError(f"EASEConfig.l2={self.l2}; expected > 0")
        bad = [value for value in self.l2_grid if not value > 0]
        if bad:
            raise ValueError(
                f"EASEConfig.l2_grid={list(self.l2_grid)} holds {bad}; expected values > 0"
            )
        for name in ("max_items", "max_history"):
            value = getattr(self, name)
            minimum = NUM_RESERVED + 1 if name == "max_items" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"EASEConfig.{name}={value!r}; expected an integer >= {minimum}")

    def grid(self) -> tuple[float, ...]:
        """The lambdas to try: ``l2_grid``, or ``(l2,)`` when it is empty."""
        return tuple(self.l2_grid) or (self.l2,)


def check_catalogue(num_items: int, max_items: int) -> None:
    """Refuses a catalogue whose dense ``I x I`` weights would not fit ``max_items``.

    Args:
        num_items: Item vocabulary size I (padding and OOV included).
        max_items: ``EASEConfig.max_items``.

    Raises:
        ValueError: ``num_items > max_items`` (the message gives the bytes needed).
    """
    if num_items > max_items:
        weights = 4 * num_items**2
        solve = 16 * num_items**2
        raise ValueError(
            f"EASE: the catalogue has {num_items} item indices, above "
            f"EASEConfig.max_items={max_items}: the dense float32 item-item weights need "
            f"{weights:,} bytes ({weights / 1e9:.1f} GB) and the float64 solve up to "
            f"{solve:,} bytes ({solve / 1e9:.1f} GB) more; expected at most max_items items "
            "(raise it only if the machine has that memory)"
        )


@dataclasses.dataclass(frozen=True)
class ItemGram:
    """``X^T X`` over the items with train interactions, ready to solve for any lambda.

    Attributes:
        items: int64 ``[n]`` item indices (>= 2, sorted) of the rows/columns of ``gram``.
        gram: float64 ``[n, n]`` co-occurrence counts (users who have both items).
        num_items: Item vocabulary size I of the full weights.
    """

    items: np.ndarray
    gram: np.ndarray
    num_items: int

    def weights(self, l2: float) -> np.ndarray:
        """float32 ``[I, I]`` EASE weights ``B`` for ``l2``, zero outside the active items."""
        full = np.zeros((self.num_items, self.num_items), np.float32)  # [I, I]
        if len(self.items):
            full[np.ix_(self.items, self.items)] = ease_weights(self.gram, l2)
        return full


def item_gram(users: np.ndarray, items: np.ndarray, num_items: int) -> ItemGram:
    """``X^T X`` of the binary user x item matrix of ``(users, items)`` pairs.

    A pair seen several times counts once; pairs with an index < 2 (padding,
    OOV) are dropped. ``X`` is built densely in blocks of users, over the items
    that occur (so the memory is ``n^2`` plus one block).

    Args:
        users: int ``[E]`` user indices.
        items: int ``[E]`` item indices, aligned with ``users``.
        num_items: Item vocabulary size I.

    Returns:
        The :class:`ItemGram`.

    Raises:
        ValueError: ``users`` and ``items`` differ in shape, or an item is >= ``num_items``.
    """
    users = np.asarray(users, np.int64).ravel()
    items = np.asarray(items, np.int64).ravel()
    if users.shape != items.shape:
        raise ValueError(
            f"item_gram: users has {users.size} entries and items {items.size}; "
            "expected one item per user (aligned pairs)"
        )
    if items.size and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(
            f"item_gram: items holds indices in [{items.min()}, {items.max()}]; "
            f"expected [0, {num_items}) (num_items={num_items})"
        )
    real = (users >= NUM_RESERVED) & (items >= NUM_RESERVED)
    pairs = np.unique(np.stack([users[real], items[real]], axis=1), axis=0).reshape(-1, 2)
    active, cols = np.unique(pairs[:, 1], return_inverse=True)  # [n], [E']
    _, rows = np.unique(pairs[:, 0], return_inverse=True)  # [E'], sorted (pairs are)
    size = len(active)
    gram = np.zeros((size, size), np.float64)  # [n, n]
    block = max(1, _GRAM_BLOCK_ELEMENTS // max(size, 1))
    num_rows = int(rows.max()) + 1 if rows.size else 0
    for start in range(0, num_rows, block):
        lo, hi = np.searchsorted(rows, [start, start + block])
        dense = np.zeros((min(block, num_rows - start), size), np.float64)  # [b, n]
        dense[rows[lo:hi] - start, cols[lo:hi]] = 1.0
        gram += dense.T @ dense
    return ItemGram(active, gram, num_items)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form: ``B = -P / diag(P)`` column-wise, ``P = (G + l2 I)^-1``, diag 0.

    Args:
        gram: float ``[n, n]`` ``X^T X``.
        l2: The ridge weight lambda (> 0).

    Returns:
        float64 ``[n, n]`` weights; ``B[i, j]`` is item i's weight in item j's score.

    Raises:
        ValueError: ``l2 <= 0``.
    """
    if not l2 > 0:
        raise ValueError(f"ease_weights: l2={l2}; expected > 0 (G + l2 I must be invertible)")
    regularised = np.array(gram, np.float64)  # [n, n], a copy
    regularised[np.diag_indices_from(regularised)] += l2
    inverse = np.linalg.inv(regularised)  # P [n, n]
    weights = inverse / -np.diag(inverse)[np.newaxis, :]  # column j divided by -P_jj
    np.fill_diagonal(weights, 0.0)
    return weights


@keras.saving.register_keras_serializable(package="tfrec")
class HistoryMultiHot(keras.layers.Layer):
    """EASE's query: the binary multi-hot ``[B, I]`` of a history (no weights).

    Padding (0) and OOV (1) entries are ignored and a repeated item counts once;
    the user id is not read. It has the :class:`~tfrec.layers.towers.QueryTower`
    inference interface (``final_query(user, history)``) the retrieval export calls.

    Args:
        num_items: Item vocabulary size I (padding and OOV included, >= 3).
        **kwargs: Passed to ``keras.layers.Layer``.

    Raises:
        ValueError: ``num_items < 3``.
    """

    def __init__(self, num_items: int, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items <= 2:
            raise ValueError(f"HistoryMultiHot: num_items={num_items!r}; expected an integer >= 3")
        self.num_items = num_items

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """``features``: ``"user"`` int ``[B]``, optional ``"history"`` int ``[B, L]``.

        Returns:
            float32 ``[B, I]``: 1.0 at the real items of the history, else 0.
        """
        del training
        batch = tf.shape(features["user"])[:1]  # [1]
        history = features.get("history")
        if history is None:
            return tf.zeros(tf.concat([batch, [self.num_items]], axis=0), tf.float32)
        counts = tf.math.bincount(
            tf.cast(history, tf.int32), minlength=self.num_items, maxlength=self.num_items,
            dtype=tf.float32, binary_output=True, axis=-1,
        )  # [B, I]  # fmt: skip
        real = tf.cast(tf.range(self.num_items) >= NUM_RESERVED, tf.float32)  # [I]
        return counts * real[tf.newaxis, :]

    def final_query(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """Inference query ``[B, I]`` (the retrieval export calls it)."""
        features = {"user": user} if history is None else {"user": user, "history": history}
        return self(features, training=False)

    def get_config(self) -> dict[str, Any]:
        """Returns the layer config (JSON-serialisable)."""
        return {**super().get_config(), "num_items": self.num_items}


class EASEModel(keras.Model):
    """EASE's weights with the two-tower inference interface (see the module docstring).

    Non-trainable weight ``item_weights`` [I, I] holds ``B^T`` (row j: the weights
    of every history item in item j's score), filled by :meth:`assign`.

    Args:
        config: Hyper-parameters (``max_items``, ``max_history`` are read here).
        num_users: User vocabulary size U (>= 2; the export checks it, EASE reads no user).
        num_items: Item vocabulary size I (padding and OOV included).

    Raises:
        ValueError: ``num_items`` above ``config.max_items`` (:func:`check_catalogue`)
            or a size out of range.
    """

    encodes_history = True  # the query is the history

    def __init__(self, config: EASEConfig, num_users: int, num_items: int):
        super().__init__(name="ease")
        check_catalogue(num_items, config.max_items)
        if num_users < NUM_RESERVED:
            raise ValueError(f"EASEModel: num_users={num_users}; expected >= 2")
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        self.query_tower = HistoryMultiHot(num_items, name="query_tower")
        self.item_weights = self.add_weight(
            name="item_weights", shape=(num_items, num_items), initializer="zeros",
            trainable=False,
        )  # fmt: skip

    def assign(self, weights: np.ndarray) -> EASEModel:
        """Stores ``B`` (float ``[I, I]``, e.g. :meth:`ItemGram.weights`); returns ``self``.

        Raises:
            ValueError: ``weights`` is not ``[I, I]``.
        """
        weights = np.asarray(weights, np.float32)
        if weights.shape != (self.num_items, self.num_items):
            raise ValueError(
                f"EASEModel.assign: weights has shape {weights.shape}; expected "
                f"({self.num_items}, {self.num_items}) (num_items)"
            )
        self.item_weights.assign(weights.T)
        return self

    def weights_matrix(self) -> np.ndarray:
        """float32 ``[I, I]`` ``B`` (``B[i, j]``: item i's weight in item j's score)."""
        return self.item_weights.numpy().T

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Query vectors ``[B, I]`` of ``features["user"]`` and ``"history"``."""
        del training
        return self.query_embeddings(features["user"], features.get("history"))

    def query_embeddings(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """``[B, I]`` multi-hot of the history (:class:`HistoryMultiHot`; ``user`` unused)."""
        return self.query_tower.final_query(user, history)

    def candidate_embeddings(self) -> tf.Tensor:
        """``[I, I]`` ``B^T``: row j is the candidate vector of item j (rows 0/1 zero)."""
        return tf.convert_to_tensor(self.item_weights)

    def score(
        self, user: tf.Tensor, history: tf.Tensor | None = None, candidates: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Scores ``[B, I]`` = ``x . B`` (history not excluded; columns 0/1 ``-inf``)."""
        if candidates is None:
            candidates = self.candidate_embeddings()
        query = self.query_embeddings(user, history)  # [B, I]
        scores = tf.matmul(query, candidates, transpose_b=True)  # [B, I]
        reserved = tf.range(tf.shape(scores)[1]) < NUM_RESERVED  # [I]
        return tf.where(reserved[tf.newaxis, :], -np.inf, scores)
