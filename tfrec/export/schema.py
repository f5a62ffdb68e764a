"""The one schema of ``assets.extra/tfrec_config.json``, for every exported kind.

Every tfrec SavedModel (retrieval, ranking, the combined recommender) carries
this file; :func:`export_config` is the only place it is built and
:func:`read_export_config` the only place it is read (``tfrec recommend``, and any
server-side reader). Schema version 1::

    {
      "schema_version": 1,
      "kind": "retrieval" | "ranking" | "recommender",
      "tfrec_version": "<tfrec version that wrote it>",
      "signature": {
        "name": "serving_default",
        "inputs": {"<name>": "<dtype> [<shape>]", ...},
        "outputs": {"<name>": "<dtype> [<shape>]", ...}
      },
      "signatures": {"<other signature>": "<what it takes>"},  # IVF: with_nprobe; explain
      "vocabularies": {"user": "user_vocab.txt", "item": "item_vocab.txt", ...},
      "vocabulary_sizes": {"users": <rows>, "items": <rows>, ...},  # incl. 2 reserved rows
      "num_real_items": <items that can be recommended>,
      "model_config": {...},        # retrieval: RetrievalConfig; ranking: RankingConfig;
                                    # recommender: {"retrieval": ..., "ranking": ...}
      "ranker_data_spec": {...},    # ranking, recommender: the ranker's input spec
      "num_candidates": <N>,        # recommender: retrieval top-N re-ranked
      "experiment_config": {...} | null,  # the run's config.json when exported from a run
      "index": {...},               # retrieval: the candidate index ({"type": "brute"} or IVF)
      "catalogue": {...}            # retrieval from `tfrec index`: the catalogue's source file
                                    # and item counts (added/removed/kept vs the run's)
    }

Keys a kind does not use are absent. This module imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfrec._version import __version__
from tfrec.config import check_choice
from tfrec.names import ExportKind

SCHEMA_VERSION = 1
#: File name under ``assets.extra/``.
CONFIG_FILE = "tfrec_config.json"
ASSETS_EXTRA = "assets.extra"
#: The optional, kind-specific top-level fields.
KIND_FIELDS = ("index", "signatures", "ranker_data_spec", "num_candidates", "catalogue")


def export_config(
    kind: str,
    *,
    signature: Mapping[str, Any],
    vocabularies: Mapping[str, str],
    vocabulary_sizes: Mapping[str, int],
    num_real_items: int,
    model_config: Mapping[str, Any],
    experiment_config: Mapping[str, Any] | None = None,
    **kind_fields: Any,
) -> dict[str, Any]:
    """Builds the ``tfrec_config.json`` of an export (schema version 1, see the module doc).

    Args:
        kind: ``retrieval``, ``ranking`` or ``recommender``.
        signature: ``{"name", "inputs", "outputs"}`` of ``serving_default``.
        vocabularies: Vocabulary role -> file name under ``assets.extra/``.
        vocabulary_sizes: Role (``users``, ``items``, ...) -> embedding table rows.
        num_real_items: Items the model can recommend (reserved rows excluded).
        model_config: The model's config dict(s).
        experiment_config: The run's ``config.json`` contents, when exported from a run.
        **kind_fields: ``index``, ``signatures`` (other signatures), ``ranker_data_spec``,
            ``num_candidates``, ``catalogue``.

    Returns:
        The JSON-compatible dict.

    Raises:
        ValueError: An unknown kind or kind field, or a signature without name/inputs/outputs.
    """
    check_choice("export kind", kind, ExportKind)
    unknown = sorted(set(kind_fields) - set(KIND_FIELDS))
    if unknown:
        raise ValueError(f"export_config: unknown field(s) {unknown}")
    missing = sorted({"name", "inputs", "outputs"} - set(signature))
    if missing:
        raise ValueError(f"export_config: signature lacks {missing}")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "tfrec_version": __version__,
        "signature": dict(signature),
        "vocabularies": dict(vocabularies),
        "vocabulary_sizes": {key: int(value) for key, value in vocabulary_sizes.items()},
        "num_real_items": int(num_real_items),
        "model_config": dict(model_config),
        "experiment_config": dict(experiment_config) if experiment_config is not None else None,
        **kind_fields,
    }


def export_config_json(**fields: Any) -> str:
    """:func:`export_config` as pretty, key-sorted JSON text (what the exporters write)."""
    return json.dumps(export_config(**fields), indent=2, sort_keys=True) + "\n"


def read_export_config(export_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``<export_dir>/assets.extra/tfrec_config.json``.

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: Not a JSON object, or not schema version 1 (the message names the file).
    """
    path = Path(export_dir) / ASSETS_EXTRA / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version={data.get('schema_version')!r}; expected {SCHEMA_VERSION} "
            "(re-export the model with this tfrec)"
        )
    return data
