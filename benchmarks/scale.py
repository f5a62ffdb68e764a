"""Scale: synth -> prepare -> train/evaluate at 1M, 10M and 50M interactions.

For each size, one stage at a time in its own process (peak RSS from
``os.wait4``): ``tfrec synth`` writes the log (about 20 interactions per user,
Zipf popularity, a planted sequential signal), ``tfrec prepare --engine duckdb``
prepares it (time, rows/s, peak RSS), ``tfrec train --prepared`` trains the
transformer (L = 50, d = 64, sampled softmax) for one epoch and evaluates it on
the test users (a seeded sample with ``--eval-users``, with its 95% CI), and
the popularity baseline is computed on the same test examples. Then time and
peak memory are plotted against the number of interactions (log-log) and the
growth exponents fitted.

Run alone on an otherwise idle machine::

    python -m benchmarks.scale                       # 1m, 10m, 50m
    python -m benchmarks.scale --sizes 1m,10m --train-steps 1000
    python -m benchmarks.scale --quick               # seconds; measures nothing

``--train-steps N`` stops the epoch after N steps and projects the full epoch
from the measured step rate (the report says so).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import _report
from benchmarks._scale_parts import (
    fmt_ci,
    growth_exponent,
    plot,
    popularity_baseline,
    read_metrics,
    run_stage,
)

#: name -> (users, items, interactions): about 20 interactions per user.
SIZES: dict[str, tuple[int, int, int]] = {
    "1m": (50_000, 100_000, 1_000_000),
    "10m": (500_000, 1_000_000, 10_000_000),
    "50m": (2_500_000, 1_000_000, 50_000_000),
    "quick": (300, 400, 6_000),
}
MAX_LEN = 50


def _synth_and_prepare(name: str, work: Path, log: Path, args: argparse.Namespace) -> dict:
    users, items, interactions = SIZES[name]
    data = work / name
    data.mkdir(parents=True, exist_ok=True)
    logfile = data / "log.parquet"
    row: dict[str, Any] = {"size": name, "users": users, "items": items}
    row["interactions"] = interactions
    if not logfile.is_file():
        row["synth"] = run_stage(
            ["synth", "--users", str(users), "--items", str(items), "--interactions",
             str(interactions), "--output", str(logfile), "--seed", "0"], log,
        )  # fmt: skip
    prepared = data / "prepared"
    row["prepare"] = run_stage(
        ["prepare", "--dataset", "csv", "--path", str(logfile), "--items-path",
         str(data / "log.items.parquet"), "--time-col", "timestamp", "--split", "leave_one_out",
         "--engine", "duckdb", "--max-len", str(MAX_LEN), "--output-dir", str(prepared),
         "--overwrite", *(["--memory-limit", args.memory_limit] if args.memory_limit else [])],
        log,
    )  # fmt: skip
    row["prepare"]["rows_per_s"] = round(interactions / row["prepare"]["seconds"])
    summary = json.loads((prepared / "summary.json").read_text(encoding="utf-8"))
    row["examples"] = summary["examples"]
    return row


def _train(name: str, row: dict, work: Path, log: Path, args: argparse.Namespace) -> None:
    prepared = work / name / "prepared"
    run_dir = work / name / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    quick = name == "quick"
    argv = [
        "train", "--prepared", str(prepared), "--encoder", "transformer", "--loss", "sampled",
        "--epochs", "1", "--embedding-dim", "8" if quick else "64", "--max-history",
        str(MAX_LEN), "--batch-size", str(args.batch_size), "--no-export", "--output-dir",
        str(run_dir), "--set", f"num_uniform_negatives={args.uniform_negatives}",
    ]  # fmt: skip
    if args.eval_users and not quick:
        argv += ["--eval-users", str(args.eval_users)]
    if args.train_steps:
        argv += ["--set", f"training.steps_per_epoch={args.train_steps}"]
    if args.workers > 1:  # local worker processes; the global batch stays --batch-size
        argv += ["--workers", str(args.workers)]
    row["train"] = run_stage(argv, log)
    row["train"]["workers"] = args.workers
    metrics = read_metrics(run_dir)
    steps = math.ceil(row["examples"]["train"] / args.batch_size)
    done = min(steps, args.train_steps or steps)
    seconds = float(metrics["train_seconds"])
    row["train"].update(
        train_seconds=seconds,
        steps=done,
        steps_per_epoch=steps,
        examples_per_s=round(done * args.batch_size / seconds, 1),
        epoch_seconds=round(seconds * steps / done, 1),
        projected=done < steps,
        evaluate_seconds=metrics.get("evaluate_seconds"),
    )
    row["metrics"] = {k: v for k, v in metrics.items() if k.startswith("test/")}
    row["popularity"] = popularity_baseline(prepared)


def _markdown(rows: list[dict[str, Any]], fits: dict[str, Any], png: str | None) -> str:
    table = []
    for r in rows:
        prep, train, m, pop = (
            r["prepare"],
            r.get("train", {}),
            r.get("metrics", {}),
            r.get("popularity", {}),
        )
        ratio = (m.get("test/hr@10", 0) / pop["hr@10"]) if pop.get("hr@10") else None
        table.append([
            r["size"], f"{r['interactions']:,}", f"{r['items']:,}", prep["seconds"],
            f"{prep['rows_per_s']:,}", round(prep["peak_rss_mb"] / 1024, 2),
            train.get("examples_per_s", "-"),
            f"{train.get('epoch_seconds', '-')}{' (projected)' if train.get('projected') else ''}",
            train.get("evaluate_seconds", "-"),
            round(train["peak_rss_mb"] / 1024, 2) if train else "-",
            fmt_ci(m, "test/hr@10"), fmt_ci(m, "test/ndcg@10"),
            round(pop.get("hr@10", float("nan")), 4), round(ratio, 2) if ratio else "-",
        ])  # fmt: skip
    headers = [
        "size", "interactions", "items", "prepare s", "rows/s", "prepare peak GiB",
        "train ex/s", "epoch s", "eval s", "train+eval peak GiB", "test HR@10",
        "test NDCG@10", "popularity HR@10", "HR ratio",
    ]  # fmt: skip
    lines = [_report.markdown_table(headers, table), ""]
    lines.append(f"Growth exponents (log-log least squares over the sizes run): {fits}")
    if png:
        lines.append(f"\n![time and memory vs interactions]({png})")
    lines.append(
        "\nTest metrics: full ranking over the catalogue, history items excluded, on a seeded "
        "sample of test users when `--eval-users` is set (95% CI, normal approximation). The "
        "popularity baseline ranks training counts with the same exclusion on every test user."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1m,10m,50m", help="comma-separated: 1m,10m,50m")
    parser.add_argument("--quick", action="store_true", help="one tiny size (seconds)")
    parser.add_argument("--work-dir", help="where logs and prepared data go (default: temp)")
    parser.add_argument("--train-steps", type=int, default=0, help="stop each epoch after N steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-users", type=int, default=10_000)
    parser.add_argument("--uniform-negatives", type=int, default=0)
    parser.add_argument("--skip-train", default="", help="sizes to prepare only, e.g. 50m")
    parser.add_argument("--memory-limit", help="DuckDB memory limit for prepare, e.g. 4GB")
    parser.add_argument("--workers", type=int, default=1, help="tfrec train --workers N")
    parser.add_argument("--tag", default="", help="suffix of the report name, e.g. _2workers")
    parser.add_argument("--output", help="report directory (default benchmarks/results)")
    args = parser.parse_args(argv)
    names = ["quick"] if args.quick else args.sizes.split(",")
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; expected some of {sorted(SIZES)}")
    facts = _report.machine_facts()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="tfrec-scale-"))
    log = work / "scale.log"
    rows = []
    for name in names:
        print(f"[scale] {name}: synth + prepare (log: {log})", flush=True)
        row = _synth_and_prepare(name, work, log, args)
        if name not in args.skip_train.split(","):
            print(f"[scale] {name}: train + evaluate", flush=True)
            _train(name, row, work, log, args)
        rows.append(row)
    sizes = [r["interactions"] for r in rows]
    fits = {
        "prepare_time": growth_exponent(sizes, [r["prepare"]["seconds"] for r in rows]),
        "prepare_peak_rss": growth_exponent(sizes, [r["prepare"]["peak_rss_mb"] for r in rows]),
    }
    out = Path(args.output) if args.output else _report.RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    stem = ("scale_quick" if args.quick else "scale") + args.tag
    png = f"{stem}.png" if plot(rows, out / f"{stem}.png") else None
    results = {"rows": rows, "fits": fits, "work_dir": str(work), "quick": args.quick}
    return _report.publish(stem, results, _markdown(rows, fits, png), facts=facts, output_dir=out)


if __name__ == "__main__":
    raise SystemExit(main())
