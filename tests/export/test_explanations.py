"""The ``explain`` signature: leave-one-out explanations of retrieval and recommender exports.

The hand model (:func:`testing_utils.hand_mean_model`) scores ``mean(history
vectors) . item vector``, so every contribution below is a score drop computed
by hand from :data:`testing_utils.HAND_ITEM_VECTORS`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from process_utils import run_fresh_child
from testing_utils import (
    fit_one_step,
    hand_mean_model,
    rotating_walks,
    tiny_batch,
    tiny_vocabs,
    train_tiny_ranker,
)

from tfrec.data.splits import leave_one_out
from tfrec.export.explanations import resolve_explain_top
from tfrec.export.ranking import export_recommender
from tfrec.export.retrieval import export_retrieval
from tfrec.export.schema import read_export_config
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.serving.client import RecommenderClient
from tfrec.serving.model_config import ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions

INPUTS = {
    "user_id": np.array(["u0", "u1", "u2", ""], dtype=object),
    "history": np.array(
        [
            ["", "i0", "i1", "i2"],
            ["", "", "i0", ""],  # right padding
            ["i1", "zzz", "i0", "i1"],  # unknown id, repeated item
            ["", "", "", ""],  # empty history
        ],
        dtype=object,
    ),
    "k": np.array([2, 2, 2, 1], dtype=np.int32),
}
# Row 0: query = mean(i0, i1, i2) = [1/3, 1/3, 1/3, 0] -> i4 = [3, 1, 0, 0] scores 4/3,
# i5 = [0, 1, 2, 0] scores 1. Without i0: query [0, .5, .5, 0] -> i4 0.5 (drop 5/6), i5 1.5
# (drop -1/2); without i1: [.5, 0, .5, 0] -> i4 1.5 (-1/6), i5 1 (0); without i2:
# [.5, .5, 0, 0] -> i4 2 (-2/3), i5 .5 (+1/2).
# Row 1: query = i0 -> i4 3, i7 = [1, 0, 0, 1] 1; without i0 the query is 0: drops 3 and 1;
# one history item, so the other two slots are "" / 0.
# Row 2: i1 counts twice: query [1/3, 2/3, 0, 0] -> i4 5/3, i5 2/3. Without i0: query i1
# -> i4 1 (drop 2/3), i5 1 (-1/3); without both i1: query i0 -> i4 3 (-4/3), i5 0 (+2/3).
# Row 3: no history, nothing explains anything.
EXPECTED_ITEMS = [
    [["i0", "i1", "i2"], ["i2", "i1", "i0"]],
    [["i0", "", ""], ["i0", "", ""]],
    [["i0", "i1", ""], ["i1", "i0", ""]],
]
EXPECTED_SCORES = [
    [[5 / 6, -1 / 6, -2 / 3], [1 / 2, 0, -1 / 2]],
    [[3, 0, 0], [1, 0, 0]],
    [[2 / 3, -4 / 3, 0], [2 / 3, -1 / 3, 0]],
]


def _call(signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = signature(
        user_id=tf.constant(inputs["user_id"].astype(str)),
        history=tf.constant(inputs["history"].astype(str)),
        k=tf.constant(inputs["k"], tf.int32),
    )
    return {
        name: value.numpy().astype(str) if value.dtype == tf.string else value.numpy()
        for name, value in out.items()
    }


@pytest.fixture(scope="module")
def hand_export(tmp_path_factory) -> Path:
    model, users, items = hand_mean_model()
    return export_retrieval(model, users, items, tmp_path_factory.mktemp("hand"))


@pytest.fixture(scope="module")
def hand_outputs(hand_export) -> dict[str, np.ndarray]:
    return _call(tf.saved_model.load(str(hand_export)).signatures["explain"], INPUTS)


def test_resolve_explain_top_defaults_and_errors():
    assert resolve_explain_top(None, encodes_history=True) == 3
    assert resolve_explain_top(None, encodes_history=False) == 0
    assert resolve_explain_top(0, encodes_history=False) == 0
    assert resolve_explain_top(5, encodes_history=True) == 5
    with pytest.raises(ValueError, match=r"explain_top=-1; expected >= 0"):
        resolve_explain_top(-1, encodes_history=True)
    with pytest.raises(ValueError, match=r"explain_top=True; expected an integer"):
        resolve_explain_top(True, encodes_history=True)
    with pytest.raises(ValueError, match=r"ID-only model \(encoder='none'\) reads no history"):
        resolve_explain_top(2, encodes_history=False)


def test_contributions_are_the_hand_computed_score_drops(hand_outputs):
    assert hand_outputs["item_ids"][:3].tolist() == [["i4", "i5"], ["i4", "i7"], ["i4", "i5"]]
    np.testing.assert_allclose(hand_outputs["scores"][:3], [[4 / 3, 1], [3, 1], [5 / 3, 2 / 3]])
    assert hand_outputs["explanation_items"].shape == (4, 2, 3)
    assert hand_outputs["explanation_items"][:3].tolist() == EXPECTED_ITEMS
    np.testing.assert_allclose(
        hand_outputs["explanation_scores"][:3], EXPECTED_SCORES, rtol=1e-5, atol=1e-6
    )
    # the empty history explains nothing; padding, "zzz" (OOV) never appear anywhere
    assert (hand_outputs["explanation_items"][3] == "").all()
    assert (hand_outputs["explanation_scores"][3] == 0).all()
    assert set(hand_outputs["explanation_items"].ravel()) == {"i0", "i1", "i2", ""}


def test_serving_default_of_an_explaining_export_is_unchanged(hand_export, hand_outputs):
    loaded = tf.saved_model.load(str(hand_export))
    assert sorted(loaded.signatures) == ["explain", "serving_default"]
    plain = _call(loaded.signatures["serving_default"], INPUTS)
    assert set(plain) == {"item_ids", "scores"}
    np.testing.assert_array_equal(plain["item_ids"], hand_outputs["item_ids"])
    np.testing.assert_array_equal(plain["scores"], hand_outputs["scores"])
    config = read_export_config(hand_export)
    assert "explanation_items string [B, K, 3]" in config["signatures"]["explain"]


def test_explain_top_sets_m_and_zero_removes_the_signature(tmp_path):
    model, users, items = hand_mean_model()
    one = export_retrieval(model, users, items, tmp_path, model_name="one", explain_top=1)
    out = _call(tf.saved_model.load(str(one)).signatures["explain"], INPUTS)
    assert out["explanation_items"][:3, :, 0].tolist() == [["i0", "i2"], ["i0", "i0"], ["i0", "i1"]]
    none = export_retrieval(model, users, items, tmp_path, model_name="none", explain_top=0)
    assert list(tf.saved_model.load(str(none)).signatures) == ["serving_default"]
    assert "signatures" not in read_export_config(none)


def test_empty_batch_and_zero_width_history(hand_export):
    explain = tf.saved_model.load(str(hand_export)).signatures["explain"]
    empty = explain(
        user_id=tf.constant([], tf.string),
        history=tf.zeros([0, 0], tf.string),
        k=tf.constant([], tf.int32),
    )
    assert empty["explanation_items"].shape == (0, 1, 3)
    new_user = explain(
        user_id=tf.constant(["u0"]), history=tf.zeros([1, 0], tf.string), k=tf.constant([2])
    )
    assert (new_user["explanation_items"].numpy() == b"").all()
    assert (new_user["explanation_scores"].numpy() == 0).all()


def _index(vocab, token: str) -> int:
    return int(vocab.lookup(np.array([token], dtype=object))[0])


def _without(history: np.ndarray, item: int) -> np.ndarray:
    return np.where(history == item, 0, history)


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_top_explaining_item_is_the_one_whose_removal_drops_the_score_most(tmp_path, encoder):
    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4, encoder=encoder, max_history=4, num_heads=2, use_user_embedding=True
    )
    tf.keras.utils.set_random_seed(5)
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    export = export_retrieval(model, users, items, tmp_path, explain_top=4)
    inputs = {**INPUTS, "k": np.array([3, 3, 3, 3], np.int32)}
    out = _call(tf.saved_model.load(str(export)).signatures["explain"], inputs)
    history = items.lookup(inputs["history"])  # [B, L]; zzz -> 1 (OOV, not read)
    vectors = model.candidate_embeddings().numpy()
    checked = 0
    for row in range(3):
        user = tf.constant([users.lookup(np.array([inputs["user_id"][row]], object))[0]])

        def score(hist: np.ndarray, user: tf.Tensor = user) -> np.ndarray:
            return model.query_embeddings(user, tf.constant(hist[None])).numpy()[0] @ vectors.T

        full = score(history[row])
        real = sorted({int(i) for i in history[row] if i > 1})
        for slot, item_id in enumerate(out["item_ids"][row]):
            item = _index(items, item_id)
            drops = {i: full[item] - score(_without(history[row], i))[item] for i in real}
            expected = sorted(real, key=lambda i, drops=drops: -drops[i])  # largest drop first
            got = [_index(items, t) for t in out["explanation_items"][row, slot] if t]
            assert got == expected, f"row {row}, {item_id}: {got} vs drops {drops}"
            np.testing.assert_allclose(
                out["explanation_scores"][row, slot, : len(real)],
                [drops[i] for i in expected],
                rtol=1e-4,
                atol=1e-6,
            )
            checked += 1
    assert checked == 9


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    job = json.loads(sys.argv[1])
    data = np.load(job["inputs"], allow_pickle=True)
    explain = tf.saved_model.load(job["export_dir"]).signatures["explain"]
    out = explain(
        user_id=tf.constant(data["user_id"].astype(str)),
        history=tf.constant(data["history"].astype(str)),
        k=tf.constant(data["k"], tf.int32),
    )
    np.savez(job["outputs"], **{name: value.numpy() for name, value in out.items()})
    assert "tfrec" not in sys.modules, "the serving check must not import tfrec"
    """
)


def test_explanations_reload_in_a_fresh_process_without_tfrec(hand_export, tmp_path):
    np.savez(tmp_path / "inputs.npz", **INPUTS)
    job = {
        "export_dir": str(hand_export),
        "inputs": str(tmp_path / "inputs.npz"),
        "outputs": str(tmp_path / "outputs.npz"),
    }
    run_fresh_child(_CHILD, job, tmp_path)
    served = np.load(tmp_path / "outputs.npz", allow_pickle=True)
    assert served["explanation_items"][:3].astype(str).tolist() == EXPECTED_ITEMS
    np.testing.assert_allclose(
        served["explanation_scores"][:3], EXPECTED_SCORES, rtol=1e-5, atol=1e-6
    )


def test_local_server_serves_explain_by_signature_name(hand_export):
    server = ModelServer(
        [ModelEntry("retrieval", str(hand_export.parent))],
        ServerOptions(host="127.0.0.1", port=0),
    ).start()
    try:
        target = f"127.0.0.1:{server.port}"
        with RecommenderClient(target, "retrieval", signature_name="explain") as client:
            out = client.predict(
                {
                    "user_id": INPUTS["user_id"][:3],
                    "history": INPUTS["history"][:3],
                    "k": INPUTS["k"][:3],
                }
            )
        with RecommenderClient(target, "retrieval") as client:
            plain = client.predict({name: value[:3] for name, value in INPUTS.items()})
    finally:
        server.stop(grace=1.0)
    assert out["explanation_items"].astype(str).tolist() == EXPECTED_ITEMS
    np.testing.assert_allclose(out["explanation_scores"], EXPECTED_SCORES, rtol=1e-5, atol=1e-6)
    assert set(plain) == {"item_ids", "scores"}  # serving_default: no explanations


def test_ivf_export_explains_like_brute_force(tmp_path, hand_outputs):
    model, users, items = hand_mean_model()
    export = export_retrieval(
        model, users, items, tmp_path, index="ivf", num_partitions=2, nprobe=2
    )
    out = _call(tf.saved_model.load(str(export)).signatures["explain"], INPUTS)
    # every partition probed: the same items, so the same explanations (ties of row 3 aside)
    assert out["item_ids"][:3].tolist() == hand_outputs["item_ids"][:3].tolist()
    assert out["explanation_items"][:3].tolist() == EXPECTED_ITEMS
    np.testing.assert_allclose(out["explanation_scores"][:3], EXPECTED_SCORES, rtol=1e-5, atol=1e-6)


def test_id_only_model_has_no_explanations_and_refuses_them(tmp_path):
    model, users, items = hand_mean_model("none")
    with pytest.raises(ValueError, match=r"explain_top=3: an ID-only model \(encoder='none'\)"):
        export_retrieval(model, users, items, tmp_path, explain_top=3)
    export = export_retrieval(model, users, items, tmp_path)  # default: no explain signature
    assert list(tf.saved_model.load(str(export)).signatures) == ["serving_default"]


@pytest.mark.slow
def test_recommender_explains_final_items_by_retrieval_score_drops(tmp_path):
    trained, users, items = train_tiny_ranker(leave_one_out(rotating_walks()), num_candidates=4)
    tf.keras.utils.set_random_seed(3)
    retrieval = TwoTowerModel(
        RetrievalConfig(embedding_dim=4, encoder="gru", max_history=3), users.size, items.size
    )
    export = export_recommender(retrieval, users, items, trained, tmp_path, explain_top=2)
    inputs = {
        "user_id": np.array(["u0", "u3"], dtype=object),
        "history": np.array([["i1", "i2", "i3"], ["", "i0", "i5"]], dtype=object),
        "k": np.array([3, 3], np.int32),
    }
    out = _call(tf.saved_model.load(str(export)).signatures["explain"], inputs)
    assert out["explanation_items"].shape == (2, 3, 2)
    vectors = retrieval.candidate_embeddings().numpy()
    for row in range(2):
        history = items.lookup(inputs["history"][row : row + 1])  # [1, L]
        user = tf.constant(users.lookup(inputs["user_id"][row : row + 1]))
        full = retrieval.query_embeddings(user, tf.constant(history)).numpy()[0] @ vectors.T
        for slot, item_id in enumerate(out["item_ids"][row]):
            item = _index(items, item_id)
            for cause, contribution in zip(
                out["explanation_items"][row, slot],
                out["explanation_scores"][row, slot],
                strict=True,
            ):
                without = tf.constant(_without(history, _index(items, cause)))
                masked = retrieval.query_embeddings(user, without).numpy()[0] @ vectors.T
                np.testing.assert_allclose(contribution, full[item] - masked[item], atol=1e-5)
            drops = out["explanation_scores"][row, slot]
            assert drops[0] >= drops[1]
    config = read_export_config(export)
    assert "[B, K, 2]" in config["signatures"]["explain"]
    id_only = TwoTowerModel(
        RetrievalConfig(embedding_dim=4, encoder="none", use_user_embedding=True),
        users.size,
        items.size,
    )
    with pytest.raises(ValueError, match="ID-only model"):
        export_recommender(id_only, users, items, trained, tmp_path, explain_top=2)
