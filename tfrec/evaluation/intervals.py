"""Confidence intervals of per-user mean metrics and the user-sample report keys (numpy only).

A metric reported by the evaluation is a mean over users of per-user values
``x_1..x_n`` (``n`` = the ``users`` denominator). When the users are a seeded
random sample (``EvalConfig.num_users``), the report adds for each mean metric
``<metric>_ci95``: the half-width of a 95% confidence interval by the normal
approximation, ``1.96 * s / sqrt(n)`` with ``s`` the sample standard deviation
(``ddof=1``) of the per-user values. No finite-population correction is applied,
so the interval is conservative when the sample is a large part of the population.
It also adds ``sample_users`` (the sampled queries) and ``population_users`` (all
queries of the part).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Two-sided 95% quantile of the standard normal distribution.
Z95 = 1.959963984540054
CI_SUFFIX = "_ci95"
SAMPLE_KEY = "sample_users"
POPULATION_KEY = "population_users"


def ci_half_width(total: float, sq_total: float, count: int, z: float = Z95) -> float:
    """Half-width ``z * s / sqrt(n)`` of the normal-approximation interval of a mean.

    Args:
        total: Sum of the per-user values.
        sq_total: Sum of their squares.
        count: Number of users ``n``.
        z: Normal quantile (1.96 for 95%).

    Returns:
        The half-width; NaN when ``count < 2`` (no variance estimate).
    """
    if count < 2:
        return float("nan")
    mean = total / count
    variance = max(sq_total - count * mean * mean, 0.0) / (count - 1)
    return z * math.sqrt(variance / count)


def interval_keys(
    sums: Mapping[str, float], sq_sums: Mapping[str, float], count: int
) -> dict[str, float]:
    """``{"<metric>_ci95": half-width}`` for every metric of ``sums`` (:func:`ci_half_width`)."""
    return {f"{key}{CI_SUFFIX}": ci_half_width(sums[key], sq_sums[key], count) for key in sums}


def ci_lines(metrics: Mapping[str, float], names: Iterable[str]) -> list[str]:
    """Printable lines such as ``test/ndcg@10 = 0.0571 ± 0.0032 (95% CI, 5,000 of 192,000 users)``.

    Args:
        metrics: Prefixed keys (``test/ndcg@10``, ``test/ndcg@10_ci95``,
            ``test/sample_users``, ``test/population_users``).
        names: Keys to show; those without a ``_ci95`` partner are skipped.

    Returns:
        One line per shown key, in the order of ``names``.
    """
    lines = []
    for name in names:
        half = metrics.get(f"{name}{CI_SUFFIX}")
        if half is None or name not in metrics:
            continue
        part = name.split("/", 1)[0]
        sample = metrics.get(f"{part}/{SAMPLE_KEY}", metrics.get(f"{part}/users", float("nan")))
        population = metrics.get(f"{part}/{POPULATION_KEY}", sample)
        lines.append(
            f"{name} = {metrics[name]:.4f} ± {half:.4f} "
            f"(95% CI, {int(sample):,} of {int(population):,} users)"
        )
    return lines
