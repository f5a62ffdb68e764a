"""``tfrec recommend``: print top-K recommendations from an export or a TF Serving server.

Query a retrieval or combined recommender SavedModel for one or more users and/or a
history of item ids, and print the top-K with titles when the export knows them. Either
--export (loads the SavedModel in-process with tf.saved_model.load) or --server
host:port (TF Serving or `tfrec serve`, via the gRPC client). --explain prints under each
item the history items that drove it (the export's `explain` signature).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tfrec.cli import recommend_explain as explain_output
from tfrec.cli.common import add_command, resolve_export_dir
from tfrec.cli.main import CommandError, tensorflow_message

logger = logging.getLogger(__name__)

INT32_MAX = 2**31 - 1  # k is an int32 tensor
INT64_MAX = 2**63 - 1  # versions are int64


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``recommend`` subcommand."""
    parser = add_command(subparsers, "recommend", __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--export",
        help="a SavedModel version dir, a model dir (latest version) or a `tfrec train` output",
    )
    source.add_argument("--server", help="host:port of a TF Serving gRPC endpoint")
    parser.add_argument(
        "--model-name",
        help=(
            "model name on the server (--server; default retrieval, or multi_scenario with "
            "--scenario)"
        ),
    )
    parser.add_argument(
        "--scenario",
        help=(
            "a scenario of a multi-scenario model (tfrec train --scenarios): its servable "
            "<model-name>_<scenario> answers (--export: a multi-scenario run or export dir)"
        ),
    )
    parser.add_argument("--version", type=int, help="model version on the server (--server)")
    parser.add_argument("--user", action="append", default=[], help="user id (repeatable)")
    parser.add_argument(
        "--history",
        action="append",
        default=[],
        help="comma-separated item ids, oldest first (repeatable; pairs with --user by order)",
    )
    parser.add_argument("-k", "--top-k", type=int, default=10, help="how many items")
    parser.add_argument(
        "--titles",
        help="JSON file {item_id: title} (default: the export's assets.extra/item_titles.json)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="gRPC deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--explain",
        action="store_true",
        help=(
            "under each item, the history items whose removal lowers its score most, with "
            "the score drop (the export's `explain` signature; not for ID-only models)"
        ),
    )


def _check_ids(option: str, values: list[str]) -> None:
    for value in values:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{option} {value!r}: not valid UTF-8 text") from err


def _queries(args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    histories = [[i.strip() for i in h.split(",") if i.strip()] for h in args.history]
    count = max(len(args.user), len(histories))
    if count == 0:
        raise ValueError("give at least one --user and/or --history")
    for name, values in (("--user", args.user), ("--history", histories)):
        if values and len(values) != count:
            raise ValueError(
                f"{name} given {len(values)} times but {count} queries; give --user and "
                "--history the same number of times, or only one of them"
            )
    _check_ids("--user", args.user)
    _check_ids("--history", [item for history in histories for item in history])
    users = args.user or [""] * count
    return users, histories or [[] for _ in range(count)]


def _check_arguments(args: argparse.Namespace) -> None:
    """Argument checks that need no model (usage errors: ValueError)."""
    if not 1 <= args.top_k <= INT32_MAX:
        raise ValueError(f"-k/--top-k {args.top_k}: expected an integer in 1..{INT32_MAX}")
    if args.version is not None and not 0 <= args.version <= INT64_MAX:
        raise ValueError(f"--version {args.version}: expected an integer in 0..{INT64_MAX}")
    if args.export and args.version is not None:
        raise ValueError("--version applies to --server; with --export pass the version dir")
    if not args.timeout > 0:
        raise ValueError(f"--timeout {args.timeout}: expected a number of seconds > 0")


def scenario_export_dir(path: Path, scenario: str) -> Path:
    """The latest SavedModel of ``scenario`` under a multi-scenario run or export dir.

    Scenario ``s`` of a multi-scenario model is the model folder ``<prefix>_<s>``
    (one servable per scenario; ``tfrec train --scenarios``). ``path`` may be the
    run directory (its ``export/``), the export base directory or the folder itself.

    Raises:
        ValueError: No model folder of that scenario (the known ones are listed).
        FileNotFoundError: No models at all under ``path``.
    """
    from tfrec.export.versions import latest_version_dir as latest  # noqa: PLC0415

    for base in (path, path / "export"):
        if not base.is_dir():
            continue
        models = {m.name: v for m in sorted(base.iterdir()) if m.is_dir() and (v := latest(m))}
        if not models:
            continue
        found = [name for name in models if name.endswith(f"_{scenario}")]
        if len(found) == 1:
            return models[found[0]]
        known = _known_scenarios(path, list(models))
        raise ValueError(
            f"--scenario {scenario!r}: unknown under {base}; known scenarios: {known} "
            f"(models {sorted(models)})"
        )
    if latest(path) is not None or (path / "saved_model.pb").is_file():
        raise ValueError(
            f"--scenario {scenario!r} with --export {path}: one model, not a multi-scenario "
            "export; pass its run or export directory"
        )
    raise FileNotFoundError(
        f"--export {path}: no model folders (expected <base>/<name>/<version>/)"
    )


def _known_scenarios(run_dir: Path, models: list[str]) -> list[str]:
    """The scenarios of a multi-scenario run's config.json, else the model-name suffixes."""
    config = run_dir / "config.json"
    if config.is_file():
        try:
            scenarios = json.loads(config.read_text()).get("scenarios")
        except (OSError, ValueError):
            scenarios = None
        if isinstance(scenarios, list):
            return [str(s) for s in scenarios]
    return sorted({name.split("_", 1)[-1] for name in models})


def catalogue_size(export_dir: Path) -> int | None:
    """The number of recommendable items recorded in the export, if it says.

    Reads ``num_real_items`` from ``assets.extra/tfrec_config.json``
    (:func:`tfrec.export.schema.read_export_config`); None when absent or unreadable.
    """
    from tfrec.export.schema import read_export_config  # noqa: PLC0415

    try:
        value = read_export_config(export_dir).get("num_real_items")
    except (OSError, ValueError) as err:
        logger.debug("no catalogue size from %s: %s", export_dir, err)
        return None
    return value if isinstance(value, int) and value > 0 else None


def _titles(args: argparse.Namespace, export_dir: Path | None) -> dict[str, str]:
    path = Path(args.titles) if args.titles else None
    if path is None and export_dir is not None:
        candidate = export_dir / "assets.extra" / "item_titles.json"
        path = candidate if candidate.is_file() else None
    if path is None:
        return {}
    try:
        titles = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"--titles {path}: byte {err.start}: not UTF-8 text") from err
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--titles {path}: line {err.lineno}: not valid JSON ({err.msg}); "
            "expected an object {item_id: title}"
        ) from err
    if not isinstance(titles, dict):
        raise ValueError(
            f"--titles {path}: got a JSON {type(titles).__name__}; expected an object "
            "{item_id: title}"
        )
    return {str(key): str(value) for key, value in titles.items()}


def _load_signature(export_dir: Path, explain: bool = False) -> Any:
    import tensorflow as tf  # noqa: PLC0415

    try:
        model = tf.saved_model.load(str(export_dir))
    except (OSError, ValueError, tf.errors.OpError) as err:
        raise CommandError(f"--export {export_dir}: cannot load the SavedModel: {err}") from err
    signatures = dict(getattr(model, "signatures", {}) or {})
    if explain:
        return explain_output.local_outputs_or_error(signatures, export_dir)
    if "serving_default" not in signatures:
        raise CommandError(
            f"--export {export_dir}: no serving_default signature (has {sorted(signatures)}); "
            "expected a tfrec retrieval or recommender export"
        )
    return signatures["serving_default"]


def _local(
    export_dir: Path, users: list[str], histories: list[list[str]], k: int, explain: bool = False
) -> dict[str, np.ndarray]:
    import tensorflow as tf  # noqa: PLC0415

    fn = _load_signature(export_dir, explain)
    width = max(1, *(len(h) for h in histories))  # no history: one "" (padding) column
    padded = [[""] * (width - len(h)) + h for h in histories]
    inputs = {
        "user_id": tf.constant(users, dtype=tf.string),
        "history": tf.constant(padded, dtype=tf.string),
        "k": tf.fill([len(users)], tf.constant(k, tf.int32)),
    }
    try:
        out = fn(**inputs)
    except TypeError as err:
        raise CommandError(
            f"--export {export_dir}: serving_default does not take user_id, history and k "
            f"(not a retrieval or recommender export?): {err}"
        ) from err
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(
            f"--export {export_dir}: the model rejected the request: "
            f"{tensorflow_message(err.message)}"
        ) from err
    ids = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out["item_ids"].numpy())
    outputs = {"item_ids": ids[:, :k], "scores": out["scores"].numpy()[:, :k]}
    if explain:
        outputs[explain_output.ITEMS_OUTPUT] = explain_output.decode(
            out[explain_output.ITEMS_OUTPUT].numpy()[:, :k]
        )
        outputs[explain_output.SCORES_OUTPUT] = out[explain_output.SCORES_OUTPUT].numpy()[:, :k]
    return outputs


def _remote(
    args: argparse.Namespace, users: list[str], histories: list[list[str]]
) -> dict[str, np.ndarray]:
    from tfrec.serving import client as serving  # noqa: PLC0415

    where = f"--server {args.server}, model {args.model_name!r}"
    if args.version is not None:
        where += f" version {args.version}"
    try:
        if args.explain:
            return explain_output.remote_explain(args, users, histories, serving)
        with serving.RecommenderClient(
            args.server, args.model_name, version=args.version, timeout=args.timeout
        ) as client:
            result = client.recommend(user_ids=users, histories=histories, k=args.top_k)
    except serving.InvalidArgumentError as err:
        details = tensorflow_message(err.details)
        raise ValueError(f"{where}: the server rejected the request: {details}") from err
    except serving.NotFoundError as err:
        hint = (
            f" (--scenario {args.scenario}: each scenario is served as <model-name>_<scenario>)"
            if args.scenario
            else ""
        )
        raise CommandError(f"{where}: {err}{hint}") from err
    except serving.UnavailableError as err:
        raise CommandError(f"{where}: server unavailable: {err.details}") from err
    except serving.DeadlineExceededError as err:
        raise CommandError(f"{where}: no answer within --timeout {args.timeout} s") from err
    except serving.ServingError as err:
        hint = f" (--explain: the {explain_output.SIGNATURE} signature)" if args.explain else ""
        raise CommandError(f"{where}: {err}{hint}") from err
    return {"item_ids": result.item_ids, "scores": result.scores}


def result_rows(
    users: list[str],
    histories: list[list[str]],
    item_ids: np.ndarray,
    scores: np.ndarray,
    titles: dict[str, str],
) -> list[dict[str, Any]]:
    """One row per query with its real items only.

    Slots the model could not fill (item id ``""``, e.g. when fewer than k
    items remain after excluding the history) and non-finite scores are
    dropped, so ranks run 1..n without gaps and the rows are valid JSON.
    """
    rows = []
    for user, history, ids, row_scores in zip(users, histories, item_ids, scores, strict=True):
        items = [
            (str(i), float(s))
            for i, s in zip(ids, row_scores, strict=True)
            if str(i) and np.isfinite(s)
        ]
        rows.append(
            {
                "user_id": user,
                "history": history,
                "items": [
                    {"rank": r + 1, "item_id": i, "score": s, "title": titles.get(i, "")}
                    for r, (i, s) in enumerate(items)
                ],
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]], k: int, verb: str = "because of") -> None:
    for row in rows:
        who = f"user {row['user_id']!r}" if row["user_id"] else "anonymous user"
        found = len(row["items"])
        note = "" if found == k else f"; only {found} items left after excluding the history"
        print(f"top-{k} for {who} (history: {len(row['history'])} items{note})")
        for item in row["items"]:
            title = f"  {item['title']}" if item["title"] else ""
            print(f"  {item['rank']:>3}. {item['item_id']:<12} {item['score']:8.4f}{title}")
            because = explain_output.because_line(item, verb)
            if because:
                print(f"       {because}")


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec recommend``.

    Raises:
        ValueError: Bad arguments, or the model/server rejected the request (exit 2).
        CommandError: The export cannot be loaded or the server call failed (exit 1).
    """
    _check_arguments(args)
    users, histories = _queries(args)
    if args.model_name is None:
        args.model_name = "multi_scenario" if args.scenario else "retrieval"
    if args.scenario:
        if not args.scenario.strip() or "/" in args.scenario:
            raise ValueError(f"--scenario {args.scenario!r}: expected a scenario name")
        if args.server:
            args.model_name = f"{args.model_name}_{args.scenario}"
    if args.export:
        export_dir = (
            scenario_export_dir(Path(args.export), args.scenario)
            if args.scenario
            else resolve_export_dir(args.export)
        )
        titles = _titles(args, export_dir)
        size = catalogue_size(export_dir)
        if size is not None and args.top_k > size:
            raise ValueError(
                f"-k/--top-k {args.top_k}: the export recommends from {size} items; "
                f"expected 1 <= k <= {size}"
            )
        outputs = _local(export_dir, users, histories, args.top_k, args.explain)
    else:
        export_dir = None
        titles = _titles(args, None)
        outputs = _remote(args, users, histories)
    rows = result_rows(users, histories, outputs["item_ids"], outputs["scores"], titles)
    if args.explain:
        explain_output.attach_explanations(rows, outputs, titles)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        verb = explain_output.explanation_verb(export_dir) if args.explain else ""
        _print_table(rows, args.top_k, verb)
    return 0
