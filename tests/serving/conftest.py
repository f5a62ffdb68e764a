"""Tiny SavedModels matching the export contract, and a local-server fixture.

The models are tf.Modules (no Keras), so they build in well under a second:

* retrieval (``serving_default``): ``user_id`` string [B], ``history`` string
  [B, L], ``k`` int32 [B] -> ``item_ids`` string [B, max(k)], ``scores``
  float32 [B, max(k)]. Catalogue ``a..f``; score(item i) = (6 - i) + bias +
  0.01 * len(user_id); history items are excluded (score -1e9). In-graph asserts
  raise InvalidArgumentError for k <= 0 or k > 6. A second signature ``scale``
  (``x`` float32 [B], ``factor`` float32 scalar -> ``y`` = x * factor) is not
  batchable (scalar input).
* ranking (``serving_default``): ``user_id`` [B], ``history`` [B, L],
  ``candidates`` [B, C] -> ``scores`` [B, C] = len(candidate) + 10 * (number of
  times the candidate occurs in history).
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tensorflow as tf

ITEMS = ["a", "b", "c", "d", "e", "f"]


class TinyRetrieval(tf.Module):
    def __init__(self, bias: float):
        super().__init__()
        self.items = tf.constant(ITEMS)
        self.base = tf.constant([float(len(ITEMS) - i) + bias for i in range(len(ITEMS))])

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None], tf.int32, name="k"),
        ]
    )
    def serve(self, user_id, history, k):
        n = tf.size(self.items)
        checks = [
            tf.debugging.assert_positive(k, message="k must be > 0"),
            tf.debugging.assert_less_equal(k, n, message="k must be <= the catalogue size"),
        ]
        with tf.control_dependencies(checks):
            k_max = tf.reduce_max(k)
        batch = tf.shape(user_id)[0]
        user_bonus = 0.01 * tf.cast(tf.strings.length(user_id), tf.float32)[:, None]
        scores = tf.tile(self.base[None, :], [batch, 1]) + user_bonus  # [B, N]
        seen = tf.reduce_any(tf.equal(history[:, :, None], self.items[None, None, :]), axis=1)
        scores = tf.where(seen, tf.fill(tf.shape(scores), -1e9), scores)
        top = tf.math.top_k(scores, k=k_max)
        return {"item_ids": tf.gather(self.items, top.indices), "scores": top.values}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.float32, name="x"),
            tf.TensorSpec([], tf.float32, name="factor"),
        ]
    )
    def scale(self, x, factor):
        return {"y": x * factor}


class TinyRanker(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None, None], tf.string, name="candidates"),
        ]
    )
    def serve(self, user_id, history, candidates):
        del user_id
        length = tf.cast(tf.strings.length(candidates), tf.float32)  # [B, C]
        hits = tf.equal(candidates[:, :, None], history[:, None, :])  # [B, C, L]
        repeats = tf.reduce_sum(tf.cast(hits, tf.float32), axis=2)
        return {"scores": length + 10.0 * repeats}


def save_retrieval(path: Path, bias: float) -> Path:
    module = TinyRetrieval(bias)
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve, "scale": module.scale}
    )
    return path


def save_ranker(path: Path) -> Path:
    module = TinyRanker()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Version folders built once: retrieval bias 0 / bias 10, ranking."""
    root = tmp_path_factory.mktemp("saved_models")
    return {
        "retrieval_v1": save_retrieval(root / "retrieval_v1", bias=0.0),
        "retrieval_v2": save_retrieval(root / "retrieval_v2", bias=10.0),
        "ranking": save_ranker(root / "ranking"),
    }


@pytest.fixture
def export_dir(tmp_path: Path, saved_models: dict[str, Path]) -> Path:
    """<tmp>/exports/{retrieval/1, ranking/1} in the TF Serving layout."""
    base = tmp_path / "exports"
    shutil.copytree(saved_models["retrieval_v1"], base / "retrieval" / "1")
    shutil.copytree(saved_models["ranking"], base / "ranking" / "1")
    return base


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_server() -> Iterator[Callable[..., object]]:
    """Starts local ModelServers on 127.0.0.1 (free ports); stops them at teardown."""
    from tfrec.serving.server import ModelServer, ServerOptions

    servers = []

    def start(models=None, model_config_file=None, **options):
        options.setdefault("port", 0)
        options.setdefault("host", "127.0.0.1")
        server = ModelServer(
            models=models, options=ServerOptions(**options), model_config_file=model_config_file
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(grace=1.0)
