"""Every closed choice list of tfrec, defined once as a ``Literal`` alias.

Configs type their fields with these aliases; :class:`tfrec.config.JsonConfig`
checks every ``Literal`` field on construction and on load, and the CLI's
argparse ``choices=`` come from :func:`tfrec.config.choices` of the same alias.
This module imports nothing heavy (``tfrec --help`` reads it without TensorFlow).
"""

from __future__ import annotations

from typing import Literal

#: Registered datasets (:data:`tfrec.data.loaders.DATASETS` maps each to its loader).
DatasetName = Literal[
    "ml-100k",
    "ml-latest-small",
    "beauty",
    "beauty-bert4rec",
    "sports",
    "lastfm",
    "csv",
    "s3rec",
    "synthetic",
]
#: Split protocols of :class:`tfrec.data.config.DataConfig`.
SplitName = Literal["leave_one_out", "temporal", "random", "item_stratified"]
#: Which epoch's weights each scenario of a multi-scenario run keeps:
#: ``scenario`` its own best validation epoch, ``mean`` the best epoch of the mean
#: over scenarios (one model state for all).
ScenarioSelection = Literal["scenario", "mean"]
#: Split protocols the streaming (sharded TFRecord) preparation supports.
StreamingSplitName = Literal["leave_one_out", "temporal"]
#: Parts of a split that are evaluated.
EvalPart = Literal["test", "valid"]
#: How each user's history (the items before the held-out part) is treated in
#: evaluation (:class:`tfrec.evaluation.config.EvalConfig`). ``history``: removed from
#: the ranking, as the exported model does; a held-out item that repeats a history item
#: is a miss (keys ``<part>/...``). ``none``: every item stays rankable, for
#: repeat-consumption domains (keys ``<part>_unmasked/...``). ``both``: the two reports.
EvalMask = Literal["history", "none", "both"]
#: Negatives of the sampled evaluation protocol.
SampledStrategy = Literal["uniform", "popularity"]
#: History encoders of the retrieval query tower (``none`` = ID-only two-tower).
HistoryEncoder = Literal["mean", "gru", "lstm", "transformer", "caser", "bert4rec", "none"]
#: Losses of :class:`tfrec.tasks.retrieval.RetrievalTask`.
RetrievalLoss = Literal["full", "sampled"]
#: Losses of the LightGCN kind (:class:`tfrec.models.lightgcn.LightGCNConfig`): BPR with
#: one uniform negative per positive, or the full-catalogue softmax.
GraphLoss = Literal["bpr", "softmax"]
#: Training targets of the retrieval model: every history position or the last one.
TrainingPositions = Literal["all", "last"]
#: Ranker objectives.
RankingObjective = Literal["rating", "next_item"]
#: Losses of :class:`tfrec.tasks.ranking.RankingTask` (next-item objective).
RankingLoss = Literal["bce", "softmax"]
#: Negative sampling of the ranker's training lists.
NegativeSampling = Literal["uniform", "popularity", "hard"]
#: History/candidate interaction of the ranker.
RankerInteraction = Literal["concat", "attention"]
#: Optimizers of :func:`tfrec.training.optimizers.make_optimizer`.
OptimizerName = Literal["adam", "adamw", "adagrad", "sgd"]
#: Distribution strategy of a training run (:func:`tfrec.training.strategy.get_strategy`).
StrategyName = Literal["auto", "default", "mirrored", "multi_worker", "parameter_server"]
#: Built-in experiment kinds (:mod:`tfrec.training.experiment`).
ExperimentKind = Literal[
    "retrieval", "ranking", "pipeline", "multi_scenario", "mf", "lightgcn", "ease"
]
#: Matrix factorisation models (:class:`tfrec.models.mf.MFConfig`): biased (Surprise SVD-like)
#: or PMF-style (factors only).
MFVariant = Literal["biased", "pmf"]
#: Kinds of :class:`tfrec.training.ranking_config.RankingExperimentConfig`.
RankingKind = Literal["ranking", "pipeline"]
#: ``kind`` of ``assets.extra/tfrec_config.json`` (:mod:`tfrec.export.schema`).
ExportKind = Literal["retrieval", "ranking", "recommender"]
#: Serving backends of ``tfrec serve``/``tfrec demo``: TF Serving's binary or tfrec's server.
ServingBackend = Literal["local", "tfserving"]
#: Candidate index of a retrieval export: exact brute force or IVF (:mod:`tfrec.export.ivf`).
IndexKind = Literal["brute", "ivf"]
#: Apache Beam runners of ``tfrec prepare --runner`` (:mod:`tfrec.data.beam_prepare`).
Runner = Literal["DirectRunner", "FlinkRunner", "SparkRunner", "DataflowRunner"]
