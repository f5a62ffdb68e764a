"""Explanations: faithfulness (deletion test) and latency of the ``explain`` signature.

Trains the dataset's retrieval preset (``beauty``: the transformer encoder), or
reopens a ``tfrec train`` output with ``--model-dir``, exports it with
explanations (:mod:`tfrec.export.explanations`: leave-one-out re-encoding) and
measures, for a seeded sample of test users with >= 2 distinct history items:

* deletion test, per recommended item (k = 10, from the ``explain`` signature):
  the retrieval score drop when the top explaining item is removed from the
  history vs when one random *other* distinct history item is removed (drops
  computed in-process with the model's ``query_embeddings``, not by the export).
  Reported: the share of items where the top item's drop is larger (ties
  counted separately). The same test for a cheap baseline explanation, the
  history item most similar to the recommended item (item-vector dot product),
  shows what the measure discriminates. Target (issue): >= 80%.
* latency: p50/p99 of ``serving_default`` vs ``explain`` at batch 1, k = 10,
  in-process (``tf.saved_model.load``), on test users' real histories.

The random item is drawn from the history the query reads (the evaluation
histories keep the last ``max_history`` items, which is what is sent), so both
removals change the query.

Run from the repository root::

    python -m benchmarks.explanations --data-dir /work/shared/datasets
    python -m benchmarks.explanations --model-dir runs/beauty --data-dir /work/shared/datasets
    python -m benchmarks.explanations --quick --output /tmp/x  # tiny synthetic smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import _report

NAME = "explanations"
TARGET_SHARE = 0.8
QUICK_DATA = {"dataset": "synthetic", "synthetic_users": 60, "synthetic_items": 30}
QUICK_MODEL = {"embedding_dim": 8, "max_history": 10, "batch_size": 32, "epochs": 2}


def build_experiment(args: argparse.Namespace, work_dir: Path) -> tuple[Any, float | None]:
    """The trained retrieval experiment (reopened or fitted) and its training seconds."""
    from tfrec.cli.common import apply_overrides
    from tfrec.training.experiment import load_experiment
    from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

    if args.model_dir:
        return load_experiment(Path(args.model_dir), data_dir=args.data_dir), None
    config = RetrievalExperimentConfig.for_dataset(args.dataset)
    if args.quick:
        config.data = apply_overrides(config.data, QUICK_DATA)
        config.model = apply_overrides(config.model, QUICK_MODEL)
    elif args.data_dir:
        config.data = apply_overrides(config.data, {"data_dir": args.data_dir})
    experiment = RetrievalExperiment(config, output_dir=work_dir)
    experiment.fit(verbose=0)
    return experiment, round(float(experiment.train_seconds), 1)


def sample_queries(experiment: Any, num_users: int, seed: int) -> Any:
    """Test queries with >= 2 distinct real history items, a seeded sample of ``num_users``."""
    queries = experiment.queries("test")
    eligible = [len(set(h[h > 1].tolist())) >= 2 for h in queries.history]
    rows = np.flatnonzero(eligible)
    rng = np.random.default_rng(seed)
    if len(rows) > num_users:
        rows = np.sort(rng.choice(rows, num_users, replace=False))
    return queries, rows


def _strings(experiment: Any, history: np.ndarray) -> np.ndarray:
    tokens = np.array(experiment.item_vocab.all_tokens(), dtype=object)
    return np.where(history > 1, tokens[history], "").astype(object)


def explain_all(explain: Any, experiment: Any, queries: Any, rows: np.ndarray, k: int) -> dict:
    """The ``explain`` signature's answers for ``rows`` (batches of 64), as item indices."""
    import tensorflow as tf

    lookup = experiment.item_vocab.lookup
    items, causes = [], []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        out = explain(
            user_id=tf.constant([queries.user_ids[r] for r in batch]),
            history=tf.constant(_strings(experiment, queries.history[batch]).astype(str)),
            k=tf.fill([len(batch)], k),
        )
        ids = out["item_ids"].numpy().astype(str)
        items.append(np.where(ids == "", 0, lookup(ids.astype(object))))
        first = out["explanation_items"].numpy()[:, :, 0].astype(str)
        causes.append(np.where(first == "", 0, lookup(first.astype(object))))
    return {"items": np.concatenate(items), "top": np.concatenate(causes)}


def deletion_scores(
    model: Any, candidates: Any, user: int, history: np.ndarray, removed: list[int]
) -> np.ndarray:
    """``[len(removed) + 1, I]`` retrieval scores: the full history, then without each item."""
    import tensorflow as tf

    rows = [history] + [np.where(history == item, 0, history) for item in removed]
    users = tf.fill([len(rows)], int(user))
    return model.score(users, tf.constant(np.stack(rows)), candidates).numpy()


def deletion_test(
    experiment: Any, queries: Any, rows: np.ndarray, explained: dict, seed: int
) -> dict[str, Any]:
    """Top-item vs random-item score drops for the LOO explanation and the similarity baseline."""
    model = experiment.model
    candidates = model.candidate_embeddings()  # [I, D]
    vectors = candidates.numpy()
    rng = np.random.default_rng(seed)
    counts = {m: {"top_larger": 0, "tie": 0, "random_larger": 0} for m in ("loo", "similarity")}
    agree = total = 0
    for n, row in enumerate(rows):
        history = queries.history[row]
        distinct = sorted(set(history[history > 1].tolist()))
        picks: list[tuple[int, dict[str, int]]] = []
        for item, loo_top in zip(explained["items"][n], explained["top"][n], strict=True):
            if item <= 1 or loo_top <= 1:
                continue
            similar = max(distinct, key=lambda h, item=item: float(vectors[h] @ vectors[item]))
            tops = {"loo": int(loo_top), "similarity": int(similar)}
            agree += tops["loo"] == tops["similarity"]
            randoms = {m: int(rng.choice([h for h in distinct if h != t])) for m, t in tops.items()}
            picks.append((int(item), {**tops, **{f"r_{m}": r for m, r in randoms.items()}}))
        if not picks:
            continue
        removed = sorted({i for _, p in picks for i in p.values()})
        scores = deletion_scores(model, candidates, queries.users[row], history, removed)
        where = {item: 1 + j for j, item in enumerate(removed)}
        for item, p in picks:
            full = scores[0, item]
            for method in ("loo", "similarity"):
                top = full - scores[where[p[method]], item]
                other = full - scores[where[p[f"r_{method}"]], item]
                key = "tie" if np.isclose(top, other, atol=1e-7) else None
                key = key or ("top_larger" if top > other else "random_larger")
                counts[method][key] += 1
            total += 1
    shares = {
        m: {key: value / max(total, 1) for key, value in c.items()} for m, c in counts.items()
    }
    return {"items": total, "counts": counts, "shares": shares, "agreement": agree / max(total, 1)}


def latency(loaded: Any, experiment: Any, queries: Any, rows: np.ndarray, requests: int) -> dict:
    """p50/p99 milliseconds of ``serving_default`` and ``explain`` at batch 1, k = 10."""
    import tensorflow as tf

    results = {}
    chosen = rows[:requests]
    for name in ("serving_default", "explain"):
        fn = loaded.signatures[name]
        times = []
        for i, row in enumerate(np.concatenate([chosen[:5], chosen])):  # 5 warm-up calls
            history = _strings(experiment, queries.history[row : row + 1]).astype(str)
            with _report.Timer() as timer:
                fn(user_id=tf.constant([queries.user_ids[row]]), history=tf.constant(history),
                   k=tf.constant([10]))  # fmt: skip
            if i >= 5:
                times.append(timer.seconds * 1000)
        results[name] = {
            "p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "requests": len(times),
        }
    base, explain = results["serving_default"], results["explain"]
    results["overhead_p50_ms"] = round(explain["p50_ms"] - base["p50_ms"], 3)
    results["overhead_p50_ratio"] = round(explain["p50_ms"] / max(base["p50_ms"], 1e-9), 2)
    return results


def render_markdown(results: dict[str, Any]) -> str:
    """The report body: the deletion-test table, latency table and notes."""
    test = results["deletion_test"]
    rows = [
        [label, test["shares"][m]["top_larger"], test["shares"][m]["tie"],
         test["shares"][m]["random_larger"]]
        for m, label in (("loo", "leave-one-out (export)"), ("similarity", "similarity baseline"))
    ]  # fmt: skip
    lat = results["latency"]
    quick = " (QUICK synthetic smoke run)" if results["quick"] else ""
    return "\n".join(
        [
            f"Dataset `{results['dataset']}`{quick}, {results['users']} test users, "
            f"{test['items']} recommended items (k = 10), m = {results['explain_top']}.",
            "",
            "Deletion test: share of recommended items where removing the top explaining "
            "item lowers the score more than removing a random other history item "
            f"(target >= {TARGET_SHARE:.0%} for the export's method):",
            "",
            _report.markdown_table(["method", "top > random", "tie", "random > top"], rows),
            f"Leave-one-out and similarity agree on the top item for {test['agreement']:.1%}.",
            "",
            "Latency at batch 1, k = 10, in-process (ms; the machine was shared, so "
            "times are upper bounds):",
            "",
            _report.markdown_table(
                ["signature", "p50", "p99", "requests"],
                [
                    [n, lat[n]["p50_ms"], lat[n]["p99_ms"], lat[n]["requests"]]
                    for n in ("serving_default", "explain")
                ],
            ),
            f"Overhead of `explain` at p50: {lat['overhead_p50_ms']} ms "
            f"({lat['overhead_p50_ratio']}x).",
            "",
            f"Acceptance (top > random >= {TARGET_SHARE:.0%}): "
            f"{'PASS' if results['passed'] else 'FAIL'}.",
            "",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beauty", help="retrieval preset (default beauty)")
    parser.add_argument("--data-dir", help="folder holding the dataset folders")
    parser.add_argument("--model-dir", help="a `tfrec train` retrieval output (skips training)")
    parser.add_argument("--users", type=int, default=2000, help="test users sampled")
    parser.add_argument("--explain-top", type=int, default=3, help="m of the export")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    facts = _report.machine_facts()
    import tensorflow as tf

    from tfrec.export.retrieval import export_retrieval

    with tempfile.TemporaryDirectory(prefix="tfrec-explain-") as tmp:
        experiment, train_seconds = build_experiment(args, Path(tmp) / "run")
        export = export_retrieval(
            experiment.model, experiment.user_vocab, experiment.item_vocab, Path(tmp) / "export",
            explain_top=args.explain_top,
        )  # fmt: skip
        loaded = tf.saved_model.load(str(export))
        queries, rows = sample_queries(experiment, 60 if args.quick else args.users, args.seed)
        explained = explain_all(loaded.signatures["explain"], experiment, queries, rows, 10)
        test = deletion_test(experiment, queries, rows, explained, args.seed)
        requests = 20 if args.quick else args.latency_requests
        timing = latency(loaded, experiment, queries, rows, requests)
    results = {
        "dataset": "synthetic" if args.quick else args.dataset,
        "quick": bool(args.quick),
        "model_dir": args.model_dir,
        "encoder": experiment.model.config.encoder,
        "max_history": experiment.model.config.max_history,
        "train_seconds": train_seconds,
        "users": len(rows),
        "explain_top": args.explain_top,
        "deletion_test": test,
        "latency": timing,
        "passed": test["shares"]["loo"]["top_larger"] >= TARGET_SHARE,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = NAME + ("_quick" if args.quick else f"_{args.dataset.replace('-', '')}")
    markdown = render_markdown(results)
    return _report.publish(name, results, markdown, facts=facts, output_dir=args.output)


if __name__ == "__main__":
    sys.exit(main())
