"""``RetrievalConfig``: the typed config of the two-tower model (:mod:`tfrec.models.retrieval`).

Also importable as ``tfrec.models.retrieval.RetrievalConfig`` (re-exported there).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfrec.config import JsonConfig
from tfrec.layers.encoders import NO_ENCODER
from tfrec.models.masked_items import BERT4REC, check_masked_item_config
from tfrec.names import HistoryEncoder, TrainingPositions
from tfrec.tasks.config import RETRIEVAL_FLAT_FIELDS, RetrievalLossConfig
from tfrec.training.config import OptimizerConfig, TrainingConfig, nest_flat_fields


@dataclasses.dataclass
class RetrievalConfig(JsonConfig):
    """Hyper-parameters of the two-tower model and its training.

    Attributes:
        embedding_dim: Item/user/query vector size D.
        encoder: History encoder: ``"mean"``, ``"gru"``, ``"lstm"``, ``"transformer"``,
            ``"caser"``, ``"bert4rec"`` (:mod:`tfrec.models.masked_items`); or
            ``"none"``: ID-only query tower (the user embedding alone, no history;
            needs ``use_user_embedding=True`` and ``context_dim=0``), the classic
            matrix-factorisation two-tower.
        max_history: History length L (most recent items kept). In ID-only mode
            it only sets the length of the evaluation histories (used for
            masking seen items, never by the model).
        num_layers: Transformer blocks.
        num_heads: Transformer attention heads (must divide ``embedding_dim``).
        dropout: Dropout rate of the encoder.
        mask_rate: ``encoder="bert4rec"`` only: probability of masking each item of a
            training sequence, ``0 < mask_rate < 1``.
        use_user_embedding: Add a learned user vector to the query (the whole
            query with ``encoder="none"``).
        use_item_features: Add genres / title tokens to item vectors (when present).
        share_item_embeddings: Embed history items with the candidate ItemTower.
        context_dim: Size of per-history-position context features (0 = none;
            history encoders only).
        loss: The softmax loss (full or sampled, temperature, logQ correction,
            negatives: :class:`~tfrec.tasks.config.RetrievalLossConfig`).
        l2: L2 penalty on the embedding tables.
        training_positions: ``"all"`` (a target at every history position,
            SASRec style) or ``"last"`` (only the most recent item). Unused by
            ID-only in-memory training, which has one row per interaction
            (:func:`tfrec.data.sequences.interaction_pairs`).
        max_title_tokens: Title length of the item title table.
        optimizer: The optimizer (name, learning rate, weight decay, clipping).
        training: The training loop (epochs, batch size of users, early stopping
            on validation ``training.monitor``, default ``ndcg@10``, seed,
            precision, XLA, strategy).
        scenario_layers: Wrap the history encoder in a
            :class:`~tfrec.layers.scenario.ScenarioEncoder` (a learned input
            vector and an output LayerNormalization of this scenario). Set by
            the ``multi_scenario`` kind in each scenario's sub-run, so that the
            sub-run rebuilds the model its weights were saved from, and by a
            single run that wants ``mean_expert`` (the ``lastfm`` preset).
        mean_expert: With ``scenario_layers``: the scenario mixes the shared
            encoder's outputs with the running mean of its history by a learned
            gate (:class:`~tfrec.layers.scenario.ScenarioEncoder`), so a scenario
            whose histories are bags of items rather than sequences can use the
            bag. Set per scenario by the ``multi_scenario`` kind
            (``MultiScenarioExperimentConfig.mean_experts``) and in the
            ``lastfm`` preset.
        scenario_adapter_dim: With ``scenario_layers``: width of each scenario's
            residual bottleneck adapter on the encoder outputs (0: none;
            :class:`~tfrec.layers.scenario.ScenarioEncoder`), a scenario part
            like its item embeddings (trained by ``tfrec adapt`` on a frozen
            encoder).
        max_positions: The transformer's learned positions (None: ``max_history``;
            otherwise >= it). A scenario of a multi-scenario model reads its own
            ``max_history`` items on an encoder shared with scenarios of longer
            histories (``MultiScenarioExperimentConfig.max_histories``), whose
            positions it keeps so that its sub-run reloads on its own.
    """

    embedding_dim: int = 64
    encoder: HistoryEncoder = "transformer"
    max_history: int = 50
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    mask_rate: float = 0.2
    use_user_embedding: bool = False
    use_item_features: bool = True
    share_item_embeddings: bool = True
    context_dim: int = 0
    loss: RetrievalLossConfig = dataclasses.field(default_factory=RetrievalLossConfig)
    l2: float = 0.0
    training_positions: TrainingPositions = "all"
    max_title_tokens: int = 16
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    scenario_layers: bool = False
    mean_expert: bool = False
    scenario_adapter_dim: int = 0
    max_positions: int | None = None

    @property
    def encoder_positions(self) -> int:
        """The encoder's learned positions: ``max_positions``, else ``max_history``."""
        return self.max_positions if self.max_positions is not None else self.max_history

    @classmethod
    def upgrade_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Nests the flat loss/optimizer/training fields of configs saved by earlier versions."""
        return nest_flat_fields(nest_flat_fields(data), RETRIEVAL_FLAT_FIELDS)

    def __post_init__(self) -> None:
        self._check_ranges()
        check_masked_item_config(self)
        if self.encoder in ("transformer", BERT4REC) and self.embedding_dim % self.num_heads:
            raise ValueError(
                f"RetrievalConfig.num_heads={self.num_heads} must divide "
                f"embedding_dim={self.embedding_dim} for the transformer encoder"
            )
        if self.encoder == NO_ENCODER and not self.use_user_embedding:
            raise ValueError(
                f"RetrievalConfig.encoder={self.encoder!r} (ID-only query tower) needs "
                f"use_user_embedding=True (got use_user_embedding={self.use_user_embedding}): "
                "without a history encoder the user embedding is the whole query"
            )
        if self.encoder == NO_ENCODER and self.scenario_layers:
            raise ValueError(
                f"RetrievalConfig.scenario_layers={self.scenario_layers} needs a history "
                f"encoder (got encoder={self.encoder!r}): the scenario layers wrap it"
            )
        if self.loss.exclude_history and self.encoder in (NO_ENCODER, BERT4REC):
            raise ValueError(
                f"RetrievalConfig.loss.exclude_history=True needs a causal history encoder "
                f"(got encoder={self.encoder!r}): its queries have no history prefix"
            )
        if self.encoder == NO_ENCODER and self.context_dim:
            raise ValueError(
                f"RetrievalConfig.context_dim={self.context_dim} needs a history encoder "
                f"(got encoder={self.encoder!r}): context features are per history position; "
                "use context_dim=0 with encoder='none'"
            )

    def _check_ranges(self) -> None:
        minimums = {  # integer fields and their smallest allowed value
            "embedding_dim": 1,
            "max_history": 1,
            "num_layers": 1,
            "num_heads": 1,
            "max_title_tokens": 1,
            "scenario_adapter_dim": 0,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"RetrievalConfig.{name}={value!r}; expected an integer >= {minimum}"
                )
        positions = self.max_positions
        if positions is not None and not (type(positions) is int and positions >= self.max_history):
            raise ValueError(
                f"RetrievalConfig.max_positions={positions!r}; expected None or an integer "
                f">= max_history={self.max_history}"
            )
        for name in ("context_dim", "l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetrievalConfig.{name}={getattr(self, name)}; expected >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RetrievalConfig.dropout={self.dropout}; expected 0 <= dropout < 1")
