"""Offline evaluation: ranking metrics (full catalogue and sampled), rating metrics, loops.

The numpy metric modules do not import TensorFlow. Import from here::

    from tfrec.evaluation import RankingMetrics, evaluate_full_ranking

Model evaluations (TensorFlow) are imported from their modules:
:mod:`~tfrec.evaluation.retrieval` (two-tower, full ranking), :mod:`~tfrec.evaluation.ranker`
(the ranker's own lists), :mod:`~tfrec.evaluation.two_stage` (retrieval vs two-stage,
fusion weight); :mod:`~tfrec.evaluation.config` holds ``EvalConfig``.
"""

from tfrec.evaluation.metrics import (
    DEFAULT_INVALID_ITEMS,
    DEFAULT_KS,
    RankingMetrics,
    metric_keys,
    ranking_metrics,
    top_k_items,
)
from tfrec.evaluation.protocol import evaluate_full_ranking, evaluate_sampled
from tfrec.evaluation.rating import auc, list_ndcg, mae, mean_list_auc, rmse
from tfrec.evaluation.sampled import (
    SampledRankingMetrics,
    sample_eval_negatives,
    sampled_ranking_metrics,
)

__all__ = [
    "DEFAULT_INVALID_ITEMS",
    "DEFAULT_KS",
    "RankingMetrics",
    "SampledRankingMetrics",
    "auc",
    "evaluate_full_ranking",
    "evaluate_sampled",
    "list_ndcg",
    "mae",
    "mean_list_auc",
    "metric_keys",
    "ranking_metrics",
    "rmse",
    "sample_eval_negatives",
    "sampled_ranking_metrics",
    "top_k_items",
]
