"""Partitioning for the IVF index (:mod:`tfrec.export.ivf`): k-means and recall tuning.

k-means (Euclidean or spherical) runs its nearest-centroid step as one
TensorFlow matmul + argmax per batch of rows (about twice numpy's speed on this
machine), so 10^6 rows x 4,000 centroids take seconds in a bounded ``[batch, P]``
score block. :func:`build_ivf_index` turns the clusters into balanced
partitions; :func:`probe_recall` measures recall@k against brute force for every
``nprobe`` at once, and :func:`tune_nprobe` picks the default ``nprobe``.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

PAD = -1  # sentinel of the padded partition table
TARGET_RECALL = 0.95  # recall@10 the default nprobe reaches on the tuning queries
_ASSIGN_BATCH_ELEMENTS = 1 << 25  # rows x centroids per assignment batch (128 MiB of float32)
_KMEANS_PP_MAX_WORK = 1 << 24  # rows x centroids up to which k-means++ seeds the centroids


@tf.function(reduce_retracing=True)
def _nearest(batch: tf.Tensor, centroids: tf.Tensor, half_sq_norms: tf.Tensor) -> tf.Tensor:
    # argmin |x - c|^2 = argmax x.c - |c|^2 / 2
    scores = tf.matmul(batch, centroids, transpose_b=True) - half_sq_norms
    return tf.argmax(scores, axis=1, output_type=tf.int32)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (Euclidean) of every row, computed in batches.

    Args:
        vectors: ``[N, D]`` float32.
        centroids: ``[P, D]`` float32.

    Returns:
        ``[N]`` int32 centroid indices.
    """
    centroids_t = tf.constant(centroids, tf.float32)
    half = tf.constant(0.5 * np.square(centroids).sum(axis=1), tf.float32)
    batch = max(1, _ASSIGN_BATCH_ELEMENTS // max(len(centroids), 1))
    labels = np.empty(len(vectors), np.int32)
    for start in range(0, len(vectors), batch):
        chunk = tf.constant(vectors[start : start + batch], tf.float32)
        labels[start : start + batch] = _nearest(chunk, centroids_t, half).numpy()
    return labels


def _means(
    vectors: np.ndarray, labels: np.ndarray, num_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster means ``[P, D]`` (zeros for empty clusters) and counts ``[P]``."""
    counts = np.bincount(labels, minlength=num_clusters)
    order = np.argsort(labels, kind="stable")
    sums = np.zeros((num_clusters, vectors.shape[1]), np.float64)
    nonempty = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
    sums[nonempty] = np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)
    means = sums / np.maximum(counts, 1)[:, None]
    return means.astype(np.float32), counts


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-30)).astype(np.float32)


def _kmeans_plus_plus(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next seed drawn with probability ~ squared distance."""
    chosen = [int(rng.integers(len(vectors)))]
    nearest = np.square(vectors - vectors[chosen[0]]).sum(axis=1, dtype=np.float64)
    for _ in range(1, count):
        total = nearest.sum()
        if total > 0:
            pick = int(rng.choice(len(vectors), p=nearest / total))
        else:  # every row coincides with a seed: any unused row will do
            pick = int(rng.choice(np.setdiff1d(np.arange(len(vectors)), chosen)))
        chosen.append(pick)
        distance = np.square(vectors - vectors[pick]).sum(axis=1, dtype=np.float64)
        nearest = np.minimum(nearest, distance)
    return vectors[chosen].copy()


def kmeans(
    vectors: np.ndarray,
    num_clusters: int,
    *,
    seed: int = 0,
    iterations: int = 10,
    spherical: bool = False,
) -> np.ndarray:
    """Lloyd's k-means; returns ``[P, D]`` centroids.

    Initial centroids: k-means++ (spread-out seeds, which rarely leave two in
    one true cluster) when ``P * N`` is at most 2^24, otherwise ``P`` random rows
    (k-means++ takes ``P`` sequential passes over the rows: minutes at the
    export's sizes; random seeding with a sample of many rows per centroid is
    what Faiss does). An empty cluster takes over half of the largest one: its centroid becomes a
    slightly perturbed copy of the largest cluster's centroid (as Faiss does).
    ``spherical=True`` rescales the centroids to unit length after each update
    (pass unit-length ``vectors``: then the nearest centroid is the one with the
    largest cosine).

    Args:
        vectors: ``[N, D]`` float32, ``N >= num_clusters``.
        num_clusters: P.
        seed: Seed of the initial centroids and perturbations.
        iterations: Lloyd iterations.
        spherical: Unit-length centroids.

    Raises:
        ValueError: ``num_clusters`` outside ``1..N`` or ``iterations < 0``.
    """
    if not 1 <= num_clusters <= len(vectors):
        raise ValueError(f"num_clusters={num_clusters}; expected 1..{len(vectors)} (the rows)")
    if iterations < 0:
        raise ValueError(f"iterations={iterations}; expected >= 0")
    rng = np.random.default_rng(seed)
    if num_clusters * len(vectors) <= _KMEANS_PP_MAX_WORK:
        centroids = _kmeans_plus_plus(vectors, num_clusters, rng)
    else:
        centroids = vectors[rng.choice(len(vectors), num_clusters, replace=False)].copy()
    for _ in range(iterations):
        centroids, counts = _means(vectors, assign(vectors, centroids), num_clusters)
        for empty in np.flatnonzero(counts == 0):
            largest = int(np.argmax(counts))
            noise = 1e-4 * rng.standard_normal(centroids.shape[1]).astype(np.float32)
            centroids[empty] = centroids[largest] * (1 + noise)
            centroids[largest] = centroids[largest] * (1 - noise)
            counts[empty] = counts[largest] // 2
            counts[largest] -= counts[empty]
        if spherical:
            centroids = normalize(centroids)
    return centroids


@dataclasses.dataclass(frozen=True)
class IvfIndexData:
    """A k-means partition of item vectors.

    Attributes:
        centroids: ``[P, D]`` float32, the mean of each partition's items.
        table: ``[P, M]`` int32 item row numbers per partition, padded with
            :data:`PAD` (``M`` = the largest partition).
        sizes: ``[P]`` int32 real items per partition.
    """

    centroids: np.ndarray
    table: np.ndarray
    sizes: np.ndarray

    @property
    def num_partitions(self) -> int:
        """P."""
        return int(self.centroids.shape[0])

    @property
    def max_partition_size(self) -> int:
        """M, the width of the padded table."""
        return int(self.table.shape[1])

    @property
    def padding_overhead(self) -> float:
        """``P * M / items``: the padded table's size over the number of items (>= 1)."""
        return float(self.table.size / max(int(self.sizes.sum()), 1))

    def labels(self) -> np.ndarray:
        """``[N]`` int32 partition of every item row."""
        labels = np.empty(int(self.sizes.sum()), np.int32)
        for p in range(self.num_partitions):
            labels[self.table[p, : self.sizes[p]]] = p
        return labels


def default_num_partitions(num_items: int) -> int:
    """``round(4 * sqrt(num_items))`` clipped to ``1..num_items`` (4,000 at 10^6 items)."""
    if num_items < 1:
        raise ValueError(f"num_items={num_items}; expected >= 1")
    return int(min(num_items, max(1, round(4 * math.sqrt(num_items)))))


def _split(
    rows: np.ndarray, vectors: np.ndarray, cap: int, seed: int, spherical: bool
) -> list[np.ndarray]:
    """Splits one oversized partition (row numbers) into parts of at most ``cap`` rows."""
    pending, done = [rows], []
    while pending:
        part = pending.pop()
        if len(part) <= cap:
            done.append(part)
            continue
        pieces = math.ceil(len(part) / cap)
        centroids = kmeans(vectors[part], pieces, seed=seed, iterations=5, spherical=spherical)
        labels = assign(vectors[part], centroids)
        groups = [part[labels == j] for j in range(pieces) if np.any(labels == j)]
        if len(groups) == 1:  # k-means cannot split it (e.g. duplicates): cut into chunks
            groups = [part[i : i + cap] for i in range(0, len(part), cap)]
        pending.extend(groups)
    return done


def build_ivf_index(
    item_vectors: np.ndarray,
    num_partitions: int,
    *,
    seed: int = 0,
    iterations: int = 10,
    spherical: bool = True,
    max_partition_size: int | None = None,
    sample_per_partition: int = 64,
) -> IvfIndexData:
    """Partitions item vectors by k-means for :class:`IvfIndex`.

    k-means runs on a random sample of ``sample_per_partition * P`` rows (all rows
    when fewer); then every row goes to its nearest centroid, partitions larger
    than ``max_partition_size`` are split, and each centroid is recomputed as
    the mean of its partition's (raw) vectors, which the serving graph scores.
    With ``spherical=True`` (the default) the partitions are made on the
    directions of the vectors (spherical k-means, items assigned by cosine);
    otherwise on the raw vectors (Euclidean). Memory: the vectors (twice with
    ``spherical``) plus a ``[batch, P]`` score block (128 MiB); 10^6 x 64 rows
    with P = 4,000 take about a minute on two cores.

    Args:
        item_vectors: ``[N, D]`` float32, one row per item.
        num_partitions: P before splitting, ``1..N``.
        seed: Seed of the sample and the initial centroids.
        iterations: Lloyd iterations.
        spherical: Partition by direction (cosine) rather than by Euclidean distance.
        max_partition_size: Largest partition (default ``ceil(2 * N / P)``);
            larger ones are split, so the result may have more than P partitions.
        sample_per_partition: Training rows per partition.

    Returns:
        The :class:`IvfIndexData` (row numbers index ``item_vectors``).

    Raises:
        ValueError: An empty or non-2-D ``item_vectors``, non-finite values, or a bad size.
    """
    vectors = checked_vectors(item_vectors)
    count = len(vectors)
    if not 1 <= num_partitions <= count:
        raise ValueError(f"num_partitions={num_partitions}; expected 1..{count} (the items)")
    cap = (
        math.ceil(2 * count / num_partitions) if max_partition_size is None else max_partition_size
    )
    if cap < 1:
        raise ValueError(f"max_partition_size={max_partition_size}; expected >= 1")
    if sample_per_partition < 1:
        raise ValueError(f"sample_per_partition={sample_per_partition}; expected >= 1")
    points = normalize(vectors) if spherical else vectors
    rng = np.random.default_rng(seed)
    sample_size = min(count, sample_per_partition * num_partitions)
    sample = points[np.sort(rng.choice(count, sample_size, replace=False))]
    centroids = kmeans(
        sample, num_partitions, seed=seed, iterations=iterations, spherical=spherical
    )
    labels = assign(points, centroids)
    order = np.argsort(labels, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=num_partitions))[:-1]
    parts: list[np.ndarray] = []
    for rows in np.split(order, bounds):
        if len(rows) > cap:
            parts.extend(_split(rows, points, cap, seed, spherical))
        elif len(rows):
            parts.append(rows)
    sizes = np.array([len(rows) for rows in parts], np.int32)
    table = np.full((len(parts), int(sizes.max())), PAD, np.int32)
    for p, rows in enumerate(parts):
        table[p, : len(rows)] = np.sort(rows)
    means = np.stack([vectors[rows].mean(axis=0, dtype=np.float64) for rows in parts])
    data = IvfIndexData(means.astype(np.float32), table, sizes)
    logger.info(
        "IVF index: %d items in %d partitions (%d requested), sizes %d..%d, padding overhead %.2f",
        count, data.num_partitions, num_partitions, sizes.min(), sizes.max(), data.padding_overhead,
    )  # fmt: skip
    return data


def checked_vectors(item_vectors: np.ndarray) -> np.ndarray:
    """``item_vectors`` as float32 ``[N >= 1, D >= 1]`` finite values, or ValueError."""
    vectors = np.asarray(item_vectors, np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
        raise ValueError(f"item_vectors has shape {vectors.shape}; expected [N >= 1, D >= 1]")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("item_vectors holds NaN or infinite values")
    return vectors


def probe_recall(
    data: IvfIndexData,
    item_vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """Recall@k against brute force of every ``nprobe`` in ``1..P``, for these queries.

    IVF returns every true top-k item that lies in a probed partition (they
    outscore every other candidate), so its recall at ``nprobe`` is the share of
    true top-k items whose partition ranks among the query's ``nprobe`` best
    centroids; one pass gives the whole curve. (Ties between equal scores and
    history exclusion are ignored.)

    Args:
        data: The index.
        item_vectors: ``[N, D]`` the vectors it was built from.
        queries: ``[Q, D]`` query vectors.
        k: The cutoff (clipped to N).
        skip: ``[Q]`` item row per query left out of its true top k (e.g. the
            item a query vector was copied from), or None.

    Returns:
        ``[P]`` float: element ``n - 1`` is the recall at ``nprobe = n``.
    """
    vectors = np.asarray(item_vectors, np.float32)
    queries = np.asarray(queries, np.float32)
    k = min(k, len(vectors) - (skip is not None))
    labels = data.labels()
    hits = np.zeros(data.num_partitions + 1, np.int64)
    for start in range(0, len(queries), 256):
        block = queries[start : start + 256]
        scores = block @ vectors.T  # [q, N]
        if skip is not None:
            scores[np.arange(len(block)), skip[start : start + 256]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [q, k]
        order = np.argsort(-(block @ data.centroids.T), axis=1)  # [q, P] best first
        rank = np.empty_like(order)
        rank[np.arange(len(block))[:, None], order] = np.arange(data.num_partitions)
        needed = np.take_along_axis(rank, labels[top], axis=1)  # [q, k]: 0 = best partition
        hits += np.bincount(needed.ravel(), minlength=data.num_partitions + 1)
    return np.cumsum(hits[:-1]) / max(len(queries) * k, 1)


def choose_nprobe(recall: np.ndarray, target: float) -> int:
    """The smallest ``nprobe`` whose recall (from :func:`probe_recall`) reaches ``target``."""
    reached = np.flatnonzero(np.asarray(recall) >= target - 1e-12)
    return int(reached[0]) + 1 if len(reached) else len(recall)


def tune_nprobe(
    data: IvfIndexData,
    item_vectors: np.ndarray,
    queries: np.ndarray | None = None,
    *,
    target_recall: float = TARGET_RECALL,
    k: int = 10,
    max_queries: int = 1000,
    seed: int = 0,
) -> tuple[int, float]:
    """The smallest ``nprobe`` reaching ``target_recall`` (recall@k against brute force).

    Args:
        data: The index.
        item_vectors: ``[N, D]`` the vectors it was built from.
        queries: ``[Q, D]`` validation-like query vectors; default: a random
            sample of the item vectors themselves (a two-tower model trains
            queries to point at the items they retrieve), each query's own item
            left out of its true top k (it would be found too easily).
        target_recall: Recall to reach.
        k: The cutoff.
        max_queries: At most this many queries (a random sample).
        seed: Seed of the samples.

    Returns:
        ``(nprobe, recall at nprobe)``.
    """
    rng = np.random.default_rng(seed)
    pool = np.asarray(item_vectors if queries is None else queries, np.float32)
    rows = np.arange(len(pool))
    if len(pool) > max_queries:
        rows = np.sort(rng.choice(len(pool), max_queries, replace=False))
    skip = rows if queries is None and len(item_vectors) > 1 else None
    recall = probe_recall(data, item_vectors, pool[rows], k, skip)
    nprobe = choose_nprobe(recall, target_recall)
    return nprobe, float(recall[nprobe - 1])
