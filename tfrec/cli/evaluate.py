"""``tfrec evaluate``: re-evaluate a trained model (full ranking, optional sampled protocol).

Reload a `tfrec train` output directory of any kind (config, vocabularies, weights; the
data is reloaded with the saved config) and compute the metrics of one split part again
(full ranking over the whole catalogue; a ranker also on its candidate lists; a pipeline
retrieval-only vs two-stage). Results are printed and merged into OUT/metrics.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfrec.cli.common import EVAL_MASK_HELP, add_command, apply_overrides
from tfrec.config import choices
from tfrec.names import EvalMask, EvalPart, SampledStrategy

#: Metrics printed with their confidence interval under ``--eval-users``.
CI_SHOWN = ("@10", "mrr")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``evaluate`` subcommand."""
    parser = add_command(subparsers, "evaluate", __doc__)
    parser.add_argument("--model-dir", required=True, help="output directory of `tfrec train`")
    parser.add_argument("--data-dir", help="override the data directory saved in config.json")
    parser.add_argument(
        "--part", choices=choices(EvalPart), default="test", help="which split part to score"
    )
    parser.add_argument(
        "--eval-mask",
        choices=choices(EvalMask),
        help=f"{EVAL_MASK_HELP} (default: the mode saved in config.json)",
    )
    parser.add_argument(
        "--no-mask-history",
        action="store_true",
        help="same as --eval-mask none (kept for older scripts)",
    )
    parser.add_argument(
        "--sampled-negatives",
        type=int,
        default=0,
        help="also report the sampled protocol with N negatives per user (0 = off)",
    )
    parser.add_argument(
        "--sampling", choices=choices(SampledStrategy), default="uniform", help="negatives"
    )
    parser.add_argument("--ks", default="1,5,10,20,50,100", help="comma-separated cutoffs K")
    parser.add_argument(
        "--eval-users",
        type=int,
        metavar="N",
        help=(
            "evaluate a seeded sample of N users and report a 95%% confidence interval per "
            "metric (default: the saved setting, every user unless train had --eval-users)"
        ),
    )


def _eval_mask(args: argparse.Namespace) -> str | None:
    """``--eval-mask``, or ``none`` for the old ``--no-mask-history``; None = as saved.

    Raises:
        ValueError: ``--no-mask-history`` with an ``--eval-mask`` other than ``none``.
    """
    if not args.no_mask_history:
        return args.eval_mask
    if args.eval_mask not in (None, "none"):
        raise ValueError(
            f"--no-mask-history contradicts --eval-mask {args.eval_mask}; use --eval-mask alone"
        )
    return "none"


def run(args: argparse.Namespace) -> int:
    """Runs ``tfrec evaluate`` through the Experiment contract (any kind)."""
    from tfrec.evaluation.intervals import ci_lines  # noqa: PLC0415
    from tfrec.training.experiment import RunLayout, load_experiment, write_json  # noqa: PLC0415

    model_dir = Path(args.model_dir)
    mask = _eval_mask(args)
    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError as err:
        raise ValueError(f"--ks {args.ks!r}: expected comma-separated integers") from err
    experiment = load_experiment(model_dir, data_dir=args.data_dir)
    overrides = {
        "ks": ks,
        "sampled_negatives": args.sampled_negatives,
        "sampled_strategy": args.sampling,
    }
    if mask is not None:
        overrides["mask"] = mask
    if args.eval_users is not None:
        overrides["num_users"] = args.eval_users
    experiment.config.evaluation = apply_overrides(experiment.config.evaluation, overrides)
    metrics = experiment.evaluate(parts=[args.part])
    write_json(RunLayout(model_dir).metrics, experiment.metrics)
    shown = {k: round(float(v), 4) for k, v in metrics.items() if k.startswith(args.part)}
    print(json.dumps(shown, indent=2))
    for line in ci_lines(metrics, [k for k in shown if k.endswith(CI_SHOWN)]):
        print(line)
    return 0
