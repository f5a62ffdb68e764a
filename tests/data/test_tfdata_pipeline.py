"""tf.data from arrays and from TFRecord shards: same structure, exact round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfrec.data.tfdata import make_dataset, read_spec, tfrecord_dataset, write_tfrecords


def features(n: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "user": np.arange(2, 2 + n, dtype=np.int32),
        "history": rng.integers(0, 20, size=(n, 3)).astype(np.int32),
        "history_dt": rng.random((n, 3)).astype(np.float32),
        "big": np.full((n,), 2**40, dtype=np.int64),
        "flag": np.arange(n) % 2 == 0,
    }


def collect(ds: tf.data.Dataset) -> dict[str, np.ndarray]:
    batches = list(ds.as_numpy_iterator())
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_make_dataset_batches_without_shuffle():
    feats = features()
    ds = make_dataset(feats, batch_size=3, shuffle=False)
    sizes = [len(b["user"]) for b in ds.as_numpy_iterator()]
    assert sizes == [3, 3, 1]  # 7 examples
    out = collect(ds)
    for name, value in feats.items():
        np.testing.assert_array_equal(out[name], value)
        assert out[name].dtype == value.dtype
    dropped = make_dataset(feats, batch_size=3, shuffle=False, drop_remainder=True)
    assert dropped.element_spec["history"].shape.as_list() == [3, 3]


def test_make_dataset_shuffle_is_seeded_and_a_permutation():
    feats = {"x": np.arange(50, dtype=np.int32)}
    a = collect(make_dataset(feats, 8, seed=1))["x"]
    b = collect(make_dataset(feats, 8, seed=1))["x"]
    c = collect(make_dataset(feats, 8, seed=2))["x"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a.tolist()) == list(range(50))
    two_epochs = make_dataset(feats, 50, seed=1, repeat=True).take(2)
    first, second = (batch["x"] for batch in two_epochs.as_numpy_iterator())
    assert not np.array_equal(first, second)  # reshuffled every epoch


def test_tfrecords_round_trip_exact(tmp_path):
    feats = features(7)
    spec = write_tfrecords(feats, tmp_path / "recs", num_shards=3)
    # 7 rows over 3 shards: linspace(0, 7, 4) -> bounds 0, 2, 4, 7
    assert [s["num_examples"] for s in spec["shards"]] == [2, 2, 3]
    assert spec["features"]["history"] == {"dtype": "int32", "shape": [3]}
    assert json.loads((tmp_path / "recs" / "spec.json").read_text()) == spec
    assert sorted(p.name for p in (tmp_path / "recs").iterdir()) == [
        "part-00000-of-00003.tfrecord",
        "part-00001-of-00003.tfrecord",
        "part-00002-of-00003.tfrecord",
        "spec.json",
    ]
    ds = tfrecord_dataset(tmp_path / "recs", batch_size=4, shuffle=False)
    assert ds.element_spec == make_dataset(feats, batch_size=4, shuffle=False).element_spec
    out = collect(ds)
    for name, value in feats.items():
        np.testing.assert_array_equal(out[name], value)
        assert out[name].dtype == value.dtype


def test_tfrecords_shuffled_read_is_seeded_permutation(tmp_path):
    feats = {"x": np.arange(40, dtype=np.int32), "y": np.arange(40, dtype=np.float32) * 0.5}
    write_tfrecords(feats, tmp_path, num_shards=4)
    a = collect(tfrecord_dataset(tmp_path, 16, seed=3, shuffle_buffer=8))
    b = collect(tfrecord_dataset(tmp_path, 16, seed=3, shuffle_buffer=8))
    np.testing.assert_array_equal(a["x"], b["x"])
    assert sorted(a["x"].tolist()) == list(range(40))
    assert not np.array_equal(a["x"], np.arange(40))
    np.testing.assert_array_equal(a["y"], a["x"] * 0.5)  # rows stay intact


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="first dimensions differ"):
        make_dataset({"a": np.zeros(3), "b": np.zeros(4)}, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        make_dataset({"a": np.zeros(3)}, 0)
    with pytest.raises(ValueError, match="no examples"):
        make_dataset({"a": np.zeros((0, 2))}, 2)
    with pytest.raises(ValueError, match=r"dtype float64 cannot be stored exactly.*float32"):
        write_tfrecords({"a": np.zeros(3)}, tmp_path / "f64")
    write_tfrecords({"a": np.zeros(3, np.int32)}, tmp_path / "ok", num_shards=1)
    with pytest.raises(ValueError, match="already holds a TFRecord set"):
        write_tfrecords({"a": np.zeros(3, np.int32)}, tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match=r"spec\.json not found"):
        tfrecord_dataset(tmp_path / "nothing", 2)
    write_tfrecords({"a": np.zeros(6, np.int32)}, tmp_path / "three", num_shards=3)
    for part in (0, 2):
        (tmp_path / "three" / f"part-0000{part}-of-00003.tfrecord").unlink()
    missing = r"2 of 3 listed shards are missing .*: part-00000-of-00003.tfrecord, part-00002"
    with pytest.raises(FileNotFoundError, match=missing):
        read_spec(tmp_path / "three")
