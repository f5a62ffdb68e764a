"""``tfrec prepare``: write a dataset as sharded TFRecords for data larger than memory."""

from __future__ import annotations

import argparse
import json

from tfrec.cli.common import add_data_arguments, data_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``prepare`` subcommand."""
    parser = subparsers.add_parser(
        "prepare",
        help="load + split a dataset and write sharded TFRecords and vocabularies",
        description=(
            "Load a dataset, split it, build the user/item vocabularies and write model-ready "
            "training examples as sharded TFRecord files (train/valid/test, each with spec.json) "
            "plus the held-out interactions, into OUTPUT_DIR (written to a temporary directory "
            "and renamed when complete). `tfrec train --prepared OUTPUT_DIR` trains from them "
            "with a streaming tf.data pipeline."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="directory to create")
    parser.add_argument("--max-len", type=int, default=50, help="history length L")
    parser.add_argument(
        "--mode",
        choices=("all", "last"),
        default="all",
        help="all: one row per user window, a target at every position; last: one row per target",
    )
    parser.add_argument("--num-shards", type=int, default=8, help="TFRecord shards per part")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT_DIR")
    scale = parser.add_argument_group("vocabulary caps and out-of-core preparation")
    scale.add_argument(
        "--engine",
        choices=("auto", "pandas", "duckdb"),
        default="auto",
        help=(
            "pandas: load the whole log in memory (any dataset and split); duckdb: stream "
            "CSV/Parquet files larger than memory (--dataset csv; --path may be a directory or "
            "a glob such as 'logs/part-*.parquet'; leave_one_out and temporal splits); auto: "
            "duckdb for --dataset csv when it can, else pandas. Both write the same files"
        ),
    )
    scale.add_argument(
        "--min-item-count",
        type=int,
        default=0,
        help="items with fewer interactions map to the out-of-vocabulary index (0 = keep all)",
    )
    scale.add_argument(
        "--max-items",
        type=int,
        default=0,
        help="keep only the N most frequent items in the vocabulary, the rest map to the "
        "out-of-vocabulary index (0 = no cap); how many ids/interactions map there is reported",
    )
    scale.add_argument(
        "--memory-limit",
        default="2GB",
        help="duckdb: memory budget of the sort (it spills to a temporary folder beyond it)",
    )
    scale.add_argument(
        "--batch-rows",
        type=int,
        default=262_144,
        help="duckdb: rows per streamed chunk (the bounded buffer; a longer user is kept whole)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec prepare``."""
    from tfrec.data.config import DataConfig  # noqa: PLC0415
    from tfrec.data.preparation import PrepareConfig, prepare  # noqa: PLC0415

    if args.dataset is None:
        raise ValueError("--dataset is required")
    config = PrepareConfig(
        data=DataConfig(dataset=args.dataset, **data_overrides(args)),
        output_dir=args.output_dir,
        max_len=args.max_len,
        mode=args.mode,
        num_shards=args.num_shards,
        overwrite=args.overwrite,
        engine=args.engine,
        min_item_count=args.min_item_count,
        max_items=args.max_items,
        memory_limit=args.memory_limit,
        batch_rows=args.batch_rows,
    )
    result = prepare(config)
    print(
        json.dumps(
            result.to_dict() if hasattr(result, "to_dict") else vars(result), indent=2, default=str
        )
    )
    return 0
