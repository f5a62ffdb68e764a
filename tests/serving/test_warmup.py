"""Warmup records for assets.extra/tf_serving_warmup_requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfrec.export.warmup import build_warmup_records, read_warmup_records


def test_warmup_records_round_trip(tmp_path: Path) -> None:
    requests = [
        {"user_id": np.array(["u1"]), "history": np.array([["a", ""]]), "k": np.int32([3])},
        {
            "user_id": np.array([b"u2", b"u3"]),
            "history": np.array([[b"b"], [b"c"]]),
            "k": np.int32([1, 2]),
        },
    ]
    path = tmp_path / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir()
    path.write_bytes(build_warmup_records("retrieval", requests))

    logs = read_warmup_records(tmp_path)  # a version dir works as well as the file
    assert len(logs) == 2
    first = logs[0].predict_log.request
    assert first.model_spec.name == "retrieval"
    assert first.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(first.inputs["history"]).tolist() == [[b"a", b""]]
    second = logs[1].predict_log.request
    k = tf.make_ndarray(second.inputs["k"])
    assert k.dtype == np.int32 and k.tolist() == [1, 2]
    assert tf.make_ndarray(second.inputs["user_id"]).tolist() == [b"u2", b"u3"]
    # it is a plain TFRecord file, as TF Serving reads it
    assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == 2


def test_warmup_rejects_empty_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected 1\.\.1000"):
        build_warmup_records("m", [])
    with pytest.raises(ValueError, match=r"requests\[0\]: expected a non-empty dict"):
        build_warmup_records("m", [{}])
    garbage = tmp_path / "bad"
    garbage.write_bytes(b"not a tfrecord file at all")
    with pytest.raises(ValueError, match="corrupt TFRecord"):
        read_warmup_records(garbage)
    with pytest.raises(FileNotFoundError):
        read_warmup_records(tmp_path / "missing")
