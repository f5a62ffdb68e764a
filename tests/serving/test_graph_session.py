"""Servables run their signatures in a TF1 Session (as TF Serving does), else as TF2 functions."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfrec.serving import graph_session
from tfrec.serving.errors import ServingError
from tfrec.serving.graph_session import SessionSignatures, configure_sessions, session_config
from tfrec.serving.servable import Servable


def _inputs(users: list[str], histories: list[list[str]], k: list[int]) -> dict[str, np.ndarray]:
    return {
        "user_id": np.array([u.encode() for u in users], dtype=object),
        "history": np.array([[h.encode() for h in row] for row in histories], dtype=object),
        "k": np.array(k, dtype=np.int32),
    }


def _lists(outputs: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: value.tolist() for name, value in outputs.items()}


def test_session_answers_like_the_tf2_functions(saved_models: dict[str, Path]) -> None:
    session = Servable("retrieval", 1, saved_models["retrieval_v1"])
    functions = Servable("retrieval", 1, saved_models["retrieval_v1"], session=False)
    assert (session.runtime, functions.runtime) == ("session", "function")
    # Catalogue a..f scores 6..1, + 0.01 * len(user_id); history items are excluded.
    batch = _inputs(["x", "yyy", "zz"], [["a", "b"], ["", ""], ["f", "e"]], [1, 2, 4])
    got = session.run("", batch)
    assert got["item_ids"].tolist() == [
        [b"c", b"d", b"e", b"f"],  # a, b excluded
        [b"a", b"b", b"c", b"d"],
        [b"a", b"b", b"c", b"d"],
    ]
    np.testing.assert_allclose(got["scores"][1], [6.03, 5.03, 4.03, 3.03], rtol=1e-6)
    assert got["scores"].dtype == np.float32 and got["item_ids"].dtype == object
    assert _lists(got) == _lists(functions.run("", batch))
    # The second signature (a scalar input) and the ranking model too.
    scale = {"x": np.array([1.5, -2.0], np.float32), "factor": np.array(4.0, np.float32)}
    assert session.run("scale", scale)["y"].tolist() == [6.0, -8.0]
    ranking = Servable("ranking", 1, saved_models["ranking"])
    candidates = {
        "user_id": np.array([b"u"], dtype=object),
        "history": np.array([[b"ab", b"ab", b"c"]], dtype=object),
        "candidates": np.array([[b"ab", b"xyz"]], dtype=object),
    }
    # len("ab") + 10 * 2 occurrences = 22; len("xyz") = 3.
    assert ranking.run("", candidates)["scores"].tolist() == [[22.0, 3.0]]


def test_in_graph_errors_keep_their_status(saved_models: dict[str, Path]) -> None:
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"])
    assert servable.runtime == "session"
    with pytest.raises(ServingError) as err:
        servable.run("", _inputs(["u"], [["a"]], [0]))  # in-graph assert: k must be > 0
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert err.value.message.startswith("assertion failed: [k must be > 0")
    with pytest.raises(ServingError) as err:
        servable.signature("nope")
    assert err.value.code.name == "FAILED_PRECONDITION"


def test_concurrent_calls(saved_models: dict[str, Path]) -> None:
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"])
    requests = [_inputs([f"user{i}"], [[["a", "b", "c"][i % 3]]], [1 + i % 5]) for i in range(9)]
    expected = [_lists(servable.run("", r)) for r in requests]
    errors: list[str] = []

    def client(offset: int) -> None:
        for n in range(20):
            i = (offset + n) % len(requests)
            got = _lists(servable.run("", requests[i]))
            if got != expected[i]:
                errors.append(f"request {i}: {got} != {expected[i]}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # user0 (len 5): a excluded, best is b = 5 + 0.05
    assert expected[0]["item_ids"] == [[b"b"]]


class _SparseOutput(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"dense": x * 2.0, "sparse": tf.sparse.from_dense(x)}


def test_a_composite_signature_runs_as_tf2_functions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = _SparseOutput()
    path = tmp_path / "sparse"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    with caplog.at_level(logging.INFO, logger="tfrec.serving.servable"):
        servable = Servable("sparse", 1, path)
    assert servable.runtime == "function"
    assert "'sparse' is a coo_sparse tensor" in caplog.text
    assert servable.signature("").name == "serving_default"


def test_a_session_failure_falls_back_to_tf2_functions(
    saved_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ValueError("no Session today")

    monkeypatch.setattr("tfrec.serving.servable.SessionSignatures", refuse)
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"])
    assert servable.runtime == "function"
    assert servable.run("", _inputs(["u1"], [["a", ""]], [2]))["item_ids"].tolist() == [
        [b"b", b"c"]
    ]


def test_session_threading_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_session, "_OPTIONS", dict(graph_session._OPTIONS))
    configure_sessions()
    config = session_config()
    # -1: every op of a call runs in the calling thread; spinning left to TensorFlow.
    assert config.inter_op_parallelism_threads == -1
    assert config.intra_op_parallelism_threads == 0
    assert not config.experimental.disable_thread_spinning
    configure_sessions(inter_op=3, intra_op=1, thread_spinning=False)
    config = session_config()
    assert (config.inter_op_parallelism_threads, config.intra_op_parallelism_threads) == (3, 1)
    assert config.experimental.disable_thread_spinning


def test_session_signatures_rejects_a_broken_folder(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"not a proto")
    with pytest.raises(ValueError, match="cannot run in a Session"):
        SessionSignatures(tmp_path, {})


def test_serving_threads_apply_to_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    from tfrec.serving.server import configure_tf_threads

    monkeypatch.setattr(graph_session, "_OPTIONS", dict(graph_session._OPTIONS))
    configure_tf_threads(0, 0)  # the server's defaults
    config = session_config()
    assert config.inter_op_parallelism_threads == -1  # the calling thread
    assert config.experimental.disable_thread_spinning
    configure_tf_threads(0, 0, thread_spinning=True)
    assert not session_config().experimental.disable_thread_spinning
