"""The controller's control law: PD + gravity compensation for tracking and hold, per
command interface, clamped into the robot's limits.

With ``q_ref``/``qd_ref`` the reference and ``q``/``qd`` the measured state (rad, rad/s)
and ``g(q)`` the model's gravity torques (N·m; zero when gravity compensation is off):

* effort, tracking: ``tau = kp (q_ref - q) + kd (qd_ref - qd) + g(q)``;
  hold: ``tau = hold_kp (q_ref - q) - hold_kd qd + g(q)``; then bounded by the velocity
  limits, ``g(q) + k (-v_max - qd) <= tau <= g(q) + k (v_max - qd)`` (the velocity part of
  ros_control's soft joint limits for effort joints, taken relative to the gravity torque,
  with ``k`` from ``VELOCITY_LIMIT_TIME_CONSTANT``): at the limit no torque beyond gravity
  speeds the joint up further, beyond it the torque brakes; then clamped to ±effort limits.
  The reference is rate-limited to ``v_max``, but a joint lagging behind it would
  otherwise be pushed past the limit by ``kp`` (measured: 2.3-4.0 rad/s against 2.175 and
  2.61 rad/s before the bound, with targets 0.25 rad apart at 20 Hz).
* position: ``q_ref`` clamped into the position range.
* velocity, tracking: ``qd_ref + kv (q_ref - q)``; hold: ``kv (q_ref - q)``; clamped to
  ±velocity limits (``kv`` is ``velocity_feedback_gain``, 1/s).

A hold that trusts no measurement (a joint-state fault) takes ``q = q_ref`` and
``qd = 0``: no position error and no damping, so the effort hold is gravity
compensation at the reference.

The law allocates nothing per call: each returns its one output buffer, valid until the
next call. Not thread-safe.
"""

from __future__ import annotations

import numpy as np

from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.limits import JointLimits, clip_into
from visuomotor_core.robot_model import RobotModel

#: Time constant of the effort law's velocity-limit bound, s: its gain on each joint is
#: the joint's smallest inertia (``RobotModel.inertia_floor``) over this, so a joint
#: beyond its limit is braked back within about this long (Panda: 30-60 N·m·s/rad, the
#: order of franka_description's ``k_velocity`` of 40). Per period that is a gain of
#: dt / 0.02 = 0.05 at 1 kHz, stable with the 8 ms actuation delays the sim draws.
VELOCITY_LIMIT_TIME_CONSTANT = 0.02


class ControlLaw:
    """Commands on one interface from the reference and the measured state.

    Args:
        model: the robot (joint count and gravity torques). Configure with
            :meth:`configure` before use.
    """

    def __init__(self, model: RobotModel) -> None:
        n = model.n
        self._model = model
        self._out = np.zeros(n)
        self._work = np.zeros(n)
        self._gravity = np.zeros(n)
        self._zeros = np.zeros(n)
        #: Gain of the velocity-limit bound, N·m·s/rad (the robot's, not a parameter).
        self._speed_gain = model.inertia_floor() / VELOCITY_LIMIT_TIME_CONSTANT
        self.idle = np.zeros(n)

    def configure(self, config: ControllerConfig, limits: JointLimits) -> None:
        """Take the interface, gains and gravity compensation of ``config`` and the
        robot's limits in force."""
        self._interface = config.command_interface
        self._gravity_compensation = config.gravity_compensation
        self._kp = np.array(config.kp)
        self._kd = np.array(config.kd)
        self._hold_kp = np.array(config.effective_hold_kp)
        self._hold_kd = np.array(config.effective_hold_kd)
        self._kv = config.velocity_feedback_gain
        self._low = limits.lower
        self._high = limits.upper
        self._vmax = limits.velocity
        self._neg_vmax = -limits.velocity
        self._effort = limits.effort
        self._neg_effort = -limits.effort
        # A fallback command that is within limits for every interface.
        self.idle = np.clip(np.zeros(self._model.n), self._low, self._high)
        if self._interface != "position":
            self.idle[:] = 0.0

    def tracking(
        self, q_ref: np.ndarray, qd_ref: np.ndarray, q: np.ndarray, qd: np.ndarray
    ) -> np.ndarray:
        """The tracking command toward the reference (see the module docstring)."""
        out = self._out
        if self._interface == "effort":
            self._gravity_into(q)
            np.subtract(q_ref, q, out=out)
            out *= self._kp
            np.subtract(qd_ref, qd, out=self._work)
            self._work *= self._kd
            out += self._work
            out += self._gravity
            return self._bound_effort(out, qd)
        if self._interface == "position":
            return clip_into(q_ref, self._low, self._high, out=out)
        np.subtract(q_ref, q, out=out)
        out *= self._kv
        out += qd_ref
        return clip_into(out, self._neg_vmax, self._vmax, out=out)

    def hold(self, q_ref: np.ndarray, q: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """The damped hold at the reference position (see the module docstring)."""
        out, work = self._out, self._work
        if self._interface == "effort":
            self._gravity_into(q)
            np.subtract(q_ref, q, out=out)
            out *= self._hold_kp
            np.multiply(qd, self._hold_kd, out=work)
            out -= work
            out += self._gravity
            return self._bound_effort(out, qd)
        if self._interface == "position":
            return clip_into(q_ref, self._low, self._high, out=out)
        np.subtract(q_ref, q, out=out)
        out *= self._kv
        return clip_into(out, self._neg_vmax, self._vmax, out=out)

    def blind_hold(self, q_ref: np.ndarray) -> np.ndarray:
        """The hold that trusts no measurement: :meth:`hold` at ``q = q_ref``, ``qd = 0``."""
        return self.hold(q_ref, q_ref, self._zeros)

    def _bound_effort(self, out: np.ndarray, qd: np.ndarray) -> np.ndarray:
        """``out`` (torques with gravity) bounded by the velocity limits, then by the effort
        limits (see the module docstring); in place."""
        work = self._work
        np.subtract(self._vmax, qd, out=work)
        work *= self._speed_gain
        work += self._gravity
        np.minimum(out, work, out=out)
        np.add(self._vmax, qd, out=work)
        work *= self._speed_gain
        np.subtract(self._gravity, work, out=work)
        np.maximum(out, work, out=out)
        return clip_into(out, self._neg_effort, self._effort, out=out)

    def _gravity_into(self, q: np.ndarray) -> None:
        if self._gravity_compensation:
            self._model.gravity_torques(q, out=self._gravity)
        else:
            self._gravity[:] = 0.0
