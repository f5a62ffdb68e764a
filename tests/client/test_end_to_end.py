"""tfrec_client against tfrec's local server (and the real tensorflow_model_server if on PATH).

Tiny models from tests/serving/conftest.py: retrieval over items a..f with
score(item i) = (6 - i) + bias + 0.01 * len(user_id), history items excluded;
its ``scale`` signature returns y = x * factor. Ranking: score = len(candidate)
+ 10 * (times the candidate occurs in the history).
"""

from __future__ import annotations

import shutil
import subprocess

import grpc
import numpy as np
import pytest
import tfrec_client
from process_utils import stop_process
from tfrec_client import (
    DeadlineExceededError,
    NotFoundError,
    RecommenderClient,
    TensorSpec,
    UnavailableError,
)

from tfrec.serving.model_config import (
    BatchingConfig,
    ModelEntry,
    discover_models,
    write_serving_configs,
)
from tfrec.serving.tfserving import BINARY, TfServingFlags, tfserving_command


def serve(export_dir, start_server, **options):
    models = [
        ModelEntry("retrieval", str(export_dir / "retrieval")),
        ModelEntry("ranking", str(export_dir / "ranking")),
    ]
    server = start_server(models, **options)
    return f"127.0.0.1:{server.port}"


def test_predict_recommend_rank(export_dir, start_server) -> None:
    target = serve(export_dir, start_server)
    with RecommenderClient(target, "retrieval", max_retries=0) as c:
        recs = c.recommend(user_ids=["u", "user"], histories=[["a"], []], k=2)
        # "u": a excluded -> b = 5 + 0.01, c = 4 + 0.01; "user" (4 chars): a, b + 0.04
        assert recs.item_ids.tolist() == [["b", "c"], ["a", "b"]]
        np.testing.assert_allclose(recs.scores, [[5.01, 4.01], [6.04, 5.04]], rtol=1e-6)
        raw = c.predict({"user_id": ["u"], "history": [[""]], "k": np.int32([1])})
        assert raw["item_ids"].dtype == object and raw["item_ids"].tolist() == [[b"a"]]
    with RecommenderClient(target, "retrieval", signature_name="scale", max_retries=0) as c:
        # float32 vector * float32 scalar: 1.5 * 2 = 3, -4 * 2 = -8
        out = c.predict({"x": np.float32([1.5, -4.0]), "factor": np.float32(2.0)})
        assert out["y"].dtype == np.float32 and out["y"].tolist() == [3.0, -8.0]
    with RecommenderClient(target, "ranking", max_retries=0) as c:
        # "bb" in history twice -> 2 + 20 = 22; "c" -> 1; padding -> NaN
        scores = c.rank(histories=[["bb", "x", "bb"], []], candidates=[["bb", "c"], ["dd"]])
        np.testing.assert_allclose(scores, [[22.0, 1.0], [2.0, np.nan]])


def test_metadata_and_status(export_dir, start_server) -> None:
    target = serve(export_dir, start_server)
    with RecommenderClient(target, "retrieval", max_retries=0) as c:
        meta = c.metadata()
        status = c.status()
    assert (meta.model_name, meta.version) == ("retrieval", 1)
    assert sorted(meta.signatures) == ["scale", "serving_default"]
    assert meta.signatures["serving_default"].inputs == {
        "user_id": TensorSpec("string", (None,)),
        "history": TensorSpec("string", (None, None)),
        "k": TensorSpec("int32", (None,)),
    }
    assert meta.signatures["scale"].inputs["factor"] == TensorSpec("float32", ())
    assert [(s.version, s.state, s.error_code) for s in status] == [(1, "AVAILABLE", 0)]


def test_typed_not_found_and_no_retry(export_dir, start_server) -> None:
    target = serve(export_dir, start_server)
    with RecommenderClient(target, "nope", max_retries=3) as c:
        with pytest.raises(NotFoundError) as err:
            c.status()
        assert err.value.code == grpc.StatusCode.NOT_FOUND and "nope" in err.value.details
        assert isinstance(err.value, tfrec_client.ServingError)
    with (
        RecommenderClient(target, "retrieval", version=9, max_retries=0) as c,
        pytest.raises(NotFoundError),
    ):
        c.recommend(user_ids=["u"], k=1)


def test_deadline(export_dir, start_server) -> None:
    # batching holds a lone request for 3 s, longer than the 0.3 s deadline
    target = serve(
        export_dir,
        start_server,
        enable_batching=True,
        batching=BatchingConfig(batch_timeout_micros=3_000_000),
    )
    with RecommenderClient(target, "retrieval", timeout=0.3, max_retries=0) as c:
        with pytest.raises(DeadlineExceededError) as err:
            c.recommend(user_ids=["u"], k=1)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_futures(export_dir, start_server) -> None:
    target = serve(export_dir, start_server)
    with RecommenderClient(target, "retrieval", max_retries=0) as c:
        ok = c.recommend_async(user_ids=["u"], histories=[["a", "b"]], k=1)
        bad = c.predict_async({"user_id": ["u"], "history": [[""]], "k": np.int32([0])})
        assert ok.result(timeout=30).item_ids.tolist() == [["c"]]  # a, b excluded
        with pytest.raises(tfrec_client.InvalidArgumentError, match="k must be > 0"):
            bad.result(timeout=30)


def test_unreachable_server_is_unavailable(free_port) -> None:
    with (
        RecommenderClient(f"127.0.0.1:{free_port}", "retrieval", max_retries=0, timeout=2) as c,
        pytest.raises(UnavailableError),
    ):
        c.status()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(BINARY) is None,
    reason=f"{BINARY} is not on PATH (not installable from PyPI/Debian); the local-server "
    "tests above cover the same calls",
)
def test_real_tensorflow_model_server(export_dir, tmp_path, free_port) -> None:
    paths = write_serving_configs(
        tmp_path / "cfg", discover_models(export_dir), BatchingConfig(batch_timeout_micros=1000)
    )
    argv = tfserving_command(
        TfServingFlags(port=free_port, model_config_file=str(paths.models_config)),
        shutil.which(BINARY),
    )
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with RecommenderClient(f"127.0.0.1:{free_port}", "retrieval", timeout=30) as c:
            c.wait_until_available(timeout=120)
            recs = c.recommend(user_ids=["u"], histories=[["a"]], k=2)
            assert recs.item_ids.tolist() == [["b", "c"]]
            assert c.metadata().signatures["serving_default"].inputs["k"].dtype == "int32"
            assert c.status()[0].state == "AVAILABLE"
        with RecommenderClient(f"127.0.0.1:{free_port}", "nope") as c, pytest.raises(NotFoundError):
            c.status()
    finally:
        stop_process(process)
