"""Data, split, metric and timing helpers of the retrieval speed benchmark.

Shared by both measured parts of :mod:`benchmarks.retrieval_speed` (the TFRS
tutorial replay and tfrec's model) so they see the same pairs, the same split
and the same metric. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report

TOP_K = 100


@dataclasses.dataclass
class Settings:
    """Sizes of one run: the tutorial's (``full``) or tiny ones (``quick``).

    Attributes:
        num_train: Training pairs taken first from the shuffled data.
        num_test: Test pairs taken after them.
        shuffle_buffer: Buffer of the seeded split shuffle and the train shuffle.
        batch_size: Tutorial training batch.
        eval_batch_size: Tutorial test batch.
        candidate_batch: Batch of the candidate dataset given to FactorizedTopK.
        embedding_dim: Tower output size.
        learning_rate: Tutorial Adagrad learning rate.
        epochs: Tutorial epochs.
        seed: Global and shuffle seed.
        top_k: Cut-off of the reported accuracy (one of FactorizedTopK's ks).
    """

    num_train: int = 80_000
    num_test: int = 20_000
    shuffle_buffer: int = 100_000
    batch_size: int = 8192
    eval_batch_size: int = 4096
    candidate_batch: int = 128
    embedding_dim: int = 32
    learning_rate: float = 0.1
    epochs: int = 3
    seed: int = 42
    top_k: int = TOP_K


def quick_settings(num_pairs: int) -> Settings:
    """Tiny settings for a smoke run on ``num_pairs`` synthetic pairs (80/20 split)."""
    num_train = int(num_pairs * 0.8)
    return Settings(
        num_train=num_train,
        num_test=num_pairs - num_train,
        shuffle_buffer=num_pairs,
        batch_size=128,
        eval_batch_size=128,
        candidate_batch=16,
        embedding_dim=4,
        epochs=2,
        top_k=10,
    )


@dataclasses.dataclass
class PairData:
    """(user, movie) pairs in loader order plus the candidate catalogue.

    Attributes:
        users: ``[N]`` user ids (str).
        titles: ``[N]`` movie titles (str), the tutorial's item key.
        catalogue: ``[M]`` one title per catalogue movie (may repeat: ml-100k
            has 1,682 movies but 1,664 distinct titles).
        source: Where the data came from (for the report).
    """

    users: np.ndarray
    titles: np.ndarray
    catalogue: np.ndarray
    source: str


def default_data_dir() -> Path:
    """``$TFREC_DATA_DIR`` if set, else ``../shared/datasets`` beside the repository."""
    env = os.environ.get("TFREC_DATA_DIR")
    return Path(env) if env else _report.REPO_ROOT.parent / "shared" / "datasets"


def load_pairs(data_dir: str | os.PathLike[str] | None, quick: bool) -> PairData:
    """Loads (user_id, movie_title) pairs with ``tfrec.data.load_dataset``.

    Args:
        data_dir: Folder holding ``ml-100k/`` (ignored with ``quick``).
        quick: Use a small synthetic dataset instead of ml-100k.

    Returns:
        The pairs in the loader's order (sorted by user, then time) and the catalogue.

    Raises:
        ValueError: An interaction whose item has no title in the item table.
    """
    from tfrec.data.loaders import load_dataset

    if quick:
        data = load_dataset("synthetic", num_users=60, num_items=30, seed=0)
        source = "synthetic (num_users=60, num_items=30, seed=0)"
    else:
        data = load_dataset("ml-100k", data_dir=data_dir)
        source = f"ml-100k from {Path(data_dir).resolve() if data_dir else 'default data dir'}"
    title_of = dict(zip(data.items["item_id"], data.items["title"], strict=True))
    missing = sorted(set(data.frame["item_id"]) - set(title_of))
    if missing:
        raise ValueError(f"{data.name}: items without a title in the item table: {missing[:5]}")
    return PairData(
        users=data.frame["user_id"].to_numpy(dtype=str),
        titles=data.frame["item_id"].map(title_of).to_numpy(dtype=str),
        catalogue=data.items["title"].to_numpy(dtype=str),
        source=source,
    )


def tutorial_split(
    num_examples: int, num_train: int, num_test: int, seed: int = 42, buffer: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the tutorial's split, without materialising the features.

    Replays ``tf.random.set_seed(seed)``; ``ds.shuffle(buffer, seed=seed,
    reshuffle_each_iteration=False)``; ``take(num_train)`` / ``skip(num_train)
    .take(num_test)`` on ``range(num_examples)``. The permutation of a seeded
    shuffle depends only on the seeds, the buffer size and the number of
    elements, so row ``train[i]`` of the data is the tutorial's i-th training pair.

    Args:
        num_examples: Rows in the data.
        num_train: Training rows.
        num_test: Test rows.
        seed: Global and operation seed.
        buffer: Shuffle buffer size.

    Returns:
        ``(train_indices [num_train], test_indices [<= num_test])`` int64 arrays.

    Raises:
        ValueError: ``num_train`` is not in ``1..num_examples``.
    """
    if not 1 <= num_train <= num_examples:
        raise ValueError(f"num_train={num_train}; expected 1..{num_examples}")
    import tensorflow as tf

    import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow)

    tf.random.set_seed(seed)
    shuffled = tf.data.Dataset.range(num_examples).shuffle(
        buffer, seed=seed, reshuffle_each_iteration=False
    )
    order = np.fromiter(shuffled.as_numpy_iterator(), dtype=np.int64, count=num_examples)
    return order[:num_train], order[num_train : num_train + num_test]


def catalogue_rows(catalogue: np.ndarray, titles: np.ndarray) -> np.ndarray:
    """Row of each title in the catalogue (the first row of a duplicated title).

    Args:
        catalogue: ``[M]`` one title per catalogue row.
        titles: ``[N]`` titles to look up.

    Returns:
        ``[N]`` int64 row indices.

    Raises:
        ValueError: A title that is not in the catalogue (the first few are named).
    """
    first: dict[str, int] = {}
    for row, title in enumerate(catalogue.tolist()):
        first.setdefault(title, row)
    missing = sorted({t for t in titles.tolist() if t not in first})
    if missing:
        raise ValueError(f"titles not in the catalogue: {missing[:5]}")
    return np.array([first[t] for t in titles.tolist()], dtype=np.int64)


def top_k_accuracy(
    query: np.ndarray,
    candidates: np.ndarray,
    true_rows: np.ndarray,
    k: int = TOP_K,
    chunk: int = 4096,
) -> float:
    """FactorizedTopK's score-based top-k categorical accuracy, in numpy.

    A query is a hit when fewer than ``k`` candidate rows score strictly higher
    than its true candidate row (``tf.math.in_top_k`` semantics: ties with the
    true score do not push it out). Every score, the true one included, comes
    from the same float32 matmul, so the true row (and rows with an identical
    vector, such as a duplicated title) tie exactly with it. TFRS computes the
    true score separately (``reduce_sum(query * candidate)``), so float rounding
    can make it count the true row itself as higher: its value can be lower by a
    few queries in ten thousand.

    Args:
        query: ``[N, D]`` query vectors.
        candidates: ``[M, D]`` the candidate set (duplicates count separately).
        true_rows: ``[N]`` row of ``candidates`` holding each query's true candidate.
        k: Cut-off.
        chunk: Queries scored at once (memory bound ``chunk * M`` floats).

    Returns:
        Mean hit rate in [0, 1].

    Raises:
        ValueError: Mismatched shapes, no queries, a row out of range or ``k < 1``.
    """
    query = np.asarray(query, np.float32)
    candidates = np.asarray(candidates, np.float32)
    true_rows = np.asarray(true_rows)
    if query.ndim != 2 or query.shape[0] == 0:
        raise ValueError(f"query {query.shape}: expected a non-empty [N, D] array")
    if candidates.ndim != 2 or candidates.shape[1] != query.shape[1]:
        raise ValueError(f"candidates {candidates.shape}: expected [M, {query.shape[1]}]")
    if true_rows.shape != (query.shape[0],) or true_rows.dtype.kind not in "iu":
        raise ValueError(
            f"true_rows {true_rows.shape} {true_rows.dtype}: expected [{query.shape[0]}] integers"
        )
    if true_rows.min() < 0 or true_rows.max() >= candidates.shape[0]:
        raise ValueError(f"true_rows: expected rows in 0..{candidates.shape[0] - 1}")
    if k < 1:
        raise ValueError(f"k={k}; expected >= 1")
    hits = 0
    for start in range(0, query.shape[0], chunk):
        scores = query[start : start + chunk] @ candidates.T  # [n, M]
        rows = true_rows[start : start + chunk]  # [n]
        positive = scores[np.arange(len(rows)), rows]  # [n]
        above = np.sum(scores > positive[:, None], axis=1)  # [n]
        hits += int(np.sum(above < k))
    return hits / query.shape[0]


def epoch_timer() -> Any:
    """A tf-keras callback recording each epoch's seconds.

    ``.seconds`` holds wall seconds (``time.perf_counter``) and ``.cpu_seconds``
    the CPU seconds of the whole process, all threads (``time.process_time``),
    which other processes competing for the cores inflate much less.
    """
    import time

    import tf_keras as keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self._start = (0.0, 0.0)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start[0])
            self.cpu_seconds.append(time.process_time() - self._start[1])

    return EpochTimer()


def throughput(
    num_train: int,
    epoch_seconds: Sequence[float],
    epoch_cpu_seconds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Training throughput from per-epoch times.

    Args:
        num_train: Training examples per epoch.
        epoch_seconds: Wall seconds of each epoch, in order.
        epoch_cpu_seconds: Process CPU seconds of each epoch (optional).

    Returns:
        ``examples_per_s`` over epochs 2.. (None with a single epoch),
        ``examples_per_s_all_epochs`` (first epoch included), ``first_epoch_s``,
        ``epoch_seconds``, ``timed_epochs``; with CPU times also
        ``epoch_cpu_seconds`` and ``examples_per_cpu_s`` (epochs 2..).
    """
    seconds = [float(s) for s in epoch_seconds]
    timed = seconds[1:]
    out: dict[str, Any] = {
        "epoch_seconds": [round(s, 4) for s in seconds],
        "first_epoch_s": round(seconds[0], 4) if seconds else None,
        "timed_epochs": len(timed),
        "examples_per_s": round(num_train * len(timed) / sum(timed), 1) if timed else None,
        "examples_per_s_all_epochs": (
            round(num_train * len(seconds) / sum(seconds), 1) if seconds else None
        ),
    }
    if epoch_cpu_seconds is not None:
        cpu = [float(s) for s in epoch_cpu_seconds]
        out["epoch_cpu_seconds"] = [round(s, 4) for s in cpu]
        timed_cpu = sum(cpu[1:])
        out["examples_per_cpu_s"] = (
            round(num_train * len(cpu[1:]) / timed_cpu, 1) if timed_cpu > 0 else None
        )
    return out


def decode_strings(values: np.ndarray) -> np.ndarray:
    """tf.string values (bytes, UTF-8) -> a numpy str array."""
    return np.array([v.decode("utf-8") for v in values.tolist()], dtype=str)
