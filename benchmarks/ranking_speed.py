"""Ranking inference speed: candidates scored per second, in-process.

One trained LSTM ranker is scored two ways, in the same process, on the same
requests (``C`` candidates per request, batch ``B`` requests per call):

* ``savedmodel``: the ranking SavedModel written by
  :func:`tfrec.export.ranking.export_ranking`, loaded with
  ``tf.saved_model.load`` and called through its ``serving_default`` signature
  with string tensors (``history [B, L]``, ``candidates [B, C]``,
  ``user_id [B]``), i.e. vocabulary lookups + the ranker, as TF Serving runs it
  (no event signals: the signature has none).
* ``in_memory``: the Keras model called in a ``tf.function`` on integer
  features with the event signals (``history_rating``, ``history_log_dt``), as
  :func:`tfrec.evaluation.ranker.predict_scores` does in offline evaluation.

Requests are real users of the data (their most recent ``max_history`` items)
with ``C`` uniformly drawn catalogue items (seeded). Each variant is warmed up
(``--warmup`` calls per batch size, which also traces the graph), then timed
over ``--rounds`` rounds of ``--calls`` calls, variants interleaved round by
round so a drifting machine load hits all of them alike. Reported: median
seconds per call, candidates per second (``B * C / median``), and candidates
per CPU-second of the process (``time.process_time``).

Run from the repository root::

    python -m benchmarks.ranking_speed --ranker /tmp/rankbench/rating_models/u1 \\
        --data-dir /work/shared/datasets
    python -m benchmarks.ranking_speed --quick --output /tmp/s   # synthetic smoke run

Without ``--ranker`` a ranker is trained first (``--train-epochs``, on ml-100k
fold u1, or on synthetic data with ``--quick``); the weights do not change the
amount of computation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report
from tfrec.training.config import TrainingConfig

NAME = "ranking_speed"
VARIANTS = ("savedmodel", "in_memory")


def _train_ranker(args: argparse.Namespace) -> Any:
    """Trains a ranker for the measurement (when no ``--ranker`` is given)."""
    from benchmarks.ranking_rating import QUICK, movielens_folds, synthetic_folds
    from tfrec.data.download import resolve_data_dir
    from tfrec.data.vocab import build_vocabularies
    from tfrec.models.ranking import RankingConfig
    from tfrec.training.ranking import train_ranker

    if args.quick:
        split = synthetic_folds(1)[0][1]
        config = RankingConfig.from_dict(QUICK)  # flat names nest
    else:
        split = movielens_folds(Path(resolve_data_dir(args.data_dir)), [1])[0][1]
        config = RankingConfig(
            objective="rating", max_history=50, training=TrainingConfig(epochs=args.train_epochs)
        )
    users, items = build_vocabularies(split.train)
    return train_ranker(split, config, user_vocab=users, item_vocab=items), split


def make_requests(
    trained: Any, split: Any, batch: int, candidates: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """String inputs of ``serving_default`` and the equivalent integer features.

    Returns:
        ``(strings, ints)``: ``strings`` has ``history [B, L]``, ``candidates
        [B, C]``, ``user_id [B]``; ``ints`` the model features of the same rows.
    """
    from tfrec.data.ranking_examples import build_ranking_examples

    examples = build_ranking_examples(
        split.test, trained.user_vocab, trained.item_vocab, trained.config.max_history,
        context=split.train,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(examples), batch, replace=len(examples) < batch)
    ex = examples.take(rows)
    cand = rng.integers(2, trained.item_vocab.size, size=(batch, candidates)).astype(np.int32)
    items = np.array(trained.item_vocab.all_tokens(), dtype=object)
    users = np.array(trained.user_vocab.all_tokens(), dtype=object)
    strings = {
        "history": items[ex.history].astype(bytes),  # padding 0 -> "" (the contract's padding)
        "candidates": items[cand].astype(bytes),
        "user_id": users[ex.user].astype(bytes),
    }
    ints = {**ex.features(), "candidates": cand}
    return strings, ints


def time_calls(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """Wall and process-CPU seconds per call over ``calls`` calls."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall / calls, cpu / calls


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Loads or trains the ranker, exports it, times every (variant, batch) cell."""
    import tensorflow as tf

    from tfrec.export.ranking import export_ranking
    from tfrec.training.ranking import RankingExperiment

    if args.ranker:
        from benchmarks.ranking_rating import movielens_folds, synthetic_folds
        from tfrec.data.download import resolve_data_dir

        trained = RankingExperiment.from_dir(args.ranker).trained
        split = (
            synthetic_folds(1)[0][1]
            if args.quick
            else movielens_folds(Path(resolve_data_dir(args.data_dir)), [1])[0][1]
        )
    else:
        trained, split = _train_ranker(args)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="tfrec-rank-speed-") as tmp:
        path = export_ranking(trained, tmp)
        serving = tf.saved_model.load(str(path)).signatures["serving_default"]
        model = trained.model
        in_memory = tf.function(lambda f: model(f, training=False), reduce_retracing=True)
        fns: dict[tuple[str, int], Callable[[], Any]] = {}
        for b in batches:
            strings, ints = make_requests(trained, split, b, args.candidates, args.seed)
            s_tensors = {k: tf.constant(v) for k, v in strings.items()}
            i_tensors = {k: tf.constant(v) for k, v in ints.items()}
            fns["savedmodel", b] = lambda t=s_tensors: serving(**t)["scores"].numpy()
            fns["in_memory", b] = lambda t=i_tensors: in_memory(t).numpy()
            a = fns["savedmodel", b]()
            m = fns["in_memory", b]()
            if a.shape != (b, args.candidates) or m.shape != (b, args.candidates):
                raise RuntimeError(f"unexpected score shapes {a.shape}, {m.shape} at batch {b}")
        for fn in fns.values():
            for _ in range(args.warmup):
                fn()
        samples: dict[tuple[str, int], list[tuple[float, float]]] = {key: [] for key in fns}
        for _ in range(args.rounds):
            for key, fn in fns.items():
                samples[key].append(time_calls(fn, args.calls))
    cells = []
    for (variant, b), values in samples.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        cells.append({
            "variant": variant,
            "batch": b,
            "candidates": args.candidates,
            "median_ms_per_call": round(wall * 1e3, 3),
            "p10_ms": round(float(np.percentile([v[0] for v in values], 10)) * 1e3, 3),
            "p90_ms": round(float(np.percentile([v[0] for v in values], 90)) * 1e3, 3),
            "candidates_per_s": round(b * args.candidates / wall, 1),
            "candidates_per_cpu_s": round(b * args.candidates / cpu, 1) if cpu > 0 else None,
        })  # fmt: skip
    return {
        "cells": cells,
        "ranker_config": trained.config.to_dict(),
        "num_items": trained.item_vocab.size,
        "max_history": trained.config.max_history,
    }


def render_markdown(results: dict[str, Any]) -> str:
    """Report body: the speed table and notes."""
    lines = []
    if results["quick"]:
        lines.append("QUICK synthetic smoke run: measures nothing.\n")
    lines.append(
        f"C = {results['settings']['candidates']} candidates per request, history "
        f"L = {results['max_history']}, catalogue {results['num_items']:,} rows; "
        f"{results['settings']['warmup']} warm-up calls, then {results['settings']['rounds']} "
        f"rounds x {results['settings']['calls']} calls per cell (cells interleaved).\n"
    )
    rows = [
        [
            c["variant"], c["batch"], c["median_ms_per_call"], c["p10_ms"], c["p90_ms"],
            c["candidates_per_s"], c["candidates_per_cpu_s"],
        ]
        for c in results["cells"]
    ]  # fmt: skip
    headers = [
        "variant", "batch", "median ms/call", "p10 ms", "p90 ms", "candidates/s",
        "candidates/CPU-s",
    ]  # fmt: skip
    lines.append(_report.markdown_table(headers, rows))
    lines.append(
        f"- load average (1/5/15 min) at start {results['load_start']}, at end "
        f"{results['load_end']} (2 CPUs shared with other engineers' jobs: wall-time rates "
        "are lower bounds)"
    )
    lines.append(f"- ranker: `{results['ranker_config']}`")
    lines.append(f"- ranker source: {results['ranker_source']}")
    lines.append("\n## Notes\n")
    lines.append(
        "- `savedmodel`: `tf.saved_model.load(export)` + `signatures['serving_default']` on "
        "string tensors (lookups + ranker; no event signals, as in serving)."
    )
    lines.append(
        "- `in_memory`: the Keras LSTMRanker in a `tf.function` on integer features with "
        "event signals (the offline-evaluation path)."
    )
    lines.append(
        "- candidates/s = batch x C / median wall seconds per call; candidates/CPU-s uses "
        "this process's CPU time (TensorFlow may use both cores)."
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ranker", help="a saved ranking run (ranking_rating.py --model-dir DIR/u1); else trained"
    )
    parser.add_argument("--data-dir", help="folder holding ml-100k/ (default $TFREC_DATA_DIR)")
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs without --ranker")
    parser.add_argument("--candidates", type=int, default=100, help="C per request")
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up calls per cell")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per cell")
    parser.add_argument("--calls", type=int, default=20, help="calls per timed round")
    parser.add_argument("--seed", type=int, default=0, help="request sampling seed")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.rounds, args.calls = 2, 2, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measures and writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    facts = _report.machine_facts()
    measured = measure(args)
    results = {
        "quick": bool(args.quick),
        "settings": {
            k: getattr(args, k) for k in ("candidates", "batches", "warmup", "rounds", "calls")
        },
        "ranker_source": args.ranker or f"trained here ({args.train_epochs} epoch(s))",
        **measured,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = NAME + ("_quick" if args.quick else "")
    return _report.publish(
        name, results, render_markdown(results), facts=facts, output_dir=args.output
    )


if __name__ == "__main__":
    sys.exit(main())
