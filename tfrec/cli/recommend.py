"""``tfrec recommend``: top-K items from an export (in-process) or a running server (gRPC)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tfrec.cli.common import resolve_export_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``recommend`` subcommand."""
    parser = subparsers.add_parser(
        "recommend",
        help="print top-K recommendations from an export or a TF Serving server",
        description=(
            "Query a retrieval or combined recommender SavedModel for one or more users "
            "and/or a history of item ids, and print the top-K with titles when the export "
            "knows them. Either --export (loads the SavedModel in-process with "
            "tf.saved_model.load) or --server host:port (TF Serving or `tfrec serve`, via the "
            "gRPC client)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--export",
        help="a SavedModel version dir, a model dir (latest version) or a `tfrec train` output",
    )
    source.add_argument("--server", help="host:port of a TF Serving gRPC endpoint")
    parser.add_argument(
        "--model-name", default="retrieval", help="model name on the server (--server)"
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
    users = args.user or [""] * count
    return users, histories or [[] for _ in range(count)]


def _titles(args: argparse.Namespace, export_dir: Path | None) -> dict[str, str]:
    path = Path(args.titles) if args.titles else None
    if path is None and export_dir is not None:
        candidate = export_dir / "assets.extra" / "item_titles.json"
        path = candidate if candidate.is_file() else None
    if path is None:
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _local(export_dir: Path, users: list[str], histories: list[list[str]], k: int):
    import tensorflow as tf  # noqa: PLC0415

    model = tf.saved_model.load(str(export_dir))
    fn = model.signatures["serving_default"]
    width = max(1, *(len(h) for h in histories))
    padded = [[""] * (width - len(h)) + h for h in histories]
    out = fn(
        user_id=tf.constant(users),
        history=tf.constant(padded, dtype=tf.string),
        k=tf.fill([len(users)], tf.constant(k, tf.int32)),
    )
    ids = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out["item_ids"].numpy())
    return ids[:, :k], out["scores"].numpy()[:, :k]


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec recommend``."""
    users, histories = _queries(args)
    export_dir = None
    if args.export:
        export_dir = resolve_export_dir(args.export)
        item_ids, scores = _local(export_dir, users, histories, args.top_k)
    else:
        from tfrec.serving.client import RecommenderClient  # noqa: PLC0415

        with RecommenderClient(
            args.server, args.model_name, version=args.version, timeout=args.timeout
        ) as client:
            result = client.recommend(user_ids=users, histories=histories, k=args.top_k)
        item_ids, scores = result.item_ids, result.scores
    titles = _titles(args, export_dir)
    rows = [
        {
            "user_id": user,
            "history": history,
            "items": [
                {
                    "rank": r + 1,
                    "item_id": str(i),
                    "score": float(s),
                    "title": titles.get(str(i), ""),
                }
                for r, (i, s) in enumerate(zip(ids, row_scores, strict=True))
            ],
        }
        for user, history, ids, row_scores in zip(users, histories, item_ids, scores, strict=True)
    ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        who = f"user {row['user_id']!r}" if row["user_id"] else "anonymous user"
        print(f"top-{args.top_k} for {who} (history: {len(row['history'])} items)")
        for item in row["items"]:
            title = f"  {item['title']}" if item["title"] else ""
            print(f"  {item['rank']:>3}. {item['item_id']:<12} {item['score']:8.4f}{title}")
    return 0
