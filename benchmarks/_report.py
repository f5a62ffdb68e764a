"""Shared benchmark harness: machine facts, timing, peak memory, reports.

Every benchmark script in ``benchmarks/`` measures something and writes
``benchmarks/results/<name>.json`` and ``<name>.md`` with :func:`write_report`.
A report records the exact command that produced it and the machine it ran on,
so a number never appears without its provenance. This module imports neither
TensorFlow nor tfrec (versions are read from package metadata), so it is cheap
to import in a parent process that only launches measured subprocesses.

API:

* :func:`machine_facts` -> dict of CPU count, RAM, load average, versions, git
  commit, UTC date.
* :func:`command_line` -> the current command as a shell-quoted string.
* :class:`Timer` -> ``with Timer() as t: ...; t.seconds`` (``time.perf_counter``).
* :func:`peak_rss_mb` -> this process's peak resident set size (``ru_maxrss``).
* :func:`run_isolated` -> run one measured part in a fresh Python subprocess
  (so its peak RSS is its own) and return the JSON dict it wrote.
* :func:`write_result_json` -> what a subprocess part calls to hand back its dict.
* :func:`markdown_table` -> a small GitHub-markdown table.
* :func:`write_report` -> atomically writes the JSON + markdown report pair.
* :func:`configure_logging` -> timestamped progress lines; TensorFlow's and absl's
  INFO chatter (``Sharding callback duration``, ``Assets written to``) hidden.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfrec.config import atomic_write_text  # light: imports no TensorFlow
from tfrec.logs import NOISY_LOGGERS  # light: imports no TensorFlow

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "numpy", "tfrec")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ram_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 2)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_facts() -> dict[str, Any]:
    """Describes the machine, software and repository state of this run.

    Returns:
        A JSON-compatible dict: ``cpu_count`` (logical CPUs), ``cpu_affinity``
        (CPUs this process may use), ``ram_total_gb``, ``load_average`` (1, 5,
        15 minutes, at the time of the call), ``platform``, ``python``,
        ``versions`` (package -> version or None), ``git_commit``, ``git_dirty``
        (uncommitted changes in tracked files outside ``benchmarks/results/``),
        ``date_utc`` (ISO 8601).
    """
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    # Reports under benchmarks/results/ are outputs, not code: they do not make a run dirty.
    status = _git(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"
    )
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "ram_total_gb": _ram_total_gb(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _package_version(name) for name in _PACKAGES},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """Returns the command that started this process, shell-quoted.

    A script run as ``python -m benchmarks.x --flag`` has ``sys.argv[0]`` set to
    its file path; it is rendered back as ``-m benchmarks.x`` so the recorded
    command can be pasted into a shell at the repository root.

    Args:
        argv: Arguments to render instead of ``sys.argv``.

    Returns:
        E.g. ``"python -m benchmarks.retrieval_speed --quick"``.
    """
    args = list(sys.argv if argv is None else argv)
    if args:
        path = Path(args[0]).resolve()
        try:
            relative = path.relative_to(REPO_ROOT)
        except ValueError:
            relative = None
        if relative is not None and relative.suffix == ".py":
            module = ".".join(relative.with_suffix("").parts)
            args = ["-m", module, *args[1:]]
    return shlex.join(["python", *args])


class Timer:
    """Context manager measuring wall-clock seconds with ``time.perf_counter``.

    Example::

        with Timer() as t:
            work()
        print(t.seconds)
    """

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ``ru_maxrss``).

    ``tracemalloc`` does not see TensorFlow's C++ allocations; RSS does. The
    value only grows, so measure each part in its own process
    (:func:`run_isolated`) to attribute memory to it.
    """
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes
    return round(kib / scale, 1)


def write_result_json(path: str | os.PathLike[str], result: dict[str, Any]) -> None:
    """Writes a part's result dict for :func:`run_isolated`, adding ``peak_rss_mb``.

    Args:
        path: The file named by the parent (``--result-json``).
        result: JSON-compatible measurements.
    """
    payload = {**result, "peak_rss_mb": peak_rss_mb()}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def run_isolated(args: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Runs ``python <args> --result-json <tmp>`` in the repo root and returns the JSON.

    The child must call :func:`write_result_json` with the path it receives.
    Its stdout/stderr pass through to this process's so progress stays visible.

    Args:
        args: Arguments after ``python``, e.g. ``["-m", "benchmarks.x", "--part", "a"]``.
        timeout: Seconds before the child is killed (None = no limit).

    Returns:
        The dict the child wrote (including its ``peak_rss_mb``).

    Raises:
        RuntimeError: The child failed or wrote no result (message has the command).
    """
    with tempfile.TemporaryDirectory(prefix="tfrec-bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        command = [sys.executable, *args, "--result-json", str(result_path)]
        completed = subprocess.run(command, cwd=REPO_ROOT, timeout=timeout, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"benchmark part failed with exit code {completed.returncode}: "
                f"{shlex.join(command)}"
            )
        if not result_path.is_file():
            raise RuntimeError(f"benchmark part wrote no result file: {shlex.join(command)}")
        return json.loads(result_path.read_text(encoding="utf-8"))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Formats a GitHub-markdown table; floats get 4 significant digits.

    Args:
        headers: Column titles.
        rows: One sequence per row, each as long as ``headers``.

    Returns:
        The table text ending with a newline.

    Raises:
        ValueError: A row whose length differs from ``headers``.
    """

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(
                f"markdown_table: row {i} has {len(row)} cells; expected {len(headers)}"
            )
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _facts_markdown(command: str, facts: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    dirty = " (with uncommitted changes)" if facts.get("git_dirty") else ""
    return (
        f"- command: `{command}`\n"
        f"- date (UTC): {facts['date_utc']}\n"
        f"- machine: {facts['cpu_count']} CPUs ({facts['cpu_affinity']} usable), "
        f"{facts['ram_total_gb']} GB RAM, {facts['platform']}\n"
        f"- load average at start (1/5/15 min): {facts['load_average']}\n"
        f"- python {facts['python']}, {versions}\n"
        f"- git commit: {facts['git_commit']}{dirty}\n"
    )


def write_report(
    name: str,
    results: dict[str, Any],
    markdown: str,
    *,
    command: str | None = None,
    facts: dict[str, Any] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Writes ``<output_dir>/<name>.json`` and ``<name>.md`` atomically.

    The JSON is ``{"name", "command", "machine", "results"}``. The markdown is
    a title, the provenance list (command, date, machine, load, versions,
    commit) and then ``markdown`` (the benchmark's own tables and notes).

    Args:
        name: Report name, a plain file stem such as ``"retrieval_speed"``.
        results: JSON-compatible measurements.
        markdown: Body of the markdown report.
        command: The command line (default: :func:`command_line`).
        facts: Machine facts (default: :func:`machine_facts` now); pass the
            facts taken before the measurement to record the load at start.
        output_dir: Directory (default ``benchmarks/results``); created if missing.

    Returns:
        The JSON and markdown paths.

    Raises:
        ValueError: ``name`` is empty or contains a path separator.
    """
    if not name or name != Path(name).name or name.startswith("."):
        raise ValueError(f"write_report: name={name!r}; expected a plain file stem")
    command = command_line() if command is None else command
    facts = machine_facts() if facts is None else facts
    out = Path(RESULTS_DIR if output_dir is None else output_dir)
    payload = {"name": name, "command": command, "machine": facts, "results": results}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    text = f"# Benchmark: {name}\n\n{_facts_markdown(command, facts)}\n{markdown.rstrip()}\n"
    atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    atomic_write_text(md_path, text)
    return json_path, md_path


def configure_logging(level: int = logging.INFO) -> None:
    """Sets up a benchmark's log: ``time logger: message`` records at ``level``.

    The loggers the ``tfrec`` CLI quiets (:data:`tfrec.logs.NOISY_LOGGERS`: absl,
    tensorflow, the client's retries) show WARNING and above only, so a report's
    log is the benchmark's progress, not one ``Sharding callback duration`` line
    per checkpoint.

    Args:
        level: Lowest level shown for the benchmark's and tfrec's own loggers.
    """
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def publish(
    name: str,
    results: dict[str, Any],
    markdown: str,
    *,
    command: str | None = None,
    facts: dict[str, Any] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Writes the report (:func:`write_report`), prints it and where it went; returns 0.

    The last step of every benchmark's ``main``.
    """
    paths = write_report(
        name, results, markdown, command=command, facts=facts, output_dir=output_dir
    )
    print(markdown)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0
