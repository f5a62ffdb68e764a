"""``tfrec export``: write a TF Serving SavedModel from a trained model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from tfrec.cli.common import experiment_kind


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained model as a TF Serving SavedModel",
        description=(
            "Export a `tfrec train` output directory to <export-dir>/<model-name>/<version>/ "
            "(TF Serving layout; integer versions, a new version each time, never overwritten; "
            "written to a temporary directory and renamed). serving_default takes user_id, "
            "history and k and returns item_ids and scores."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model-dir", required=True, help="output directory of `tfrec train`")
    parser.add_argument(
        "--export-dir", required=True, help="TF Serving base directory (model_base_path's parent)"
    )
    parser.add_argument("--model-name", help="name under export-dir (default: from config.json)")
    parser.add_argument("--version", type=int, help="version number (default: latest + 1)")
    parser.add_argument("--data-dir", help="override the data directory saved in config.json")
    parser.add_argument(
        "--kind",
        choices=("auto", "retrieval", "ranking", "recommender"),
        default="auto",
        help="which model to export from a pipeline run (auto: what the directory holds)",
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec export``."""
    model_dir = Path(args.model_dir)
    if experiment_kind(model_dir) != "retrieval" or args.kind in ("ranking", "recommender"):
        from tfrec.cli.train_ranking import export_ranking_dir  # noqa: PLC0415

        return export_ranking_dir(args)
    from tfrec.training.retrieval import RetrievalExperiment  # noqa: PLC0415

    experiment = RetrievalExperiment.from_dir(model_dir, data_dir=args.data_dir)
    if args.model_name:
        experiment.config.model_name = args.model_name
    path = experiment.export(args.export_dir, version=args.version)
    print(path)
    return 0
