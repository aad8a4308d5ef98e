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
for the tracking and the hold gains (see :func:`gain_bounds`).

The target watchdog runs on arrival time (the ``now`` passed to
``set_target``) and, when the controller is given a ``wall_clock``, on the wall
clock too, so a frozen controller clock (a stalled ``/clock``) cannot keep a
target alive. Staleness of targets and joint states is judged by their
stamps. The class is not thread-safe: call it from one thread (or under a lock).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from visuomotor_core.limits import JointLimits, LimitOverrides, check_vector, effective_limits
from visuomotor_core.params import ParamSpec
from visuomotor_core.robot_description import RobotDescription, load_robot
from visuomotor_core.robot_model import RobotModel

#: Command interfaces, as in ros2_control's forward command controllers.
COMMAND_INTERFACES: tuple[str, ...] = ("effort", "position", "velocity")
#: Reference interpolation between consecutive targets.
INTERPOLATIONS: tuple[str, ...] = ("linear", "min_jerk", "none")

#: Lowest control rate of the effort interface, Hz: below it the torque loop is
#: closed too slowly to hold an arm against gravity and contact.
MIN_EFFORT_RATE_HZ = 100.0
#: Timeouts (target_timeout, state_timeout) span at least this many control
#: periods, so a watchdog checked once per period is late by at most a fifth of
#: its timeout.
MIN_TIMEOUT_PERIODS = 5.0
#: Bound on kd·dt/I (damping applied over one period relative to the inertia).
#: The discrete PD loop with explicit torque is stable for kd·dt/I < 2 and
#: kp·dt²/I < 4 - 2·kd·dt/I (one period of delay: < 1); this keeps a factor of
#: two to the delayed limit, so the loop neither chatters nor rings.
MAX_DAMPING_STEP = 0.5
#: Bound on kp·dt²/I (see MAX_DAMPING_STEP).
MAX_STIFFNESS_STEP = 0.5
#: Bound on velocity_feedback_gain·dt: the velocity interface's position loop
#: ``q += dt·k·(q_ref - q)`` converges without overshoot for k·dt < 1.
MAX_FEEDBACK_STEP = 0.5
#: A measured speed above this many URDF velocity limits is a sensor fault: the
#: drives cannot reach it.
MEASURED_SPEED_FACTOR = 2.0
#: The reference advances by at most this many nominal periods per update, so
#: a late update cannot make it jump.
MAX_TICK_PERIODS = 5.0
#: HOLD reason once a joint-state fault clears (the hold itself stays).
RECOVERED_REASON = "joint state recovered: holding until a fresh target"
#: HOLD reason after the e-stop is released.
RELEASED_REASON = "e-stop released: holding until a fresh target"


def _clip_into(
    values: np.ndarray, low: np.ndarray, high: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """np.clip without its Python-level dispatch (a few µs per call at 1 kHz)."""
    np.minimum(values, high, out=out)
    return np.maximum(out, low, out=out)


class Mode(enum.Enum):
    """Controller mode; see the module docstring."""

    INACTIVE = "inactive"
    TRACKING = "tracking"
    HOLD = "hold"
    ESTOP = "estop"


def _gain_tuple(name: str, value: Any, n: int, positive: bool = False) -> tuple[float, ...]:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"ControllerConfig.{name} must be {n} numbers") from error
    if array.shape != (n,):
        raise ValueError(f"ControllerConfig.{name} must have {n} entries, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0.0).any():
        raise ValueError(f"ControllerConfig.{name} must be finite and >= 0, got {array.tolist()}")
    if positive and (array <= 0.0).any():
        raise ValueError(
            f"ControllerConfig.{name} must be > 0 at every joint (a hold without stiffness "
            f"or damping does not hold), got 0 at joint index "
            f"{np.flatnonzero(array <= 0.0).tolist()}"
        )
    return tuple(float(v) for v in array)


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0.0 or (value == 0.0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"ControllerConfig.{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class ControllerConfig:
    """Controller settings (validated on construction; ValueError names the bad field).

    Model-free rules are checked here; the gain bounds that need the robot's
    inertias are checked by :class:`JointController` (:func:`gain_bounds`).
    The robot's fields (joint count, gains, limit margin and scales) default to the
    default robot's description (:mod:`visuomotor_core.robot_description`);
    :meth:`for_robot` takes them from another robot's.

    Attributes:
        num_joints: number of controlled joints (must match the model).
        rate_hz: nominal control rate, Hz (> 0; >= MIN_EFFORT_RATE_HZ for effort).
        command_interface: "effort" (N·m), "position" (rad) or "velocity" (rad/s).
        kp: position gains, N·m/rad, one per joint (>= 0).
        kd: damping gains, N·m·s/rad, one per joint (>= 0).
        hold_kp: HOLD/ESTOP position gains, N·m/rad (> 0); None uses ``kp``.
        hold_kd: HOLD/ESTOP damping gains, N·m·s/rad (> 0); None uses ``kd``.
        gravity_compensation: add the model's gravity torques (effort interface).
        interpolation: "linear", "min_jerk" or "none".
        interpolation_time: duration of one target segment, s (> 0 unless "none").
        target_timeout: HOLD when no target was accepted for this long, s
            (>= MIN_TIMEOUT_PERIODS periods).
        state_timeout: HOLD when the joint state stamp is older than this, or did
            not change for this long on the wall clock, s (>= MIN_TIMEOUT_PERIODS periods).
        max_target_age: targets whose stamp is older than this at arrival are stale, s.
        position_margin: rad kept free at both ends of each position range.
        out_of_range_tolerance: targets beyond the robot's position range by more
            than this (rad) are refused; closer ones are clamped.
        state_tolerance: measured positions beyond the robot's position range by
            more than this (rad) are a sensor fault.
        velocity_scale: factor in (0, 1] on the URDF velocity limits.
        effort_scale: factor in (0, 1] on the URDF effort limits.
        velocity_feedback_gain: velocity interface only, 1/s: the command is
            ``qd_ref + gain * (q_ref - q)``; gain·period <= MAX_FEEDBACK_STEP.
    """

    num_joints: int = field(default_factory=lambda: load_robot().n)
    rate_hz: float = 1000.0
    command_interface: str = "effort"
    kp: tuple[float, ...] = field(default_factory=lambda: load_robot().kp)
    kd: tuple[float, ...] = field(default_factory=lambda: load_robot().kd)
    hold_kp: tuple[float, ...] | None = field(default_factory=lambda: load_robot().hold_kp)
    hold_kd: tuple[float, ...] | None = field(default_factory=lambda: load_robot().hold_kd)
    gravity_compensation: bool = True
    interpolation: str = "min_jerk"
    interpolation_time: float = 0.05
    target_timeout: float = 0.1
    state_timeout: float = 0.05
    max_target_age: float = 0.25
    position_margin: float = field(default_factory=lambda: load_robot().position_margin)
    out_of_range_tolerance: float = 0.2
    state_tolerance: float = 0.05
    velocity_scale: float = field(default_factory=lambda: load_robot().velocity_scale)
    effort_scale: float = field(default_factory=lambda: load_robot().effort_scale)
    velocity_feedback_gain: float = 10.0

    def __post_init__(self) -> None:
        n = self.num_joints
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"ControllerConfig.num_joints must be a positive int, got {n!r}")
        for name in ("kp", "kd"):
            object.__setattr__(self, name, _gain_tuple(name, getattr(self, name), n))
        for name, fallback in (("hold_kp", "kp"), ("hold_kd", "kd")):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _gain_tuple(name, value, n, positive=True))
            else:
                _gain_tuple(f"{fallback} (the {name} in force while {name} is unset)",
                            getattr(self, fallback), n, positive=True)
        if self.command_interface not in COMMAND_INTERFACES:
            raise ValueError(
                f"ControllerConfig.command_interface must be one of {COMMAND_INTERFACES}, "
                f"got {self.command_interface!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"ControllerConfig.interpolation must be one of {INTERPOLATIONS}, "
                f"got {self.interpolation!r}"
            )
        if not isinstance(self.gravity_compensation, bool):
            raise ValueError("ControllerConfig.gravity_compensation must be a bool")
        for name in ("rate_hz", "target_timeout", "state_timeout", "max_target_age"):
            _positive(name, getattr(self, name))
        for name in ("position_margin", "out_of_range_tolerance", "state_tolerance",
                     "velocity_feedback_gain"):
            _positive(name, getattr(self, name), allow_zero=True)
        _positive("interpolation_time", self.interpolation_time, allow_zero=True)
        if self.interpolation != "none" and self.interpolation_time <= 0.0:
            raise ValueError(
                f"ControllerConfig.interpolation_time must be > 0 s for "
                f"{self.interpolation!r} interpolation"
            )
        for name in ("velocity_scale", "effort_scale"):
            value = getattr(self, name)
            _positive(name, value)
            if value > 1.0:
                raise ValueError(f"ControllerConfig.{name} must be in (0, 1], got {value!r}")
        self._check_rates()

    def _check_rates(self) -> None:
        """The rules that tie the rate to the interface, the timeouts and the feedback."""
        if self.command_interface == "effort" and self.rate_hz < MIN_EFFORT_RATE_HZ:
            raise ValueError(
                f"ControllerConfig.rate_hz {self.rate_hz:g} Hz is below {MIN_EFFORT_RATE_HZ:g} "
                "Hz, the lowest rate that closes an effort loop on an arm"
            )
        shortest = MIN_TIMEOUT_PERIODS * self.period
        for name in ("target_timeout", "state_timeout"):
            value = getattr(self, name)
            if value < shortest - 1e-12:
                raise ValueError(
                    f"ControllerConfig.{name} {value:g} s is shorter than "
                    f"{MIN_TIMEOUT_PERIODS:g} control periods ({shortest:g} s at "
                    f"{self.rate_hz:g} Hz): the watchdog would be late by more than a "
                    f"fifth of it; raise {name} or rate_hz"
                )
        step = self.velocity_feedback_gain * self.period
        if step > MAX_FEEDBACK_STEP:
            raise ValueError(
                f"ControllerConfig.velocity_feedback_gain {self.velocity_feedback_gain:g} 1/s "
                f"times the period is {step:.3g} > {MAX_FEEDBACK_STEP}: the velocity loop "
                f"would overshoot at {self.rate_hz:g} Hz (at most "
                f"{MAX_FEEDBACK_STEP * self.rate_hz:g} 1/s)"
            )

    @classmethod
    def for_robot(cls, robot: RobotDescription, **overrides: Any) -> ControllerConfig:
        """The configuration with ``robot``'s joint count, default gains and limit margin
        and scales, and ``overrides`` (field name: value) on top."""
        values: dict[str, Any] = {
            "num_joints": robot.n, "kp": robot.kp, "kd": robot.kd, "hold_kp": robot.hold_kp,
            "hold_kd": robot.hold_kd, "position_margin": robot.position_margin,
            "velocity_scale": robot.velocity_scale, "effort_scale": robot.effort_scale,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def period(self) -> float:
        """Nominal control period, s."""
        return 1.0 / self.rate_hz

    @property
    def effective_hold_kp(self) -> tuple[float, ...]:
        """HOLD/ESTOP position gains in force, N·m/rad."""
        return self.kp if self.hold_kp is None else self.hold_kp

    @property
    def effective_hold_kd(self) -> tuple[float, ...]:
        """HOLD/ESTOP damping gains in force, N·m·s/rad."""
        return self.kd if self.hold_kd is None else self.hold_kd

    def limit_overrides(self) -> LimitOverrides:
        """The configured restrictions on the URDF limits."""
        return LimitOverrides(
            velocity_scale=self.velocity_scale,
            effort_scale=self.effort_scale,
            position_margin=self.position_margin,
        )


def gain_bounds(model: RobotModel, rate_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Largest stable (kp, kd) per joint at ``rate_hz``: N·m/rad, N·m·s/rad.

    ``kp <= MAX_STIFFNESS_STEP · I / dt²`` and ``kd <= MAX_DAMPING_STEP · I / dt``
    with ``I`` the model's smallest joint-space inertia of each joint
    (:meth:`RobotModel.inertia_floor`) and ``dt = 1 / rate_hz``.
    """
    inertia = model.inertia_floor()
    dt = 1.0 / rate_hz
    return MAX_STIFFNESS_STEP * inertia / dt**2, MAX_DAMPING_STEP * inertia / dt


def check_gains(config: ControllerConfig, model: RobotModel) -> str:
    """Why ``config``'s gains are unstable on ``model`` at its rate ('' when they are not).

    Only the effort interface closes a loop through these gains; the position and
    velocity interfaces leave them unused.
    """
    if config.command_interface != "effort":
        return ""
    kp_max, kd_max = gain_bounds(model, config.rate_hz)
    inertia = model.inertia_floor()
    checks = (
        ("kp", config.kp, kp_max, "N·m/rad", "kp·dt²/I", MAX_STIFFNESS_STEP),
        ("kd", config.kd, kd_max, "N·m·s/rad", "kd·dt/I", MAX_DAMPING_STEP),
        ("hold_kp", config.effective_hold_kp, kp_max, "N·m/rad", "kp·dt²/I",
         MAX_STIFFNESS_STEP),
        ("hold_kd", config.effective_hold_kd, kd_max, "N·m·s/rad", "kd·dt/I",
         MAX_DAMPING_STEP),
    )
    for name, gains, bound, unit, ratio, limit in checks:
        over = np.flatnonzero(np.asarray(gains) > bound * (1.0 + 1e-12))
        if over.size:
            j = int(over[0])
            return (
                f"{name}[{j}] = {gains[j]:g} {unit} on {model.joint_names[j]} is above "
                f"{bound[j]:.4g} {unit}, the stable bound at {config.rate_hz:g} Hz "
                f"({ratio} <= {limit} with I = {inertia[j]:.3g} kg·m², the joint's smallest "
                f"inertia in the robot model); lower {name} or raise rate_hz"
            )
    return ""


#: ControllerConfig fields that cannot change while the controller is active.
_FIXED_WHILE_ACTIVE = frozenset({"num_joints", "command_interface"})


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
        # Work buffers (reused every update).
        self._q = np.zeros(n)
        self._qd = np.zeros(n)
        self._q_ref = np.zeros(n)
        self._qd_ref = np.zeros(n)
        self._q_hold = np.zeros(n)
        self._hold_source = np.zeros(n)
        self._q_last_good = np.zeros(n)
        self._gravity = np.zeros(n)
        self._work = np.zeros(n)
        self._out = np.zeros(n)
        self._seg_start = np.zeros(n)
        self._seg_delta = np.zeros(n)
        self._seg_v0 = np.zeros(n)
        self._seg_v1 = np.zeros(n)
        self._seg_goal = np.zeros(n)
        self._zeros = np.zeros(n)
        self._step = np.zeros(n)
        self._neg_step = np.zeros(n)
        self._outside = np.zeros(n, dtype=bool)
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
        self._clear_state()

    # ----------------------------------------------------------------- configuration
    def _apply_config(self, config: ControllerConfig) -> None:
        """Derive the arrays the control law uses from ``config``."""
        limits = effective_limits(self._model.limits, config.limit_overrides())
        self._config = config
        self._limits = limits
        self._low = limits.lower
        self._high = limits.upper
        self._state_low = limits.lower - config.state_tolerance
        self._state_high = limits.upper + config.state_tolerance
        self._target_low = limits.lower - config.out_of_range_tolerance
        self._target_high = limits.upper + config.out_of_range_tolerance
        self._speed_bound = MEASURED_SPEED_FACTOR * self._model.limits.velocity
        self._vmax = limits.velocity
        self._neg_vmax = -limits.velocity
        self._effort = limits.effort
        self._neg_effort = -limits.effort
        self._kp = np.array(config.kp)
        self._kd = np.array(config.kd)
        self._hold_kp = np.array(config.effective_hold_kp)
        self._hold_kd = np.array(config.effective_hold_kd)
        self._period = config.period
        self._max_tick = MAX_TICK_PERIODS * config.period
        self._interface = config.command_interface
        self._interpolation = config.interpolation
        self._seg_time = config.interpolation_time
        self._kv = config.velocity_feedback_gain
        timeout = config.target_timeout
        self._timeout_reason = f"no target for more than target_timeout {timeout} s"
        self._wall_timeout_reason = (
            f"no target for more than target_timeout {timeout} s of wall-clock time"
        )
        self._stale_reason = (
            f"joint state stale (older than state_timeout {config.state_timeout} s)"
        )
        self._wall_stale_reason = (
            f"joint state stale (unchanged for state_timeout {config.state_timeout} s of "
            "wall-clock time)"
        )
        # A fallback command that is within limits for every interface.
        self._idle_values = np.clip(np.zeros(self._n), self._low, self._high)
        if self._interface != "position":
            self._idle_values[:] = 0.0

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
        return self._q_ref.copy(), self._qd_ref.copy()

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
        if self._active and self._ref_valid:
            outside = np.flatnonzero((self._q_ref < limits.lower) | (self._q_ref > limits.upper))
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
        _clip_into(self._qd_ref, self._neg_vmax, self._vmax, out=self._qd_ref)
        _clip_into(self._seg_goal, self._low, self._high, out=self._seg_goal)
        np.subtract(self._seg_goal, self._seg_start, out=self._seg_delta)
        _clip_into(self._hold_source, self._low, self._high, out=self._q_hold)
        return ChangeResult(True, "")

    # ----------------------------------------------------------------- lifecycle
    def _clear_state(self) -> None:
        self._has_state = False
        self._ref_valid = False
        self._hold_valid = False
        self._has_segment = False
        self._segment_needs_start = False
        self._seg_t0 = 0.0
        self._last_update: float | None = None
        self._last_target_time = -math.inf
        self._last_target_wall = -math.inf
        self._stamp_seen = math.nan
        self._stamp_wall = math.nan
        self._qd_ref[:] = 0.0

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

    def reset(self) -> None:
        """Forget targets, the reference and the measured state, as a re-activation does:
        hold the next valid measured position (watchdog cleared). For an arm moved by
        something else (a simulator's episode reset); the command restarts there.

        A latched e-stop stays latched.
        """
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
        self._has_segment = False
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
        self._has_segment = False
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
        self._qd_ref[:] = 0.0
        if not self._has_state:
            self._hold_valid = False
            return
        self._hold_source[:] = self._q_last_good
        _clip_into(self._hold_source, self._low, self._high, out=self._q_hold)
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
        _clip_into(target, self._low, self._high, out=self._seg_goal)
        if velocities is None or self._interpolation != "min_jerk":
            self._seg_v1[:] = 0.0
        else:
            _clip_into(np.asarray(velocities, dtype=np.float64), self._neg_vmax, self._vmax,
                       out=self._seg_v1)
        self._start_segment(now)
        self._last_target_time = now
        if self._wall_clock is not None:
            self._last_target_wall = self._wall_clock()
        if self._mode is Mode.HOLD:
            self._mode = Mode.TRACKING
            self._reason = ""
            self._showing_fault = False
        self.targets_accepted += 1
        return TargetResult(True, "")

    def _start_segment(self, now: float) -> None:
        self._has_segment = True
        self._seg_t0 = now
        if not self._ref_valid:
            # No measured position yet: the segment starts at the first one.
            self._segment_needs_start = True
            return
        self._segment_needs_start = False
        self._seg_start[:] = self._q_ref
        self._seg_v0[:] = self._qd_ref
        np.subtract(self._seg_goal, self._seg_start, out=self._seg_delta)

    # ----------------------------------------------------------------- control law
    def _rate_limit_reference(self, dt: float) -> None:
        """q_ref += clip(work - q_ref, ±vmax·dt), then clamp into the position range."""
        q_ref, work = self._q_ref, self._work
        work -= q_ref
        step, neg_step = self._step, self._neg_step
        np.multiply(self._vmax, dt, out=step)
        np.negative(step, out=neg_step)
        _clip_into(work, neg_step, step, out=work)
        q_ref += work
        _clip_into(q_ref, self._low, self._high, out=q_ref)

    def _advance_reference(self, now: float, dt: float) -> None:
        """Move the reference along the active segment, rate-limited, within limits."""
        q_ref, qd_ref, work = self._q_ref, self._qd_ref, self._work
        if self._has_segment:
            duration = self._seg_time
            s = 1.0 if duration <= 0.0 else min(max((now - self._seg_t0) / duration, 0.0), 1.0)
            if s >= 1.0 or self._interpolation == "none":
                work[:] = self._seg_goal
                qd_ref[:] = 0.0
                if s >= 1.0:
                    self._has_segment = False
            elif self._interpolation == "linear":
                np.multiply(self._seg_delta, s, out=work)
                work += self._seg_start
                np.multiply(self._seg_delta, 1.0 / duration, out=qd_ref)
            else:
                self._min_jerk(s, duration)
        else:
            work[:] = q_ref
            qd_ref[:] = 0.0
        self._rate_limit_reference(dt)
        _clip_into(qd_ref, self._neg_vmax, self._vmax, out=qd_ref)

    def _approach_hold(self, dt: float) -> None:
        """Move the reference toward the hold target, rate-limited, within limits."""
        if not self._hold_valid:
            self._capture_hold()
        self._work[:] = self._q_hold
        self._rate_limit_reference(dt)
        self._qd_ref[:] = 0.0

    def _min_jerk(self, s: float, duration: float) -> None:
        """Quintic from (start, v0) to (goal, v1) with zero end accelerations -> work, qd_ref."""
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
        work, qd_ref = self._work, self._qd_ref
        np.multiply(self._seg_delta, h01, out=work)
        work += self._seg_start
        work += self._seg_v0 * (h10 * duration)
        np.multiply(self._seg_delta, dh01 / duration, out=qd_ref)
        qd_ref += self._seg_v0 * dh10
        if self._seg_v1.any():
            work += self._seg_v1 * (h11 * duration)
            qd_ref += self._seg_v1 * dh11

    def _read_state(self, q: Any, qd: Any) -> str:
        """Copy q/qd into the work buffers; '' when both are plausible, else the fault."""
        try:
            q = np.asarray(q, dtype=np.float64)
            qd = np.asarray(qd, dtype=np.float64)
        except (TypeError, ValueError):
            return "joint state is not numeric"
        n = self._n
        if q.shape != (n,) or qd.shape != (n,):
            return f"joint state has shape {q.shape}/{qd.shape}, expected ({n},)"
        outside = self._outside
        # NaN fails every comparison: (q >= low) is False for it.
        np.greater_equal(q, self._state_low, out=outside)
        if outside.all():
            np.less_equal(q, self._state_high, out=outside)
        if not outside.all():
            return "joint positions not finite or outside the robot's position range"
        np.abs(qd, out=self._work)
        np.less_equal(self._work, self._speed_bound, out=outside)
        if not outside.all():
            return "joint velocities not finite or implausible"
        self._q[:] = q
        self._qd[:] = qd
        return ""

    def _timing_fault(self, now: float, state_stamp: Any, wall: float) -> str:
        """'' when the sample's stamp is fresh on both clocks and time runs forwards."""
        try:
            stamp = float(state_stamp)
        except (TypeError, ValueError):
            return "joint state stamp is not a number"
        if not math.isfinite(stamp):
            return "joint state stamp is not finite"
        if stamp != self._stamp_seen:
            self._stamp_seen = stamp
            self._stamp_wall = wall
        if not math.isfinite(now):
            return "controller time is not finite"
        last = self._last_update
        if last is not None and now < last:
            return "clock jumped backwards"
        age = now - stamp
        if age > self._config.state_timeout:
            return self._stale_reason
        if age < -self._config.state_timeout:
            return "joint state stamp is in the future"
        if wall - self._stamp_wall > self._config.state_timeout:
            return self._wall_stale_reason
        return ""

    def _accept_state(self) -> None:
        """The sample in the work buffers is valid: it becomes the last good state."""
        self._q_last_good[:] = self._q
        self._has_state = True
        if not self._ref_valid:
            _clip_into(self._q, self._low, self._high, out=self._q_ref)
            self._qd_ref[:] = 0.0
            self._ref_valid = True
        if not self._hold_valid and self._mode is not Mode.TRACKING:
            self._capture_hold()
        if self._segment_needs_start:
            self._start_segment(self._seg_t0)

    def _watchdog(self, now: float, wall: float) -> str:
        """'' while a target was accepted within target_timeout on both clocks."""
        timeout = self._config.target_timeout
        if now - self._last_target_time > timeout:
            return self._timeout_reason
        if wall - self._last_target_wall > timeout:
            return self._wall_timeout_reason
        return ""

    def _finish(self, values: np.ndarray, valid: bool = True) -> ControlCommand:
        return ControlCommand(values.copy(), self._mode, self._reason, self._interface, valid)

    def _idle_command(self) -> ControlCommand:
        return self._finish(self._idle_values, valid=False)

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
        wall = self._wall_clock() if self._wall_clock is not None else math.nan
        try:
            now = float(now)
        except (TypeError, ValueError):
            now = math.nan
        measured = self._read_state(q, qd)
        timing = self._timing_fault(now, state_stamp, wall)
        fault = fault or measured or timing
        if not fault:
            self._accept_state()
        if not self._has_state:
            # Nothing known about the arm yet: nothing can be commanded safely.
            self._show_fault("no valid joint state yet")
            return self._idle_command()

        last = self._last_update
        dt = self._period if last is None else min(max(now - last, 0.0), self._max_tick)
        if not math.isfinite(dt):
            dt = 0.0
        if math.isfinite(now):
            self._last_update = now

        if self._mode is Mode.TRACKING:
            cause = fault or self._watchdog(now, wall)
            if cause:
                self._enter_hold(cause)
                self._showing_fault = bool(fault)
        if self._mode is Mode.TRACKING:
            self._advance_reference(now, dt)
            values = self._tracking_law()
        else:
            self._show_fault(fault)
            self._approach_hold(dt)
            values = self._hold_law(fault)
        if not np.isfinite(values).all():
            # Unreachable with validated inputs; never send it if it happens.
            self._enter_hold("non-finite command suppressed")
            return self._finish(self._idle_values, valid=False)
        return self._finish(values)

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

    def _tracking_law(self) -> np.ndarray:
        out, q = self._out, self._q
        if self._interface == "effort":
            self._gravity_into(q)
            np.subtract(self._q_ref, q, out=out)
            out *= self._kp
            np.subtract(self._qd_ref, self._qd, out=self._work)
            self._work *= self._kd
            out += self._work
            out += self._gravity
            return _clip_into(out, self._neg_effort, self._effort, out=out)
        if self._interface == "position":
            return _clip_into(self._q_ref, self._low, self._high, out=out)
        np.subtract(self._q_ref, q, out=out)
        out *= self._kv
        out += self._qd_ref
        return _clip_into(out, self._neg_vmax, self._vmax, out=out)

    def _hold_law(self, fault: str) -> np.ndarray:
        """Damped hold at the reference; with a joint-state fault no measurement is trusted."""
        out, work = self._out, self._work
        if fault:
            # No position error, no damping: gravity compensation at the reference.
            q, qd = self._q_ref, self._zeros
        else:
            q, qd = self._q, self._qd
        if self._interface == "effort":
            self._gravity_into(q)
            np.subtract(self._q_ref, q, out=out)
            out *= self._hold_kp
            np.multiply(qd, self._hold_kd, out=work)
            out -= work
            out += self._gravity
            return _clip_into(out, self._neg_effort, self._effort, out=out)
        if self._interface == "position":
            return _clip_into(self._q_ref, self._low, self._high, out=out)
        np.subtract(self._q_ref, q, out=out)
        out *= self._kv
        return _clip_into(out, self._neg_vmax, self._vmax, out=out)

    def _gravity_into(self, q: np.ndarray) -> None:
        if self._config.gravity_compensation:
            self._model.gravity_torques(q, out=self._gravity)
        else:
            self._gravity[:] = 0.0

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


def parameter_schema(defaults: ControllerConfig | None = None) -> list[ParamSpec]:
    """The controller node's parameters, one spec per ControllerConfig field.

    Ranges are practical outer bounds; the rules that tie parameters together
    (gains stable at the rate, timeouts of at least a few periods, the effort
    interface's minimum rate, positive hold gains) are ControllerConfig's and
    :func:`check_gains`', and refuse a value with a reason at configure and live.
    ``num_joints`` and ``command_interface`` are read-only.
    """
    d = defaults or ControllerConfig()
    n = d.num_joints
    hold_kp = list(d.effective_hold_kp)
    hold_kd = list(d.effective_hold_kd)
    return [
        ParamSpec("num_joints", int, n, "number of controlled joints", "", 1, 64, read_only=True),
        ParamSpec("rate_hz", float, d.rate_hz,
                  f"control loop rate (effort interface: >= {MIN_EFFORT_RATE_HZ:g} Hz)",
                  "Hz", 1.0, 10000.0),
        ParamSpec(
            "command_interface", str, d.command_interface, "command interface of the robot",
            read_only=True, choices=COMMAND_INTERFACES,
        ),
        ParamSpec("kp", float, list(d.kp),
                  f"tracking position gains (kp·dt²/I <= {MAX_STIFFNESS_STEP})", "N·m/rad",
                  0.0, 1e4, length=n),
        ParamSpec("kd", float, list(d.kd),
                  f"tracking damping gains (kd·dt/I <= {MAX_DAMPING_STEP})", "N·m·s/rad",
                  0.0, 1e3, length=n),
        ParamSpec("hold_kp", float, hold_kp, "hold/e-stop position gains (> 0, bounded as kp)",
                  "N·m/rad", 0.0, 1e4, length=n),
        ParamSpec("hold_kd", float, hold_kd, "hold/e-stop damping gains (> 0, bounded as kd)",
                  "N·m·s/rad", 0.0, 1e3, length=n),
        ParamSpec("gravity_compensation", bool, d.gravity_compensation,
                  "add model gravity torques (effort interface)"),
        ParamSpec("interpolation", str, d.interpolation, "reference interpolation between targets",
                  choices=INTERPOLATIONS),
        ParamSpec("interpolation_time", float, d.interpolation_time,
                  "duration of one interpolation segment", "s", 0.0, 1.0),
        ParamSpec("target_timeout", float, d.target_timeout,
                  f"hold when no target was accepted for this long, on the controller clock or "
                  f"the wall clock (>= {MIN_TIMEOUT_PERIODS:g} periods)", "s", 1e-3, 10.0),
        ParamSpec("state_timeout", float, d.state_timeout,
                  f"hold when the joint state stamp is older than this or did not change for "
                  f"this long on the wall clock (>= {MIN_TIMEOUT_PERIODS:g} periods)", "s",
                  1e-3, 10.0),
        ParamSpec("max_target_age", float, d.max_target_age,
                  "refuse targets whose stamp is older than this at arrival", "s", 1e-3, 10.0),
        ParamSpec("position_margin", float, d.position_margin,
                  "free range kept at both ends of each joint range", "rad", 0.0, 0.5),
        ParamSpec("out_of_range_tolerance", float, d.out_of_range_tolerance,
                  "refuse targets beyond the robot's position range by more than this", "rad",
                  0.0, 3.2),
        ParamSpec("state_tolerance", float, d.state_tolerance,
                  "a measured position beyond the robot's position range by more than this is "
                  "a sensor fault", "rad", 0.0, 0.2),
        ParamSpec("velocity_scale", float, d.velocity_scale,
                  "factor on the URDF velocity limits", "", 1e-3, 1.0),
        ParamSpec("effort_scale", float, d.effort_scale,
                  "factor on the URDF effort limits", "", 1e-3, 1.0),
        ParamSpec("velocity_feedback_gain", float, d.velocity_feedback_gain,
                  f"position feedback of the velocity interface (gain·dt <= {MAX_FEEDBACK_STEP})",
                  "1/s", 0.0, 1e3),
    ]


def config_from_parameters(values: Mapping[str, Any]) -> ControllerConfig:
    """Build a ControllerConfig from {parameter name: value}; ValueError on bad values."""
    names = {f.name for f in fields(ControllerConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown controller parameter(s) {unknown}")
    converted = {
        name: tuple(value) if isinstance(value, list | tuple | np.ndarray) else value
        for name, value in values.items()
    }
    return ControllerConfig(**converted)
