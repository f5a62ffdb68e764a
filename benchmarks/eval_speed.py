"""Full-ranking evaluation speed: the dense numpy loop vs batched top-K on the model's device.

A synthetic catalogue (``--items`` x ``--dim`` float32, default 300k x 64) and
``--queries`` random query vectors, each with a ``--history``-item history
(masked) and one held-out item. Every cell runs in a fresh subprocess so its
peak RSS is its own:

* ``old``: :func:`tfrec.evaluation.protocol.evaluate_full_ranking` over a score
  function like ``TwoTowerModel.score`` (a ``[B, I]`` matrix copied to numpy,
  dense masks, numpy top-K);
* ``new``: :func:`tfrec.evaluation.topk.evaluate_full_ranking_topk` (matmul,
  sparse history scatter, two-level ``tf.math.top_k`` and the exact target rank
  in one graph; only ids and ranks leave it), at several batch sizes.

Each cell first runs one batch untimed (tracing, XLA compilation). Reports
queries/s, seconds and peak RSS per cell, and checks that both loops
give the same metrics. Run the full size on a quiet machine::

    python -m benchmarks.eval_speed                 # 300k x 64, 2,000 queries
    python -m benchmarks.eval_speed --quick         # 20k items, 300 queries (smoke)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from benchmarks._report import (
    Timer,
    command_line,
    machine_facts,
    markdown_table,
    peak_rss_mb,
    run_isolated,
    write_report,
    write_result_json,
)

COMPARED = ("ndcg@10", "hr@10", "recall@100", "mrr")


def _problem(args: argparse.Namespace) -> tuple[Any, ...]:
    """The seeded synthetic catalogue, queries, held-out items and histories."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    items = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    relevant = [rng.integers(2, args.items, 1) for _ in range(args.queries)]
    seen = [np.unique(rng.integers(2, args.items, args.history)) for _ in range(args.queries)]
    return items, queries, relevant, seen


def run_part(args: argparse.Namespace) -> dict[str, Any]:
    """One measured cell (``--part old|new``, ``--batch``), in this process."""
    import numpy as np
    import tensorflow as tf

    import tfrec  # noqa: F401
    from tfrec.evaluation.protocol import evaluate_full_ranking
    from tfrec.evaluation.topk import evaluate_full_ranking_topk

    items, queries, relevant, seen = _problem(args)
    ids = np.arange(args.queries)
    rss_before = peak_rss_mb()
    if args.part == "old":
        table = tf.constant(items)

        @tf.function(input_signature=[tf.TensorSpec([None, args.dim], tf.float32)])
        def scores(q: tf.Tensor) -> tf.Tensor:  # as TwoTowerModel.score
            s = tf.matmul(q, table, transpose_b=True)
            return tf.where((tf.range(tf.shape(s)[1]) < 2)[tf.newaxis, :], -np.inf, s)

        def run(rows: np.ndarray) -> dict[str, float]:
            return evaluate_full_ranking(
                lambda r: scores(queries[r]).numpy(), rows, relevant[: rows.size],
                seen[: rows.size], batch_size=args.batch,
            )  # fmt: skip
    else:
        table = tf.constant(items)

        def run(rows: np.ndarray) -> dict[str, float]:
            return evaluate_full_ranking_topk(
                lambda r: queries[r], table, rows, relevant[: rows.size], seen[: rows.size],
                batch_size=args.batch,
                memory_budget=2**40,  # the benchmark's --batch, not the default bound
            )  # fmt: skip

    run(ids[: args.batch])  # warm-up: tracing and XLA compilation of the full-batch shape
    with Timer() as timer:
        metrics = run(ids)
    return {
        "part": args.part,
        "batch": args.batch,
        "seconds": timer.seconds,
        "queries_per_s": args.queries / timer.seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "metrics": {key: metrics[key] for key in COMPARED if key in metrics},
    }


def render_markdown(results: dict[str, Any]) -> str:
    """The report body: one row per cell, then the metric check."""
    cfg = results["config"]
    rows = [
        [c["part"], c["batch"], c["queries_per_s"], c["seconds"], c["rss_before_mb"],
         c["peak_rss_mb"]]
        for c in results["cells"]
    ]  # fmt: skip
    table = markdown_table(
        ["loop", "batch", "queries/s", "seconds", "RSS before (MB)", "peak RSS (MB)"], rows
    )
    return (
        f"{cfg['items']:,} items x d={cfg['dim']} float32, {cfg['queries']:,} queries, "
        f"{cfg['history']} masked history items each, top-100 (ks 1..100) + exact MRR.\n\n"
        f"{table}\n"
        f"Metrics of every cell equal the first cell's to 1e-6: **{results['metrics_agree']}**.\n"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300_000, help="catalogue size I")
    parser.add_argument("--dim", type=int, default=64, help="vector dimension d")
    parser.add_argument("--queries", type=int, default=2000, help="evaluation queries")
    parser.add_argument("--history", type=int, default=30, help="masked items per query")
    parser.add_argument("--batches", default="64,128,223,512", help="new loop batch sizes")
    parser.add_argument("--old-batches", default="256", help="old loop batch sizes")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    parser.add_argument("--quick", action="store_true", help="20k items, 300 queries (smoke)")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    parser.add_argument("--part", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--result-json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.queries = 20_000, 300
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every cell in a subprocess and writes benchmarks/results/eval_speed.{json,md}."""
    args = parse_args(argv)
    if args.part:  # a child: one cell
        write_result_json(args.result_json, run_part(args))
        return 0
    facts = machine_facts()
    shared = ["--items", str(args.items), "--dim", str(args.dim), "--queries", str(args.queries)]
    shared += ["--history", str(args.history), "--seed", str(args.seed)]
    cells = []
    for part, batches in (("old", args.old_batches), ("new", args.batches)):
        for batch in (int(b) for b in batches.split(",") if b.strip()):
            cell = run_isolated(
                ["-m", "benchmarks.eval_speed", *shared, "--part", part, "--batch", str(batch)]
            )
            print(f"{part} batch={batch}: {cell['queries_per_s']:.0f} queries/s, "
                  f"peak RSS {cell['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
            cells.append(cell)
    reference = cells[0]["metrics"]
    agree = all(
        abs(cell["metrics"][key] - value) <= 1e-6
        for cell in cells
        for key, value in reference.items()
    )
    config = {key: getattr(args, key) for key in ("items", "dim", "queries", "history", "seed")}
    results = {"config": config, "cells": cells, "metrics_agree": agree}
    name = "eval_speed_quick" if args.quick else "eval_speed"
    paths = write_report(
        name, results, render_markdown(results), command=command_line(argv), facts=facts,
        output_dir=args.output,
    )  # fmt: skip
    print(f"wrote {paths[1]}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
