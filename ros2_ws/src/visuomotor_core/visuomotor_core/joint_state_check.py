"""Judging joint-state samples: plausible, fresh, and the last good one kept.

A sample (positions rad, velocities rad/s, stamp s) is valid when it has the model's
length, is finite, lies within the robot's position range widened by ``state_tolerance``
with speeds below ``MEASURED_SPEED_FACTOR`` times the URDF velocity limits, its stamp is
within ``state_timeout`` of ``now``, its stamp changed within ``state_timeout`` of
wall-clock time, and the controller's clock did not run backwards. Only a valid sample
becomes the last good state (:meth:`JointStateCheck.accept`); an invalid one is a fault,
named by the reason :meth:`JointStateCheck.check` returns.

The check allocates nothing per sample. Not thread-safe.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from visuomotor_core.limits import JointLimits, all_true

#: A measured speed above this many URDF velocity limits is a sensor fault: the
#: drives cannot reach it.
MEASURED_SPEED_FACTOR = 2.0


class JointStateCheck:
    """Judges each joint-state sample of ``n`` joints and keeps the last valid one.

    Args:
        urdf_velocity: (n,) the URDF velocity limits, rad/s (before any scaling).

    Attributes:
        q, qd: (n,) the latest plausible sample's positions and velocities (rad, rad/s);
            meaningful only when :meth:`check` returned ''.
        last_good: (n,) positions of the last valid sample, rad.
        has_valid: whether a valid sample was accepted since :meth:`forget`.
    """

    def __init__(self, urdf_velocity: np.ndarray) -> None:
        n = len(urdf_velocity)
        self._n = n
        self._speed_bound = MEASURED_SPEED_FACTOR * np.asarray(urdf_velocity, dtype=np.float64)
        self.q = np.zeros(n)
        self.qd = np.zeros(n)
        self.last_good = np.zeros(n)
        self._work = np.zeros(n)
        self._inside = np.zeros(n, dtype=bool)
        self._low = self._high = np.zeros(n)
        self._timeout = math.inf
        self._stale_reason = self._wall_stale_reason = ""
        self.forget()

    def configure(self, limits: JointLimits, tolerance: float, timeout: float) -> None:
        """Take the robot's position range widened by ``tolerance`` (rad) and the
        staleness bound ``timeout`` (s)."""
        self._low = limits.lower - tolerance
        self._high = limits.upper + tolerance
        self._timeout = timeout
        self._stale_reason = f"joint state stale (older than state_timeout {timeout} s)"
        self._wall_stale_reason = (
            f"joint state stale (unchanged for state_timeout {timeout} s of wall-clock time)"
        )

    def forget(self) -> None:
        """Forget the last valid sample and the stamp seen."""
        self.has_valid = False
        self._stamp_seen = math.nan
        self._stamp_wall = math.nan

    def check(
        self, q: Any, qd: Any, stamp: Any, now: float, wall: float, last_update: float | None
    ) -> str:
        """Judge a sample taken at ``stamp`` for the update at ``now`` (controller clock, s)
        and ``wall`` (wall clock, s; NaN without one) after the one at ``last_update``.

        Returns '' for a valid sample, else the fault. A plausible sample is copied into
        :attr:`q`/:attr:`qd` even when its timing is at fault.
        """
        measured = self._read(q, qd)
        timing = self._timing_fault(stamp, now, wall, last_update)
        return measured or timing

    def accept(self) -> None:
        """The sample in :attr:`q` (judged valid) becomes the last good state."""
        self.last_good[:] = self.q
        self.has_valid = True

    def _read(self, q: Any, qd: Any) -> str:
        """Copy q/qd into the buffers; '' when both are plausible, else the fault."""
        try:
            q = np.asarray(q, dtype=np.float64)
            qd = np.asarray(qd, dtype=np.float64)
        except (TypeError, ValueError):
            return "joint state is not numeric"
        n = self._n
        if q.shape != (n,) or qd.shape != (n,):
            return f"joint state has shape {q.shape}/{qd.shape}, expected ({n},)"
        inside = self._inside
        # NaN fails every comparison: (q >= low) is False for it.
        np.greater_equal(q, self._low, out=inside)
        if all_true(inside):
            np.less_equal(q, self._high, out=inside)
        if not all_true(inside):
            return "joint positions not finite or outside the robot's position range"
        np.abs(qd, out=self._work)
        np.less_equal(self._work, self._speed_bound, out=inside)
        if not all_true(inside):
            return "joint velocities not finite or implausible"
        self.q[:] = q
        self.qd[:] = qd
        return ""

    def _timing_fault(self, stamp: Any, now: float, wall: float, last: float | None) -> str:
        """'' when the sample's stamp is fresh on both clocks and time runs forwards."""
        try:
            stamp = float(stamp)
        except (TypeError, ValueError):
            return "joint state stamp is not a number"
        if not math.isfinite(stamp):
            return "joint state stamp is not finite"
        if stamp != self._stamp_seen:
            self._stamp_seen = stamp
            self._stamp_wall = wall
        if not math.isfinite(now):
            return "controller time is not finite"
        if last is not None and now < last:
            return "clock jumped backwards"
        age = now - stamp
        if age > self._timeout:
            return self._stale_reason
        if age < -self._timeout:
            return "joint state stamp is in the future"
        if wall - self._stamp_wall > self._timeout:
            return self._wall_stale_reason
        return ""
