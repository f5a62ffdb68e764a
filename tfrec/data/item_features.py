"""Constant per-item content features (genres, title tokens) aligned with item indices.

:func:`build_item_feature_tables` turns an item table (``item_id``, ``title``,
``genres``) into the arrays the :class:`~tfrec.layers.towers.ItemTower` reads;
rows follow the item vocabulary, so the tables of a retrieval model and a ranker
trained on the same vocabulary are identical.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.vocab import NUM_RESERVED, IdVocabulary


@dataclasses.dataclass
class ItemFeatureTables:
    """Constant per-item content features, rows aligned with item vocabulary indices.

    Rows 0 (padding) and 1 (out-of-vocabulary) and items without metadata are zeros.

    Attributes:
        genres: ``[I, G]`` float32 multi-hot genres, or None without genres.
        genre_names: The G genre names, in column order.
        titles: ``[I, T]`` int32 title token ids (0 = padding), or None without titles.
        title_vocabulary: The title token vocabulary (index 0 ``""``, 1 ``"[UNK]"``).
    """

    genres: np.ndarray | None
    genre_names: list[str]
    titles: np.ndarray | None
    title_vocabulary: list[str]

    @property
    def title_vocab_size(self) -> int:
        """Size of the title token embedding table (0 without titles)."""
        return len(self.title_vocabulary) if self.titles is not None else 0


def _genre_list(value: Any) -> list[str]:
    """Normalises one ``genres`` cell (list, array, None/NaN) to a list of str."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(g) for g in value if str(g)]


def build_item_feature_tables(
    items: pd.DataFrame | None,
    item_vocab: IdVocabulary,
    max_title_tokens: int = 16,
    max_title_vocab: int = 20000,
) -> ItemFeatureTables:
    """Builds the genres and title-token tables for every item index.

    Title tokens come from a ``tf_keras.layers.TextVectorization`` (lower-cased,
    punctuation stripped, whitespace split) adapted on all catalogue titles.

    Args:
        items: Item table with columns ``item_id``, ``title``, ``genres`` (may
            hold items outside the vocabulary; they are ignored), or None.
        item_vocab: The item vocabulary the model indexes with.
        max_title_tokens: Title length T (longer titles are cut).
        max_title_vocab: Largest title token vocabulary (most frequent tokens).

    Returns:
        The tables; ``genres``/``titles`` are None when no item has any.

    Raises:
        ValueError: A missing column, a duplicate ``item_id`` or a bad size.
    """
    if max_title_tokens < 1:
        raise ValueError(f"max_title_tokens={max_title_tokens}; expected >= 1")
    if max_title_vocab < 3:
        raise ValueError(f"max_title_vocab={max_title_vocab}; expected >= 3")
    num_items = item_vocab.size
    if items is None or len(items) == 0:
        return ItemFeatureTables(None, [], None, [])
    missing = [c for c in ("item_id", "title", "genres") if c not in items.columns]
    if missing:
        raise ValueError(f"items table lacks column(s) {missing}; expected item_id, title, genres")
    ids = items["item_id"].astype(str)
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(f"items table: duplicate item_id {duplicated.iloc[0]!r}")
    index = item_vocab.lookup(ids.to_numpy())  # [N]; 1 = not in the vocabulary
    known = index >= NUM_RESERVED

    genre_lists = [_genre_list(g) for g in items["genres"]]
    genre_names = sorted({g for gl in genre_lists for g in gl})
    genres = None
    if genre_names:
        column = {g: j for j, g in enumerate(genre_names)}
        genres = np.zeros((num_items, len(genre_names)), np.float32)
        for row, gl, ok in zip(index, genre_lists, known, strict=True):
            if ok:
                genres[row, [column[g] for g in gl]] = 1.0

    titles_text = items["title"].fillna("").astype(str).to_numpy()
    titles = None
    title_vocabulary: list[str] = []
    if any(t.strip() for t in titles_text):
        vectorizer = keras.layers.TextVectorization(
            max_tokens=max_title_vocab,
            output_mode="int",
            output_sequence_length=max_title_tokens,
        )
        vectorizer.adapt(tf.constant(titles_text))
        title_vocabulary = [str(t) for t in vectorizer.get_vocabulary()]
        aligned = np.full(num_items, "", dtype=object)
        aligned[index[known]] = titles_text[known]
        titles = vectorizer(tf.constant(aligned.astype(str))).numpy().astype(np.int32)
        titles[:NUM_RESERVED] = 0
    return ItemFeatureTables(genres, genre_names, titles, title_vocabulary)


def save_item_features(tables: ItemFeatureTables, path: str | os.PathLike[str]) -> None:
    """Writes the tables to one ``.npz`` file (atomically: a temporary file, then a rename)."""
    path = Path(path)
    arrays: dict[str, Any] = {
        "genre_names": np.array(tables.genre_names, dtype=str),
        "title_vocabulary": np.array(tables.title_vocabulary, dtype=str),
    }
    if tables.genres is not None:
        arrays["genres"] = tables.genres
    if tables.titles is not None:
        arrays["titles"] = tables.titles
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_item_features(path: str | os.PathLike[str]) -> ItemFeatureTables:
    """Reads tables written by :func:`save_item_features`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    with np.load(path) as data:
        return ItemFeatureTables(
            genres=data.get("genres"),
            genre_names=[str(g) for g in data["genre_names"]],
            titles=data.get("titles"),
            title_vocabulary=[str(t) for t in data["title_vocabulary"]],
        )
