"""Parts of ``benchmarks/scale.py``: measured CLI stages, the popularity baseline, the fits.

Kept free of TensorFlow at import time: the stages run ``tfrec`` in child
processes (so each one's peak RSS is its own, from ``os.wait4``), and the
popularity baseline imports TensorFlow only to read the prepared TFRecords.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the baseline reads TFRecords in-process

#: The tfrec entry point of this interpreter (the venv the benchmark runs in).
TFREC = [sys.executable, "-m", "tfrec.cli.main"]


def run_stage(argv: Sequence[str], log: Path, timeout: float | None = None) -> dict[str, Any]:
    """Runs one ``tfrec`` command, its output appended to ``log``; measures it.

    Args:
        argv: Arguments after ``tfrec``.
        log: File receiving the command line, stdout and stderr.
        timeout: Seconds before the child is killed.

    Returns:
        ``{"command", "seconds", "peak_rss_mb"}`` (the child's own ``ru_maxrss``).

    Raises:
        RuntimeError: The command failed (the message names it and the log).
    """
    command = [*TFREC, *argv]
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {shlex.join(['tfrec', *argv])}\n")
        out.flush()
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                child.kill()
                raise RuntimeError(f"timed out after {timeout} s: tfrec {shlex.join(argv)}")
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"tfrec {shlex.join(argv)} exited with {code}; see {log}")
    return {
        "command": shlex.join(["tfrec", *argv]),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def _train_item_counts(prepared: Path) -> tuple[np.ndarray, int]:
    """``[I]`` train interaction counts by item index (0 = padding, 1 = OOV) and I."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    vocab = (prepared / "item_vocab.txt").read_text(encoding="utf-8").splitlines()
    index = {token: i + 2 for i, token in enumerate(vocab)}
    size = len(vocab) + 2
    counts = np.zeros(size, np.int64)
    parquet = pq.ParquetFile(prepared / "interactions" / "train.parquet")
    for group in range(parquet.num_row_groups):  # bounded memory: one row group at a time
        column = parquet.read_row_group(group, columns=["item_id"]).column("item_id")
        for entry in pc.value_counts(column).to_pylist():
            counts[index.get(entry["values"], 1)] += entry["counts"]
    counts[:2] = 0
    return counts, size


def popularity_baseline(prepared: Path, part: str = "test", k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of "the most popular training items, history excluded".

    The same protocol as tfrec's full-ranking evaluation: every example of
    ``part`` counts, its held-out item is the last target, the items of its
    history are never recommended.

    Args:
        prepared: A ``tfrec prepare`` directory.
        part: ``test`` or ``valid``.
        k: Cutoff.

    Returns:
        ``{"users", "hr@k", "ndcg@k"}``.
    """
    import tfrec  # noqa: F401  (Keras-2 guard)
    from tfrec.data.tfdata import tfrecord_dataset

    counts, _ = _train_item_counts(prepared)
    ranked = np.argsort(-counts, kind="stable")  # most popular first (ties: lower index)
    hits = dcg = users = 0.0
    for batch in tfrecord_dataset(prepared / part, 4096, shuffle=False):
        history = batch["history"].numpy()  # [B, L]
        target = batch["target"].numpy()[:, -1]  # [B]: the held-out item
        depth = k + history.shape[1]  # enough popular items to fill k after exclusion
        top = ranked[:depth]  # [depth]
        seen = (history[:, :, None] == top[None, None, :]).any(axis=1)  # [B, depth]
        rank_in_unseen = np.cumsum(~seen, axis=1) - 1  # [B, depth]
        is_target = (top[None, :] == target[:, None]) & ~seen & (rank_in_unseen < k)
        found = is_target.any(axis=1)
        position = np.where(found, rank_in_unseen[np.arange(len(target)), is_target.argmax(1)], 0)
        hits += float(found.sum())
        dcg += float((found / np.log2(position + 2.0)).sum())
        users += len(target)
    return {"users": users, f"hr@{k}": hits / users, f"ndcg@{k}": dcg / users}


def growth_exponent(sizes: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of log(value) on log(size) (None with fewer than 2 points)."""
    pairs = [(s, v) for s, v in zip(sizes, values, strict=True) if s > 0 and v and v > 0]
    if len(pairs) < 2:
        return None
    x = np.log([p[0] for p in pairs])
    y = np.log([p[1] for p in pairs])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The ``metrics.json`` of a ``tfrec train`` run."""
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Log-log time and peak memory against interactions (PNG); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [r["interactions"] for r in rows]
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for stage in ("prepare", "train"):
        times = [r.get(stage, {}).get("seconds") for r in rows]
        mems = [r.get(stage, {}).get("peak_rss_mb") for r in rows]
        kept = [(s, t, m) for s, t, m in zip(sizes, times, mems, strict=True) if t]
        if kept:
            ax_time.plot([k[0] for k in kept], [k[1] for k in kept], "o-", label=stage)
            ax_mem.plot([k[0] for k in kept], [k[2] / 1024 for k in kept], "o-", label=stage)
    for ax, label in ((ax_time, "seconds"), (ax_mem, "peak RSS (GiB)")):
        ax.set(xscale="log", yscale="log", xlabel="interactions", ylabel=label)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def fmt_ci(metrics: dict[str, float], key: str) -> str:
    """``0.1234 ± 0.0056`` (or the bare value without an interval)."""
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    half = metrics.get(f"{key}_ci95")
    return f"{value:.4f}" + (f" ± {half:.4f}" if half is not None else "")
