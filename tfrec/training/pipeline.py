"""Two-stage (retrieve -> rank) experiments end to end: the ``"pipeline"`` kind.

Used by ``tfrec train --model pipeline``::

    config = RankingExperimentConfig.for_dataset("beauty", kind="pipeline")
    experiment = PipelineExperiment(config, output_dir="runs/beauty-pipeline")
    experiment.fit()        # retrieval, then the ranker on retrieval's lists, then fusion
    experiment.evaluate()   # test_ranker/..., test_retrieval/..., test_two_stage/...
    experiment.save()
    experiment.export("exports")   # ranking, retrieval and the combined recommender

The retrieval model and the ranker are trained on the SAME split and
vocabularies; the ranker learns on the lists it will re-rank (hard negatives
from the trained retrieval model). The score-fusion weight is picked on the
validation part (``fusion_weights``), never on test. Retrieval-only and
two-stage are reported with the same full-ranking protocol, once per
``evaluation.mask`` protocol (``test_two_stage/...``, ``test_two_stage_unmasked/...``).

Run directory: ``config.json`` (kind ``pipeline``), ``metrics.json``,
``retrieval/`` (a complete retrieval run), ``ranking/`` (a complete ranking run,
its ``config.json`` carrying the picked fusion weight), ``export/``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow resolves tf.keras)
from tfrec.data.interactions import Interactions
from tfrec.data.splits import Split
from tfrec.evaluation.config import MASK_SUFFIX, prefixed
from tfrec.evaluation.two_stage import evaluate_two_stage, tune_retrieval_weight
from tfrec.models.two_stage import RetrievalScorer
from tfrec.training.experiment import (
    ExperimentBase,
    ExportRequest,
    RunLayout,
    export_extra_files,
    read_json,
    read_run_config,
    register_experiment,
    write_json,
)
from tfrec.training.ranking import RankingExperiment
from tfrec.training.ranking_config import RankingExperimentConfig
from tfrec.training.retrieval import RetrievalExperiment
from tfrec.training.retrieval_config import RetrievalExperimentConfig

logger = logging.getLogger(__name__)

#: The two sub-runs of a pipeline run directory.
RETRIEVAL_DIR = "retrieval"
RANKING_DIR = "ranking"


@register_experiment("pipeline")
class PipelineExperiment(ExperimentBase):
    """A retrieval experiment and a ranker on its lists, evaluated and exported together.

    Args:
        config: The experiment (``kind="pipeline"``).
        output_dir: The run directory (sub-runs in ``retrieval/`` and ``ranking/``).
        data: Already-loaded interactions (default ``config.data.load()``).
        split: A precomputed split of ``data``.
        retrieval: An existing stage 1 (what :meth:`from_dir` passes).
        ranking: An existing stage 2 (what :meth:`from_dir` passes); otherwise the
            ranker is built in :meth:`fit`, once the retrieval model is trained.

    Raises:
        ValueError: ``config.kind`` is not ``pipeline``.
    """

    kind: ClassVar[str] = "pipeline"
    exports: ClassVar[tuple[str, ...]] = ("ranking", "retrieval", "recommender")
    config_class: ClassVar[type[RankingExperimentConfig]] = RankingExperimentConfig

    def __init__(
        self,
        config: RankingExperimentConfig,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        data: Interactions | None = None,
        split: Split | None = None,
        retrieval: RetrievalExperiment | None = None,
        ranking: RankingExperiment | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ValueError(
                f"PipelineExperiment: config.kind={config.kind!r}; expected 'pipeline'"
            )
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.metrics: dict[str, float] = {}
        if retrieval is None:
            retrieval = RetrievalExperiment(
                self._retrieval_config(), self._sub_dir(RETRIEVAL_DIR), data=data, split=split
            )
        self.retrieval = retrieval
        self.ranking = ranking
        self._scorer: RetrievalScorer | None = None

    def _sub_dir(self, name: str) -> Path | None:
        return self.output_dir / name if self.output_dir is not None else None

    def _retrieval_config(self) -> RetrievalExperimentConfig:
        config = self.config
        return RetrievalExperimentConfig(
            data=config.data,
            model=config.retrieval,
            evaluation=config.evaluation,
            model_name=config.retrieval_model_name,
        )

    def _ranking_config(self) -> RankingExperimentConfig:
        return dataclasses.replace(self.config, kind="ranking")

    @property
    def scorer(self) -> RetrievalScorer:
        """Stage 1 as a scorer of the whole catalogue (built after training)."""
        if self._scorer is None:
            self._scorer = RetrievalScorer(self.retrieval.model)
        return self._scorer

    @classmethod
    def default_config(cls, dataset: str, **data_kwargs: Any) -> RankingExperimentConfig:
        """The preset of ``dataset`` (:meth:`RankingExperimentConfig.for_dataset`)."""
        return RankingExperimentConfig.for_dataset(dataset, kind=cls.kind, **data_kwargs)

    # ------------------------------------------------------------------ training
    def fit(
        self, epochs: int | None = None, *, resume: bool = False, verbose: int | str = 0
    ) -> dict[str, list[float]]:
        """Trains stage 1, then the ranker on its lists, then picks the fusion weight.

        Args:
            epochs: Overrides the epochs of both stages.
            resume: Continue an interrupted run: a retrieval stage that finished
                (``retrieval/history.json`` saved) is reloaded, not retrained; an
                interrupted stage continues from its ``checkpoints/last``.
            verbose: Keras verbosity.

        Returns:
            Both stages' per-epoch logs, keys prefixed ``retrieval/`` and ``ranking/``.
        """
        layout = self._save_config()
        logger.info("stage 1/2: retrieval model")
        self._fit_retrieval(epochs, resume=resume, verbose=verbose)
        self.metrics["retrieval/train_seconds"] = round(self.retrieval.train_seconds, 2)
        logger.info("stage 2/2: LSTM ranker (%s)", self.config.ranking.objective)
        self._scorer = None  # a snapshot of the trained model's item vectors
        self.ranking = RankingExperiment(
            self._ranking_config(), self._sub_dir(RANKING_DIR),
            data=self.retrieval.data, split=self.retrieval.split,
            user_vocab=self.retrieval.user_vocab, item_vocab=self.retrieval.item_vocab,
            retrieval=self.scorer,
        )  # fmt: skip
        ranker_resume = resume and layout is not None
        if ranker_resume and not layout.sub_run(RANKING_DIR).checkpoint_state.is_file():
            ranker_resume = False  # interrupted before the ranker's first epoch
        self.ranking.fit(epochs, resume=ranker_resume, verbose=verbose)
        self.metrics["ranking/train_seconds"] = round(self.ranking.train_seconds, 2)
        for name, stage in (("retrieval", self.retrieval), ("ranking", self.ranking)):
            # DP-SGD reports of the stages (each stage's own budget; they add up)
            self.metrics.update(
                {f"{name}/{k}": v for k, v in stage.metrics.items() if k.startswith("privacy/")}
            )
        self.metrics.update(self._tune_fusion())
        return {
            **{f"retrieval/{k}": v for k, v in self.retrieval.history.items()},
            **{f"ranking/{k}": v for k, v in self.ranking.history.items()},
        }

    def _fit_retrieval(self, epochs: int | None, *, resume: bool, verbose: int | str) -> None:
        """Trains (or, resuming a run whose stage 1 finished, reloads) the retrieval model."""
        sub = RunLayout(self.output_dir).sub_run(RETRIEVAL_DIR) if self.output_dir else None
        if resume and sub is not None and sub.history.is_file():
            logger.info("resuming: stage 1 had finished; loading %s", sub.weights)
            self.retrieval.model.load_weights(str(sub.weights)).expect_partial()
            self.retrieval.history = read_json(sub.history, {})
            self.retrieval.train_seconds = float(
                read_json(sub.metrics, {}).get("train_seconds", 0.0)
            )
            return
        retrieval_resume = resume and sub is not None and sub.checkpoint_state.is_file()
        self.retrieval.fit(epochs, resume=retrieval_resume, verbose=verbose)
        self.retrieval.metrics["train_seconds"] = round(self.retrieval.train_seconds, 2)
        if sub is not None:
            self.retrieval.save(sub.root)  # stage 1 is complete (history.json marks it)

    def _tune_fusion(self) -> dict[str, float]:
        """Picks the fusion weight on validation and sets it in the ranker's config.

        Every ``evaluation.mask`` protocol reports its table
        (``valid_fusion/w=<w>/<metric>``, ``valid_fusion_unmasked/...``); the first
        one picks the weight (``valid/fusion_weight``). Nothing without weights
        or a validation part.
        """
        config, split = self.config, self.retrieval.split
        if not config.fusion_weights or split.valid is None or not len(split.valid):
            return {}
        trained = self.ranking.trained
        metrics: dict[str, float] = {}
        for masked in config.evaluation.masked_protocols:
            best, table = tune_retrieval_weight(
                trained, self.scorer, split, weights=config.fusion_weights,
                metric=config.fusion_metric, max_queries=config.fusion_queries or None,
                mask_history=masked,
            )  # fmt: skip
            suffix = MASK_SUFFIX[masked]
            logger.info(
                "fusion weight%s %s (validation %s: %s)",
                f" ({suffix[1:]})" if suffix else "",
                best,
                config.fusion_metric,
                ", ".join(f"w={w:g}: {v:.4f}" for w, v in table.items()),
            )
            if "valid/fusion_weight" not in metrics:  # the primary protocol decides
                metrics["valid/fusion_weight"] = best
            for weight, value in table.items():
                metrics[f"valid_fusion{suffix}/w={weight:g}/{config.fusion_metric}"] = float(value)
        chosen = metrics["valid/fusion_weight"]
        trained.config = dataclasses.replace(trained.config, retrieval_weight=chosen)
        return metrics

    # ------------------------------------------------------------------ evaluation
    def _stage2(self) -> RankingExperiment:
        if self.ranking is None:
            raise ValueError("the pipeline has no ranker yet: call fit() (or from_dir) first")
        return self.ranking

    def evaluate(self, parts: Sequence[str] | None = None) -> dict[str, float]:
        """Ranker, retrieval-only and two-stage metrics of ``parts`` (default: test).

        Keys: ``<part>_ranker/...`` (the ranker's own lists), ``<part>_retrieval/...``
        and ``<part>_two_stage/...`` (full ranking, same queries) per
        ``evaluation.mask`` protocol (``_unmasked`` suffix for the unmasked one).
        The stages' own reports (both parts) are kept in their sub-runs.
        """
        ranking = self._stage2()
        sub_parts = None if parts is None else tuple(parts)  # None: the stages' full reports
        parts = ("test",) if parts is None else tuple(parts)
        evaluation = self.config.evaluation
        self.retrieval.config.evaluation = evaluation  # one protocol for the whole run
        self.retrieval.evaluate(sub_parts)
        own = ranking.evaluate(sub_parts)
        metrics: dict[str, float] = {}
        for part in parts:
            ranker = {k.split("/", 1)[1]: v for k, v in own.items() if k.startswith(f"{part}/")}
            metrics.update(prefixed(f"{part}_ranker", ranker))
            for masked in evaluation.masked_protocols:
                both = evaluate_two_stage(
                    ranking.trained, self.scorer, self.retrieval.split, part=part,
                    ks=evaluation.ks, mask_history=masked,
                )  # fmt: skip
                suffix = MASK_SUFFIX[masked]
                metrics.update(prefixed(f"{part}_retrieval{suffix}", both["retrieval"]))
                metrics.update(prefixed(f"{part}_two_stage{suffix}", both["two_stage"]))
        self.metrics.update(metrics)
        return metrics

    # ------------------------------------------------------------------ io
    def save(self, output_dir: str | os.PathLike[str] | None = None) -> Path:
        """Writes ``config.json``, ``metrics.json`` and both complete sub-runs."""
        layout = self._save_layout(output_dir)
        self.config.save(layout.config)
        write_json(layout.metrics, self.metrics)
        self.retrieval.save(layout.sub_run(RETRIEVAL_DIR).root)
        self._stage2().save(layout.sub_run(RANKING_DIR).root)
        return layout.root

    def _export(self, request: ExportRequest) -> list[Path]:
        """Writes the ranking, retrieval and combined recommender SavedModels (or ``models``)."""
        from tfrec.export.ranking import export_recommender  # noqa: PLC0415

        paths: list[Path] = []
        base_dir, version, model_name = request.base_dir, request.version, request.model_name
        if "ranking" in request.models:
            paths += self._stage2().export(base_dir, version, model_name=model_name)
        if "retrieval" in request.models:
            paths += self.retrieval.export(
                base_dir, version, model_name=model_name, **request.index_options()
            )
        if "recommender" in request.models:
            extra = export_extra_files(self.metrics, self.retrieval.data.items)
            path = export_recommender(
                self.retrieval.model, self.retrieval.user_vocab, self.retrieval.item_vocab,
                self._stage2().trained, base_dir, version=version, extra_files=extra,
                experiment_config=self.config.to_dict(),
                model_name=model_name or self.config.recommender_model_name,
                explain_top=request.explain_top,
            )  # fmt: skip
            logger.info("exported the combined recommender to %s", path)
            paths.append(path)
        return paths

    @classmethod
    def from_dir(
        cls, run_dir: str | os.PathLike[str], data_dir: str | None = None
    ) -> PipelineExperiment:
        """Reopens a pipeline run: its config, metrics and both sub-runs.

        Raises:
            FileNotFoundError: ``config.json`` or a file of a sub-run is missing.
        """
        layout, config = read_run_config(run_dir, RankingExperimentConfig, data_dir)
        retrieval = RetrievalExperiment.from_dir(layout.sub_run(RETRIEVAL_DIR).root, data_dir)
        ranking = RankingExperiment.from_dir(layout.sub_run(RANKING_DIR).root, data_dir)
        ranking.split = retrieval.split  # the same data, loaded once
        experiment = cls(config, layout.root, retrieval=retrieval, ranking=ranking)
        experiment.metrics = read_json(layout.metrics, {})
        return experiment
