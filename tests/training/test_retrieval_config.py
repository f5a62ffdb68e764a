"""Retrieval experiment config, vocabularies and evaluation-query construction (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tfrec.data.config import DataConfig
from tfrec.data.interactions import Interactions, concat_interactions
from tfrec.data.queries import eval_queries
from tfrec.data.vocab import IdVocabulary, build_vocabularies
from tfrec.evaluation.config import EvalConfig
from tfrec.training.retrieval_config import PRESETS, RetrievalExperimentConfig


def _log(rows: list[tuple[str, str, int]], items: pd.DataFrame | None = None) -> Interactions:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_frame(frame, items=items, name="tiny", has_timestamps=True)


def test_experiment_config_json_round_trip_keeps_types():
    config = RetrievalExperimentConfig.for_dataset("beauty", data_dir="/data")
    restored = RetrievalExperimentConfig.from_json(json.dumps(json.loads(config.to_json())))
    assert restored == config
    assert isinstance(restored.data, DataConfig) and isinstance(restored.evaluation, EvalConfig)
    assert restored.model.encoder == "transformer" and restored.data.data_dir == "/data"


@pytest.mark.parametrize("dataset", sorted(PRESETS))
def test_every_preset_builds_a_valid_config(dataset):
    config = RetrievalExperimentConfig.for_dataset(dataset)
    assert config.data.dataset == dataset


def test_bad_fields_name_the_field():
    with pytest.raises(ValueError, match=r"DataConfig.split='bogus'"):
        DataConfig(split="bogus")
    with pytest.raises(ValueError, match=r"EvalConfig.ks="):
        EvalConfig(ks=[0, 10])
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['encoderr'\]"):
        RetrievalExperimentConfig.from_dict({"model": {"encoderr": "gru"}})
    with pytest.raises(ValueError, match="unknown dataset"):
        RetrievalExperimentConfig.for_dataset("nope")


def test_vocabularies_include_catalogue_only_items():
    items = pd.DataFrame({"item_id": ["a", "z"], "title": ["A", "Z"], "genres": [[], []]})
    data = _log([("u1", "a", 1), ("u1", "b", 2)], items=items)
    users, item_vocab = build_vocabularies(data)
    # order of first appearance: interactions first, then catalogue-only items
    assert users.tokens == ["u1"]
    assert item_vocab.tokens == ["a", "b", "z"]


def test_eval_queries_use_context_history_and_mask_seen_items():
    vocab = IdVocabulary(["a", "b", "c", "d"], name="item")  # a=2 b=3 c=4 d=5
    users = IdVocabulary(["u1", "u2", "u3"], name="user")  # u1=2 u2=3 u3=4
    context = _log([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "d", 1)])
    part = _log([("u1", "d", 9), ("u3", "a", 9)])
    q = eval_queries(context, part, users, vocab, max_len=2)
    assert q.user_ids == ["u1", "u3"]
    np.testing.assert_array_equal(q.users, [2, 4])
    # u1 history a,b,c -> last two (b, c) = (3, 4); u3 is unseen -> all padding
    np.testing.assert_array_equal(q.history, [[3, 4], [0, 0]])
    assert [r.tolist() for r in q.relevant] == [[5], [2]]
    # seen = every context item, not only the last max_len
    assert [s.tolist() for s in q.seen] == [[2, 3, 4], []]


def test_concat_interactions_is_chronological_per_user():
    a = _log([("u1", "x", 5)])
    b = _log([("u1", "y", 1)])
    merged = concat_interactions(a, None, b)
    assert merged.frame["item_id"].tolist() == ["y", "x"]


def test_validation_sample_is_seeded_and_keeps_rows_aligned():
    vocab = IdVocabulary([f"i{i}" for i in range(6)], name="item")
    users = IdVocabulary([f"u{i}" for i in range(5)], name="user")
    context = _log([(f"u{u}", f"i{u}", 1) for u in range(5)])
    part = _log([(f"u{u}", f"i{u + 1}", 2) for u in range(5)])
    q = eval_queries(context, part, users, vocab, max_len=2)
    assert q.sample(0, seed=1) is q and q.sample(9, seed=1) is q  # 0 / >= size: everyone
    a, b = q.sample(3, seed=1), q.sample(3, seed=1)
    assert a.user_ids == b.user_ids and len(a) == 3
    for row, user in enumerate(a.user_ids):  # user u<n> saw i<n> and must find i<n+1>
        n = int(user[1:])
        assert a.history[row, -1] == vocab.lookup([f"i{n}"])[0]
        assert a.relevant[row].tolist() == [vocab.lookup([f"i{n + 1}"])[0]]
