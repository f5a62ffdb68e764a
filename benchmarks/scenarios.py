"""Multi-scenario benchmark: one joint model vs separate models, and adaptation curves.

Part 1, per scenario and seed: the scenario's own preset model trained alone
(``tfrec train --dataset X``) vs ONE joint model over all scenarios
(``tfrec train --scenarios ...``, the first scenario's preset model, the same
maximum epochs), test HR/NDCG@{5,10,20} with the published anchors beside them.

Part 2, per target scenario: the target trained with 10/25/50/100% of its users
(every user evaluated) (a) from scratch with its preset and (b) adapted
(``tfrec adapt``) from a joint model trained on the other scenarios (frozen
shared encoder); NDCG@10 and training wall time of each.

Acceptance (issue 13): no scenario's joint mean more than one standard error
(over seeds) below its separate mean; the smallest scenario's joint mean at least
5% above its separate mean; adapted with 25% of the users >= 90% of the
from-scratch 100% NDCG@10 in <= 25% of its training time.

Usage::

    python -m benchmarks.scenarios --data-dir ../shared/datasets        # hours on 2 cores
    python -m benchmarks.scenarios --quick --output /tmp/q                 # synthetic, minutes
    python -m benchmarks.scenarios --quick --scenarios synthetic_a,synthetic_b,synthetic_new \
        --targets synthetic_new --parts adapt --seeds 1 --tag new_s1   # a readable curve
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._cells import CellStore, differing_sections
from benchmarks._scenarios_cells import (
    DEFAULT_SCENARIOS,
    QUICK_SCENARIOS,
    AdaptCellConfig,
    joint_config,
    joint_key,
    metrics_of,
    scratch_schedule,
    separate_config,
    separate_key,
    shared_arch_config,
)
from benchmarks._scenarios_report import METRICS, SHARED_ARCH, acceptance, mean_se, render

NAME = "scenarios"
DEFAULT_TARGETS = ("lastfm", "sports")
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def separate(config: Any) -> dict:
    """Trains and tests one scenario alone (a :func:`separate_config`)."""
    from tfrec.training.retrieval import RetrievalExperiment

    experiment = RetrievalExperiment(config)
    experiment.fit()
    metrics = experiment.evaluate(["test"])
    return {"metrics": metrics_of(metrics), "train_seconds": round(experiment.train_seconds, 1)}


def run_separate(
    cells: CellStore, name: str, seed: int, args: argparse.Namespace, fraction: float = 1.0
) -> dict:
    """The separate cell of ``name`` (trained unless finished with the same config)."""
    config = separate_config(name, seed, args, fraction)
    key = separate_key(name, seed, fraction)
    return cells.run(key, functools.partial(separate, config), config)


def import_quality_report(path: Path, cells: CellStore, data_dir: str | None) -> str:
    """Makes a ``benchmarks.retrieval_quality`` report a finished separate cell.

    That benchmark trains exactly what :func:`separate` trains when its config is the
    dataset's preset with only the seed changed; the report's config is compared
    with the one :func:`separate` would build (the data directory aside).

    Returns:
        The cell's key (``separate_<dataset>_s<seed>``).

    Raises:
        ValueError: The report's config differs from that (the message names the
            report and the differing sections), or ``cells`` has no directory.
    """
    from tfrec.training.retrieval_config import RetrievalExperimentConfig

    if cells.root is None:
        raise ValueError("--import-quality needs --cells DIR (where the cells are kept)")
    report = json.loads(path.read_text())
    results = report["results"]
    name, seed = results["dataset"], int(results["config"]["model"]["training"]["seed"])
    defaults = argparse.Namespace(data_dir=data_dir, quick=False, epochs=None)
    expected = separate_config(name, seed, defaults).to_dict()
    # through the config class: a report older than a field gets that field's default
    got = RetrievalExperimentConfig.from_json(json.dumps(results["config"])).to_dict()
    differing = differing_sections(got, expected)
    if differing:
        raise ValueError(
            f"{path}: its config differs from the {name} preset with seed {seed} in "
            f"{differing}; only a preset run with another seed is a separate cell"
        )
    metrics = results["run"]["metrics"]
    key = separate_key(name, seed)
    cells.put(
        key,
        {"metrics": metrics_of(metrics), "train_seconds": results["run"]["train_seconds"]},
        report["machine"],
        load_end=results.get("load_end"),
        source=str(path),
        config=expected,
    )
    return key


def joint(config: Any, save: Path | None) -> dict:
    """Trains a :func:`joint_config`; per-scenario test metrics (and the run, if ``save``)."""
    from tfrec.training.multi_scenario import MultiScenarioExperiment

    experiment = MultiScenarioExperiment(config, save)
    experiment.fit()
    metrics = experiment.evaluate(["valid", "test"])
    if save is not None:
        experiment.save()
    return {
        "metrics": {name: metrics_of(metrics, f"{name}/") for name in config.scenarios},
        "valid_metrics": {  # what settings of the joint model are chosen on
            name: metrics_of(metrics, f"{name}/", "valid") for name in config.scenarios
        },
        "train_seconds": round(experiment.train_seconds, 1),
        "mean_expert_weights": {  # each scenario's gate at its best epoch (mean_expert)
            name: round(metrics[f"{name}/mean_expert_weight"], 3)
            for name in config.scenarios
            if f"{name}/mean_expert_weight" in metrics
        },
    }


def part_joint(
    args: argparse.Namespace, scenarios: Sequence[str], seeds: Sequence[int], cells: CellStore
) -> dict:
    """Separate vs joint per seed; summary means and standard errors."""
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        row: dict[str, Any] = {"seed": seed, "separate": {}}
        config = joint_config(scenarios, seed, args)
        row["joint"] = cells.run(
            joint_key(scenarios, seed), functools.partial(joint, config, None), config
        )
        for name in scenarios:
            row["separate"][name] = run_separate(cells, name, seed, args)
            shared = shared_arch_config(scenarios, name, seed, args)
            if shared is not None:
                row.setdefault(SHARED_ARCH, {})[name] = cells.run(
                    f"shared_arch_{name}_s{seed}", functools.partial(separate, shared), shared,
                )  # fmt: skip
        runs.append(row)
        logging.info("seed %d done", seed)
    summary: dict[str, Any] = {}
    for name in scenarios:
        summary[name] = {}
        for model in ("separate", "joint"):
            values = [
                (r[model][name]["metrics"] if model == "separate" else r[model]["metrics"][name])
                for r in runs
            ]
            summary[name][model] = {m: mean_se([v[m] for v in values]) for m in METRICS}
        shared = [r[SHARED_ARCH][name]["metrics"] for r in runs if name in r.get(SHARED_ARCH, {})]
        if shared:
            summary[name][SHARED_ARCH] = {m: mean_se([v[m] for v in shared]) for m in METRICS}
    return {"runs": runs, "summary": summary}


def adapted(
    source: Path, target: str, *, fraction: float, seed: int, args: argparse.Namespace, work: Path
) -> dict:
    """``target`` added to the saved joint run ``source`` with ``fraction`` of its users.

    It trains on the from-scratch run's schedule (maximum epochs and patience), then
    ``args.unfreeze_epochs`` unfrozen epochs (kept only if they win on validation).
    """
    from tfrec.training.adapt import AdaptSettings, adapt_scenario

    epochs, patience = scratch_schedule(target, seed, args)
    settings = AdaptSettings(
        train_user_fraction=fraction, seed=seed, epochs=epochs, patience=patience,
        unfreeze_epochs=args.unfreeze_epochs, unfreeze_lr_factor=args.unfreeze_lr_factor,
    )  # fmt: skip
    run = adapt_scenario(
        source, target, work / f"{target}_{fraction}_s{seed}", data_dir=args.data_dir,
        settings=settings,
    )  # fmt: skip
    metrics = run.metrics
    out = {
        "ndcg@10": metrics[f"{target}/test/ndcg@10"],
        "valid_ndcg@10": metrics[f"{target}/valid/ndcg@10"],
        "train_seconds": metrics["adapt/train_seconds"],
    }
    if args.unfreeze_epochs:  # the frozen stage alone, measured before the unfrozen one
        out.update({
            "frozen_ndcg@10": metrics[f"{target}/frozen/test/ndcg@10"],
            "frozen_valid_ndcg@10": metrics[f"{target}/frozen/valid/ndcg@10"],
            "frozen_seconds": metrics["adapt/frozen_train_seconds"],
            "unfrozen_kept": bool(metrics["adapt/unfrozen_kept"]),
        })  # fmt: skip
    return out


def part_adapt(
    args: argparse.Namespace, scenarios: Sequence[str], work: Path, cells: CellStore
) -> dict:
    """Adaptation curves: from scratch vs adapted, per target and user share.

    The source joint run is trained (and saved under ``work``) only when an adapted
    cell is not finished yet and ``work`` does not hold that run already.
    """
    seed = args.seeds[0]
    out: dict[str, Any] = {}
    for target in args.targets:
        others = [s for s in scenarios if s != target]
        source = work / f"without_{target}_s{seed}"
        base_key = joint_key(others, seed)
        unfrozen = (
            f"_u{args.unfreeze_epochs}x{args.unfreeze_lr_factor:g}" if args.unfreeze_epochs else ""
        )
        keys = {
            f: f"adapt_{target}_from_{'+'.join(others)}_s{seed}_f{f:g}{unfrozen}"
            for f in args.fractions
        }
        config = joint_config(others, seed, args)
        adapt_config = AdaptCellConfig(
            source=config.to_dict(), target=target,
            schedule=list(scratch_schedule(target, seed, args)),
            unfreeze=[args.unfreeze_epochs, args.unfreeze_lr_factor],
        )  # fmt: skip
        missing = [f for f, key in keys.items() if cells.get(key, adapt_config) is None]
        base = cells.get(base_key, config)
        if missing and not (source / "config.json").is_file():
            facts = _report.machine_facts()
            base = joint(config, source)
            cells.put(base_key, base, facts, config=config)
        base = base or {"train_seconds": None}  # saved in --work-dir by an earlier run
        rows = []
        for fraction in args.fractions:
            scratch = run_separate(cells, target, seed, args, fraction)
            adapt = cells.run(
                keys[fraction],
                functools.partial(
                    adapted, source, target, fraction=fraction, seed=seed, args=args, work=work
                ),
                adapt_config,
            )
            rows.append({
                "fraction": fraction,
                "scratch_ndcg@10": scratch["metrics"]["ndcg@10"],
                "scratch_seconds": scratch["train_seconds"],
                "adapted_ndcg@10": adapt["ndcg@10"],
                "adapted_seconds": adapt["train_seconds"],
                **{f"adapted_{k}": v for k, v in adapt.items() if k.startswith(("frozen", "unf"))},
            })  # fmt: skip
        out[target] = {
            "source_train_seconds": base["train_seconds"], "rows": rows,
            "unfreeze": {"epochs": args.unfreeze_epochs, "lr_factor": args.unfreeze_lr_factor},
        }  # fmt: skip
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", help="comma-separated (default: the four real ones)")
    parser.add_argument("--seeds", default="1,2,42", help="comma-separated training seeds")
    parser.add_argument("--targets", help="adaptation targets (default: lastfm,sports)")
    parser.add_argument("--fractions", default="0.1,0.25,0.5,1.0", help="user shares")
    parser.add_argument("--parts", default="joint,adapt", help="joint and/or adapt")
    parser.add_argument("--epochs", type=int, help="cap every run's maximum epochs")
    parser.add_argument(
        "--unfreeze-epochs",
        type=int,
        default=0,
        help="adapted runs: then this many epochs with the shared encoder unfrozen, kept "
        "only if they win on validation (tfrec adapt --unfreeze-epochs; default 0)",
    )
    parser.add_argument(
        "--unfreeze-lr-factor",
        type=float,
        default=0.1,
        help="their learning rate relative to the shared model's (default 0.1)",
    )
    parser.add_argument("--data-dir", help="folder holding the dataset folders")
    parser.add_argument("--quick", action="store_true", help="synthetic scenarios, tiny model")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument(
        "--tag", help="suffix of the report name, for runs on other scenarios or targets"
    )
    parser.add_argument("--work-dir", help="where source runs are saved (default: a temp dir)")
    parser.add_argument(
        "--import-quality",
        nargs="+",
        metavar="REPORT",
        help="only record these benchmarks.retrieval_quality reports (preset runs with "
        "another seed) as finished separate cells in --cells, then exit",
    )
    parser.add_argument(
        "--cells",
        help="directory of finished cells (one JSON per training): a rerun with the same "
        "directory and settings reuses them, so the benchmark can be completed over several "
        "sessions (default: run every cell, keep none)",
    )
    args = parser.parse_args(argv)
    default_scenarios = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    default_targets = ("synthetic_small",) if args.quick else DEFAULT_TARGETS
    args.scenarios = args.scenarios.split(",") if args.scenarios else list(default_scenarios)
    args.targets = args.targets.split(",") if args.targets else list(default_targets)
    args.seeds = [int(x) for x in args.seeds.split(",")]
    args.fractions = [float(x) for x in args.fractions.split(",")]
    args.parts = args.parts.split(",")
    unknown = [t for t in args.targets if t not in args.scenarios]
    if unknown:
        parser.error(f"--targets {unknown} are not among --scenarios {args.scenarios}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the parts asked for and writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    cells = CellStore(args.cells, {"epochs": args.epochs, "quick": bool(args.quick)})
    if args.import_quality:
        for path in args.import_quality:
            key = import_quality_report(Path(path), cells, args.data_dir)
            print(f"{path} -> {cells.root / key}.json")
        return 0
    facts = _report.machine_facts()
    results: dict[str, Any] = {"scenarios": args.scenarios, "seeds": args.seeds}
    with tempfile.TemporaryDirectory(prefix="tfrec-scenarios-") as scratch:
        work = Path(args.work_dir or scratch)
        if "joint" in args.parts:
            results["joint"] = part_joint(args, args.scenarios, args.seeds, cells)
        if "adapt" in args.parts:
            results["adapt"] = part_adapt(args, args.scenarios, work, cells)
        results["cells"] = cells.provenance
    smallest = "synthetic_small" if args.quick else "lastfm"
    results["acceptance"] = acceptance(results, smallest)
    results["load_end"] = [round(x, 2) for x in os.getloadavg()]
    name = NAME + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    return _report.publish(name, results, render(results), facts=facts, output_dir=args.output)


if __name__ == "__main__":
    raise SystemExit(main())
