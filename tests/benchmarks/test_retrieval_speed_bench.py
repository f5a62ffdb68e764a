"""Tests of benchmarks/retrieval_speed.py: tutorial split, top-k metric, throughput, smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from testing_utils import import_benchmark

pairs = import_benchmark("_retrieval_pairs")
retrieval_speed = import_benchmark("retrieval_speed")


@pytest.mark.parametrize("buffer", [50, 20])
def test_tutorial_split_equals_tf_data_shuffle_of_the_features(buffer):
    import tensorflow as tf

    users = np.array([f"u{i % 7}" for i in range(50)])
    titles = np.array([f"Movie é {i}" for i in range(50)])
    # The tutorial's own pipeline on the feature dict.
    tf.random.set_seed(42)
    ratings = tf.data.Dataset.from_tensor_slices({"movie_title": titles, "user_id": users})
    shuffled = ratings.shuffle(buffer, seed=42, reshuffle_each_iteration=False)
    train = next(shuffled.take(40).batch(100).as_numpy_iterator())
    test = next(shuffled.skip(40).take(10).batch(100).as_numpy_iterator())

    train_idx, test_idx = pairs.tutorial_split(50, 40, 10, seed=42, buffer=buffer)
    assert pairs.decode_strings(train["movie_title"]).tolist() == titles[train_idx].tolist()
    assert pairs.decode_strings(train["user_id"]).tolist() == users[train_idx].tolist()
    assert pairs.decode_strings(test["movie_title"]).tolist() == titles[test_idx].tolist()
    # A permutation: disjoint parts covering every row once.
    assert sorted([*train_idx, *test_idx]) == list(range(50))


def test_tutorial_split_changes_with_seed_and_checks_sizes():
    a, _ = pairs.tutorial_split(30, 20, 10, seed=42, buffer=30)
    b, _ = pairs.tutorial_split(30, 20, 10, seed=7, buffer=30)
    assert a.tolist() != b.tolist()
    with pytest.raises(ValueError, match=r"num_train=31; expected 1\.\.30"):
        pairs.tutorial_split(30, 31, 0)


def test_top_k_accuracy_hand_computed():
    query = np.array([[1.0], [-1.0], [-1.0]])
    candidates = np.array([[3.0], [2.0], [1.0], [0.0], [2.0]])
    true_rows = np.array([1, 3, 2])
    # Scores: q=1 -> 3,2,1,0,2; true row 1 (2): one strictly higher (3); row 4 ties, not counted.
    #         q=-1 -> -3,-2,-1,0,-2; true row 3 (0): none higher.
    #         q=-1, true row 2 (-1): one higher (0).
    # Hit iff #higher < k: k=1 -> 1/3, k=2 -> 3/3.
    assert pairs.top_k_accuracy(query, candidates, true_rows, k=1) == pytest.approx(1 / 3)
    assert pairs.top_k_accuracy(query, candidates, true_rows, k=1, chunk=1) == pytest.approx(1 / 3)
    assert pairs.top_k_accuracy(query, candidates, true_rows, k=2) == 1.0


def test_top_k_accuracy_rejects_bad_inputs():
    q = np.zeros((2, 3))
    c = np.zeros((5, 3))
    with pytest.raises(ValueError, match="non-empty"):
        pairs.top_k_accuracy(np.zeros((0, 3)), c, np.zeros(0, int))
    with pytest.raises(ValueError, match=r"expected \[M, 3\]"):
        pairs.top_k_accuracy(q, np.zeros((5, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"expected \[2\] integers"):
        pairs.top_k_accuracy(q, c, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"rows in 0\.\.4"):
        pairs.top_k_accuracy(q, c, np.array([0, 5]))
    with pytest.raises(ValueError, match="k=0"):
        pairs.top_k_accuracy(q, c, np.array([0, 1]), k=0)


def test_catalogue_rows_first_row_of_duplicates():
    catalogue = np.array(["a", "b", "a", "c"])
    assert pairs.catalogue_rows(catalogue, np.array(["c", "a", "b"])).tolist() == [3, 0, 1]
    with pytest.raises(ValueError, match=r"not in the catalogue: \['zz'\]"):
        pairs.catalogue_rows(catalogue, np.array(["a", "zz"]))


def test_top_k_accuracy_matches_tfrs_factorized_top_k():
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(30, 4)).astype(np.float32)
    query = rng.normal(size=(25, 4)).astype(np.float32)
    true_rows = rng.integers(0, 30, size=25)
    metric = tfrs.metrics.FactorizedTopK(
        candidates=tf.data.Dataset.from_tensor_slices(candidates).batch(8), ks=(1, 5, 10)
    )
    metric.update_state(tf.constant(query), tf.constant(candidates[true_rows]))
    expected = [float(x) for x in metric.result()]
    got = [pairs.top_k_accuracy(query, candidates, true_rows, k=k) for k in (1, 5, 10)]
    assert got == pytest.approx(expected, abs=1e-6)
    assert 0.0 < got[1] < 1.0  # a case where the cut-off matters


def test_throughput_excludes_first_epoch():
    out = pairs.throughput(100, [5.0, 1.0, 3.0])
    # Epochs 2-3: 2 x 100 examples / (1 + 3) s = 50/s; all epochs: 300 / 9 s = 33.3/s.
    assert out["examples_per_s"] == 50.0
    assert out["examples_per_s_all_epochs"] == 33.3
    assert out["first_epoch_s"] == 5.0
    assert out["timed_epochs"] == 2
    assert "examples_per_cpu_s" not in out
    # CPU seconds [9, 2, 2]: epochs 2-3 -> 200 / 4 = 50 examples per CPU-second.
    assert pairs.throughput(100, [5.0, 1.0, 3.0], [9.0, 2.0, 2.0])["examples_per_cpu_s"] == 50.0
    assert pairs.throughput(100, [2.0])["examples_per_s"] is None


def test_load_pairs_quick_maps_items_to_titles():
    data = pairs.load_pairs(None, quick=True)
    assert len(data.users) == len(data.titles) > 0
    assert len(data.catalogue) == 30
    # Synthetic titles are "Item <n> <genre>", so every pair's title is in the catalogue.
    assert set(data.titles) <= set(data.catalogue)
    assert all(t.startswith("Item ") for t in data.catalogue)


def test_summarize_speedup_and_verdict():
    def run(examples_per_s, accuracy, fit):
        return {
            "examples_per_s": examples_per_s,
            "examples_per_s_all_epochs": examples_per_s / 2,
            "examples_per_cpu_s": examples_per_s / 4,
            "top_k_accuracy": accuracy,
            "fit_wall_s": fit,
            "peak_rss_mb": 100.0,
        }

    runs = {
        "tutorial": [run(100.0, 0.20, 60.0), run(300.0, 0.20, 20.0)],
        "tfrec": [run(2500.0, 0.30, 10.0), run(1500.0, 0.30, 10.0)],
    }
    summary = retrieval_speed.summarize(runs)
    # Medians: tutorial 200/s, tfrec 2000/s -> 10x; accuracy +0.10; fit 40 s / 10 s = 4x.
    assert summary["speedup"] == 10.0
    assert summary["cpu_speedup"] == 10.0
    assert summary["accuracy_delta"] == pytest.approx(0.10)
    assert summary["fit_wall_ratio"] == 4.0
    assert summary["accepted"] is True
    runs["tfrec"] = [run(1900.0, 0.30, 10.0)]
    assert retrieval_speed.summarize(runs)["accepted"] is False  # 9.5x
    runs["tfrec"] = [run(5000.0, 0.19, 10.0)]
    assert retrieval_speed.summarize(runs)["accepted"] is False  # less accurate


@pytest.mark.slow
def test_quick_smoke_run_writes_report(tmp_path):
    code = retrieval_speed.main(["--quick", "--output", str(tmp_path)])
    assert code == 0
    payload = json.loads((tmp_path / "retrieval_speed_quick.json").read_text())
    runs = payload["results"]["runs"]
    tutorial, ours = runs["tutorial"][0], runs["tfrec"][0]
    assert tutorial["split_matches_tutorial_shuffle"] is True
    # TFRS's way of computing the true score reproduces TFRS's number, and the
    # difference to ours is exactly the pairs flipped by that rounding (209 test pairs).
    assert tutorial["tfrs_style_top_k_accuracy"] == pytest.approx(
        tutorial["tfrs_top_k_accuracy"], abs=1e-6
    )
    flipped = tutorial["pairs_lost_to_tfrs_rounding"] - tutorial["pairs_gained_by_tfrs_rounding"]
    assert tutorial["top_k_accuracy"] - tutorial["tfrs_top_k_accuracy"] == pytest.approx(
        flipped / 209, abs=1e-6
    )
    assert ours["config"]["use_user_embedding"] is True
    assert ours["config"]["use_item_features"] is False
    for part in (tutorial, ours):
        assert part["num_train"] + part["num_test"] == 1043  # synthetic(60 users, 30 items)
        assert part["examples_per_s"] > 0
        assert part["peak_rss_mb"] > 0
    assert "speedup" in payload["results"]["summary"]
    assert "python -m benchmarks.retrieval_speed --quick" in payload["command"]
    assert "Smoke run" in (tmp_path / "retrieval_speed_quick.md").read_text()
