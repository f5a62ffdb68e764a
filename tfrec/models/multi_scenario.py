"""One retrieval model for several scenarios (datasets): a shared encoder, own catalogues.

Architecture (S scenarios, D = embedding_dim)::

    shared history encoder E  (get_encoder: the transformer/GRU/...; the large part)
    scenario s:  TwoTowerModel whose query tower encodes with ScenarioEncoder(E)
                 (own item embeddings = own ItemTower, own scenario vector and output
                 LayerNorm, own user embedding if any) and whose softmax runs over
                 its own catalogue

Every scenario is a complete :class:`~tfrec.models.retrieval.TwoTowerModel`, so
it evaluates and exports exactly like a single-dataset model (and carries the
shared encoder's weights). Only ``E``'s variables are shared; they exist once.

Training batches come from one scenario each: ``features["scenario"]`` (int, a
scalar or ``[B]`` of equal values) selects that scenario's ``compute_loss``
with ``tf.switch_case``. Batches of different scenarios are interleaved in the
stream (:func:`tfrec.training.multi_scenario.mixed_dataset` draws the next batch's
scenario with configurable weights via ``tf.data.Dataset.sample_from_datasets``).
The other scenarios' variables get zero gradients on that step (Adam's moments
of them decay); their weight penalties (``l2``) apply at every step. The train
step is not XLA-compiled (TF 2.21's XLA fails on the Case op's gradient with
recurrent encoders; the ``multi_scenario`` config refuses ``jit_compile``).

A new scenario on a trained (possibly frozen: ``model.encoder.trainable = False``)
shared encoder is :meth:`MultiScenarioModel.add_scenario`, or
:func:`build_scenario_model` for a standalone TwoTowerModel on that encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrec.data.item_features import ItemFeatureTables
from tfrec.layers.encoders import NO_ENCODER
from tfrec.models.base import TfrecModel
from tfrec.models.retrieval import (
    RetrievalConfig,
    TwoTowerModel,
    build_history_encoder,
    scenario_encoder,
)

#: The batch feature that names the scenario of a training batch (its index).
SCENARIO_FEATURE = "scenario"
#: The settings of the shared history encoder: every scenario's config must have the same
#: (each scenario reads its own ``max_history`` items; the encoder's positions are shared).
SHARED_ENCODER_FIELDS = (
    "encoder", "embedding_dim", "encoder_positions", "num_layers", "num_heads", "dropout",
)  # fmt: skip


def _check_history_encoder(owner: str, config: RetrievalConfig) -> None:
    if config.encoder == NO_ENCODER:
        raise ValueError(
            f"{owner}: config.encoder={config.encoder!r}; expected a history encoder "
            "(mean, gru, lstm, transformer): the scenarios share the history encoder"
        )


def build_scenario_model(
    config: RetrievalConfig,
    shared_encoder: keras.layers.Layer,
    num_users: int,
    num_items: int,
    *,
    item_features: ItemFeatureTables | None = None,
    item_log_probs: np.ndarray | None = None,
) -> TwoTowerModel:
    """A scenario's TwoTowerModel whose query tower runs on ``shared_encoder``.

    The model's config has ``scenario_layers=True``, so a retrieval run saved
    from it reloads on its own (:class:`~tfrec.training.retrieval.RetrievalExperiment`
    rebuilds the same layers around a fresh encoder and loads the weights). The
    model is built (its variables exist) on return.

    Args:
        config: The scenario's hyper-parameters (a history encoder; the shared
            encoder must have been built from the same encoder settings).
        shared_encoder: The encoder layer the scenarios share (not a ScenarioEncoder).
        num_users: The scenario's user vocabulary size.
        num_items: The scenario's item vocabulary size I.
        item_features: The scenario's content tables (when ``config.use_item_features``).
        item_log_probs: ``[I]`` log item probabilities for logQ correction.

    Returns:
        The built TwoTowerModel.

    Raises:
        ValueError: ``config.encoder="none"`` or bad sizes.
    """
    _check_history_encoder("build_scenario_model", config)
    config = dataclasses.replace(config, scenario_layers=True)
    model = TwoTowerModel(
        config,
        num_users=num_users,
        num_items=num_items,
        item_features=item_features,
        item_log_probs=item_log_probs,
        encoder=scenario_encoder(shared_encoder, config),
    )
    features = {
        "user": tf.zeros([1], tf.int32),  # [B]
        "history": tf.fill([1, 1], 2),  # [B, L]: one real item
    }
    if config.context_dim:
        features["context"] = tf.zeros([1, 1, config.context_dim])  # [B, L, C]
    # Create every variable now, never inside a tf.switch_case branch: the query side
    # and the candidate tower (a separate one with share_item_embeddings=False).
    model(features, training=False)
    model.candidate_embeddings()
    return model


class MultiScenarioModel(TfrecModel):
    """Scenario TwoTowerModels sharing one history encoder; a batch trains its scenario.

    Args:
        config: The shared hyper-parameters (encoder settings; each scenario's
            default config). Must have a history encoder.
        encoder: The shared encoder layer (default: built from ``config``, see
            :func:`~tfrec.models.retrieval.build_history_encoder` without the
            scenario layers).
        name: The Keras model name.

    Raises:
        ValueError: ``config.encoder="none"``.
    """

    def __init__(
        self,
        config: RetrievalConfig,
        encoder: keras.layers.Layer | None = None,
        name: str = "multi_scenario",
    ):
        super().__init__(name=name)
        _check_history_encoder("MultiScenarioModel", config)
        self.config = dataclasses.replace(config, scenario_layers=False)
        self.encoder = encoder if encoder is not None else build_history_encoder(self.config)
        self.scenarios: dict[str, TwoTowerModel] = {}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """This model's running loss means only (each scenario model has its own, unused)."""
        return list(self._loss_means.values())

    @property
    def scenario_names(self) -> list[str]:
        """The scenario names in the order of their ``features["scenario"]`` index."""
        return list(self.scenarios)

    def scenario_index(self, name: str) -> int:
        """The ``features["scenario"]`` value of scenario ``name``.

        Raises:
            ValueError: Unknown ``name``.
        """
        if name not in self.scenarios:
            raise ValueError(f"scenario {name!r} is unknown; expected one of {self.scenario_names}")
        return self.scenario_names.index(name)

    def add_scenario(
        self,
        name: str,
        num_users: int,
        num_items: int,
        *,
        item_features: ItemFeatureTables | None = None,
        item_log_probs: np.ndarray | None = None,
        config: RetrievalConfig | None = None,
    ) -> TwoTowerModel:
        """Adds scenario ``name`` (index ``len(scenario_names)``) on the shared encoder.

        Args:
            name: The scenario name (a dataset name), unique, without ``/``.
            num_users: Its user vocabulary size.
            num_items: Its item vocabulary size I.
            item_features: Its content tables (when the config uses item features).
            item_log_probs: ``[I]`` log item probabilities for logQ correction.
            config: Its hyper-parameters (default: the shared config); the
                encoder settings must be the shared ones.

        Returns:
            The scenario's built TwoTowerModel (also ``self.scenarios[name]``).

        Raises:
            ValueError: A duplicate or malformed name, or other encoder settings.
        """
        if not name or "/" in name or name in self.scenarios:
            raise ValueError(
                f"add_scenario: name={name!r}; expected a new non-empty name without '/' "
                f"(scenarios: {self.scenario_names})"
            )
        config = self.config if config is None else config
        differ = [f for f in SHARED_ENCODER_FIELDS if getattr(config, f) != getattr(self.config, f)]
        if differ:
            raise ValueError(
                f"add_scenario({name!r}): config differs from the shared encoder's in {differ}"
            )
        model = build_scenario_model(
            config, self.encoder, num_users, num_items,
            item_features=item_features, item_log_probs=item_log_probs,
        )  # fmt: skip
        self.scenarios[name] = model
        return model

    def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """The loss of a one-scenario batch under its scenario's model.

        Args:
            features: The model input contract of every scenario (``"user"``,
                ``"history"``, ``"target"``, ...) plus ``"scenario"``: int, a
                scalar or ``[B]`` (equal values; the first is read), the index in
                :attr:`scenario_names`.
            training: Enables dropout.

        Returns:
            Scalar float32 loss of ``scenarios[scenario_names[index]].compute_loss``.

        Raises:
            ValueError: No scenario yet, or no ``"scenario"`` feature.
        """
        if not self.scenarios:
            raise ValueError("MultiScenarioModel.compute_loss: no scenario; call add_scenario")
        if SCENARIO_FEATURE not in features:
            raise ValueError(
                f"MultiScenarioModel.compute_loss: features has no {SCENARIO_FEATURE!r} "
                f"(keys {sorted(features)}); expected the batch's scenario index"
            )
        index = tf.cast(features[SCENARIO_FEATURE], tf.int32)
        if index.shape.rank != 0:
            index = tf.reshape(index, [-1])[0]  # [B] of equal values -> scalar
        count = len(self.scenarios)
        checks = [
            tf.debugging.assert_non_negative(index, message="scenario index < 0"),
            tf.debugging.assert_less(index, count, message=f"scenario index >= {count}"),
        ]
        with tf.control_dependencies(checks):
            index = tf.identity(index)
        inputs = {k: v for k, v in features.items() if k != SCENARIO_FEATURE}

        def branch(model: TwoTowerModel) -> Callable[[], tf.Tensor]:
            return lambda: tf.cast(model.compute_loss(inputs, training=training), tf.float32)

        return tf.switch_case(index, [branch(model) for model in self.scenarios.values()])
