"""MultiScenarioModel: one shared encoder, scenario TwoTowerModels, tf.switch_case per batch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.layers.scenario import ScenarioEncoder
from tfrec.models.multi_scenario import MultiScenarioModel, build_scenario_model
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.tasks.config import RetrievalLossConfig

CONFIG = RetrievalConfig(
    embedding_dim=4,
    encoder="transformer",
    max_history=3,
    num_layers=1,
    dropout=0.0,
    use_item_features=False,
    use_user_embedding=True,
)
# Two scenarios: "a" has 10 item indices (8 real items), "b" 7 (5 real items).
SIZES = {"a": (6, 10), "b": (5, 7)}
BATCH = {
    "user": tf.constant([2, 3]),
    "history": tf.constant([[0, 2, 3], [4, 5, 6]]),
    "target": tf.constant([[0, 3, 4], [5, 6, 2]]),
}


def _model(config: RetrievalConfig = CONFIG) -> MultiScenarioModel:
    keras.utils.set_random_seed(0)
    model = MultiScenarioModel(config)
    for name, (users, items) in SIZES.items():
        model.add_scenario(name, users, items)
    return model


def _refs(variables: list[tf.Variable]) -> set:
    return {v.ref() for v in variables}


def test_the_shared_encoder_variables_exist_once():
    model = _model()
    shared = _refs(model.encoder.trainable_variables)
    # One block: positions 1, two norms 2 x 2, attention q/k/v/o kernels and biases 8,
    # feed-forward 2 x 2, final norm 2 = 19.
    assert len(shared) == 19
    own = {}
    for name, scenario in model.scenarios.items():
        variables = _refs(scenario.trainable_variables)
        assert shared <= variables  # every scenario encodes with the same variables
        own[name] = variables - shared
        # item embedding, user embedding, scenario vector, LayerNorm gamma and beta
        assert len(own[name]) == 5
    assert not own["a"] & own["b"]
    # 19 shared + 5 + 5 own, each variable once.
    assert len(model.trainable_variables) == len(_refs(model.trainable_variables)) == 29


@pytest.mark.parametrize("loss, mean_expert", [("full", False), ("sampled", False), ("full", True)])
def test_a_batch_gets_the_loss_of_its_scenario_model(loss, mean_expert):
    config = dataclasses.replace(
        CONFIG, loss=RetrievalLossConfig(kind=loss, logq_correction=False), mean_expert=mean_expert
    )
    model = _model(config)
    if mean_expert:  # each scenario's own gate, not the even mix it starts from
        for i, scenario in enumerate(model.scenarios.values()):
            scenario.query_tower.encoder.gate_logits.assign([1.0 - i, i - 1.0])
    graph_loss = tf.function(model.compute_loss)
    for index, (name, (users, items)) in enumerate(SIZES.items()):
        # A standalone model as a scenario's sub-run rebuilds it (scenario_layers=True,
        # its own encoder), holding the scenario's weights: the same loss.
        standalone = TwoTowerModel(dataclasses.replace(config, scenario_layers=True), users, items)
        assert isinstance(standalone.query_tower.encoder, ScenarioEncoder)
        standalone(BATCH)
        standalone.set_weights(model.scenarios[name].get_weights())
        expected = float(standalone.compute_loss(BATCH))
        for scenario in (tf.constant(index), tf.constant([index, index])):  # scalar or [B]
            features = {**BATCH, "scenario": scenario}
            assert float(model.compute_loss(features)) == pytest.approx(expected, rel=1e-5)
            assert float(graph_loss(features)) == pytest.approx(expected, rel=1e-5)
    # The two scenarios' losses differ (different catalogues), so the branch matters.
    losses = [float(model.compute_loss({**BATCH, "scenario": tf.constant(i)})) for i in (0, 1)]
    assert abs(losses[0] - losses[1]) > 1e-3


def test_training_on_one_scenario_moves_the_shared_encoder_not_the_other_scenario():
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    own_a = [v.numpy().copy() for v in model.scenarios["a"].item_tower.trainable_variables]
    shared = [v.numpy().copy() for v in model.encoder.trainable_variables]
    own_b = [v.numpy().copy() for v in model.scenarios["b"].item_tower.trainable_variables]
    batches = tf.data.Dataset.from_tensors({**BATCH, "scenario": tf.constant([1, 1])}).repeat(3)
    history = model.fit(batches, epochs=1, verbose=0).history
    assert history["loss"][0] > 0  # the multi model's own running loss is reported
    after_a = model.scenarios["a"].item_tower.trainable_variables
    assert all(np.array_equal(x, v.numpy()) for x, v in zip(own_a, after_a, strict=True))
    after_b = model.scenarios["b"].item_tower.trainable_variables
    assert not all(np.array_equal(x, v.numpy()) for x, v in zip(own_b, after_b, strict=True))
    after = model.encoder.trainable_variables
    changed = [not np.array_equal(x, v.numpy()) for x, v in zip(shared, after, strict=True)]
    assert sum(changed) >= 5


def test_build_scenario_model_on_a_frozen_encoder_trains_only_its_own_parts():
    model = _model()
    model.encoder.trainable = False  # a new scenario adapted to the trained encoder
    new = build_scenario_model(CONFIG, model.encoder, num_users=4, num_items=9)
    assert new.config.scenario_layers and new.query_tower.encoder.encoder is model.encoder
    assert not _refs(new.trainable_variables) & _refs(model.encoder.weights)
    assert len(new.trainable_variables) == 5
    # With the mean expert the new scenario also trains its gate and the 2 expert norms.
    gated = build_scenario_model(
        dataclasses.replace(CONFIG, mean_expert=True), model.encoder, num_users=4, num_items=9
    )
    assert gated.query_tower.encoder.mean_expert
    assert not _refs(gated.trainable_variables) & _refs(model.encoder.weights)
    assert len(gated.trainable_variables) == 5 + 5


def test_errors_name_the_argument():
    model = _model()
    with pytest.raises(ValueError, match=r"add_scenario: name='a'; expected a new"):
        model.add_scenario("a", 5, 9)
    with pytest.raises(ValueError, match=r"name='x/y'"):
        model.add_scenario("x/y", 5, 9)
    with pytest.raises(ValueError, match=r"differs from the shared encoder's in \['embedding_dim'"):
        model.add_scenario("c", 5, 9, config=dataclasses.replace(CONFIG, embedding_dim=8))
    with pytest.raises(ValueError, match=r"features has no 'scenario'"):
        model.compute_loss(BATCH)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"scenario index >= 2"):
        model.compute_loss({**BATCH, "scenario": tf.constant(2)})
    with pytest.raises(ValueError, match=r"scenario 'c' is unknown"):
        model.scenario_index("c")
    assert model.scenario_index("b") == 1
    id_only = dataclasses.replace(CONFIG, encoder="none")
    with pytest.raises(ValueError, match=r"MultiScenarioModel: config.encoder='none'"):
        MultiScenarioModel(id_only)
    with pytest.raises(ValueError, match=r"config.encoder='none' \(the ID-only"):
        TwoTowerModel(id_only, 5, 9, encoder=model.encoder)
    with pytest.raises(ValueError, match=r"scenario_layers=True needs a history encoder"):
        RetrievalConfig(encoder="none", use_user_embedding=True, scenario_layers=True)
    # A scenario may read fewer items (2) than the shared encoder's 3 positions, on them ...
    shorter = dataclasses.replace(CONFIG, max_history=2, max_positions=3)
    assert model.add_scenario("short", 5, 9, config=shorter).config.max_history == 2
    with pytest.raises(ValueError, match=r"in \['encoder_positions'\]"):  # ... not on others
        model.add_scenario("c", 5, 9, config=dataclasses.replace(CONFIG, max_history=2))
    with pytest.raises(ValueError, match=r"max_positions=2; expected None or an integer >= "):
        dataclasses.replace(CONFIG, max_positions=2, max_history=3)
