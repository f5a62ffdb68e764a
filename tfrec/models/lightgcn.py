"""LightGCN retrieval model (He et al., SIGIR 2020) and its typed config.

Architecture (U users, I items, N = U + I graph nodes, D = embedding_dim, K = num_layers)::

    ego embeddings E_0 [N, D] (users, then items)
    Â = D^-1/2 A D^-1/2 [N, N] of the TRAIN user-item graph (tf.SparseTensor)
    E_{k+1} = Â E_k (sparse_dense_matmul), final E = mean(E_0, ..., E_K)
    score(user, item) = E[user] . E[U + item]

Training batches are (user, positive item) pairs (``user`` [B], ``target`` [B] or
[B, 1]: :func:`tfrec.data.sequences.interaction_pairs`); every step propagates the
whole graph. Loss ``"bpr"``: ``softplus(s(u, neg) - s(u, pos))`` with one uniform
negative item per positive; ``"softmax"``: the full-catalogue softmax of
:class:`~tfrec.tasks.retrieval.RetrievalTask`. Both add the paper's L2 penalty on the
batch's ego embeddings, ``l2 / 2 * (|e_u|^2 + |e_pos|^2 [+ |e_neg|^2]) / B``.

Inference has the two-tower interface (``query_embeddings(user, history)``,
``candidate_embeddings()``, ``score``), so the retrieval evaluator works unchanged. A
user without training interactions (OOV id, or only valid/test events) is queried
with the mean final vector of its history items (zero vector without history).
:meth:`LightGCNModel.frozen` precomputes the final tables into a
:class:`FrozenLightGCN` that the retrieval export serves as is (the SavedModel holds
only the final tables, not the graph).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import tensorflow as tf

from tfrec.config import JsonConfig
from tfrec.data.vocab import NUM_RESERVED
from tfrec.layers.graph import (
    GraphQueryTower,
    LightGCNPropagation,
    connected_users,
    graph_query,
)
from tfrec.models.base import TfrecModel
from tfrec.names import GraphLoss
from tfrec.tasks.retrieval import RetrievalTask
from tfrec.training.config import OptimizerConfig, TrainingConfig

#: Distribution strategies LightGCN trains under (every replica propagates the whole graph).
_STRATEGIES = ("auto", "default", "mirrored")


@dataclasses.dataclass
class LightGCNConfig(JsonConfig):
    """Hyper-parameters of the LightGCN model and its training.

    Attributes:
        embedding_dim: Vector size D of users and items.
        num_layers: Propagation layers K (0 = matrix factorisation on the same loss).
        loss: ``"bpr"`` (one uniform negative per positive) or ``"softmax"`` (full
            catalogue, :class:`~tfrec.tasks.retrieval.RetrievalTask`).
        temperature: Softmax logits are divided by it (``loss="softmax"`` only).
        l2: Weight of the L2 penalty on the batch's ego embeddings (the paper's lambda).
        init_stddev: Standard deviation of the normal initialisation of ``E_0``.
        max_history: History length of the evaluation/serving queries; only users
            outside the training graph use it (mean of their history items).
        optimizer: The optimizer.
        training: The training loop (batch of (user, item) pairs, early stopping on
            validation ``training.monitor``, default ``ndcg@10``). Strategies
            ``auto``, ``default`` or ``mirrored`` only; no XLA, no mixed precision.
        context_dim: Always 0 (a class constant, not saved): no context features; the
            retrieval export reads it.
    """

    embedding_dim: int = 64
    num_layers: int = 3
    loss: GraphLoss = "bpr"
    temperature: float = 1.0
    l2: float = 1e-4
    init_stddev: float = 0.1
    max_history: int = 50
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(batch_size=2048, epochs=300, patience=10)
    )
    context_dim: ClassVar[int] = 0

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "num_layers", "max_history"):
            value = getattr(self, name)
            minimum = 0 if name == "num_layers" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"LightGCNConfig.{name}={value!r}; expected an integer >= {minimum}"
                )
        if self.l2 < 0:
            raise ValueError(f"LightGCNConfig.l2={self.l2}; expected >= 0")
        for name in ("temperature", "init_stddev"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LightGCNConfig.{name}={getattr(self, name)}; expected > 0")
        for name in ("jit_compile", "mixed_precision"):
            if getattr(self.training, name):
                raise ValueError(
                    f"LightGCNConfig.training.{name}=True; expected False (the propagation's "
                    "float32 CSR kernels have no XLA or reduced-precision variant)"
                )
        if self.training.strategy not in _STRATEGIES:
            raise ValueError(
                f"LightGCNConfig.training.strategy={self.training.strategy!r}; expected one of "
                f"{list(_STRATEGIES)} (every replica propagates the whole graph)"
            )


def _pairs(features: Mapping[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """The real ``(user [N], positive item [N])`` pairs of a batch (indices >= 2)."""
    user = tf.reshape(tf.cast(features["user"], tf.int32), [-1])  # [B]
    target = tf.cast(features["target"], tf.int32)
    if target.shape.rank == 2:
        if target.shape[1] != 1:
            raise ValueError(
                f"LightGCNModel: target has shape {target.shape}; expected [B] or [B, 1] "
                "(one positive item per (user, item) pair)"
            )
        target = target[:, 0]  # [B]
    real = tf.logical_and(user >= NUM_RESERVED, target >= NUM_RESERVED)  # [B]
    return tf.boolean_mask(user, real), tf.boolean_mask(target, real)


class LightGCNModel(TfrecModel):
    """LightGCN on the integer model-input contract (see the module docstring).

    Args:
        config: Hyper-parameters.
        num_users: User vocabulary size U (padding and OOV included).
        num_items: Item vocabulary size I (padding and OOV included).
        adjacency: ``[U + I, U + I]`` normalised adjacency of the TRAIN interactions
            (:func:`tfrec.layers.graph.normalized_adjacency`).

    Raises:
        ValueError: Sizes out of range or an adjacency of another shape.
    """

    encodes_history = True  # the fallback query of unknown users reads the history

    def __init__(
        self, config: LightGCNConfig, num_users: int, num_items: int, adjacency: tf.SparseTensor
    ):
        super().__init__(name="lightgcn")
        nodes = num_users + num_items
        shape = tuple(int(n) for n in adjacency.dense_shape)
        if shape != (nodes, nodes):
            raise ValueError(
                f"LightGCNModel: adjacency has shape {shape}; expected ({nodes}, {nodes}) "
                f"(num_users={num_users} + num_items={num_items} nodes)"
            )
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        self.adjacency = adjacency
        self.known_users = tf.constant(connected_users(adjacency, num_users))  # [U]
        self.propagation = LightGCNPropagation(
            num_users, num_items, config.embedding_dim, num_layers=config.num_layers,
            init_stddev=config.init_stddev, name="propagation",
        )  # fmt: skip
        self.task = (  # the full-catalogue softmax
            RetrievalTask(loss="full", temperature=config.temperature, name="task")
            if config.loss == "softmax"
            else None
        )

    def call(self, features: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Query vectors ``[B, D]`` of ``features["user"]`` (and ``"history"``)."""
        del training
        return self.query_embeddings(features["user"], features.get("history"))

    def final_tables(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The propagated ``(users [U, D], items [I, D])``."""
        return self.propagation(self.adjacency)

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """BPR or softmax loss plus the L2 penalty, over the real pairs of a batch.

        Args:
            features: ``"user"`` int [B], ``"target"`` int [B] or [B, 1] (pairs with
                an index < 2 are skipped).
            training: Unused (no dropout).

        Returns:
            Scalar float32 loss (0 for a batch without real pairs).
        """
        del training
        user, positive = _pairs(features)  # [N], [N]
        users, items = self.final_tables()  # [U, D], [I, D]
        query = tf.gather(users, user)  # [N, D]
        ego_users, ego_items = self.propagation.ego()
        ego = [tf.gather(ego_users, user), tf.gather(ego_items, positive)]  # [N, D] each
        count = tf.cast(tf.shape(user)[0], tf.float32)
        if self.config.loss == "bpr":
            negative = tf.random.uniform(tf.shape(user), NUM_RESERVED, self.num_items, tf.int32)
            pos_score = tf.reduce_sum(query * tf.gather(items, positive), axis=1)  # [N]
            neg_score = tf.reduce_sum(query * tf.gather(items, negative), axis=1)  # [N]
            loss = tf.reduce_sum(tf.nn.softplus(neg_score - pos_score)) / tf.maximum(count, 1.0)
            ego.append(tf.gather(ego_items, negative))
        else:
            loss = tf.cond(
                count > 0,
                lambda: self.task(query, items, positive),
                lambda: tf.constant(0.0),
            )
        penalty = tf.add_n([tf.reduce_sum(tf.square(e)) for e in ego]) / 2.0
        return loss + self.config.l2 * penalty / tf.maximum(count, 1.0)

    def query_embeddings(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """Query vectors ``[B, D]``: the final user vector, or the history fallback.

        Args:
            user: int ``[B]`` user indices.
            history: int ``[B, L]`` item indices (read only for users outside the
                training graph), or None.

        Returns:
            ``[B, D]`` float32 (:func:`tfrec.layers.graph.graph_query`).
        """
        users, items = self.final_tables()
        return graph_query(users, items, self.known_users, user, history)

    def candidate_embeddings(self) -> tf.Tensor:
        """``[I, D]`` final vectors of every item index (rows 0/1 included)."""
        return self.final_tables()[1]

    def score(
        self, user: tf.Tensor, history: tf.Tensor | None = None, candidates: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Scores ``[B, I]`` of every item (history not excluded; columns 0/1 ``-inf``)."""
        return _score(self, user, history, candidates)

    def frozen(self) -> FrozenLightGCN:
        """The current final tables, for serving without the graph (see :class:`FrozenLightGCN`)."""
        users, items = self.final_tables()
        tower = GraphQueryTower(
            self.num_users, self.num_items, self.config.embedding_dim, name="query_tower"
        )
        tower.assign(users, items, self.known_users)
        return FrozenLightGCN(self.config, tower)


class FrozenLightGCN:
    """A trained LightGCN's final tables with the two-tower inference interface.

    What :func:`tfrec.export.retrieval.export_retrieval` (and the IVF index) reads:
    ``query_tower`` (a :class:`~tfrec.layers.graph.GraphQueryTower`),
    ``candidate_embeddings()``, ``num_users``, ``num_items``, ``config`` and
    ``encodes_history``; scoring is the same as the live model's.

    Args:
        config: The model's config.
        query_tower: The tower holding the final tables.
    """

    encodes_history = True

    def __init__(self, config: LightGCNConfig, query_tower: GraphQueryTower):
        self.config = config
        self.query_tower = query_tower
        self.num_users = query_tower.num_users
        self.num_items = query_tower.num_items

    def query_embeddings(self, user: tf.Tensor, history: tf.Tensor | None = None) -> tf.Tensor:
        """``[B, D]`` query vectors from the stored tables."""
        return self.query_tower.final_query(user, history)

    def candidate_embeddings(self) -> tf.Tensor:
        """``[I, D]`` stored final item vectors."""
        return tf.convert_to_tensor(self.query_tower.item_table)

    def score(
        self, user: tf.Tensor, history: tf.Tensor | None = None, candidates: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Scores ``[B, I]`` of every item (history not excluded; columns 0/1 ``-inf``)."""
        return _score(self, user, history, candidates)


def _score(
    model: LightGCNModel | FrozenLightGCN,
    user: tf.Tensor,
    history: tf.Tensor | None,
    candidates: tf.Tensor | None,
) -> tf.Tensor:
    """``query_embeddings @ candidates^T`` ``[B, I]`` with the reserved columns at ``-inf``."""
    if candidates is None:
        candidates = model.candidate_embeddings()
    scores = tf.matmul(model.query_embeddings(user, history), candidates, transpose_b=True)
    reserved = tf.range(tf.shape(scores)[1]) < NUM_RESERVED  # [I]
    return tf.where(reserved[tf.newaxis, :], -np.inf, scores)
