"""An IVF (inverted file) index built from stock TensorFlow ops, stored inside a SavedModel.

At export time the item vectors are partitioned by k-means (:func:`build_ivf_index`).
At serving time (:class:`IvfIndex`) a query scores the ``P`` partition centroids,
keeps the ``nprobe`` best partitions, gathers their items, scores them exactly and
returns the top K after excluding the caller's items. Every op is a core
TensorFlow op (beyond the brute-force export's, the index adds ``Einsum``,
``LowerBound``, ``RaggedRange``, ``RaggedTensorToTensor`` and ``Sum``; ragged
tensors are internal only, never inputs or outputs), so an unmodified
``tensorflow_model_server`` loads the export.

Partitioning for maximum inner product search (MIPS): the model scores by dot
product, and a query probes the partitions whose centroids have the largest dot
product with it. The probe centroid is the mean of the partition's items, so
``q . c`` is the mean score of its items. Which items share a partition is
decided by spherical k-means (unit-length vectors and centroids: items grouped
by direction, a query's best items point its way). Measured on a mixture of
Gaussians with item norms spread by a log-normal factor (200k items, d = 64,
P = 1,800, held-out queries from the same mixture): recall@10 at ``nprobe`` 1/4/16
was 0.62/0.84/0.90 with spherical k-means, 0.35/0.75/0.86 with Euclidean
k-means, and assigning items to the centroid of largest dot product put most
items in a few partitions (15 to 60 times the mean size) with recall below 0.6.
``build_ivf_index(spherical=False)`` keeps Euclidean k-means available.

Partitions larger than ``max_partition_size`` (default twice the mean) are
split by k-means on their own items (a partition of duplicates is cut into
chunks), which bounds the work of one probe.

In the SavedModel the item vectors are stored ordered by partition (partition
``p`` holds rows ``starts[p] .. starts[p] + sizes[p] - 1``). A query row
gathers the rows of its probed partitions back to back (``RaggedRange`` of the
partition ranges, ``RaggedTensorToTensor`` pads the rows of a batch to the
longest), so the padded table ``[P, M]`` of :func:`build_ivf_index` is never
materialised in the graph and no work is spent on padding at batch 1. This and
scoring with ``Einsum`` instead of a batched ``matvec`` took 35% off the
search time at 14k candidates (measured). Besides the item vectors (which
the brute-force export stores too) the index holds their item indices and
``P * (D + 3)`` numbers: the export is about as large as the brute-force one.

Ties between equal scores are broken by partition order, not by the
vocabulary order of the brute-force export.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfrec.data.vocab import NUM_RESERVED
from tfrec.export.ivf_partition import (
    PAD,
    TARGET_RECALL,
    IvfIndexData,
    build_ivf_index,
    checked_vectors,
    default_num_partitions,
    tune_nprobe,
)

if TYPE_CHECKING:
    from tfrec.models.retrieval import TwoTowerModel

INDEX_TYPES = ("brute", "ivf")

__all__ = ["IvfIndex", "IvfIndexData", "build_ivf_index", "make_ivf_index"]


def make_ivf_index(
    item_vectors: np.ndarray,
    item_ids: np.ndarray,
    *,
    num_partitions: int | None = None,
    nprobe: int | None = None,
    tuning_queries: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[IvfIndex, dict[str, Any]]:
    """Builds the partition and the serving module, choosing ``nprobe`` when not given.

    Args:
        item_vectors: ``[N, D]`` float32 vectors of the items to index.
        item_ids: ``[N]`` their item (vocabulary) indices.
        num_partitions: P (default :func:`default_num_partitions`).
        nprobe: Default partitions probed (default: :func:`tune_nprobe` for a
            recall@10 of :data:`TARGET_RECALL` on ``tuning_queries``).
        tuning_queries: ``[Q, D]`` queries for the tuning (default: item vectors).
        seed: Seed of k-means and the tuning samples.

    Returns:
        The :class:`IvfIndex` and a JSON-compatible description for the export's config.

    Raises:
        ValueError: A bad ``num_partitions``, ``nprobe`` or query shape.
    """
    vectors = checked_vectors(item_vectors)
    requested = default_num_partitions(len(vectors)) if num_partitions is None else num_partitions
    if nprobe is not None and nprobe < 1:
        raise ValueError(f"nprobe={nprobe}; expected >= 1")
    if tuning_queries is not None:
        tuning_queries = np.asarray(tuning_queries, np.float32)
        if tuning_queries.ndim != 2 or tuning_queries.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"tuning_queries has shape {tuning_queries.shape}; expected [Q, {vectors.shape[1]}]"
            )
    data = build_ivf_index(vectors, requested, seed=seed)
    if nprobe is not None and nprobe > data.num_partitions:
        raise ValueError(f"nprobe={nprobe}; expected 1..{data.num_partitions} (the partitions)")
    info: dict[str, Any] = {"type": "ivf", "requested_partitions": requested, "seed": seed}
    info["padded_table_overhead"] = round(data.padding_overhead, 4)
    if nprobe is None:
        nprobe, recall = tune_nprobe(data, vectors, tuning_queries, seed=seed)
        source = "item vectors" if tuning_queries is None else f"{len(tuning_queries)} queries"
        info["nprobe_tuning"] = {
            "target_recall_at_10": TARGET_RECALL, "recall_at_10": round(recall, 4),
            "queries": source,
        }  # fmt: skip
    index = IvfIndex(data, vectors, item_ids, nprobe)
    return index, {**info, **index.describe()}


class IvfIndex(tf.Module):
    """The serving side of an IVF index: exact scores over the probed partitions.

    Stores the item vectors ordered by partition (variables, like the
    brute-force export's candidate table), the centroids and the partition
    ranges. :meth:`search` probes, for each query row, its ``nprobe`` best
    partitions, or more when those hold fewer than ``top + L`` items (so
    ``top`` items remain after excluding the ``L`` history items even for a
    large ``top``): asking for more items than the probed partitions hold
    probes more partitions instead of returning empty slots. Empty slots
    (``-inf`` scores) are left only when the whole catalogue minus the
    excluded items has fewer than ``top`` items, as in the brute-force export.

    Args:
        data: The partition from :func:`build_ivf_index`.
        item_vectors: ``[N, D]`` float32 vectors it was built from.
        item_ids: ``[N]`` int item indices (vocabulary indices) of those rows.
        nprobe: The default number of partitions probed, ``1..P``.
        name: Module name.

    Raises:
        ValueError: Shapes that do not match ``data`` or a bad ``nprobe``.
    """

    def __init__(
        self,
        data: IvfIndexData,
        item_vectors: np.ndarray,
        item_ids: np.ndarray,
        nprobe: int,
        name: str = "ivf_index",
    ):
        super().__init__(name=name)
        vectors = checked_vectors(item_vectors)
        item_ids = np.asarray(item_ids)
        count = int(data.sizes.sum())
        if len(vectors) != count or item_ids.shape != (count,):
            raise ValueError(
                f"item_vectors {vectors.shape} and item_ids {item_ids.shape} must have the "
                f"index's {count} rows"
            )
        if data.centroids.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"centroids have D={data.centroids.shape[1]}, item_vectors D={vectors.shape[1]}"
            )
        self.num_partitions = data.num_partitions
        if not 1 <= nprobe <= self.num_partitions:
            raise ValueError(f"nprobe={nprobe}; expected 1..{self.num_partitions} (partitions)")
        self.default_nprobe = int(nprobe)
        order = data.table[data.table != PAD]  # row-major: partition by partition
        self.vectors = tf.Variable(vectors[order], trainable=False, name="ivf_item_vectors")
        self.item_ids = tf.Variable(
            item_ids[order].astype(np.int32), trainable=False, name="ivf_item_ids"
        )
        self.centroids = tf.Variable(data.centroids, trainable=False, name="ivf_centroids")
        sizes = data.sizes.astype(np.int32)
        self.starts = tf.constant(np.concatenate([[0], np.cumsum(sizes)[:-1]]), tf.int32)
        self.sizes = tf.constant(sizes, tf.int32)
        # fewest[n]: items in the n smallest partitions (the least that n probes can hold).
        self.fewest = tf.constant(np.concatenate([[0], np.cumsum(np.sort(sizes))]), tf.int32)

    def search(
        self, query: tf.Tensor, exclude: tf.Tensor, top: tf.Tensor, nprobe: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Top items of the probed partitions, excluded items removed.

        Args:
            query: ``[B, D]`` float32 query vectors.
            exclude: ``[B, L]`` int32 item indices to leave out (any value
                that is not an item, e.g. 0 for padding, is harmless).
            top: int32 scalar, how many items per row (``1..N``).
            nprobe: ``[B]`` int32 partitions to probe per row (``1..P``; values
                outside are clipped, callers check them).

        Returns:
            ``[B, top]`` float32 scores, best first (``-inf`` for empty slots), and
            ``[B, top]`` int32 item indices (0 for empty slots).
        """
        need = top + tf.shape(exclude)[1]
        # `enough` partitions hold `need` items whichever they are: an upper bound of the
        # partitions each row needs, so ranking that many is enough to find its own need.
        enough = tf.searchsorted(self.fewest, tf.reshape(need, [1]), side="left")[0]
        nprobe = tf.clip_by_value(nprobe, 1, self.num_partitions)
        width = tf.clip_by_value(tf.maximum(tf.reduce_max(nprobe), enough), 1, self.num_partitions)
        _, parts = tf.math.top_k(tf.matmul(query, self.centroids, transpose_b=True), k=width)
        sizes = tf.gather(self.sizes, parts)  # [B, n] best partition first
        needed = tf.searchsorted(tf.cumsum(sizes, axis=1), tf.fill([tf.shape(parts)[0], 1], need))
        probes = tf.maximum(nprobe, needed[:, 0] + 1)  # [B]: nprobe, or more to hold `need`
        probed = tf.range(width)[tf.newaxis, :] < probes[:, tf.newaxis]  # [B, n]
        sizes = tf.where(probed, sizes, 0)
        positions, valid = self._positions(parts, sizes)  # [B, C]
        vectors = tf.gather(self.vectors, positions)  # [B, C, D]
        scores = tf.where(valid, tf.einsum("bd,bcd->bc", query, vectors), -np.inf)  # [B, C]
        # At most L items are excluded: the best `top` of the rest are among the best top + L.
        shortlist = tf.minimum(need, tf.shape(scores)[1])
        values, picks = tf.math.top_k(scores, k=shortlist)
        # ids of the shortlist only (a padding slot points at row 0 and keeps its -inf)
        ids = tf.gather(self.item_ids, tf.gather(positions, picks, batch_dims=1))  # [B, S]
        excluded = tf.reduce_any(ids[:, :, tf.newaxis] == exclude[:, tf.newaxis, :], axis=2)
        values = tf.where(excluded, tf.constant(-np.inf, values.dtype), values)
        values, picks = tf.math.top_k(values, k=top)
        ids = tf.gather(ids, picks, batch_dims=1)
        return values, tf.where(tf.math.is_inf(values), 0, ids)

    def _positions(self, parts: tf.Tensor, sizes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Rows of the probed partitions, concatenated per query row and right-padded.

        Args:
            parts: ``[B, n]`` probed partitions.
            sizes: ``[B, n]`` their sizes (0 for partitions a row does not probe).

        Returns:
            ``[B, C]`` int32 rows of ``self.vectors`` (``C`` = the largest total,
            at least 1; padding points at row 0) and the ``[B, C]`` mask of real rows.
        """
        starts = tf.gather(self.starts, parts)  # [B, n]
        ranges = tf.ragged.range(tf.reshape(starts, [-1]), tf.reshape(starts + sizes, [-1]))
        totals = tf.reduce_sum(sizes, axis=1)  # [B]
        rows = tf.RaggedTensor.from_row_lengths(ranges.flat_values, totals, validate=False)
        shape = tf.stack([tf.shape(parts)[0], tf.maximum(tf.reduce_max(totals), 1)])
        positions = rows.to_tensor(default_value=-1, shape=shape)  # [B, C]
        return tf.maximum(positions, 0), positions >= 0

    def describe(self) -> dict[str, int]:
        """Index parameters for the export's config file."""
        sizes = self.sizes.numpy()
        return {
            "num_partitions": self.num_partitions,
            "nprobe": self.default_nprobe,
            "num_items": int(sizes.sum()),
            "min_partition_size": int(sizes.min()),
            "max_partition_size": int(sizes.max()),
        }


def build_export_index(
    model: TwoTowerModel,
    index: str,
    num_partitions: int | None,
    nprobe: int | None,
    tuning_queries: np.ndarray | None,
) -> tuple[IvfIndex | None, dict[str, Any]]:
    """The index of ``export_retrieval(index=...)``: an IvfIndex (None for brute) and its info.

    Raises:
        ValueError: An unknown ``index``, IVF options with ``"brute"`` or out of range.
    """
    if index not in INDEX_TYPES:
        raise ValueError(f"index={index!r}; expected one of {INDEX_TYPES}")
    if index == "brute":
        if num_partitions is not None or nprobe is not None or tuning_queries is not None:
            raise ValueError(
                "num_partitions, nprobe and tuning_queries apply to index='ivf' only "
                f"(got num_partitions={num_partitions}, nprobe={nprobe} with index='brute')"
            )
        return None, {"type": "brute"}
    real_items = model.num_items - NUM_RESERVED
    if num_partitions is not None and not 1 <= num_partitions <= real_items:
        raise ValueError(
            f"num_partitions={num_partitions}; expected 1..{real_items} (the catalogue items)"
        )
    vectors = model.candidate_embeddings().numpy()[NUM_RESERVED:]  # [items, D]
    return make_ivf_index(
        vectors,
        np.arange(NUM_RESERVED, model.num_items),
        num_partitions=num_partitions,
        nprobe=nprobe,
        tuning_queries=tuning_queries,
        seed=model.config.training.seed,
    )


def with_index_info(config: bytes, index_info: dict[str, Any], name: str) -> bytes:
    """The config file ``name`` (a caller's, possibly) with the ``"index"`` entry set.

    Raises:
        ValueError: The file is not a JSON object.
    """
    try:
        info = json.loads(config.decode("utf-8"))
    except ValueError as err:
        raise ValueError(f"extra_files[{name!r}]: not JSON ({err})") from err
    if not isinstance(info, dict):
        raise ValueError(
            f"extra_files[{name!r}]: a JSON {type(info).__name__}; expected an object "
            "(an IVF export adds its index parameters to it)"
        )
    info["index"] = index_info
    return (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8")
