"""``RankingExperimentConfig``: a ranking or two-stage (pipeline) run, and its presets.

Saved as the run's ``config.json``: ``"kind": "ranking"`` (the LSTM ranker alone)
or ``"pipeline"`` (retrieval + ranker). The data split and the retrieval stage
come from the retrieval presets (:data:`tfrec.training.retrieval_config.PRESETS`),
the ranker from :data:`RANKING_PRESETS` (typed :class:`RankingConfig` instances).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.evaluation.config import EvalConfig
from tfrec.models.ranking import RankingConfig
from tfrec.models.retrieval import RetrievalConfig
from tfrec.names import DatasetName, RankingKind
from tfrec.tasks.config import RankingLossConfig
from tfrec.training.retrieval_config import RetrievalExperimentConfig


@dataclasses.dataclass
class RankingExperimentConfig(JsonConfig):
    """A ranking or two-stage experiment (saved as ``config.json``).

    Attributes:
        data: Dataset and split.
        ranking: LSTM ranker hyper-parameters.
        retrieval: Two-tower hyper-parameters (``pipeline`` only).
        evaluation: Full-ranking protocol of the two-stage comparison (``mask``:
            its masked and/or unmasked reports; the first one picks the fusion weight).
        kind: ``ranking`` (the ranker alone) or ``pipeline`` (retrieval + ranker).
        retrieval_model_name: Export name of the retrieval model.
        ranking_model_name: Export name of the ranker.
        recommender_model_name: Export name of the combined recommender.
        fusion_weights: ``pipeline`` only: candidate score-fusion weights (final
            score = ranker + w * retrieval score); the one with the best validation
            ``fusion_metric`` is picked (never on test) and written into the ranker
            config of the ``ranking/`` sub-run and the combined export. Empty = keep
            ``ranking.retrieval_weight``, as also happens without a validation part.
        fusion_metric: Full-ranking metric the fusion weight is picked by.
        fusion_queries: Validation queries used to pick it (seeded subset; 0 = all).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    ranking: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)
    evaluation: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    kind: RankingKind = "ranking"
    retrieval_model_name: str = "retrieval"
    ranking_model_name: str = "ranking"
    recommender_model_name: str = "recommender"
    fusion_weights: list[float] = dataclasses.field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0]
    )
    fusion_metric: str = "ndcg@10"
    fusion_queries: int = 0

    def __post_init__(self) -> None:
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
    def for_dataset(
        cls, dataset: str, kind: str = "ranking", **data_kwargs: Any
    ) -> RankingExperimentConfig:
        """The documented defaults for ``dataset`` and ``kind``.

        The data split and retrieval settings are the retrieval presets
        (:data:`tfrec.training.retrieval_config.PRESETS`); the ranker's come from
        :data:`RANKING_PRESETS`, else :data:`DEFAULT_RANKERS` of ``kind``.

        Raises:
            ValueError: An unknown dataset or kind.
        """
        base = RetrievalExperimentConfig.for_dataset(dataset, **data_kwargs)
        if kind not in DEFAULT_RANKERS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(DEFAULT_RANKERS)}")
        ranking = RANKING_PRESETS.get((dataset, kind), DEFAULT_RANKERS[kind])  # type: ignore[index]
        return cls(
            data=base.data,
            ranking=copy.deepcopy(ranking),
            retrieval=base.model,
            evaluation=base.evaluation,
            kind=kind,  # type: ignore[arg-type]
        )


def _rerank(**loss: Any) -> RankingLossConfig:
    """Lists of retrieval's hard candidates, kept where retrieval found the true item.

    These are the lists stage 2 really re-ranks.
    """
    return RankingLossConfig(negative_sampling="hard", retrieved_only=True, **loss)


#: The ranker of a dataset without its own preset, per kind: the class defaults
#: (rating regression) for ``ranking``; next-item lists of :func:`_rerank` for ``pipeline``.
DEFAULT_RANKERS: dict[RankingKind, RankingConfig] = {
    "ranking": RankingConfig(),
    "pipeline": RankingConfig(objective="next_item", loss=_rerank()),
}

#: Ranker defaults per dataset and kind (fields not given keep RankingConfig's defaults).
RANKING_PRESETS: dict[tuple[DatasetName, RankingKind], RankingConfig] = {
    ("ml-100k", "ranking"): RankingConfig(objective="rating", max_history=50),
    ("ml-latest-small", "ranking"): RankingConfig(objective="rating", max_history=50),
    # Two-stage ranker (measured on Beauty, benchmarks/two_stage.py): each training list
    # is the true item + the rest of the retrieval top-100. No per-user embedding
    # (leave-one-out users have a handful of events each).
    ("beauty", "pipeline"): RankingConfig(
        objective="next_item",
        loss=_rerank(num_negatives=99, kind="softmax"),
        use_user=False,
        max_history=50,
    ),
    # the synthetic catalogue is small (80 items by default): smaller pools and lists
    ("synthetic", "ranking"): RankingConfig(objective="rating", eval_negatives=30),
    ("synthetic", "pipeline"): RankingConfig(
        objective="next_item",
        loss=_rerank(hard_pool_size=30, num_negatives=10),
        num_candidates=30,
        eval_negatives=30,
    ),
    ("ml-100k", "pipeline"): RankingConfig(
        objective="next_item", loss=_rerank(num_negatives=99, kind="softmax"), max_history=50
    ),
}
