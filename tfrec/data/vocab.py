"""Id vocabularies: string ids <-> contiguous integer indices.

Index 0 is padding (token ``""``), index 1 is out-of-vocabulary (``"[UNK]"``),
known ids start at 2. This is the layout of
``tf_keras.layers.StringLookup(vocabulary=tokens, mask_token="", num_oov_indices=1)``,
so indices computed here in numpy equal those an exported SavedModel computes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tfrec.config import atomic_write_text

if TYPE_CHECKING:
    from tfrec.data.interactions import Interactions

PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"
PAD_INDEX = 0
OOV_INDEX = 1
NUM_RESERVED = 2


class IdVocabulary:
    """An ordered vocabulary of string ids with padding and OOV slots.

    Args:
        tokens: Known ids, in index order (index ``i + 2`` for ``tokens[i]``).
            Must be unique, non-empty strings other than ``"[UNK]"``.
        name: Label used in error messages and file names (e.g. ``"item"``).

    Raises:
        ValueError: A duplicate, empty or reserved token.
    """

    def __init__(self, tokens: Sequence[str], name: str = "id") -> None:
        self.name = name
        self.tokens: list[str] = [str(t) for t in tokens]
        self._index: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if token in (PAD_TOKEN, OOV_TOKEN):
                raise ValueError(
                    f"{name} vocabulary: token {token!r} at position {i} is reserved "
                    f"(padding {PAD_TOKEN!r} / out-of-vocabulary {OOV_TOKEN!r})"
                )
            if token in self._index:
                raise ValueError(f"{name} vocabulary: duplicate token {token!r} at position {i}")
            self._index[token] = i + NUM_RESERVED

    @classmethod
    def from_ids(cls, ids: Iterable[str], name: str = "id") -> IdVocabulary:
        """Builds a vocabulary of the distinct ids, in order of first appearance."""
        seen: dict[str, None] = {}
        for value in ids:
            seen.setdefault(str(value), None)
        seen.pop(PAD_TOKEN, None)
        return cls(list(seen), name=name)

    @property
    def size(self) -> int:
        """Number of indices including padding and OOV (the embedding table size)."""
        return len(self.tokens) + NUM_RESERVED

    def __len__(self) -> int:
        return self.size

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def lookup(self, ids: Iterable[str] | np.ndarray) -> np.ndarray:
        """Maps string ids to indices; ``""`` -> 0, unknown -> 1.

        Args:
            ids: Array-like of strings, any shape.

        Returns:
            int32 array of the same shape.
        """
        arr = np.asarray(ids, dtype=object)
        get = self._index.get
        flat = [PAD_INDEX if v == PAD_TOKEN else get(str(v), OOV_INDEX) for v in arr.ravel()]
        return np.asarray(flat, dtype=np.int32).reshape(arr.shape)

    def token(self, index: int) -> str:
        """Returns the string id for ``index`` (``""`` and ``"[UNK]"`` for 0 and 1)."""
        if index == PAD_INDEX:
            return PAD_TOKEN
        if index == OOV_INDEX:
            return OOV_TOKEN
        if not NUM_RESERVED <= index < self.size:
            raise ValueError(f"{self.name} vocabulary: index {index} out of range [0, {self.size})")
        return self.tokens[index - NUM_RESERVED]

    def all_tokens(self) -> list[str]:
        """Returns the tokens for every index, padding and OOV included."""
        return [PAD_TOKEN, OOV_TOKEN, *self.tokens]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes one token per line (known ids only), atomically."""
        for i, token in enumerate(self.tokens):
            if "\n" in token or "\r" in token:
                raise ValueError(f"{self.name} vocabulary: token {i} {token!r} contains a newline")
        atomic_write_text(path, "".join(t + "\n" for t in self.tokens))

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str = "id") -> IdVocabulary:
        """Reads a vocabulary written by :meth:`save`."""
        text = Path(path).read_text(encoding="utf-8")
        return cls(text.split("\n")[:-1] if text else [], name=name)

    def __repr__(self) -> str:
        return f"IdVocabulary(name={self.name!r}, known={len(self.tokens)})"


def build_vocabularies(data: Interactions) -> tuple[IdVocabulary, IdVocabulary]:
    """User and item vocabularies over a whole dataset and its item catalogue.

    The catalogue is known at training time, so every item, including those only
    in the item table (cold-start items), gets an index and is ranked. Ids are
    indexed in order of first appearance: interactions first, then catalogue-only items.

    Args:
        data: The full (unsplit) dataset.

    Returns:
        ``(user_vocab, item_vocab)``.
    """
    user_vocab = IdVocabulary.from_ids(data.frame["user_id"], name="user")
    item_ids = list(data.frame["item_id"])
    if data.items is not None:
        item_ids += list(data.items["item_id"].astype(str))
    return user_vocab, IdVocabulary.from_ids(item_ids, name="item")
