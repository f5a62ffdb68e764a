"""Server-side batching: merging, padding, splitting, failure isolation, end to end."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from tfrec.serving.batching import BatchScheduler, merge_inputs
from tfrec.serving.client import RecommenderClient
from tfrec.serving.errors import ServingError
from tfrec.serving.model_config import BatchingConfig, ModelEntry


def test_merge_pads_variable_length_inputs_at_the_end() -> None:
    merged = merge_inputs(
        [
            {"h": np.array([[b"a"]], dtype=object), "k": np.int32([1])},
            {"h": np.array([[b"b", b"c"], [b"d", b"e"]], dtype=object), "k": np.int32([2, 3])},
        ],
        total_rows=4,
    )
    # rows 0..2 from the parts ("" pads row 0), row 3 repeats row 0 (allowed_batch_sizes)
    assert merged["h"].tolist() == [[b"a", b""], [b"b", b"c"], [b"d", b"e"], [b"a", b""]]
    assert merged["k"].tolist() == [1, 2, 3, 1]
    assert merged["k"].dtype == np.int32


class Recorder:
    """Fake model: y = 10 * x per row; fails when any x < 0; records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, inputs):
        x = inputs["x"]
        with self.lock:
            self.batches.append(int(x.shape[0]))
        if (x < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative x")
        return {"y": x * 10, "width": np.zeros((x.shape[0], x.shape[1]))}


def submit_all(scheduler, model, parts):
    futures = [scheduler.submit("key", model, {"x": p}) for p in parts]
    results = []
    for future in futures:
        try:
            results.append(future.result(timeout=10))
        except ServingError as err:
            results.append(err)
    return results


def test_concurrent_requests_are_merged_and_split_back() -> None:
    scheduler = BatchScheduler(BatchingConfig(max_batch_size=8, batch_timeout_micros=300_000))
    model = Recorder()
    parts = [np.array([[1.0]]), np.array([[2.0, 3.0], [4.0, 5.0]]), np.array([[6.0]])]
    results = submit_all(scheduler, model, parts)
    scheduler.stop()
    assert model.batches == [4]  # 1 + 2 + 1 rows in one run
    assert results[0]["y"].tolist() == [[10.0, 0.0]]  # padded column comes back as 0 * 10
    assert results[1]["y"].tolist() == [[20.0, 30.0], [40.0, 50.0]]
    assert results[2]["y"].tolist() == [[60.0, 0.0]]


def test_max_batch_size_and_allowed_sizes() -> None:
    config = BatchingConfig(
        max_batch_size=4, batch_timeout_micros=200_000, allowed_batch_sizes=[2, 4]
    )
    scheduler = BatchScheduler(config)
    model = Recorder()
    parts = [np.array([[float(i)]]) for i in range(5)]
    results = submit_all(scheduler, model, parts)
    scheduler.stop()
    # 4 rows fill a batch; the 5th runs alone, padded up to the allowed size 2
    assert sorted(model.batches) == [2, 4]
    assert [r["y"].tolist() for r in results] == [[[0.0]], [[10.0]], [[20.0]], [[30.0]], [[40.0]]]


def test_without_padding_different_shapes_are_not_merged() -> None:
    config = BatchingConfig(batch_timeout_micros=200_000, pad_variable_length_inputs=False)
    scheduler = BatchScheduler(config)
    model = Recorder()
    parts = [np.array([[1.0]]), np.array([[1.0, 2.0]]), np.array([[3.0]])]
    results = submit_all(scheduler, model, parts)
    scheduler.stop()
    assert sorted(model.batches) == [1, 2]  # the two width-1 requests merged, the other alone
    assert results[1]["y"].tolist() == [[10.0, 20.0]]


def test_a_failing_request_does_not_fail_its_batch_mates() -> None:
    scheduler = BatchScheduler(BatchingConfig(batch_timeout_micros=200_000))
    model = Recorder()
    results = submit_all(scheduler, model, [np.array([[1.0]]), np.array([[-1.0]])])
    scheduler.stop()
    assert results[0]["y"].tolist() == [[10.0]]
    assert isinstance(results[1], ServingError) and results[1].message == "negative x"
    assert model.batches == [2, 1, 1]  # merged try, then each alone


def test_full_queue_and_shutdown_answer_unavailable() -> None:
    config = BatchingConfig(max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=10**7)
    scheduler = BatchScheduler(config)
    gate = threading.Event()

    def slow(inputs):
        gate.wait(10)
        return {"y": inputs["x"]}

    first = scheduler.submit("key", slow, {"x": np.array([[1.0]])})
    with pytest.raises(ServingError) as err:
        scheduler.submit("key", slow, {"x": np.array([[1.0], [2.0]])})  # 1 + 2 rows > 2
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    gate.set()
    scheduler.stop()  # flushes the queued request without waiting out the 10 s timeout
    assert first.result(timeout=1)["y"].tolist() == [[1.0]]
    with pytest.raises(ServingError, match="shutting down"):
        scheduler.submit("key", slow, {"x": np.array([[1.0]])})


def test_server_batching_merges_concurrent_clients_with_unbatched_results(
    export_dir, start_server
) -> None:
    models = [ModelEntry("retrieval", str(export_dir / "retrieval"))]
    plain = start_server(models)
    batched = start_server(
        models,
        enable_batching=True,
        batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=500_000),
    )
    servable = batched.manager.resolve("retrieval")
    runs_before = servable.run_count
    requests = [
        ([f"user{i}"], [["a", "b", "c"][: i % 4]], 1 + i % 3) for i in range(8)
    ]  # ragged histories (0..3 items) and k in 1..3

    def ask(server, request):
        users, histories, k = request
        with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval", max_retries=0) as c:
            return c.recommend(user_ids=users, histories=histories, k=k)

    with ThreadPoolExecutor(len(requests)) as pool:
        got = list(pool.map(lambda r: ask(batched, r), requests))
    expected = [ask(plain, r) for r in requests]
    assert servable.run_count - runs_before < len(requests)
    for want, have in zip(expected, got, strict=True):
        assert have.item_ids.tolist() == want.item_ids.tolist()
        np.testing.assert_allclose(have.scores, want.scores, rtol=1e-6)
    assert batched.batcher.tasks_run == len(requests)


def test_unbatchable_signature_runs_directly(export_dir, start_server) -> None:
    server = start_server(
        [ModelEntry("retrieval", str(export_dir / "retrieval"))],
        enable_batching=True,
        batching=BatchingConfig(batch_timeout_micros=10**7),  # would stall if it were queued
    )
    with RecommenderClient(
        f"127.0.0.1:{server.port}", "retrieval", signature_name="scale", timeout=5
    ) as c:
        out = c.predict({"x": np.float32([1, 2]), "factor": np.float32(3)})
    assert out["y"].tolist() == [3.0, 6.0]
    assert server.batcher.tasks_run == 0
