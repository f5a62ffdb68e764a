"""Out-of-core `tfrec prepare` (engine duckdb): the same output as the in-memory engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfrec.data.config import DataConfig
from tfrec.data.interactions import DataError
from tfrec.data.preparation import PrepareConfig, load_prepared, prepare
from tfrec.data.tfdata import tfrecord_dataset
from tfrec.data.vocab import IdVocabulary

PARTS = ("train", "valid", "test")


def make_log(seed: int = 0, users: int = 40, items: int = 25, rows: int = 500) -> pd.DataFrame:
    """A small log with what the cleaning has to get right: ties, duplicates, short users."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "u": [f"u{k}" for k in rng.integers(0, users, rows)],
            "i": [f"i{k}" for k in np.minimum(rng.zipf(1.5, rows), items)],
            "t": rng.integers(0, 60, rows),  # few distinct times: many ties
            "r": rng.integers(1, 6, rows).astype(float),
        }
    )
    dup = frame.sample(20, random_state=seed)  # exact duplicates (same user, item, time)
    single = pd.DataFrame({"u": ["solo"], "i": ["i-solo"], "t": [5], "r": [3.0]})
    return pd.concat([frame, dup, single], ignore_index=True).sample(frac=1, random_state=seed)


def base_config(path, out, engine, **data) -> PrepareConfig:
    data.setdefault("split", "leave_one_out")
    return PrepareConfig(
        data=DataConfig(
            dataset="csv",
            path=str(path),
            user_col="u",
            item_col="i",
            time_col=data.pop("time_col", "t"),
            rating_col=data.pop("rating_col", "r"),
            **data,
        ),
        output_dir=str(out),
        max_len=4,
        num_shards=3,
        engine=engine,
        batch_rows=64,  # many chunks even on a tiny log
    )


def sorted_examples(directory) -> dict[str, np.ndarray]:
    """Every example of a TFRecord directory, rows sorted (order and sharding may differ)."""
    if not (directory / "spec.json").exists():
        return {}
    batches = list(tfrecord_dataset(directory, 100_000, shuffle=False).as_numpy_iterator())
    features = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    flat = np.concatenate(
        [features[k].reshape(len(features[k]), -1).astype(np.float64) for k in sorted(features)],
        axis=1,
    )
    order = np.lexsort(flat.T[::-1])
    return {k: v[order] for k, v in features.items()}


def assert_same_output(a, b) -> None:
    """Two prepared directories hold the same vocabularies, rows, examples and summary."""
    for name in ("user_vocab.txt", "item_vocab.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in ("rows", "examples", "user_vocab_size", "item_vocab_size", "notes", "protocol"):
        assert sa[key] == sb[key], key
    for key in ("oov_item_ids", "oov_interactions", "has_ratings", "has_timestamps", "name"):
        assert sa[key] == sb[key], key
    for part in sa["rows"]:
        fa = pd.read_parquet(a / "interactions" / f"{part}.parquet")
        fb = pd.read_parquet(b / "interactions" / f"{part}.parquet")
        pd.testing.assert_frame_equal(fa, fb, check_dtype=False)
        ea, eb = sorted_examples(a / part), sorted_examples(b / part)
        assert ea.keys() == eb.keys()
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"{part}/{key}")
    if (a / "items.parquet").exists() or (b / "items.parquet").exists():
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / "items.parquet"), pd.read_parquet(b / "items.parquet")
        )


def write_parts(log: pd.DataFrame, folder: Path) -> Path:
    """Writes ``log`` to ``folder`` as part-0.parquet, part-1.csv and part-2.parquet.

    Rows 0-149, 150-329 and the rest: a user's rows spread over the files, and
    ties across files keep file order. Returns ``folder``.
    """
    folder.mkdir()
    for k, (lo, hi) in enumerate([(0, 150), (150, 330), (330, len(log))]):
        chunk = log.iloc[lo:hi]
        if k == 1:
            chunk.to_csv(folder / f"part-{k}.csv", index=False)
        else:
            chunk.to_parquet(folder / f"part-{k}.parquet", index=False)
    return folder


def run_both(tmp_path, path, **kwargs):
    outs = {}
    for engine in ("pandas", "duckdb"):
        outs[engine] = tmp_path / f"out-{engine}"
        result = prepare(base_config(path, outs[engine], engine, **kwargs))
        assert result.engine == engine
    return outs["pandas"], outs["duckdb"]


SPLITS = [
    pytest.param({}, id="loo-valid"),
    pytest.param({"valid_fraction": 0.0}, id="loo-no-valid"),
    pytest.param({"split": "temporal", "valid_fraction": 0.1}, id="temporal-valid"),
    pytest.param({"split": "temporal", "valid_fraction": 0.0}, id="temporal-no-valid"),
    pytest.param({"min_rating": 3.0}, id="loo-min-rating"),
    pytest.param({"time_col": None, "rating_col": None}, id="loo-no-time-no-rating"),
]


@pytest.mark.parametrize("data", SPLITS)
def test_streaming_matches_in_memory(tmp_path, data):
    path = tmp_path / "log.csv"
    make_log().to_csv(path, index=False)
    pandas_out, duckdb_out = run_both(tmp_path, path, **data)
    assert_same_output(pandas_out, duckdb_out)
    summary = json.loads((duckdb_out / "summary.json").read_text())
    # the log has 20 sampled duplicate rows (without times, positions make every row
    # distinct) and a one-row user: both show up in the notes, so the comparison covered them
    dropped = any(n.startswith("dropped ") and "exact duplicate" in n for n in summary["notes"])
    assert dropped == ("time_col" not in data)
    if data.get("split") != "temporal":  # at least "solo" was too short to split
        assert any("user(s) with fewer than" in n for n in summary["notes"])
    else:
        assert any(n.startswith("temporal: test = timestamp >= ") for n in summary["notes"])


def test_last_mode_items_table_and_no_extras_match(tmp_path):
    path = tmp_path / "log.csv"
    make_log(seed=1).to_csv(path, index=False)
    items = tmp_path / "items.csv"
    # i1..i9 (some never seen: catalogue-only) plus a title; i-solo is absent from the table
    items.write_text("i,title\n" + "".join(f"i{k},T{k}\n" for k in range(1, 30)))
    outs = []
    for engine in ("pandas", "duckdb"):
        config = base_config(path, tmp_path / engine, engine, items_path=str(items))
        config.data.title_col = "title"
        config.mode, config.extras = "last", False
        prepare(config)
        outs.append(tmp_path / engine)
    assert_same_output(*outs)
    tokens = IdVocabulary.load(outs[1] / "item_vocab.txt").tokens
    assert tokens[-1] == "i29"  # catalogue-only items come after the seen ones
    notes = json.loads((outs[1] / "summary.json").read_text())["notes"]
    assert "1 interaction(s) refer to items absent from the item table" in notes


CAPS_LOG = "u,i,t\nu1,a,1\nu1,b,2\nu1,a,3\nu1,c,4\nu2,b,1\nu2,a,2\nu2,d,3\nu3,a,1\nu3,b,2\nu3,e,3\n"


def caps_log_argv(tmp_path) -> tuple[list[str], Path]:
    """``tfrec prepare`` arguments for :data:`CAPS_LOG` (written to ``tmp_path``), max-len 3.

    Returns:
        The arguments and the output directory they name.
    """
    path = tmp_path / "log.csv"
    path.write_text(CAPS_LOG)
    out = tmp_path / "out"
    argv = ["prepare", "--dataset", "csv", "--path", str(path), "--user-col", "u"]
    argv += ["--item-col", "i", "--time-col", "t", "--output-dir", str(out), "--max-len", "3"]
    return argv, out


@pytest.mark.parametrize(
    ("caps", "kept", "oov_ids", "oov_rows"),
    [
        # counts: a 4, b 3, c 1, d 1, e 1; first appearance a b c d e
        ((2, 0), ["a", "b"], 3, 3),  # c, d, e have fewer than 2
        ((0, 1), ["a"], 4, 6),  # only the most frequent
        ((1, 3), ["a", "b", "c"], 2, 2),  # ties at count 1 broken by first appearance: c
    ],
)
@pytest.mark.parametrize("engine", ["pandas", "duckdb"])
def test_vocabulary_caps_and_oov_report(tmp_path, engine, caps, kept, oov_ids, oov_rows):  # noqa: PLR0917
    path = tmp_path / "log.csv"
    path.write_text(CAPS_LOG)
    config = base_config(path, tmp_path / "out", engine, rating_col=None)
    config.min_item_count, config.max_items, config.max_len = *caps, 3
    result = prepare(config)
    assert IdVocabulary.load(tmp_path / "out" / "item_vocab.txt").tokens == kept
    assert (result.oov_item_ids, result.oov_interactions) == (oov_ids, oov_rows)
    assert result.item_vocab_size == len(kept) + 2
    assert f"{oov_ids:,} id(s) and {oov_rows:,} interaction(s)" in result.notes[-1]
    if caps == (1, 3):
        test = sorted_examples(tmp_path / "out" / "test")
        test = {k: v[np.argsort(test["user"])] for k, v in test.items()}
        # u1 a b a | c -> [a b a] -> c=4; u2 b a | d -> [0 b a] -> OOV; u3 a b | e -> OOV
        np.testing.assert_array_equal(test["user"], [2, 3, 4])
        np.testing.assert_array_equal(test["history"], [[2, 3, 2], [0, 3, 2], [0, 2, 3]])
        np.testing.assert_array_equal(test["target"][:, -1], [4, 1, 1])


def test_glob_of_parquet_and_csv_files_matches_one_file(tmp_path):
    log = make_log(seed=2)
    single = tmp_path / "all.csv"
    log.to_csv(single, index=False)
    parts = write_parts(log, tmp_path / "parts")
    prepare(base_config(single, tmp_path / "pandas", "pandas"))
    prepare(base_config(parts / "part-*", tmp_path / "glob", "duckdb"))
    prepare(base_config(parts, tmp_path / "dir", "duckdb"))
    for name in ("glob", "dir"):
        a, b = tmp_path / "pandas", tmp_path / name
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        sb["name"] = sa["name"]  # the name comes from the path
        (b / "summary.json").write_text(json.dumps(sb))
        assert_same_output(a, b)


def test_parquet_typed_columns_match_csv(tmp_path):
    log = make_log(seed=3)
    log["u"] = log["u"].str.replace("u", "").replace("solo", "999").astype(np.int64)
    log.to_csv(tmp_path / "log.csv", index=False)
    log.to_parquet(tmp_path / "log.parquet", index=False)  # int ids, int times, float ratings
    prepare(base_config(tmp_path / "log.csv", tmp_path / "csv", "pandas"))
    prepare(base_config(tmp_path / "log.parquet", tmp_path / "pq", "duckdb"))
    # string order of integer ids: "10" < "9"
    users = IdVocabulary.load(tmp_path / "pq" / "user_vocab.txt").tokens
    assert users == sorted(users) and users[:2] == ["0", "1"] and "999" in users
    assert_same_output(tmp_path / "csv", tmp_path / "pq")


def test_missing_columns_and_bad_values_are_located(tmp_path):
    frame = pd.DataFrame({"u": ["a"], "item": ["x"], "t": [1]})
    frame.to_parquet(tmp_path / "log.parquet", index=False)
    with pytest.raises(DataError, match=r"log\.parquet: missing column\(s\) \['i'\]; the file has"):
        prepare(base_config(tmp_path / "log.parquet", tmp_path / "o", "duckdb", rating_col=None))
    (tmp_path / "log.csv").write_text("u,item,t\na,x,1\n")
    with pytest.raises(
        DataError, match=r"log\.csv: line 1 \(header\): missing column\(s\) \['i'\]"
    ):
        prepare(base_config(tmp_path / "log.csv", tmp_path / "o", "duckdb", rating_col=None))
    (tmp_path / "bad.csv").write_text("u,i,t\na,x,1\n\nb,y,soon\n")  # blank line 3
    with pytest.raises(
        DataError, match=r"bad\.csv: line 4, column 3 \(timestamp, 't'\): got 'soon'"
    ):
        prepare(base_config(tmp_path / "bad.csv", tmp_path / "o", "duckdb", rating_col=None))
    pd.DataFrame({"u": ["a", None], "i": ["x", "y"], "t": [1, 2]}).to_parquet(tmp_path / "n.pq")
    with pytest.raises(DataError, match=r"n\.pq: row 2, column 'u' \(user id\): got a null value"):
        prepare(base_config(tmp_path / "n.pq", tmp_path / "o", "duckdb", rating_col=None))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        prepare(base_config(tmp_path / "nothing-*.csv", tmp_path / "o", "duckdb"))
    assert not (tmp_path / "o").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unsupported_settings_name_the_option(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(CAPS_LOG)
    with pytest.raises(ValueError, match=r"--split random .* use --engine pandas"):
        prepare(base_config(path, tmp_path / "o", "duckdb", split="random", rating_col=None))
    with pytest.raises(ValueError, match="--memory-limit 'lots'"):
        config = base_config(path, tmp_path / "o", "duckdb", rating_col=None)
        config.memory_limit = "lots"
        prepare(config)
    # auto falls back to pandas where streaming cannot follow
    result = prepare(base_config(path, tmp_path / "r", "auto", split="random", rating_col=None))
    assert result.engine == "pandas"
    assert not (tmp_path / "o").exists()


def test_a_failure_after_writing_leaves_no_output(tmp_path):
    # every row at one timestamp: the temporal cut (found after the sort pass, while the
    # output is half written) leaves no training rows -> error, nothing left behind
    path = tmp_path / "log.csv"
    path.write_text("u,i,t\na,x,5\na,y,5\nb,x,5\n")
    out = tmp_path / "out"
    config = base_config(path, out, "duckdb", split="temporal", rating_col=None)
    with pytest.raises(ValueError, match="the cut at timestamp 5 leaves no training rows"):
        prepare(config)
    assert list(tmp_path.iterdir()) == [path]


def test_streamed_output_loads_and_feeds_training(tmp_path):
    path = tmp_path / "log.csv"
    make_log(seed=4).to_csv(path, index=False)
    config = base_config(path, tmp_path / "out", "duckdb")
    prepare(config)
    loaded = load_prepared(tmp_path / "out")
    assert loaded.config == config and loaded.summary.engine == "duckdb"
    batch = next(loaded.dataset("train", 16, shuffle=True).as_numpy_iterator())
    assert batch["history"].shape == (16, 4) and batch["history"].dtype == np.int32
    assert set(loaded.parts) == set(PARTS)


MEMORY_SCRIPT = """
import sys
import tfrec
from tfrec.data.config import DataConfig
from tfrec.data.preparation import PrepareConfig, prepare

def kib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))

path, out = sys.argv[1], sys.argv[2]
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")  # reset the peak (VmHWM) to the current RSS (after the imports)
before = kib("VmRSS:")
prepare(PrepareConfig(
    data=DataConfig(dataset="csv", path=path, time_col="timestamp"), output_dir=out,
    max_len=8, num_shards=2, engine="duckdb", memory_limit="64MB", batch_rows=20000))
print(before, kib("VmHWM:"))
"""


def write_random_log(path, rows: int, users: int = 2000, items: int = 1000) -> None:
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "user_id": np.array([f"u{k}" for k in range(users)])[rng.integers(0, users, rows)],
            "item_id": np.array([f"i{k}" for k in range(items)])[rng.integers(0, items, rows)],
            "timestamp": rng.integers(0, 10**9, rows),
        }
    ).to_parquet(path, index=False)


def test_peak_memory_does_not_grow_with_rows(tmp_path):
    added = {}
    for rows in (300_000, 1_200_000):
        path = tmp_path / f"{rows}.parquet"
        write_random_log(path, rows)
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(path), str(tmp_path / f"out{rows}")],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        before, after = map(int, done.stdout.split()[-2:])
        added[rows] = after - before  # KiB the preparation added to the process's peak
    # same users and items (same vocabularies), 4x the rows: the in-memory engine would
    # need about 900k x 680 B = +600 MB more; the streaming one stays within its buffers:
    # DuckDB's sort may fill its 64 MB memory_limit with more rows (seen: +14 MB on one run,
    # +52 MB on another), the 20,000-row batches add a few MB; 100 MB bounds both.
    assert added[1_200_000] - added[300_000] < 100 * 1024, added


def test_a_memory_limit_too_small_for_the_sort_says_which_option_to_raise(tmp_path):
    path = tmp_path / "log.parquet"
    write_random_log(path, 200_000)  # measured: DuckDB cannot sort this within 16MB
    config = PrepareConfig(
        data=DataConfig(dataset="csv", path=str(path), time_col="timestamp"),
        output_dir=str(tmp_path / "out"),
        engine="duckdb",
        memory_limit="16MB",
    )
    with pytest.raises(MemoryError, match=r"more than --memory-limit 16MB .* raise --memory-limit"):
        prepare(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet"]


def test_cli_options_reach_the_streaming_engine(tmp_path, capsys):
    from tfrec.cli.main import main

    argv, out = caps_log_argv(tmp_path)
    argv += ["--engine", "duckdb", "--max-items", "1", "--memory-limit", "256MB"]
    assert main([*argv, "--batch-rows", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # counts a 4, b 3, c/d/e 1: only a is kept; 4 ids and 6 interactions map to OOV
    assert (printed["engine"], printed["oov_item_ids"], printed["oov_interactions"]) == (
        "duckdb",
        4,
        6,
    )
    config = json.loads((out / "prepare_config.json").read_text())
    assert (config["memory_limit"], config["batch_rows"], config["max_items"]) == ("256MB", 4, 1)
