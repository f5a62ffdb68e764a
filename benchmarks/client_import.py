"""Import time and installed size of the TensorFlow-free client ``tfrec_client``.

Each run starts a fresh interpreter that times ``import tfrec_client`` with
``time.perf_counter`` (interpreter start-up excluded) and reports whether
``tensorflow`` ended up in ``sys.modules``. The target (issue 12) is a median
import of at most 0.3 s on an otherwise idle machine; the report also states
the machine's load average, so a busy run is recognisable.

Installed sizes are summed from the files each distribution recorded at install
time (``importlib.metadata``): tfrec-client alone and with its three
dependencies (grpcio, protobuf, numpy), next to tensorflow + tensorflow-serving-api,
which the client replaces.

Usage:
    python -m benchmarks.client_import [--runs 20] [--quick] [--output DIR]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._report import machine_facts, markdown_table, write_report

TARGET_SECONDS = 0.3
CLIENT = "tfrec-client"
CLIENT_DEPENDENCIES = ("grpcio", "protobuf", "numpy")
REPLACED = ("tensorflow", "tensorflow-serving-api")

_PROBE = """
import json, sys, time
start = time.perf_counter()
import tfrec_client
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tensorflow": "tensorflow" in sys.modules,
                  "modules": len(sys.modules)}))
"""


def time_import() -> dict[str, Any]:
    """One fresh-interpreter import of tfrec_client: seconds, tensorflow loaded, module count."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def installed_mb(distribution: str) -> float | None:
    """MiB of the files ``distribution`` recorded at install time (None if not installed)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return round(total / 2**20, 2)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/min/max import seconds over the runs and the verdict against the target."""
    seconds = sorted(run["seconds"] for run in runs)
    median = statistics.median(seconds)
    return {
        "runs": len(runs),
        "median_s": round(median, 4),
        "min_s": round(seconds[0], 4),
        "max_s": round(seconds[-1], 4),
        "tensorflow_imported": any(run["tensorflow"] for run in runs),
        "target_s": TARGET_SECONDS,
        "meets_target": median <= TARGET_SECONDS and not any(r["tensorflow"] for r in runs),
    }


def sizes() -> dict[str, float | None]:
    """Installed MiB of the client, its dependencies and what it replaces."""
    names = (CLIENT, *CLIENT_DEPENDENCIES, *REPLACED)
    return {name: installed_mb(name) for name in names}


def _markdown(summary: dict[str, Any], size: dict[str, float | None]) -> str:
    with_deps = sum(size[n] or 0.0 for n in (CLIENT, *CLIENT_DEPENDENCIES))
    replaced = sum(size[n] or 0.0 for n in REPLACED)
    timing = markdown_table(
        ["runs", "median s", "min s", "max s", "tensorflow imported", "target s", "met"],
        [
            [
                summary["runs"],
                summary["median_s"],
                summary["min_s"],
                summary["max_s"],
                summary["tensorflow_imported"],
                summary["target_s"],
                summary["meets_target"],
            ]
        ],
    )
    size_rows = [[name, mb] for name, mb in size.items()]
    size_rows += [["client + dependencies", round(with_deps, 2)], ["replaced", round(replaced, 2)]]
    return (
        "## `import tfrec_client` in a fresh interpreter\n\n"
        f"{timing}\n\n## Installed size (MiB, files recorded by pip)\n\n"
        f"{markdown_table(['distribution', 'MiB'], size_rows)}\n"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the measurement and writes ``client_import[_quick].{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="fresh interpreters to time")
    parser.add_argument("--quick", action="store_true", help="3 runs, report *_quick")
    parser.add_argument("--output", default=None, help="report folder (default results/)")
    args = parser.parse_args(argv)
    runs_wanted = 3 if args.quick else args.runs
    if runs_wanted < 1:
        raise ValueError(f"--runs {args.runs}: expected >= 1")
    facts = machine_facts()
    runs = [time_import() for _ in range(runs_wanted)]
    results = {
        "import": summarize(runs),
        "installed_mb": sizes(),
        "seconds": [r["seconds"] for r in runs],
    }
    name = "client_import_quick" if args.quick else "client_import"
    write_report(
        name,
        results,
        _markdown(results["import"], results["installed_mb"]),
        facts=facts,
        output_dir=args.output,
    )
    return results


if __name__ == "__main__":
    main()
