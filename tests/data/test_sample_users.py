"""UserSequences.sample_users and DataConfig.train_user_fraction."""

from __future__ import annotations

import numpy as np
import pytest

from tfrec.data.config import DataConfig
from tfrec.data.sequences import UserSequences


def _sequences(count: int) -> UserSequences:
    return UserSequences(
        user_ids=[f"u{i}" for i in range(count)],
        users=np.arange(2, count + 2, dtype=np.int32),
        items=[np.full(i % 3 + 1, i + 2, np.int32) for i in range(count)],
        ratings=[np.full(i % 3 + 1, np.nan, np.float32) for i in range(count)],
        timestamps=[np.arange(i % 3 + 1, dtype=np.int64) for i in range(count)],
    )


def test_fraction_one_is_the_same_object() -> None:
    seqs = _sequences(5)
    assert seqs.sample_users(1.0, seed=0) is seqs


def test_sample_keeps_aligned_rows_and_nests_by_fraction() -> None:
    seqs = _sequences(1000)
    quarter = seqs.sample_users(0.25, seed=3)
    half = seqs.sample_users(0.5, seed=3)
    # about 250 of 1000 users (binomial sd ~14: 5 sd either side)
    assert 180 < len(quarter) < 320
    assert set(quarter.user_ids) < set(half.user_ids)  # the same draws, a lower cut
    for uid, user, items in zip(quarter.user_ids, quarter.users, quarter.items, strict=True):
        i = int(uid[1:])  # u<i> has user index i + 2 and items all i + 2
        assert user == i + 2 and set(items.tolist()) == {i + 2}
    assert quarter.user_ids == seqs.sample_users(0.25, seed=3).user_ids  # seeded
    assert quarter.user_ids != seqs.sample_users(0.25, seed=4).user_ids


def test_a_tiny_fraction_keeps_one_user() -> None:
    assert len(_sequences(3).sample_users(1e-9, seed=0)) == 1


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_bad_fraction_is_refused_by_name(fraction: float) -> None:
    with pytest.raises(ValueError, match="train_user_fraction"):
        DataConfig(train_user_fraction=fraction)
    with pytest.raises(ValueError, match="fraction"):
        _sequences(3).sample_users(fraction, seed=0)


def test_retrieval_trains_on_the_share_and_evaluates_everyone() -> None:
    from tfrec.training.retrieval import RetrievalExperiment
    from tfrec.training.retrieval_config import RetrievalExperimentConfig

    def experiment(fraction: float) -> RetrievalExperiment:
        config = RetrievalExperimentConfig.for_dataset(
            "synthetic", synthetic_users=60, synthetic_items=20, train_user_fraction=fraction
        )
        config.model.embedding_dim = 4
        return RetrievalExperiment(config)

    full, part = experiment(1.0), experiment(0.25)
    assert len(part.train_seqs) < 0.5 * len(full.train_seqs)
    assert part.num_examples < full.num_examples
    assert set(part.train_seqs.user_ids) < set(full.train_seqs.user_ids)
    # evaluation covers every test user of the split, whatever the share trained
    assert part.split.test.frame["user_id"].nunique() == full.split.test.frame["user_id"].nunique()
