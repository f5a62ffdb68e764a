"""Requests without a history ([B, 0]) and empty batches (B = 0) on the exported SavedModels.

Issue 9, defect 1: a ``[B, 0]`` history (the documented cold-start request of a
brand-new user) failed inside the SavedModel with "Reduction axis 0 is empty",
and so did a ``B = 0`` request with a ``[0, 0]`` history. Every check calls the
loaded ``serving_default`` signature, the graph TF Serving runs.
"""

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import fit_one_step, rotating_walks, tiny_batch, tiny_vocabs, train_tiny_ranker

from tfrec.data.splits import leave_one_out
from tfrec.export.ranking import export_ranking, export_recommender
from tfrec.export.retrieval import export_retrieval
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel

USERS = ["u1", "nobody"]  # a known user and an unknown one (OOV row of the user embedding)


def _strings(shape):
    return tf.constant(np.zeros(shape, dtype=object).astype(bytes), tf.string)


def _retrieve(serve, users, history, k):
    out = serve(user_id=tf.constant(users, tf.string), history=history, k=tf.constant(k, tf.int32))
    return out["item_ids"], out["scores"]


@pytest.fixture(scope="module", params=["transformer", "lstm", "mean", "none"])
def retrieval(request, tmp_path_factory):
    """An exported retrieval model with a user embedding, per encoder ("none" = ID-only)."""
    users, items = tiny_vocabs()
    config = RetrievalConfig(
        embedding_dim=4, max_history=4, num_heads=2, encoder=request.param, use_user_embedding=True
    )
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    path = export_retrieval(model, users, items, tmp_path_factory.mktemp("retrieval"))
    return model, users, items, tf.saved_model.load(str(path)).signatures["serving_default"]


def test_no_history_gives_the_top_k_of_the_user_vector(retrieval):
    model, users, items, serve = retrieval
    ids, scores = _retrieve(serve, USERS, _strings((2, 0)), [3, 8])
    assert ids.dtype == tf.string and scores.dtype == tf.float32 and ids.shape == (2, 8)
    # No history: the encoders output zeros, so the query is the user vector and nothing is
    # excluded. Reference: user embedding @ candidate vectors, reserved rows 0/1 left out.
    user_vectors = model.query_tower._users.embeddings.numpy()[users.lookup(np.array(USERS))]
    expected = user_vectors @ model.candidate_embeddings().numpy()[2:].T  # [2, 8 real items]
    order = np.argsort(-expected, axis=1, kind="stable")
    np.testing.assert_array_equal(ids.numpy().astype(str), np.array(items.tokens)[order])
    # Scores are ~1e-3 (fresh weights); a score near 0 differs by ~1e-10 with the float32
    # summation order (oneDNN), so a relative bound alone fails there: atol 1e-8 too.
    want = np.take_along_axis(expected, order, 1)
    np.testing.assert_allclose(scores.numpy(), want, rtol=1e-5, atol=1e-8)


def test_no_history_equals_an_all_padding_history(retrieval):
    *_, serve = retrieval
    empty = _retrieve(serve, USERS, _strings((2, 0)), [3, 5])
    for length in (1, 4):
        padded = _retrieve(serve, USERS, _strings((2, length)), [3, 5])
        np.testing.assert_array_equal(empty[0].numpy(), padded[0].numpy())
        np.testing.assert_allclose(empty[1].numpy(), padded[1].numpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("length", [0, 3])
def test_empty_batch_gives_zero_rows(retrieval, length):
    *_, serve = retrieval
    ids, scores = _retrieve(serve, np.zeros(0, bytes), _strings((0, length)), np.zeros(0))
    # K = max(k) over no values is 1 (the contract): [0, 1] outputs, nothing in them.
    assert ids.shape == (0, 1) and ids.dtype == tf.string
    assert scores.shape == (0, 1) and scores.dtype == tf.float32


def test_no_history_and_no_user_embedding_scores_every_item_zero(tmp_path):
    # Query = zero vector (no history, no user embedding): every item scores 0 and
    # top_k breaks ties by the lowest index, i.e. vocabulary order i0, i1, i2.
    users, items = tiny_vocabs()
    config = RetrievalConfig(embedding_dim=4, max_history=4, encoder="gru")
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    serve = tf.saved_model.load(str(export_retrieval(model, users, items, tmp_path)))
    ids, scores = _retrieve(serve.signatures["serving_default"], ["u0"], _strings((1, 0)), [3])
    assert ids.numpy().astype(str).tolist() == [["i0", "i1", "i2"]]
    assert scores.numpy().tolist() == [[0.0, 0.0, 0.0]]


@pytest.fixture(scope="module", params=["attention", "concat"])
def ranking(request, tmp_path_factory):
    """Exported ranking and combined recommender models (ranker interaction per param)."""
    trained, users, items = train_tiny_ranker(
        leave_one_out(rotating_walks()), interaction=request.param
    )
    retrieval_model = TwoTowerModel(
        RetrievalConfig(embedding_dim=4, encoder="gru", max_history=3), users.size, items.size
    )
    base = tmp_path_factory.mktemp("ranking")
    ranker = tf.saved_model.load(str(export_ranking(trained, base)))
    combined = export_recommender(retrieval_model, users, items, trained, base)
    recommender = tf.saved_model.load(str(combined))
    return (
        trained,
        ranker.signatures["serving_default"],
        recommender.signatures["serving_default"],
    )


def test_ranking_without_history_scores_like_the_eager_model(ranking):
    trained, serve, _ = ranking
    candidates = tf.constant([["i1", "i2", ""], ["i3", "no-such-item", "i0"]])
    scores = serve(history=_strings((2, 0)), candidates=candidates, user_id=tf.constant(USERS))
    scores = scores["scores"].numpy()
    features = {
        "user": trained.user_vocab.lookup(np.array(USERS)),
        "history": np.zeros((2, 1), np.int32),  # one padding column: no history
        "candidates": trained.item_vocab.lookup(candidates.numpy().astype(str)),
    }
    expected = trained.model(features, training=False).numpy()
    expected[0, 2] = -np.inf  # the "" candidate
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    padded = serve(history=_strings((2, 3)), candidates=candidates, user_id=tf.constant(USERS))
    np.testing.assert_allclose(scores, padded["scores"].numpy(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("length", "num_candidates"), [(0, 2), (0, 0), (3, 2)])
def test_ranking_empty_batch(ranking, length, num_candidates):
    _, serve, _ = ranking
    out = serve(
        history=_strings((0, length)),
        candidates=_strings((0, num_candidates)),
        user_id=_strings((0,)),
    )["scores"]
    assert out.shape == (0, num_candidates) and out.dtype == tf.float32


def test_recommender_without_history_equals_an_all_padding_history(ranking):
    _, _, serve = ranking
    empty = _retrieve(serve, USERS, _strings((2, 0)), [2, 4])
    assert empty[0].shape == (2, 4) and np.all(np.isfinite(empty[1].numpy()))
    for length in (1, 3):
        padded = _retrieve(serve, USERS, _strings((2, length)), [2, 4])
        np.testing.assert_array_equal(empty[0].numpy(), padded[0].numpy())
        np.testing.assert_allclose(empty[1].numpy(), padded[1].numpy(), rtol=1e-6, atol=1e-8)
    assert len(set(empty[0].numpy()[0])) == 4  # 4 distinct real items, nothing excluded


@pytest.mark.parametrize("length", [0, 3])
def test_recommender_empty_batch(ranking, length):
    _, _, serve = ranking
    ids, scores = _retrieve(serve, np.zeros(0, bytes), _strings((0, length)), np.zeros(0))
    assert ids.shape == (0, 1) and ids.dtype == tf.string
    assert scores.shape == (0, 1) and scores.dtype == tf.float32
