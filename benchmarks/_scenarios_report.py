"""The scenarios benchmark's arithmetic and report: means, acceptance, markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks import _report

METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20")
#: Published full-ranking results on the same files (BSARec, AAAI 2024, its table; Last.fm's
#: NDCG columns from the authors' released log of that run, yehjin-shin/BSARec
#: src/output/BSARec_LastFM_best.log, whose HR values are the table's; Sports' NDCG
#: columns were not found).
ANCHORS: dict[str, dict[str, float]] = {
    "beauty": {"hr@5": 0.0736, "ndcg@5": 0.0523, "hr@10": 0.1008, "ndcg@10": 0.0611,
               "hr@20": 0.1373, "ndcg@20": 0.0703},
    "sports": {"hr@5": 0.0426, "hr@10": 0.0612, "hr@20": 0.0858},
    "lastfm": {"hr@5": 0.0523, "ndcg@5": 0.0344, "hr@10": 0.0807, "ndcg@10": 0.0435,
               "hr@20": 0.1174, "ndcg@20": 0.0526},
}  # fmt: skip
#: The row of a scenario trained alone with the joint model's architecture.
SHARED_ARCH = "separate, joint's architecture"


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def acceptance(results: dict[str, Any], smallest: str) -> dict[str, Any]:
    """The issue's checks on whatever parts ran."""
    checks: dict[str, Any] = {}
    summary = results.get("joint", {}).get("summary", {})
    for name, models in summary.items():
        (sep, sep_se), (jnt, jnt_se) = models["separate"]["ndcg@10"], models["joint"]["ndcg@10"]
        se = max(sep_se, jnt_se)
        checks[f"{name}: joint >= separate - 1 SE"] = {
            "joint": jnt, "separate": sep, "se": se, "ok": jnt >= sep - se,
        }  # fmt: skip
    if smallest in summary:
        sep, jnt = (
            summary[smallest]["separate"]["ndcg@10"][0],
            summary[smallest]["joint"]["ndcg@10"][0],
        )
        checks[f"{smallest}: joint >= 1.05 x separate"] = {
            "ratio": jnt / sep if sep else None,
            "ok": sep > 0 and jnt >= 1.05 * sep,
        }
    for target, curve in results.get("adapt", {}).items():
        rows = {r["fraction"]: r for r in curve["rows"]}
        if 0.25 in rows and 1.0 in rows:
            quarter, full = rows[0.25], rows[1.0]
            quality = quarter["adapted_ndcg@10"] / max(full["scratch_ndcg@10"], 1e-12)
            time = quarter["adapted_seconds"] / max(full["scratch_seconds"], 1e-12)
            checks[f"{target}: adapted 25% vs scratch 100%"] = {
                "ndcg_ratio": round(quality, 3), "time_ratio": round(time, 3),
                "ok": quality >= 0.9 and time <= 0.25,
            }  # fmt: skip
    return {"checks": checks, "passed": bool(checks) and all(c["ok"] for c in checks.values())}


def _fmt(pair: tuple[float, float]) -> str:
    mean, se = pair
    return f"{mean:.4f} ± {se:.4f}" if se else f"{mean:.4f}"


def render(results: dict[str, Any]) -> str:
    """The report body: joint vs separate table, adaptation curves, acceptance."""
    lines = []
    verdict = results["acceptance"]
    lines.append(f"**Acceptance: {'PASS' if verdict['passed'] else 'FAIL'}**\n")
    for key, check in verdict["checks"].items():
        lines.append(f"- {key}: `{check}`")
    if "joint" in results:
        lines.append(f"\n## Joint vs separate (test, mean ± SE over seeds {results['seeds']})\n")
        rows = []
        names = list(results["joint"]["summary"])
        for name, models in results["joint"]["summary"].items():
            for model in ("separate", SHARED_ARCH, "joint"):
                if model in models:
                    rows.append([name, model, *(_fmt(models[model][m]) for m in METRICS)])
            if name in ANCHORS:
                rows.append(
                    [name, "BSARec (published)", *(ANCHORS[name].get(m, "") for m in METRICS)]
                )
        lines.append(_report.markdown_table(["scenario", "model", *METRICS], rows))
        seconds = [
            [r["seed"], r["joint"]["train_seconds"],
             sum(v["train_seconds"] for v in r["separate"].values())]
            for r in results["joint"]["runs"]
        ]  # fmt: skip
        lines.append(
            _report.markdown_table(["seed", "joint train s", "separate train s (sum)"], seconds)
        )
        gates = [
            [r["seed"], *(r["joint"].get("mean_expert_weights", {}).get(n, "") for n in names)]
            for r in results["joint"]["runs"]
        ]
        if any(any(v != "" for v in row[1:]) for row in gates):
            lines.append("\nThe joint model's gate on the mean expert, per scenario:\n")
            lines.append(_report.markdown_table(["seed", *names], gates))
    for target, curve in results.get("adapt", {}).items():
        lines.append(
            f"\n## Adaptation to {target} (source joint model trained in "
            f"{curve['source_train_seconds']} s on the other scenarios)\n"
        )
        lines.append(_adapt_table(curve))
    lines.append(
        "\nNotes: separate = each scenario's own preset; joint = the first scenario's "
        "preset model for all, each scenario's own split and user embedding, each scenario "
        f"at its own best validation epoch; {SHARED_ARCH} = the joint model's settings for "
        "that scenario trained alone on its preset's schedule (only where its preset's "
        "architecture differs); times are training wall time "
        "(adapted: the new scenario's training only, data loading excluded)."
    )
    return "\n".join(lines) + "\n"


def _adapt_table(curve: dict[str, Any]) -> str:
    """One target's curve; with unfrozen epochs, the frozen stage alone beside it."""
    unfreeze = curve.get("unfreeze", {}).get("epochs", 0)
    header = ["users", "scratch NDCG@10", "scratch s", "adapted NDCG@10", "adapted s"]
    keys = ["fraction", "scratch_ndcg@10", "scratch_seconds", "adapted_ndcg@10", "adapted_seconds"]
    if unfreeze:
        header += ["frozen stage NDCG@10", "frozen stage s", "unfrozen kept"]
        keys += ["adapted_frozen_ndcg@10", "adapted_frozen_seconds", "adapted_unfrozen_kept"]
    table = _report.markdown_table(header, [[r.get(k, "") for k in keys] for r in curve["rows"]])
    if not unfreeze:
        return table
    factor = curve["unfreeze"]["lr_factor"]
    return table + (
        f"\nAdapted: frozen shared encoder, then up to {unfreeze} epochs with it unfrozen "
        f"(learning rate times {factor}), kept only when they beat the frozen stage's best "
        "validation NDCG@10; the frozen stage's own test NDCG@10 and time are beside it.\n"
    )
