"""Shared model-test harness (cf. Merlin's ``testing_utils.model_test``).

``model_test`` fits a model for one step on tiny data, exports it, and checks that
the SavedModel, loaded in a FRESH Python process that never imports tfrec, returns
the same top-K item ids (identical) and scores (allclose) as the eager model.
Several exports can be checked in one subprocess with :func:`check_in_fresh_process`
to pay the TensorFlow import once. :func:`assert_layer_roundtrip` checks that a
custom layer rebuilt from its config, with the weights copied across, gives the
same outputs.

Usage from a test (``tests/`` is on ``sys.path`` under pytest's rootdir conftest)::

    from testing_utils import model_test, tiny_vocabs, tiny_batch
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tf_keras as keras
from process_utils import run_fresh_child

from tfrec.cli.common import apply_overrides
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.splits import Split
from tfrec.data.vocab import IdVocabulary, build_vocabularies
from tfrec.export.retrieval import export_retrieval
from tfrec.models.ranker_state import TrainedRanker
from tfrec.models.ranking import RankingConfig
from tfrec.models.retrieval import TwoTowerModel
from tfrec.tasks.config import RankingLossConfig
from tfrec.training.config import TrainingConfig
from tfrec.training.optimizers import make_optimizer
from tfrec.training.ranking import train_ranker


def _numpy_outputs(outputs: Any) -> list[np.ndarray]:
    """Flattens a (nested) layer output into a list of numpy arrays."""
    return [np.asarray(value) for value in tf.nest.flatten(outputs)]


def _json_round_trip(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config))


def assert_layer_roundtrip(
    layer: keras.layers.Layer,
    *args: Any,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    **kwargs: Any,
) -> keras.layers.Layer:
    """Asserts that ``layer`` is rebuilt from its config with the same outputs.

    In the spirit of keras-rs ``TestCase.run_layer_test``: builds ``layer`` by
    calling it as ``layer(*args, **kwargs)``, rebuilds it with
    ``type(layer).from_config`` from its JSON round-tripped ``get_config()``,
    builds the clone on the same inputs, copies the weights across with
    ``set_weights(get_weights())`` and compares the outputs. Also checks that
    the class is registered under its serialised name (nested configs and
    SavedModels find it), that the clone's config is the original's, that both
    have the same weight names and shapes, and, when the layer has trainable
    weights, that the clone's output differs BEFORE the copy (so the comparison
    really depends on the copied weights).

    Args:
        layer: A fresh (unbuilt) layer with non-default config values.
        *args: Positional call arguments (pass ``training=False`` with dropout).
        rtol: Relative tolerance of the output comparison.
        atol: Absolute tolerance of the output comparison.
        **kwargs: Keyword call arguments.

    Returns:
        The clone, built and holding the original's weights.
    """
    cls = type(layer)
    registered = keras.saving.get_registered_name(cls)
    assert keras.saving.get_registered_object(registered) is cls, (
        f"{cls.__name__} is not registered as a Keras serializable ({registered!r})"
    )
    expected = _numpy_outputs(layer(*args, **kwargs))  # builds the layer
    config = _json_round_trip(layer.get_config())
    clone = cls.from_config(config)
    assert _json_round_trip(clone.get_config()) == config, f"{cls.__name__}: config differs"
    before_copy = _numpy_outputs(clone(*args, **kwargs))  # builds the clone
    assert [(w.name, tuple(w.shape)) for w in clone.weights] == [
        (w.name, tuple(w.shape)) for w in layer.weights
    ], f"{cls.__name__}: the rebuilt layer has other weights"
    if layer.trainable_weights:
        assert any(
            a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol)
            for a, b in zip(before_copy, expected, strict=True)
        ), f"{cls.__name__}: outputs do not depend on the (random) weights; a vacuous check"
    clone.set_weights(layer.get_weights())
    actual = _numpy_outputs(clone(*args, **kwargs))
    assert len(actual) == len(expected), f"{cls.__name__}: output structure differs"
    for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
        np.testing.assert_allclose(
            got, want, rtol=rtol, atol=atol, err_msg=f"{cls.__name__}: output {i}"
        )
    return clone


NUM_USERS = 6  # vocabulary sizes 8 (users) and 10 (items: 8 real) with padding + OOV
NUM_ITEMS = 8


def successor_walks(num_users: int = 100, length: int = 8, seed: int = 0) -> Interactions:
    """Each user walks the cycle i -> i + 1 (mod NUM_ITEMS) from a random start.

    The next item is planted: it is always the successor of the last one.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        start = int(rng.integers(NUM_ITEMS))
        for t in range(length):
            rows.append((f"u{user}", f"i{(start + t) % NUM_ITEMS}", 1_000 + 60 * t, np.nan))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return Interactions.from_frame(frame, name="successor", has_timestamps=True)


def rotating_walks(num_users: int = 6, length: int = 5) -> Interactions:
    """User ``u{u}`` sees item ``i{(u + t) % NUM_ITEMS}`` at time ``100 * t``, ``t < length``.

    Deterministic (no seed): every user walks the item cycle from its own offset.
    """
    rows = [
        (f"u{u}", f"i{(u + t) % NUM_ITEMS}", 100 * t, np.nan)
        for u in range(num_users)
        for t in range(length)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])
    return Interactions.from_frame(frame, has_timestamps=True)


def train_tiny_ranker(
    split: Split, **overrides: Any
) -> tuple[TrainedRanker, IdVocabulary, IdVocabulary]:
    """Trains a tiny next-item ranker for one epoch on ``split``.

    The vocabularies cover every part of ``split``. The config has dimension 4
    everywhere, histories of 3, 2 training and 3 evaluation negatives and 4
    candidates; ``overrides`` replace any :class:`RankingConfig` field (flat names of
    sub-config fields, e.g. ``num_negatives``, are routed as ``--set`` does).

    Returns:
        The trained ranker, the user vocabulary and the item vocabulary.
    """
    config = RankingConfig(
        objective="next_item",
        embedding_dim=4,
        lstm_units=4,
        mlp_layers=[4],
        max_history=3,
        eval_negatives=3,
        num_candidates=4,
        training=TrainingConfig(epochs=1),
        loss=RankingLossConfig(num_negatives=2),
    )
    config = apply_overrides(config, overrides)  # flat names route to the sub-configs
    users, items = build_vocabularies(concat_interactions(*split.parts().values()))
    trained = train_ranker(split, config, user_vocab=users, item_vocab=items)
    return trained, users, items


def tiny_vocabs() -> tuple[IdVocabulary, IdVocabulary]:
    """User vocab ``u0..u5`` (indices 2..7) and item vocab ``i0..i7`` (indices 2..9)."""
    users = IdVocabulary([f"u{i}" for i in range(NUM_USERS)], name="user")
    items = IdVocabulary([f"i{i}" for i in range(NUM_ITEMS)], name="item")
    return users, items


def tiny_batch(length: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of the model input contract: 6 users, left-padded histories, all positions."""
    rng = np.random.default_rng(seed)
    rows = NUM_USERS
    history = np.zeros((rows, length), np.int32)
    target = np.zeros((rows, length), np.int32)
    for row in range(rows):
        size = 1 + row % length
        seq = rng.choice(np.arange(2, 2 + NUM_ITEMS), size=size + 1, replace=False)
        history[row, length - size :] = seq[:-1]
        target[row, length - size :] = seq[1:]
    users = np.arange(2, 2 + rows, dtype=np.int32)
    return {"user": users, "history": history, "target": target}


def serving_inputs() -> dict[str, np.ndarray]:
    """String requests covering padding, right padding, unknown ids and an empty history."""
    return {
        "user_id": np.array(["u0", "u3", "nobody", "", "u5"], dtype=object),
        "history": np.array(
            [
                ["", "i1", "i2", "i3"],  # left padded
                ["i4", "i0", "", ""],  # right padded
                ["i7", "unknown-item", "i2", ""],  # unknown id in the middle
                ["", "", "", ""],  # empty history, empty user id
                ["i1", "i1", "i6", "i5"],  # repeated item
            ],
            dtype=object,
        ),
        "k": np.array([3, 5, 8, 1, 2], dtype=np.int32),
    }


@dataclasses.dataclass
class ExportCase:
    """One exported model and the eager model's answers to ``inputs``."""

    name: str
    export_dir: Path
    inputs: dict[str, np.ndarray]
    expected_ids: np.ndarray  # [B, K] str
    expected_scores: np.ndarray  # [B, K] float32


def fit_one_step(model: TwoTowerModel, batch: dict[str, np.ndarray]) -> float:
    """Compiles the model and runs one optimisation step; returns the loss."""
    model.compile(make_optimizer(model.config.optimizer))
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    return float(logs["loss"][0])


def eager_top_k(
    model: TwoTowerModel,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    inputs: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-K computed with the in-memory model and numpy.

    Scores come from ``model.score``; history items, padding and OOV are
    excluded; slots that cannot be filled get ``""`` and ``-inf``.
    """
    users = user_vocab.lookup(inputs["user_id"])
    history = item_vocab.lookup(inputs["history"])
    scores = model.score(tf.constant(users), tf.constant(history)).numpy()  # [B, I]
    rows = np.arange(len(users))[:, None]
    scores[rows, history] = -np.inf
    scores[:, :2] = -np.inf
    top = int(inputs["k"].max())
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    values = np.take_along_axis(scores, order, axis=1)
    tokens = np.array(item_vocab.all_tokens(), dtype=object)
    ids = np.where(np.isneginf(values), "", tokens[order]).astype(object)
    return ids, values.astype(np.float32)


def export_case(
    name: str,
    model: TwoTowerModel,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    base_dir: Path,
    *,
    inputs: dict[str, np.ndarray] | None = None,
) -> ExportCase:
    """Exports ``model`` under ``base_dir/name`` and records the eager answers."""
    inputs = serving_inputs() if inputs is None else inputs
    export_dir = export_retrieval(model, user_vocab, item_vocab, base_dir, model_name=name)
    ids, scores = eager_top_k(model, user_vocab, item_vocab, inputs)
    return ExportCase(name, export_dir, inputs, ids, scores)


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    jobs = json.loads(sys.argv[1])
    for job in jobs:
        data = np.load(job["inputs"], allow_pickle=True)
        loaded = tf.saved_model.load(job["export_dir"])
        serve = loaded.signatures["serving_default"]
        out = serve(
            user_id=tf.constant(data["user_id"].astype(str)),
            history=tf.constant(data["history"].astype(str)),
            k=tf.constant(data["k"], tf.int32),
        )
        np.savez(
            job["outputs"],
            item_ids=out["item_ids"].numpy().astype(str),
            scores=out["scores"].numpy(),
        )
    assert "tfrec" not in sys.modules, "the serving check must not import tfrec"
    print("checked", len(jobs), "exports")
    """
)


def check_in_fresh_process(cases: Sequence[ExportCase], work_dir: Path) -> None:
    """Loads every export in ONE new Python process (no tfrec) and compares outputs.

    Raises:
        AssertionError: The subprocess failed, imported tfrec, or an output differs
            (item ids must be identical, scores allclose).
    """
    jobs = []
    for i, case in enumerate(cases):
        inputs_file = work_dir / f"inputs-{i}.npz"
        np.savez(inputs_file, **case.inputs)
        jobs.append(
            {
                "export_dir": str(case.export_dir),
                "inputs": str(inputs_file),
                "outputs": str(work_dir / f"outputs-{i}.npz"),
            }
        )
    run_fresh_child(_CHILD, jobs, work_dir)
    for case, job in zip(cases, jobs, strict=True):
        served = np.load(job["outputs"])
        np.testing.assert_array_equal(
            served["item_ids"], case.expected_ids.astype(str), err_msg=f"{case.name}: item_ids"
        )
        np.testing.assert_allclose(
            served["scores"],
            case.expected_scores,
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"{case.name}: scores",
        )


def model_test(
    model: TwoTowerModel,
    tmp_path: Path,
    name: str = "retrieval",
    batch: dict[str, np.ndarray] | None = None,
    fresh_process: bool = True,
) -> ExportCase:
    """Fit one step, export, (optionally) reload in a fresh process and compare.

    Args:
        model: A TwoTowerModel built for :func:`tiny_vocabs` sizes.
        tmp_path: Scratch directory (exports go to ``tmp_path / "models"``).
        name: Model name of the export.
        batch: Training batch (default :func:`tiny_batch`).
        fresh_process: Check the export in a subprocess now; pass False to
            collect cases and check them together with :func:`check_in_fresh_process`.

    Returns:
        The :class:`ExportCase`.
    """
    user_vocab, item_vocab = tiny_vocabs()
    batch = tiny_batch(model.config.max_history) if batch is None else batch
    loss = fit_one_step(model, batch)
    assert np.isfinite(loss), f"{name}: training loss {loss}"
    case = export_case(name, model, user_vocab, item_vocab, tmp_path / "models")
    if fresh_process:
        check_in_fresh_process([case], tmp_path)
    return case


#: The repository root (holds ``tfrec/``, ``benchmarks/`` and ``tests/``).
REPO_ROOT = Path(__file__).resolve().parents[1]


def import_benchmark(name: str) -> ModuleType:
    """Imports ``benchmarks.<name>`` from the repository root.

    ``benchmarks`` is a package at the repository root, which the pytest binary
    does not put on ``sys.path`` (and ``tests/benchmarks/`` would otherwise shadow
    it as a namespace package).
    """
    import importlib

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"benchmarks.{name}")


def raises_data_error(fn, *needles: str) -> str:
    """Runs ``fn``, expects a DataError whose message holds every needle; returns it."""
    from tfrec.data.interactions import DataError

    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


#: Item vectors of :func:`hand_mean_model` (rows 0/1: padding, OOV), items i0..i7.
HAND_ITEM_VECTORS = np.array(
    [
        [0, 0, 0, 0],  # padding
        [0, 0, 0, 0],  # OOV
        [1, 0, 0, 0],  # i0
        [0, 1, 0, 0],  # i1
        [0, 0, 1, 0],  # i2
        [0, 0, 0, 1],  # i3
        [3, 1, 0, 0],  # i4
        [0, 1, 2, 0],  # i5
        [-1, 0, 0, 2],  # i6
        [1, 0, 0, 1],  # i7
    ],
    dtype=np.float32,
)


def hand_mean_model(
    encoder: str = "mean",
) -> tuple[TwoTowerModel, IdVocabulary, IdVocabulary]:
    """A :func:`tiny_vocabs` model whose scores are easy by hand (explanation tests).

    The mean encoder (no user embedding, no item features, ``max_history=4``) with
    item vectors :data:`HAND_ITEM_VECTORS`: query = mean of the history's item
    vectors, score = query . item vector. ``encoder="none"`` gives the ID-only model.
    """
    from tfrec.models.retrieval import RetrievalConfig

    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4,
        encoder=encoder,
        max_history=4,
        use_item_features=False,
        use_user_embedding=encoder == "none",
    )
    model = TwoTowerModel(config, users.size, items.size)
    model.candidate_embeddings()  # builds the item tower
    model.item_tower.weights[0].assign(HAND_ITEM_VECTORS)
    return model, users, items
