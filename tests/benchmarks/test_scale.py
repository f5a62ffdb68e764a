"""benchmarks/scale.py: the popularity baseline, the growth fit and a quick end-to-end run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import scale
from benchmarks._scale_parts import growth_exponent, popularity_baseline


def test_growth_exponent_is_the_log_log_slope():
    # time = 3 * n^1.5: log t = log 3 + 1.5 log n, so the fit is exactly 1.5
    sizes = [1e3, 1e4, 1e6]
    assert growth_exponent(sizes, [3 * n**1.5 for n in sizes]) == pytest.approx(1.5)
    assert growth_exponent([1e6], [10.0]) is None  # one point: no slope


@pytest.mark.slow
def test_quick_run_reports_every_stage_and_an_exact_popularity_baseline(tmp_path: Path):
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--work-dir", str(work), "--output", str(out), "--train-steps", "2"]
    assert scale.main([*argv, "--batch-size", "16"]) == 0
    report = json.loads((out / "scale_quick.json").read_text())["results"]
    (row,) = report["rows"]
    assert row["interactions"] == scale.SIZES["quick"][2]
    assert row["prepare"]["peak_rss_mb"] > 0 and row["prepare"]["rows_per_s"] > 0
    assert row["train"]["steps"] == 2 and row["train"]["projected"] is True
    assert 0.0 <= row["metrics"]["test/hr@10"] <= 1.0
    assert (out / "scale_quick.png").stat().st_size > 0

    # the baseline, recomputed independently from the prepared files with plain Python
    prepared = work / "quick" / "prepared"
    import pandas as pd

    from tfrec.data.tfdata import tfrecord_dataset

    vocab = (prepared / "item_vocab.txt").read_text().splitlines()
    train = pd.read_parquet(prepared / "interactions" / "train.parquet")
    counts = Counter(vocab.index(i) + 2 for i in train["item_id"])
    ranked = sorted(counts, key=lambda i: (-counts[i], i))
    hits = total = 0
    for batch in tfrecord_dataset(prepared / "test", 64, shuffle=False):
        for history, target in zip(batch["history"].numpy(), batch["target"].numpy(), strict=True):
            seen = set(history.tolist())
            top = [i for i in ranked if i not in seen][:10]
            hits += int(target[-1] in top)
            total += 1
    assert row["popularity"]["users"] == total
    assert row["popularity"]["hr@10"] == pytest.approx(hits / total)
    assert popularity_baseline(prepared)["hr@10"] == pytest.approx(hits / total)
