"""SignatureRunner's fast paths (flat call, single-threaded executor) answer like the signature.

Servables built with ``session=False`` call their signatures as TF2 functions (the
fallback of models that cannot run in a Session, see test_graph_session.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfrec.serving.errors import ServingError
from tfrec.serving.servable import Servable, SignatureRunner


def _inputs(users: list[str], histories: list[list[str]], k: list[int]) -> dict[str, np.ndarray]:
    return {
        "user_id": np.array([u.encode() for u in users], dtype=object),
        "history": np.array([[h.encode() for h in row] for row in histories], dtype=object),
        "k": np.array(k, dtype=np.int32),
    }


def _tensors(inputs: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {name: tf.constant(value) for name, value in inputs.items()}


def _numpy(result: dict[str, tf.Tensor]) -> dict[str, list]:
    return {name: tensor.numpy().tolist() for name, tensor in result.items()}


def test_fast_paths_answer_like_the_signature_call(saved_models: dict[str, Path]) -> None:
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"], session=False)
    # Catalogue a..f scores 6..1, + 0.01 * len(user_id); history items are excluded.
    outputs = servable.run("", _inputs(["u1"], [["a", ""]], [2]))
    assert outputs["item_ids"].tolist() == [[b"b", b"c"]]
    np.testing.assert_allclose(outputs["scores"], [[5.02, 4.02]], rtol=1e-6)
    assert servable._runners["serving_default"].fast_paths == (True, True)

    plain = SignatureRunner(servable._loaded.signatures["serving_default"], fast=False)
    for batch in (
        _inputs(["u1"], [["c", "a"]], [3]),
        _inputs(["x", "yyy", "zz"], [["a", "b"], ["", ""], ["f", "e"]], [1, 2, 4]),
    ):
        fast = servable.run("", batch)
        expected = _numpy(plain(_tensors(batch)))
        assert {name: value.tolist() for name, value in fast.items()} == expected
    assert plain.fast_paths == (False, False)
    # Hand check of the batch of 3 (k padded to max(k) = 4): "yyy" excludes nothing.
    assert fast["item_ids"][1].tolist() == [b"a", b"b", b"c", b"d"]


class _TwoInputs(tf.Module):
    """Inputs declared (zeta, beta, alpha): sorted order differs; a swap changes the answer."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="zeta"),
            tf.TensorSpec([None], tf.float32, name="beta"),
            tf.TensorSpec([None], tf.int32, name="alpha"),
        ]
    )
    def serve(self, zeta: tf.Tensor, beta: tf.Tensor, alpha: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"out": zeta * 10.0 - beta + tf.cast(alpha, tf.float32)}


def _save(module: tf.Module, path: Path) -> Path:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_flat_call_passes_inputs_by_name(tmp_path: Path) -> None:
    servable = Servable("m", 1, _save(_TwoInputs(), tmp_path / "m"), session=False)
    inputs = {
        "zeta": np.array([1.5], np.float32),
        "beta": np.array([0.25], np.float32),
        "alpha": np.array([2], np.int32),
    }
    first = servable.run("", inputs)
    second = servable.run("", inputs)  # on the flat path now
    assert servable._runners["serving_default"].fast_paths[0]
    # 1.5 * 10 - 0.25 + 2 = 16.75 (zeta and beta swapped would give 2.5 - 15 + 2 = -10.5).
    assert first["out"].tolist() == second["out"].tolist() == [16.75]


class _ControlFlow(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weights = tf.Variable(tf.ones([4]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32)])
    def serve(self, x: tf.Tensor, n: tf.Tensor) -> dict[str, tf.Tensor]:
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        _, y = tf.while_loop(lambda i, v: i < n, lambda i, v: (i + 1, v + 1.0), (0, y))
        return {"y": y * tf.reduce_sum(self.weights)}


def test_control_flow_falls_back_to_the_default_executor(tmp_path: Path) -> None:
    function = tf.saved_model.load(str(_save(_ControlFlow(), tmp_path / "cf"))).signatures[
        "serving_default"
    ]
    runner = SignatureRunner(function)
    args = {"x": tf.constant([1.0, 2.0]), "n": tf.constant(3)}
    # sum > 0 -> x * 2 = [2, 4]; + 1 three times = [5, 7]; * sum(weights) = 4 -> [20, 28].
    assert runner(args)["y"].numpy().tolist() == [20.0, 28.0]
    # The single-threaded executor refuses lowered control flow: flat call, default executor.
    assert runner.fast_paths == (True, False)
    # sum < 0 -> x - 1 = [-2, -3]; + 1 once = [-1, -2]; * 4 -> [-4, -8].
    negative = {"x": tf.constant([-1.0, -2.0]), "n": tf.constant(1)}
    assert runner(negative)["y"].numpy().tolist() == [-4.0, -8.0]


class _Counter(tf.Module):
    """Answers x + (number of calls so far): no two calls agree."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = tf.Variable(0.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + self.calls.assign_add(1.0)}


def test_fast_path_that_answers_differently_is_dropped(tmp_path: Path) -> None:
    function = tf.saved_model.load(str(_save(_Counter(), tmp_path / "c"))).signatures[
        "serving_default"
    ]
    runner = SignatureRunner(function)
    x = {"x": tf.constant([10.0])}
    # Call 1 answers 11; the check's flat call is call 2 (12 != 11, so the fast path is
    # dropped); later calls are plain signature calls 3 and 4.
    assert [runner(x)["y"].numpy().tolist() for _ in range(3)] == [[11.0], [13.0], [14.0]]
    assert runner.fast_paths == (False, False)


def test_model_errors_keep_their_status_on_the_fast_path(saved_models: dict[str, Path]) -> None:
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"], session=False)
    servable.run("", _inputs(["u"], [["a"]], [1]))
    assert servable._runners["serving_default"].fast_paths == (True, True)
    with pytest.raises(ServingError) as err:
        servable.run("", _inputs(["u"], [["a"]], [0]))  # in-graph assert: k must be > 0
    assert err.value.code.name == "INVALID_ARGUMENT"
    assert "k must be > 0" in err.value.message


def test_concurrent_calls_on_the_fast_path(saved_models: dict[str, Path]) -> None:
    servable = Servable("retrieval", 1, saved_models["retrieval_v1"], session=False)
    requests = [
        _inputs([f"user{i}"], [[["a", "b", "c", "d", "e", "f"][i % 6], ""]], [1 + i % 5])
        for i in range(12)
    ]
    plain = SignatureRunner(servable._loaded.signatures["serving_default"], fast=False)
    expected = [_numpy(plain(_tensors(r))) for r in requests]
    servable.run("", requests[0])  # turns the fast paths on
    errors: list[str] = []

    def client(offset: int) -> None:
        for n in range(24):
            i = (offset + n) % len(requests)
            got = {k: v.tolist() for k, v in servable.run("", requests[i]).items()}
            if got != expected[i]:
                errors.append(f"request {i}: {got} != {expected[i]}")

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert servable._runners["serving_default"].fast_paths == (True, True)
    assert errors == []
