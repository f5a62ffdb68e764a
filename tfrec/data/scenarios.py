"""Synthetic scenarios: several datasets with the SAME planted sequential dynamics.

Each :class:`SyntheticScenario` is a :func:`~tfrec.data.synthetic.make_synthetic`
dataset of its own size and seed (its own users and its own catalogue; the
scenarios' items are distinct because every scenario has its own item
vocabulary and embeddings, even though the ids ``"i0"``, ``"i1"``, ... repeat
across scenarios). The dynamics are the same in every scenario: 4 genres, each
user's next item is the successor of the current one (the next item of its
genre) with probability 0.7, a random item with 0.1, else a popular item of
one of the user's one or two genres; no item repeats within a user.

What a shared encoder can transfer when the item embeddings are per scenario:
not item identities (``"i7"`` of one scenario has nothing to do with ``"i7"``
of another), but the *function* from a history of embeddings to a query: "the
query is the last item mapped by one fixed operator (so it scores that item's
successor highest), plus a genre direction pooled over the history". Learned
on the large scenarios, that operator lets a small scenario fit only its item
embeddings so that the operator maps each item onto its successor (a few
transitions per item suffice), instead of learning the encoder too from its
few users. Measured with a GRU encoder (``tests/training/test_multi_scenario.py``):
+0.03 to +0.16 test NDCG@10 on a 60-user, 300-item scenario trained with a
400-user one, against the same model trained alone. A transformer trained alone
matched the jointly trained one on this data: the gain is the operator, which
attention learns from little data; richer shared dynamics would transfer more.

A scenario is described by a :class:`~tfrec.data.config.DataConfig` of the
``synthetic`` dataset (:meth:`SyntheticScenario.data_config`), so the
retrieval sub-run of each scenario regenerates its data on its own (no files).
:data:`SYNTHETIC_SCENARIOS` registers four: two large, one small and one new surface.
"""

from __future__ import annotations

import dataclasses

from tfrec.config import JsonConfig
from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions


@dataclasses.dataclass
class SyntheticScenario(JsonConfig):
    """One synthetic scenario (a ``make_synthetic`` dataset with its own size and seed).

    Attributes:
        name: The scenario name (the key of its metrics, its sub-run directory).
        num_users: Users.
        num_items: Items (its catalogue).
        seed: Seed of the data and of its split.
    """

    name: str = "synthetic"
    num_users: int = 300
    num_items: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(
                f"SyntheticScenario.name={self.name!r}; expected a non-empty name without '/'"
            )
        for field in ("num_users", "num_items"):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"SyntheticScenario.{field}={value}; expected >= 1")

    def data_config(self) -> DataConfig:
        """The ``synthetic`` dataset that regenerates this scenario, leave-one-out split."""
        return DataConfig(
            dataset="synthetic",
            split="leave_one_out",
            synthetic_users=self.num_users,
            synthetic_items=self.num_items,
            seed=self.seed,
        )

    def load(self) -> Interactions:
        """Generates the scenario's interactions (a pure function of the fields)."""
        return self.data_config().load()


#: The registered synthetic scenarios: usable by name in
#: ``MultiScenarioExperimentConfig.scenarios``. ``synthetic_small`` has few users
#: for its catalogue (about 3 training events per item): a separately trained
#: model learns its sequential dynamics poorly, a model sharing the encoder with
#: ``synthetic_a`` does better (``tests/training/test_multi_scenario.py``).
#: ``synthetic_new`` is a new surface for adaptation curves (``benchmarks/scenarios.py``):
#: enough users that a quarter of them is still a dataset (about 9 training
#: events per item), twice as many as items.
SYNTHETIC_SCENARIOS: dict[str, SyntheticScenario] = {
    scenario.name: scenario
    for scenario in (
        SyntheticScenario("synthetic_a", num_users=400, num_items=60, seed=10),
        SyntheticScenario("synthetic_b", num_users=300, num_items=48, seed=20),
        SyntheticScenario("synthetic_small", num_users=60, num_items=300, seed=30),
        SyntheticScenario("synthetic_new", num_users=1200, num_items=600, seed=40),
    )
}
