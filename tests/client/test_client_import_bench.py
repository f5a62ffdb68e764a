"""benchmarks/client_import.py: the verdict arithmetic and a --quick run."""

from __future__ import annotations

import json

from testing_utils import import_benchmark

bench = import_benchmark("client_import")


def test_summary_uses_the_median_and_fails_if_tensorflow_loaded() -> None:
    runs = [{"seconds": s, "tensorflow": False} for s in (0.5, 0.1, 0.2)]
    summary = bench.summarize(runs)
    # sorted 0.1, 0.2, 0.5 -> median 0.2 <= 0.3
    assert (summary["median_s"], summary["min_s"], summary["max_s"]) == (0.2, 0.1, 0.5)
    assert summary["meets_target"] is True
    runs[1]["tensorflow"] = True
    assert bench.summarize(runs)["meets_target"] is False
    slow = [{"seconds": s, "tensorflow": False} for s in (0.31, 0.4)]
    assert bench.summarize(slow)["meets_target"] is False  # median 0.355


def test_quick_run_writes_a_report(tmp_path) -> None:
    results = bench.main(["--quick", "--output", str(tmp_path)])
    saved = json.loads((tmp_path / "client_import_quick.json").read_text())
    assert saved["results"] == results
    assert results["import"]["runs"] == 3 and len(results["seconds"]) == 3
    assert results["import"]["tensorflow_imported"] is False
    assert 0 < results["installed_mb"]["tfrec-client"] < 1  # a few .py files and protos
    assert "## Installed size" in (tmp_path / "client_import_quick.md").read_text()
