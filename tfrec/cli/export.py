"""``tfrec export``: export a trained model as a TF Serving SavedModel.

Export a `tfrec train` output directory to <export-dir>/<model-name>/<version>/ (TF
Serving layout; integer versions, a new version each time, never overwritten; written to
a temporary directory and renamed). A retrieval run exports `retrieval`, a ranking run
`ranking`, a pipeline run `ranking`, `retrieval` and the combined `recommender`
(retrieval's serving_default: user_id, history and k -> item_ids and scores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tfrec.cli.common import (
    add_command,
    add_export_target_arguments,
    add_index_arguments,
    index_options,
)
from tfrec.config import choices
from tfrec.names import ExportKind


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``export`` subcommand."""
    parser = add_command(subparsers, "export", __doc__)
    parser.add_argument("--model-dir", required=True, help="output directory of `tfrec train`")
    parser.add_argument(
        "--model-name", help="name under export-dir of the one model exported (default: config)"
    )
    add_export_target_arguments(parser)
    parser.add_argument(
        "--kind",
        choices=("auto", *choices(ExportKind)),
        default="auto",
        help="which model to export (auto: every model the run exports)",
    )
    helps = {
        "index": "brute: exact scoring of every item; ivf: approximate IVF index inside the "
        "SavedModel (stock TF ops, loads in unmodified TF Serving; adds a with_nprobe signature)",
        "partitions": "--index ivf: k-means partitions (default round(4 * sqrt(items)))",
        "nprobe": "--index ivf: partitions serving_default probes (default: the smallest with "
        "recall@10 >= 0.95 against brute force on held-out item vectors)",
    }
    add_index_arguments(parser, "candidate index of the retrieval model", "brute", helps)
    parser.add_argument(
        "--explain-top",
        type=int,
        help="history items per recommended item of the `explain` signature (default 3; "
        "0: no explain signature; ID-only models have none)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec export`` through the Experiment contract."""
    from tfrec.training.experiment import load_experiment  # noqa: PLC0415

    experiment = load_experiment(Path(args.model_dir), data_dir=args.data_dir)
    models = None if args.kind == "auto" else [args.kind]
    if args.model_name and models is None and len(experiment.exports) > 1:
        raise ValueError(
            f"--model-name {args.model_name}: a {experiment.kind} run exports "
            f"{list(experiment.exports)}; pick one with --kind"
        )
    if args.index == "ivf" and models is None and "retrieval" in experiment.exports:
        models = ["retrieval"]  # the index belongs to the retrieval model
    paths = experiment.export(
        args.export_dir,
        version=args.version,
        models=models,
        model_name=args.model_name,
        explain_top=args.explain_top,
        **index_options(args),
    )
    for path in paths:
        print(path)
    return 0
