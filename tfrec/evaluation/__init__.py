"""Offline evaluation: ranking metrics (full catalogue and sampled), rating metrics, loops.

The numpy metric modules do not import TensorFlow. Import from here::

    from tfrec.evaluation import RankingMetrics, evaluate_full_ranking
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
    sample_negatives,
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
    "sample_negatives",
    "sampled_ranking_metrics",
    "top_k_items",
]
