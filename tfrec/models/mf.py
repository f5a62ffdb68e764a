"""Matrix factorisation for explicit ratings (biased MF, PMF-style, non-negative MF).

The classic rating baselines, as one model behind the ranking signature::

    biased: r(u, i) = mu + b_u + b_i + p_u . q_i     (Surprise's SVD, Koren et al.)
    pmf:    r(u, i) = p_u . q_i                       (Surprise's SVD(biased=False), PMF)

``mu`` is the mean training rating (fixed), ``b_u``/``b_i`` learned biases and
``p_u``/``q_i`` learned factor vectors of ``embedding_dim`` numbers. Training
minimises the mean squared error plus, per rating, ``l2`` times the squared norm
of the biases and factors it touches (PMF's Gaussian priors; Surprise's
``reg_all`` per-rating penalty, so ``l2=0.02`` is Surprise's default).
``nonnegative=True`` keeps both factor matrices >= 0 (a Keras ``NonNeg``
constraint after every step), as Surprise's NMF; the biases of the ``biased``
variant stay unconstrained (Surprise's ``NMF(biased=True)``).

**Unknown users and items.** Padding (index 0), the out-of-vocabulary row (1)
and every id without a training rating (:meth:`MatrixFactorization.mark_known`)
contribute neither a bias nor a factor: ``biased`` falls back to ``mu`` plus
the known side's bias; ``pmf`` predicts ``mu`` for a pair with an unknown side
(a zero factor vector would predict 0).

The model reads ``user`` int ``[B]`` and ``candidates`` int ``[B, C]`` of the
ranker's input contract and **ignores** ``history`` and the event signals, so
it is exported and served with the ranking signature unchanged
(:mod:`tfrec.export.ranking`: the history a request sends has no effect).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.config import JsonConfig
from tfrec.data.vocab import NUM_RESERVED
from tfrec.models.base import TfrecModel
from tfrec.names import MFVariant
from tfrec.tasks.ranking import RankingTask
from tfrec.training.config import OptimizerConfig, TrainingConfig, nest_flat_fields


@dataclasses.dataclass
class MFConfig(JsonConfig):
    """Hyper-parameters of :class:`MatrixFactorization` and its training.

    Attributes:
        variant: ``"biased"`` (mu + biases + factors) or ``"pmf"`` (factors only).
        nonnegative: Constrain the factors to >= 0 (NMF).
        embedding_dim: Number of factors (Surprise's SVD default: 100).
        l2: Per-rating L2 penalty on the biases and factors it touches (>= 0).
        init_stddev: Signed factors: standard deviation of their normal
            initialisation. Non-negative ones are uniform in ``[0, init_stddev]``
            (``biased``), or scaled so that the initial ``p . q`` averages the
            mean rating (``pmf``).
        validation_fraction: Share of training ratings held out (each user's
            most recent ones) for early stopping when the split has no
            validation part.
        optimizer: The optimizer (default Adam, learning rate 1e-3).
        training: The training loop (default 30 epochs of batch 256, patience 3,
            early stopping on validation RMSE).
    """

    #: The ranking machinery's view of this model: a rating regressor whose
    #: examples need no history (one position is built and ignored).
    objective: ClassVar[str] = "rating"
    max_history: ClassVar[int] = 1

    variant: MFVariant = "biased"
    nonnegative: bool = False
    embedding_dim: int = 100
    l2: float = 0.02
    init_stddev: float = 0.1
    validation_fraction: float = 0.05
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=30, batch_size=256, patience=3)
    )

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Routes old flat spellings (``optimizer=sgd``) into the sub-configs."""
        return nest_flat_fields(data)

    def default_monitor(self) -> str:
        """Early stopping's metric when ``training.monitor`` is unset: validation RMSE."""
        return "rmse"

    def __post_init__(self) -> None:
        dim = self.embedding_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"MFConfig.embedding_dim: expected an integer >= 1, got {dim!r}")
        if not isinstance(self.nonnegative, bool):
            raise ValueError(f"MFConfig.nonnegative: expected true/false, got {self.nonnegative!r}")
        if not self.l2 >= 0.0:
            raise ValueError(f"MFConfig.l2: expected >= 0, got {self.l2!r}")
        if not self.init_stddev > 0.0:
            raise ValueError(f"MFConfig.init_stddev: expected > 0, got {self.init_stddev!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(
                "MFConfig.validation_fraction: expected 0 < validation_fraction < 1, "
                f"got {self.validation_fraction!r}"
            )


def _factor_initializer(config: MFConfig, rating_mean: float) -> keras.initializers.Initializer:
    """Normal(0, init_stddev); non-negative: uniform from 0 (see :class:`MFConfig`).

    A new instance per table: one unseeded instance gives every table it
    initialises the same values (user and item factors would start identical).
    """
    if not config.nonnegative:
        return keras.initializers.RandomNormal(stddev=config.init_stddev)
    high = config.init_stddev
    if config.variant == "pmf":  # E[p . q] = D * (high / 2)^2 = mean rating
        high = 2.0 * math.sqrt(max(rating_mean, 1e-3) / config.embedding_dim)
    return keras.initializers.RandomUniform(0.0, high)


class MatrixFactorization(TfrecModel):
    """Rating = mu + b_u + b_i + p_u . q_i (``biased``) or p_u . q_i (``pmf``).

    See the module docstring for the model, the penalty and the unknown-id fallback.

    Args:
        config: Hyper-parameters.
        num_users: User vocabulary size (with padding and OOV).
        num_items: Item vocabulary size (with padding and OOV).
        rating_mean: The mean training rating ``mu``.
        **kwargs: Passed to the Keras model (e.g. ``name``).

    Raises:
        ValueError: A vocabulary without a real id (size < 3).
    """

    def __init__(
        self,
        config: MFConfig,
        num_users: int,
        num_items: int,
        rating_mean: float,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        for name, size in (("num_users", num_users), ("num_items", num_items)):
            if size < NUM_RESERVED + 1:
                raise ValueError(
                    f"MatrixFactorization: {name}={size}; expected >= 3 (padding, OOV, one id)"
                )
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        constraint = keras.constraints.NonNeg() if config.nonnegative else None
        dim = config.embedding_dim
        self.user_factors = keras.layers.Embedding(
            num_users, dim, embeddings_initializer=_factor_initializer(config, rating_mean),
            embeddings_constraint=constraint, name="user_factors",
        )  # fmt: skip
        self.item_factors = keras.layers.Embedding(
            num_items, dim, embeddings_initializer=_factor_initializer(config, rating_mean),
            embeddings_constraint=constraint, name="item_factors",
        )  # fmt: skip
        self.use_biases = config.variant == "biased"
        if self.use_biases:
            self.user_bias = keras.layers.Embedding(
                num_users, 1, embeddings_initializer="zeros", name="user_bias"
            )
            self.item_bias = keras.layers.Embedding(
                num_items, 1, embeddings_initializer="zeros", name="item_bias"
            )
        self.global_mean = tf.Variable(
            float(rating_mean), trainable=False, dtype=tf.float32, name="global_mean"
        )
        self.known_users = tf.Variable(
            _reserved_unknown(num_users), trainable=False, name="known_users"
        )  # [U] 1.0 = has a factor and a bias
        self.known_items = tf.Variable(
            _reserved_unknown(num_items), trainable=False, name="known_items"
        )  # [I]
        self.task = RankingTask(objective="rating", name="rating_task")

    def mark_known(self, users: np.ndarray, items: np.ndarray) -> None:
        """Only these user/item indices (the training ratings') count as known.

        Every other id then predicts like an unknown one (module docstring):
        its row was never trained, so its random factor would only add noise.
        """
        for variable, ids, size in (
            (self.known_users, users, self.num_users),
            (self.known_items, items, self.num_items),
        ):
            flags = np.zeros(size, np.float32)
            index = np.asarray(ids, dtype=np.int64)
            flags[index[index >= NUM_RESERVED]] = 1.0
            variable.assign(flags)

    def _parts(
        self, features: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        """Scores ``[B, C]``, the gathered parameters, known flags ``[B, 1]`` and ``[B, C]``."""
        candidates = tf.cast(features["candidates"], tf.int32)  # [B, C]
        checks = [tf.debugging.assert_rank(candidates, 2, message="candidates must be [batch, C]")]
        user = features.get("user")
        if user is None:  # the ranking contract: no user = the unknown user
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
            user = tf.identity(user)  # [B]
        known_user = tf.gather(self.known_users, user)[:, None]  # [B, 1]
        known_item = tf.gather(self.known_items, candidates)  # [B, C]
        pair = known_user * known_item  # [B, C]
        params = {"p": self.user_factors(user), "q": self.item_factors(candidates)}
        dot = tf.einsum("bd,bcd->bc", params["p"], params["q"])  # [B, C]
        if self.use_biases:
            params["b_u"] = self.user_bias(user)[:, 0]  # [B]
            params["b_i"] = self.item_bias(candidates)[..., 0]  # [B, C]
            scores = (
                self.global_mean
                + known_user * params["b_u"][:, None]
                + known_item * params["b_i"]
                + pair * dot
            )
        else:
            scores = pair * dot + (1.0 - pair) * self.global_mean
        return scores, params, known_user, known_item

    def call(self, features: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Predicted ratings.

        Args:
            features: ``candidates`` int ``[B, C]`` and optional ``user`` int ``[B]``
                (absent = the unknown user); ``history`` and event signals are ignored.
            training: Unused (no dropout).

        Returns:
            float32 ``[B, C]`` predicted ratings.

        Raises:
            InvalidArgumentError: ``candidates`` is not 2-D, or ``user`` and
                ``candidates`` batch sizes differ.
        """
        return self._parts(features)[0]

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Mean squared error plus the per-rating L2 penalty (updating the RMSE metric).

        Args:
            features: Model features (see :meth:`call`) plus ``labels`` float ``[B, C]``.
            training: Training mode.

        Returns:
            Scalar loss: MSE + ``l2`` * mean over ratings of the squared norms of
            the biases and factors each rating touches.
        """
        scores, params, known_user, known_item = self._parts(features)
        labels = tf.cast(features["labels"], scores.dtype)  # [B, C]
        loss = self.task(labels=labels, predictions=scores, compute_metrics=True)
        if not self.config.l2:
            return loss
        per_rating = known_user * tf.reduce_sum(tf.square(params["p"]), -1)[:, None]  # [B, 1]
        per_rating = per_rating + known_item * tf.reduce_sum(tf.square(params["q"]), -1)
        if self.use_biases:
            per_rating += known_user * tf.square(params["b_u"])[:, None]
            per_rating += known_item * tf.square(params["b_i"])  # [B, C]
        return loss + self.config.l2 * tf.reduce_mean(per_rating)


def _reserved_unknown(size: int) -> np.ndarray:
    """Known flags ``[size]``: 0 for padding and OOV, 1 for every real id."""
    flags = np.ones(size, np.float32)
    flags[:NUM_RESERVED] = 0.0
    return flags
