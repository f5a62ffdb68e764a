"""RecommenderClient: retries, deadlines, futures, typed errors, import hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

import tfrec.serving.client as client_module
from tfrec.serving.client import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    RecommenderClient,
    ServingError,
    UnavailableError,
)
from tfrec.serving.model_config import BatchingConfig, ModelEntry
from tfrec.serving.server import ModelServer, ServerOptions


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Records the client's backoff sleeps (still sleeping for real)."""
    recorded: list[float] = []
    real = client_module._sleep

    def record(seconds: float) -> None:
        recorded.append(seconds)
        real(seconds)

    monkeypatch.setattr(client_module, "_sleep", record)
    return recorded


def retrieval(export_dir) -> list[ModelEntry]:
    return [ModelEntry("retrieval", str(export_dir / "retrieval"))]


def test_retries_unavailable_until_the_server_comes_up(export_dir, free_port, sleeps) -> None:
    server = ModelServer(retrieval(export_dir), ServerOptions(host="127.0.0.1", port=free_port))
    timer = threading.Timer(0.5, server.start)
    timer.start()
    try:
        with RecommenderClient(
            f"127.0.0.1:{free_port}", "retrieval", max_retries=6, backoff_seconds=0.2, timeout=5
        ) as c:
            recs = c.recommend(user_ids=["u"], k=1)
        assert recs.item_ids.tolist() == [["a"]]
        # at least one UNAVAILABLE attempt, retried with doubling delays
        assert sleeps and sleeps == [0.2 * 2**i for i in range(len(sleeps))]
    finally:
        timer.join()
        server.stop(grace=1)


def test_gives_up_after_max_retries(free_port, sleeps) -> None:
    with (
        RecommenderClient(
            f"127.0.0.1:{free_port}", "retrieval", max_retries=2, backoff_seconds=0.01, timeout=2
        ) as c,
        pytest.raises(UnavailableError) as err,
    ):
        c.recommend(user_ids=["u"], k=1)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert sleeps == [0.01, 0.02]


def test_invalid_argument_is_not_retried(export_dir, start_server, sleeps) -> None:
    server = start_server(retrieval(export_dir))
    with (
        RecommenderClient(f"127.0.0.1:{server.port}", "retrieval", max_retries=3) as c,
        pytest.raises(InvalidArgumentError) as err,
    ):
        c.recommend(user_ids=["u"], k=7)  # catalogue has 6 items
    assert isinstance(err.value, ServingError)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "k must be <= the catalogue size" in err.value.details
    assert sleeps == []
    assert server.metrics.count(api="Predict") == 1  # exactly one attempt reached the server


def test_deadline_on_every_call(export_dir, start_server) -> None:
    # batching holds a lone request for 3 s, longer than the 0.3 s deadline
    server = start_server(
        retrieval(export_dir),
        enable_batching=True,
        batching=BatchingConfig(batch_timeout_micros=3_000_000),
    )
    with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval", timeout=0.3) as c:
        with pytest.raises(DeadlineExceededError):
            c.recommend(user_ids=["u"], k=1)
        assert c.status()[0].state == "AVAILABLE"  # status is not batched: answers in time


def test_async_and_batch_calls(export_dir, start_server) -> None:
    server = start_server(retrieval(export_dir))
    with RecommenderClient(f"127.0.0.1:{server.port}", "retrieval") as c:
        futures = [c.recommend_async(user_ids=["u"] * 3, histories=[[], ["a"], ["a", "b"]], k=2)]
        futures.append(c.recommend_async(user_ids=["u"], k=9))
        recs = futures[0].result(timeout=10)
        # history excluded: [] -> a, b; [a] -> b, c; [a, b] -> c, d
        assert recs.item_ids.tolist() == [["a", "b"], ["b", "c"], ["c", "d"]]
        assert recs.item_ids.shape == recs.scores.shape == (3, 2)
        assert recs.scores.dtype == np.float32
        with pytest.raises(InvalidArgumentError):
            futures[1].result(timeout=10)  # 9 > catalogue of 6


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="not both"):
        RecommenderClient("127.0.0.1:1", "m", version=1, version_label="stable")
    with RecommenderClient("127.0.0.1:1", "m") as c:
        with pytest.raises(ValueError, match="give user_ids, histories or both"):
            c.recommend()
        with pytest.raises(ValueError, match="2 user_ids but 1 histories"):
            c.recommend(user_ids=["a", "b"], histories=[["x"]])
        with pytest.raises(ValueError, match="k=0, expected >= 1"):
            c.recommend(user_ids=["u"], k=0)
        with pytest.raises(ValueError, match="not one string"):
            c.recommend(user_ids="abc")
        with pytest.raises(ValueError, match="expected equal sizes"):
            c.rank(histories=[["a"]], candidates=[["a"], ["b"]])


def test_not_found_is_typed(export_dir, start_server) -> None:
    server = start_server(retrieval(export_dir))
    with (
        RecommenderClient(f"127.0.0.1:{server.port}", "ranking", max_retries=3) as c,
        pytest.raises(NotFoundError) as err,
    ):
        c.metadata()
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "ranking" in err.value.details


CHECK_IMPORTS = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(module: str) -> set[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS.format(module=module)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.slow
def test_client_import_pulls_no_training_code() -> None:
    # TensorFlow's own __init__ eagerly imports tf_keras' optimizers (TF_USE_LEGACY_KERAS=1)
    # whenever the tensorflow-serving-api protos are imported, so the baseline is
    # "what the serving protos alone import"; the client must add nothing model-related.
    baseline = modules_after("tensorflow_serving.apis.prediction_service_pb2_grpc")
    client = modules_after("tfrec.serving.client")
    added = client - baseline
    assert not [m for m in client if m.split(".")[0] in ("tensorflow_recommenders", "keras")]
    assert not [m for m in added if m.startswith("tf_keras")]
    tfrec_modules = sorted(m for m in client if m == "tfrec" or m.startswith("tfrec."))
    assert tfrec_modules == [
        "tfrec",
        "tfrec._compat",
        "tfrec._version",
        "tfrec.serving",
        "tfrec.serving.client",
    ]
