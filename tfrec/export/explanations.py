"""In-graph explanations: which history items drove each recommended item.

Method: leave-one-out re-encoding of the history the query reads. For a request
with ``B`` rows, the compacted history the query tower reads (the last
``max_history`` real items, ``P`` columns after dropping the columns that are
padding in every row) and the ``K`` recommended items:

* ``P`` masked copies of each history are built, copy ``p`` with every
  occurrence of the item at position ``p`` replaced by padding (the query tower
  compacts the padding away, so the copy is the history without that item),
  plus the unmasked history; the ``B * (P + 1)`` histories are re-encoded in one
  batched query-tower call (``[B * (P + 1), D]`` queries);
* ``contribution(item at p, recommended j) = score(full history, j) -
  score(history without the item, j)``: the score drop when the item is removed,
  with ``score = query . item vector`` (the retrieval score);
* per recommended item the ``m`` history items with the largest contribution are
  returned, best first. Only real items count, each once (a repeated item is
  scored at its last position, with all its occurrences removed). When the
  history has fewer than ``m`` distinct real items, or the recommended slot is
  empty, the remaining slots hold ``""`` and ``0``.

This is exact for the question "how much lower would this item score without
that history item" (the deletion test of ``benchmarks/explanations.py`` checks
it on held-out users) at the cost of ``P + 1`` query encodings per row, which is
why it is a separate signature, ``explain`` (same inputs as ``serving_default``,
its outputs plus ``explanation_items`` string ``[B, K, m]`` and
``explanation_scores`` float32 ``[B, K, m]``): ``serving_default`` is unchanged.
Items older than the last ``max_history`` are never read by the query and never
explain anything. An ID-only model (``encoder="none"``) reads no history: it has
nothing to explain and gets no ``explain`` signature.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfrec.layers.towers import trim_leading_padding

#: Name of the explanation signature of retrieval and recommender exports.
EXPLAIN_SIGNATURE_NAME = "explain"
#: History items returned per recommended item (``m``) unless the export says otherwise.
DEFAULT_EXPLAIN_TOP = 3
ITEMS_OUTPUT = "explanation_items"
SCORES_OUTPUT = "explanation_scores"


def resolve_explain_top(explain_top: int | None, encodes_history: bool) -> int:
    """The number ``m`` of explaining items an export returns (0: no ``explain`` signature).

    Args:
        explain_top: The caller's choice: None (default: :data:`DEFAULT_EXPLAIN_TOP`
            for a model that encodes a history, 0 for an ID-only model), 0 (no
            explanations) or ``m >= 1``.
        encodes_history: False for an ID-only model (``encoder="none"``).

    Returns:
        ``m >= 0``.

    Raises:
        ValueError: A negative or non-integer value, or ``m >= 1`` for an ID-only model.
    """
    if explain_top is None:
        return DEFAULT_EXPLAIN_TOP if encodes_history else 0
    if isinstance(explain_top, bool) or not isinstance(explain_top, (int, np.integer)):
        raise ValueError(f"explain_top={explain_top!r}; expected an integer >= 0")
    if explain_top < 0:
        raise ValueError(f"explain_top={explain_top}; expected >= 0 (0: no explanations)")
    if explain_top and not encodes_history:
        raise ValueError(
            f"explain_top={explain_top}: an ID-only model (encoder='none') reads no history, "
            "so there is no history item to explain a recommendation with; use explain_top=0"
        )
    return int(explain_top)


def explain_description(explain_top: int) -> str:
    """The ``signatures`` entry of the export's ``tfrec_config.json`` for ``explain``."""
    return (
        f"serving_default inputs and outputs + {ITEMS_OUTPUT} string [B, K, {explain_top}] "
        f"and {SCORES_OUTPUT} float32 [B, K, {explain_top}]: per recommended item the "
        f"{explain_top} history items whose removal lowers its retrieval score most, and "
        'that score drop ("" / 0 where there is none)'
    )


def _masked_histories(recent: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Leave-one-item-out copies of ``recent`` ``[B, P]`` and which positions to explain with.

    Returns:
        ``[B, P + 1, P]`` histories (copy ``p < P`` without the item at ``p``, copy
        ``P`` unmasked) and the ``[B, P]`` bool mask of positions that hold a real
        item not repeated later in the row.
    """
    same = tf.equal(recent[:, :, tf.newaxis], recent[:, tf.newaxis, :])  # [B, P, P]
    masked = tf.where(same, tf.zeros_like(same, tf.int32), recent[:, tf.newaxis, :])  # [B, P, P]
    copies = tf.concat([masked, recent[:, tf.newaxis, :]], axis=1)  # [B, P + 1, P]
    length = tf.shape(recent)[1]
    later = tf.range(length)[tf.newaxis, :] > tf.range(length)[:, tf.newaxis]  # [P, P]: q > p
    repeated = tf.reduce_any(tf.logical_and(same, later[tf.newaxis]), axis=2)  # [B, P]
    return copies, tf.logical_and(recent > 0, tf.logical_not(repeated))


def leave_one_out(
    query_tower: tf.Module,
    users: tf.Tensor,
    recent: tf.Tensor,
    item_vectors: tf.Tensor,
    filled: tf.Tensor,
    *,
    top: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``top`` history items whose removal lowers each recommended item's score most.

    Args:
        query_tower: The model's query tower (``final_query(users, history)`` -> ``[N, D]``).
        users: int ``[B]`` user indices of the query tower's vocabulary.
        recent: int ``[B, L]`` compacted history (left padding, no OOV, at most
            ``max_history`` columns): what the query reads.
        item_vectors: float32 ``[B, K, D]`` vectors of the recommended items.
        filled: bool ``[B, K]``, False for empty recommendation slots.
        top: ``m >= 1``.

    Returns:
        int32 ``[B, K, m]`` history item indices (0 where there is none) and
        float32 ``[B, K, m]`` contributions (score drops; ``-inf`` where there is none).
    """
    recent = trim_leading_padding({"history": tf.cast(recent, tf.int32)})["history"]  # [B, P]
    batch, length = tf.shape(recent)[0], tf.shape(recent)[1]
    copies, explains = _masked_histories(recent)  # [B, P + 1, P], [B, P]
    queries = query_tower.final_query(
        tf.repeat(tf.cast(users, tf.int32), length + 1),  # [B * (P + 1)]
        tf.reshape(copies, [-1, length]),  # [B * (P + 1), P]
    )
    queries = tf.reshape(queries, [batch, length + 1, tf.shape(queries)[-1]])  # [B, P + 1, D]
    scores = tf.einsum("bpd,bkd->bkp", queries, tf.cast(item_vectors, tf.float32))  # [B, K, P+1]
    drops = scores[:, :, -1:] - scores[:, :, :-1]  # [B, K, P]: full - without the item
    valid = tf.logical_and(explains[:, tf.newaxis, :], filled[:, :, tf.newaxis])  # [B, K, P]
    drops = tf.where(valid, drops, tf.constant(-np.inf, tf.float32))
    width = tf.maximum(length, top)  # top_k needs at least `top` columns
    drops = tf.pad(drops, [[0, 0], [0, 0], [0, width - length]], constant_values=-np.inf)
    values, positions = tf.math.top_k(drops, k=top)  # [B, K, m]
    padded = tf.pad(recent, [[0, 0], [0, width - length]])  # [B, width]
    items = tf.gather(padded, positions, batch_dims=1)  # [B, K, m]
    return tf.where(tf.math.is_inf(values), 0, items), values


def explanation_outputs(
    tokens: tf.Tensor, items: tf.Tensor, contributions: tf.Tensor
) -> dict[str, tf.Tensor]:
    """The ``explain`` outputs: string ids (``""`` where none) and contributions (0 there).

    Args:
        tokens: string ``[I]`` id of each history item index (the export's item vocabulary).
        items: int ``[B, K, m]`` from :func:`leave_one_out`.
        contributions: float32 ``[B, K, m]`` from :func:`leave_one_out`.
    """
    none = tf.math.is_inf(contributions)
    ids = tf.where(none, tf.constant("", tf.string), tf.gather(tokens, items))
    return {ITEMS_OUTPUT: ids, SCORES_OUTPUT: tf.where(none, 0.0, contributions)}


def row_lookup(item_ids: np.ndarray, num_items: int) -> np.ndarray:
    """``[num_items]`` int32: the row of each item index in a table whose rows are ``item_ids``.

    Used to find an IVF index's item vectors (stored in partition order) by item
    index; items absent from the table map to row 0 (only empty slots ask for them).
    """
    rows = np.zeros(num_items, np.int32)
    rows[np.asarray(item_ids, np.int64)] = np.arange(len(item_ids), dtype=np.int32)
    return rows
