"""``MultiScenarioExperimentConfig``: one model trained on several scenarios (datasets).

Saved as the run's ``config.json`` (``"kind": "multi_scenario"``). Each scenario
is a dataset name (its split comes from the dataset's preset,
:data:`~tfrec.training.retrieval_config.PRESETS`), a registered synthetic scenario
(:data:`~tfrec.data.scenarios.SYNTHETIC_SCENARIOS`) or one defined in
``synthetic_scenarios``. :meth:`MultiScenarioExperimentConfig.scenario_config`
is the retrieval config of one scenario's sub-run.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from tfrec.config import JsonConfig
from tfrec.data.scenarios import SYNTHETIC_SCENARIOS, SyntheticScenario
from tfrec.evaluation.config import EvalConfig
from tfrec.layers.encoders import NO_ENCODER
from tfrec.models.retrieval import RetrievalConfig
from tfrec.names import ScenarioSelection
from tfrec.training.retrieval_config import PRESETS, RetrievalExperimentConfig

#: The scenarios whose encoder is gated with the mean of the history by default
#: (:attr:`MultiScenarioExperimentConfig.mean_experts`). Measured in the four-scenario
#: joint model, seed 1, validation NDCG@10 without / with the gate on every scenario:
#: Last.fm .0626 / .0732, ml-latest-small (a random split: bags, not sequences)
#: .0779 / .0930; Beauty .0742 / .0724 and Sports .0440 / .0404 lost, so they keep
#: the plain encoder.
MEAN_EXPERT_SCENARIOS = frozenset({"lastfm", "ml-latest-small"})


@dataclasses.dataclass
class MultiScenarioExperimentConfig(JsonConfig):
    """Everything that defines a multi-scenario experiment (saved as ``config.json``).

    Attributes:
        scenarios: The scenario names, in the order of their batch index: dataset
            names (``beauty``, ``lastfm``, ...), registered synthetic scenarios
            (``synthetic_a``, ...) or names of ``synthetic_scenarios``.
        weights: Relative sampling weight of each scenario's batches in the
            training stream (one per scenario, > 0). None: each scenario's
            examples times its preset's epochs (:func:`default_weights`).
        model: The shared model: architecture, loss, optimizer and training loop
            of every scenario (None: the first scenario's preset model, without its
            mean expert: that is chosen per scenario, ``mean_experts``).
        user_embeddings: Per scenario, whether its query tower adds its own user
            embedding (one per scenario, a scenario part like its item
            embeddings). None: yes when ``model.use_user_embedding`` or the
            scenario's preset's (MovieLens: yes, the S3-Rec releases: no).
        mean_experts: Per scenario, whether its encoder output is gated with the
            running mean of its history (``RetrievalConfig.mean_expert``, a scenario
            part). None: yes when ``model.mean_expert`` or the scenario is one of
            :data:`MEAN_EXPERT_SCENARIOS`.
        max_histories: Per scenario, how many recent items its query reads
            (``RetrievalConfig.max_history``; one per scenario, >= 1). None: the
            shared model's ``max_history`` for all. The shared encoder's positions
            are the longest of these and the shared model's own
            (:attr:`encoder_positions`).
        evaluation: The metrics protocol of every scenario (None: the first
            scenario's preset).
        selection: ``scenario`` (default): each scenario is evaluated, saved and
            exported with the weights of its own best validation epoch, and
            training stops when no scenario has improved for ``patience``
            epochs (:mod:`tfrec.training.scenario_best`); ``mean``: one best
            epoch for all, that of the mean over scenarios.
        data_dir: Where the scenarios' dataset files are (else
            ``$TFREC_DATA_DIR``, else the cache).
        synthetic_scenarios: Synthetic scenarios defined here (by their names in
            ``scenarios``; they take precedence over the registered ones).
        model_name: Export name prefix: scenario ``s`` exports as ``<model_name>_<s>``.
        kind: Always ``"multi_scenario"``.
    """

    scenarios: list[str] = dataclasses.field(default_factory=list)
    weights: list[float] | None = None
    model: RetrievalConfig | None = None
    user_embeddings: list[bool] | None = None
    mean_experts: list[bool] | None = None
    max_histories: list[int] | None = None
    evaluation: EvalConfig | None = None
    selection: ScenarioSelection = "scenario"
    data_dir: str | None = None
    synthetic_scenarios: list[SyntheticScenario] = dataclasses.field(default_factory=list)
    model_name: str = "multi_scenario"
    kind: str = "multi_scenario"

    def __post_init__(self) -> None:
        if self.kind != "multi_scenario":
            raise ValueError(
                f"MultiScenarioExperimentConfig.kind={self.kind!r}; expected 'multi_scenario'"
            )
        names = self.scenarios
        if not names or len(set(names)) != len(names) or any("/" in n for n in names):
            raise ValueError(
                f"MultiScenarioExperimentConfig.scenarios={names}; expected distinct "
                "names without '/' (at least one)"
            )
        unknown = [name for name in names if self.preset(name) is None]
        if unknown:
            raise ValueError(
                f"MultiScenarioExperimentConfig.scenarios: unknown {unknown}; expected dataset "
                f"names {sorted(PRESETS)}, synthetic scenarios {sorted(SYNTHETIC_SCENARIOS)} "
                "or names of synthetic_scenarios"
            )
        if self.weights is not None and (
            len(self.weights) != len(names)
            or not all(math.isfinite(w) and w > 0 for w in self.weights)
        ):
            raise ValueError(
                f"MultiScenarioExperimentConfig.weights={self.weights}; expected "
                f"{len(names)} finite numbers > 0 (one per scenario) or None"
            )
        for field in ("user_embeddings", "mean_experts"):
            flags = getattr(self, field)
            if flags is not None and len(flags) != len(names):
                raise ValueError(
                    f"MultiScenarioExperimentConfig.{field}={flags}; "
                    f"expected {len(names)} booleans (one per scenario) or None"
                )
        lengths = self.max_histories
        if lengths is not None and (
            len(lengths) != len(names) or not all(type(n) is int and n >= 1 for n in lengths)
        ):
            raise ValueError(
                f"MultiScenarioExperimentConfig.max_histories={lengths}; "
                f"expected {len(names)} integers >= 1 (one per scenario) or None"
            )
        first = self.preset(names[0])
        if self.model is None:  # the gate is per scenario (mean_expert), not the first's
            self.model = dataclasses.replace(
                copy.deepcopy(first.model), scenario_layers=False, mean_expert=False
            )
        if self.evaluation is None:
            self.evaluation = copy.deepcopy(first.evaluation)
        if self.model.encoder == NO_ENCODER:
            raise ValueError(
                f"MultiScenarioExperimentConfig.model.encoder={self.model.encoder!r}; expected "
                "a history encoder (the scenarios share it)"
            )
        if self.model.training.jit_compile:
            # TF 2.21: XLA fails on the gradient of a recurrent layer inside the Case op
            # (FakeParam of a variant) and aborted the process for the mean encoder.
            raise ValueError(
                "MultiScenarioExperimentConfig.model.training.jit_compile=True; expected False: "
                "XLA does not reliably compile the per-scenario tf.switch_case train step"
            )

    def preset(self, name: str) -> RetrievalExperimentConfig | None:
        """The preset of scenario ``name`` alone (its data split, schedule); None if unknown."""
        own = {s.name: s for s in self.synthetic_scenarios}
        synthetic = own.get(name) or SYNTHETIC_SCENARIOS.get(name)
        if synthetic is not None:
            preset = RetrievalExperimentConfig.for_dataset("synthetic")
            preset.data = synthetic.data_config()
            return preset
        if name in PRESETS:
            return RetrievalExperimentConfig.for_dataset(name)
        return None

    def scenario_config(self, name: str) -> RetrievalExperimentConfig:
        """The retrieval config of scenario ``name``'s sub-run.

        Its data is the scenario's (``data_dir`` applied), its model the shared
        one with ``scenario_layers=True`` (so the sub-run reloads on its own), the
        scenario's ``use_user_embedding`` (:meth:`user_embedding`),
        ``mean_expert`` (:meth:`mean_expert`) and ``max_history``
        (:meth:`max_history`) and the shared encoder's ``max_positions``
        (:attr:`encoder_positions`); its evaluation is the shared one, its export
        name ``<model_name>_<name>``.

        Raises:
            ValueError: ``name`` is not one of :attr:`scenarios`.
        """
        if name not in self.scenarios:
            raise ValueError(f"scenario {name!r} is not one of {self.scenarios}")
        preset = self.preset(name)
        data = preset.data
        if self.data_dir is not None:
            data = dataclasses.replace(data, data_dir=self.data_dir)
        length, positions = self.max_history(name), self.encoder_positions
        model = dataclasses.replace(
            copy.deepcopy(self.model),
            scenario_layers=True,
            use_user_embedding=self.user_embedding(name),
            mean_expert=self.mean_expert(name),
            max_history=length,
            max_positions=None if positions == length else positions,  # the shared encoder's
        )
        return RetrievalExperimentConfig(
            data=data,
            model=model,
            evaluation=copy.deepcopy(self.evaluation),
            model_name=f"{self.model_name}_{name}",
        )

    def user_embedding(self, name: str) -> bool:
        """Whether scenario ``name`` has its own user embedding (see :attr:`user_embeddings`).

        Measured on MovieLens latest-small alone with the shared (Beauty) transformer
        settings, seed 1: validation NDCG@10 .0884 without a user embedding, .0949
        with one (its random split holds out a quarter of each user's ratings from
        their whole history, which a user vector summarises better than the last
        50 items).
        """
        listed = self._listed(self.user_embeddings, name)
        if listed is not None:
            return bool(listed)
        preset = self.preset(name)
        if preset is None:
            raise ValueError(f"user_embedding: unknown scenario {name!r}")
        return self.model.use_user_embedding or preset.model.use_user_embedding

    def mean_expert(self, name: str) -> bool:
        """Whether scenario ``name``'s encoder has the mean expert (:attr:`mean_experts`)."""
        listed = self._listed(self.mean_experts, name)
        if listed is not None:
            return bool(listed)
        return self.model.mean_expert or name in MEAN_EXPERT_SCENARIOS

    def max_history(self, name: str) -> int:
        """How many recent items scenario ``name``'s query reads (:attr:`max_histories`)."""
        listed = self._listed(self.max_histories, name)
        return int(listed) if listed is not None else self.model.max_history

    @property
    def encoder_positions(self) -> int:
        """The shared encoder's learned positions: the longest history, at least the model's own."""
        lengths = [self.max_history(name) for name in self.scenarios]
        return max(self.model.encoder_positions, *lengths)

    def shared_model(self) -> RetrievalConfig:
        """The shared model's config with :attr:`encoder_positions` (the encoder's build config)."""
        positions = self.encoder_positions
        if positions == self.model.max_history:
            return self.model
        return dataclasses.replace(self.model, max_positions=positions)

    def _listed(self, values: list[Any] | None, name: str) -> Any | None:
        """Scenario ``name``'s entry of a per-scenario list; None if not listed."""
        index = self.scenarios.index(name) if name in self.scenarios else len(self.scenarios)
        return values[index] if values is not None and index < len(values) else None

    @classmethod
    def for_scenarios(
        cls, scenarios: Sequence[str], **fields: Any
    ) -> MultiScenarioExperimentConfig:
        """The default config of ``scenarios`` (the first one's preset model and evaluation).

        Args:
            scenarios: Scenario names (see :attr:`scenarios`).
            **fields: Other fields (``weights``, ``data_dir``, ``model``, ...).
        """
        return cls(scenarios=list(scenarios), **fields)


def default_weights(examples: Sequence[int], epochs: Sequence[int]) -> list[float]:
    """The default batch sampling weights: each scenario's training budget alone.

    Scenario ``s`` is drawn with probability proportional to ``examples[s] *
    epochs[s]``: the examples it would be trained on alone (its preset's
    maximum epochs), so over a joint run each scenario gets about the share of
    steps it would get by itself. Beauty, Sports, Last.fm and ml-latest-small
    (175, 279, 14 and 13 batches of 128 examples; 18, 18, 150 and 50 epochs)
    get 0.29, 0.46, 0.19 and 0.06.

    Measured (seed 1, validation NDCG@10, the mean-over-scenarios early
    stopping of the time): uniform weights gave each of those scenarios the same
    ~120 batches per joint epoch, so Sports got 43% of the steps it takes alone
    and ml-latest-small ~9 passes over its data per epoch; its validation NDCG@10 peaked after
    epoch 1 (.0645) and Sports reached .0366 by epoch 5 (a joint run of Beauty,
    Sports and ml-latest-small). With weights of this kind (0.32, 0.51, 0.14,
    0.03, from rounder example counts; all four scenarios) Sports reached .0406
    by epoch 5 and ml-latest-small peaked at .0833; Beauty was unchanged (.0699
    vs .0716 at epoch 5). On the synthetic scenarios, with one
    best epoch for all, weights proportional to the examples alone had starved a
    small scenario (test NDCG@10 .23 vs .50 uniform); with each scenario kept at
    its own best epoch (:mod:`tfrec.training.scenario_best`) the joint model
    still beats the separate one there by more than .05 (the planted-structure
    test of ``tests/training/test_multi_scenario.py``). Pass ``weights`` to
    choose otherwise.

    Args:
        examples: Per scenario, its number of training examples (>= 1).
        epochs: Per scenario, its preset's maximum epochs (>= 1).

    Returns:
        One weight per scenario, summing to 1.

    Raises:
        ValueError: Lengths differ, are 0, or a count is < 1.
    """
    if not examples or len(examples) != len(epochs) or min(*examples, *epochs) < 1:
        raise ValueError(
            f"default_weights: examples={list(examples)}, epochs={list(epochs)}; expected "
            "one count >= 1 of each per scenario"
        )
    budgets = [n * e for n, e in zip(examples, epochs, strict=True)]
    return [b / sum(budgets) for b in budgets]
