"""The controller's reference: target segments interpolated, rate-limited, clamped.

Each target starts a segment from the current reference (position and velocity) to the
target over the segment duration: ``linear``, ``min_jerk`` (quintic with continuous
velocity and zero boundary accelerations, optionally arriving with a given velocity) or
``none`` (step). Every step then moves the reference position by at most
``velocity limit · dt`` toward where the segment (or a hold target) says it should be,
and clamps it into the position range; the reference velocity stays within the
velocity limits. Positions rad, velocities rad/s, times s on the controller's clock.

The buffers are allocated once; a step allocates nothing. Not thread-safe.
"""

from __future__ import annotations

import numpy as np

from visuomotor_core.limits import JointLimits, clip_into


class ReferenceTrajectory:
    """Reference position and velocity of ``n`` joints, moved along target segments.

    The reference is unknown (:attr:`valid` False) until :meth:`begin_at` places it at a
    measured position. Configure with :meth:`configure` before use.

    Attributes:
        position: (n,) reference position, rad (updated in place; read-only to callers).
        velocity: (n,) reference velocity, rad/s (updated in place; read-only to callers).
        valid: whether the reference has been placed at a measured position.
    """

    def __init__(self, n: int) -> None:
        self.position = np.zeros(n)
        self.velocity = np.zeros(n)
        self.valid = False
        self._work = np.zeros(n)
        self._step = np.zeros(n)
        self._neg_step = np.zeros(n)
        self._start = np.zeros(n)
        self._delta = np.zeros(n)
        self._v0 = np.zeros(n)
        self._v1 = np.zeros(n)
        self._goal = np.zeros(n)
        self._low = self._high = self._vmax = self._neg_vmax = np.zeros(n)
        self._interpolation = "none"
        self._duration = 0.0
        self.clear()

    def configure(self, limits: JointLimits, interpolation: str, duration: float) -> None:
        """Take the position range and velocity limits in force, the interpolation
        ("linear", "min_jerk" or "none") and the segment duration, s."""
        self._low = limits.lower
        self._high = limits.upper
        self._vmax = limits.velocity
        self._neg_vmax = -limits.velocity
        self._interpolation = interpolation
        self._duration = duration

    def fit_limits(self) -> None:
        """Bring the reference velocity and the segment goal inside the limits now in force
        (after :meth:`configure` on a running reference; the position must already be)."""
        clip_into(self.velocity, self._neg_vmax, self._vmax, out=self.velocity)
        clip_into(self._goal, self._low, self._high, out=self._goal)
        np.subtract(self._goal, self._start, out=self._delta)

    def clear(self) -> None:
        """Forget the reference and any segment; the velocity becomes zero."""
        self.valid = False
        self._has_segment = False
        self._needs_start = False
        self._t0 = 0.0
        self.velocity[:] = 0.0

    def begin_at(self, q: np.ndarray) -> None:
        """Place an unknown reference at rest at ``q`` (clamped into the position range)
        and start a segment that was waiting for it; no effect on a known reference."""
        if self.valid:
            return
        clip_into(q, self._low, self._high, out=self.position)
        self.velocity[:] = 0.0
        self.valid = True
        if self._needs_start:
            self._start_segment(self._t0)

    def set_goal(self, target: np.ndarray, velocity: np.ndarray | None, now: float) -> None:
        """Start a segment at ``now`` toward ``target`` (rad, clamped into the range),
        reached with ``velocity`` (rad/s, clamped; ``min_jerk`` only, else at rest)."""
        clip_into(target, self._low, self._high, out=self._goal)
        if velocity is None or self._interpolation != "min_jerk":
            self._v1[:] = 0.0
        else:
            clip_into(velocity, self._neg_vmax, self._vmax, out=self._v1)
        self._start_segment(now)

    def cancel_segment(self) -> None:
        """Drop the active segment (the reference stays where it is)."""
        self._has_segment = False

    def stop(self) -> None:
        """Set the reference velocity to zero."""
        self.velocity[:] = 0.0

    def _start_segment(self, now: float) -> None:
        self._has_segment = True
        self._t0 = now
        if not self.valid:
            # No measured position yet: the segment starts at the first one.
            self._needs_start = True
            return
        self._needs_start = False
        self._start[:] = self.position
        self._v0[:] = self.velocity
        np.subtract(self._goal, self._start, out=self._delta)

    def advance(self, now: float, dt: float) -> None:
        """Move the reference along the active segment to time ``now`` (s), by at most
        ``velocity limit · dt`` (``dt`` in s), within the limits; at rest without one."""
        work, velocity = self._work, self.velocity
        if self._has_segment:
            duration = self._duration
            s = 1.0 if duration <= 0.0 else min(max((now - self._t0) / duration, 0.0), 1.0)
            if s >= 1.0 or self._interpolation == "none":
                work[:] = self._goal
                velocity[:] = 0.0
                if s >= 1.0:
                    self._has_segment = False
            elif self._interpolation == "linear":
                np.multiply(self._delta, s, out=work)
                work += self._start
                np.multiply(self._delta, 1.0 / duration, out=velocity)
            else:
                self._min_jerk(s, duration)
        else:
            work[:] = self.position
            velocity[:] = 0.0
        self._rate_limit(dt)
        clip_into(velocity, self._neg_vmax, self._vmax, out=velocity)

    def approach(self, goal: np.ndarray, dt: float) -> None:
        """Move the reference toward ``goal`` (rad) by at most ``velocity limit · dt``,
        within the position range; the reference velocity becomes zero."""
        self._work[:] = goal
        self._rate_limit(dt)
        self.velocity[:] = 0.0

    def _rate_limit(self, dt: float) -> None:
        """position += clip(work - position, ±vmax·dt), then clamp into the position range."""
        position, work = self.position, self._work
        work -= position
        step, neg_step = self._step, self._neg_step
        np.multiply(self._vmax, dt, out=step)
        np.negative(step, out=neg_step)
        clip_into(work, neg_step, step, out=work)
        position += work
        clip_into(position, self._low, self._high, out=position)

    def _min_jerk(self, s: float, duration: float) -> None:
        """Quintic from (start, v0) to (goal, v1) with zero end accelerations -> work,
        velocity."""
        s2 = s * s
        s3 = s2 * s
        s4 = s3 * s
        s5 = s4 * s
        h01 = 10.0 * s3 - 15.0 * s4 + 6.0 * s5
        h10 = s - 6.0 * s3 + 8.0 * s4 - 3.0 * s5
        h11 = -4.0 * s3 + 7.0 * s4 - 3.0 * s5
        dh01 = 30.0 * s2 - 60.0 * s3 + 30.0 * s4
        dh10 = 1.0 - 18.0 * s2 + 32.0 * s3 - 15.0 * s4
        dh11 = -12.0 * s2 + 28.0 * s3 - 15.0 * s4
        work, velocity = self._work, self.velocity
        np.multiply(self._delta, h01, out=work)
        work += self._start
        work += self._v0 * (h10 * duration)
        np.multiply(self._delta, dh01 / duration, out=velocity)
        velocity += self._v0 * dh10
        if self._v1.any():
            work += self._v1 * (h11 * duration)
            velocity += self._v1 * dh11
