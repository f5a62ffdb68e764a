"""``tfrec prepare``: write a dataset as sharded TFRecords for data larger than memory."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from tfrec.cli.common import add_data_arguments, data_overrides
from tfrec.config import choices
from tfrec.names import Runner


class _BeamOptionsParser(argparse.ArgumentParser):
    """Keeps the options ``prepare`` does not know as ``beam_args`` (Beam pipeline options)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parses ``args``; the unknown ones go to ``namespace.beam_args``."""
        namespace, extras = super().parse_known_args(args, namespace)
        namespace.beam_args = [*getattr(namespace, "beam_args", []), *extras]
        return namespace, []


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
            "with a streaming tf.data pipeline. With --runner the preparation runs as an Apache "
            "Beam pipeline (pip install 'tfrec[beam]'); every option prepare does not know is "
            "passed to Beam as a pipeline option, e.g. `--runner DirectRunner "
            "--direct_num_workers=2 --direct_running_mode=multi_processing` or `--runner "
            "DataflowRunner --project P --region R --temp_location gs://B/tmp` (see docs/scale.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.__class__ = _BeamOptionsParser  # the subparser parses the rest of the command line
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
        "--runner",
        choices=choices(Runner),
        default=None,
        help=(
            "run the preparation as an Apache Beam pipeline on this runner (--dataset csv, "
            "leave_one_out or temporal; the same files as the embedded engines; --engine, "
            "--memory-limit and --batch-rows' buffer do not apply). The options prepare does not "
            "know are Beam pipeline options. Without --runner: the embedded engine (--engine)"
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
    from tfrec.data.preparation import PrepareConfig  # noqa: PLC0415

    if args.dataset is None:
        raise ValueError("--dataset is required")
    beam_args = list(getattr(args, "beam_args", []))
    if beam_args and args.runner is None:
        raise ValueError(
            f"unrecognized arguments: {' '.join(beam_args)} (Beam pipeline options need --runner)"
        )
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
    result = _prepare(config, args.runner, beam_args)
    print(
        json.dumps(
            result.to_dict() if hasattr(result, "to_dict") else vars(result), indent=2, default=str
        )
    )
    return 0


def _prepare(config: Any, runner: str | None, beam_args: list[str]) -> Any:
    """The embedded engines, or the Beam pipeline when a runner is given."""
    if runner is None:
        from tfrec.data.preparation import prepare  # noqa: PLC0415

        return prepare(config)
    try:
        from tfrec.data.beam_prepare import prepare_beam  # noqa: PLC0415
    except ImportError as err:
        raise ValueError(str(err)) from err
    return prepare_beam(config, runner, beam_args)
