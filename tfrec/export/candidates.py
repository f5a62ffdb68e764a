"""Candidate vectors for an export: other items than the model's catalogue, embedded by its tower.

:class:`Candidates` is what :func:`tfrec.export.retrieval.export_retrieval` takes
to return other items than the training catalogue (``tfrec index``,
:mod:`tfrec.export.catalogue`). :func:`content_tables` encodes a catalogue's
genres and titles the way the run's item tower was trained (its genre names and
title vocabulary), and :func:`embed_items` computes item vectors with a trained
:class:`~tfrec.layers.towers.ItemTower`'s weights for any id rows and content.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from tfrec.data.item_features import ItemFeatureTables
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary
from tfrec.export.ivf import IvfIndex, build_export_index, make_ivf_index
from tfrec.layers.towers import ItemTower

logger = logging.getLogger(__name__)

#: The trained item tower's id table (the one weight read by row, not copied whole).
_ID_TABLE = "item_embedding/embeddings"


@dataclasses.dataclass(frozen=True)
class Candidates:
    """The items an export returns when they are not the model's training catalogue.

    Attributes:
        vocab: The candidate ids (the :class:`IdVocabulary` layout: index ``i >= 2``
            is returned as ``vocab.token(i)``).
        vectors: ``[vocab.size, D]`` float32 candidate vectors (rows 0 and 1 are
            never returned).
        info: JSON-compatible description, recorded as ``"catalogue"`` in
            ``tfrec_config.json``.
    """

    vocab: IdVocabulary
    vectors: np.ndarray
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check(self, embedding_dim: int) -> None:
        """Raises a ValueError unless ``vectors`` is ``[vocab.size, embedding_dim]`` with items."""
        shape = np.shape(self.vectors)
        if shape != (self.vocab.size, embedding_dim):
            raise ValueError(
                f"candidates: vectors have shape {shape}; expected "
                f"({self.vocab.size}, {embedding_dim}) (vocabulary rows, embedding_dim)"
            )
        if self.vocab.size <= NUM_RESERVED:
            raise ValueError("candidates: the vocabulary has no items: nothing to retrieve")

    def build_index(
        self,
        index: str,
        num_partitions: int | None,
        nprobe: int | None,
        tuning_queries: np.ndarray | None,
        *,
        seed: int,
    ) -> tuple[IvfIndex | None, dict[str, Any]]:
        """The export's index over these vectors (None for brute force) and its description.

        Raises:
            ValueError: An unknown ``index``, IVF options with ``"brute"`` or out of range.
        """
        if index != "ivf":  # brute force, or an unknown kind: build_export_index's checks
            return build_export_index(None, index, num_partitions, nprobe, tuning_queries)
        real_items = self.vocab.size - NUM_RESERVED
        if num_partitions is not None and not 1 <= num_partitions <= real_items:
            raise ValueError(
                f"num_partitions={num_partitions}; expected 1..{real_items} (the catalogue items)"
            )
        return make_ivf_index(
            np.asarray(self.vectors, np.float32)[NUM_RESERVED:],
            np.arange(NUM_RESERVED, self.vocab.size),
            num_partitions=num_partitions,
            nprobe=nprobe,
            tuning_queries=tuning_queries,
            seed=seed,
        )


def content_tables(
    items: pd.DataFrame, features: ItemFeatureTables | None, path: Path
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The catalogue's genre and title tables, in the run's encoding, rows 0/1 reserved.

    Genres the run never saw and title tokens outside its title vocabulary cannot
    be embedded: the former are dropped, the latter map to ``[UNK]`` (as in
    training); both are logged.

    Returns:
        ``[N + 2, G]`` float32 multi-hot genres and ``[N + 2, T]`` int32 title
        token ids (None where the run has no such feature).
    """
    rows = len(items) + NUM_RESERVED
    genres = titles = None
    if features is not None and features.genres is not None:
        column = {name: j for j, name in enumerate(features.genre_names)}
        genres = np.zeros((rows, len(column)), np.float32)
        unknown: set[str] = set()
        for row, names in enumerate(items["genres"], start=NUM_RESERVED):
            genres[row, [column[g] for g in names if g in column]] = 1.0
            unknown.update(g for g in names if g not in column)
        if unknown:
            logger.warning("%s: genres the run never saw are ignored: %s", path, sorted(unknown))
    if features is not None and features.titles is not None:
        vectorizer = keras.layers.TextVectorization(
            output_mode="int",
            output_sequence_length=features.titles.shape[1],
            vocabulary=features.title_vocabulary,
        )
        text = np.concatenate([["", ""], items["title"].fillna("").astype(str).to_numpy()])
        titles = vectorizer(tf.constant(text)).numpy().astype(np.int32)
        titles[:NUM_RESERVED] = 0
    return genres, titles


def _weight_key(weight: tf.Variable) -> str:
    """``<sub-layer>/<weight>`` of an ItemTower weight, whatever the tower's own name."""
    return "/".join(weight.name.split(":")[0].split("/")[-2:])


def embed_items(
    tower: ItemTower, id_rows: np.ndarray, genres: np.ndarray | None, titles: np.ndarray | None
) -> np.ndarray:
    """Vectors of items given by their id-table rows and content, with a trained tower's weights.

    A tower of the same layout over the new rows is built, the trained weights are
    copied into it (the id table by row: ``id_rows``) and its vectors returned, so
    the formula is the tower's own (:meth:`ItemTower.all_items`).

    Args:
        tower: The trained item tower (built).
        id_rows: ``[N]`` rows of the trained id table, one per item to embed.
        genres: ``[N, G]`` multi-hot genres in the tower's encoding, or None.
        titles: ``[N, T]`` title token ids in the tower's encoding, or None.

    Returns:
        ``[N, D]`` float32 vectors.

    Raises:
        RuntimeError: The trained tower's weights do not match the new tower's layout.
    """
    clone = ItemTower(
        len(id_rows),
        tower.embedding_dim,
        genre_table=genres,
        title_table=titles,
        title_vocab_size=tower.title_vocab_size,
        name="catalogue_item_tower",
    )
    clone.all_items()  # builds every sub-layer
    trained = {_weight_key(w): w for w in tower.trainable_weights}
    for weight in clone.trainable_weights:
        source = trained.get(_weight_key(weight))
        value = None if source is None else source.numpy()
        if value is not None and _weight_key(weight) == _ID_TABLE:
            value = value[id_rows]
        if value is None or value.shape != tuple(weight.shape):
            raise RuntimeError(
                f"the trained item tower has no weight {_weight_key(weight)} of shape "
                f"{tuple(weight.shape)} (it has {sorted(trained)})"
            )
        weight.assign(value)
    return clone.all_items().numpy().astype(np.float32)
