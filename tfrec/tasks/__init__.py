"""Tasks: losses and metrics of the models (TFRS ``Task`` layers)."""

from tfrec.tasks.retrieval import LOSSES, RetrievalTask

__all__ = ["LOSSES", "RetrievalTask"]
