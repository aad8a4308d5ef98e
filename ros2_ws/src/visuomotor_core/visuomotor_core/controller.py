"""Joint-space actuator controller: interpolation, PD + gravity compensation, limits, watchdog.

The controller turns sparse, stamped joint-position targets (a policy at
~20 Hz) into a joint command at the control rate (1 kHz by default). Times
are seconds on one clock (ROS time, sim time or any monotonic clock), joint
positions rad, velocities rad/s, efforts N·m, all ordered as the model's
joints. The safety model these rules implement, and the tests that hold each
invariant, are written down in ``docs/safety.md``.

Modes (:class:`Mode`):

* ``INACTIVE`` – after construction and :meth:`JointController.deactivate`:
  nothing is commanded; :meth:`~JointController.update` returns a command with
  ``valid=False`` that must not be sent.
* ``TRACKING`` – the reference moves toward the latest accepted target and
  the command follows the reference.
* ``HOLD`` – damped hold at the hold target: the last valid measured position
  when the hold began, clamped into the robot's position range. The reference
  moves from where it was to the hold target at no more than the velocity
  limits, and ``tau = hold_kp (q_ref - q) - hold_kd qd + g(q)``. Entered on
  activation, on reset, when no target was accepted for ``target_timeout`` (on
  the controller's clock or on the wall clock, whichever runs out first), and
  on any joint-state fault (below). The switch happens on the first ``update()``
  after the condition arises. Only an accepted target leaves HOLD.
* ``ESTOP`` – latched by :meth:`~JointController.estop`: the same damped hold,
  targets refused, until :meth:`~JointController.reset_estop` (which goes to
  HOLD; a fresh target then resumes tracking).

A joint-state sample is valid when it has the model's length, is finite, lies
within the robot's position range widened by ``state_tolerance`` with speeds
below ``MEASURED_SPEED_FACTOR`` times the URDF velocity limits, its stamp is
within ``state_timeout`` of ``now``, its stamp changed within ``state_timeout``
of wall-clock time, and the clock did not jump backwards. Only a valid sample
is stored as the last good state: an invalid one is a fault, never a setpoint.
While a fault lasts the hold trusts no measurement: the effort hold is gravity
compensation at the reference, without position error or damping.

Targets (:meth:`~JointController.set_target`) are refused, with a reason, when
they are not finite or have the wrong length, when their stamp is older than
``max_target_age`` at arrival (or newer than ``now`` by more than that), when
any joint lies outside the robot's position range by more than
``out_of_range_tolerance`` (a sign of a units or frame error, not of a policy
overshoot), while the e-stop is latched and while inactive. Accepted targets
are clamped into the robot's position range.

Interpolation: each accepted target starts a segment from the current
reference (position and velocity) to the target over ``interpolation_time``:
``linear``, ``min_jerk`` (quintic with continuous velocity and zero boundary
accelerations) or ``none`` (step). The reference is then rate-limited by the
effective velocity limits and clamped to the position range, in every mode.

Limits: the robot's limits are the URDF limits intersected with the
configuration (velocity and effort scales, position margin). Outputs,
whatever the inputs: finite; effort within ±effort limits, position within
the robot's position range, velocity within ±velocity limits; the reference
(the position command) moves at most ``velocity limit · dt`` per update, with
``dt`` the controller-clock time since the previous update, at most
``MAX_TICK_PERIODS`` periods.

Gains and rates are bounded by discrete-time stability at ``rate_hz`` (effort
interface): with ``I`` the smallest joint-space inertia the model allows
(:meth:`RobotModel.inertia_floor`) and ``dt`` the period, ``kd·dt/I`` and
``kp·dt²/I`` stay at or below ``MAX_DAMPING_STEP`` and ``MAX_STIFFNESS_STEP``,
for the tracking and the hold gains (see
:func:`~visuomotor_core.controller_config.gain_bounds`).

The target watchdog runs on arrival time (the ``now`` passed to
``set_target``) and, when the controller is given a ``wall_clock``, on the wall
clock too, so a frozen controller clock (a stalled ``/clock``) cannot keep a
target alive. Staleness of targets and joint states is judged by their
stamps. The class is not thread-safe: call it from one thread (or under a lock).

This module holds the modes, the e-stop, the watchdog and target acceptance, and
composes the parts, one job each:

* :mod:`visuomotor_core.controller_config` – :class:`ControllerConfig`, the gain bounds
  and the node's parameter schema;
* :mod:`visuomotor_core.joint_state_check` – which joint-state samples are valid;
* :mod:`visuomotor_core.reference_trajectory` – the interpolated, rate-limited reference;
* :mod:`visuomotor_core.control_law` – the tracking and hold laws per interface.

The names of the configuration module are importable from here as well.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from visuomotor_core.control_law import ControlLaw
from visuomotor_core.controller_config import (
    COMMAND_INTERFACES,
    INTERPOLATIONS,
    MAX_DAMPING_STEP,
    MAX_FEEDBACK_STEP,
    MAX_STIFFNESS_STEP,
    MIN_EFFORT_RATE_HZ,
    MIN_TIMEOUT_PERIODS,
    ControllerConfig,
    check_gains,
    config_from_parameters,
    gain_bounds,
    parameter_schema,
)
from visuomotor_core.joint_state_check import MEASURED_SPEED_FACTOR, JointStateCheck
from visuomotor_core.limits import (
    JointLimits,
    all_true,
    check_vector,
    clip_into,
    effective_limits,
)
from visuomotor_core.reference_trajectory import ReferenceTrajectory
from visuomotor_core.robot_model import RobotModel

__all__ = [
    "COMMAND_INTERFACES",
    "INTERPOLATIONS",
    "MAX_DAMPING_STEP",
    "MAX_FEEDBACK_STEP",
    "MAX_STIFFNESS_STEP",
    "MAX_TICK_PERIODS",
    "MEASURED_SPEED_FACTOR",
    "MIN_EFFORT_RATE_HZ",
    "MIN_TIMEOUT_PERIODS",
    "RECOVERED_REASON",
    "RELEASED_REASON",
    "ChangeResult",
    "ControlCommand",
    "ControllerConfig",
    "JointController",
    "Mode",
    "TargetResult",
    "check_gains",
    "config_from_parameters",
    "gain_bounds",
    "parameter_schema",
]

#: The reference advances by at most this many nominal periods per update, so
#: a late update cannot make it jump.
MAX_TICK_PERIODS = 5.0
#: HOLD reason once a joint-state fault clears (the hold itself stays).
RECOVERED_REASON = "joint state recovered: holding until a fresh target"
#: HOLD reason after the e-stop is released.
RELEASED_REASON = "e-stop released: holding until a fresh target"
#: ControllerConfig fields that cannot change while the controller is active.
_FIXED_WHILE_ACTIVE = frozenset({"num_joints", "command_interface"})


class Mode(enum.Enum):
    """Controller mode; see the module docstring."""

    INACTIVE = "inactive"
    TRACKING = "tracking"
    HOLD = "hold"
    ESTOP = "estop"


@dataclass(frozen=True, slots=True)
class TargetResult:
    """Outcome of :meth:`JointController.set_target` (also used for config changes)."""

    accepted: bool
    reason: str = ""


#: Outcome of :meth:`JointController.update_config`.
ChangeResult = TargetResult


@dataclass(frozen=True, slots=True)
class ControlCommand:
    """One control-period output.

    Attributes:
        values: (n,) command on ``interface`` (N·m, rad or rad/s).
        mode: the controller mode that produced it.
        reason: why the controller is not tracking ("" while tracking).
        interface: "effort", "position" or "velocity".
        valid: False when nothing may be commanded (inactive, or no joint state
            seen yet); such a command must not be sent to the robot.
    """

    values: np.ndarray
    mode: Mode
    reason: str
    interface: str
    valid: bool = True


class JointController:
    """Interpolating PD + gravity-compensation controller with limits, watchdog and e-stop.

    Args:
        config: the settings (gain bounds checked against ``model``).
        model: the robot (joint count, limits, gravity, inertias).
        wall_clock: a monotonic clock, s, for the wall-clock backstop of the
            watchdogs (``time.monotonic`` in a node); None runs them on the
            controller clock alone (pure simulation, where sim time is all there is).
    """

    def __init__(
        self,
        config: ControllerConfig,
        model: RobotModel,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        if config.num_joints != model.n:
            raise ValueError(
                f"ControllerConfig.num_joints is {config.num_joints}, "
                f"the model has {model.n} joints"
            )
        reason = check_gains(config, model)
        if reason:
            raise ValueError(reason)
        self._model = model
        self._wall_clock = wall_clock
        n = model.n
        self._n = n
        self._state = JointStateCheck(model.limits.velocity)
        self._reference = ReferenceTrajectory(n)
        self._law = ControlLaw(model)
        self._q_hold = np.zeros(n)
        self._hold_source = np.zeros(n)
        self._apply_config(config)
        self._active = False
        self._estop = False
        self._estop_reason = ""
        self._mode = Mode.INACTIVE
        self._reason = "inactive"
        self._showing_fault = False
        self.targets_accepted = 0
        self.targets_refused = 0
        self.last_refusal = ""
        self.hold_entries = 0
        self._not_before = -math.inf
        self._clear_state()

    # ----------------------------------------------------------------- configuration
    def _apply_config(self, config: ControllerConfig) -> None:
        """Hand ``config`` and the limits it gives to the parts, and derive the rest."""
        limits = effective_limits(self._model.limits, config.limit_overrides())
        self._config = config
        self._limits = limits
        self._low = limits.lower
        self._high = limits.upper
        self._target_low = limits.lower - config.out_of_range_tolerance
        self._target_high = limits.upper + config.out_of_range_tolerance
        self._period = config.period
        self._max_tick = MAX_TICK_PERIODS * config.period
        self._interface = config.command_interface
        timeout = config.target_timeout
        self._timeout_reason = f"no target for more than target_timeout {timeout} s"
        self._wall_timeout_reason = (
            f"no target for more than target_timeout {timeout} s of wall-clock time"
        )
        self._state.configure(limits, config.state_tolerance, config.state_timeout)
        self._reference.configure(limits, config.interpolation, config.interpolation_time)
        self._law.configure(config, limits)

    @property
    def config(self) -> ControllerConfig:
        """The configuration in force."""
        return self._config

    @property
    def limits(self) -> JointLimits:
        """The robot's limits: URDF limits intersected with the configured scales and margin."""
        return self._limits

    @property
    def mode(self) -> Mode:
        """Current mode."""
        return self._mode

    @property
    def reason(self) -> str:
        """Why the controller is not tracking ("" while tracking)."""
        return self._reason

    @property
    def estop_latched(self) -> bool:
        """True while the e-stop is latched."""
        return self._estop

    @property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the current reference position (rad) and velocity (rad/s)."""
        return self._reference.position.copy(), self._reference.velocity.copy()

    @property
    def hold_target(self) -> np.ndarray | None:
        """Where HOLD/ESTOP holds (rad, within the position range); None when not yet known."""
        return self._q_hold.copy() if self._hold_valid else None

    @property
    def hold_source(self) -> np.ndarray | None:
        """The valid measured position the hold target was taken from (rad), or None."""
        return self._hold_source.copy() if self._hold_valid else None

    def update_config(self, **changes: Any) -> ChangeResult:
        """Change configuration fields live; invalid changes are refused with a reason.

        ``num_joints`` and ``command_interface`` can only change while inactive. A
        position range that would leave the current reference outside it is refused
        while active (clamping the reference would step the command).
        """
        names = {f.name for f in fields(ControllerConfig)}
        unknown = sorted(set(changes) - names)
        if unknown:
            return ChangeResult(False, f"unknown controller setting(s) {unknown}")
        if self._active:
            fixed = sorted(
                name
                for name in _FIXED_WHILE_ACTIVE & set(changes)
                if changes[name] != getattr(self._config, name)
            )
            if fixed:
                return ChangeResult(
                    False, f"{fixed} can only change while the controller is inactive"
                )
        try:
            config = replace(self._config, **changes)
            limits = effective_limits(self._model.limits, config.limit_overrides())
        except (TypeError, ValueError) as error:
            return ChangeResult(False, str(error))
        if config.num_joints != self._n:
            return ChangeResult(False, f"num_joints must stay {self._n} (the model's joint count)")
        reason = check_gains(config, self._model)
        if reason:
            return ChangeResult(False, reason)
        if self._active and self._reference.valid:
            q_ref = self._reference.position
            outside = np.flatnonzero((q_ref < limits.lower) | (q_ref > limits.upper))
            if outside.size:
                return ChangeResult(
                    False,
                    f"the new position range excludes the current reference at joint index "
                    f"{outside.tolist()}: clamping it would step the command; change it while "
                    "inactive or once the arm is away from the limit",
                )
        self._apply_config(config)
        # Keep the reference velocity, the segment goal and the hold target inside
        # the new limits (the reference position already is).
        self._reference.fit_limits()
        clip_into(self._hold_source, self._low, self._high, out=self._q_hold)
        return ChangeResult(True, "")

    # ----------------------------------------------------------------- lifecycle
    def _clear_state(self) -> None:
        self._state.forget()
        self._reference.clear()
        self._hold_valid = False
        self._last_update: float | None = None
        self._last_target_time = -math.inf
        self._last_target_wall = -math.inf

    def activate(self) -> None:
        """Start commanding: HOLD at the measured position until the first target (or ESTOP)."""
        if self._active:
            return
        self._active = True
        self._clear_state()
        self._enter_hold("waiting for first target")

    def deactivate(self) -> None:
        """Stop commanding: ``update()`` returns invalid (unsendable) commands."""
        self._active = False
        self._mode = Mode.INACTIVE
        self._reason = "inactive"
        self._showing_fault = False
        self._clear_state()

    def reset(self, not_before: float = -math.inf) -> None:
        """Forget targets, the reference and the measured state, as a re-activation does:
        hold the next valid measured position (watchdog cleared). For an arm moved by
        something else (a simulator's episode reset); the command restarts there.
        Targets stamped before ``not_before`` (s; the time of the jump) are refused from
        now on: they were computed from the world before it.

        A latched e-stop stays latched.
        """
        self._not_before = float(not_before) if math.isfinite(not_before) else -math.inf
        self._clear_state()
        if self._active:
            self._enter_hold("reset: waiting for target")

    def hold(self, reason: str) -> None:
        """Leave TRACKING for HOLD at the last good measured position (the loop's overrun
        response); no effect in HOLD, ESTOP or while inactive."""
        if self._active and self._mode is Mode.TRACKING:
            self._enter_hold(reason)

    def estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: damped hold at the last valid measured position; targets refused.

        Latches while inactive too: activation then starts in ESTOP.
        """
        self._estop = True
        self._estop_reason = reason
        self._reference.cancel_segment()
        if self._active:
            self._mode = Mode.ESTOP
            self._reason = reason
            self._showing_fault = False
            self.hold_entries += 1
            self._capture_hold()

    def reset_estop(self) -> bool:
        """Release the e-stop: HOLD where the arm is until a fresh target arrives.

        Returns True when a latched e-stop was released, False when none was latched.
        """
        if not self._estop:
            return False
        self._estop = False
        if self._active:
            self._mode = Mode.HOLD
            self._reason = RELEASED_REASON
            self._showing_fault = False
        return True

    def _enter_hold(self, reason: str) -> None:
        """Switch to HOLD at the last good measured position (captured on next update if none)."""
        self._reference.cancel_segment()
        if self._estop:
            self._mode = Mode.ESTOP
            self._reason = self._estop_reason
            self._showing_fault = False
            return
        self._mode = Mode.HOLD
        self._reason = reason
        self._showing_fault = False
        self.hold_entries += 1
        self._capture_hold()

    def _capture_hold(self) -> None:
        """Hold target := the last valid measured position clamped into the range (or, with
        none yet, the first valid one to come)."""
        self._reference.stop()
        if not self._state.has_valid:
            self._hold_valid = False
            return
        self._hold_source[:] = self._state.last_good
        clip_into(self._hold_source, self._low, self._high, out=self._q_hold)
        self._hold_valid = True

    # ----------------------------------------------------------------- targets
    def _refuse(self, reason: str) -> TargetResult:
        self.targets_refused += 1
        self.last_refusal = reason
        return TargetResult(False, reason)

    def set_target(
        self,
        positions: Sequence[float] | np.ndarray,
        stamp: float,
        now: float,
        velocities: Sequence[float] | np.ndarray | None = None,
    ) -> TargetResult:
        """Offer a joint-position target (rad) stamped ``stamp`` (s), arriving at ``now`` (s).

        ``velocities`` (rad/s, optional) is the velocity the reference should have
        on reaching the target (``min_jerk`` only). See the module docstring for
        the refusal rules.
        """
        if self._estop:
            return self._refuse("e-stop latched")
        if not self._active:
            return self._refuse("controller inactive")
        ok, reason = check_vector(positions, self._n, "target positions")
        if not ok:
            return self._refuse(reason)
        if velocities is not None:
            ok, reason = check_vector(velocities, self._n, "target velocities")
            if not ok:
                return self._refuse(reason)
        try:
            stamp, now = float(stamp), float(now)
        except (TypeError, ValueError):
            return self._refuse("stamp and now must be numbers (s)")
        if not (math.isfinite(stamp) and math.isfinite(now)):
            return self._refuse("stamp or now is not finite")
        if stamp < self._not_before:
            return self._refuse(f"target stamped {stamp:.3f} s, before the reset at "
                                f"{self._not_before:.3f} s")
        age = now - stamp
        limit = self._config.max_target_age
        if age > limit:
            return self._refuse(f"stale target: age {age:.3f} s > max_target_age {limit} s")
        if age < -limit:
            return self._refuse(f"target stamp is {-age:.3f} s in the future")
        target = np.asarray(positions, dtype=np.float64)
        tolerance = self._config.out_of_range_tolerance
        outside = (target < self._target_low) | (target > self._target_high)
        if outside.any():
            return self._refuse(
                f"target outside the robot's position range by more than {tolerance} rad "
                f"at joint index {np.flatnonzero(outside).tolist()}"
            )
        velocity = None if velocities is None else np.asarray(velocities, dtype=np.float64)
        self._reference.set_goal(target, velocity, now)
        self._last_target_time = now
        if self._wall_clock is not None:
            self._last_target_wall = self._wall_clock()
        if self._mode is Mode.HOLD and not self._showing_fault:
            # While a joint-state fault lasts the controller keeps holding (the target
            # waits as the goal); once the state recovers a fresh target resumes tracking.
            self._mode = Mode.TRACKING
            self._reason = ""
        self.targets_accepted += 1
        return TargetResult(True, "")

    # ----------------------------------------------------------------- the control period
    def update(
        self, now: float, q: Any, qd: Any, state_stamp: float, fault: str = ""
    ) -> ControlCommand:
        """Compute the command for this control period.

        Args:
            now: current time, s.
            q: measured joint positions, rad, shape (n,).
            qd: measured joint velocities, rad/s, shape (n,).
            state_stamp: time the joint state was measured, s.
            fault: a fault the caller knows of (e.g. its loop stalled): the sample is
                then treated as invalid, with this as the reason.
        """
        if not self._active:
            return self._idle_command()
        now, wall = self._read_clocks(now)
        fault = self._take_sample(now, wall, q, qd, state_stamp, fault)
        if not self._state.has_valid:
            # Nothing known about the arm yet: nothing can be commanded safely.
            self._show_fault("no valid joint state yet")
            return self._idle_command()
        dt = self._tick(now)
        self._check_watchdogs(now, wall, fault)
        values = self._command(now, dt, fault)
        if not all_true(np.isfinite(values)):
            # Unreachable with validated inputs; never send it if it happens.
            self._enter_hold("non-finite command suppressed")
            return self._idle_command()
        return self._finish(values)

    def _read_clocks(self, now: Any) -> tuple[float, float]:
        """``now`` as a float (NaN when it is not a number) and the wall clock (NaN
        without one), s."""
        wall = self._wall_clock() if self._wall_clock is not None else math.nan
        try:
            now = float(now)
        except (TypeError, ValueError):
            now = math.nan
        return now, wall

    def _take_sample(
        self, now: float, wall: float, q: Any, qd: Any, stamp: Any, fault: str
    ) -> str:
        """Judge the sample (always, so its stamp is tracked); a valid one becomes the last
        good state and the start of an unknown reference. Returns the fault ('' if none)."""
        problem = self._state.check(q, qd, stamp, now, wall, self._last_update)
        fault = fault or problem
        if not fault:
            self._accept_state()
        return fault

    def _accept_state(self) -> None:
        """The judged sample is valid: it becomes the last good state."""
        self._state.accept()
        self._reference.begin_at(self._state.q)
        if not self._hold_valid and self._mode is not Mode.TRACKING:
            self._capture_hold()

    def _tick(self, now: float) -> float:
        """The controller-clock time since the previous update, s, within
        [0, MAX_TICK_PERIODS periods] (one period on the first update, 0 when not
        finite); ``now`` becomes the previous update when finite."""
        last = self._last_update
        dt = self._period if last is None else min(max(now - last, 0.0), self._max_tick)
        if not math.isfinite(dt):
            dt = 0.0
        if math.isfinite(now):
            self._last_update = now
        return dt

    def _check_watchdogs(self, now: float, wall: float, fault: str) -> None:
        """TRACKING goes to HOLD on a joint-state fault or when the target timed out."""
        if self._mode is not Mode.TRACKING:
            return
        cause = fault or self._target_timeout(now, wall)
        if cause:
            self._enter_hold(cause)
            self._showing_fault = bool(fault)

    def _target_timeout(self, now: float, wall: float) -> str:
        """'' while a target was accepted within target_timeout on both clocks."""
        timeout = self._config.target_timeout
        if now - self._last_target_time > timeout:
            return self._timeout_reason
        if wall - self._last_target_wall > timeout:
            return self._wall_timeout_reason
        return ""

    def _command(self, now: float, dt: float, fault: str) -> np.ndarray:
        """Move the reference for this period and apply the law of the mode."""
        reference, state = self._reference, self._state
        if self._mode is Mode.TRACKING:
            reference.advance(now, dt)
            return self._law.tracking(reference.position, reference.velocity, state.q, state.qd)
        self._show_fault(fault)
        if not self._hold_valid:
            self._capture_hold()
        reference.approach(self._q_hold, dt)
        if fault:
            # No measurement is trusted while the fault lasts.
            return self._law.blind_hold(reference.position)
        return self._law.hold(reference.position, state.q, state.qd)

    def _show_fault(self, fault: str) -> None:
        """HOLD's reason names a joint-state fault while it lasts, and no longer."""
        if self._mode is not Mode.HOLD:
            return
        if fault:
            if self._reason != fault:
                self._reason = fault
            self._showing_fault = True
        elif self._showing_fault:
            self._reason = RECOVERED_REASON
            self._showing_fault = False

    def _finish(self, values: np.ndarray, valid: bool = True) -> ControlCommand:
        return ControlCommand(values.copy(), self._mode, self._reason, self._interface, valid)

    def _idle_command(self) -> ControlCommand:
        return self._finish(self._law.idle, valid=False)

    # ----------------------------------------------------------------- diagnostics
    def status(self) -> dict[str, Any]:
        """Counters and state for /diagnostics (not for the control loop)."""
        return {
            "mode": self._mode.value,
            "reason": self._reason,
            "estop_latched": self._estop,
            "command_interface": self._interface,
            "targets_accepted": self.targets_accepted,
            "targets_refused": self.targets_refused,
            "last_refusal": self.last_refusal,
            "hold_entries": self.hold_entries,
        }
