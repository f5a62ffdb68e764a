"""``tfrec recommend --explain``: the ``explain`` signature, locally or over gRPC, and its lines.

Under each recommended item ``tfrec recommend --explain`` prints the history
items whose removal lowers that item's score most, with the score drop
(:mod:`tfrec.export.explanations`)::

      1. i42            0.8123  Some title
         because you watched: i7 (+0.42), i3 (+0.13)

The verb comes from the dataset the export was trained on (its
``tfrec_config.json``), else "because of". No TensorFlow at import.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tfrec.cli.main import CommandError

logger = logging.getLogger(__name__)

#: The ``explain`` signature (:data:`tfrec.export.explanations.EXPLAIN_SIGNATURE_NAME`).
SIGNATURE = "explain"
ITEMS_OUTPUT = "explanation_items"
SCORES_OUTPUT = "explanation_scores"
#: What a user did with an item, per dataset (others: "because of").
VERBS = {
    "ml-100k": "you watched",
    "ml-latest-small": "you watched",
    "beauty": "you bought",
    "beauty-bert4rec": "you bought",
    "sports": "you bought",
    "lastfm": "you listened to",
}


def explanation_verb(export_dir: Path | None) -> str:
    """``"because <verb>"`` for the export's dataset (``"because of"`` when unknown)."""
    if export_dir is None:
        return "because of"
    from tfrec.export.schema import read_export_config  # noqa: PLC0415

    try:
        experiment = read_export_config(export_dir).get("experiment_config") or {}
    except (OSError, ValueError) as err:
        logger.debug("no dataset name in %s: %s", export_dir, err)
        return "because of"
    data = experiment.get("data") if isinstance(experiment, dict) else None
    dataset = data.get("dataset") if isinstance(data, dict) else None
    verb = VERBS.get(dataset) if isinstance(dataset, str) else None
    return f"because {verb}" if verb else "because of"


def missing_signature_message(export_dir: Path, signatures: list[str]) -> str:
    """Why an export has no ``explain`` signature, for a :class:`CommandError`."""
    from tfrec.export.schema import read_export_config  # noqa: PLC0415

    try:
        config = read_export_config(export_dir).get("model_config") or {}
    except (OSError, ValueError):
        config = {}
    config = config.get("retrieval", config)  # recommender: {"retrieval": ..., "ranking": ...}
    if isinstance(config, dict) and config.get("encoder") == "none":
        reason = (
            "its retrieval model is ID-only (encoder='none'): it reads no history, so no "
            "history item can explain a recommendation"
        )
    else:
        reason = "re-export the model with this tfrec (explanations are on unless explain_top=0)"
    return f"--export {export_dir}: no {SIGNATURE} signature (has {signatures}); {reason}"


def decode(array: Any) -> np.ndarray:
    """Bytes (or str) array -> str object array of the same shape."""
    values = np.asarray(array, dtype=object)
    flat = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]
    return np.array(flat, dtype=object).reshape(values.shape)


def remote_explain(
    args: argparse.Namespace, users: list[str], histories: list[list[str]], serving: Any
) -> dict[str, np.ndarray]:
    """Calls the server's ``explain`` signature (raises the client's errors).

    Args:
        args: ``tfrec recommend``'s arguments (server, model, version, timeout, top_k).
        users: ``[B]`` user ids.
        histories: ``[B]`` item-id lists, oldest first (left-padded with ``""``).
        serving: The :mod:`tfrec.serving.client` module.

    Returns:
        ``item_ids`` ``[B, k]``, ``scores``, ``explanation_items`` ``[B, k, m]`` (str)
        and ``explanation_scores``.
    """
    width = max(1, *(len(h) for h in histories))
    history = np.array([[""] * (width - len(h)) + h for h in histories], dtype=object)
    inputs = {
        "user_id": np.array(users, dtype=object),
        "history": history,
        "k": np.full(len(users), args.top_k, dtype=np.int32),
    }
    with serving.RecommenderClient(
        args.server,
        args.model_name,
        version=args.version,
        timeout=args.timeout,
        signature_name=SIGNATURE,
    ) as client:
        out = client.predict(inputs)
    k = args.top_k
    return {
        "item_ids": decode(out["item_ids"])[:, :k],
        "scores": np.asarray(out["scores"], np.float32)[:, :k],
        ITEMS_OUTPUT: decode(out[ITEMS_OUTPUT])[:, :k],
        SCORES_OUTPUT: np.asarray(out[SCORES_OUTPUT], np.float32)[:, :k],
    }


def attach_explanations(
    rows: list[dict[str, Any]], outputs: dict[str, np.ndarray], titles: dict[str, str]
) -> None:
    """Adds ``"because"`` (``[{item_id, contribution, title}]``) to each item of ``rows``.

    ``rows`` are :func:`tfrec.cli.recommend.result_rows` (real items only, in
    slot order); the output slots without a history item (``""``) are dropped.
    """
    for row, ids, scores, causes, drops in zip(
        rows,
        outputs["item_ids"],
        outputs["scores"],
        outputs[ITEMS_OUTPUT],
        outputs[SCORES_OUTPUT],
        strict=True,
    ):
        slots = [
            j for j, (i, s) in enumerate(zip(ids, scores, strict=True)) if i and np.isfinite(s)
        ]
        for item, j in zip(row["items"], slots, strict=True):
            item["because"] = [
                {"item_id": str(c), "contribution": float(d), "title": titles.get(str(c), "")}
                for c, d in zip(causes[j], drops[j], strict=True)
                if str(c)
            ]


def because_line(item: dict[str, Any], verb: str) -> str | None:
    """``"because you watched: A (+0.42), B (-0.01)"`` (None without explaining items)."""
    causes = item.get("because") or []
    if not causes:
        return None
    parts = [
        f"{c['title'] or c['item_id']} ({c['contribution']:+.2f})" for c in causes
    ]  # titles when the export knows them
    return f"{verb}: " + ", ".join(parts)


def local_outputs_or_error(signatures: dict[str, Any], export_dir: Path) -> Any:
    """The ``explain`` signature of a loaded export, or a :class:`CommandError` saying why not."""
    if SIGNATURE not in signatures:
        raise CommandError(missing_signature_message(export_dir, sorted(signatures)))
    return signatures[SIGNATURE]
