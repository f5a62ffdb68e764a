"""CLI glue for ranking and pipeline runs (``tfrec train --model ranking|pipeline``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tfrec.cli.common import apply_overrides, data_overrides, parse_set_options

RANKING_FLAGS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "learning_rate": "learning_rate",
    "embedding_dim": "embedding_dim",
    "max_history": "max_history",
}


def parse_weights(text: str) -> list[float]:
    """``--fusion-weights``: ``"0,1,3"`` -> ``[0.0, 1.0, 3.0]``; ``"none"`` -> ``[]``.

    Raises:
        ValueError: An entry is not a number >= 0.
    """
    if text.strip().lower() == "none":
        return []
    weights = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(
                f"--fusion-weights: {part.strip()!r} is not a number; expected e.g. 0,1,3"
            ) from None
        if not value >= 0.0:
            raise ValueError(f"--fusion-weights: {value} is negative; expected weights >= 0")
        weights.append(value)
    return weights


def run_ranking(args: argparse.Namespace, output_dir: Path) -> int:
    """``tfrec train --model ranking|pipeline``: train, evaluate, save, export.

    Model flags (``--epochs``, ``--set key=value``, ...) apply to the ranker;
    ``--encoder``/``--loss`` (and ``--epochs``) apply to the retrieval stage of a pipeline.
    """
    from tfrec.training.pipeline import (  # noqa: PLC0415
        RankingExperimentConfig,
        run_ranking_experiment,
    )

    if args.config:
        config = RankingExperimentConfig.load(args.config)
    elif args.dataset is None:
        raise ValueError("--dataset is required (or --config with a saved config.json)")
    else:
        config = RankingExperimentConfig.for_dataset(args.dataset, kind=args.model)
    config.kind = args.model
    config.data = apply_overrides(config.data, data_overrides(args))
    overrides = {f: getattr(args, a) for a, f in RANKING_FLAGS.items() if getattr(args, a)}
    overrides.update(parse_set_options(args.set))
    if args.seed is not None:
        overrides["seed"] = args.seed
    config.ranking = apply_overrides(config.ranking, overrides)
    retrieval = {k: getattr(args, k) for k in ("encoder", "loss", "epochs") if getattr(args, k)}
    config.retrieval = apply_overrides(config.retrieval, retrieval)
    if getattr(args, "fusion_weights", None):
        config.fusion_weights = parse_weights(args.fusion_weights)
    metrics = run_ranking_experiment(config, output_dir, export=not args.no_export)
    shown = {
        k: round(v, 4)
        for k, v in metrics.items()
        if (k.startswith("test") and k.endswith(("@10", "rmse", "mae", "auc")))
        or k == "valid/fusion_weight"
    }
    print(json.dumps(shown, indent=2))
    print(f"wrote {output_dir / 'config.json'} and {output_dir / 'metrics.json'}")
    return 0


def evaluate_ranking_dir(args: argparse.Namespace) -> int:
    """``tfrec evaluate`` on a ranking/pipeline output directory."""
    from tfrec.training.pipeline import RankingExperimentConfig  # noqa: PLC0415
    from tfrec.training.ranking import evaluate_ranker, load_ranker  # noqa: PLC0415

    model_dir = Path(args.model_dir)
    config = RankingExperimentConfig.load(model_dir / "config.json")
    if args.data_dir:
        config.data.data_dir = args.data_dir
    split = config.data.make_split(config.data.load())
    trained = load_ranker(model_dir / "ranking")
    prefix = "test_ranker" if config.kind == "pipeline" else "test"
    metrics = {f"{prefix}/{k}": v for k, v in evaluate_ranker(trained, split).items()}
    if config.kind == "pipeline":
        from tfrec.models.two_stage import RetrievalScorer  # noqa: PLC0415
        from tfrec.training.retrieval import RetrievalExperiment  # noqa: PLC0415
        from tfrec.training.two_stage import evaluate_two_stage  # noqa: PLC0415

        experiment = RetrievalExperiment.from_dir(model_dir / "retrieval", data_dir=args.data_dir)
        both = evaluate_two_stage(trained, RetrievalScorer(experiment.model), split)
        for stage, values in both.items():
            metrics.update({f"test_{stage}/{k}": v for k, v in values.items()})
    print(json.dumps({k: round(float(v), 4) for k, v in metrics.items()}, indent=2))
    return 0


def export_ranking_dir(args: argparse.Namespace) -> int:
    """``tfrec export`` on a ranking/pipeline output directory (``--kind`` picks the model)."""
    from tfrec.export.ranking import export_ranking, export_recommender  # noqa: PLC0415
    from tfrec.training.pipeline import RankingExperimentConfig  # noqa: PLC0415
    from tfrec.training.ranking import load_ranker  # noqa: PLC0415
    from tfrec.training.retrieval import RetrievalExperiment  # noqa: PLC0415

    model_dir = Path(args.model_dir)
    config = RankingExperimentConfig.load(model_dir / "config.json")
    kind = args.kind
    if kind == "auto":
        kind = "recommender" if config.kind == "pipeline" else "ranking"
    if kind in ("retrieval", "recommender") and config.kind != "pipeline":
        raise ValueError(f"--kind {kind}: {model_dir} holds a ranker only (not a pipeline run)")
    if kind == "retrieval":
        experiment = RetrievalExperiment.from_dir(model_dir / "retrieval", data_dir=args.data_dir)
        print(experiment.export(args.export_dir, version=args.version))
        return 0
    trained = load_ranker(model_dir / "ranking")
    if kind == "ranking":
        name = args.model_name or config.ranking_model_name
        print(export_ranking(trained, args.export_dir, model_name=name, version=args.version))
        return 0
    experiment = RetrievalExperiment.from_dir(model_dir / "retrieval", data_dir=args.data_dir)
    path = export_recommender(
        experiment.model,
        experiment.user_vocab,
        experiment.item_vocab,
        trained,
        args.export_dir,
        model_name=args.model_name or config.recommender_model_name,
        version=args.version,
    )
    print(path)
    return 0
