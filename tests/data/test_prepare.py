"""tfrec prepare: writes a complete, re-loadable directory atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfrec.data.config import DataConfig
from tfrec.data.preparation import PrepareConfig, load_prepared, prepare
from tfrec.data.synthetic import make_synthetic
from tfrec.data.tfdata import tfrecord_dataset
from tfrec.data.vocab import IdVocabulary


def write_tiny_csv(tmp_path):
    # u1: a@1 b@2 c@3 d@4, u2: b@1 c@2 a@3 -> leave-one-out:
    # u1 train a b, valid c, test d; u2 train b, valid c, test a
    path = tmp_path / "events.csv"
    path.write_text("u,i,t\nu1,a,1\nu1,b,2\nu1,c,3\nu1,d,4\nu2,b,1\nu2,c,2\nu2,a,3\n")
    items = tmp_path / "items.csv"
    items.write_text("i,title\na,A\nb,B\nc,C\nd,D\ne,E never seen\n")
    return path, items


def test_prepare_leave_one_out_by_hand(tmp_path):
    path, items = write_tiny_csv(tmp_path)
    out = tmp_path / "prepared"
    config = PrepareConfig(
        data=DataConfig(
            dataset="csv",
            path=str(path),
            items_path=str(items),
            title_col="title",
            user_col="u",
            item_col="i",
            time_col="t",
        ),
        output_dir=str(out),
        max_len=3,
        num_shards=2,
    )
    result = prepare(config)
    assert result.rows == {"train": 3, "valid": 2, "test": 2}
    # train examples ("all" mode): u1 [a b] -> 1 row, u2 [b] -> no row (needs 2 items)
    assert result.examples == {"train": 1, "valid": 2, "test": 2}
    # vocab: users u1=2, u2=3; items by first appearance a b c d, then catalogue-only e
    assert IdVocabulary.load(out / "user_vocab.txt").tokens == ["u1", "u2"]
    assert IdVocabulary.load(out / "item_vocab.txt").tokens == ["a", "b", "c", "d", "e"]
    a, b, c, d = 2, 3, 4, 5
    train = next(tfrecord_dataset(out / "train", 8, shuffle=False).as_numpy_iterator())
    np.testing.assert_array_equal(train["history"], [[0, 0, a]])
    np.testing.assert_array_equal(train["target"], [[0, 0, b]])
    test = next(tfrecord_dataset(out / "test", 8, shuffle=False).as_numpy_iterator())
    # test context = train + valid: u1 [a b c] -> d ; u2 [b c] -> a
    np.testing.assert_array_equal(test["user"], [2, 3])
    np.testing.assert_array_equal(test["history"], [[a, b, c], [0, b, c]])
    np.testing.assert_array_equal(test["target"], [[0, 0, d], [0, 0, a]])
    assert set(test) == {"user", "history", "target", "history_rating", "history_dt"}
    assert sorted(p.name for p in out.iterdir()) == [
        "interactions",
        "item_vocab.txt",
        "items.parquet",
        "prepare_config.json",
        "summary.json",
        "test",
        "train",
        "user_vocab.txt",
        "valid",
    ]
    assert json.loads((out / "summary.json").read_text())["protocol"] == "leave_one_out"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    loaded = load_prepared(out)
    assert loaded.config == config
    assert loaded.parts["test"].frame["item_id"].tolist() == ["d", "a"]
    assert loaded.items.set_index("item_id").loc["e", "title"] == "E never seen"
    assert loaded.item_vocab.size == 7
    batch = next(loaded.dataset("valid", 8, shuffle=False).as_numpy_iterator())
    np.testing.assert_array_equal(batch["target"][:, -1], [c, c])


def test_a_directory_of_another_layout_version_is_refused_by_name(tmp_path):
    import tfrec
    from tfrec.data.preparation import PREPARED_FORMAT

    out = tmp_path / "p"
    config = PrepareConfig(
        data=DataConfig(dataset="synthetic", synthetic_users=12, synthetic_items=10),
        output_dir=str(out),
    )
    prepare(config)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == PREPARED_FORMAT
    assert summary["tfrec_version"] == tfrec.__version__
    summary.update(format_version=PREPARED_FORMAT + 1, tfrec_version="9.9.9")
    (out / "summary.json").write_text(json.dumps(summary))
    expected = rf"layout version {PREPARED_FORMAT + 1} \(by tfrec 9\.9\.9\).*reads version"
    with pytest.raises(ValueError, match=expected):
        load_prepared(out)
    del summary["format_version"], summary["tfrec_version"]  # written before the fields: v1
    (out / "summary.json").write_text(json.dumps(summary))
    assert load_prepared(out).summary.format_version == 1


def test_prepare_refuses_existing_output_and_overwrites_on_request(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "old.txt").write_text("x")
    config = PrepareConfig(
        data=DataConfig(dataset="synthetic", synthetic_users=12, synthetic_items=10),
        output_dir=str(out),
        max_len=4,
    )
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        prepare(config)
    assert (out / "old.txt").exists()
    config.overwrite = True
    config.data.split = "random"
    result = prepare(config)
    assert not (out / "old.txt").exists()
    assert result.protocol == "random_per_user"
    # every synthetic row lands in exactly one part
    assert sum(result.rows.values()) == len(make_synthetic(num_users=12, num_items=10, seed=42))
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_prepare_failure_leaves_nothing(tmp_path):
    out = tmp_path / "p"
    config = PrepareConfig(
        data=DataConfig(dataset="csv", path=str(tmp_path / "missing.csv")), output_dir=str(out)
    )
    with pytest.raises(FileNotFoundError):
        prepare(config)
    assert list(tmp_path.iterdir()) == []


def test_prepare_config_validation_and_json_round_trip():
    with pytest.raises(ValueError, match="split='kfold'; expected one of"):
        DataConfig(split="kfold")
    with pytest.raises(ValueError, match="max_len=0; expected >= 1"):
        PrepareConfig(max_len=0)
    config = PrepareConfig(data=DataConfig(dataset="beauty"), mode="last", max_len=20)
    assert PrepareConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="path is required"):
        prepare(PrepareConfig(data=DataConfig(dataset="csv"), output_dir="x"))
