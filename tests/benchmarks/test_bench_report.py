"""Tests of the benchmark harness benchmarks/_report.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from testing_utils import REPO_ROOT, import_benchmark

_report = import_benchmark("_report")


def test_machine_facts_fields():
    facts = _report.machine_facts()
    assert facts["cpu_count"] >= 1
    assert 1 <= facts["cpu_affinity"] <= facts["cpu_count"]
    assert facts["ram_total_gb"] > 0
    assert len(facts["load_average"]) == 3
    assert facts["versions"]["tensorflow"]
    assert facts["versions"]["tfrec"]
    assert len(facts["git_commit"]) == 40
    assert facts["date_utc"].endswith("+00:00")
    json.dumps(facts)  # JSON-compatible


def test_command_line_renders_scripts_in_repo_as_modules():
    script = str(REPO_ROOT / "benchmarks" / "retrieval_speed.py")
    assert _report.command_line([script, "--quick", "--output", "a b"]) == (
        "python -m benchmarks.retrieval_speed --quick --output 'a b'"
    )
    # Outside the repository the path stays as given.
    assert _report.command_line(["/tmp/x.py", "-v"]) == "python /tmp/x.py -v"


def test_timer_measures_wall_seconds():
    with _report.Timer() as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 1.0


def test_peak_rss_grows_when_memory_is_touched():
    before = _report.peak_rss_mb()
    block = np.ones(200 * 1024 * 1024 // 8)  # 200 MiB, every page written
    after = _report.peak_rss_mb()
    del block
    # Peak can only have risen by at least most of the 200 MiB just touched
    # (less if an earlier peak already exceeded the new total).
    assert after >= before
    assert after >= 200


def test_markdown_table_formats_cells():
    text = _report.markdown_table(["a", "b|c"], [[1, 0.123456], ["x|y", 123456.7]])
    # floats < 1e4: 4 significant digits; larger: thousands separators, no decimals;
    # '|' inside a cell is escaped.
    assert text == ("| a | b|c |\n|---|---|\n| 1 | 0.1235 |\n| x\\|y | 123,457 |\n")
    with pytest.raises(ValueError, match="row 0 has 1 cells; expected 2"):
        _report.markdown_table(["a", "b"], [[1]])


def test_write_report_writes_json_and_markdown(tmp_path):
    facts = {**_report.machine_facts(), "load_average": [1.5, 1.0, 0.5]}
    json_path, md_path = _report.write_report(
        "speed",
        {"examples_per_s": 42.0},
        "## Results\n\nbody\n",
        command="python -m benchmarks.speed --quick",
        facts=facts,
        output_dir=tmp_path / "out",
    )
    assert (json_path, md_path) == (tmp_path / "out" / "speed.json", tmp_path / "out" / "speed.md")
    payload = json.loads(json_path.read_text())
    assert payload["name"] == "speed"
    assert payload["command"] == "python -m benchmarks.speed --quick"
    assert payload["results"] == {"examples_per_s": 42.0}
    assert payload["machine"]["load_average"] == [1.5, 1.0, 0.5]
    text = md_path.read_text()
    assert text.startswith("# Benchmark: speed\n")
    assert "- command: `python -m benchmarks.speed --quick`" in text
    assert "[1.5, 1.0, 0.5]" in text
    assert text.endswith("## Results\n\nbody\n")
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["speed.json", "speed.md"]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_write_report_rejects_bad_names(tmp_path, name):
    with pytest.raises(ValueError, match="expected a plain file stem"):
        _report.write_report(name, {}, "", command="c", facts={}, output_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_run_isolated_returns_child_result_with_its_peak_rss():
    child = (
        "import sys; from benchmarks import _report; "
        "assert sys.argv[1] == '--result-json'; "
        "_report.write_result_json(sys.argv[2], {'answer': 42})"
    )
    result = _report.run_isolated(["-c", child], timeout=60)
    assert result["answer"] == 42
    assert result["peak_rss_mb"] > 0


def test_run_isolated_reports_failing_child():
    with pytest.raises(RuntimeError, match="exit code 3"):
        _report.run_isolated(["-c", "raise SystemExit(3)"], timeout=60)
    with pytest.raises(RuntimeError, match="wrote no result file"):
        _report.run_isolated(["-c", "pass"], timeout=60)


def test_configure_logging_shows_progress_and_hides_library_info():
    # A fresh process: basicConfig only acts once per process.
    script = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from benchmarks import _report\n"
        "_report.configure_logging()\n"
        "logging.getLogger('benchmarks.scenarios').info('epoch 1 done')\n"
        "logging.getLogger('absl').info('Sharding callback duration: 51 microseconds')\n"
        "logging.getLogger('tensorflow').info('Assets written to: /tmp/x')\n"
        "logging.getLogger('absl').warning('a real library warning')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "benchmarks.scenarios: epoch 1 done" in done.stderr
    assert "absl: a real library warning" in done.stderr
    assert "Sharding callback" not in done.stderr
    assert "Assets written" not in done.stderr
