"""Every custom Keras layer survives get_config -> from_config with the same outputs.

Each case builds a layer with NON-default config values on tiny inputs (vocab 10,
dim 4) and hands it to :func:`testing_utils.assert_layer_roundtrip`, which rebuilds
it from its JSON config, copies the weights across and compares the outputs. A
config key that is missing or ignored by ``__init__`` changes the weight shapes or
the outputs, so it fails here; :func:`test_every_layer_class_has_a_case` keeps the
list complete as layers are added.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import assert_layer_roundtrip

import tfrec.layers
import tfrec.tasks
from tfrec.layers.bert4rec import Bert4RecEncoder
from tfrec.layers.caser import CaserEncoder
from tfrec.layers.encoders import MeanEncoder, RNNEncoder, TransformerEncoder, get_encoder
from tfrec.layers.graph import GraphQueryTower, LightGCNPropagation, normalized_adjacency
from tfrec.layers.ranking import CandidateAttention, EventSignals
from tfrec.layers.scenario import ResidualAdapter, ScenarioEncoder
from tfrec.layers.towers import ItemTower, QueryTower
from tfrec.layers.user_tower import UserQueryTower
from tfrec.tasks.ranking import ListAUC, ListNDCG, RankingTask
from tfrec.tasks.retrieval import RetrievalTask

B, L, D = 2, 3, 4  # batch, history length, embedding size
NUM_ITEMS = 10  # item vocabulary (padding, OOV, 8 real items)
NUM_USERS = 8


def _normal(*shape: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(size=shape), tf.float32)


# Row 0 left padded (one real item less), row 1 full.
MASK = tf.constant([[False, True, True], [True, True, True]])
HISTORY = tf.constant([[0, 3, 5], [2, 9, 4]], tf.int32)
USERS = tf.constant([2, 7], tf.int32)


def _item_tower() -> ItemTower:
    genres = np.zeros((NUM_ITEMS, 3), np.float32)
    genres[2:, 0] = 1.0
    genres[3::2, 1] = 1.0
    genres[4::3, 2] = 1.0
    titles = np.zeros((NUM_ITEMS, 2), np.int32)
    titles[2:, 0] = np.arange(2, 10) % 4 + 1  # token ids 1..4
    titles[5:, 1] = 2
    return ItemTower(
        NUM_ITEMS, D, genre_table=genres, title_table=titles, title_vocab_size=5, l2=0.01
    )


# Each case: (class, () -> (layer, call args, call kwargs)).
Case = tuple[type, Callable[[], tuple[keras.layers.Layer, tuple, dict[str, Any]]]]

CASES: dict[str, Case] = {
    "mean_encoder": (
        MeanEncoder,
        lambda: (MeanEncoder(name="mean"), (_normal(B, L, D),), {"padding_mask": MASK}),
    ),
    "gru_encoder": (
        RNNEncoder,
        lambda: (
            RNNEncoder(D, cell="gru", dropout=0.1, name="gru"),
            (_normal(B, L, 3),),  # input size 3 != units 4
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "lstm_encoder": (
        RNNEncoder,
        lambda: (
            RNNEncoder(D, cell="lstm"),
            (_normal(B, L, D),),
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "transformer_encoder": (
        TransformerEncoder,
        lambda: (
            TransformerEncoder(D, max_length=2, num_layers=1, num_heads=2, dropout=0.1),
            (_normal(B, L, D),),  # L = 3 > max_length = 2: the last position is shared
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "caser_encoder": (
        CaserEncoder,
        lambda: (
            CaserEncoder(
                D, window=2, num_horizontal=3, num_vertical=2, dropout=0.1, activation="tanh"
            ),
            (_normal(B, L, 3),),
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "bert4rec_encoder": (  # next-item mode; masked mode: tests/layers/test_bert4rec.py
        Bert4RecEncoder,
        lambda: (
            Bert4RecEncoder(D, max_length=2, num_layers=1, num_heads=2, dropout=0.1),
            (_normal(B, L, D),),  # L = 3 > max_length = 2: the oldest item is dropped
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "lightgcn_propagation": (
        LightGCNPropagation,
        lambda: (
            LightGCNPropagation(NUM_USERS, NUM_ITEMS, D, num_layers=2, init_stddev=0.3),
            (
                normalized_adjacency(
                    np.array([2, 3, 3, 7]), np.array([4, 4, 9, 2]), NUM_USERS, NUM_ITEMS
                ),
            ),
            {},
        ),
    ),
    "graph_query_tower": (  # non-trainable tables: assign() fills them, the copy carries them
        GraphQueryTower,
        lambda: (
            GraphQueryTower(NUM_USERS, NUM_ITEMS, D).assign(
                _normal(NUM_USERS, D), _normal(NUM_ITEMS, D, seed=1), [0, 0, 1, 0, 0, 0, 0, 1]
            ),
            ({"user": USERS, "history": HISTORY},),
            {},
        ),
    ),
    "scenario_encoder": (
        ScenarioEncoder,
        lambda: (
            ScenarioEncoder(get_encoder("gru", D, L, dropout=0.1), epsilon=1e-3),
            (_normal(B, L, D),),
            {"padding_mask": MASK, "training": False},
        ),
    ),
    "residual_adapter": (
        ResidualAdapter,
        lambda: (ResidualAdapter(3, up_initializer="glorot_uniform"), (_normal(B, L, D),), {}),
    ),
    "event_signals": (
        EventSignals,
        lambda: (
            EventSignals(
                use_rating=True,
                use_time=True,
                rating_mean=3.5,
                rating_scale=1.1,
                log_dt_mean=2.0,
                log_dt_scale=0.5,
                signal_dropout=0.2,
            ),
            (MASK,),
            {
                "history_rating": tf.constant([[0.0, 4.0, 0.0], [5.0, 1.0, 3.0]]),
                "history_log_dt": tf.constant([[0.0, 1.5, 2.5], [0.5, 3.0, 4.0]]),
                "training": False,
            },
        ),
    ),
    "candidate_attention": (
        CandidateAttention,
        lambda: (CandidateAttention(D), (_normal(B, 5, 3), _normal(B, L, D, seed=1), MASK), {}),
    ),
    "item_tower": (ItemTower, lambda: (_item_tower(), (HISTORY,), {})),
    "query_tower": (
        QueryTower,
        lambda: (
            QueryTower(
                _item_tower(),
                get_encoder("transformer", D, max_length=L, num_layers=1, dropout=0.0),
                num_users=NUM_USERS,
                context_dim=2,
                l2=0.01,
            ),
            ({"history": HISTORY, "user": USERS, "context": _normal(B, L, 2)},),
            {"training": False},
        ),
    ),
    "user_query_tower": (
        UserQueryTower,
        lambda: (UserQueryTower(NUM_USERS, D, l2=0.01), ({"user": USERS},), {"training": False}),
    ),
    "retrieval_task_full": (
        RetrievalTask,
        lambda: (
            RetrievalTask(loss="full", temperature=0.5, remove_accidental_hits=False),
            (_normal(3, D), _normal(NUM_ITEMS, D, seed=1), tf.constant([2, 5, 9])),
            {},
        ),
    ),
    "retrieval_task_sampled": (
        RetrievalTask,
        lambda: (
            RetrievalTask(loss="sampled", temperature=0.25, num_hard_negatives=1),
            (_normal(3, D), _normal(3, D, seed=1), tf.constant([2, 5, 5])),
            {},
        ),
    ),
    "ranking_task_rating": (
        RankingTask,
        lambda: (
            RankingTask(objective="rating", name="rating_task"),
            (),
            {"labels": tf.constant([[4.0], [2.0]]), "predictions": tf.constant([[3.0], [2.5]])},
        ),
    ),
    "ranking_task_next_item": (
        RankingTask,
        lambda: (
            RankingTask(objective="next_item", loss="bce", ndcg_k=2),
            (),
            {
                "labels": tf.constant([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
                "predictions": tf.constant([[0.2, 0.9, -0.3], [0.1, 0.4, 0.3]]),
            },
        ),
    ),
    "list_auc": (
        ListAUC,
        lambda: (
            ListAUC(name="list_auc"),
            (tf.constant([[1.0, 0.0, 0.0]]), tf.constant([[0.5, 0.9, 0.1]])),
            {},
        ),
    ),
    "list_ndcg": (
        ListNDCG,
        lambda: (
            ListNDCG(k=1),  # the positive is ranked 2nd: NDCG@1 = 0, NDCG@10 = 1/log2(3)
            (tf.constant([[1.0, 0.0, 0.0]]), tf.constant([[0.5, 0.9, 0.1]])),
            {},
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_round_trip_with_weights(case: str) -> None:
    keras.utils.set_random_seed(0)
    _, make = CASES[case]
    layer, args, kwargs = make()
    assert_layer_roundtrip(layer, *args, rtol=1e-5, atol=1e-6, **kwargs)


def _layer_classes() -> set[type]:
    """Every public Keras layer class defined in ``tfrec.layers`` and ``tfrec.tasks`` modules.

    Private classes are bases (``tasks.ranking._ListMean``), never built on their
    own: their code runs in their subclasses' cases.
    """
    found: set[type] = set()
    for package in (tfrec.layers, tfrec.tasks):
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for name, obj in inspect.getmembers(module, inspect.isclass):
                own = obj.__module__ == module.__name__ and not name.startswith("_")
                if own and issubclass(obj, keras.layers.Layer):
                    found.add(obj)
    return found


def test_every_layer_class_has_a_case() -> None:
    classes = _layer_classes()
    # The discovery itself works: these are layers (metrics are layers in tf_keras).
    assert {MeanEncoder, QueryTower, RankingTask, RetrievalTask, ListNDCG} <= classes
    covered = {cls for cls, _ in CASES.values()}
    missing = sorted(cls.__qualname__ for cls in classes - covered)
    assert not missing, f"add a round-trip case for {missing}"


def test_round_trip_fails_when_a_config_value_is_lost() -> None:
    # A config that drops ``rating_mean`` (3.5 -> default 0.0) must be caught.
    class Forgetful(EventSignals):
        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            del config["rating_mean"]
            return config

    try:
        keras.saving.register_keras_serializable("tfrec_test")(Forgetful)
        layer = Forgetful(rating_mean=3.5)
        with pytest.raises(AssertionError, match="Forgetful: output 0"):
            assert_layer_roundtrip(layer, MASK, history_rating=tf.constant([[0, 4, 2], [5, 1, 3]]))
    finally:
        keras.saving.get_custom_objects().pop("tfrec_test>Forgetful", None)


def test_round_trip_fails_when_weights_are_not_copied() -> None:
    # A layer whose set_weights does nothing: the clone keeps its own random weights.
    class NoCopy(CandidateAttention):
        def set_weights(self, weights: list[np.ndarray]) -> None:
            del weights

    try:
        keras.saving.register_keras_serializable("tfrec_test")(NoCopy)
        layer = NoCopy(D)
        with pytest.raises(AssertionError, match="NoCopy: output 0"):
            assert_layer_roundtrip(layer, _normal(B, 5, 3), _normal(B, L, D, seed=1), MASK)
    finally:
        keras.saving.get_custom_objects().pop("tfrec_test>NoCopy", None)
