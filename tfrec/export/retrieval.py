"""Retrieval SavedModel for TF Serving: string ids in, top-K string ids and scores out.

``serving_default`` (see docs/architecture.md, "Export contract"):

* inputs ``user_id`` string ``[B]``, ``history`` string ``[B, L]`` (oldest first,
  ``""`` = padding, unknown ids ignored), ``k`` int32 ``[B]``;
* outputs ``item_ids`` string ``[B, K]`` and ``scores`` float32 ``[B, K]`` with
  ``K = max(k)``, best first, history items excluded. When fewer than K items
  remain after excluding the history, the last slots hold ``""`` with score ``-inf``.

An ID-only model (``RetrievalConfig.encoder="none"``) keeps the same signature,
so clients, warmup requests and servers need no second variant: ``history`` is
accepted but does not change the query (the user vector); its items are still
excluded from the results, which is how a caller removes already-seen items.
A caller without a history (a brand-new user: the cold-start case) sends a
``[B, 0]`` (or all-``""``) ``history``; both give the same answers, the model's
query for an empty history (the history encoders output zeros there, so the
query is the user vector when the model has one). An empty batch
(``B = 0``, e.g. a ``[0, 0]`` history) gives ``[0, 1]`` outputs: ``K = 1`` when
``k`` has no values.

``k < 1``, ``k`` above the number of catalogue items, or inputs whose batch
sizes differ raise ``InvalidArgumentError`` inside the graph (gRPC
``INVALID_ARGUMENT`` from TF Serving). The candidate vectors are precomputed and
stored as a variable; scoring is a brute-force matmul + ``tf.math.top_k``.
The SavedModel needs only TensorFlow to load (no tfrec import).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfrec._version import __version__
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary
from tfrec.export.layout import ASSETS_EXTRA, check_file_name, staged_version, write_assets_extra
from tfrec.layers.towers import compact_history
from tfrec.models.retrieval import TwoTowerModel

logger = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
CONFIG_FILE = "tfrec_config.json"
USER_VOCAB_FILE = "user_vocab.txt"
ITEM_VOCAB_FILE = "item_vocab.txt"
_RESERVED_FILES = (USER_VOCAB_FILE, ITEM_VOCAB_FILE)


def string_lookup(vocab: IdVocabulary, name: str) -> keras.layers.StringLookup:
    """StringLookup with the IdVocabulary layout (0 = "", 1 = OOV, 2.. = tokens)."""
    return keras.layers.StringLookup(
        vocabulary=list(vocab.tokens), mask_token="", num_oov_indices=1, name=name
    )


class RetrievalServingModule(tf.Module):
    """The exported graph: lookups, query tower, precomputed candidates, top-K.

    Args:
        model: A trained TwoTowerModel (its query tower is exported; the candidate
            vectors are computed once here).
        user_vocab: The user vocabulary the model was trained with.
        item_vocab: The item vocabulary the model was trained with.

    Raises:
        ValueError: Vocabulary sizes that do not match the model, a catalogue
            without real items, or a model that needs context features.
    """

    def __init__(self, model: TwoTowerModel, user_vocab: IdVocabulary, item_vocab: IdVocabulary):
        super().__init__(name="retrieval_serving")
        if item_vocab.size != model.num_items:
            raise ValueError(
                f"item_vocab has {item_vocab.size} indices but the model has "
                f"num_items={model.num_items}"
            )
        if user_vocab.size != model.num_users:
            raise ValueError(
                f"user_vocab has {user_vocab.size} indices but the model has "
                f"num_users={model.num_users}"
            )
        if item_vocab.size <= NUM_RESERVED:
            raise ValueError("item_vocab has no items: nothing to retrieve")
        if model.config.context_dim:
            raise ValueError(
                f"the model uses context features (context_dim={model.config.context_dim}), "
                "which the retrieval serving signature has no input for"
            )
        self.num_real_items = item_vocab.size - NUM_RESERVED
        self.max_history = model.config.max_history
        self.encodes_history = model.encodes_history
        self.user_lookup = string_lookup(user_vocab, "user_lookup")
        self.item_lookup = string_lookup(item_vocab, "item_lookup")
        self.query_tower = model.query_tower
        self.candidates = tf.Variable(
            model.candidate_embeddings(), trainable=False, name="candidate_embeddings"
        )  # [I, D]
        self._item_tokens = tf.constant(item_vocab.all_tokens(), dtype=tf.string)  # [I]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="history"),
            tf.TensorSpec([None], tf.int32, name="k"),
        ]
    )
    def serve(self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-K items per user; see the module docstring for the contract."""
        checks = request_checks(
            user_id, history, k, self.num_real_items, "the number of catalogue items"
        )
        with tf.control_dependencies(checks):
            users = tf.cast(self.user_lookup(user_id), tf.int32)  # [B]
            items = tf.cast(self.item_lookup(history), tf.int32)  # [B, L]; OOV = 1
        # An ID-only query tower ignores the history; it still excludes items below.
        # compact_history turns a [B, 0] history into one padding column (an empty history).
        recent = compact_history(items)[:, -self.max_history :]  # [B, <= max_history]
        query = self.query_tower.final_query(users, recent)  # [B, D]
        scores = tf.matmul(query, self.candidates, transpose_b=True)  # [B, I]
        scores = exclude_items(scores, items)
        top = tf.maximum(tf.reduce_max(k), 1)  # K = max(k); 1 for an empty batch
        values, indices = tf.math.top_k(scores, k=top)  # [B, K]
        ids = tf.gather(self._item_tokens, indices)  # [B, K]
        ids = tf.where(tf.math.is_inf(values), tf.constant("", tf.string), ids)
        return {"item_ids": ids, "scores": values}


def request_checks(
    user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor, max_k: int, what: str
) -> list[tf.Operation]:
    """In-graph validation of a ``(user_id, history, k)`` request.

    TF Serving (and tfrec's local server) turn the failed assertion into gRPC
    ``INVALID_ARGUMENT`` with the message below.

    Args:
        user_id: ``[B]`` string ids.
        history: ``[B, L]`` string ids.
        k: ``[B]`` int32 cutoffs.
        max_k: Largest allowed ``k``.
        what: What ``max_k`` is, for the message (e.g. "the number of catalogue items").

    Returns:
        The assertion ops, for ``tf.control_dependencies``.
    """
    batch = tf.shape(user_id)[0]
    return [
        tf.debugging.assert_equal(
            tf.shape(history)[0], batch, message="history must have one row per user_id"
        ),
        tf.debugging.assert_equal(
            tf.shape(k)[0], batch, message="k must have one value per user_id"
        ),
        tf.debugging.assert_greater_equal(k, 1, message="k must be >= 1"),
        tf.debugging.assert_less_equal(k, max_k, message=f"k must be <= {max_k} ({what})"),
    ]


def exclude_items(scores: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
    """Sets the scores of padding, OOV and the given items to ``-inf``.

    Args:
        scores: ``[B, I]`` float32 scores over item indices.
        items: ``[B, L]`` int item indices to exclude per row (0/1 entries are harmless).

    Returns:
        ``[B, I]`` scores.
    """
    batch, length = tf.shape(items)[0], tf.shape(items)[1]
    rows = tf.repeat(tf.range(batch), length)  # [B * L]
    indices = tf.stack([rows, tf.reshape(items, [-1])], axis=1)  # [B * L, 2]
    scores = tf.tensor_scatter_nd_update(
        scores, indices, tf.fill([batch * length], tf.constant(-np.inf, scores.dtype))
    )
    reserved = tf.range(tf.shape(scores)[1]) < NUM_RESERVED  # [I]
    return tf.where(reserved[tf.newaxis, :], tf.constant(-np.inf, scores.dtype), scores)


def _default_config(model: TwoTowerModel, module: RetrievalServingModule) -> str:
    history = "string [B, L]"
    if not module.encodes_history:
        history += " (ID-only model: excluded from the results, not used by the query)"
    info: dict[str, Any] = {
        "model_type": "retrieval",
        "tfrec_version": __version__,
        "signature": SIGNATURE_NAME,
        "inputs": {"user_id": "string [B]", "history": history, "k": "int32 [B]"},
        "outputs": {"item_ids": "string [B, K]", "scores": "float32 [B, K]"},
        "num_users": model.num_users,
        "num_items": model.num_items,
        "num_real_items": module.num_real_items,
        "user_vocab": USER_VOCAB_FILE,
        "item_vocab": ITEM_VOCAB_FILE,
        "retrieval_config": model.config.to_dict(),
    }
    return json.dumps(info, indent=2, sort_keys=True) + "\n"


def assets_extra_files(
    default_config: str,
    assets_extra: Mapping[str, bytes] | None,
    extra_files: Mapping[str, str] | None,
) -> dict[str, bytes]:
    """Merges the files an export writes under ``assets.extra/``.

    Args:
        default_config: The exporter's ``tfrec_config.json`` (a caller's replaces it).
        assets_extra: Binary files from the caller (e.g. TF Serving warmup requests).
        extra_files: Text files from the caller (e.g. ``metrics.json``).

    Returns:
        File name -> bytes.

    Raises:
        ValueError: A bad or reserved file name (the vocabulary files are reserved).
    """
    files: dict[str, bytes] = {CONFIG_FILE: default_config.encode("utf-8")}
    texts = dict(extra_files or {})
    binaries = dict(assets_extra or {})
    for where, names in (("extra_files", texts), ("assets_extra", binaries)):
        for name in names:
            check_file_name(name, where)
            if name in _RESERVED_FILES:
                raise ValueError(f"{where}: {name!r} is written by the exporter; use another name")
    both = sorted(set(texts) & set(binaries))
    if both:
        raise ValueError(f"extra_files and assets_extra both contain {both}")
    for name, text in texts.items():
        if not isinstance(text, str):
            raise ValueError(f"extra_files[{name!r}]: expected str, got {type(text).__name__}")
        files[name] = text.encode("utf-8")
    files.update(binaries)
    return files


def export_retrieval(
    model: TwoTowerModel,
    user_vocab: IdVocabulary,
    item_vocab: IdVocabulary,
    base_dir: str | os.PathLike[str],
    *,
    model_name: str = "retrieval",
    version: int | None = None,
    assets_extra: Mapping[str, bytes] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Exports the retrieval SavedModel as ``<base_dir>/<model_name>/<version>/``.

    ``assets.extra/`` holds ``tfrec_config.json`` (model type, signature, sizes and
    the RetrievalConfig; a caller's ``extra_files["tfrec_config.json"]`` replaces
    it), ``user_vocab.txt`` / ``item_vocab.txt`` (one known id per line, in index
    order from 2) and the caller's files.

    Args:
        model: The trained model.
        user_vocab: Its user vocabulary.
        item_vocab: Its item vocabulary.
        base_dir: TF Serving base directory.
        model_name: Model directory name.
        version: Integer version, or None for the next free one.
        assets_extra: Binary files for ``assets.extra/`` (e.g. the TF Serving
            warmup file ``tf_serving_warmup_requests``).
        extra_files: Text files for ``assets.extra/`` (e.g. ``metrics.json``).

    Returns:
        The final version directory.

    Raises:
        ValueError: Vocabularies that do not match the model, a bad name or version,
            a file name that is not plain or clashes with the vocabulary files.
        FileExistsError: The version already exists (it is never overwritten).
    """
    module = RetrievalServingModule(model, user_vocab, item_vocab)
    files = assets_extra_files(_default_config(model, module), assets_extra, extra_files)
    with staged_version(base_dir, model_name, version) as staged:
        tf.saved_model.save(module, str(staged.path), signatures={SIGNATURE_NAME: module.serve})
        directory = write_assets_extra(staged.path, files)
        user_vocab.save(directory / USER_VOCAB_FILE)
        item_vocab.save(directory / ITEM_VOCAB_FILE)
    logger.info(
        "exported retrieval model to %s (%d items, %s/ %s)",
        staged.final_path,
        module.num_real_items,
        ASSETS_EXTRA,
        sorted([*files, USER_VOCAB_FILE, ITEM_VOCAB_FILE]),
    )
    return staged.final_path
