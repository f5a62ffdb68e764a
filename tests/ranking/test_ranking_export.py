"""Ranking and combined recommender SavedModels: fresh-process parity, errors, layout."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from process_utils import run_fresh_child
from testing_utils import rotating_walks, train_tiny_ranker

from tfrec.data.splits import leave_one_out
from tfrec.data.vocab import IdVocabulary
from tfrec.export.ranking import export_ranking, export_recommender
from tfrec.export.schema import read_export_config
from tfrec.models.ranker_state import TrainedRanker
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.models.two_stage import RetrievalScorer, TwoStageRecommender

NUM_CANDIDATES = 4

RANKING_INPUTS = {
    "user_id": np.array(["u0", "nobody", "", "u3"], dtype=object),
    "history": np.array(
        [
            ["", "i1", "i2"],  # left padded
            ["i4", "unknown-item", ""],  # unknown id, right padded
            ["", "", ""],  # empty history, empty user id
            ["i7", "i0", "i5"],
        ],
        dtype=object,
    ),
    "candidates": np.array(
        [["i3", "i4"], ["i1", "no-such-item"], ["i2", "i6"], ["i0", ""]], dtype=object
    ),
}
RECOMMENDER_INPUTS = {
    "user_id": RANKING_INPUTS["user_id"],
    "history": RANKING_INPUTS["history"],
    "k": np.array([2, 4, 1, 3], dtype=np.int32),
}


@pytest.fixture(scope="module")
def models() -> tuple[TrainedRanker, TwoTowerModel, IdVocabulary]:
    # 8 users, 10 item indices
    trained, users, items = train_tiny_ranker(
        leave_one_out(rotating_walks()),
        num_candidates=NUM_CANDIDATES,
        interaction="attention",
        use_cross=True,
    )
    tf.keras.utils.set_random_seed(3)
    retrieval = TwoTowerModel(
        RetrievalConfig(embedding_dim=4, encoder="gru", max_history=3), users.size, items.size
    )
    return trained, retrieval, users


def _expected_ranking(trained: TrainedRanker) -> np.ndarray:
    features = {
        "user": trained.user_vocab.lookup(RANKING_INPUTS["user_id"]),
        "history": trained.item_vocab.lookup(RANKING_INPUTS["history"]),
        "candidates": trained.item_vocab.lookup(RANKING_INPUTS["candidates"]),
    }
    scores = trained.model(features, training=False).numpy()
    return np.where(features["candidates"] == 0, -np.inf, scores)  # "" candidate -> -inf


def _expected_recommender(
    trained: TrainedRanker, retrieval: TwoTowerModel, retrieval_users: IdVocabulary
) -> tuple[np.ndarray, np.ndarray]:
    pipeline = TwoStageRecommender(
        RetrievalScorer(retrieval), trained.model, num_candidates=NUM_CANDIDATES
    )
    features = {
        "user": trained.user_vocab.lookup(RECOMMENDER_INPUTS["user_id"]),
        "retrieval_user": retrieval_users.lookup(RECOMMENDER_INPUTS["user_id"]),
        "history": trained.item_vocab.lookup(RECOMMENDER_INPUTS["history"]),
    }
    items, scores = pipeline.recommend(features, int(RECOMMENDER_INPUTS["k"].max()))
    tokens = np.array(trained.item_vocab.all_tokens(), dtype=object)
    scores = scores.numpy()
    return np.where(np.isneginf(scores), "", tokens[items.numpy()]).astype(str), scores


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    job = json.loads(sys.argv[1])
    out = {}
    ranking = tf.saved_model.load(job["ranking"]).signatures["serving_default"]
    data = np.load(job["ranking_inputs"], allow_pickle=True)
    result = ranking(**{k: tf.constant(data[k].astype(str)) for k in data.files})
    out["ranking_scores"] = result["scores"].numpy()
    recommender = tf.saved_model.load(job["recommender"]).signatures["serving_default"]
    data = np.load(job["recommender_inputs"], allow_pickle=True)
    result = recommender(
        user_id=tf.constant(data["user_id"].astype(str)),
        history=tf.constant(data["history"].astype(str)),
        k=tf.constant(data["k"], tf.int32),
    )
    out["item_ids"] = result["item_ids"].numpy().astype(str)
    out["scores"] = result["scores"].numpy()
    np.savez(job["outputs"], **out)
    assert "tfrec" not in sys.modules, "the serving check must not import tfrec"
    """
)


@pytest.mark.slow
def test_exports_reload_in_a_fresh_process_with_the_same_outputs(models, tmp_path):
    trained, retrieval, users = models
    base = tmp_path / "models"
    ranking_dir = export_ranking(trained, base, extra_files={"metrics.json": "{}\n"})
    recommender_dir = export_recommender(retrieval, users, trained.item_vocab, trained, base)
    assert ranking_dir == base / "ranking" / "1"
    assert recommender_dir == base / "recommender" / "1"

    np.savez(tmp_path / "ranking_inputs.npz", **RANKING_INPUTS)
    np.savez(tmp_path / "recommender_inputs.npz", **RECOMMENDER_INPUTS)
    job = {
        "ranking": str(ranking_dir),
        "recommender": str(recommender_dir),
        "ranking_inputs": str(tmp_path / "ranking_inputs.npz"),
        "recommender_inputs": str(tmp_path / "recommender_inputs.npz"),
        "outputs": str(tmp_path / "outputs.npz"),
    }
    run_fresh_child(_CHILD, job, tmp_path)
    served = np.load(tmp_path / "outputs.npz")

    expected = _expected_ranking(trained)
    assert served["ranking_scores"].shape == (4, 2)
    np.testing.assert_allclose(served["ranking_scores"], expected, rtol=1e-5, atol=1e-6)
    assert np.isneginf(served["ranking_scores"][3, 1])  # the "" candidate
    assert np.isfinite(served["ranking_scores"][1, 1])  # unknown candidate: scored, no crash

    ids, scores = _expected_recommender(trained, retrieval, users)
    assert served["item_ids"].shape == (4, 4)  # K = max(k)
    np.testing.assert_array_equal(served["item_ids"], ids)
    np.testing.assert_allclose(served["scores"], scores, rtol=1e-5, atol=1e-6)
    for row, history in enumerate(RECOMMENDER_INPUTS["history"]):
        assert not set(served["item_ids"][row]) & (set(history) - {""})  # history excluded

    # Layout and assets.
    for directory, kind in ((ranking_dir, "ranking"), (recommender_dir, "recommender")):
        extra = directory / "assets.extra"
        config = read_export_config(directory)  # the one schema (tfrec.export.schema)
        assert (config["schema_version"], config["kind"]) == (1, kind)
        ranker = config["model_config"] if kind == "ranking" else config["model_config"]["ranking"]
        assert ranker["num_candidates"] == NUM_CANDIDATES
        assert config["ranker_data_spec"] == trained.spec.to_dict()
        assert config["num_real_items"] == trained.item_vocab.size - 2  # 2 reserved rows
        assert (extra / "item_vocab.txt").read_text().split() == trained.item_vocab.tokens
    recommender = read_export_config(recommender_dir)
    assert recommender["num_candidates"] == NUM_CANDIDATES
    assert recommender["vocabularies"]["retrieval_user"] == "retrieval_user_vocab.txt"
    assert "index" not in recommender and "num_candidates" not in read_export_config(ranking_dir)
    assert (ranking_dir / "assets.extra" / "metrics.json").read_text() == "{}\n"
    assert (recommender_dir / "assets.extra" / "retrieval_user_vocab.txt").is_file()

    # saved_model_cli lists both signatures.
    cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(cli), "show", "--dir", str(ranking_dir), "--all"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "signature_def['serving_default']" in shown
    for name in ("inputs['history']", "inputs['candidates']", "inputs['user_id']"):
        assert name in shown
    assert "outputs['scores']" in shown

    # Versions are never overwritten; the next export gets version 2.
    with pytest.raises(FileExistsError):
        export_ranking(trained, base, version=1)
    assert export_ranking(trained, base) == base / "ranking" / "2"


@pytest.mark.slow
def test_bad_requests_raise_invalid_argument(models, tmp_path):
    trained, retrieval, users = models
    ranking = tf.saved_model.load(str(export_ranking(trained, tmp_path)))
    serve = ranking.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="candidates must have one row"):
        serve(
            history=tf.constant([["i1"], ["i2"]]),
            candidates=tf.constant([["i3"]]),
            user_id=tf.constant(["u0", "u1"]),
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="history must have one row"):
        serve(
            history=tf.constant([["i1"]]),
            candidates=tf.constant([["i3"]]),
            user_id=tf.constant(["u0", "u1"]),
        )
    recommender = tf.saved_model.load(
        str(export_recommender(retrieval, users, trained.item_vocab, trained, tmp_path))
    )
    rec = recommender.signatures["serving_default"]
    history = tf.constant([["i1", "i2"]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be <= 4"):
        rec(user_id=tf.constant(["u0"]), history=history, k=tf.constant([5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be >= 1"):
        rec(user_id=tf.constant(["u0"]), history=history, k=tf.constant([0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must have one value"):
        rec(user_id=tf.constant(["u0"]), history=history, k=tf.constant([1, 2]))


@pytest.mark.slow  # the module fixture trains a ranker
def test_recommender_needs_the_same_item_vocabulary(models, tmp_path):
    trained, retrieval, users = models
    other = IdVocabulary([f"x{i}" for i in range(8)], name="item")
    with pytest.raises(ValueError, match="same item vocabulary"):
        export_recommender(retrieval, users, other, trained, tmp_path)
    assert not (tmp_path / "recommender").exists()  # nothing half-written
