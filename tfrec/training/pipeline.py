"""Ranking and two-stage (retrieve -> rank) experiments end to end.

Used by ``tfrec train --model ranking`` and ``tfrec train --model pipeline``::

    config = RankingExperimentConfig.for_dataset("beauty", kind="pipeline")
    metrics = run_ranking_experiment(config, "runs/beauty-pipeline")

``kind="ranking"`` trains the LSTM ranker alone (rating regression on rated data,
next-item list ranking otherwise) and exports ``ranking``. ``kind="pipeline"``
trains the retrieval model and the ranker on the SAME split and vocabularies,
reports retrieval-only vs two-stage with the same full-ranking protocol
(``test_retrieval/...`` vs ``test_two_stage/...``), and exports ``retrieval``,
``ranking`` and the combined ``recommender``.

Output directory: ``config.json``, ``metrics.json``, ``ranking/`` (the saved
ranker), ``retrieval/`` (pipeline: the retrieval experiment), ``export/<name>/<version>/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

from tfrec.config import JsonConfig, atomic_write_text
from tfrec.data.config import DataConfig
from tfrec.models.ranking import RankingConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training.experiment import EvalConfig
from tfrec.training.retrieval import PRESETS, RetrievalExperiment, RetrievalExperimentConfig

logger = logging.getLogger(__name__)

#: Ranker defaults per dataset and kind (on top of RankingConfig's defaults).
RANKING_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("ml-100k", "ranking"): {"objective": "rating", "max_history": 50},
    ("ml-latest-small", "ranking"): {"objective": "rating", "max_history": 50},
    # Two-stage ranker (measured on Beauty, benchmarks/two_stage.py): each training list
    # is the true item + the rest of the retrieval top-100, kept only where retrieval
    # found the true item (retrieved_only): the very lists stage 2 re-ranks. No per-user
    # embedding (leave-one-out users have a handful of events each).
    ("beauty", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "num_negatives": 99,
        "use_user": False,
        "loss": "softmax",
        "max_history": 50,
    },
    # the synthetic catalogue is small (80 items by default): smaller pools and lists
    ("synthetic", "ranking"): {"objective": "rating", "eval_negatives": 30},
    ("synthetic", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "hard_pool_size": 30,
        "num_candidates": 30,
        "num_negatives": 10,
        "eval_negatives": 30,
    },
    ("ml-100k", "pipeline"): {
        "objective": "next_item",
        "negative_sampling": "hard",
        "retrieved_only": True,
        "num_negatives": 99,
        "loss": "softmax",
        "max_history": 50,
    },
}


@dataclasses.dataclass
class RankingExperimentConfig(JsonConfig):
    """A ranking or two-stage experiment (saved as ``config.json``).

    Attributes:
        data: Dataset and split.
        ranking: LSTM ranker hyper-parameters.
        retrieval: Two-tower hyper-parameters (``pipeline`` only).
        evaluation: Full-ranking protocol of the two-stage comparison.
        kind: ``ranking`` (the ranker alone) or ``pipeline`` (retrieval + ranker).
        retrieval_model_name: Export name of the retrieval model.
        ranking_model_name: Export name of the ranker.
        recommender_model_name: Export name of the combined recommender.
        fusion_weights: ``pipeline`` only: candidate score-fusion weights (final
            score = ranker + w * retrieval score); the one with the best validation
            ``fusion_metric`` is picked (never on test) and written into the saved
            ranker config and the combined export. Empty = keep
            ``ranking.retrieval_weight``, as also happens without a validation part.
        fusion_metric: Full-ranking metric the fusion weight is picked by.
        fusion_queries: Validation queries used to pick it (seeded subset; 0 = all).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    kind: Literal["ranking", "pipeline"] = "ranking"
    retrieval_model_name: str = "retrieval"
    ranking_model_name: str = "ranking"
    recommender_model_name: str = "recommender"
    fusion_weights: list[float] = dataclasses.field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0]
    )
    fusion_metric: str = "ndcg@10"
    fusion_queries: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("ranking", "pipeline"):
            raise ValueError(
                f"RankingExperimentConfig.kind={self.kind!r}; expected 'ranking' or 'pipeline'"
            )
        bad = [w for w in self.fusion_weights if isinstance(w, bool) or not float(w) >= 0.0]
        if bad:
            raise ValueError(
                f"RankingExperimentConfig.fusion_weights: expected numbers >= 0, got {bad!r}"
            )
        if "@" not in self.fusion_metric:
            raise ValueError(
                f"RankingExperimentConfig.fusion_metric={self.fusion_metric!r}; expected a "
                "cutoff metric such as 'ndcg@10' or 'hr@20'"
            )
        if self.fusion_queries < 0:
            raise ValueError(
                f"RankingExperimentConfig.fusion_queries={self.fusion_queries}; expected >= 0"
            )

    @classmethod
    def for_dataset(cls, dataset: str, kind: str = "ranking", **data_kwargs: Any):
        """The documented defaults for ``dataset`` and ``kind``.

        The data split and retrieval settings are the retrieval presets
        (:data:`tfrec.training.retrieval.PRESETS`); the ranker's come from
        :data:`RANKING_PRESETS` (rating regression when the data has ratings).
        """
        base = RetrievalExperimentConfig.for_dataset(dataset, **data_kwargs)
        overrides = RANKING_PRESETS.get((dataset, kind), {})
        if not overrides and kind == "pipeline":
            overrides = {
                "objective": "next_item",
                "negative_sampling": "hard",
                "retrieved_only": True,
            }
        if not overrides and dataset not in PRESETS:
            raise ValueError(f"unknown dataset {dataset!r}")
        return cls(
            data=base.data,
            ranking=RankingConfig(**overrides),
            retrieval=base.model,
            evaluation=base.evaluation,
            kind=kind,
        )


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": float(value) for key, value in metrics.items()}


def _tune_fusion(
    config: RankingExperimentConfig, trained: Any, scorer: Any, split: Any
) -> dict[str, float]:
    """Picks the fusion weight on validation and sets it in ``trained.config``.

    Returns:
        ``valid/fusion_weight`` and the validation metric of every weight tried
        (nothing when there are no weights or no validation part).
    """
    from tfrec.training.two_stage import tune_retrieval_weight  # noqa: PLC0415

    if not config.fusion_weights or split.valid is None or not len(split.valid):
        return {}
    best, table = tune_retrieval_weight(
        trained, scorer, split, weights=config.fusion_weights,
        metric=config.fusion_metric, max_queries=config.fusion_queries or None,
    )  # fmt: skip
    logger.info(
        "fusion weight %s (validation %s: %s)",
        best,
        config.fusion_metric,
        ", ".join(f"w={w:g}: {v:.4f}" for w, v in table.items()),
    )
    trained.config = dataclasses.replace(trained.config, retrieval_weight=best)
    metrics = {"valid/fusion_weight": best}
    for weight, value in table.items():
        metrics[f"valid_fusion/w={weight:g}/{config.fusion_metric}"] = float(value)
    return metrics


def run_ranking_experiment(
    config: RankingExperimentConfig, output_dir: str | Path, export: bool = True
) -> dict[str, float]:
    """Trains, evaluates, saves and exports a ranking or two-stage experiment.

    Args:
        config: The experiment.
        output_dir: Where everything is written.
        export: Whether to write the SavedModels under ``output_dir/export``.

    Returns:
        The flat metrics also written to ``metrics.json``: ranking runs give
        ``test/rmse``, ``test/mae`` (rating) or ``test/auc``, ``test/ndcg@K`` of the
        candidate lists (next item); pipeline runs give the ranker's as
        ``test_ranker/...``, the full-ranking comparison as ``test_retrieval/...``
        and ``test_two_stage/...`` (with the fusion weight picked on validation,
        ``valid/fusion_weight``; see ``RankingExperimentConfig.fusion_weights``).
    """
    from tfrec.export.ranking import export_ranking, export_recommender  # noqa: PLC0415
    from tfrec.models.two_stage import RetrievalScorer  # noqa: PLC0415
    from tfrec.training.ranking import (  # noqa: PLC0415
        build_vocabularies,
        evaluate_ranker,
        save_ranker,
        train_ranker,
    )
    from tfrec.training.two_stage import evaluate_two_stage  # noqa: PLC0415

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "config.json")
    data = config.data.load()
    split = config.data.make_split(data)
    metrics: dict[str, float] = {}
    experiment = scorer = None
    if config.kind == "pipeline":
        logger.info("stage 1/2: retrieval model")
        retrieval_config = RetrievalExperimentConfig(
            data=config.data,
            model=config.retrieval,
            evaluation=config.evaluation,
            model_name=config.retrieval_model_name,
        )
        experiment = RetrievalExperiment(
            retrieval_config, output_dir=out / "retrieval", data=data, split=split
        )
        experiment.fit()
        experiment.evaluate()  # full metrics in retrieval/metrics.json
        experiment.save(out / "retrieval")
        metrics["retrieval/train_seconds"] = round(experiment.train_seconds, 2)
        scorer = RetrievalScorer(experiment.model)
        user_vocab, item_vocab = experiment.user_vocab, experiment.item_vocab
    else:
        user_vocab, item_vocab = build_vocabularies(split)
    logger.info("stage %s: LSTM ranker (%s)", "2/2" if scorer else "1/1", config.ranking.objective)
    started = time.perf_counter()
    trained = train_ranker(
        split,
        config.ranking,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
        retrieval=scorer,
        model_dir=out / "ranking",
    )
    metrics["ranking/train_seconds"] = round(time.perf_counter() - started, 2)
    if scorer is not None:
        metrics.update(_tune_fusion(config, trained, scorer, split))
    save_ranker(trained, out / "ranking")
    # The ranker's own metrics (RMSE/MAE, or AUC/NDCG of its candidate lists) are
    # "test/..." for a ranking run; in a pipeline "test/..." would read as full-ranking
    # metrics, so they are "test_ranker/..." there.
    prefix = "test_ranker" if scorer is not None else "test"
    metrics.update(_prefixed(prefix, evaluate_ranker(trained, split)))
    if scorer is not None:
        both = evaluate_two_stage(trained, scorer, split, ks=config.evaluation.ks)
        metrics.update(_prefixed("test_retrieval", both["retrieval"]))
        metrics.update(_prefixed("test_two_stage", both["two_stage"]))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if export:
        extra = {"metrics.json": json.dumps(metrics, indent=2, sort_keys=True)}
        path = export_ranking(
            trained, out / "export", model_name=config.ranking_model_name, extra_files=extra
        )
        logger.info("exported the ranker to %s", path)
        if experiment is not None:
            experiment.export(out / "export")
            if data.items is not None:
                titles = dict(zip(data.items["item_id"], data.items["title"], strict=True))
                extra["item_titles.json"] = json.dumps(titles, ensure_ascii=False)
            path = export_recommender(
                experiment.model,
                experiment.user_vocab,
                experiment.item_vocab,
                trained,
                out / "export",
                model_name=config.recommender_model_name,
                extra_files=extra,
            )
            logger.info("exported the combined recommender to %s", path)
    return metrics
