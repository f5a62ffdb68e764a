"""The scale generator (``tfrec synth``): exact sizes, determinism, Zipf, planted signal, memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tfrec.data import synth_writer
from tfrec.data.loaders import load_dataset
from tfrec.data.synth import SynthConfig, build_catalogue, generate_blocks, user_lengths
from tfrec.data.synth_writer import default_items_path, write_synthetic

REPO_ROOT = Path(__file__).resolve().parents[2]


def harmonic(n: int) -> float:
    return sum(1.0 / k for k in range(1, n + 1))


def rows_of(config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(item per row, events per user) of the whole log, in memory (tiny configs only)."""
    blocks = list(generate_blocks(config))
    return np.concatenate([b.items for b in blocks]), np.concatenate([b.lengths for b in blocks])


def consecutive_pairs(items: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous, next) item of every pair of consecutive events of one user."""
    first = np.zeros(len(items), dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    return items[:-1][~first[1:]], items[1:][~first[1:]]


def test_log_has_exact_rows_declared_ids_and_increasing_times(tmp_path):
    # 2500 users: three blocks of 1024 users, each over 1000 rows, so three row groups.
    config = SynthConfig(num_users=2500, num_items=500, num_interactions=30000, max_len=60, seed=5)
    summary = write_synthetic(config, tmp_path / "log.parquet", row_group_rows=1000)
    log = pd.read_parquet(tmp_path / "log.parquet")
    assert len(log) == 30000 and summary.num_interactions == 30000
    assert list(log.columns) == ["user_id", "item_id", "timestamp"]
    assert log["timestamp"].dtype == np.int64
    assert set(log["user_id"]) == {f"u{u}" for u in range(2500)}  # every user has >= 3 events
    assert set(log["item_id"]) <= {f"i{i}" for i in range(500)}
    sizes = log.groupby("user_id", sort=False).size()
    assert sizes.min() >= 3 and sizes.max() <= 60
    # Each user's rows are contiguous (2500 runs of user ids) with strictly increasing times.
    assert (log["user_id"] != log["user_id"].shift()).sum() == 2500
    same_user = log["user_id"].to_numpy()[1:] == log["user_id"].to_numpy()[:-1]
    assert np.all(np.diff(log["timestamp"].to_numpy())[same_user] > 0)
    assert not log.duplicated(["user_id", "item_id"]).any()  # no repeats by default
    # Row groups hold whole users.
    parquet = pq.ParquetFile(tmp_path / "log.parquet")
    groups = [parquet.read_row_group(g).to_pandas() for g in range(parquet.num_row_groups)]
    assert parquet.num_row_groups == summary.row_groups == 3
    assert all(len(g) >= 1000 for g in groups)
    assert sum(g["user_id"].nunique() for g in groups) == 2500  # no user in two groups
    assert json.loads(parquet.schema_arrow.metadata[b"tfrec.synth"])["seed"] == 5


def test_same_seed_same_bytes_other_seed_other_rows_row_groups_irrelevant(tmp_path):
    config = SynthConfig(num_users=2500, num_items=400, num_interactions=30000, seed=7)
    write_synthetic(config, tmp_path / "a.parquet", row_group_rows=5000)
    write_synthetic(config, tmp_path / "b.parquet", row_group_rows=5000)
    write_synthetic(config, tmp_path / "c.parquet", row_group_rows=100_000)
    other = SynthConfig(num_users=2500, num_items=400, num_interactions=30000, seed=8)
    write_synthetic(other, tmp_path / "d.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    for name in ("a.items.parquet", "b.items.parquet"):
        assert (tmp_path / name).is_file()
    a, c = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "c.parquet")
    assert pq.ParquetFile(tmp_path / "a.parquet").num_row_groups > 1
    assert pq.ParquetFile(tmp_path / "c.parquet").num_row_groups == 1
    pd.testing.assert_frame_equal(a, c)  # 2500 users = 3 user blocks, grouped differently
    d = pd.read_parquet(tmp_path / "d.parquet")
    assert len(d) == len(a) and not d["item_id"].equals(a["item_id"])


def test_zipf_popularity_matches_the_law():
    # p_successor=0 with repeats: every row is an independent Zipf draw.
    # Exponent 1 over 2000 items: the top 1% (20 items) hold H(20)/H(2000) = 3.598/8.178 = 0.440,
    # the top 10% hold H(200)/H(2000) = 5.878/8.178 = 0.719 (standard error ~0.0025 at 40k rows).
    config = SynthConfig(
        num_users=2000,
        num_items=2000,
        num_interactions=40000,
        zipf_exponent=1.0,
        p_successor=0.0,
        allow_repeats=True,
        seed=3,
    )
    items, _ = rows_of(config)
    counts = np.sort(np.bincount(items, minlength=2000))[::-1]
    assert counts[:20].sum() / 40000 == pytest.approx(harmonic(20) / harmonic(2000), abs=0.015)
    assert counts[:200].sum() / 40000 == pytest.approx(harmonic(200) / harmonic(2000), abs=0.015)


def test_activity_is_long_tailed_and_sums_exactly():
    # Lognormal(sigma=1) weights: the top 10% of users hold 1 - Phi(1.2816 - 1) = 0.389 of the
    # weight. With 60000 events, 2000 users and min_len 3, they get
    # (0.389 * 54000 + 200 * 3) / 60000 = 0.36 of the events; with sigma 0 about 0.1 (+ noise).
    def top_decile_share(sigma: float) -> float:
        config = SynthConfig(
            num_users=2000, num_items=2000, num_interactions=60000, activity_sigma=sigma
        )
        lengths = user_lengths(config)
        assert lengths.sum() == 60000 and lengths.min() >= 3
        return float(np.sort(lengths)[::-1][:200].sum() / 60000)

    assert top_decile_share(1.0) == pytest.approx(0.36, abs=0.03)
    assert top_decile_share(0.0) < 0.15
    capped = user_lengths(SynthConfig(num_users=100, num_items=50, num_interactions=2000))
    assert capped.sum() == 2000 and capped.max() <= 50  # max_len defaults to num_items


def test_successors_are_one_cycle_per_category():
    catalogue = build_catalogue(SynthConfig(num_users=10, num_items=60, num_interactions=100))
    categories = catalogue.category
    assert np.bincount(categories).tolist() == [1] * 60  # min(100, 60) categories of one item
    catalogue = build_catalogue(
        SynthConfig(num_users=10, num_items=60, num_interactions=100, num_categories=4)
    )
    succ = catalogue.successor(np.arange(60))
    assert np.array_equal(catalogue.category[succ], catalogue.category)
    assert sorted(succ.tolist()) == list(range(60))  # a permutation
    for start in range(4):  # walking from any item visits its whole category (15 items) once
        item, seen = int(np.flatnonzero(catalogue.category == start)[0]), set()
        while item not in seen:
            seen.add(item)
            item = int(succ[item])
        assert len(seen) == 15


@pytest.mark.parametrize(
    ("p", "allow_repeats", "low", "high"),
    [
        (0.0, True, 0.0, 0.005),
        (0.5, True, 0.48, 0.52),
        (0.9, True, 0.88, 0.92),
        (0.5, False, 0.43, 0.51),  # redrawing repeats turns a few successor steps into new draws
    ],
)
def test_planted_successor_signal(p, allow_repeats, low, high):
    # 7600 consecutive pairs: the standard error of a share near 0.5 is 0.006. A new draw equals
    # the successor by chance with probability sum_i P(prev=i) P(next=succ(i)), about 0.005.
    config = SynthConfig(
        num_users=400,
        num_items=5000,
        num_interactions=8000,
        num_categories=10,
        p_successor=p,
        allow_repeats=allow_repeats,
        seed=1,
    )
    successor = build_catalogue(config).successor
    prev, nxt = consecutive_pairs(*rows_of(config))
    assert len(prev) == 8000 - 400
    assert low <= np.mean(nxt == successor(prev)) <= high
    # Control: the same items, next items shuffled, follow the map only by popularity chance.
    shuffled = np.random.default_rng(0).permutation(nxt)
    f_prev = np.bincount(prev, minlength=5000) / len(prev)
    f_next = np.bincount(nxt, minlength=5000) / len(nxt)
    chance = float(np.sum(f_prev * f_next[successor(np.arange(5000))]))
    assert np.mean(shuffled == successor(prev)) == pytest.approx(chance, abs=0.004)
    assert chance < 0.01


def test_no_repeats_even_when_users_take_most_of_the_catalogue():
    # 50 users with 8..10 of only 10 items: popularity redraws rarely find the last unseen
    # items, so the uniform rounds and the exact fallback must finish the job.
    config = SynthConfig(num_users=50, num_items=10, num_interactions=450, min_len=8, seed=2)
    items, lengths = rows_of(config)
    assert lengths.sum() == 450 and lengths.max() <= 10
    for user_items in np.split(items, np.cumsum(lengths)[:-1]):
        assert len(set(user_items.tolist())) == len(user_items)


def test_repeats_when_allowed_are_counted(tmp_path):
    config = SynthConfig(
        num_users=50, num_items=10, num_interactions=1000, allow_repeats=True, seed=2
    )
    summary = write_synthetic(config, tmp_path / "log.parquet")
    log = pd.read_parquet(tmp_path / "log.parquet")
    repeated = int(log.duplicated(["user_id", "item_id"]).sum())
    assert repeated > 0 and summary.repeated_interactions == repeated


def test_item_file_loads_with_the_csv_loader(tmp_path):
    config = SynthConfig(num_users=100, num_items=2000, num_interactions=1500, num_categories=5)
    summary = write_synthetic(config, tmp_path / "log.parquet")
    assert summary.items_output == str(tmp_path / "log.items.parquet")
    data = load_dataset(
        "csv",
        path=str(tmp_path / "log.parquet"),
        items_path=summary.items_output,
        time_col="timestamp",
        title_col="title",
        genres_col="genres",
    )
    assert len(data.frame) == 1500 and data.num_users == 100
    items = data.items.set_index("item_id")
    assert len(items) == 2000  # the whole catalogue: items without events are cold items
    cold = sorted(set(items.index) - set(data.frame["item_id"]))
    assert len(cold) == summary.cold_items > 0
    for genres, title in zip(items["genres"], items["title"], strict=True):
        (category,) = genres
        tokens = title.split()
        # two tokens of the category's own vocabulary (c<k>w<j>) and two shared ones (w<v>)
        assert category.startswith("cat") and len(tokens) == 4
        assert all(t.startswith(f"c{category[3:]}w") for t in tokens[:2])
        assert all(t.startswith("w") for t in tokens[2:])
    assert sorted({g[0] for g in items["genres"]}) == [f"cat{c}" for c in range(5)]


def test_default_items_path():
    assert default_items_path("/d/log.parquet") == Path("/d/log.items.parquet")
    assert default_items_path("/d/log") == Path("/d/log.items.parquet")


def test_existing_outputs_are_kept_and_a_failed_run_leaves_no_files(tmp_path, monkeypatch):
    config = SynthConfig(num_users=3000, num_items=50, num_interactions=9000)
    (tmp_path / "log.parquet").write_text("keep")
    with pytest.raises(FileExistsError, match=r"log\.parquet"):
        write_synthetic(config, tmp_path / "log.parquet")
    assert (tmp_path / "log.parquet").read_text() == "keep"
    calls = []

    def failing_block(*args):
        calls.append(args[-1])
        if len(calls) == 2:  # the second of three user blocks
            raise RuntimeError("disk full")
        return real_block(*args)

    real_block = synth_writer.generate_block
    monkeypatch.setattr(synth_writer, "generate_block", failing_block)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic(config, tmp_path / "new.parquet", row_group_rows=10)
    assert sorted(os.listdir(tmp_path)) == ["log.parquet"]  # no output, no temporary file


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_interactions": 10}, r"num_interactions=10; expected in \[60, 400\]"),
        ({"max_len": 50}, "max_len=50 exceeds num_items=20"),
        ({"p_successor": 1.5}, r"p_successor=1.5; expected in \[0, 1\]"),
        ({"num_categories": 21}, r"num_categories=21; expected in \[1, num_items=20\]"),
        ({"seed": -1}, "seed=-1; expected >= 0"),
    ],
)
def test_invalid_configs_name_the_field(overrides, message):
    arguments = {"num_users": 20, "num_items": 20, "num_interactions": 100, **overrides}
    with pytest.raises(ValueError, match=message):
        SynthConfig(**arguments)


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, tempfile
    from tfrec.data.synth import SynthConfig
    from tfrec.data.synth_writer import write_synthetic

    def peak_kb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run(rows):
        config = SynthConfig(num_users=rows // 20, num_items=50_000, num_interactions=rows)
        with tempfile.TemporaryDirectory() as folder:
            write_synthetic(config, folder + "/log.parquet", row_group_rows=100_000)

    run(200_000)  # warm up: libraries, allocator pools
    base = peak_kb()
    run(500_000)
    small = peak_kb()
    run(2_000_000)
    print(json.dumps({"small_kb": small - base, "large_kb": peak_kb() - small}))
    """
)


def test_memory_stays_bounded_while_rows_grow():
    # The most compact in-memory table (int32 user, int32 item, int64 time) of 2M rows is 32 MB
    # (a pandas frame of strings is ~10x more). Streaming needs one 100k-row group plus
    # O(users + items) arrays: the peak RSS grows far less than that, and 4x more rows add
    # little beyond the per-user arrays (75k more users x ~50 bytes = ~4 MB).
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    growth = json.loads(done.stdout.strip().splitlines()[-1])
    assert growth["small_kb"] + growth["large_kb"] < 16 * 1024, growth
    assert growth["large_kb"] < 10 * 1024, growth
