"""Two-community interaction data on which popularity fails: shared by the pair-kind tests.

Usage (``tests/`` is on ``sys.path`` under pytest's rootdir conftest)::

    from block_graph import block_data_config, a_user_ndcg
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions
from tfrec.data.queries import EvalQueries
from tfrec.data.vocab import NUM_RESERVED
from tfrec.evaluation.config import EvalConfig
from tfrec.evaluation.retrieval import protocol_metrics


def block_graph(seed: int = 0) -> Interactions:
    """Two disjoint communities: 10 users on items a0..a9, 30 users on items b0..b9.

    Each user sees 8 of its block's 10 items. The b items are 3x as popular, so a
    popularity ranking puts them first for every user: wrong for the 10 a-users.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for block, users in (("a", 10), ("b", 30)):
        for user in range(users):
            for t, item in enumerate(rng.choice(10, size=8, replace=False)):
                rows.append((f"{block}u{user}", f"{block}{item}", t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_frame(frame, name="blocks", has_timestamps=True)


def block_data_config(path: Path) -> DataConfig:
    """:func:`block_graph` written to the CSV ``path``, random 75/25 split, 10% validation."""
    block_graph().frame.to_csv(path, index=False)
    return DataConfig(
        dataset="csv", path=str(path), time_col="timestamp", split="random",
        train_ratio=0.75, valid_fraction=0.1,
    )  # fmt: skip


def a_user_ndcg(experiment: Any) -> dict[str, float]:
    """Test NDCG@10 of the 10 a-users: ``{"popularity": ..., "model": ...}`` (masked).

    Every b item is more popular than every a item: popularity fills an a-user's top
    10 with b items, so its test items rank >= 11 and its NDCG@10 is exactly 0. A
    model that learned the communities ranks an a-user's a items first.

    Raises:
        ValueError: The test part does not hold exactly the 10 a-users.
    """
    queries = experiment.queries("test")
    rows = [r for r, user in enumerate(queries.user_ids) if user.startswith("a")]
    if len(rows) != 10:
        raise ValueError(f"{len(rows)} a-users in the test part; expected 10")
    a_users = EvalQueries(
        [queries.user_ids[r] for r in rows], queries.users[rows], queries.history[rows],
        [queries.relevant[r] for r in rows], [queries.seen[r] for r in rows],
    )  # fmt: skip
    counts = experiment.item_counts.copy()
    counts[:NUM_RESERVED] = -np.inf
    scorers = {
        "popularity": lambda r: np.tile(counts, (len(r), 1)),
        "model": experiment.evaluator.score_fn(a_users),
    }
    config = EvalConfig(ks=[10])
    return {
        name: protocol_metrics(score, a_users, config, masked=True)["ndcg@10"]
        for name, score in scorers.items()
    }
