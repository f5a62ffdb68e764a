"""MatrixFactorization: hand-computed predictions, penalty, fallbacks, constraints, config."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfrec.models.mf import MatrixFactorization, MFConfig
from tfrec.training.optimizers import make_optimizer

# Vocabularies: users 0 (padding), 1 (OOV), 2, 3; items 0, 1 (OOV), 2, 3, 4. Two factors.
USER_FACTORS = np.array([[9, 9], [7, 7], [1, 2], [0, -1]], np.float32)  # rows 0/1 never used
ITEM_FACTORS = np.array([[9, 9], [7, 7], [0.5, 0.25], [1, 1], [2, 0]], np.float32)
USER_BIAS = np.array([[9], [7], [0.5], [-0.25]], np.float32)
ITEM_BIAS = np.array([[9], [7], [0.1], [-0.2], [0.3]], np.float32)
MU = 3.0


def _model(variant: str = "biased", l2: float = 0.0) -> MatrixFactorization:
    """A model with the weights above (the biased variant's biases too)."""
    model = MatrixFactorization(MFConfig(variant=variant, embedding_dim=2, l2=l2), 4, 5, MU)
    model({"user": np.array([2]), "candidates": np.array([[2]])})  # builds the layers
    model.user_factors.set_weights([USER_FACTORS])
    model.item_factors.set_weights([ITEM_FACTORS])
    if variant == "biased":
        model.user_bias.set_weights([USER_BIAS])
        model.item_bias.set_weights([ITEM_BIAS])
    return model


def _scores(
    model: MatrixFactorization, users: list[int], candidates: list[list[int]]
) -> np.ndarray:
    features = {"user": np.array(users, np.int32), "candidates": np.array(candidates, np.int32)}
    return model(features).numpy()


def test_biased_prediction_is_mu_plus_biases_plus_dot():
    scores = _scores(_model(), [2, 3, 1, 2], [[3, 2], [2, 4], [4, 2], [1, 0]])
    expected = [
        # user 2 (p=[1,2], b=0.5): item 3: 3 + 0.5 - 0.2 + (1 + 2) = 6.3
        #                          item 2: 3 + 0.5 + 0.1 + (0.5 + 0.5) = 4.6
        [6.3, 4.6],
        # user 3 (p=[0,-1], b=-0.25): item 2: 3 - 0.25 + 0.1 - 0.25 = 2.6
        #                             item 4: 3 - 0.25 + 0.3 + 0 = 3.05
        [2.6, 3.05],
        # OOV user (row 1 ignored): mu + b_i: 3 + 0.3 = 3.3; 3 + 0.1 = 3.1
        [3.3, 3.1],
        # user 2 with the OOV item and padding: mu + b_u = 3.5 (both)
        [3.5, 3.5],
    ]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_pmf_prediction_is_the_dot_product_and_mu_for_unknown_pairs():
    model = _model("pmf")
    assert not hasattr(model, "user_bias")
    scores = _scores(model, [2, 3, 1], [[3, 1], [2, 4], [2, 3]])
    # user 2 . item 3 = 3; OOV item -> mu = 3; user 3 . item 2 = -0.25; . item 4 = 0;
    # OOV user -> mu for every item.
    np.testing.assert_allclose(scores, [[3.0, 3.0], [-0.25, 0.0], [3.0, 3.0]], rtol=1e-6)


def test_ids_without_training_ratings_fall_back_like_unknown_ones():
    model = _model()
    model.mark_known(users=np.array([2, 2]), items=np.array([2, 3, 1]))  # user 3, item 4: unseen
    scores = _scores(model, [2, 3], [[4, 3], [2, 3]])
    # user 2, item 4 (unseen): 3 + 0.5 = 3.5; user 2, item 3 unchanged: 6.3
    # user 3 (unseen), item 2: 3 + 0.1 = 3.1; item 3: 3 - 0.2 = 2.8
    np.testing.assert_allclose(scores, [[3.5, 6.3], [3.1, 2.8]], rtol=1e-6)


def test_loss_is_mse_plus_the_per_rating_penalty():
    model = _model(l2=0.1)
    features = {
        "user": np.array([2, 3], np.int32),
        "candidates": np.array([[3], [2]], np.int32),
        "labels": np.array([[6.0], [3.6]], np.float32),
    }
    loss = float(model.compute_loss(features))
    # predictions 6.3 and 2.6: squared errors 0.09 and 1.0, MSE 0.545.
    # penalty terms: user 2/item 3: |p|^2 5 + |q|^2 2 + b_u^2 0.25 + b_i^2 0.04 = 7.29;
    # user 3/item 2: 1 + 0.3125 + 0.0625 + 0.01 = 1.385; mean 4.3375; x 0.1 = 0.43375.
    assert loss == pytest.approx(0.545 + 0.43375, rel=1e-5)


def _step_down(nonnegative: bool, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Factors after one SGD step (lr 1) towards ratings of -10, from all factors 0.01.

    Every error is >= 10 (pmf: 0.0004 + 10; biased: 3.0004 + 10), so the MSE
    gradient of a factor is >= (2 / 4 ratings) * 10 * 0.01 = 0.05 per rating that
    touches it: one step takes every touched factor from 0.01 to below -0.04
    unconstrained, and clipped to exactly 0 when non-negative.
    """
    config = MFConfig(variant=variant, nonnegative=nonnegative, embedding_dim=2, l2=0.0)
    config.optimizer.name, config.optimizer.learning_rate = "sgd", 1.0
    model = MatrixFactorization(config, 4, 5, MU)
    model({"user": np.array([2]), "candidates": np.array([[2]])})  # builds the layers
    model.user_factors.set_weights([np.full((4, 2), 0.01, np.float32)])
    model.item_factors.set_weights([np.full((5, 2), 0.01, np.float32)])
    batch = {
        "user": np.array([2, 2, 3, 3], np.int32),
        "candidates": np.array([[2], [3], [2], [4]], np.int32),
        "labels": np.full((4, 1), -10.0, np.float32),
    }
    model.compile(make_optimizer(config.optimizer))
    model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    return model.user_factors.get_weights()[0][2:], model.item_factors.get_weights()[0][2:]


@pytest.mark.parametrize("variant", ["biased", "pmf"])
def test_nonnegative_factors_stay_nonnegative_after_training(variant):
    users, items = _step_down(nonnegative=True, variant=variant)
    np.testing.assert_array_equal(users, 0.0)  # pushed below 0, clipped to exactly 0
    np.testing.assert_array_equal(items, 0.0)
    users, items = _step_down(nonnegative=False, variant=variant)
    assert (users < 0).all() and (items < 0).all(), (users, items)  # the same steps, signed


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("embedding_dim", 0, "MFConfig.embedding_dim: expected an integer >= 1, got 0"),
        ("l2", -0.1, "MFConfig.l2: expected >= 0, got -0.1"),
        ("init_stddev", 0.0, "MFConfig.init_stddev: expected > 0, got 0.0"),
        ("validation_fraction", 1.0, "MFConfig.validation_fraction: expected 0 < "),
        ("variant", "svd", "MFConfig.variant='svd'; expected one of ['biased', 'pmf']"),
        ("nonnegative", "yes", "MFConfig.nonnegative: expected true/false, got 'yes'"),
    ],
)
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MFConfig(**{field: value})


def test_config_json_round_trip_and_flat_training_fields():
    config = MFConfig.from_dict(
        {"variant": "pmf", "nonnegative": True, "epochs": 7, "optimizer": "sgd"}
    )
    assert config.training.epochs == 7 and config.optimizer.name == "sgd"
    assert MFConfig.from_json(config.to_json()) == config
    assert "objective" not in config.to_dict()  # class constants, not saved fields


def test_a_vocabulary_without_a_real_id_is_refused():
    with pytest.raises(ValueError, match="num_items=2; expected >= 3"):
        MatrixFactorization(MFConfig(), 4, 2, MU)
