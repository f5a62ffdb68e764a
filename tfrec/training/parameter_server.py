"""Parameter-server training: the item table sharded over the ``ps`` tasks of ``TF_CONFIG``.

``ParameterServerStrategy`` keeps the variables on parameter servers and runs
the training steps on workers, so an embedding table larger than one machine's
memory is split over the PS tasks. Every task of such a cluster runs the same
``tfrec train ... --strategy parameter_server`` command; its ``TF_CONFIG`` task
says what it is:

* ``chief`` (one; the coordinator): :func:`connect` waits until every ``ps``
  and ``worker`` answers (naming the address it waited for after the timeout),
  creates the strategy with :class:`TablePartitioner`, builds the model (its
  variables are created on the PS), runs ``model.fit`` (each step is sent to a
  free worker; workers update the PS asynchronously), then evaluates and exports
  an unsharded copy of the trained model (:func:`unsharded_copy`);
* ``ps`` and ``worker``: :func:`serve` runs a ``tf.distribute.Server`` (they
  never build a model) until the chief has ended.

**Partitioner.** :class:`TablePartitioner` applies ``MinSizePartitioner(
min_shard_bytes, max_shards=<number of ps>)`` to the embedding tables (the
``embeddings`` of Keras ``Embedding`` layers: item, user and title-token tables)
created under :func:`sharded_tables`: a table of ``S`` bytes and ``R`` rows gets
``min(#ps, R, ceil(S / min_shard_bytes))`` shards along its rows, so a large item
table is split evenly over every PS while a small one stays whole (one read per
step instead of one per PS). ``FixedShardsPartitioner(#ps)`` would split every
table, however small. Optimizer slots sit beside their variable (a table's slots
are sharded like it). Every other variable (dense kernels, the non-trainable
item genre and title tables) stays whole on one PS (round-robin): the towers
read those with ``tf.gather`` on 2-D ids, which a ``ShardedVariable`` does not
support, and they grow with the catalogue only by a few numbers per item. The default threshold
(:data:`DEFAULT_MIN_SHARD_BYTES`, 256 KiB, TensorFlow's default) shards a table
of 64-dim float32 rows above 1,024 rows; ``--min-shard-bytes`` lowers it (the
tests shard an 82-row table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tfrec.training import worker

logger = logging.getLogger(__name__)

#: ``--min-shard-bytes`` default: variables larger than this are sharded.
DEFAULT_MIN_SHARD_BYTES = 256 << 10
#: The jobs of a parameter-server cluster.
JOBS = ("chief", "ps", "worker")
#: Seconds a ps/worker keeps serving after the chief stopped answering.
CHIEF_GONE_SECONDS = 10.0
_EXAMPLE = (
    '{"cluster": {"chief": ["host:port"], "ps": ["host:port", ...], "worker": '
    '["host:port", ...]}, "task": {"type": "chief"|"ps"|"worker", "index": i}}'
)


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """One task of a parameter-server cluster (from ``TF_CONFIG``).

    Attributes:
        jobs: ``{"chief": (address,), "ps": (...), "worker": (...)}``.
        task_type: ``"chief"``, ``"ps"`` or ``"worker"``.
        task_index: Its index within ``jobs[task_type]``.
        tf_config: The complete ``TF_CONFIG`` (task included) as a dict.
    """

    jobs: Mapping[str, tuple[str, ...]]
    task_type: str
    task_index: int
    tf_config: dict[str, Any]

    @property
    def address(self) -> str:
        """This task's ``host:port``."""
        return self.jobs[self.task_type][self.task_index]

    @property
    def label(self) -> str:
        """``"chief"``, ``"ps 1"``, ``"worker 0"``."""
        return "chief" if self.task_type == "chief" else f"{self.task_type} {self.task_index}"

    @property
    def num_ps(self) -> int:
        """Parameter servers in the cluster."""
        return len(self.jobs["ps"])

    def peers(self) -> list[tuple[str, str]]:
        """``(label, address)`` of every ps and worker (what the chief waits for)."""
        return [(f"{job} {i}", a) for job in ("ps", "worker") for i, a in enumerate(self.jobs[job])]


def has_ps_tasks(text: str | None) -> bool:
    """Whether a ``TF_CONFIG`` value names ``ps`` tasks (False for unset or broken JSON)."""
    try:
        cluster = json.loads(text or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(cluster, dict) and bool(cluster.get("ps"))


def read_cluster(text: str | None) -> ClusterTask:
    """Parses and checks the ``TF_CONFIG`` of a parameter-server cluster.

    Args:
        text: The JSON (the environment variable's value).

    Raises:
        ValueError: Unset, not JSON, no ``ps`` task, not exactly one chief, no
            worker, another job, a bad address, or a missing or bad ``task``.
    """
    unset = (
        "TF_CONFIG is not set; TrainingConfig.strategy='parameter_server' needs a cluster "
        f"with parameter servers: {_EXAMPLE} (`tfrec train --workers N --ps M` starts one "
        "on this machine)"
    )
    cluster, task = worker.parse_tf_config(text, JOBS, unset, "ParameterServerStrategy")
    if not cluster["ps"]:
        raise ValueError(
            "TF_CONFIG cluster has no 'ps' tasks; TrainingConfig.strategy='parameter_server' "
            f"needs at least one parameter server in cluster.ps: {_EXAMPLE}"
        )
    if len(cluster["chief"]) != 1:
        raise ValueError(
            f"TF_CONFIG cluster.chief has {len(cluster['chief'])} address(es); "
            "parameter-server training needs exactly one chief (the coordinator)"
        )
    if not cluster["worker"]:
        raise ValueError(
            "TF_CONFIG cluster.worker is empty; parameter-server training needs at least one "
            "worker (the chief only coordinates)"
        )
    if task is None:
        raise ValueError(
            "TF_CONFIG has no 'task'; each task of a parameter-server cluster needs its own "
            '{"type": "chief"|"ps"|"worker", "index": i}'
        )
    if not isinstance(task, dict) or task.get("type") not in JOBS:
        raise ValueError(
            f"TF_CONFIG task={task!r}; expected {{'type': 'chief'|'ps'|'worker', 'index': i}}"
        )
    index = worker.task_index(task, cluster)
    jobs = {job: tuple(cluster[job]) for job in JOBS}
    full = {"cluster": cluster, "task": {"type": task["type"], "index": index}}
    return ClusterTask(jobs=jobs, task_type=task["type"], task_index=index, tf_config=full)


class TablePartitioner:
    """The ``variable_partitioner``: embedding tables over the PS, the rest whole.

    Tables created under :meth:`tables` get ``MinSizePartitioner(min_shard_bytes,
    max_shards=num_ps)`` shards; any other variable one shard (see the module
    docstring).

    Args:
        num_ps: Parameter servers (>= 1).
        min_shard_bytes: A table larger than this is split (>= 1).

    Raises:
        ValueError: ``num_ps < 1`` or ``min_shard_bytes < 1``.
    """

    def __init__(self, num_ps: int, min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES):
        if num_ps < 1:
            raise ValueError(f"num_ps={num_ps}; expected >= 1 parameter server")
        if isinstance(min_shard_bytes, bool) or min_shard_bytes < 1:
            raise ValueError(f"--min-shard-bytes {min_shard_bytes}; expected >= 1")
        import tensorflow as tf  # noqa: PLC0415

        self.num_ps = num_ps
        self.min_shard_bytes = min_shard_bytes
        self._inner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=min_shard_bytes, max_shards=num_ps
        )
        self._local = threading.local()  # .table: the variable being created is a table

    def __call__(self, shape: Any, dtype: Any, axis: int = 0) -> list[int]:
        """Shards per axis of a new variable (``[k, 1, ...]``)."""
        if getattr(self._local, "table", False):
            return list(self._inner(shape, dtype, axis))
        return [1] * len(shape)

    @contextlib.contextmanager
    def tables(self) -> Iterator[None]:
        """Marks the trainable ``embeddings`` variables created inside as tables.

        Enter it inside ``strategy.scope()`` (its variable creator must run
        before the strategy's, which calls the partitioner).
        """
        import tensorflow as tf  # noqa: PLC0415

        def creator(next_creator: Callable[..., Any], **kwargs: Any) -> Any:
            name = str(kwargs.get("name") or "").rsplit("/", 1)[-1]
            table = kwargs.get("trainable") is not False and name.startswith("embeddings")
            previous = getattr(self._local, "table", False)
            self._local.table = table
            try:
                return next_creator(**kwargs)
            finally:
                self._local.table = previous

        with tf.variable_creator_scope(creator):
            yield


def sharded_tables() -> contextlib.AbstractContextManager[None]:
    """:meth:`TablePartitioner.tables` of this chief's strategy (a no-op elsewhere)."""
    partitioner = _STATE.get("partitioner")
    return partitioner.tables() if partitioner is not None else contextlib.nullcontext()


_STATE: dict[str, Any] = {}


def connect(
    task: ClusterTask,
    timeout: float = worker.DEFAULT_TIMEOUT,
    min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
) -> Any:
    """Creates the chief's ``ParameterServerStrategy`` (once per process).

    Args:
        task: This process (:func:`read_cluster`); must be the chief.
        timeout: Seconds to wait for every ps and worker.
        min_shard_bytes: Tables larger than this are sharded (:class:`TablePartitioner`).

    Returns:
        The strategy (also returned by ``get_strategy("parameter_server")`` afterwards).

    Raises:
        ValueError: Not the chief, ``timeout <= 0``, or another cluster was joined.
        TimeoutError: A ps or worker did not answer within ``timeout`` (named).
    """
    if task.task_type != "chief":
        raise ValueError(
            f"this process is {task.label} of a parameter-server cluster (TF_CONFIG task); "
            "only the chief builds and trains the model, ps and worker tasks serve (tfrec "
            "train does that for them: tfrec.training.parameter_server.serve)"
        )
    if not timeout > 0:
        raise ValueError(f"--worker-timeout {timeout}; expected > 0 seconds")
    if "strategy" in _STATE:
        if _STATE["task"] != task:
            raise ValueError("this process already joined another parameter-server cluster")
        return _STATE["strategy"]
    import tensorflow as tf  # noqa: PLC0415

    import tfrec  # noqa: F401, PLC0415  (Keras-2 guard)

    logger.info("chief (%s): waiting for %d ps and %d worker(s)", task.address,
                task.num_ps, len(task.jobs["worker"]))  # fmt: skip
    worker.wait_for_peers(
        "chief", task.address, task.peers(), timeout, listen=False,
        hint="start every ps and worker task of TF_CONFIG's cluster (or raise --worker-timeout)",
    )  # fmt: skip
    partitioner = TablePartitioner(task.num_ps, min_shard_bytes)
    os.environ["TF_CONFIG"] = json.dumps(task.tf_config)
    strategy = tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver(),
        variable_partitioner=partitioner,
    )
    logger.info(
        "Distribution: ParameterServerStrategy, %d ps, %d worker(s), embedding tables over "
        "%d bytes sharded", task.num_ps, len(task.jobs["worker"]), min_shard_bytes,
    )  # fmt: skip
    _STATE.update(task=task, strategy=strategy, partitioner=partitioner)
    return strategy


def current() -> ClusterTask | None:
    """This chief's task (None when it created no ``ParameterServerStrategy``)."""
    return _STATE.get("task")


def wanted() -> bool:
    """Whether ``"auto"`` means parameter-server training here (joined, or ps in TF_CONFIG)."""
    return current() is not None or has_ps_tasks(os.environ.get("TF_CONFIG"))


def joined_strategy() -> Any:
    """The strategy of :func:`connect`, connecting to the cluster of ``TF_CONFIG`` if needed."""
    if "strategy" not in _STATE:
        connect(read_cluster(os.environ.get("TF_CONFIG")))
    return _STATE["strategy"]


def is_parameter_server(strategy: Any) -> bool:
    """Whether ``strategy`` is a ``ParameterServerStrategy`` (the coordinator's)."""
    import tensorflow as tf  # noqa: PLC0415

    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def serve(
    task: ClusterTask,
    timeout: float = worker.DEFAULT_TIMEOUT,
    poll_seconds: float = 1.0,
    gone_seconds: float = CHIEF_GONE_SECONDS,
) -> None:
    """Runs this ps/worker task's ``tf.distribute.Server`` until the chief has ended.

    The server starts at once; the task then waits for the chief's address to
    answer (the chief opens it when it creates its strategy) and returns once it
    has not answered for ``gone_seconds`` (the chief finished or failed), so
    the pods of a cluster end with the run.

    Raises:
        ValueError: ``task`` is the chief.
        TimeoutError: The chief did not answer within ``timeout`` (named).
    """
    if task.task_type == "chief":
        raise ValueError("serve(): the chief trains (connect), it does not serve")
    import tensorflow as tf  # noqa: PLC0415

    spec = tf.train.ClusterSpec({job: list(a) for job, a in task.jobs.items() if a})
    server = tf.distribute.Server(spec, job_name=task.task_type, task_index=task.task_index,
                                  protocol="grpc", start=True)  # fmt: skip
    chief = task.jobs["chief"][0]
    logger.info("%s: serving at %s; waiting for the chief at %s", task.label, server.target, chief)
    worker.wait_for_peers(
        task.label, task.address, [("the chief", chief)], timeout, listen=False,
        hint="start the chief task of TF_CONFIG's cluster (or raise --worker-timeout)",
    )  # fmt: skip
    seen = time.monotonic()
    while time.monotonic() - seen < gone_seconds:
        time.sleep(poll_seconds)
        if worker.reachable(chief, timeout=poll_seconds):
            seen = time.monotonic()
    logger.info("%s: the chief (%s) has ended; stopping", task.label, chief)


def dataset_creator(build: Callable[[Any], Any]) -> Any:
    """A ``DatasetCreator`` for ``model.fit`` under the strategy: ``build(seed)`` per worker.

    TensorFlow traces the dataset function once and runs it on every worker,
    without a worker index (its input context says pipeline 0 of 1
    everywhere), so a fixed shuffle seed would give every worker the same batch
    order. ``seed`` is therefore a scalar int64 tensor drawn at run time on
    each worker from its clock (microseconds). ``build`` must repeat forever:
    ``fit`` ends each epoch after ``steps_per_epoch`` steps over all workers.
    """
    import tensorflow as tf  # noqa: PLC0415
    import tf_keras as keras  # noqa: PLC0415

    def dataset_fn(context: Any) -> Any:
        del context  # no worker index under ParameterServerStrategy
        seed = tf.cast(tf.timestamp() * 1e6, tf.int64) % (2**31 - 1)  # differs per worker
        return build(seed)

    return keras.utils.experimental.DatasetCreator(dataset_fn)


def variable_placement(model: Any) -> dict[str, list[dict[str, Any]]]:
    """``{variable: [{"device": ..., "shape": [...]}, ...]}`` (one entry per shard).

    Keras lists the shards of a ``ShardedVariable`` as ``<name>/part_<k>``; they
    are grouped under ``<name>`` in shard order.
    """
    placement: dict[str, list[dict[str, Any]]] = {}
    sharded = None  # the key of the ShardedVariable whose parts are being listed
    for variable in model.weights:
        name = variable.name.removesuffix(":0")
        match = re.fullmatch(r"(.*)/part_(\d+)", name)
        entry = {"device": variable.device, "shape": [int(d) for d in variable.shape]}
        if match and int(match.group(2)) > 0 and sharded is not None:
            placement[sharded].append(entry)
            continue
        base = match.group(1) if match else name
        key, copies = base, 1
        while key in placement:  # e.g. the "total"/"count" of several metrics
            copies += 1
            key = f"{base} ({copies})"
        placement[key] = [entry]
        sharded = key if match else None
    return placement


def record_sharding(model: Any, output_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Logs the sharded variables (INFO) and writes ``<output_dir>/sharding.json``.

    Returns:
        ``{"num_ps": ..., "variables": variable_placement(model)}``.
    """
    task = current()
    report = {"num_ps": task.num_ps if task else None, "variables": variable_placement(model)}
    for name, shards in report["variables"].items():
        if len(shards) > 1:
            parts = ", ".join(f"{s['shape']} on {s['device']}" for s in shards)
            logger.info("sharded variable %s: %d shards: %s", name, len(shards), parts)
    if output_dir is not None:
        path = Path(output_dir) / "sharding.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def unsharded_copy(model: Any, build: Callable[[], Any], probe: Callable[[Any], Any]) -> Any:
    """A plain (one-device) copy of a model trained with sharded variables.

    The chief evaluates and exports this copy: the same weights in ordinary
    variables, so the evaluation graphs, ``save()`` and the SavedModel export
    are those of a single-process run. The weights go through a checkpoint
    (which stores each ``ShardedVariable`` as one full tensor), written to a
    temporary directory on the chief. The largest difference of ``probe``
    between the two models is logged (0 when the copy is exact).

    Args:
        model: The trained model (variables on the PS).
        build: Builds the same architecture outside any strategy scope, with
            its variables created (e.g. by calling it once).
        probe: Model -> a tensor that depends on the weights (e.g. every
            item vector), compared between the two models.

    Returns:
        The copy (optimizer state not copied).
    """
    import tensorflow as tf  # noqa: PLC0415

    plain = build()
    with tempfile.TemporaryDirectory(prefix="tfrec-unshard-") as directory:
        prefix = str(Path(directory) / "weights")
        model.save_weights(prefix)
        plain.load_weights(prefix).expect_partial()
    difference = float(tf.reduce_max(tf.abs(probe(plain) - probe(model))))
    logger.info(
        "evaluating and exporting an unsharded copy of the trained model on the chief "
        "(largest difference from the sharded model: %g)",
        difference,
    )
    return plain
