"""Parameter-server training: TF_CONFIG, flags, the partitioner, and a local cluster.

The cluster test runs ``tfrec train --workers 2 --ps 2 --strategy parameter_server`` (a
chief, two parameter servers and two workers on loopback ports) on tiny synthetic data
(300 users, 80 items, embedding_dim 8).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfrec.cli.main import build_parser
from tfrec.training import loop, multiworker, parameter_server, parameter_server_cli, worker
from tfrec.training.strategy import get_strategy
from tfrec.training.worker import reachable

CLUSTER = {"chief": ["c:1"], "ps": ["p0:2", "p1:3"], "worker": ["w0:4", "w1:5"]}
# Tiny retrieval run (300 training examples at batch 32: 10 steps per epoch).
TINY = ["--dataset", "synthetic", "--encoder", "mean", "--embedding-dim", "8"]


def _config(task: dict | None = None, cluster: dict | None = None) -> str:
    value = {"cluster": CLUSTER if cluster is None else cluster}
    return json.dumps(value if task is None else {**value, "task": task})


def _tfrec(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "tfrec.cli.main", "train", *args],
        env={**environ, **env}, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# ---------------------------------------------------------------- TF_CONFIG (no cluster)
def test_read_cluster_finds_each_task_and_what_the_chief_waits_for():
    ps1 = parameter_server.read_cluster(_config({"type": "ps", "index": 1}))
    assert (ps1.label, ps1.address, ps1.num_ps) == ("ps 1", "p1:3", 2)
    chief = parameter_server.read_cluster(_config({"type": "chief"}))  # index defaults to 0
    assert (chief.label, chief.address) == ("chief", "c:1")
    assert chief.peers() == [("ps 0", "p0:2"), ("ps 1", "p1:3"),
                             ("worker 0", "w0:4"), ("worker 1", "w1:5")]  # fmt: skip
    assert chief.tf_config == {"cluster": CLUSTER, "task": {"type": "chief", "index": 0}}
    assert parameter_server.has_ps_tasks(_config())
    assert not parameter_server.has_ps_tasks(json.dumps({"cluster": {"worker": ["a:1"]}}))
    assert not parameter_server.has_ps_tasks(None)
    assert not parameter_server.has_ps_tasks("{not json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            None,
            r"TF_CONFIG is not set; TrainingConfig.strategy='parameter_server' needs .*"
            r"`tfrec train --workers N --ps M`",
        ),
        (
            _config({"type": "chief"}, {"chief": ["c:1"], "worker": ["w:2"]}),
            r"TF_CONFIG cluster has no 'ps' tasks",
        ),
        (
            _config({"type": "chief"}, {**CLUSTER, "chief": ["c:1", "c:2"]}),
            r"cluster.chief has 2 address\(es\); parameter-server training needs exactly one",
        ),
        (_config({"type": "chief"}, {**CLUSTER, "worker": []}), r"cluster.worker is empty"),
        (_config(), r"TF_CONFIG has no 'task'; each task of a parameter-server cluster"),
        (_config({"type": "evaluator", "index": 0}), r"task=\{'type': 'evaluator'"),
        (_config({"type": "ps", "index": 2}), r"task index 2; expected 0\.\.1 \(cluster.ps has 2"),
        (
            _config({"type": "ps"}, {**CLUSTER, "evaluator": ["e:1"]}),
            r"job\(s\) \['evaluator'\]; ParameterServerStrategy takes 'chief', 'ps', 'worker'",
        ),
        (
            _config({"type": "ps"}, {**CLUSTER, "ps": ["nohost"]}),
            r"cluster.ps=\['nohost'\]; expected a list of 'host:port' strings",
        ),
    ],
)
def test_read_cluster_refuses_what_is_not_a_parameter_server_cluster(text, message):
    with pytest.raises(ValueError, match=message):
        parameter_server.read_cluster(text)


def test_multi_worker_tf_config_points_ps_clusters_to_parameter_server():
    with pytest.raises(ValueError, match="'ps' tasks trains with --strategy parameter_server"):
        worker.read_tf_config(_config({"type": "worker", "index": 0}))


def test_get_strategy_parameter_server_needs_ps_tasks_and_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG is not set"):
        get_strategy("parameter_server")
    monkeypatch.setenv("TF_CONFIG", _config({"type": "chief"}, {"worker": ["a:1", "b:2"]}))
    with pytest.raises(ValueError, match="no 'ps' tasks"):
        get_strategy("parameter_server")
    # "auto" with ps tasks in TF_CONFIG means parameter-server training too
    monkeypatch.setenv("TF_CONFIG", _config({"type": "ps", "index": 0}))
    with pytest.raises(ValueError, match=r"this process is ps 0 of a parameter-server cluster"):
        get_strategy("auto")


def test_chief_times_out_naming_every_task_that_did_not_answer():
    ports = multiworker.free_ports(3)  # nothing listens on these
    cluster = {"chief": [f"localhost:{ports[0]}"], "ps": [f"localhost:{ports[1]}"],
               "worker": [f"localhost:{ports[2]}"]}  # fmt: skip
    task = parameter_server.read_cluster(_config({"type": "chief"}, cluster))
    started = time.monotonic()
    with pytest.raises(TimeoutError) as error:
        parameter_server.connect(task, timeout=1)
    assert str(error.value).startswith(
        f"chief (localhost:{ports[0]}) waited 1 s for ps 0 at localhost:{ports[1]}, "
        f"worker 0 at localhost:{ports[2]}, which did not answer; start every ps and worker"
    )
    assert time.monotonic() - started < 10
    assert parameter_server.current() is None  # nothing was joined


# ---------------------------------------------------------------- flags
def _args(*argv: str):
    return build_parser().parse_args(["train", *TINY, "--output-dir", "out", *argv])


@pytest.mark.parametrize(
    ("argv", "kind", "message"),
    [
        (
            ["--workers", "2", "--ps", "2"],
            "retrieval",
            r"--ps 2: parameter servers need --strategy parameter_server \(training.strategy is "
            r"'auto'\)",
        ),
        (["--strategy", "parameter_server"], "ranking", "retrieval runs only, got --model ranking"),
        (
            ["--strategy", "parameter_server", "--worker-index", "0"],
            "retrieval",
            "--worker-index is for multi_worker",
        ),
        (
            ["--strategy", "parameter_server", "--workers", "2"],
            "retrieval",
            r"needs both --workers N and --ps M \(got --workers 2, --ps None\)",
        ),
        (
            ["--strategy", "parameter_server", "--workers", "2", "--ps", "0"],
            "retrieval",
            r"--workers 2 --ps 0; expected >= 1 of each",
        ),
        (["--strategy", "parameter_server", "--resume"], "retrieval", "--resume and --max-rest"),
    ],
)
def test_parameter_server_flag_errors(argv, kind, message):
    args = _args(*argv)
    with pytest.raises(ValueError, match=message):
        parameter_server_cli.wanted(args, kind, args.strategy or "auto")


def test_which_runs_are_parameter_server_runs(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert parameter_server_cli.wanted(_args("--strategy", "parameter_server"), "retrieval",
                                       "parameter_server")  # fmt: skip
    assert not parameter_server_cli.wanted(_args(), "retrieval", "auto")
    monkeypatch.setenv("TF_CONFIG", _config({"type": "worker", "index": 1}))
    assert parameter_server_cli.wanted(_args(), "retrieval", "auto")  # ps tasks in TF_CONFIG
    assert not parameter_server_cli.wanted(_args(), "retrieval", "default")
    # the launcher passes every option but its own (--workers, --ps) to each task
    args = _args("--strategy", "parameter_server", "--workers", "2", "--ps", "2",
                 "--min-shard-bytes", "1024", "--epochs", "1")  # fmt: skip
    again = build_parser().parse_args(["train", *multiworker.task_argv(args._train_parser, args)])
    assert (again.strategy, again.min_shard_bytes, again.epochs) == ("parameter_server", 1024, 1)
    assert (again.workers, again.ps, again.worker_index) == (None, None, None)


def test_parameter_server_configs_give_each_task_its_own_index():
    tasks = multiworker.parameter_server_configs("c:1", ["p:2", "p:3"], ["w:4"])
    assert [label for label, _ in tasks] == ["chief", "ps 0", "ps 1", "worker 0"]
    configs = [json.loads(config) for _, config in tasks]
    assert [c["task"] for c in configs] == [
        {"type": "chief", "index": 0},
        {"type": "ps", "index": 0},
        {"type": "ps", "index": 1},
        {"type": "worker", "index": 0},
    ]
    assert all(c["cluster"] == {"chief": ["c:1"], "ps": ["p:2", "p:3"], "worker": ["w:4"]}
               for c in configs)  # fmt: skip
    with pytest.raises(ValueError, match="expected at least one of each"):
        multiworker.parameter_server_configs("c:1", [], ["w:4"])


# The same fake task for every process: its TF_CONFIG task decides what it does.
_FAKE_TASK = (
    "import json, os, sys, time; task = json.loads(os.environ['TF_CONFIG'])['task']; "
    "label = task['type'] + str(task['index']); print('task', label, flush=True); "
    "sys.exit(3) if label == FAIL else time.sleep(1 if task['type'] == 'chief' else 60)"
)


def test_launcher_ends_with_the_chief_and_names_a_failed_task(capsys):
    started = time.monotonic()
    multiworker.launch_parameter_server(
        [sys.executable, "-c", _FAKE_TASK.replace("FAIL", "'none'")], 2, 2
    )
    assert time.monotonic() - started < 30  # the servers were stopped, not waited for
    printed = capsys.readouterr().out
    assert printed.count("TF_CONFIG='") == 5
    assert "[ps 1] task ps1" in printed and "[worker 0] task worker0" in printed
    with pytest.raises(multiworker.WorkersFailedError,
                       match=r"ps 1 \(localhost:\d+\) ended with exit code 3; stopped the other "
                       r"tasks; its output above \(prefixed \[ps 1\]\)"):  # fmt: skip
        multiworker.launch_parameter_server(
            [sys.executable, "-c", _FAKE_TASK.replace("FAIL", "'ps1'")], 1, 2
        )


# ---------------------------------------------------------------- partitioner, callbacks
def test_table_partitioner_shards_only_large_trainable_embedding_tables():
    partitioner = parameter_server.TablePartitioner(num_ps=2, min_shard_bytes=1024)
    decisions = []

    def spy(next_creator, **kwargs):  # runs after the partitioner's creator, like the PSS one
        value = kwargs["initial_value"]
        value = value() if callable(value) else value
        decisions.append((kwargs["name"], partitioner(value.shape, value.dtype)))
        return next_creator(**kwargs)

    ids = tf.constant([[2, 3]])

    def table(rows: int) -> None:  # zeros: only the shapes matter
        keras.layers.Embedding(rows, 8, embeddings_initializer="zeros")(ids)

    with tf.variable_creator_scope(spy):
        with partitioner.tables():
            table(82)  # 82 * 8 * 4 = 2,624 B: ceil(2.6) = 3, at most 2 ps -> 2 shards
            table(10)  # 320 B <= 1,024 B: whole
            tf.Variable(tf.zeros([82, 8]), name="embeddings", trainable=False)  # not trained
            keras.layers.Dense(200, kernel_initializer="zeros")(tf.zeros([1, 8]))  # not a table
        table(82)  # created outside tables(): whole
    assert decisions == [
        ("embeddings", [2, 1]),
        ("embeddings", [1, 1]),
        ("embeddings", [1, 1]),
        ("kernel", [1, 1]),
        ("bias", [1]),
        ("embeddings", [1, 1]),
    ]
    with pytest.raises(ValueError, match="--min-shard-bytes 0; expected >= 1"):
        parameter_server.TablePartitioner(num_ps=2, min_shard_bytes=0)


def test_coordinator_callback_drops_batch_logs_and_forwards_the_rest():
    calls = []

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch_end", epoch, logs))

        def on_train_batch_end(self, batch, logs=None):
            calls.append(("batch_end", batch, logs))

    proxy = loop.CoordinatorCallback(Recorder())
    assert proxy._supports_tf_logs  # Keras allows its batch hooks under the strategy
    proxy.on_train_batch_end(3, {"loss": object()})  # a RemoteValue in real runs
    proxy.on_epoch_end(0, {"loss": 1.5})
    assert calls == [("batch_end", 3, None), ("epoch_end", 0, {"loss": 1.5})]
    with pytest.raises(ValueError, match=r"dataset is a list; expected a tf\.keras\.utils"):
        loop._for_coordinator([], [], 3)
    creator = keras.utils.experimental.DatasetCreator(lambda context: None)
    with pytest.raises(ValueError, match="steps_per_epoch=None"):
        loop._for_coordinator([], creator, None)


def test_variable_placement_groups_the_parts_of_sharded_variables():
    def var(name, device, shape):
        return SimpleNamespace(name=f"{name}:0", device=device, shape=shape)

    model = SimpleNamespace(weights=[
        var("items/embeddings/part_0", "/job:ps/task:0", (41, 8)),
        var("items/embeddings/part_1", "/job:ps/task:1", (41, 8)),
        var("dense/kernel", "/job:ps/task:0", (8, 8)),
        var("total", "/job:ps/task:1", ()),
        var("total", "/job:ps/task:0", ()),  # another metric's variable, same name
    ])  # fmt: skip
    assert parameter_server.variable_placement(model) == {
        "items/embeddings": [
            {"device": "/job:ps/task:0", "shape": [41, 8]},
            {"device": "/job:ps/task:1", "shape": [41, 8]},
        ],
        "dense/kernel": [{"device": "/job:ps/task:0", "shape": [8, 8]}],
        "total": [{"device": "/job:ps/task:1", "shape": []}],
        "total (2)": [{"device": "/job:ps/task:0", "shape": []}],
    }


# ---------------------------------------------------------------- real processes
def test_ps_task_without_its_chief_times_out_naming_the_chief(tmp_path):
    ps_port, chief_port, worker_port = multiworker.free_ports(3)
    cluster = {"chief": [f"localhost:{chief_port}"], "ps": [f"localhost:{ps_port}"],
               "worker": [f"localhost:{worker_port}"]}  # fmt: skip
    # no --strategy: "auto" with ps tasks in TF_CONFIG is parameter-server training
    result = _tfrec(
        [*TINY, "--output-dir", str(tmp_path / "run"), "--worker-timeout", "2"],
        env={"TF_CONFIG": _config({"type": "ps", "index": 0}, cluster)}, timeout=180,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"ps 0 (localhost:{ps_port}) waited 2 s for the chief at localhost:{chief_port}, "
        "which did not answer; start the chief task" in result.stderr
    )
    assert not (tmp_path / "run").exists()  # a ps task builds no model and writes nothing


_SERVE = (
    "import logging, os, sys; logging.basicConfig(level=logging.INFO); "
    "from tfrec.training import parameter_server as ps; "
    "ps.serve(ps.read_cluster(os.environ['TF_CONFIG']), timeout=60, poll_seconds=0.2, "
    "gone_seconds=1.0)"
)


def test_ps_task_serves_until_its_chief_has_ended():
    ps_port, chief_port, worker_port = multiworker.free_ports(3)
    cluster = {"chief": [f"localhost:{chief_port}"], "ps": [f"localhost:{ps_port}"],
               "worker": [f"localhost:{worker_port}"]}  # fmt: skip
    chief = socket.create_server(("", chief_port))  # stands in for the chief's server
    environ = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env = {**environ, "TF_CONFIG": _config({"type": "ps", "index": 0}, cluster)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVE], env=env, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        chief.settimeout(120)
        connection, _ = chief.accept()  # the ps task found the chief
        connection.close()
        assert reachable(f"localhost:{ps_port}")  # its TensorFlow server is up
        chief.close()  # the chief ends: the task stops after gone_seconds without an answer
        _, err = proc.communicate(timeout=60)
    finally:
        chief.close()
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"ps 0: the chief (localhost:{chief_port}) has ended; stopping" in err


def _export_matches_the_saved_model(run: Path) -> None:
    """The export's top 5 for a few test users = the saved weights' scores (history excluded)."""
    from tfrec.training.experiment import load_experiment

    experiment = load_experiment(run)
    queries = experiment.queries("test")
    rows = np.arange(4)
    scores = experiment.model.score(queries.users[rows], queries.history[rows]).numpy()  # [4, I]
    np.put_along_axis(scores, queries.history[rows], -np.inf, axis=1)  # history excluded
    scores[:, :2] = -np.inf  # padding, OOV
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]  # [4, 5]
    tokens = np.array(experiment.item_vocab.all_tokens())  # [I], padding and OOV first
    serve = tf.saved_model.load(str(run / "export" / "retrieval" / "1"))
    history = [[experiment.item_vocab.token(int(i)) if i > 1 else "" for i in h]
               for h in queries.history[rows]]  # fmt: skip
    out = serve.signatures["serving_default"](
        user_id=tf.constant([experiment.user_vocab.token(int(u)) for u in queries.users[rows]]),
        history=tf.constant(history), k=tf.constant([5] * len(rows), tf.int32),
    )  # fmt: skip
    np.testing.assert_array_equal(out["item_ids"].numpy().astype(str), tokens[order])
    want = np.take_along_axis(scores, order, axis=1)
    np.testing.assert_allclose(out["scores"].numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_chief_two_ps_two_workers_shard_the_item_table_and_export(tmp_path):
    run = tmp_path / "run"
    started = time.monotonic()
    result = _tfrec(
        [*TINY, "--output-dir", str(run), "--epochs", "1", "--batch-size", "32",
         "--workers", "2", "--ps", "2", "--strategy", "parameter_server",
         "--min-shard-bytes", "1024"],
        env={"TMPDIR": str(tmp_path)}, timeout=600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    configs = [line for line in result.stdout.splitlines() if "TF_CONFIG='" in line]
    assert [line.split(":")[0].strip() for line in configs] == [
        "chief", "ps 0", "ps 1", "worker 0", "worker 1"
    ]  # fmt: skip
    # 80 items + padding + OOV = 82 rows of 8 float32 = 2,624 B > 1,024 B: split over both PS
    sharding = json.loads((run / "sharding.json").read_text())
    assert sharding["num_ps"] == 2
    table = sharding["variables"]["item_tower/item_embedding/embeddings"]
    assert [shard["shape"] for shard in table] == [[41, 8], [41, 8]]
    assert sorted(shard["device"] for shard in table) == [
        "/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"
    ]  # fmt: skip
    # the non-trainable genre table is read with 2-D gathers: it stays whole
    genres = sharding["variables"]["genre_table"]
    assert len(genres) == 1 and genres[0]["device"].startswith("/job:ps/")
    assert "largest difference from the sharded model: 0)" in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1.0
    for key in ("test/ndcg@10", "test/hr@10", "valid/ndcg@10"):
        assert math.isfinite(metrics[key]) and 0.0 < metrics[key] <= 1.0, key
    assert "epoch 1/1 done: 10 steps" in result.stderr  # ceil(300 / 32) steps over both workers
    _export_matches_the_saved_model(run)
    print(f"parameter-server cluster run: {seconds:.1f} s")
