"""``tfrec index``: a new catalogue version of the retrieval servable, without retraining.

Re-embed a catalogue with a trained retrieval run and write it as the next version
<export-dir>/<model-name>/<version>/ (written under a temporary name and renamed, so a
server keeps answering with the current version until it loads the new one). ITEMS is a
CSV/TSV (with a header) or Parquet file: an item id column and the content columns the
run's item tower uses (title, genres). Known items keep their learned vector (with the
file's content); new items get one from their content alone (the out-of-vocabulary id row
plus title and genres); items missing from the file are never returned. The query tower is
unchanged: histories may hold removed items (still understood) and new ones (ignored by
the query, excluded from the results). Same signatures, k and history rules as `tfrec
export`; the index kind (brute or ivf, whose partitions are trained again on the new
vectors) is that of the latest version in <export-dir>/<model-name>/ unless --index is
given. A run trained without item features cannot place new items: the command refuses a
catalogue with new ids for it (removing items works). assets.extra/tfrec_config.json
records the catalogue: source file and items added/removed/kept against the run's.
Prints the version directory written.
"""

from __future__ import annotations

import argparse

from tfrec.cli.common import (
    add_command,
    add_export_target_arguments,
    add_index_arguments,
    index_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``index`` subcommand."""
    parser = add_command(subparsers, "index", __doc__, defaults_in_help=False)
    parser.add_argument("--model-dir", required=True, help="a retrieval run of `tfrec train`")
    parser.add_argument(
        "--items", required=True, metavar="ITEMS", help="the catalogue: .csv, .tsv or .parquet"
    )
    parser.add_argument("--model-name", help="name under export-dir (default: the run's)")
    add_export_target_arguments(parser)
    columns = parser.add_argument_group("catalogue columns (default: the run's csv columns)")
    columns.add_argument("--item-col", help="item id column (default: item_id)")
    columns.add_argument("--title-col", help="title column (default: title)")
    columns.add_argument(
        "--genres-col", help="genres column, separator-joined or a Parquet list (default: genres)"
    )
    columns.add_argument("--genres-sep", help="separator inside the genres column (default: |)")
    columns.add_argument("--sep", help="field separator of a text file (default: tab for .tsv)")
    helps = {
        "index": "brute: exact scoring of every item; ivf: approximate IVF index (k-means "
        "partitions trained on the new vectors; adds a with_nprobe signature)",
        "partitions": "ivf: k-means partitions (default: the latest version's when it chose "
        "them, else round(4 * sqrt(items)))",
        "nprobe": "ivf: partitions serving_default probes (default: the latest version's when "
        "it chose it, else the smallest with recall@10 >= 0.95 against brute force)",
    }
    add_index_arguments(parser, "candidate index (default: the latest version's)", None, helps)


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec index``."""
    from tfrec.export.catalogue import CatalogueColumns, index_catalogue  # noqa: PLC0415

    columns = CatalogueColumns(
        item_col=args.item_col,
        title_col=args.title_col,
        genres_col=args.genres_col,
        genres_sep=args.genres_sep,
        sep=args.sep,
    )
    path = index_catalogue(
        args.model_dir,
        args.items,
        args.export_dir,
        model_name=args.model_name,
        version=args.version,
        columns=columns,
        **index_options(args),
        data_dir=args.data_dir,
    )
    print(path)
    return 0
