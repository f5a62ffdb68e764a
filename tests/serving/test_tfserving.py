"""The same client and generated configs against the real tensorflow_model_server.

tensorflow_model_server is not on PyPI nor in Debian, so this runs only where the
binary is on PATH (e.g. inside the tensorflow/serving image); elsewhere it is
skipped with that reason.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from process_utils import stop_process

from tfrec.serving.client import NotFoundError, RecommenderClient
from tfrec.serving.model_config import BatchingConfig, discover_models, write_serving_configs
from tfrec.serving.tfserving import BINARY, TfServingFlags, tfserving_command

pytestmark = pytest.mark.skipif(
    shutil.which(BINARY) is None,
    reason=f"{BINARY} is not on PATH (not installable from PyPI/Debian); the local server "
    "tests cover the same API",
)


@pytest.mark.slow
def test_real_tensorflow_model_server(export_dir, tmp_path, free_port) -> None:
    paths = write_serving_configs(
        tmp_path / "cfg", discover_models(export_dir), BatchingConfig(batch_timeout_micros=1000)
    )
    argv = tfserving_command(
        TfServingFlags(
            port=free_port,
            model_config_file=str(paths.models_config),
            enable_batching=True,
            batching_parameters_file=str(paths.batching_parameters),
        ),
        shutil.which(BINARY),
    )
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with RecommenderClient(f"127.0.0.1:{free_port}", "retrieval", timeout=30) as c:
            c.wait_until_available(timeout=120)
            recs = c.recommend(user_ids=["u"], histories=[["a"]], k=2)
            assert recs.item_ids.tolist() == [["b", "c"]]
            np.testing.assert_allclose(recs.scores, [[5.01, 4.01]], rtol=1e-6)
            assert c.metadata().signatures["serving_default"].inputs["k"].dtype == "int32"
        with RecommenderClient(f"127.0.0.1:{free_port}", "ranking", timeout=30) as c:
            scores = c.rank(histories=[["a"]], candidates=[["a", "bb"]])
            np.testing.assert_allclose(scores, [[11.0, 2.0]])
        with RecommenderClient(f"127.0.0.1:{free_port}", "nope") as c, pytest.raises(NotFoundError):
            c.status()
    finally:
        stop_process(process)
