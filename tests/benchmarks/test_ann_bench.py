"""benchmarks/ann.py: the acceptance arithmetic and small end-to-end runs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

# ``benchmarks`` is a package at the repository root, which the pytest binary does
# not put on sys.path (tests/benchmarks/ would otherwise shadow it): make it importable.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
ann = importlib.import_module("benchmarks.ann")


def test_summary_picks_the_cheapest_settings_reaching_the_target():
    results = {
        "brute": {"in_process": {"p50_ms": 40.0}, "server": {"p50_ms": 60.0}},
        "ivf": {
            "in_process": [
                {"nprobe": 1, "recall_at_10": 0.90, "p50_ms": 2.0},
                {"nprobe": 4, "recall_at_10": 0.96, "p50_ms": 4.0},
                {"nprobe": 16, "recall_at_10": 0.99, "p50_ms": 8.0},
            ],
            "server": [{"nprobe": 4, "p50_ms": 6.0}],
            "in_process_session": [
                {"nprobe": 1, "recall_at_10": 0.90, "p50_ms": 1.0},
                {"nprobe": 4, "recall_at_10": 0.96, "p50_ms": 2.2},
            ],
        },
        "faiss": {
            "ivf_flat": {
                "rows": [
                    {"nprobe": 2, "recall_at_10": 0.95, "p50_ms": 1.0},
                    {"nprobe": 8, "recall_at_10": 0.97, "p50_ms": 2.0},
                ]
            }
        },
    }
    summary = ann.summarize(results)
    # nprobe 4 is the first IVF row with recall >= 0.95: 40 / 4 = 10x in-process,
    # 60 / 6 = 10x through the server.
    assert summary["ivf_nprobe"] == 4 and summary["ivf_recall_at_10"] == 0.96
    assert summary["speedup_in_process"] == 10.0 and summary["speedup_server"] == 10.0
    # At recall 0.95 exactly: IVF between (0.90, 2 ms) and (0.96, 4 ms): 2 + 5/6 * 2 = 3.6667;
    # Faiss reaches 0.95 at its first row: 1 ms. Ratio 3.67.
    assert summary["p50_at_target_ms"]["ivf_in_process"] == pytest.approx(3.6667)
    assert summary["p50_at_target_ms"]["faiss_ivf_flat"] == 1.0
    assert summary["p50_at_target_ms"]["faiss_hnsw"] is None  # not measured
    assert summary["ratio_to_faiss_ivf"] == 3.67
    # The Session curve at 0.95: 1 + 5/6 * 1.2 = 2.0 ms, twice Faiss.
    assert summary["p50_at_target_ms"]["ivf_in_process_session"] == pytest.approx(2.0)
    assert summary["ratio_to_faiss_ivf_session"] == 2.0


def test_summary_without_a_setting_reaching_the_target():
    results = {
        "brute": {"in_process": {"p50_ms": 4.0}, "server": None},
        "ivf": {"in_process": [{"nprobe": 1, "recall_at_10": 0.5, "p50_ms": 1.0}]},
    }
    assert ann.summarize(results)["ivf_nprobe"] is None


def _run(tmp_path: Path, *flags: str) -> dict:
    argv = ["--items", "3000", "--clusters", "30", "--queries", "40", "--latency-calls", "5"]
    argv += ["--nprobe", "1,4,100000", "--output", str(tmp_path), *flags]
    assert ann.main(argv) == 0
    report = json.loads((tmp_path / "ann.json").read_text())
    assert (tmp_path / "ann.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## IVF export, in-process" in (tmp_path / "ann.md").read_text()
    return report["results"]


@pytest.mark.slow
def test_small_run_without_server_or_faiss(tmp_path):
    results = _run(tmp_path, "--no-server", "--no-faiss")
    rows = results["ivf"]["in_process"]
    partitions = results["exports"]["ivf"]["index"]["num_partitions"]
    assert rows[-1]["nprobe"] == partitions  # 100000 is clipped to P
    assert rows[-1]["recall_at_10"] == 1.0  # every partition probed: brute force exactly
    recalls = [row["recall_at_10"] for row in rows]
    assert recalls == sorted(recalls) and 0 < recalls[0] < 1
    default = results["exports"]["ivf"]["index"]["nprobe"]
    assert default in [row["nprobe"] for row in rows]  # the export's default is measured too
    assert results["brute"]["in_process"]["p50_ms"] > 0 and results["faiss"] is None
    # The Session runtime (as TF Serving runs the export) is timed for the same sweep
    session = results["ivf"]["in_process_session"]
    assert [(r["nprobe"], r["recall_at_10"]) for r in session] == [
        (r["nprobe"], r["recall_at_10"]) for r in rows
    ]
    assert results["brute"]["in_process_session"]["p50_ms"] > 0 and session[0]["p50_ms"] > 0


@pytest.mark.slow
def test_small_run_with_server_and_faiss(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu (the `bench` extra) is not installed")
    results = _run(tmp_path, "--ef-search", "16,64")
    assert len(results["ivf"]["server"]) == len(results["ivf"]["in_process"])
    assert results["brute"]["server"]["p50_ms"] > 0
    faiss_rows = results["faiss"]["ivf_flat"]["rows"]
    assert faiss_rows[-1]["nprobe"] == results["exports"]["ivf"]["index"]["num_partitions"]
    assert faiss_rows[-1]["recall_at_10"] == 1.0  # Faiss probing every list is exact too
    assert [row["ef_search"] for row in results["faiss"]["hnsw"]["rows"]] == [16, 64]


@pytest.mark.slow
def test_small_run_through_the_server_without_faiss(tmp_path):
    results = _run(tmp_path, "--no-faiss")
    assert [r["nprobe"] for r in results["ivf"]["server"]] == [
        r["nprobe"] for r in results["ivf"]["in_process"]
    ]
    brute = results["brute"]
    assert brute["server"]["p50_ms"] > 0 and brute[f"server_batch{ann.SERVER_BATCH}"]["p50_ms"] > 0
    assert "server_batch32" in (tmp_path / "ann.md").read_text()
