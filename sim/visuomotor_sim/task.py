"""Reach task: bring the grasp point to the target and hold it there.

The task sees the world only through two callables (a grasp-point sensor and a cumulative
effort meter), so it runs unchanged against the PyBullet world, a replayed log or a real
robot's forward kinematics.

Success: the grasp point stays within ``tolerance`` of the target for ``dwell`` seconds
(measured at the rate :meth:`ReachTask.update` is called) before ``timeout``.
Effort: the increase of the effort meter over the episode; with :class:`ArmWorld` that is
the integral of the sum of squared applied joint torques, N²·m²·s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TaskConfig:
    """Reach task parameters.

    Attributes:
        tolerance: success radius around the target, m.
        dwell: time the grasp point must stay inside the radius, s.
        timeout: episode length limit, s.
    """

    tolerance: float = 0.02
    dwell: float = 0.3
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.tolerance <= 0.0:
            raise ValueError(f"TaskConfig.tolerance must be > 0 m, got {self.tolerance}")
        if self.dwell < 0.0:
            raise ValueError(f"TaskConfig.dwell must be >= 0 s, got {self.dwell}")
        if self.timeout <= self.dwell:
            raise ValueError(f"TaskConfig.timeout ({self.timeout} s) must exceed dwell "
                             f"({self.dwell} s)")


@dataclass(frozen=True)
class TaskStatus:
    """Outcome so far.

    Attributes:
        success: dwell completed inside the tolerance (sticky once reached).
        timed_out: the timeout passed without success.
        error: current grasp-point-to-target distance, m.
        time: time since reset, s.
        time_to_success: time at which the dwell completed, s (None before success).
        effort: effort used since reset (units of the effort meter).
    """

    success: bool
    timed_out: bool
    error: float
    time: float
    time_to_success: float | None
    effort: float

    @property
    def done(self) -> bool:
        return self.success or self.timed_out


class ReachTask:
    """Tracks one reach episode.

    Args:
        config: tolerance, dwell and timeout.
        grasp_point: returns the grasp point (3,), m, in the target's frame.
        effort: returns a cumulative effort meter reading (monotone non-decreasing).
    """

    def __init__(self, config: TaskConfig, grasp_point: Callable[[], np.ndarray],
                 effort: Callable[[], float]) -> None:
        self.config = config
        self._grasp_point = grasp_point
        self._effort = effort
        self._target = np.zeros(3)
        self.reset(self._target, now=0.0)

    @property
    def target(self) -> np.ndarray:
        return self._target.copy()

    def reset(self, target: np.ndarray, now: float) -> TaskStatus:
        """Start an episode towards ``target`` (3,), m, at time ``now``, s."""
        self._target = np.asarray(target, float).reshape(3).copy()
        self._start = now
        self._effort_start = float(self._effort())
        self._inside_since: float | None = None
        self._success_time: float | None = None
        return self.update(now)

    def distance(self) -> float:
        """Current grasp-point-to-target distance, m."""
        return float(np.linalg.norm(self._grasp_point() - self._target))

    def update(self, now: float) -> TaskStatus:
        """Evaluate the task at time ``now`` (s, same clock as :meth:`reset`)."""
        elapsed = now - self._start
        error = self.distance()
        if self._success_time is None:
            self._track_dwell(error, elapsed)
        success = self._success_time is not None
        return TaskStatus(
            success=success,
            timed_out=not success and elapsed >= self.config.timeout - 1e-9,
            error=error,
            time=elapsed,
            time_to_success=self._success_time,
            effort=float(self._effort()) - self._effort_start,
        )

    def _track_dwell(self, error: float, elapsed: float) -> None:
        if error > self.config.tolerance:
            self._inside_since = None
            return
        if self._inside_since is None:
            self._inside_since = elapsed
        if elapsed - self._inside_since >= self.config.dwell - 1e-9 \
                and elapsed <= self.config.timeout + 1e-9:
            self._success_time = elapsed
