"""Tasks: losses and metrics of the models (TFRS ``Task`` layers)."""

from tfrec.tasks.ranking import RankingTask
from tfrec.tasks.retrieval import RetrievalTask

__all__ = ["RankingTask", "RetrievalTask"]
