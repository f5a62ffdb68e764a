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

``candidates`` (:class:`tfrec.export.candidates.Candidates`, from ``tfrec index``)
replaces the model's catalogue by other ids and vectors: the query still reads the
history through the training vocabulary; outputs and exclusion use the candidate ids.

``index="ivf"`` replaces the brute-force scoring with an IVF index built from
stock TF ops (:mod:`tfrec.export.ivf`): same signature, same exclusion and ``k``
rules, approximate top K. It adds a second signature, ``with_nprobe``: the same
inputs plus ``nprobe`` int32 ``[B]`` (partitions probed per row, ``1..P``,
checked in-graph like ``k``); ``serving_default`` probes the export's default
``nprobe``. TF Serving clients choose the signature by name
(``model_spec.signature_name``).
A model that encodes a history also gets an ``explain`` signature
(:mod:`tfrec.export.explanations`) unless ``explain_top=0``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfrec.data.vocab import NUM_RESERVED, IdVocabulary
from tfrec.export.explanations import (
    EXPLAIN_SIGNATURE_NAME,
    explain_description,
    explanation_outputs,
    leave_one_out,
    resolve_explain_top,
    row_lookup,
)
from tfrec.export.graph_ops import exclude_items, request_checks, string_lookup
from tfrec.export.ivf import IvfIndex, build_export_index, with_index_info
from tfrec.export.layout import (  # the vocabulary files and assets_extra_files: re-exported
    ASSETS_EXTRA,
    CANDIDATE_VOCAB_FILE,
    ITEM_VOCAB_FILE,
    USER_VOCAB_FILE,
    assets_extra_files,
    staged_version,
    write_assets_extra,
)
from tfrec.export.schema import CONFIG_FILE, export_config_json
from tfrec.layers.towers import compact_history
from tfrec.models.retrieval import TwoTowerModel

if TYPE_CHECKING:
    from tfrec.export.candidates import Candidates

logger = logging.getLogger(__name__)

SIGNATURE_NAME = "serving_default"
NPROBE_SIGNATURE_NAME = "with_nprobe"  # IVF exports only: serving_default + an nprobe input
#: The inputs of every recommender signature (retrieval, combined): ``user_id``, ``history``, ``k``.
RECOMMEND_SIGNATURE = (
    tf.TensorSpec([None], tf.string, name="user_id"),
    tf.TensorSpec([None, None], tf.string, name="history"),
    tf.TensorSpec([None], tf.int32, name="k"),
)


class RetrievalServingModule(tf.Module):
    """The exported graph: lookups, query tower, precomputed candidates, top-K.

    Args:
        model: A trained TwoTowerModel (its query tower is exported; the candidate
            vectors are computed once here).
        user_vocab: The user vocabulary the model was trained with.
        item_vocab: The item vocabulary the model was trained with.
        index: An IVF index over the candidate vectors (from
            :func:`~tfrec.export.ivf.make_ivf_index`) to score instead of brute
            force; it adds the ``serve_with_nprobe`` function.
        candidates: Other candidates than the model's catalogue (their ids are
            returned and excluded; the history is still read with ``item_vocab``).
        explain_top: ``m``, history items per recommended item of the ``explain``
            signature (:func:`~tfrec.export.explanations.resolve_explain_top`:
            None = 3, or 0 for an ID-only model; 0 = no ``explain`` signature).

    Raises:
        ValueError: Vocabulary sizes that do not match the model, a catalogue
            without real items, a model that needs context features, or
            ``explain_top >= 1`` for an ID-only model.
    """

    def __init__(
        self,
        model: TwoTowerModel,
        user_vocab: IdVocabulary,
        item_vocab: IdVocabulary,
        index: IvfIndex | None = None,
        candidates: Candidates | None = None,
        *,
        explain_top: int | None = None,
    ):
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
        if candidates is not None:  # other ids and vectors than the model's catalogue
            candidates.check(model.config.embedding_dim)
        catalogue = item_vocab if candidates is None else candidates.vocab
        self.num_real_items = catalogue.size - NUM_RESERVED
        self.max_history = model.config.max_history
        self.encodes_history = model.encodes_history
        self.user_lookup = string_lookup(user_vocab, "user_lookup")
        self.item_lookup = string_lookup(item_vocab, "item_lookup")
        self.candidate_lookup = (  # history ids -> candidate indices (None: item_lookup's)
            None if candidates is None else string_lookup(candidates.vocab, "candidate_lookup")
        )
        self.query_tower = model.query_tower
        self.index = index
        if index is None:
            vectors = model.candidate_embeddings() if candidates is None else candidates.vectors
            self.candidates = tf.Variable(
                tf.cast(vectors, tf.float32), trainable=False, name="candidate_embeddings"
            )  # [I, D]
        else:
            self.serve_with_nprobe = tf.function(
                self._serve_with_nprobe,
                input_signature=[
                    *RECOMMEND_SIGNATURE,
                    tf.TensorSpec([None], tf.int32, name="nprobe"),
                ],
            )
        self._item_tokens = tf.constant(catalogue.all_tokens(), dtype=tf.string)  # [I]
        self.explain_top = resolve_explain_top(explain_top, model.encodes_history)
        if self.explain_top:  # explanations name history items: item_vocab ids
            own = candidates is None
            self._history_tokens = (
                self._item_tokens if own else tf.constant(item_vocab.all_tokens())
            )
            if index is not None:  # item index -> row of the IVF's partition-ordered vectors
                rows = row_lookup(index.item_ids.numpy(), catalogue.size)  # [I]
                self._ivf_rows = tf.Variable(rows, trainable=False, name="explain_ivf_rows")
            self.serve_explain = tf.function(self._explain, input_signature=RECOMMEND_SIGNATURE)

    @tf.function(input_signature=RECOMMEND_SIGNATURE)
    def serve(self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor) -> dict[str, tf.Tensor]:
        """Top-K items per user; see the module docstring for the contract."""
        values, indices, _ = self._top_k(user_id, history, k, self._default_nprobe(user_id), [])
        return self._outputs(values, indices)

    def _explain(
        self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """``serving_default`` + the leave-one-out explanations of each recommended item."""
        nprobe = self._default_nprobe(user_id)
        values, indices, (users, recent) = self._top_k(user_id, history, k, nprobe, [])
        if self.index is None:
            vectors = tf.gather(self.candidates, indices)  # [B, K, D]
        else:
            vectors = tf.gather(self.index.vectors, tf.gather(self._ivf_rows, indices))
        filled = tf.logical_not(tf.math.is_inf(values))  # [B, K]
        causes, drops = leave_one_out(
            self.query_tower, users, recent, vectors, filled, top=self.explain_top
        )  # [B, K, m]
        outputs = self._outputs(values, indices)
        return {**outputs, **explanation_outputs(self._history_tokens, causes, drops)}

    def _default_nprobe(self, user_id: tf.Tensor) -> tf.Tensor | None:
        """``[B]`` the index's default ``nprobe`` (None: brute force)."""
        if self.index is None:
            return None
        return tf.fill(tf.shape(user_id)[:1], self.index.default_nprobe)

    def _serve_with_nprobe(
        self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor, nprobe: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """``serving_default`` with the partitions probed per row (IVF exports)."""
        partitions = self.index.num_partitions
        checks = [
            tf.debugging.assert_equal(
                tf.shape(nprobe)[0], tf.shape(user_id)[0],
                message="nprobe must have one value per user_id",
            ),
            tf.debugging.assert_greater_equal(nprobe, 1, message="nprobe must be >= 1"),
            tf.debugging.assert_less_equal(
                nprobe, partitions, message=f"nprobe must be <= {partitions} (the partitions)"
            ),
        ]  # fmt: skip
        values, indices, _ = self._top_k(user_id, history, k, nprobe, checks)
        return self._outputs(values, indices)

    def _top_k(
        self,
        user_id: tf.Tensor,
        history: tf.Tensor,
        k: tf.Tensor,
        nprobe: tf.Tensor | None,
        checks: list[tf.Operation],
    ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        """``[B, K]`` scores and candidate indices, and what the query read (``_query``)."""
        query, items, read = self._query(user_id, history, k, checks)
        top = tf.maximum(tf.reduce_max(k), 1)  # K = max(k); 1 for an empty batch
        if self.index is None:
            scores = tf.matmul(query, self.candidates, transpose_b=True)  # [B, I]
            values, indices = tf.math.top_k(exclude_items(scores, items), k=top)  # [B, K]
        else:
            values, indices = self.index.search(query, items, top, nprobe)  # [B, K]
        return values, indices, read

    def _query(
        self, user_id: tf.Tensor, history: tf.Tensor, k: tf.Tensor, checks: list[tf.Operation]
    ) -> tuple[tf.Tensor, tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        """Checked inputs -> queries ``[B, D]``, excluded ``[B, L]``, ``(users, recent)`` read."""
        checks = checks + request_checks(
            user_id, history, k, self.num_real_items, "the number of catalogue items"
        )
        with tf.control_dependencies(checks):
            users = tf.cast(self.user_lookup(user_id), tf.int32)  # [B]
            items = tf.cast(self.item_lookup(history), tf.int32)  # [B, L]; OOV = 1
        # An ID-only query tower ignores the history; it still excludes items (callers).
        # compact_history turns a [B, 0] history into one padding column (an empty history).
        recent = compact_history(items)[:, -self.max_history :]  # [B, <= max_history]
        # With other candidates, the history ids are looked up among them for the exclusion.
        lookup = self.candidate_lookup
        excluded = items if lookup is None else tf.cast(lookup(history), tf.int32)  # [B, L]
        query = self.query_tower.final_query(users, recent)  # [B, D]
        return query, excluded, (users, recent)

    def _outputs(self, values: tf.Tensor, indices: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = tf.gather(self._item_tokens, indices)  # [B, K]
        ids = tf.where(tf.math.is_inf(values), tf.constant("", tf.string), ids)
        return {"item_ids": ids, "scores": values}

    def signatures(self) -> dict[str, Any]:
        """``serving_default``, + ``with_nprobe`` (index), + ``explain`` (``explain_top > 0``)."""
        signatures = {SIGNATURE_NAME: self.serve}
        if self.index is not None:
            signatures[NPROBE_SIGNATURE_NAME] = self.serve_with_nprobe
        if self.explain_top:
            signatures[EXPLAIN_SIGNATURE_NAME] = self.serve_explain
        return signatures


def _default_config(
    model: TwoTowerModel,
    module: RetrievalServingModule,
    index_info: dict[str, Any],
    experiment_config: Mapping[str, Any] | None = None,
    candidates: Candidates | None = None,
) -> str:
    """The export's ``tfrec_config.json`` (:mod:`tfrec.export.schema`, kind ``retrieval``).

    With ``candidates``, ``vocabularies``/``vocabulary_sizes`` add ``"candidates"``
    (the returned ids) and ``"catalogue"`` records ``candidates.info``.
    """
    history = "string [B, L]"
    if not module.encodes_history:
        history += " (ID-only model: excluded from the results, not used by the query)"
    signature = {
        "name": SIGNATURE_NAME,
        "inputs": {"user_id": "string [B]", "history": history, "k": "int32 [B]"},
        "outputs": {"item_ids": "string [B, K]", "scores": "float32 [B, K]"},
    }
    others = {}
    if module.index is not None:
        others["signatures"] = {
            NPROBE_SIGNATURE_NAME: f"{SIGNATURE_NAME} inputs + nprobe int32 [B] "
            f"(1..{module.index.num_partitions}; default {module.index.default_nprobe})"
        }
    if module.explain_top:
        others.setdefault("signatures", {})[EXPLAIN_SIGNATURE_NAME] = explain_description(
            module.explain_top
        )
    vocabularies = {"user": USER_VOCAB_FILE, "item": ITEM_VOCAB_FILE}
    sizes = {"users": model.num_users, "items": model.num_items}
    if candidates is not None:
        vocabularies["candidates"] = CANDIDATE_VOCAB_FILE
        sizes["candidates"] = candidates.vocab.size
        others["catalogue"] = dict(candidates.info)
    return export_config_json(
        kind="retrieval",
        signature=signature,
        vocabularies=vocabularies,
        vocabulary_sizes=sizes,
        num_real_items=module.num_real_items,
        model_config=model.config.to_dict(),
        experiment_config=experiment_config,
        index=index_info,
        **others,
    )


def _build_index(  # noqa: PLR0917  (export_retrieval's index arguments, in order)
    model: TwoTowerModel,
    candidates: Candidates | None,
    index: str,
    num_partitions: int | None,
    nprobe: int | None,
    tuning_queries: np.ndarray | None,
) -> tuple[IvfIndex | None, dict[str, Any]]:
    """The IVF index (None: brute force) and its ``"index"`` info (catalogue or candidates)."""
    if candidates is None:
        return build_export_index(model, index, num_partitions, nprobe, tuning_queries)
    candidates.check(model.config.embedding_dim)
    return candidates.build_index(
        index, num_partitions, nprobe, tuning_queries, seed=model.config.training.seed
    )


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
    index: str = "brute",
    num_partitions: int | None = None,
    nprobe: int | None = None,
    tuning_queries: np.ndarray | None = None,
    experiment_config: Mapping[str, Any] | None = None,
    candidates: Candidates | None = None,
    explain_top: int | None = None,
) -> Path:
    """Exports the retrieval SavedModel as ``<base_dir>/<model_name>/<version>/``.

    ``assets.extra/`` holds ``tfrec_config.json`` (:mod:`tfrec.export.schema`; a
    caller's ``extra_files["tfrec_config.json"]`` replaces it, and with an IVF
    index gets its ``"index"`` entry), ``user_vocab.txt`` / ``item_vocab.txt``
    (known ids in index order from 2) and the caller's files. ``index="ivf"``:
    :mod:`tfrec.export.ivf` (k-means at export time, about a minute at 10^6 items).

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
        index: ``"brute"`` (exact, every item scored) or ``"ivf"`` (approximate).
        num_partitions: IVF partitions P (default ``round(4 * sqrt(items))``;
            oversized partitions are split, so the index may have a few more).
        nprobe: IVF partitions probed by ``serving_default`` (default: the
            smallest reaching a recall@10 of 0.95 against brute force on
            ``tuning_queries``).
        tuning_queries: ``[Q, D]`` validation-like query vectors for choosing
            ``nprobe`` (default: a sample of the candidate vectors). Never pass
            test queries: the choice would be tuned on the test set.
        experiment_config: The run's ``config.json`` contents (``experiment_config``).
        candidates: Items to return instead of the model's catalogue (their ids
            and vectors, e.g. a new catalogue embedded by the item tower:
            :mod:`tfrec.export.catalogue`); adds ``candidate_vocab.txt``. The
            IVF index is then built on these vectors.
        explain_top: ``m`` of the ``explain`` signature (history items per
            recommended item; None: 3, or 0 for an ID-only model; 0: no ``explain``).

    Returns:
        The final version directory.

    Raises:
        ValueError: Vocabularies that do not match the model, a bad name or version,
            a file name that is not plain or clashes with the vocabulary files, an
            unknown ``index``, IVF options with ``index="brute"`` or out of range,
            ``explain_top >= 1`` with an ID-only model.
        FileExistsError: The version already exists (it is never overwritten).
    """
    ivf, index_info = _build_index(model, candidates, index, num_partitions, nprobe, tuning_queries)
    module = RetrievalServingModule(
        model, user_vocab, item_vocab, index=ivf, candidates=candidates, explain_top=explain_top
    )
    config = _default_config(model, module, index_info, experiment_config, candidates)
    files = assets_extra_files(config, assets_extra, extra_files)
    if ivf is not None:
        files[CONFIG_FILE] = with_index_info(files[CONFIG_FILE], index_info, CONFIG_FILE)
    vocabularies = {USER_VOCAB_FILE: user_vocab, ITEM_VOCAB_FILE: item_vocab}
    if candidates is not None:
        vocabularies[CANDIDATE_VOCAB_FILE] = candidates.vocab
    return _write_version(module, files, vocabularies, base_dir, model_name, version)


def _write_version(  # noqa: PLR0917  (export_retrieval's arguments, in order)
    module: RetrievalServingModule,
    files: Mapping[str, bytes],
    vocabularies: Mapping[str, IdVocabulary],
    base_dir: str | os.PathLike[str],
    model_name: str,
    version: int | None,
) -> Path:
    """Saves ``module`` as a new version, ``files`` and the vocabularies in ``assets.extra/``.

    Returns:
        The final version directory.
    """
    with staged_version(base_dir, model_name, version) as staged:
        tf.saved_model.save(module, str(staged.path), signatures=module.signatures())
        directory = write_assets_extra(staged.path, files)
        for name, vocab in vocabularies.items():  # user, item (+ candidates) vocabularies
            vocab.save(directory / name)
    logger.info(
        "exported retrieval model to %s (%d items, %s index, %s/ %s)",
        staged.final_path,
        module.num_real_items,
        "brute" if module.index is None else "ivf",  # export_retrieval's checked index
        ASSETS_EXTRA,
        sorted([*files, USER_VOCAB_FILE, ITEM_VOCAB_FILE]),
    )
    return staged.final_path
