"""The typed loss sub-configs of the two model kinds (the ``loss`` field of each model config).

A Task owns the loss (:class:`~tfrec.tasks.retrieval.RetrievalTask`,
:class:`~tfrec.tasks.ranking.RankingTask`); these configs say which loss and
what its candidates are::

    RetrievalConfig(encoder="transformer", loss=RetrievalLossConfig(kind="sampled"))
    RankingConfig(objective="next_item", loss=RankingLossConfig(negative_sampling="hard"))

Configs saved before the sub-configs had these fields flat on the model config
(``"loss": "sampled", "temperature": 1.0``); :data:`RETRIEVAL_FLAT_FIELDS` and
:data:`RANKING_FLAT_FIELDS` say where each went
(:func:`tfrec.training.config.nest_flat_fields`).
"""

from __future__ import annotations

import dataclasses

from tfrec.config import JsonConfig
from tfrec.names import NegativeSampling, RankingLoss, RetrievalLoss


def _check_counts(owner: str, config: object, names: tuple[str, ...], minimum: int) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{owner}.{name}={value!r}; expected an integer >= {minimum}")


@dataclasses.dataclass
class RetrievalLossConfig(JsonConfig):
    """The two-tower model's softmax loss (:class:`~tfrec.tasks.retrieval.RetrievalTask`).

    Attributes:
        kind: ``"full"`` (softmax over the whole catalogue) or ``"sampled"``
            (in-batch softmax; scales to large catalogues).
        temperature: Logits are divided by it (> 0).
        logq_correction: ``"sampled"``: subtract each candidate's log sampling
            probability from its logit.
        remove_accidental_hits: ``"sampled"``: mask negatives equal to the target.
        num_hard_negatives: ``"sampled"``: keep only the hardest negatives (0 = all).
        num_uniform_negatives: ``"sampled"``: M extra negatives per batch drawn
            uniformly from the catalogue and shared by every query (mixed negative
            sampling, Yang et al., WWW 2020): in-batch negatives alone are popular
            items, so at a large catalogue the tail is rarely contrasted. The logQ
            correction then uses each candidate's probability under the mixture of
            N in-batch and M uniform draws, ``(N * q(item) + M / C) / (N + M)``
            (C real items). 0 = in-batch only.
        exclude_history: ``"full"``: leave the items of each query's own history
            (up to its position; its target excepted) out of its softmax. They are
            never recommended (serving and the history-masked metrics remove them),
            so pushing them down spends the model on a ranking nobody sees. Causal
            history encoders only.
    """

    kind: RetrievalLoss = "full"
    temperature: float = 1.0
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    num_hard_negatives: int = 0
    num_uniform_negatives: int = 0
    exclude_history: bool = False

    def __post_init__(self) -> None:
        if self.exclude_history and self.kind != "full":
            raise ValueError(
                f"RetrievalLossConfig.exclude_history=True needs kind='full' (got "
                f"kind={self.kind!r}): in-batch candidates are not the catalogue's columns"
            )
        if not self.temperature > 0:
            raise ValueError(f"RetrievalLossConfig.temperature={self.temperature}; expected > 0")
        names = ("num_hard_negatives", "num_uniform_negatives")
        _check_counts("RetrievalLossConfig", self, names, 0)
        for name in names:
            if getattr(self, name) and self.kind != "sampled":
                raise ValueError(
                    f"RetrievalLossConfig.{name}={getattr(self, name)} needs kind='sampled' "
                    f"(got kind={self.kind!r})"
                )


@dataclasses.dataclass
class RankingLossConfig(JsonConfig):
    """The ranker's next-item loss and its training lists (``objective="next_item"``).

    Attributes:
        kind: ``"bce"`` (pointwise) or ``"softmax"`` (listwise).
        num_negatives: Sampled negatives per next-item training list.
        negative_sampling: ``"uniform"``, ``"popularity"`` or ``"hard"`` (top
            items of a retrieval model, excluding the positive).
        hard_pool_size: Size of the retrieval top-N pool hard negatives are drawn from.
        hard_fraction: ``"hard"`` only: share of each list's negatives drawn from the
            pool, the rest uniform (hard-only lists can teach "anything the retrieval
            model likes is negative").
        retrieved_only: ``"hard"`` only: train and validate only on examples whose
            true item is in the retrieval model's top ``hard_pool_size``
            (validation: top ``num_candidates``), i.e. on the lists stage 2 really
            re-ranks. Without it, a true item the retrieval model misses sits among
            negatives it likes, and the ranker can learn "what retrieval likes is
            negative", the opposite of what helps once the true item is retrieved.
    """

    kind: RankingLoss = "softmax"
    num_negatives: int = 20
    negative_sampling: NegativeSampling = "uniform"
    hard_pool_size: int = 100
    hard_fraction: float = 1.0
    retrieved_only: bool = False

    def __post_init__(self) -> None:
        _check_counts("RankingLossConfig", self, ("num_negatives", "hard_pool_size"), 1)
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError(
                f"RankingLossConfig.hard_fraction={self.hard_fraction}; expected 0 <= x <= 1"
            )
        if self.negative_sampling == "hard" and self.hard_pool_size < self.num_negatives:
            raise ValueError(
                f"RankingLossConfig.hard_pool_size={self.hard_pool_size} is smaller than "
                f"num_negatives={self.num_negatives}"
            )


def _moves(cls: type, renamed: dict[str, str]) -> dict[str, str]:
    fields = {f.name: f"loss.{f.name}" for f in dataclasses.fields(cls) if f.name != "kind"}
    return {**fields, **{old: f"loss.{new}" for old, new in renamed.items()}}


#: Old flat field of RetrievalConfig -> its place in the ``loss`` sub-config.
RETRIEVAL_FLAT_FIELDS = _moves(RetrievalLossConfig, {"loss": "kind"})
#: Old flat field of RankingConfig -> its place in the ``loss`` sub-config.
RANKING_FLAT_FIELDS = _moves(RankingLossConfig, {"loss": "kind"})
