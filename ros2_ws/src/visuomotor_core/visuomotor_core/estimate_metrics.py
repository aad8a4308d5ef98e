"""Target-estimate error by hand–target distance: one breakdown for the encoder's offline
evaluation (``visuomotor_models.train_encoder``) and the closed loop (``visuomotor_ros.demo``).

The hand near the target disturbs the image the most (it hides part of the sphere), and that
is where a reach is decided, so errors are reported per band of the grasp point's distance to
the target. Units: m.
"""

from __future__ import annotations

import numpy as np

from visuomotor_core.goal_filter import GoalFilter

#: Confidence of the estimates the policy's goal filter uses (its ``min_confidence``).
CONFIDENT = GoalFilter.min_confidence
#: Hand–target distance bands, m: [low, high).
HAND_DISTANCE_BINS_M = ((0.0, 0.05), (0.05, 0.15), (0.15, np.inf))
#: The held-out goal on the target estimate, met in every band: median and p95, m.
GOAL_MEDIAN_M = 0.008
GOAL_P95_M = 0.025
_CM = 0.01


def bin_name(low: float, high: float) -> str:
    """``lt_5cm``, ``5_15cm``, ``ge_15cm`` for the bands of ``HAND_DISTANCE_BINS_M``."""
    if low == 0.0:
        return f"lt_{high / _CM:g}cm"
    if np.isinf(high):
        return f"ge_{low / _CM:g}cm"
    return f"{low / _CM:g}_{high / _CM:g}cm"


def error_by_hand_distance(errors: np.ndarray, distance: np.ndarray) -> dict:
    """Count, median and p95 of ``errors`` (N,) m per band of the grasp point's distance
    to the target ``distance`` (N,) m (bands: ``HAND_DISTANCE_BINS_M``)."""
    errors, distance = np.asarray(errors, dtype=float), np.asarray(distance, dtype=float)
    out = {}
    for low, high in HAND_DISTANCE_BINS_M:
        chosen = errors[(distance >= low) & (distance < high)]
        out[bin_name(low, high)] = {
            "count": len(chosen),
            "median_m": float(np.median(chosen)) if len(chosen) else None,
            "p95_m": float(np.percentile(chosen, 95)) if len(chosen) else None,
        }
    return out


def samples_by_hand_distance(samples, min_confidence: float = 0.0) -> dict:
    """:func:`error_by_hand_distance` of ``samples`` (N, 3): (hand–target distance m,
    error m, confidence) rows, those at least ``min_confidence`` confident."""
    samples = np.asarray(samples, dtype=float).reshape(-1, 3)
    samples = samples[samples[:, 2] >= min_confidence]
    return error_by_hand_distance(samples[:, 1], samples[:, 0])


def format_band(band: dict) -> str:
    """``median / p95 (count)`` in cm of one band, ``-`` when it is empty."""
    if not band["count"]:
        return "-"
    return f"{band['median_m'] / _CM:.2f} / {band['p95_m'] / _CM:.2f} ({band['count']})"


def goal_met(by_band: dict) -> bool:
    """Median <= GOAL_MEDIAN_M and p95 <= GOAL_P95_M in every band (an empty band fails)."""
    return all(band["median_m"] is not None and band["median_m"] <= GOAL_MEDIAN_M
               and band["p95_m"] <= GOAL_P95_M for band in by_band.values())
