"""``tfrec synth``: generate a large synthetic interaction log (Parquet) plus an item file.

Generate a synthetic interaction log of exactly INTERACTIONS rows (user_id, item_id,
timestamp) with Zipf item popularity, long-tailed user activity and a planted sequential
signal (with probability --p-successor the next item is the previous item's fixed
successor in its category, so a sequence model can beat popularity), plus an item file
(item_id, title, genres = the category) for cold-start features. Written in row groups
with bounded memory, to temporary files renamed when complete; deterministic by --seed.
Read it back with `tfrec prepare|train --dataset csv --path OUTPUT --time-col timestamp
--items-path ITEMS`.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from tfrec.cli.common import add_command

if TYPE_CHECKING:
    from tfrec.data.synth import SynthConfig

#: SynthConfig field -> the option that sets it (error messages name the option).
OPTIONS = {
    "num_users": "--users",
    "num_items": "--items",
    "num_interactions": "--interactions",
    "zipf_exponent": "--zipf-exponent",
    "p_successor": "--p-successor",
    "num_categories": "--categories",
    "min_len": "--min-len",
    "max_len": "--max-len",
    "activity_sigma": "--activity-sigma",
    "seed": "--seed",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``synth`` subcommand."""
    parser = add_command(subparsers, "synth", __doc__)
    parser.add_argument("--users", type=int, required=True, help="number of users")
    parser.add_argument("--items", type=int, required=True, help="catalogue size (cold included)")
    parser.add_argument(
        "--interactions", type=int, required=True, help="exact number of rows to write"
    )
    parser.add_argument("--output", required=True, help="interactions file (.parquet)")
    parser.add_argument(
        "--items-output", help="item file (default: OUTPUT with .items.parquet instead of .parquet)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0)")
    parser.add_argument(
        "--zipf-exponent", type=float, default=1.05, help="item popularity exponent (0 = uniform)"
    )
    parser.add_argument(
        "--p-successor",
        type=float,
        default=0.5,
        help="probability that the next item is the previous item's successor",
    )
    parser.add_argument("--categories", type=int, help="item categories (default min(100, ITEMS))")
    parser.add_argument("--min-len", type=int, default=3, help="fewest events per user")
    parser.add_argument("--max-len", type=int, help="most events per user (default: ITEMS)")
    parser.add_argument(
        "--activity-sigma",
        type=float,
        default=1.0,
        help="sigma of the lognormal user activity weights (larger = longer tail)",
    )
    parser.add_argument(
        "--allow-repeats", action="store_true", help="let a user get the same item again"
    )
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=1_000_000,
        help="rows per Parquet row group (bounds memory; does not change the rows)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec synth``: writes the files and prints the summary as JSON."""
    from tfrec.data.synth_writer import write_synthetic  # noqa: PLC0415

    try:
        config = _config(args)
    except ValueError as err:
        message = str(err)
        for field, option in OPTIONS.items():
            message = message.replace(f"SynthConfig.{field}", option)
        raise ValueError(message.replace("SynthConfig: ", "")) from err
    summary = write_synthetic(
        config,
        args.output,
        args.items_output,
        row_group_rows=args.row_group_rows,
        overwrite=args.overwrite,
    )
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def _config(args: argparse.Namespace) -> SynthConfig:
    """The generator's config from the arguments (SynthConfig validates them)."""
    from tfrec.data.synth import SynthConfig  # noqa: PLC0415

    return SynthConfig(
        num_users=args.users,
        num_items=args.items,
        num_interactions=args.interactions,
        seed=args.seed,
        zipf_exponent=args.zipf_exponent,
        p_successor=args.p_successor,
        num_categories=args.categories,
        min_len=args.min_len,
        max_len=args.max_len,
        activity_sigma=args.activity_sigma,
        allow_repeats=args.allow_repeats,
    )
