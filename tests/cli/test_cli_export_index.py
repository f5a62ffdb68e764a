"""``tfrec export --index ivf``: the IVF candidate index through the Experiment contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfrec.cli.main import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    args = ["train", "--dataset", "synthetic", "--output-dir", str(out), "--no-export"]
    assert main([*args, "--epochs", "1", "--encoder", "mean", "--set", "embedding_dim=8"]) == 0
    return out


def _answers(version_dir: Path, signature: str, **extra: tf.Tensor) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(version_dir))
    fn = loaded.signatures[signature]
    out = fn(
        user_id=tf.constant(["u1", "u2", "nobody"]),
        history=tf.constant([["i1", "i2"], ["", "i3"], ["", ""]]),
        k=tf.constant([5, 5, 5], dtype=tf.int32),
        **extra,
    )
    return {key: value.numpy() for key, value in out.items()}


def test_ivf_export_probing_every_partition_equals_brute_force(run_dir, tmp_path, capsys):
    base = tmp_path / "serving"
    assert main(["export", "--model-dir", str(run_dir), "--export-dir", str(base)]) == 0
    ivf = ["--index", "ivf", "--partitions", "4", "--nprobe", "2"]
    code = main(["export", "--model-dir", str(run_dir), "--export-dir", str(base), *ivf])
    assert code == 0, capsys.readouterr().err
    brute_dir, ivf_dir = base / "retrieval" / "1", base / "retrieval" / "2"
    config = json.loads((ivf_dir / "assets.extra" / "tfrec_config.json").read_text())
    assert config["index"]["type"] == "ivf" and config["index"]["nprobe"] == 2
    partitions = int(config["index"]["num_partitions"])  # >= 4 (big partitions are split)
    assert partitions >= 4
    brute = _answers(brute_dir, "serving_default")
    # nprobe = every partition: the IVF search is exhaustive, so it must equal brute force
    every = tf.constant([partitions] * 3, dtype=tf.int32)
    exhaustive = _answers(ivf_dir, "with_nprobe", nprobe=every)
    np.testing.assert_allclose(exhaustive["scores"], brute["scores"], rtol=1e-5, atol=1e-6)
    # rows 0-1 have a history, so their scores differ and the lists must match item for item;
    # row 2 (unknown user, empty history) has a zero query: every item scores 0 and any order
    # of distinct real items is a right answer (the two indexes break ties differently)
    np.testing.assert_array_equal(exhaustive["item_ids"][:2], brute["item_ids"][:2])
    assert np.all(brute["scores"][2] == 0.0)
    tied_row = exhaustive["item_ids"][2]
    assert len(set(tied_row)) == 5 and (tied_row != b"").all()
    # serving_default probes the export's default (2 of P): still k real items per row
    approx = _answers(ivf_dir, "serving_default")
    assert approx["item_ids"].shape == (3, 5) and (approx["item_ids"] != b"").all()


def test_index_options_are_checked(run_dir, tmp_path, capsys):
    base = str(tmp_path / "serving")
    code = main(["export", "--model-dir", str(run_dir), "--export-dir", base, "--nprobe", "3"])
    assert code == 2  # a usage error: nprobe sets an IVF index
    assert "index='ivf'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse: not a choice
        main(["export", "--model-dir", str(run_dir), "--export-dir", base, "--index", "hnsw"])
    assert exited.value.code == 2
