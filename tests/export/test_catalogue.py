"""``tfrec.export.catalogue``: a new catalogue version of a retrieval run, without retraining.

The run is a tiny synthetic one (80 items ``i0..i79``, item ``i`` of genre
``["jazz", "rock", "drama", "comedy"][i % 4]``, title ``"Item <i> <genre>"``,
embedding_dim 4, one epoch). Expected values are computed from the run's own
weights with the item tower's formula written out here:
``vector = id_row + multi_hot(genres) @ genre_kernel + mean(title token rows)``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfrec
from tfrec.cli.main import main
from tfrec.data.interactions import DataError
from tfrec.export.catalogue import (
    CatalogueColumns,
    catalogue_counts,
    index_catalogue,
    index_options,
    read_catalogue,
)

GENRES = ("jazz", "rock", "drama", "comedy")
#: The refreshed catalogue: every jazz and rock item replaced by new ones.
KEPT = [f"i{i}" for i in range(80) if GENRES[i % 4] in ("drama", "comedy")]  # 40 items
REMOVED = [f"i{i}" for i in range(80) if GENRES[i % 4] in ("jazz", "rock")]  # 40 items
NEW = [("fresh-jazz", "jazz", "jazz"), ("fresh-rock", "rock", "rock"), ("blind", "zzz", "")]


def train_run(out: Path, *extra: str) -> Path:
    """A one-epoch synthetic retrieval run (the one place with training flags)."""
    args = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--no-export"]
    flags = ["--epochs", "1", "--batch-size", "8", "--encoder", "mean"]
    assert main([*args, *flags, "--set", "embedding_dim=4", *extra]) == 0
    return out


def write_items(
    path: Path, rows: list[tuple[str, str, str]], header=("item_id", "title", "genres")
):
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def known_rows(ids: list[str]) -> list[tuple[str, str, str]]:
    """Catalogue rows of run items with their training content."""
    return [(i, f"Item {i[1:]} {GENRES[int(i[1:]) % 4]}", GENRES[int(i[1:]) % 4]) for i in ids]


def answers(
    version_dir: Path, histories: list[list[str]], k: int, signature="serving_default", **extra
):
    fn = tf.saved_model.load(str(version_dir)).signatures[signature]
    out = fn(
        user_id=tf.constant([""] * len(histories)),
        history=tf.constant(histories),
        k=tf.constant([k] * len(histories), tf.int32),
        **extra,
    )
    return out["item_ids"].numpy().astype(str), out["scores"].numpy()


def read_config(version_dir: Path) -> dict:
    return json.loads((version_dir / "assets.extra" / "tfrec_config.json").read_text())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def experiment(run_dir):
    exp = tfrec.load_experiment(run_dir)
    exp.model.candidate_embeddings()  # builds the towers
    return exp


@pytest.fixture(scope="module")
def refreshed(run_dir, tmp_path_factory) -> Path:
    """The run's version over KEPT + NEW (jazz and rock items replaced)."""
    work = tmp_path_factory.mktemp("refreshed")
    items = write_items(work / "items.csv", known_rows(KEPT) + NEW)
    return index_catalogue(run_dir, items, work / "serving")


def weight(experiment, name: str) -> np.ndarray:
    found = [w for w in experiment.model.item_tower.weights if f"/{name}/" in w.name]
    assert len(found) == 1, name
    return found[0].numpy()


def queries(experiment, histories: list[list[str]]) -> np.ndarray:
    """The run's query vectors ``[B, D]`` (the query tower is not changed by a new catalogue)."""
    index = experiment.item_vocab.lookup(np.array(histories, dtype=object))
    return experiment.model.query_embeddings(tf.zeros(len(histories), tf.int32), index).numpy()


def test_the_run_catalogue_reproduces_the_plain_export(run_dir, experiment, tmp_path):
    items = experiment.data.items
    rows = [
        (i, t, "|".join(g))
        for i, t, g in zip(items.item_id, items.title, items.genres, strict=True)
    ]
    path = index_catalogue(run_dir, write_items(tmp_path / "items.csv", rows), tmp_path / "a")
    plain = experiment.export(tmp_path / "b")[0]
    histories = [["i0", "i4", "i8"], ["", "", "i1"], ["i77", "", ""]]
    got_ids, got_scores = answers(path, histories, k=10)
    want_ids, want_scores = answers(plain, histories, k=10)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    catalogue = read_config(path)["catalogue"]
    assert catalogue == {
        "source": str((tmp_path / "items.csv").resolve()),
        "items": 80, "added": 0, "removed": 0, "kept": 80,
    }  # fmt: skip


def new_item_vectors(experiment) -> dict[str, np.ndarray]:
    """NEW's vectors by the tower's formula: OOV id row (1) + genre row + its one title token."""
    ids_table = weight(experiment, "item_embedding")
    kernel = weight(experiment, "genre_projection")
    tokens = weight(experiment, "title_token_embedding")
    features = experiment.item_features
    vectors = {
        name: ids_table[1]
        + kernel[features.genre_names.index(genre)]
        + tokens[features.title_vocabulary.index(genre)]
        for name, genre, _ in NEW[:2]
    }
    vectors["blind"] = ids_table[1]  # no genre or title word the run knows
    return vectors


def test_added_items_are_retrieved_for_queries_built_to_favour_them(experiment, refreshed):
    vectors = experiment.model.candidate_embeddings().numpy()
    catalogue = vectors[experiment.item_vocab.lookup(np.array(KEPT, dtype=object))]  # [40, D]
    fresh = new_item_vectors(experiment)
    catalogue = np.concatenate([catalogue, np.stack([fresh[n] for n, _, _ in NEW])])  # [43, D]
    names = KEPT + [name for name, _, _ in NEW]
    # Candidate queries: one-item histories of every run item (removed ones included).
    histories = [[f"i{i}"] for i in range(80)]
    scores = queries(experiment, histories) @ catalogue.T  # [80, 43]
    for row, (item,) in enumerate(histories):
        if item in names:
            scores[row, names.index(item)] = -np.inf  # the history is excluded
    for name in ("fresh-jazz", "fresh-rock"):
        column = names.index(name)
        margin = scores[:, column] - np.delete(scores, column, axis=1).max(axis=1)  # [80]
        best = int(np.argmax(margin))  # the query built to favour it
        assert margin[best] > 1e-4, f"no one-item history puts {name} first"
        ids, served = answers(refreshed, [histories[best]], k=3)
        assert ids[0, 0] == name
        np.testing.assert_allclose(served[0, 0], scores[best, column], rtol=1e-5)
    config = read_config(refreshed)
    assert config["catalogue"]["items"] == 43 and config["num_real_items"] == 43
    assert {k: config["catalogue"][k] for k in ("added", "removed", "kept")} == {
        "added": 3, "removed": 40, "kept": 40,
    }  # fmt: skip
    listed = (refreshed / "assets.extra" / "candidate_vocab.txt").read_text().split()
    assert listed == names


def test_removed_items_are_never_returned(experiment, refreshed, run_dir, tmp_path):
    rng = np.random.default_rng(0)
    known = [f"i{i}" for i in range(80)]
    histories = [list(rng.choice(known, size=4, replace=False)) for _ in range(200)]
    ids, scores = answers(refreshed, histories, k=43)  # k = every catalogue item
    catalogue = set(KEPT) | {name for name, _, _ in NEW}
    for row, history in enumerate(histories):
        returned = set(ids[row][np.isfinite(scores[row])])
        assert returned == catalogue - set(history)  # all of the catalogue, nothing else
    assert not set(ids.ravel()) & set(REMOVED)
    # an IVF version of the same catalogue probing one partition: approximate, never removed
    items = write_items(tmp_path / "items.csv", known_rows(KEPT) + NEW)
    ivf = index_catalogue(run_dir, items, tmp_path / "s", index="ivf", num_partitions=4, nprobe=1)
    ivf_ids, _ = answers(ivf, histories, k=10)
    assert set(ivf_ids.ravel()) <= catalogue and (ivf_ids != "").all()


def test_histories_with_removed_and_new_items(experiment, refreshed):
    # i0 was removed (the query tower still knows it), fresh-jazz is new (unknown to it).
    ids, scores = answers(refreshed, [["i0", "i2", "fresh-jazz"], ["i0", "i2", ""]], k=42)
    assert "fresh-jazz" not in ids[0] and "i2" not in ids[0]  # history items are excluded
    # The new id does not change the query: both rows score every shared item alike.
    shared = [item for item in ids[0] if item in set(ids[1])]
    assert len(shared) == 41  # 43 items minus i2 and fresh-jazz
    first = dict(zip(ids[0], scores[0], strict=True))
    second = dict(zip(ids[1], scores[1], strict=True))
    np.testing.assert_allclose([first[i] for i in shared], [second[i] for i in shared], rtol=1e-6)
    # ... and that query is the run's for the history [i0, i2] (i0 still encoded)
    query = queries(experiment, [["i0", "i2"]])[0]
    vectors = experiment.model.candidate_embeddings().numpy()
    kept = [i for i in shared if i in set(KEPT)]
    want = vectors[experiment.item_vocab.lookup(np.array(kept, dtype=object))] @ query
    np.testing.assert_allclose([first[i] for i in kept], want, rtol=1e-5, atol=1e-6)


def test_an_ivf_index_is_carried_over_and_trained_on_the_new_vectors(run_dir, experiment, tmp_path):
    base = tmp_path / "serving"
    experiment.export(base, index="ivf", num_partitions=4, nprobe=2)  # version 1: 80 items
    items = write_items(tmp_path / "items.csv", known_rows(KEPT) + NEW)
    path = index_catalogue(run_dir, items, base)
    assert path == base / "retrieval" / "2"
    index = read_config(path)["index"]
    assert index["type"] == "ivf" and index["requested_partitions"] == 4
    assert index["nprobe"] == 2 and index["num_items"] == 43  # partitions of the new vectors
    brute = index_catalogue(run_dir, items, base, index="brute")
    histories = [["i0", "i4"], ["i1", ""], ["i2", "i3"]]
    every = tf.constant([index["num_partitions"]] * 3, tf.int32)  # exhaustive = brute force
    ivf_ids, ivf_scores = answers(path, histories, k=5, signature="with_nprobe", nprobe=every)
    brute_ids, brute_scores = answers(brute, histories, k=5)
    np.testing.assert_array_equal(ivf_ids, brute_ids)
    np.testing.assert_allclose(ivf_scores, brute_scores, rtol=1e-5, atol=1e-6)


def test_index_options_follow_the_previous_version():
    tuned = {"type": "ivf", "requested_partitions": 36, "num_items": 80, "nprobe": 3,
             "nprobe_tuning": {"recall_at_10": 0.97}}  # fmt: skip
    # 36 = round(4 * sqrt(80)), the default: the new catalogue gets its own default, nprobe tuned
    assert index_options(tuned, None, None, None, 43) == {
        "index": "ivf", "num_partitions": None, "nprobe": None,
    }  # fmt: skip
    chosen = {"type": "ivf", "requested_partitions": 4, "num_items": 80, "nprobe": 2}
    assert index_options(chosen, None, None, None, 43) == {
        "index": "ivf", "num_partitions": 4, "nprobe": 2,
    }  # fmt: skip
    # chosen partitions above the new item count: the default instead
    assert index_options({**chosen, "requested_partitions": 50}, None, None, None, 43) == {
        "index": "ivf", "num_partitions": None, "nprobe": None,
    }  # fmt: skip
    assert index_options(chosen, "brute", None, None, 43)["index"] == "brute"
    assert index_options(None, None, None, None, 43) == {
        "index": "brute", "num_partitions": None, "nprobe": None,
    }  # fmt: skip


def test_read_catalogue_parquet_lists_equal_csv_text(tmp_path):
    frame = pd.DataFrame(
        {"sku": ["a", "b"], "name": ["A jazz", ""], "tags": [["jazz", "rock"], None]}
    )
    frame.to_parquet(tmp_path / "items.parquet")
    write_items(tmp_path / "items.csv", [("a", "A jazz", "jazz;rock"), ("b", "", "")],
                header=("sku", "name", "tags"))  # fmt: skip
    columns = CatalogueColumns("sku", "name", "tags", ";")
    parquet = read_catalogue(tmp_path / "items.parquet", columns)
    text = read_catalogue(tmp_path / "items.csv", columns)
    for table in (parquet, text):
        assert table["item_id"].tolist() == ["a", "b"]
        assert table["title"].tolist() == ["A jazz", ""]
        assert [list(g) for g in table["genres"]] == [["jazz", "rock"], []]


def test_catalogue_counts():
    from tfrec.data.vocab import IdVocabulary

    run = IdVocabulary(["a", "b", "c"])
    # kept a, b; removed c; added d, e
    assert catalogue_counts(run, pd.Series(["a", "d", "b", "e"])) == {
        "items": 4, "added": 2, "removed": 1, "kept": 2,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([("i1", "t", "jazz"), ("i1", "u", "rock")], None,
         r"items.csv: line 3: item id 'i1' already appeared at line 2"),
        ([("i1", "t", "jazz"), ("", "u", "rock")], None, r"items.csv: line 3.*item_id"),
        ([("i1", "jazz")], ("item_id", "genres"), r"items.csv: no title column 'title'"),
        ([("i1", "t")], ("item_id", "title"), r"items.csv: no genres column 'genres'"),
        ([("i1", "t", "jazz")], ("sku", "title", "genres"), r"items.csv: line 1 \(header\)"),
    ],
)  # fmt: skip
def test_malformed_catalogues_are_located(run_dir, tmp_path, rows, header, message):
    items = write_items(tmp_path / "items.csv", rows, header or ("item_id", "title", "genres"))
    with pytest.raises(DataError, match=message):
        index_catalogue(run_dir, items, tmp_path / "serving")
    assert not (tmp_path / "serving" / "retrieval").exists() or not any(
        (tmp_path / "serving" / "retrieval").iterdir()
    )


def test_other_errors(run_dir, tmp_path):
    items = write_items(tmp_path / "items.csv", [("i1", "t", "jazz")])
    with pytest.raises(DataError, match="missing column 'name'"):
        index_catalogue(run_dir, items, tmp_path / "s", columns=CatalogueColumns(title_col="name"))
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        index_catalogue(run_dir, tmp_path / "nope.csv", tmp_path / "s")
    unk = write_items(tmp_path / "unk.csv", [("[UNK]", "t", "jazz")])
    with pytest.raises(ValueError, match=r"unk.csv: .*'\[UNK\]'.* reserved"):
        index_catalogue(run_dir, unk, tmp_path / "s")
    ranking = tmp_path / "ranking_run"
    ranking.mkdir()
    (ranking / "config.json").write_text('{"kind": "ranking"}')
    with pytest.raises(ValueError, match="a ranking run; expected a retrieval run"):
        index_catalogue(ranking, items, tmp_path / "s")


@pytest.fixture(scope="module")
def no_features_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("plain"), "--set", "use_item_features=false")


def test_a_run_without_content_refuses_new_items_but_removes(no_features_run, tmp_path):
    new = write_items(tmp_path / "new.csv", [*known_rows(["i2", "i3"]), NEW[0]])
    with pytest.raises(ValueError, match=r"1 item id\(s\) the run never saw.*no content features"):
        index_catalogue(no_features_run, new, tmp_path / "serving")
    fewer = write_items(tmp_path / "fewer.csv", known_rows(KEPT))
    path = index_catalogue(no_features_run, fewer, tmp_path / "serving")
    ids, scores = answers(path, [["i0", "i2"], ["", ""]], k=40)
    assert set(ids[0][np.isfinite(scores[0])]) == set(KEPT) - {"i2"}
    assert set(ids[1]) == set(KEPT)
