"""`tfrec prepare --runner`: the Apache Beam pipeline writes what the embedded path writes.

Every pipeline runs on the DirectRunner in multi-process mode (2 workers).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

# Beam 2.77 pins protobuf < 7 and pyarrow < 26, older than the test venv's; it lives in the
# `beam` extra, and CI runs this file in its own venv: pip install -e './client' -e '.[test,beam]'
# then pytest tests/data/test_beam_prepare.py (see docs/scale.md).
pytest.importorskip(
    "apache_beam",
    reason="Apache Beam is in the `beam` extra, not `test`; CI runs this file in a venv with "
    "pip install -e '.[test,beam]' (docs/scale.md, 'Apache Beam')",
)

from tests.data.test_streaming_prepare import (
    assert_same_output,
    base_config,
    caps_log_argv,
    make_log,
    sorted_examples,
    write_parts,
)
from tfrec.data.beam_prepare import prepare_beam
from tfrec.data.beam_transforms import BINS, ROUNDS, refine
from tfrec.data.interactions import DataError
from tfrec.data.preparation import load_prepared, prepare
from tfrec.data.streaming_passes import value_at_rank
from tfrec.data.vocab import IdVocabulary

DIRECT = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


def run_beam(config):
    return prepare_beam(config, "DirectRunner", DIRECT)


def test_leave_one_out_with_caps_matches_embedded_and_trains(tmp_path):
    path = tmp_path / "log.csv"
    make_log().to_csv(path, index=False)
    configs = [base_config(path, tmp_path / name, "duckdb") for name in ("embedded", "beam")]
    for config in configs:
        config.min_item_count, config.max_items = 2, 8
    prepare(configs[0])
    result = run_beam(configs[1])
    assert_same_output(tmp_path / "embedded", tmp_path / "beam")
    # what the comparison covered: duplicates dropped, a short user, items capped to OOV
    assert any("exact duplicate" in note for note in result.notes)
    assert any("user(s) with fewer than 3" in note for note in result.notes)
    assert result.oov_item_ids > 0 and result.item_vocab_size == 8 + 2
    loaded = load_prepared(tmp_path / "beam")  # what `tfrec train --prepared` opens
    assert loaded.summary.engine == "beam"
    batch = next(loaded.dataset("train", 8, shuffle=True).as_numpy_iterator())
    assert batch["history"].shape == (8, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # staging renamed


def test_temporal_with_items_and_several_files_matches_embedded(tmp_path):
    log = make_log(seed=2)
    parts = write_parts(log, tmp_path / "parts")
    items = tmp_path / "items.csv"
    items.write_text("i,title\n" + "".join(f"i{k},T{k}\n" for k in range(1, 30)))
    for name in ("embedded", "beam"):
        config = base_config(
            parts / "part-*", tmp_path / name, "duckdb", split="temporal", valid_fraction=0.1
        )
        config.data.items_path, config.data.title_col = str(items), "title"
        config.mode = "last"
        result = run_beam(config) if name == "beam" else prepare(config)
    assert_same_output(tmp_path / "embedded", tmp_path / "beam")
    assert any(note.startswith("temporal: valid = ") for note in result.notes)
    assert IdVocabulary.load(tmp_path / "beam" / "item_vocab.txt").tokens[-1] == "i29"


def test_cli_runner_and_pipeline_options(tmp_path, capsys):
    from tfrec.cli.main import main

    argv, out = caps_log_argv(tmp_path)
    argv += ["--min-item-count", "1", "--max-items", "3"]
    assert main([*argv, "--bogus-option", "1"]) != 0  # no runner: not a Beam option
    assert "Beam pipeline options need --runner" in capsys.readouterr().err
    assert main([*argv, "--runner", "DirectRunner", *DIRECT]) == 0
    printed = json.loads(capsys.readouterr().out)
    # counts a 4, b 3, c/d/e 1; --max-items 3 keeps a b c (ties at 1 by first appearance)
    assert (printed["engine"], printed["oov_item_ids"], printed["oov_interactions"]) == (
        "beam",
        2,
        2,
    )
    assert IdVocabulary.load(out / "item_vocab.txt").tokens == ["a", "b", "c"]
    assert IdVocabulary.load(out / "user_vocab.txt").tokens == ["u1", "u2", "u3"]
    test = sorted_examples(out / "test")
    test = {k: v[np.argsort(test["user"])] for k, v in test.items()}
    # u1 a b a | c -> [a b a] -> c=4; u2 b a | d -> [0 b a] -> OOV; u3 a b | e -> OOV
    np.testing.assert_array_equal(test["user"], [2, 3, 4])
    np.testing.assert_array_equal(test["history"], [[2, 3, 2], [0, 3, 2], [0, 2, 3]])
    np.testing.assert_array_equal(test["target"][:, -1], [4, 1, 1])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bad.csv", "u,i,t\na,x,1\n\nb,y,soon\n"),  # blank line 3: the bad value is on line 4
        ("cols.csv", "u,item,t\na,x,1\n"),  # no column i
    ],
)
def test_a_bad_input_gives_the_embedded_located_error(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    errors = []
    for out in ("embedded", "beam"):
        config = base_config(path, tmp_path / out, "duckdb", rating_col=None)
        with pytest.raises(DataError) as caught:
            run_beam(config) if out == "beam" else prepare(config)
        errors.append(str(caught.value))
    assert errors[1] == errors[0]
    assert str(path) in errors[1] and ("line 4" in errors[1] or "missing column" in errors[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing left behind


@pytest.mark.parametrize(
    "values",
    [
        np.array([5, 1, 5, 3, 9, 9, 2], dtype=np.int64),
        np.array([-(2**61), 7, 2**61, 7, 0, 1], dtype=np.int64),  # range 2**62 > BINS**3
    ],
)
def test_fixed_refinement_rounds_find_the_value_at_each_rank(values):
    lo, hi = int(values.min()), int(values.max())
    for rank in range(len(values)):
        state = [[lo, hi, 0, rank]]
        for _ in range(ROUNDS):
            width = -(-(state[0][1] - state[0][0] + 1) // BINS)
            inside = values[(values >= state[0][0]) & (values <= state[0][1])]
            hist = {0: np.bincount((inside - state[0][0]) // width, minlength=BINS)}
            state = refine(None, state, hist)
        # the value at the rank of the sorted values, and how many values are below it
        expected = int(np.sort(values)[rank]), int((values < np.sort(values)[rank]).sum())
        assert (state[0][0], state[0][2]) == expected
        assert (state[0][0], state[0][2]) == value_at_rank(lambda: [values], rank, lo, hi)
