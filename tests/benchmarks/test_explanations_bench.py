"""Smoke test of benchmarks/explanations.py (``--quick``: tiny synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import import_benchmark

explanations = import_benchmark("explanations")


@pytest.mark.slow
def test_quick_run_writes_the_deletion_test_and_latency_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert explanations.main(["--quick", "--output", str(out)]) == 0
    report = json.loads((out / "explanations_quick.json").read_text(encoding="utf-8"))
    results = report["results"]
    test = results["deletion_test"]
    # 60 synthetic test users with >= 2 history items, 10 recommended items each
    assert results["users"] == 60 and test["items"] == 600
    for method in ("loo", "similarity"):
        counts = test["counts"][method]
        assert counts["top_larger"] + counts["tie"] + counts["random_larger"] == test["items"]
    # within the window the query reads, the leave-one-out top item IS the largest drop:
    # it beats a random other item unless their drops tie
    assert test["counts"]["loo"]["random_larger"] == 0
    assert test["shares"]["loo"]["top_larger"] >= explanations.TARGET_SHARE
    assert results["passed"] is True
    for name in ("serving_default", "explain"):
        assert results["latency"][name]["requests"] == 20
        assert 0 < results["latency"][name]["p50_ms"] <= results["latency"][name]["p99_ms"]
    markdown = (out / "explanations_quick.md").read_text(encoding="utf-8")
    assert "QUICK synthetic smoke run" in markdown
    assert "| similarity baseline |" in markdown
