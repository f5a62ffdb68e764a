"""Privacy-utility curve of DP-SGD retrieval on ml-100k, and its training-time overhead.

Trains the ``ml-100k`` retrieval preset (mean encoder, full softmax) once
without DP (ε = ∞) and once per target ε (default 8, 3, 1): ``--dp-target-epsilon``
picks the noise multiplier sigma so that the planned steps (``--epochs`` x steps per
epoch) spend that ε at δ = 1 / training rows (:mod:`tfrec.training.privacy`);
early stopping can only spend less, and the report gives the ε actually spent.
Per run: test nDCG@10 / HR@10, ε, δ, sigma, steps, epochs run, training seconds
per epoch (median of the epochs' train time, validation excluded) and the
overhead against the no-DP run.

The privacy unit is one training row: on ml-100k a row is a window of up to
``max_history`` (200) items of one user, 1,007 rows for 943 users, so nearly
every user is one row.

Run from the repository root::

    python -m benchmarks.privacy --data-dir /work/shared/datasets
    python -m benchmarks.privacy --quick --output /tmp/q   # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks.retrieval_quality import EpochLog
from tfrec.cli.common import apply_overrides, parse_set_options

NAME = "privacy"
#: Target ε of the DP runs (the no-DP run is ε = ∞).
DEFAULT_EPSILONS = (8.0, 3.0, 1.0)
QUICK_DATA = {"dataset": "synthetic", "synthetic_users": 60, "synthetic_items": 30}
QUICK_MODEL = {"embedding_dim": 8, "max_history": 10, "batch_size": 16}


def build_config(args: argparse.Namespace, target_epsilon: float | None) -> Any:
    """The ml-100k preset (or ``--quick`` synthetic data) with DP-SGD at ``target_epsilon``."""
    from tfrec.training.retrieval import RetrievalExperimentConfig

    config = RetrievalExperimentConfig.for_dataset("ml-100k")
    data: dict[str, Any] = dict(QUICK_DATA) if args.quick else {}
    if args.data_dir is not None and not args.quick:
        data["data_dir"] = args.data_dir
    model: dict[str, Any] = dict(QUICK_MODEL) if args.quick else {}
    model["epochs"] = args.epochs
    model.update(parse_set_options(args.set))
    if target_epsilon is not None:
        model["training.privacy.target_epsilon"] = target_epsilon
        model["training.privacy.l2_clip"] = args.l2_clip
    config.data = apply_overrides(config.data, data)
    config.model = apply_overrides(config.model, model)
    return config


def run_one(config: Any, work_dir: Path) -> dict[str, Any]:
    """Fits and evaluates one experiment; returns its metrics and timings."""
    from tfrec.training.retrieval import RetrievalExperiment

    with EpochLog.attached() as handler:
        experiment = RetrievalExperiment(config, output_dir=work_dir)
        experiment.fit(verbose=0)
        metrics = experiment.evaluate(("test",))
    train_s = [epoch["train_s"] for epoch in handler.epochs]
    return {
        "ndcg@10": metrics.get("test/ndcg@10"),
        "hr@10": metrics.get("test/hr@10"),
        "epsilon": experiment.metrics.get("privacy/epsilon"),  # None: no DP (ε = ∞)
        "delta": experiment.metrics.get("privacy/delta"),
        "noise_multiplier": experiment.metrics.get("privacy/noise_multiplier", 0.0),
        "l2_clip": experiment.metrics.get("privacy/l2_clip"),
        "steps": experiment.metrics.get("privacy/steps"),
        "epochs_run": int(metrics.get("epochs_run", 0)),
        "train_seconds": round(experiment.train_seconds, 2),
        # the first epoch also traces the step: the median is the steady state
        "train_s_per_epoch": round(statistics.median(train_s), 3) if train_s else None,
        "epochs": handler.epochs,
        "num_train_examples": experiment.num_examples,
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The report body: the privacy-utility table, notes and config."""
    runs = results["runs"]
    base = runs[0]["train_s_per_epoch"]
    rows = []
    for run in runs:
        overhead = (
            f"{run['train_s_per_epoch'] / base:.1f}x" if base and run["train_s_per_epoch"] else ""
        )
        rows.append(
            [
                "∞" if run["target_epsilon"] is None else run["target_epsilon"],
                "∞" if run["epsilon"] is None else _fmt(run["epsilon"]),
                _fmt(run["delta"]),
                _fmt(run["noise_multiplier"]),
                run["steps"] if run["steps"] is not None else "",
                run["epochs_run"],
                _fmt(run["ndcg@10"]),
                _fmt(run["hr@10"]),
                run["train_s_per_epoch"],
                overhead,
            ]
        )
    headers = ["target ε", "ε spent", "δ", "sigma", "steps", "epochs", "nDCG@10", "HR@10"]
    headers += ["train s/epoch", "overhead"]
    quick = " (QUICK synthetic smoke run: measures nothing)" if results["quick"] else ""
    lines = [
        f"DP-SGD retrieval, ml-100k preset{quick}: {runs[0]['num_train_examples']:,} training "
        f"rows, clip C = {results['l2_clip']}, per-example microbatches, up to "
        f"{results['epochs']} epochs (early stopping on validation nDCG@10).\n",
        _report.markdown_table(headers, rows),
        "## Notes\n",
        "- ε at δ = 1 / training rows from dp-accounting's RDP accountant, Poisson sampling "
        "at q = batch / rows as an approximation of tfrec's shuffled fixed-size batches; "
        "sigma picked for the planned steps (epochs x steps per epoch), ε spent is for the steps "
        "run.",
        "- Not covered by ε: vocabularies, item popularity (logQ), the validation metrics "
        "used for early stopping.",
        "- train s/epoch: median over the epochs of the training time (validation excluded); "
        "the machine was shared (2 CPUs), so times are upper bounds.",
        f"- load average at start {results['load_start']}, at end {results['load_end']}.",
        "\n## Config\n",
        f"- model (no-DP run): `{results['config']['model']}`",
        f"- data: `{results['config']['data']}`",
    ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return "" if value is None else value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder holding the dataset folders")
    parser.add_argument(
        "--epsilons",
        default=",".join(str(e) for e in DEFAULT_EPSILONS),
        help="comma-separated target ε of the DP runs (default 8,3,1)",
    )
    parser.add_argument("--epochs", type=int, default=20, help="maximum epochs of every run")
    parser.add_argument("--l2-clip", type=float, default=1.0, help="DP-SGD clip norm C")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick and args.epochs == 20:
        args.epochs = 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the no-DP and DP runs and writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    for console in logging.getLogger().handlers:  # DEBUG records reach EpochLog only
        console.setLevel(logging.INFO)
    facts = _report.machine_facts()
    targets: list[float | None] = [None, *(float(e) for e in args.epsilons.split(",") if e)]
    runs = []
    for target in targets:
        config = build_config(args, target)
        with tempfile.TemporaryDirectory(prefix="tfrec-privacy-") as tmp:
            run = run_one(config, Path(tmp))
        runs.append({"target_epsilon": target, **run})
        if target is None:
            base_config = config.to_dict()
    results = {
        "quick": bool(args.quick),
        "epochs": args.epochs,
        "l2_clip": args.l2_clip,
        "runs": runs,
        "config": base_config,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = f"{NAME}_quick" if args.quick else NAME
    markdown = render_markdown(results)
    return _report.publish(name, results, markdown, facts=facts, output_dir=args.output)


if __name__ == "__main__":
    sys.exit(main())
