"""Two-stage (retrieve -> LSTM ranker) vs retrieval only, same split, full ranking.

Stage 1 is the dataset's retrieval preset (``beauty``: the transformer two-tower
model), trained here by :class:`tfrec.training.retrieval.RetrievalExperiment`
(``--retrieval-epochs`` caps its epochs) or loaded from a directory a
``RetrievalExperiment.save`` wrote (``--retrieval-dir``; the report records
which). Stage 2 is the LSTM ranker of ``RankingExperimentConfig.for_dataset(
dataset, kind="pipeline")`` (next-item objective, listwise softmax loss over the
true item + negatives drawn from the retrieval model's top ``hard_pool_size``,
trained only on the examples whose true item retrieval did find:
``retrieved_only``), trained on the same split with the retrieval model's
vocabularies. The score-fusion weight (final score = ranker + w * retrieval
score over the retrieved top N), one of ``RankingExperimentConfig.fusion_weights``
unless ``--weights`` says otherwise, is tuned on the validation part
(:func:`tfrec.evaluation.two_stage.tune_retrieval_weight`, never on test). Test metrics come from
:func:`tfrec.evaluation.two_stage.evaluate_two_stage`: both rank the whole
catalogue minus the user's history for the same queries; a true item outside
the retrieved N is a miss for the two-stage ranking.

Acceptance (issue): two-stage NDCG@10 >= 1.05 x retrieval-only NDCG@10 on
Amazon Beauty (S3-Rec release), leave-one-out, full ranking.

Run from the repository root::

    python -m benchmarks.two_stage --dataset beauty --data-dir /work/shared/datasets
    python -m benchmarks.two_stage --dataset beauty --retrieval-dir RUN/retrieval
    python -m benchmarks.two_stage --quick --output /tmp/t   # synthetic smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _report
from tfrec.cli.common import apply_overrides, parse_set_options

NAME = "two_stage"
TARGET_RATIO = 1.05
COLUMNS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "hr@100", "mrr")
QUICK_RANKER = {"embedding_dim": 8, "lstm_units": 8, "mlp_layers": [8], "epochs": 1}
QUICK_RETRIEVAL = {"embedding_dim": 8, "epochs": 1, "max_history": 10}


def _retrieval(args: argparse.Namespace, config: Any, data: Any, split: Any) -> tuple[Any, str]:
    """Trains or loads the stage-1 experiment; returns it and where it came from."""
    from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

    if args.retrieval_dir:
        experiment = RetrievalExperiment.from_dir(args.retrieval_dir, data_dir=args.data_dir)
        return experiment, f"loaded from {args.retrieval_dir} (not trained by this run)"
    model = config.retrieval
    if args.quick:
        model = apply_overrides(model, QUICK_RETRIEVAL)
    if args.retrieval_epochs:
        model = apply_overrides(model, {"epochs": args.retrieval_epochs})
    retrieval_config = RetrievalExperimentConfig(
        data=config.data, model=model, evaluation=config.evaluation
    )
    out = Path(args.save_retrieval) if args.save_retrieval else None
    experiment = RetrievalExperiment(retrieval_config, output_dir=out, data=data, split=split)
    experiment.fit(verbose=0)
    if out is not None:
        experiment.save(out)
    return experiment, f"trained here (epochs <= {model.training.epochs})"


def _pool_scorer(args: argparse.Namespace, experiment: Any, scorer: Any) -> tuple[Any, str]:
    """The scorer whose top items are the ranker's hard negatives, and where it came from.

    Stage 1's ``scorer`` unless ``--pool-retrieval-dir`` names another saved
    retrieval experiment (e.g. an earlier, less memorising checkpoint of stage 1).

    Raises:
        ValueError: That experiment's item vocabulary differs from stage 1's.
    """
    from tfrec.models.two_stage import RetrievalScorer

    if not args.pool_retrieval_dir:
        return scorer, "the stage-1 model"
    from tfrec.training.retrieval import RetrievalExperiment

    pool_experiment = RetrievalExperiment.from_dir(args.pool_retrieval_dir, args.data_dir)
    if pool_experiment.item_vocab.all_tokens() != experiment.item_vocab.all_tokens():
        raise ValueError(
            f"--pool-retrieval-dir {args.pool_retrieval_dir}: its item vocabulary differs "
            "from the stage-1 model's; both must be trained on the same data"
        )
    return RetrievalScorer(pool_experiment.model), f"loaded from {args.pool_retrieval_dir}"


def _test_metrics(
    trained: Any, scorer: Any, split: Any, weight: float, max_queries: int | None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Test metrics: retrieval only and two-stage at w = 0, then two-stage at ``weight``.

    Returns:
        :func:`~tfrec.evaluation.two_stage.evaluate_two_stage`'s result at w = 0
        (``retrieval`` and ``two_stage``) and the two-stage metrics at ``weight``
        (the same as at w = 0 when ``weight`` is 0).
    """
    from tfrec.evaluation.two_stage import evaluate_two_stage

    ks = (1, 5, 10, 20, 50, 100)
    base = evaluate_two_stage(
        trained, scorer, split, ks=ks, retrieval_weight=0.0, max_queries=max_queries
    )
    fused = (
        base["two_stage"]
        if weight == 0.0
        else evaluate_two_stage(
            trained, scorer, split, ks=ks, retrieval_weight=weight,
            include_retrieval=False, max_queries=max_queries,
        )["two_stage"]
    )  # fmt: skip
    return base, fused


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 1, stage 2, fusion-weight tuning and the test comparison."""
    import dataclasses

    from tfrec.evaluation.ranker import evaluate_ranker
    from tfrec.evaluation.two_stage import tune_retrieval_weight
    from tfrec.models.two_stage import RetrievalScorer
    from tfrec.training.ranking import train_ranker
    from tfrec.training.ranking_config import RankingExperimentConfig

    dataset = "synthetic" if args.quick else args.dataset
    kwargs = {} if args.quick else {"data_dir": args.data_dir}
    config = RankingExperimentConfig.for_dataset(dataset, kind="pipeline", **kwargs)
    overrides = parse_set_options(args.set)
    ranking = apply_overrides(config.ranking, {**(QUICK_RANKER if args.quick else {}), **overrides})
    config = dataclasses.replace(config, ranking=ranking)
    data = config.data.load()
    split = config.data.make_split(data)
    timings: dict[str, float] = {}
    with _report.Timer() as t:
        experiment, source = _retrieval(args, config, data, split)
    timings["retrieval_s"] = round(t.seconds, 1)
    if args.retrieval_dir:  # evaluate on this run's split (the saved config's own)
        split = experiment.split
    scorer = RetrievalScorer(experiment.model)
    pool_scorer, pool_source = _pool_scorer(args, experiment, scorer)
    with _report.Timer() as t:
        trained = train_ranker(
            split,
            ranking,
            user_vocab=experiment.user_vocab,
            item_vocab=experiment.item_vocab,
            retrieval=pool_scorer,
        )
    timings["ranker_train_s"] = round(t.seconds, 1)
    ranker_lists = evaluate_ranker(trained, split)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else config.fusion_weights
    with _report.Timer() as t:
        best, table = tune_retrieval_weight(
            trained, scorer, split, weights=weights, max_queries=args.tune_queries
        )
    timings["tune_s"] = round(t.seconds, 1)
    with _report.Timer() as t:
        base, fused = _test_metrics(trained, scorer, split, best, args.max_queries)
    timings["test_eval_s"] = round(t.seconds, 1)
    retrieval_ndcg = base["retrieval"]["ndcg@10"]
    ratio = fused["ndcg@10"] / retrieval_ndcg if retrieval_ndcg > 0 else None
    return {
        "dataset": dataset,
        "split": split.summary(),
        "retrieval_source": source,
        "pool_source": pool_source,
        "retrieval_config": experiment.config.model.to_dict(),
        "retrieval_history": experiment.history if hasattr(experiment, "history") else {},
        "ranker_config": ranking.to_dict(),
        "ranker_overrides": overrides,
        "ranker_history": trained.history,
        "ranker_lists": ranker_lists,
        "fusion_weights": {str(w): v for w, v in table.items()},
        "fusion_weight": best,
        "test": {
            "retrieval": base["retrieval"],
            "two_stage_w0": base["two_stage"],
            "two_stage_tuned": fused,
        },
        "ratio_ndcg@10": ratio,
        "acceptance": {
            "target_ratio": TARGET_RATIO,
            "passed": ratio is not None and ratio >= TARGET_RATIO,
        },
        "timings": timings,
    }


def render_markdown(results: dict[str, Any]) -> str:
    """Report body: verdict, test table, tuning table, config."""
    r = results["run"]
    lines = []
    if results["quick"]:
        lines.append("QUICK synthetic smoke run: measures nothing.\n")
    ratio = r["ratio_ndcg@10"]
    verdict = "PASS" if r["acceptance"]["passed"] else "FAIL"
    lines.append(
        f"Dataset `{r['dataset']}`: {r['split']}.\n\n**Acceptance (two-stage NDCG@10 >= "
        f"{TARGET_RATIO} x retrieval-only): {verdict}**: ratio "
        f"{'n/a' if ratio is None else f'{ratio:.3f}'} (fusion weight {r['fusion_weight']}, "
        "tuned on validation)\n"
    )
    rows = []
    for key, label in (
        ("retrieval", "retrieval only"),
        ("two_stage_w0", "two-stage, ranker score only (w = 0)"),
        ("two_stage_tuned", f"two-stage, fused (w = {r['fusion_weight']})"),
    ):
        rows.append([label, *(r["test"][key].get(c, "") for c in COLUMNS)])
    lines.append("## Test (full ranking, history masked)\n")
    lines.append(_report.markdown_table(["model", *COLUMNS], rows))
    lines.append("## Fusion weight on validation (NDCG@10)\n")
    lines.append(
        _report.markdown_table(
            ["w", "valid ndcg@10"], [[w, v] for w, v in r["fusion_weights"].items()]
        )
    )
    lines.append("## Ranker alone (its sampled lists: true item + uniform negatives)\n")
    lines.append(f"- `{r['ranker_lists']}`")
    val = {k: v for k, v in r["ranker_history"].items() if k.startswith("val")}
    lines.append(f"- validation history: `{val}`")
    lines.append("\n## Time and load\n")
    lines.append(f"- {r['timings']}")
    lines.append(
        f"- load average (1/5/15 min) at start {results['load_start']}, at end "
        f"{results['load_end']} (2 CPUs shared with other engineers' jobs)"
    )
    lines.append("\n## Config\n")
    lines.append(f"- stage 1: {r['retrieval_source']}; `{r['retrieval_config']}`")
    lines.append(f"- ranker training lists (hard negatives) from: {r['pool_source']}")
    lines.append(f"- stage 2 ranker: `{r['ranker_config']}` (overrides `{r['ranker_overrides']}`)")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("beauty", "ml-100k"), default="beauty")
    parser.add_argument("--data-dir", help="folder holding the dataset folders")
    parser.add_argument("--retrieval-dir", help="load a saved RetrievalExperiment instead")
    parser.add_argument("--save-retrieval", help="save the trained retrieval experiment here")
    parser.add_argument(
        "--pool-retrieval-dir",
        help=(
            "build the ranker's training lists with this saved retrieval experiment instead "
            "of stage 1 (same data and vocabulary, e.g. an earlier checkpoint)"
        ),
    )
    parser.add_argument("--retrieval-epochs", type=int, help="cap the preset's epochs")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="RankingConfig field")
    parser.add_argument(
        "--weights", help="fusion weights to tune, e.g. 0,1,3 (default: the config's)"
    )
    parser.add_argument(
        "--tune-queries", type=int, default=10000, help="validation queries (seeded subset)"
    )
    parser.add_argument("--max-queries", type=int, help="test queries (seeded subset; all)")
    parser.add_argument("--tag", help="suffix of the report name")
    parser.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the comparison and writes the report; returns the exit code."""
    args = parse_args(argv)
    _report.configure_logging()
    facts = _report.machine_facts()
    result = run(args)
    results = {
        "quick": bool(args.quick),
        "run": result,
        "load_start": facts["load_average"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = NAME + ("_quick" if args.quick else "")
    if not args.quick and args.dataset != "beauty":
        name += "_" + args.dataset.replace("-", "")
    if args.tag:
        name += f"_{args.tag}"
    return _report.publish(
        name, results, render_markdown(results), facts=facts, output_dir=args.output
    )


if __name__ == "__main__":
    sys.exit(main())
