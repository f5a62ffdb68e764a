"""tfrec's data layer: load, clean, split, sequence and feed interaction data.

* :mod:`~tfrec.data.loaders` / :mod:`~tfrec.data.movielens`: ``load_dataset(name)``
  and one loader per format; :mod:`~tfrec.data.download`: data-dir resolution
  and sha256-checked downloads; :mod:`~tfrec.data.parsing`: located parse errors.
* :mod:`~tfrec.data.synthetic`: data with planted structure for tests and demos.
* :mod:`~tfrec.data.splits`: leave-one-out, temporal and per-user random splits.
* :mod:`~tfrec.data.sequences`: padded histories and training examples (numpy);
  :mod:`~tfrec.data.queries`: evaluation queries; :mod:`~tfrec.data.item_features`:
  item content tables; :mod:`~tfrec.data.ranking_examples` /
  :mod:`~tfrec.data.ranking_lists` / :mod:`~tfrec.data.negatives`: the ranker's inputs.
* :mod:`~tfrec.data.tfdata`: ``tf.data`` from arrays and TFRecord shards;
  :mod:`~tfrec.data.preparation`: ``tfrec prepare``.

The TensorFlow-dependent names (``make_dataset``, ``write_tfrecords``,
``tfrecord_dataset``, ``read_spec``, ``prepare``, ``PrepareConfig``,
``PrepareResult``, ``PreparedData``, ``load_prepared``) are imported on first
use, so importing :mod:`tfrec.data` does not load TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from tfrec.data.download import (
    ChecksumError,
    DatasetNotFoundError,
    DownloadError,
    resolve_data_dir,
)
from tfrec.data.interactions import DataError, Interactions
from tfrec.data.loaders import (
    DATASETS,
    DatasetInfo,
    load_beauty_bert4rec,
    load_beauty_s3rec,
    load_dataset,
    load_interactions_file,
)
from tfrec.data.movielens import load_movielens_100k, load_movielens_latest_small
from tfrec.data.sequences import (
    UserSequences,
    heldout_examples,
    history_matrix,
    interaction_pairs,
    retrieval_examples,
    seen_items,
    user_sequences,
)
from tfrec.data.splits import (
    Split,
    item_stratified_split,
    leave_one_out,
    random_split_per_user,
    temporal_split,
)
from tfrec.data.synthetic import make_synthetic
from tfrec.data.vocab import IdVocabulary

_LAZY = {
    "make_dataset": "tfrec.data.tfdata",
    "write_tfrecords": "tfrec.data.tfdata",
    "tfrecord_dataset": "tfrec.data.tfdata",
    "read_spec": "tfrec.data.tfdata",
    "prepare": "tfrec.data.preparation",
    "PrepareConfig": "tfrec.data.preparation",
    "PrepareResult": "tfrec.data.preparation",
    "PreparedData": "tfrec.data.preparation",
    "load_prepared": "tfrec.data.preparation",
}

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DownloadError",
    "IdVocabulary",
    "Interactions",
    "PrepareConfig",
    "PrepareResult",
    "PreparedData",
    "Split",
    "UserSequences",
    "heldout_examples",
    "history_matrix",
    "interaction_pairs",
    "item_stratified_split",
    "leave_one_out",
    "load_beauty_bert4rec",
    "load_beauty_s3rec",
    "load_dataset",
    "load_interactions_file",
    "load_movielens_100k",
    "load_movielens_latest_small",
    "load_prepared",
    "make_dataset",
    "make_synthetic",
    "prepare",
    "random_split_per_user",
    "read_spec",
    "resolve_data_dir",
    "retrieval_examples",
    "seen_items",
    "temporal_split",
    "tfrecord_dataset",
    "user_sequences",
    "write_tfrecords",
]


def __getattr__(name: str) -> Any:
    """Imports the TensorFlow-dependent names on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
