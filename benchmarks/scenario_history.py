"""How long a history one scenario should read on the joint model's architecture.

A multi-scenario model may give each scenario its own history length
(``tfrec train --scenarios ... --scenario-max-histories``). This benchmark
measures whether a scenario gains from a longer one: the scenario is trained
alone with the joint model's settings for it
(:func:`benchmarks._scenarios_cells.joint_architecture_config`: the shared
encoder, its user embedding and gate, its preset's maximum epochs and patience)
reading the last L items, for each L of ``--lengths`` and each seed. The length
is chosen on validation NDCG@10 (mean over seeds); test NDCG@10 and training
time are reported beside it, never used to choose.

Usage::

    python -m benchmarks.scenario_history --data-dir ../shared/datasets \\
        --scenario ml-latest-small --lengths 50,200 --seeds 1,2       # ~15 min on 2 cores
    python -m benchmarks.scenario_history --quick --output /tmp/q     # synthetic, a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from benchmarks import _report
from benchmarks._scenarios_cells import (
    DEFAULT_SCENARIOS,
    QUICK_SCENARIOS,
    joint_architecture_config,
)
from benchmarks._scenarios_report import mean_se

NAME = "scenario_history"


def run_length(args: argparse.Namespace, length: int, seed: int) -> dict[str, Any]:
    """Trains ``args.scenario`` alone reading ``length`` items; its validation and test NDCG@10."""
    from tfrec.training.retrieval import RetrievalExperiment

    config = joint_architecture_config(args.scenarios, args.scenario, seed, args)
    config.model = dataclasses.replace(config.model, max_history=length, max_positions=None)
    experiment = RetrievalExperiment(config)
    experiment.fit()
    metrics = experiment.evaluate(["valid", "test"])
    return {
        "max_history": length,
        "seed": seed,
        "valid_ndcg@10": metrics["valid/ndcg@10"],
        "test_ndcg@10": metrics["test/ndcg@10"],
        "train_seconds": round(experiment.train_seconds, 1),
    }


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per length: mean ± SE of validation and test NDCG@10, mean seconds; the chosen length.

    The chosen length has the highest mean validation NDCG@10 (ties: the shorter).
    """
    lengths = sorted({r["max_history"] for r in runs})
    per_length = {}
    for length in lengths:
        rows = [r for r in runs if r["max_history"] == length]
        per_length[length] = {
            "valid_ndcg@10": mean_se([r["valid_ndcg@10"] for r in rows]),
            "test_ndcg@10": mean_se([r["test_ndcg@10"] for r in rows]),
            "train_seconds": round(sum(r["train_seconds"] for r in rows) / len(rows), 1),
        }
    chosen = max(lengths, key=lambda n: (per_length[n]["valid_ndcg@10"][0], -n))
    return {"per_length": per_length, "chosen_on_validation": chosen}


def render(results: dict[str, Any]) -> str:
    """The report's markdown: every run, then the means and the length chosen on validation."""
    runs = [
        [r["max_history"], r["seed"], f"{r['valid_ndcg@10']:.4f}", f"{r['test_ndcg@10']:.4f}",
         r["train_seconds"]]
        for r in results["runs"]
    ]  # fmt: skip
    summary = results["summary"]
    means = [
        [n, *(f"{s[m][0]:.4f} ± {s[m][1]:.4f}" for m in ("valid_ndcg@10", "test_ndcg@10")),
         s["train_seconds"]]
        for n, s in summary["per_length"].items()
    ]  # fmt: skip
    return (
        f"## {results['scenario']} alone on the joint model's architecture "
        f"(joint of {', '.join(results['scenarios'])})\n\n"
        + _report.markdown_table(
            ["max_history", "seed", "valid NDCG@10", "test NDCG@10", "train s"], runs
        )
        + "\n"
        + _report.markdown_table(
            ["max_history", "valid NDCG@10 (mean ± SE)", "test NDCG@10", "train s (mean)"], means
        )
        + f"\nChosen on validation: **max_history {summary['chosen_on_validation']}**.\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", help="the joint model's scenarios (comma-separated)")
    parser.add_argument("--scenario", help="the one measured (default: the last of --scenarios)")
    parser.add_argument("--lengths", default="50,200", help="history lengths (comma-separated)")
    parser.add_argument("--seeds", default="1,2", help="training seeds (comma-separated)")
    parser.add_argument("--epochs", type=int, help="cap every run's maximum epochs")
    parser.add_argument("--data-dir", help="folder holding the dataset folders")
    parser.add_argument("--quick", action="store_true", help="synthetic scenarios, tiny model")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument("--tag", help="suffix of the report name")
    args = parser.parse_args(argv)
    default = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    args.scenarios = args.scenarios.split(",") if args.scenarios else list(default)
    args.scenario = args.scenario or args.scenarios[-1]
    if args.scenario not in args.scenarios:
        parser.error(f"--scenario {args.scenario!r} is not among --scenarios {args.scenarios}")
    try:
        args.lengths = [int(x) for x in args.lengths.split(",")]
        args.seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError as error:
        parser.error(f"--lengths and --seeds take comma-separated integers ({error})")
    if min(args.lengths) < 1:
        parser.error(f"--lengths {args.lengths}: every length must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every length and seed, writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    facts = _report.machine_facts()
    runs = [run_length(args, length, seed) for length in args.lengths for seed in args.seeds]
    results = {
        "scenario": args.scenario,
        "scenarios": args.scenarios,
        "runs": runs,
        "summary": summarise(runs),
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = NAME + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    return _report.publish(name, results, render(results), facts=facts, output_dir=args.output)


if __name__ == "__main__":
    raise SystemExit(main())
