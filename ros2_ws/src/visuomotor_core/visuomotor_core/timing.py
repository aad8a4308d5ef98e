"""Loop-period and latency statistics for /diagnostics.

Both classes keep fixed-size ring buffers (numpy), so recording a sample is
O(1) and allocation-free; percentiles are computed only when a summary is
asked for (at the diagnostics rate, not the control rate). Times in seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np


class _Ring:
    """Fixed-capacity ring buffer of floats."""

    __slots__ = ("_count", "_data", "_index")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self._data = np.zeros(capacity)
        self._index = 0
        self._count = 0

    def push(self, value: float) -> None:
        self._data[self._index] = value
        self._index = (self._index + 1) % self._data.size
        if self._count < self._data.size:
            self._count += 1

    def values(self) -> np.ndarray:
        """The stored samples (oldest order not preserved), a view; copy before keeping it."""
        return self._data[: self._count]

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._index = 0
        self._count = 0


@dataclass(frozen=True)
class PeriodSummary:
    """Control-period figures over the window (s unless noted).

    Attributes:
        count: periods in the window.
        mean_period: mean period.
        jitter_p50, jitter_p99, jitter_max: |period - nominal| percentiles.
        deadline_misses: periods longer than nominal * (1 + tolerance) in the window.
        total_deadline_misses: the same since construction or reset.
        rate_hz: 1 / mean_period (0 when empty).
    """

    count: int
    mean_period: float
    jitter_p50: float
    jitter_p99: float
    jitter_max: float
    deadline_misses: int
    total_deadline_misses: int
    rate_hz: float

    def as_dict(self) -> dict[str, float | int]:
        """Flat key/value pairs for a DiagnosticStatus."""
        return {
            "period_count": self.count,
            "period_mean_s": self.mean_period,
            "jitter_p50_s": self.jitter_p50,
            "jitter_p99_s": self.jitter_p99,
            "jitter_max_s": self.jitter_max,
            "deadline_misses_window": self.deadline_misses,
            "deadline_misses_total": self.total_deadline_misses,
            "rate_hz": self.rate_hz,
        }


class PeriodStats:
    """Ring buffer of control-loop periods with jitter and deadline-miss figures.

    Args:
        nominal_period: the intended period, s (> 0).
        capacity: number of most recent periods kept.
        tolerance: a period longer than ``nominal_period * (1 + tolerance)`` is a
            deadline miss (>= 0).
    """

    def __init__(self, nominal_period: float, capacity: int = 1000, tolerance: float = 0.5):
        if not (math.isfinite(nominal_period) and nominal_period > 0.0):
            raise ValueError(f"nominal_period must be > 0 s, got {nominal_period!r}")
        if not (math.isfinite(tolerance) and tolerance >= 0.0):
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.nominal_period = float(nominal_period)
        self.tolerance = float(tolerance)
        self._deadline = self.nominal_period * (1.0 + self.tolerance)
        self._periods = _Ring(capacity)
        self._last_time: float | None = None
        self.total_deadline_misses = 0

    def record_period(self, period: float) -> None:
        """Record one measured period, s (non-finite or negative values are ignored)."""
        if not (period >= 0.0 and period < math.inf):
            return
        self._periods.push(period)
        if period > self._deadline:
            self.total_deadline_misses += 1

    def record_time(self, now: float) -> None:
        """Record a loop start time, s; the period is the difference to the previous one.

        A time that does not advance (clock reset) restarts the measurement.
        """
        last = self._last_time
        self._last_time = now
        if last is not None and now > last:
            self.record_period(now - last)

    def reset(self) -> None:
        """Forget every sample and the miss counter."""
        self._periods.clear()
        self._last_time = None
        self.total_deadline_misses = 0

    def __len__(self) -> int:
        return len(self._periods)

    def summary(self) -> PeriodSummary:
        """Figures over the current window."""
        periods = self._periods.values()
        if periods.size == 0:
            return PeriodSummary(0, 0.0, 0.0, 0.0, 0.0, 0, self.total_deadline_misses, 0.0)
        jitter = np.abs(periods - self.nominal_period)
        p50, p99 = np.percentile(jitter, (50.0, 99.0))
        mean = float(periods.mean())
        return PeriodSummary(
            count=int(periods.size),
            mean_period=mean,
            jitter_p50=float(p50),
            jitter_p99=float(p99),
            jitter_max=float(jitter.max()),
            deadline_misses=int(np.count_nonzero(periods > self._deadline)),
            total_deadline_misses=self.total_deadline_misses,
            rate_hz=1.0 / mean if mean > 0.0 else 0.0,
        )


@dataclass(frozen=True)
class StageSummary:
    """Latency figures of one stage over the window, s."""

    count: int
    p50: float
    p99: float
    max: float
    mean: float


class LatencyStats:
    """Per-stage latency windows (e.g. "camera_to_features", "encoder_inference").

    Args:
        stages: the stage names; recording an undeclared stage raises KeyError.
        capacity: samples kept per stage.
    """

    def __init__(self, stages: Iterable[str], capacity: int = 1000) -> None:
        names = list(stages)
        if not names:
            raise ValueError("LatencyStats needs at least one stage name")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate stage names in {names}")
        self._rings = {name: _Ring(capacity) for name in names}

    @property
    def stages(self) -> tuple[str, ...]:
        """Declared stage names, in declaration order."""
        return tuple(self._rings)

    def record(self, stage: str, seconds: float) -> None:
        """Record one latency sample, s (non-finite values are ignored)."""
        ring = self._rings[stage]
        if math.isfinite(seconds):
            ring.push(seconds)

    def count(self, stage: str) -> int:
        """Samples currently in ``stage``'s window."""
        return len(self._rings[stage])

    def summary(self, stage: str) -> StageSummary:
        """p50/p99/max/mean of ``stage`` over its window (zeros when empty)."""
        values = self._rings[stage].values()
        if values.size == 0:
            return StageSummary(0, 0.0, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(values, (50.0, 99.0))
        return StageSummary(
            int(values.size), float(p50), float(p99), float(values.max()), float(values.mean())
        )

    def as_dict(self) -> dict[str, float | int]:
        """Flat key/value pairs for a DiagnosticStatus: '<stage>_p50_ms' etc., in ms."""
        result: dict[str, float | int] = {}
        for stage in self._rings:
            summary = self.summary(stage)
            result[f"{stage}_count"] = summary.count
            result[f"{stage}_p50_ms"] = summary.p50 * 1e3
            result[f"{stage}_p99_ms"] = summary.p99 * 1e3
            result[f"{stage}_max_ms"] = summary.max * 1e3
        return result

    def reset(self) -> None:
        """Forget every sample."""
        for ring in self._rings.values():
            ring.clear()


def median_call_seconds(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed
    ones, in seconds (the benchmarks' one timing helper)."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return float(np.median(samples))


def wait_until(condition: Callable[[], bool], timeout: float, period: float = 0.01) -> bool:
    """Poll ``condition`` every ``period`` s until it is true or ``timeout`` s of wall time
    pass; its last value. For tests and tools that wait on another thread or process: it
    bounds the wait, it does not measure anything."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period)
    return bool(condition())
