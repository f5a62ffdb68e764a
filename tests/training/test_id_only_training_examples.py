"""RetrievalExperiment training rows: every interaction with encoder="none", sequence rows else."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import tf_keras as keras

from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions
from tfrec.data.preparation import PrepareConfig, prepare
from tfrec.data.splits import Split
from tfrec.models.retrieval import RetrievalConfig
from tfrec.training.config import TrainingConfig
from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig


def _log(rows: list[tuple[str, str, int]]) -> Interactions:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_frame(frame, name="tiny", has_timestamps=True)


# train: u1 a@1 b@2 c@3, u2 b@1 (a single interaction), u3 c@1 a@2 -> 6 interactions
TRAIN = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "b", 1)]
TRAIN += [("u3", "c", 1), ("u3", "a", 2)]
TEST = [("u1", "d", 9), ("u2", "a", 9), ("u3", "b", 9)]


def _experiment(encoder: str, train=TRAIN, **model) -> RetrievalExperiment:
    keras.utils.set_random_seed(0)
    config = RetrievalExperimentConfig(
        model=RetrievalConfig(
            embedding_dim=4,
            encoder=encoder,
            use_user_embedding=True,
            max_history=2,
            **model,
            training=TrainingConfig(batch_size=4),
        )
    )
    data = _log(train + TEST)
    split = Split(train=_log(train), valid=None, test=_log(TEST), protocol="hand")
    return RetrievalExperiment(config, data=data, split=split)


def test_id_only_trains_on_every_interaction():
    experiment = _experiment("none")
    assert experiment.num_examples == 6  # every train interaction, first items included
    users, items = experiment.user_vocab, experiment.item_vocab
    u1, u2, u3 = users.lookup(["u1", "u2", "u3"])
    a, b, c, d = items.lookup(["a", "b", "c", "d"])
    # by user then time: u1 a b c, u2 b, u3 c a
    np.testing.assert_array_equal(experiment.examples["user"], [u1, u1, u1, u2, u3, u3])
    np.testing.assert_array_equal(experiment.examples["target"], [[a], [b], [c], [b], [c], [a]])
    # popularity / logQ counts every target: a (u1, u3) 2, b (u1, u2) 2, c (u1, u3) 2, d 0
    counts = experiment.item_counts
    assert counts[[a, b, c, d]].tolist() == [2.0, 2.0, 2.0, 0.0] and counts.sum() == 6
    # the rows go through the pipeline and the train step (target [B, 1], no history)
    history = experiment.fit(epochs=1, verbose=0)
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize(("positions", "rows"), [("all", 2), ("last", 3)])
def test_history_encoder_keeps_the_sequence_rows(positions, rows):
    experiment = _experiment("mean", training_positions=positions)
    # targets after each user's first item: u1 b c, u3 a (u2 has none) = 3;
    # "all" with L = 2: one window per user (u1: 2 targets, u3: 1) = 2 rows; "last": 3 rows
    assert experiment.num_examples == rows
    a, b, c = experiment.item_vocab.lookup(["a", "b", "c"])
    counts = experiment.item_counts
    assert counts[[a, b, c]].tolist() == [1.0, 1.0, 1.0] and counts.sum() == 3


def test_no_training_examples_error_names_the_reason():
    with pytest.raises(ValueError, match=r"'tiny': no training examples \(the training part has"):
        _experiment("none", train=[])
    # one train interaction per user: pairs for ID-only, no sequence row for a history encoder
    single = [("u1", "a", 1), ("u2", "b", 1)]
    assert _experiment("none", train=single).num_examples == 2
    with pytest.raises(ValueError, match="every user has fewer than 2 training interactions"):
        _experiment("mean", train=single)


def test_prepared_id_only_keeps_the_prepared_rows_and_says_so(tmp_path, caplog):
    # u1: a@1 b@2 c@3 d@4, u2: b@1 c@2 a@3 -> leave-one-out train u1 a b, u2 b (3 interactions);
    # the prepared "all" rows with L = 2: u1 [0 a] -> [0 b]; u2 has no row -> 1 example
    path = tmp_path / "events.csv"
    path.write_text("u,i,t\nu1,a,1\nu1,b,2\nu1,c,3\nu1,d,4\nu2,b,1\nu2,c,2\nu2,a,3\n")
    data = DataConfig(dataset="csv", path=str(path), user_col="u", item_col="i", time_col="t")
    out = tmp_path / "prepared"
    prepare(PrepareConfig(data=data, output_dir=str(out), max_len=2, num_shards=1))
    config = RetrievalExperimentConfig(
        model=RetrievalConfig(
            embedding_dim=4, encoder="none", use_user_embedding=True, max_history=2
        ),
        prepared_dir=str(out),
    )
    with caplog.at_level(logging.INFO, logger="tfrec.training.retrieval"):
        experiment = RetrievalExperiment(config)
    assert experiment.num_examples == 1 and experiment.examples is None
    assert "first train item is not a target" in caplog.text
    # counts follow the prepared rows: only b (u1's 2nd item) is a target
    b = experiment.item_vocab.lookup(["b"])[0]
    assert experiment.item_counts[b] == 1.0 and experiment.item_counts.sum() == 1
