import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from testing_utils import (
    eager_top_k,
    fit_one_step,
    serving_inputs,
    tiny_batch,
    tiny_vocabs,
)

from tfrec.export.retrieval import export_retrieval
from tfrec.export.schema import read_export_config
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel


@pytest.fixture(scope="module")
def trained():
    users, items = tiny_vocabs()
    config = RetrievalConfig(embedding_dim=4, max_history=4, num_heads=2, use_user_embedding=True)
    model = TwoTowerModel(config, users.size, items.size)
    fit_one_step(model, tiny_batch(4))
    return model, users, items


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, users, items = trained
    base = tmp_path_factory.mktemp("serving")
    path = export_retrieval(
        model,
        users,
        items,
        base,
        assets_extra={"tf_serving_warmup_requests": b"\x00warm"},
        extra_files={"metrics.json": '{"ndcg@10": 0.5}'},
    )
    return path, tf.saved_model.load(str(path)).signatures["serving_default"]


def _call(serve, user_id, history, k):
    out = serve(
        user_id=tf.constant(user_id, tf.string),
        history=tf.constant(history, tf.string),
        k=tf.constant(k, tf.int32),
    )
    return out["item_ids"].numpy().astype(str), out["scores"].numpy()


def test_layout_and_assets_extra(exported, trained):
    path, _ = exported
    model, users, items = trained
    assert path.name == "1" and path.parent.name == "retrieval"
    extra = path / "assets.extra"
    config = read_export_config(path)  # the one schema (tfrec.export.schema)
    assert (config["schema_version"], config["kind"]) == (1, "retrieval")
    assert config["vocabulary_sizes"] == {"users": users.size, "items": items.size}
    assert config["num_real_items"] == items.size - 2  # padding and OOV rows are reserved
    assert config["vocabularies"] == {"user": "user_vocab.txt", "item": "item_vocab.txt"}
    assert config["signature"]["name"] == "serving_default"
    assert sorted(config["signature"]["outputs"]) == ["item_ids", "scores"]
    assert config["experiment_config"] is None  # exported outside a run
    assert RetrievalConfig.from_dict(config["model_config"]) == model.config
    assert (extra / "item_vocab.txt").read_text().split("\n")[:-1] == items.tokens
    assert (extra / "user_vocab.txt").read_text().split("\n")[:-1] == users.tokens
    assert (extra / "tf_serving_warmup_requests").read_bytes() == b"\x00warm"
    assert json.loads((extra / "metrics.json").read_text()) == {"ndcg@10": 0.5}


def test_same_top_k_as_eager_model(exported, trained):
    # OOV user ids, unknown / empty history entries, right padding: no crash, same answers.
    _, serve = exported
    model, users, items = trained
    inputs = serving_inputs()
    ids, scores = _call(
        serve, inputs["user_id"].astype(str), inputs["history"].astype(str), inputs["k"]
    )
    expected_ids, expected_scores = eager_top_k(model, users, items, inputs)
    np.testing.assert_array_equal(ids, expected_ids.astype(str))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert ids.shape == (5, 8)  # K = max(k)


def test_history_items_are_excluded_and_unfillable_slots_are_empty(exported):
    _, serve = exported
    # 8 items, 3 distinct in the history, k = 8: 5 real answers then 3 empty slots.
    ids, scores = _call(serve, ["u1"], [["i0", "i5", "i0", "i2"]], [8])
    assert set(ids[0, :5]) == {"i1", "i3", "i4", "i6", "i7"}
    assert list(ids[0, 5:]) == ["", "", ""]
    assert np.all(np.isneginf(scores[0, 5:])) and np.all(np.isfinite(scores[0, :5]))
    assert np.all(np.diff(scores[0, :5]) <= 0)  # best first


def test_right_padding_and_unknown_ids_equal_the_clean_history(exported):
    _, serve = exported
    clean = _call(serve, ["u2"], [["", "", "i3", "i4"]], [4])
    messy = _call(serve, ["u2"], [["i3", "nope", "i4", ""]], [4])
    np.testing.assert_array_equal(clean[0], messy[0])
    np.testing.assert_allclose(clean[1], messy[1], rtol=1e-6)


@pytest.mark.parametrize(
    ("k", "message"),
    [([0], "k must be >= 1"), ([9], "k must be <= 8"), ([-3], "k must be >= 1")],
)
def test_bad_k_is_invalid_argument(exported, k, message):
    _, serve = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(serve, ["u1"], [["i1"]], k)


def test_mismatched_batch_is_invalid_argument(exported):
    _, serve = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per user_id"):
        _call(serve, ["u1", "u2"], [["i1"], ["i2"]], [3])


def test_empty_batch(exported):
    _, serve = exported
    ids, scores = _call(serve, np.zeros((0,), str), np.zeros((0, 3), str), np.zeros((0,), np.int32))
    assert ids.shape[0] == 0 and scores.shape[0] == 0


def test_export_errors(trained, tmp_path):
    model, users, items = trained
    export_retrieval(model, users, items, tmp_path, version=3)
    with pytest.raises(FileExistsError, match=r"retrieval/3 already exists"):
        export_retrieval(model, users, items, tmp_path, version=3)
    assert export_retrieval(model, users, items, tmp_path).name == "4"
    with pytest.raises(ValueError, match=r"'item_vocab\.txt' is written by the exporter"):
        export_retrieval(model, users, items, tmp_path, extra_files={"item_vocab.txt": "x"})
    with pytest.raises(ValueError, match="item_vocab has 9 indices"):
        export_retrieval(model, users, type(items)(items.tokens[:-1]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "retrieval").iterdir()) == ["3", "4"]


def test_caller_config_replaces_default(trained, tmp_path):
    model, users, items = trained
    path = export_retrieval(
        model, users, items, tmp_path, extra_files={"tfrec_config.json": '{"mine": 1}'}
    )
    assert json.loads((path / "assets.extra" / "tfrec_config.json").read_text()) == {"mine": 1}


@pytest.mark.slow
def test_saved_model_cli_lists_the_signature(exported):
    path, _ = exported
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [str(cli), "show", "--dir", str(path), "--all"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    out = result.stdout
    assert "signature_def['serving_default']" in out
    for name in ("inputs['user_id']", "inputs['history']", "inputs['k']"):
        assert name in out
    assert "outputs['item_ids']" in out and "outputs['scores']" in out
    assert "DT_INT32" in out and "DT_STRING" in out and "DT_FLOAT" in out
