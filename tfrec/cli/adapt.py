"""``tfrec adapt``: add a new scenario to a trained multi-scenario model.

Load a multi-scenario run (`tfrec train --scenarios a,b,...`), add scenario DATASET
(its own item embeddings and scenario layers) on top of the frozen shared history
encoder, train only those on DATASET's data with early stopping on its validation
metric, optionally unfreeze the shared encoder for a few final epochs
(--unfreeze-epochs; kept only if they beat the frozen stage on DATASET's
validation metric, and then every scenario is re-evaluated), and write a complete
multi-scenario run to OUT (the source run is not modified) with one TF Serving
servable per scenario in OUT/export unless --no-export.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfrec.cli.common import add_command

#: Metric suffixes printed for the new scenario.
SHOWN = ("hr@10", "ndcg@10", "mrr")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``adapt`` subcommand."""
    parser = add_command(subparsers, "adapt", __doc__)
    parser.add_argument(
        "--from", dest="source", required=True, help="a multi-scenario run directory (read only)"
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help=(
            "the new scenario: a dataset with a preset split (beauty, sports, lastfm, "
            "ml-latest-small, ...) or a registered synthetic scenario"
        ),
    )
    parser.add_argument("--output-dir", required=True, help="the new run directory")
    parser.add_argument("--data-dir", help="folder holding the datasets (overrides the saved one)")
    parser.add_argument(
        "--epochs",
        type=int,
        help="maximum frozen-encoder epochs (default: the new dataset's preset, as "
        "`tfrec train --dataset X` would train it; the shared model's if it has none)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        help="early-stopping patience of those epochs (default: like --epochs)",
    )
    parser.add_argument(
        "--unfreeze-epochs",
        type=int,
        default=0,
        help="then train the shared encoder too for this many epochs, kept only if they "
        "beat the frozen stage on validation (0: keep it frozen)",
    )
    parser.add_argument(
        "--unfreeze-lr-factor",
        type=float,
        default=0.1,
        help="learning rate of the unfrozen epochs relative to the shared model's",
    )
    parser.add_argument(
        "--train-user-fraction",
        type=float,
        default=1.0,
        help="train on this seeded share of the new scenario's users (all are evaluated)",
    )
    parser.add_argument("--seed", type=int, help="training seed (default: the shared model's)")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel exports")


def run(args: argparse.Namespace) -> int:
    """Adapts, evaluates, saves and exports; prints the new scenario's test metrics."""
    from tfrec.training.adapt import AdaptSettings, adapt_scenario  # noqa: PLC0415

    settings = AdaptSettings(
        epochs=args.epochs,
        patience=args.patience,
        unfreeze_epochs=args.unfreeze_epochs,
        unfreeze_lr_factor=args.unfreeze_lr_factor,
        train_user_fraction=args.train_user_fraction,
        seed=args.seed,
    )
    output = Path(args.output_dir)
    result = adapt_scenario(
        args.source, args.dataset, output, data_dir=args.data_dir, settings=settings
    )
    if not args.no_export:
        for path in result.export(output / "export"):
            print(f"export: {path}")
    prefix = f"{args.dataset}/test/"
    shown = {
        key: round(value, 4)
        for key, value in result.metrics.items()
        if key.startswith(prefix) and key.endswith(SHOWN)
    }
    for key in ("adapt/train_seconds", "adapt/unfrozen_kept"):
        if key in result.metrics:
            shown[key] = result.metrics[key]
    print(json.dumps(shown, indent=2))
    print(f"wrote {output / 'config.json'} and {output / 'metrics.json'}")
    return 0
