"""Controller configuration: the typed settings, their validation, the gain bounds of
discrete-time stability and the controller node's parameter schema.

:class:`ControllerConfig` holds every setting of the
:class:`~visuomotor_core.controller.JointController` and refuses, on construction, values
that break a model-free rule (types, ranges, the effort interface's minimum rate,
timeouts of at least ``MIN_TIMEOUT_PERIODS`` periods, the velocity interface's feedback
bound, positive hold gains). The rules that need the robot's inertias are
:func:`gain_bounds` and :func:`check_gains`: with ``I`` the smallest joint-space inertia
the model allows (:meth:`RobotModel.inertia_floor`) and ``dt`` the period, ``kd·dt/I``
and ``kp·dt²/I`` stay at or below ``MAX_DAMPING_STEP`` and ``MAX_STIFFNESS_STEP``, for
the tracking and the hold gains (effort interface).

:func:`parameter_schema` declares one ROS parameter per field (type, default,
description, unit, range) and :func:`config_from_parameters` builds the configuration
from their values. Units: s, Hz, rad, rad/s, N·m, N·m/rad, N·m·s/rad.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from visuomotor_core.limits import LimitOverrides
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
    inertias are checked by :func:`check_gains` (the controller runs it on every
    configuration it takes).
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
