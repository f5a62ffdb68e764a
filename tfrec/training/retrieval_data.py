"""The retrieval experiment's training data: its examples, target counts and prepared runs.

:class:`~tfrec.training.retrieval.RetrievalExperiment` trains on in-memory examples
built from the train part's user sequences, or on the sharded TFRecords of a
``tfrec prepare`` directory (:func:`prepared_split` opens it);
:func:`training_examples` gives either's example count and the item target
counts (item popularity and logQ).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.sequences import UserSequences, interaction_pairs, retrieval_examples
from tfrec.data.splits import Split
from tfrec.models.retrieval import NO_ENCODER

if TYPE_CHECKING:
    from tfrec.data.preparation import PreparedData
    from tfrec.models.retrieval import RetrievalConfig


def prepared_split(directory: str, max_history: int) -> tuple[PreparedData, Split, Interactions]:
    """Opens a ``tfrec prepare`` directory for training.

    Args:
        directory: The prepared directory.
        max_history: The model's history length (the directory's must match).

    Returns:
        The prepared data, its split and all its interactions.

    Raises:
        ValueError: The directory's histories are not ``max_history`` long.
    """
    from tfrec.data.preparation import load_prepared  # noqa: PLC0415

    prepared = load_prepared(directory)
    if prepared.config.max_len != max_history:
        raise ValueError(
            f"prepared_dir {directory} has histories of length {prepared.config.max_len} "
            f"but model.max_history={max_history}; use the same value "
            "(tfrec prepare --max-len / tfrec train --max-history)"
        )
    parts = prepared.parts
    split = Split(
        train=parts["train"],
        valid=parts.get("valid"),
        test=parts["test"],
        protocol=prepared.summary.protocol,
    )
    return prepared, split, concat_interactions(*parts.values())


def training_examples(
    train_seqs: UserSequences,
    model: RetrievalConfig,
    num_items: int,
    prepared: PreparedData | None,
    dataset_name: str,
) -> tuple[dict[str, np.ndarray] | None, int, np.ndarray]:
    """``(in-memory examples or None for prepared runs, their count, item target counts)``.

    ID-only (encoder="none"): the query is the user embedding alone, so every
    train interaction is a (user, item) pair, first items and one-interaction
    users included. History encoders need a history before each target: rows
    from the 2nd item on. A prepared run trains on the directory's sequence rows.

    Args:
        train_seqs: The (sampled) users' train sequences.
        model: The model config (``encoder``, ``max_history``, ``training_positions``).
        num_items: Item vocabulary size (the counts' length).
        prepared: The ``tfrec prepare`` directory trained on, or None (in memory).
        dataset_name: The dataset's name, for the error message.

    Raises:
        ValueError: No training example.
    """
    examples: dict[str, np.ndarray] | None = None
    pairs = model.encoder == NO_ENCODER and prepared is None
    if pairs:
        examples = interaction_pairs(train_seqs)
        num_examples = len(examples["user"])
    elif prepared is None:
        examples = retrieval_examples(train_seqs, model.max_history, mode=model.training_positions)
        num_examples = len(examples["user"])
    else:
        num_examples = prepared.summary.examples.get("train", 0)
    if num_examples == 0:
        reason = (
            "the training part has no interactions"
            if pairs
            else "every user has fewer than 2 training interactions"
        )
        raise ValueError(f"dataset {dataset_name!r}: no training examples ({reason})")
    # The training targets, for item popularity and logQ: every train item with
    # interaction pairs, else every item after a user's first train item.
    first = 0 if pairs else 1
    targets = [items[first:] for items in train_seqs.items if len(items) > first]
    counts = np.bincount(np.concatenate(targets), minlength=num_items).astype(np.float64)
    counts[:2] = 0.0
    return examples, num_examples, counts
