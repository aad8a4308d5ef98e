"""Summaries of episode rows: success with a Wilson score interval, error and time figures."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (0, 1) for n = 0.

    >>> [round(x, 3) for x in wilson_interval(10, 10)]
    [0.722, 1.0]
    >>> [round(x, 3) for x in wilson_interval(0, 20)]
    [0.0, 0.161]
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class CellSummary:
    """One (condition, policy, mode) cell over its finished episodes."""

    episodes: int
    successes: int
    ci_low: float
    ci_high: float
    final_error_median_m: float
    final_error_mean_m: float
    time_to_success_median_s: float

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else float("nan")

    def success_text(self) -> str:
        """``"94% (47/50) [84-98]"``: rate, counts and the 95 % interval in percent."""
        if not self.episodes:
            return "-"
        return (f"{100 * self.rate:.0f}% ({self.successes}/{self.episodes}) "
                f"[{100 * self.ci_low:.0f}-{100 * self.ci_high:.0f}]")


def summarize(rows: list[dict]) -> CellSummary:
    """Summary of finished rows (rows with an ``error`` are left out by the caller)."""
    n = len(rows)
    k = sum(bool(r["success"]) for r in rows)
    errors = np.array([r["final_error_m"] for r in rows], float)
    times = np.array([r["time_to_success_s"] for r in rows if r["success"]], float)
    low, high = wilson_interval(k, n)
    nan = float("nan")
    return CellSummary(n, k, low, high,
                       float(np.median(errors)) if n else nan,
                       float(np.mean(errors)) if n else nan,
                       float(np.median(times)) if times.size else nan)
