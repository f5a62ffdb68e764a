"""The IVF index (tfrec/export/ivf.py) and ``export_retrieval(index="ivf")``.

Partitioning is checked on hand-made clusters, the serving graph against brute
force (exactly when every partition is probed, by recall otherwise), and the
exported SavedModel through its signatures, also in a fresh process without tfrec.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from testing_utils import ExportCase, check_in_fresh_process

from tfrec.data.vocab import IdVocabulary
from tfrec.export.ivf import IvfIndex, build_ivf_index
from tfrec.export.ivf_partition import PAD, choose_nprobe, probe_recall
from tfrec.export.retrieval import export_retrieval
from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
from tfrec.training.config import TrainingConfig

NUM_ITEMS = 40
PARTITIONS = 5

# Three direction clusters in D = 4 (rows 0-3 along e1, 4-7 along e2, 8-11 along e3).
CLUSTERS = np.array(
    [
        [4, 1, 0, 0], [4, -1, 0, 0], [5, 0, 1, 0], [5, 0, -1, 0],
        [1, 4, 0, 0], [-1, 4, 0, 0], [0, 5, 0, 1], [0, 5, 0, -1],
        [0, 0, 4, 1], [0, 1, 4, 0], [0, 0, 5, -1], [0, -1, 5, 0],
    ],
    np.float32,
)  # fmt: skip


@pytest.mark.parametrize("spherical", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kmeans_recovers_hand_made_clusters(spherical, seed):
    data = build_ivf_index(CLUSTERS, 3, seed=seed, spherical=spherical)
    partitions = sorted(tuple(row[row != PAD]) for row in data.table)
    assert partitions == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    # Centroids are the (raw) means: (4+4+5+5)/4 = 4.5 on the cluster's axis,
    # (1-1+0+0)/4 = 0 and (0+0+1-1)/4 = 0 elsewhere; the e3 cluster: (0, 0, 4.5, 0).
    order = np.argsort([row[0] for row in data.table])
    expected = [[4.5, 0, 0, 0], [0, 4.5, 0, 0], [0, 0, 4.5, 0]]
    np.testing.assert_allclose(data.centroids[order], expected, atol=1e-6)
    assert data.sizes.tolist() == [4, 4, 4] and data.padding_overhead == 1.0


def test_oversized_partitions_are_split():
    # One partition asked for, at most 3 items each: 12 items -> at least 4 partitions.
    data = build_ivf_index(CLUSTERS, 1, max_partition_size=3)
    assert data.sizes.max() <= 3 and data.num_partitions >= 4
    rows = np.sort(data.table[data.table != PAD])
    np.testing.assert_array_equal(rows, np.arange(12))  # every item exactly once
    # Five identical vectors cannot be split by k-means: they are cut into chunks 2, 2, 1.
    same = build_ivf_index(np.ones((5, 4), np.float32), 1, max_partition_size=2)
    assert sorted(same.sizes.tolist()) == [1, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 0}, "num_partitions=0"),
        ({"num_partitions": 13}, "expected 1..12"),
        ({"num_partitions": 2, "max_partition_size": 0}, "max_partition_size=0"),
    ],
)
def test_build_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_ivf_index(CLUSTERS, **kwargs)


def test_build_rejects_non_finite_vectors():
    vectors = CLUSTERS.copy()
    vectors[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        build_ivf_index(vectors, 2)


def test_choose_nprobe_is_the_first_to_reach_the_target():
    recall = np.array([0.5, 0.9, 0.96, 1.0])  # recall at nprobe 1, 2, 3, 4
    assert choose_nprobe(recall, 0.95) == 3
    assert choose_nprobe(recall, 0.9) == 2
    assert choose_nprobe(recall, 1.0) == 4


def _search(index, queries, nprobe, top=10, exclude=None):
    exclude = np.zeros((len(queries), 0), np.int32) if exclude is None else exclude
    values, ids = index.search(
        tf.constant(queries),
        tf.constant(exclude, tf.int32),
        tf.constant(top),
        tf.fill([len(queries)], nprobe),
    )
    return values.numpy(), ids.numpy()


def test_recall_with_a_quarter_of_the_partitions_beats_a_blind_partition():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((2000, 8)).astype(np.float32)
    queries = rng.standard_normal((200, 8)).astype(np.float32)
    data = build_ivf_index(items, 32, seed=0)
    index = IvfIndex(data, items, np.arange(2000) + 2, nprobe=1)
    truth = np.argsort(-(queries @ items.T), axis=1)[:, :10] + 2
    _, ids = _search(index, queries, nprobe=4)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)])
    # A partition blind to the geometry finds each true neighbour with probability equal
    # to the share of items scanned: at most the 4 largest partitions' share here.
    scanned = np.sort(data.sizes)[::-1][:4].sum() / 2000
    assert scanned < 0.2
    # Measured 0.74-0.75 over seeds 0-3; the bound is three times the blind partition's.
    assert recall >= 3 * scanned
    # The numpy recall curve used to choose the default nprobe agrees with the graph.
    assert probe_recall(data, items, queries)[3] == pytest.approx(recall, abs=0.01)


def test_search_fills_k_from_more_partitions_than_nprobe():
    rng = np.random.default_rng(1)
    items = rng.standard_normal((30, 4)).astype(np.float32)
    index = IvfIndex(build_ivf_index(items, 6), items, np.arange(30) + 2, nprobe=1)
    queries = rng.standard_normal((2, 4)).astype(np.float32)
    exclude = np.array([[2, 3, 0], [0, 0, 0]], np.int32)  # row 0 drops items 2 and 3
    values, ids = _search(index, queries, nprobe=1, top=30, exclude=exclude)
    # nprobe = 1 but 30 items asked: every partition is probed. Row 0 has 28 items
    # left (2 empty slots, -inf and id 0), row 1 all 30; scores descending.
    assert np.isinf(values[0, -2:]).all() and ids[0, -2:].tolist() == [0, 0]
    assert sorted(ids[0, :28]) == list(range(4, 32)) and sorted(ids[1]) == list(range(2, 32))
    assert np.all(np.diff(values[:, :28], axis=1) <= 0)


def _model() -> tuple[TwoTowerModel, IdVocabulary, IdVocabulary]:
    keras.utils.set_random_seed(3)  # the same weights (and partitions) in every run
    users = IdVocabulary([f"u{i}" for i in range(6)], name="user")
    items = IdVocabulary([f"i{i}" for i in range(NUM_ITEMS)], name="item")
    config = RetrievalConfig(
        embedding_dim=4,
        encoder="mean",
        max_history=4,
        use_user_embedding=True,
        training=TrainingConfig(seed=3),
    )
    return TwoTowerModel(config, users.size, items.size), users, items


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Brute-force, IVF (nprobe 2 of 5) and IVF probing every partition, of one model."""
    model, users, items = _model()
    base = tmp_path_factory.mktemp("ivf")
    paths = {
        "brute": export_retrieval(model, users, items, base, model_name="brute"),
        "ivf": export_retrieval(
            model, users, items, base, model_name="ivf", index="ivf",
            num_partitions=PARTITIONS, nprobe=2,
        ),
        "all": export_retrieval(
            model, users, items, base, model_name="all", index="ivf",
            num_partitions=PARTITIONS, nprobe=PARTITIONS,
        ),
    }  # fmt: skip
    loaded = {name: tf.saved_model.load(str(path)) for name, path in paths.items()}
    return paths, loaded


def _requests() -> dict[str, np.ndarray]:
    return {
        "user_id": np.array(["u0", "u3", "nobody", "", "u5"], dtype=object),
        "history": np.array(
            [
                ["", "i1", "i2", "i3"],
                ["i4", "i0", "", ""],
                ["i7", "unknown-item", "i2", ""],
                ["", "", "", ""],
                ["i11", "i11", "i36", "i5"],
            ],
            dtype=object,
        ),
        "k": np.array([3, 5, 10, 1, 36], dtype=np.int32),
    }


def _call(signature, request, **extra):
    inputs = {
        "user_id": tf.constant(request["user_id"].astype(str), tf.string),
        "history": tf.constant(np.asarray(request["history"]).astype(str), tf.string),
        "k": tf.constant(request["k"], tf.int32),
        **{name: tf.constant(value, tf.int32) for name, value in extra.items()},
    }  # fmt: skip
    out = signature(**inputs)
    return out["item_ids"].numpy().astype(str), out["scores"].numpy()


def test_probing_every_partition_equals_brute_force(exports):
    _, loaded = exports
    brute_ids, brute_scores = _call(loaded["brute"].signatures["serving_default"], _requests())
    for signature, extra in (
        (loaded["all"].signatures["serving_default"], {}),
        (loaded["ivf"].signatures["with_nprobe"], {"nprobe": [PARTITIONS] * 5}),
    ):
        ids, scores = _call(signature, _requests(), **extra)
        np.testing.assert_array_equal(ids, brute_ids)
        np.testing.assert_allclose(scores, brute_scores, rtol=1e-5, atol=1e-6)
    # Row 4 asked for 36 of the 40 items with 3 distinct history items: 36 real ids, none
    # of them in the history; row 0 excludes i1, i2, i3.
    assert "" not in brute_ids[4] and not {"i11", "i36", "i5"} & set(brute_ids[4])
    assert not {"i1", "i2", "i3"} & set(brute_ids[0])


def test_large_k_with_one_probe_still_fills_every_slot(exports):
    _, loaded = exports
    request = {**_requests(), "k": np.full(5, NUM_ITEMS - 4, np.int32)}
    ids, scores = _call(loaded["ivf"].signatures["with_nprobe"], request, nprobe=[1] * 5)
    brute_ids, _ = _call(loaded["brute"].signatures["serving_default"], request)
    np.testing.assert_array_equal(ids, brute_ids)  # 36 asked: every partition was needed
    assert np.isfinite(scores).all()


def test_nprobe_is_per_row_and_defaults_to_the_export_value(exports):
    _, loaded = exports
    with_nprobe = loaded["ivf"].signatures["with_nprobe"]
    default = _call(loaded["ivf"].signatures["serving_default"], _requests())
    explicit = _call(with_nprobe, _requests(), nprobe=[2] * 5)
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(default[1], explicit[1])
    # No history and k = 3: one probe misses brute-force items in some rows (the data
    # makes the check non-vacuous); probing every partition for one row fixes that row only.
    request = {**_requests(), "history": np.zeros((5, 0), str), "k": np.full(5, 3, np.int32)}
    brute = _call(loaded["brute"].signatures["serving_default"], request)[0]
    one = _call(with_nprobe, request, nprobe=[1] * 5)[0]
    missed = [row for row in range(5) if set(one[row]) != set(brute[row])]
    assert missed, "one probe found every brute-force item: the test data is too easy"
    for row in missed:
        nprobe = np.ones(5, np.int32)
        nprobe[row] = PARTITIONS
        mixed = _call(with_nprobe, request, nprobe=nprobe)[0]
        np.testing.assert_array_equal(mixed[row], brute[row])
        others = np.arange(5) != row
        np.testing.assert_array_equal(mixed[others], one[others])


@pytest.mark.parametrize(
    ("k", "nprobe", "message"),
    [
        ([0, 1], [1, 1], "k must be >= 1"),
        ([1, NUM_ITEMS + 1], [1, 1], f"k must be <= {NUM_ITEMS}"),
        ([1, 1], [0, 1], "nprobe must be >= 1"),
        ([1, 1], [1, PARTITIONS + 1], f"nprobe must be <= {PARTITIONS}"),
        ([1, 1], [1], "nprobe must have one value per user_id"),
    ],
)
def test_bad_k_or_nprobe_is_invalid_argument(exports, k, nprobe, message):
    _, loaded = exports
    request = {"user_id": np.array(["u0", "u1"]), "history": np.array([["i1"], [""]]), "k": k}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(loaded["ivf"].signatures["with_nprobe"], request, nprobe=nprobe)
    if "nprobe" not in message:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _call(loaded["ivf"].signatures["serving_default"], request)


@pytest.mark.parametrize("signature", ["serving_default", "with_nprobe"])
def test_empty_history_and_empty_batch(exports, signature):
    _, loaded = exports
    serve = loaded["ivf"].signatures[signature]
    extra = {"nprobe": [2, 2]} if signature == "with_nprobe" else {}
    users = np.array(["u1", "nobody"])
    empty = _call(serve, {"user_id": users, "history": np.zeros((2, 0), str), "k": [3, 5]}, **extra)
    padded = _call(serve, {"user_id": users, "history": np.full((2, 3), ""), "k": [3, 5]}, **extra)
    assert empty[0].shape == (2, 5) and "" not in empty[0]
    np.testing.assert_array_equal(empty[0], padded[0])
    np.testing.assert_allclose(empty[1], padded[1], rtol=1e-6)
    extra = {"nprobe": np.zeros(0, np.int32)} if signature == "with_nprobe" else {}
    for length in (0, 3):
        request = {"user_id": np.zeros(0, str), "history": np.zeros((0, length), str), "k": []}
        ids, scores = _call(serve, request, **extra)
        assert ids.shape == (0, 1) and scores.shape == (0, 1)  # K = 1 for an empty batch


def test_config_records_the_index(exports):
    paths, _ = exports
    config = json.loads((paths["ivf"] / "assets.extra" / "tfrec_config.json").read_text())
    index = config["index"]
    assert index["type"] == "ivf" and index["nprobe"] == 2 and index["num_items"] == NUM_ITEMS
    assert index["num_partitions"] >= PARTITIONS == index["requested_partitions"]
    assert "with_nprobe" in config["signatures"]
    brute = json.loads((paths["brute"] / "assets.extra" / "tfrec_config.json").read_text())
    assert brute["index"] == {"type": "brute"}


def test_default_nprobe_is_tuned_and_a_caller_config_gets_the_index(tmp_path):
    model, users, items = _model()
    path = export_retrieval(
        model, users, items, tmp_path, index="ivf", num_partitions=PARTITIONS,
        extra_files={"tfrec_config.json": '{"mine": 1}'},
    )  # fmt: skip
    config = json.loads((path / "assets.extra" / "tfrec_config.json").read_text())
    assert config["mine"] == 1 and config["index"]["type"] == "ivf"
    tuning = config["index"]["nprobe_tuning"]
    assert tuning["recall_at_10"] >= tuning["target_recall_at_10"] == 0.95
    assert 1 <= config["index"]["nprobe"] <= config["index"]["num_partitions"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"index": "hnsw"}, "index='hnsw'; expected one of"),
        ({"nprobe": 2}, "apply to index='ivf' only"),
        ({"index": "ivf", "num_partitions": NUM_ITEMS + 1}, f"expected 1..{NUM_ITEMS}"),
        ({"index": "ivf", "num_partitions": 2, "nprobe": 9}, "nprobe=9; expected 1..2"),
        (
            {"index": "ivf", "extra_files": {"tfrec_config.json": "[1]"}},
            "a JSON list; expected an object",
        ),
    ],
)
def test_export_rejects_bad_index_options(tmp_path, kwargs, message):
    model, users, items = _model()
    with pytest.raises(ValueError, match=message):
        export_retrieval(model, users, items, tmp_path, **kwargs)
    assert not (tmp_path / "retrieval").exists() or not any((tmp_path / "retrieval").iterdir())


def test_ivf_export_answers_the_same_in_a_fresh_process(exports, tmp_path):
    paths, loaded = exports
    request = _requests()
    ids, scores = _call(loaded["ivf"].signatures["serving_default"], request)
    case = ExportCase("ivf", paths["ivf"], request, ids.astype(object), scores)
    check_in_fresh_process([case], tmp_path)  # also checks that tfrec is never imported
