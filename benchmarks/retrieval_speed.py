"""Retrieval training speed: tfrec's ID-only two-tower vs the TFRS basic-retrieval tutorial.

Acceptance (from the issue): on ml-100k, tfrec's ID-only two-tower trains at
>= 10x the examples/second of the TFRS basic-retrieval tutorial recipe replayed
in the same run on the same data, at equal or better test top-100 accuracy.

Both parts use the same (user_id, movie_title) pairs, the same seed-42 80/20
split and the same metric, and each runs in its own Python subprocess so its
peak RSS is its own:

* ``tutorial``: the recipe of tensorflow/recommenders
  ``docs/examples/basic_retrieval.ipynb``: ``tf.random.set_seed(42)``;
  ``shuffle(100_000, seed=42, reshuffle_each_iteration=False)``, take 80,000 /
  next 20,000; ``StringLookup(mask_token=None)`` + ``Embedding(vocab + 1, 32)``
  towers; ``tfrs.tasks.Retrieval(metrics=FactorizedTopK(movies.batch(128)
  .map(movie_model)))`` (metrics computed during training too, as in the
  tutorial); ``Adagrad(0.1)``; ``train.shuffle(100_000).batch(8192).cache()``;
  3 epochs; ``evaluate(test.batch(4096).cache())``.
* ``tfrec``: :class:`tfrec.models.retrieval.TwoTowerModel` in ID-only mode
  (``encoder="none"``: user embedding query, no history; item-id candidate
  tower, no features) on integer (user, target) indices, trained with
  ``tfrec.data.tfdata.make_dataset``; everything it sets is a
  ``RetrievalConfig`` field (``--set`` overrides them). Defaults: full-catalogue
  softmax (cheaper per example than an in-batch softmax over thousands of
  examples when the catalogue has 1.7k items, and more accurate here), Adam
  0.01, batch 2048, 5 epochs, dimension 32.

Throughput = training examples / seconds over the timed epochs, which are all
epochs but the first (the first epoch also traces the train step and fills the
tf.data cache; it is reported separately). Accuracy = for each test
(user, title) pair, whether fewer than 100 catalogue movies (the 1,682 rows of
``u.item``, duplicate titles included, as the tutorial's ``movies`` dataset)
score strictly higher than the pair: what ``FactorizedTopK`` computes
(score-based, no history masking), but with every score from one matmul so the
true row ties exactly with itself. It is computed with numpy
(:func:`top_k_accuracy`) for both models; on the tutorial model it is checked
against the TFRS metric (equal up to float rounding of a few pairs).

Run from the repository root::

    python -m benchmarks.retrieval_speed                 # ml-100k, full report
    python -m benchmarks.retrieval_speed --quick --output /tmp/bench   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report
from benchmarks._retrieval_pairs import Settings, default_data_dir, load_pairs, quick_settings
from benchmarks._speed_parts import run_tfrec, run_tutorial, tfrec_config

NAME = "retrieval_speed"
SPEEDUP_TARGET = 10.0


PARTS = ("tutorial", "tfrec")


def _run_part(args: argparse.Namespace) -> None:
    """Child process: load data, run one part, hand the result to the parent."""
    from tfrec.cli.common import parse_set_options

    load_start = os.getloadavg()
    data = load_pairs(args.data_dir, args.quick)
    settings = quick_settings(len(data.users)) if args.quick else Settings()
    with _report.Timer() as wall:
        if args.part == "tutorial":
            result = run_tutorial(data, settings)
        else:
            config = tfrec_config(args.quick, parse_set_options(args.set))
            result = run_tfrec(data, settings, config)
    result["part_wall_s"] = round(wall.seconds, 3)
    result["data"] = data.source
    result["load_average_start"] = [round(x, 2) for x in load_start]
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    _report.write_result_json(args.result_json, result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.retrieval_speed",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="folder holding ml-100k/ (default: $TFREC_DATA_DIR or ../shared/datasets)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=_report.RESULTS_DIR,
        help="directory for the JSON + markdown report (default: benchmarks/results)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny synthetic smoke run (report *_quick)"
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a RetrievalConfig field of the tfrec model (repeatable), "
        "e.g. --set batch_size=2048 --set learning_rate=0.05",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run (default: tutorial,tfrec)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each part this many times, interleaved; the summary uses medians",
    )
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--result-json", type=Path, help=argparse.SUPPRESS)
    return parser


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, np.float64)))


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over repeats, the speedup and the acceptance verdict.

    Args:
        runs: Part name -> its repeated results (``examples_per_s``,
            ``top_k_accuracy``, ``fit_wall_s``, ``peak_rss_mb``).

    Returns:
        Per part medians; with both parts also ``speedup`` (tfrec / tutorial
        examples/s), ``fit_wall_ratio`` (tutorial / tfrec fit seconds),
        ``accuracy_delta`` (tfrec - tutorial) and ``accepted`` (speedup >= 10
        and accuracy_delta >= 0).
    """
    keys = (
        "examples_per_s",
        "examples_per_s_all_epochs",
        "examples_per_cpu_s",
        "top_k_accuracy",
        "fit_wall_s",
    )
    out: dict[str, Any] = {}
    for name, results in runs.items():
        out[name] = {
            key: _median([r[key] for r in results]) if key in results[0] else None for key in keys
        }
        out[name]["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
        out[name]["repeats"] = len(results)
    if "tutorial" in out and "tfrec" in out:
        tut, ours = out["tutorial"], out["tfrec"]
        speedup = ours["examples_per_s"] / tut["examples_per_s"]
        delta = ours["top_k_accuracy"] - tut["top_k_accuracy"]
        out["speedup"] = round(speedup, 2)
        if tut["examples_per_cpu_s"] and ours["examples_per_cpu_s"]:
            out["cpu_speedup"] = round(ours["examples_per_cpu_s"] / tut["examples_per_cpu_s"], 2)
        out["fit_wall_ratio"] = round(tut["fit_wall_s"] / ours["fit_wall_s"], 2)
        out["accuracy_delta"] = delta
        out["speedup_target"] = SPEEDUP_TARGET
        out["accepted"] = bool(speedup >= SPEEDUP_TARGET and delta >= 0)
    return out


def _runs_table(runs: dict[str, list[dict[str, Any]]], k: int) -> str:
    """The markdown table of every run of every part (one row per run)."""
    rows = []
    for name, results in runs.items():
        for i, r in enumerate(results):
            batch = (
                r["settings"]["batch_size"]
                if name == "tutorial"
                else r["config"]["training"]["batch_size"]
            )
            rows.append(
                [
                    name,
                    i + 1,
                    r["examples_per_s"],
                    r.get("examples_per_cpu_s", ""),
                    r["first_epoch_s"],
                    r["fit_wall_s"],
                    len(r["epoch_seconds"]),
                    batch,
                    round(r["top_k_accuracy"], 4),
                    r["peak_rss_mb"],
                    " / ".join(f"{x:.1f}" for x in r["load_average_start"]),
                ]
            )
    headers = [
        "part",
        "run",
        "train examples/s (epochs 2..N)",
        "examples per CPU-s",
        "first epoch s",
        "fit wall s",
        "epochs",
        "batch",
        f"test top-{k} acc",
        "peak RSS MiB",
        "load avg at start",
    ]
    return _report.markdown_table(headers, rows)


def _summary_section(summary: dict[str, Any], k: int) -> str:
    """The "Summary" section: speed-ups, accuracies and the verdict (both parts ran)."""
    verdict = "PASS" if summary["accepted"] else "FAIL"
    return (
        "\n## Summary (medians over runs)\n\n"
        f"- speedup (tfrec / tutorial training examples/s): **{summary['speedup']}x** "
        f"(target >= {summary['speedup_target']:g}x)\n"
        f"- speedup in examples per CPU-second (less sensitive to other load): "
        f"{summary.get('cpu_speedup', 'n/a')}x\n"
        f"- test top-{k} accuracy: tfrec {summary['tfrec']['top_k_accuracy']:.4f} vs "
        f"tutorial {summary['tutorial']['top_k_accuracy']:.4f} "
        f"(delta {summary['accuracy_delta']:+.4f})\n"
        f"- whole fit() wall time ratio (tutorial / tfrec, first epoch included, "
        f"different epoch counts): {summary['fit_wall_ratio']}x\n"
        f"- acceptance: **{verdict}**\n"
    )


def _checks_section(tut: dict[str, Any], k: int) -> str:
    """The "Checks" section: the numpy metric vs TFRS's and the split, on a tutorial run."""
    return (
        "\n## Checks\n\n"
        f"- numpy top-{k} accuracy vs TFRS FactorizedTopK on the tutorial model: "
        f"{tut['top_k_accuracy']:.6f} vs {tut['tfrs_top_k_accuracy']:.6f} "
        f"(|diff| {tut['metric_abs_diff_numpy_vs_tfrs']:.2g}); computed TFRS's way (true "
        f"score from a separate `reduce_sum`, other scores from a matmul): "
        f"{tut['tfrs_style_top_k_accuracy']:.6f}. The difference is "
        f"{tut['pairs_lost_to_tfrs_rounding']} test pairs whose true row's matmul score "
        f"rounds above its separately computed score (TFRS then counts the true row as "
        f"higher than itself) and {tut['pairs_gained_by_tfrs_rounding']} the other way\n"
        f"- tutorial_split() rows equal the tutorial's shuffled take/skip pairs: "
        f"{tut['split_matches_tutorial_shuffle']}\n"
    )


def render_markdown(
    runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any], quick: bool = False
) -> str:
    """The report body: per-run table, summary, metric checks and definitions."""
    k = next(iter(runs.values()))[0]["top_k"]
    text = ""
    if quick:
        text += (
            "**Smoke run (--quick): tiny synthetic data and sizes, top-10; "
            "these numbers measure nothing.**\n\n"
        )
    text += "## Runs\n\n" + _runs_table(runs, k)
    if "speedup" in summary:
        text += _summary_section(summary, k)
    if "tutorial" in runs:
        text += _checks_section(runs["tutorial"][0], k)
    if "tfrec" in runs:
        text += (
            "\n## tfrec configuration\n\n```json\n"
            + json.dumps(runs["tfrec"][0]["config"], indent=2, sort_keys=True)
            + "\n```\n"
        )
    text += f"\n## Definitions\n\n{DEFINITIONS}"
    return text


DEFINITIONS = """\
- Sizes below are ml-100k's (`--quick` scales them down).
- Data: (user_id, movie_title) pairs of ml-100k `u.data` + `u.item` titles, in
  `tfrec.data.load_dataset` order (user, then time). The tutorial reads TFDS
  `movielens/100k-ratings`, whose row order differs, so this seed-42 split is a
  different random 80/20 split of the same pairs than the tutorial's own.
- Split: `tf.random.set_seed(42)`; `shuffle(100_000, seed=42,
  reshuffle_each_iteration=False)`; first 80,000 train, next 20,000 test; both parts
  use the same rows (checked).
- Training examples/s: 80,000 x (epochs - 1) / wall seconds of epochs 2..N
  (`time.perf_counter` in `on_epoch_begin`/`on_epoch_end`). The first epoch
  (graph tracing, tf.data cache fill) is excluded and reported as "first epoch s".
  Examples per CPU-s: the same with the process's CPU time (`time.process_time`,
  all threads), which competing processes on a shared machine inflate less.
- Tutorial recipe: StringLookup + Embedding(vocab + 1, 32) towers, `tfrs.tasks.Retrieval`
  with `FactorizedTopK(movies.batch(128).map(movie_model))` computed during training
  as in the tutorial, Adagrad(0.1), `train.shuffle(100_000).batch(8192).cache()`,
  3 epochs, `evaluate(test.batch(4096).cache())`.
- tfrec: `TwoTowerModel` on integer indices via `tfrec.data.tfdata.make_dataset`,
  no per-step metrics. ID-only mode (`encoder="none"`): the query is the user
  embedding alone, examples are (user, target) pairs without a history, and the
  score is u.v (matrix factorisation).
- Accuracy: for each test pair, hit if fewer than k of the 1,682 catalogue rows
  (duplicate titles included, as the tutorial's `movies` dataset) score strictly
  higher than the pair's own row, all scores from one float32 matmul; no history
  masking. Identical numpy code for both models. TFRS's FactorizedTopK computes
  the true score separately, so float rounding can count the true row itself as
  higher for a few pairs: its value may be lower by a few in ten thousand (Checks).
- Peak RSS: `ru_maxrss` of each part's own subprocess (data loading included).
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.part:
        if args.result_json is None:
            raise SystemExit("--part needs --result-json")
        _run_part(args)
        return 0
    if args.repeats < 1:
        raise SystemExit(f"--repeats={args.repeats}; expected >= 1")
    names = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        raise SystemExit(f"--parts={args.parts!r}; expected a comma-separated subset of {PARTS}")
    command = _report.command_line(None if argv is None else [__file__, *argv])
    facts = _report.machine_facts()
    common = ["-m", "benchmarks.retrieval_speed", "--data-dir", str(args.data_dir)]
    if args.quick:
        common.append("--quick")
    for pair in args.set or []:
        common += ["--set", pair]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for repeat in range(args.repeats):  # interleaved, so load drift hits both parts
        for name in names:
            print(f"[retrieval_speed] run {repeat + 1}/{args.repeats}: {name}", flush=True)
            runs[name].append(_report.run_isolated([*common, "--part", name]))
    summary = summarize(runs)
    markdown = render_markdown(runs, summary, quick=args.quick)
    name = NAME + ("_quick" if args.quick else "")
    results = {"summary": summary, "runs": runs, "load_average_end": list(os.getloadavg())}
    return _report.publish(
        name, results, markdown, command=command, facts=facts, output_dir=args.output
    )


if __name__ == "__main__":
    sys.exit(main())
