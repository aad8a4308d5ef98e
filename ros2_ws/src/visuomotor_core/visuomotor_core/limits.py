"""Joint limits: the robot description's, and the robot's after the configuration.

Units: positions in rad, velocities in rad/s, efforts in N·m (revolute joints).

Effective limits (the robot's limits) are the robot description's limits
intersected with what the configuration allows: :func:`effective_limits` scales
velocity and effort by factors in (0, 1], shrinks the position range by a
margin, and applies optional per-joint overrides that may only tighten a limit,
never widen it. The controller (:mod:`visuomotor_core.controller`) enforces
them on every command itself, without allocating in its loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

_PER_JOINT_FIELDS = ("lower", "upper", "velocity", "effort")


def _as_readonly_vector(name: str, values: ArrayLike) -> np.ndarray:
    array = np.array(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits of an n-joint arm.

    Attributes:
        lower: minimum joint position (rad), shape (n,).
        upper: maximum joint position (rad), shape (n,), strictly above ``lower``.
        velocity: maximum joint speed (rad/s), shape (n,), positive.
        effort: maximum joint torque magnitude (N·m), shape (n,), positive.

    The arrays are converted to read-only float64 copies on construction.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name in _PER_JOINT_FIELDS:
            arrays[name] = _as_readonly_vector(name, getattr(self, name))
            object.__setattr__(self, name, arrays[name])
        n = arrays["lower"].size
        for name, array in arrays.items():
            if array.size != n:
                raise ValueError(
                    f"JointLimits.{name} has {array.size} entries, lower has {n}"
                )
            bad = np.flatnonzero(~np.isfinite(array))
            if bad.size:
                raise ValueError(f"JointLimits.{name} is not finite at joint index {bad.tolist()}")
        bad = np.flatnonzero(arrays["lower"] >= arrays["upper"])
        if bad.size:
            raise ValueError(f"JointLimits: lower >= upper at joint index {bad.tolist()}")
        for name in ("velocity", "effort"):
            bad = np.flatnonzero(arrays[name] <= 0.0)
            if bad.size:
                raise ValueError(
                    f"JointLimits.{name} must be > 0; not at joint index {bad.tolist()}"
                )

    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self.lower.size)


@dataclass(frozen=True)
class LimitOverrides:
    """Configured restrictions applied on top of the robot description's limits.

    Attributes:
        velocity_scale: factor in (0, 1] applied to every velocity limit.
        effort_scale: factor in (0, 1] applied to every effort limit.
        position_margin: rad kept free at both ends of every position range (>= 0).
        lower, upper, velocity, effort: optional per-joint values (rad, rad/s, N·m);
            each can only tighten the corresponding limit (intersection).
    """

    velocity_scale: float = 1.0
    effort_scale: float = 1.0
    position_margin: float = 0.0
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    velocity: tuple[float, ...] | None = None
    effort: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("velocity_scale", "effort_scale"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ValueError(f"LimitOverrides.{name} must be in (0, 1], got {value!r}")
        if not (np.isfinite(self.position_margin) and self.position_margin >= 0.0):
            raise ValueError(
                f"LimitOverrides.position_margin must be >= 0 rad, got {self.position_margin!r}"
            )
        for name in _PER_JOINT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            array = np.asarray(value, dtype=np.float64)
            if array.ndim != 1 or not np.all(np.isfinite(array)):
                raise ValueError(f"LimitOverrides.{name} must be a 1-D sequence of finite numbers")
            object.__setattr__(self, name, tuple(float(v) for v in array))


def effective_limits(base: JointLimits, overrides: LimitOverrides) -> JointLimits:
    """The limits in force: ``base`` intersected with ``overrides``.

    Raises ValueError when an override has the wrong length or the intersection
    leaves an empty position range.
    """
    n = base.n
    per_joint = {}
    for name in _PER_JOINT_FIELDS:
        value = getattr(overrides, name)
        if value is not None and len(value) != n:
            raise ValueError(f"LimitOverrides.{name} has {len(value)} entries, the arm has {n}")
        per_joint[name] = None if value is None else np.asarray(value)
    lower = base.lower + overrides.position_margin
    upper = base.upper - overrides.position_margin
    if per_joint["lower"] is not None:
        lower = np.maximum(lower, per_joint["lower"])
    if per_joint["upper"] is not None:
        upper = np.minimum(upper, per_joint["upper"])
    velocity = base.velocity * overrides.velocity_scale
    if per_joint["velocity"] is not None:
        velocity = np.minimum(velocity, per_joint["velocity"])
    effort = base.effort * overrides.effort_scale
    if per_joint["effort"] is not None:
        effort = np.minimum(effort, per_joint["effort"])
    return JointLimits(lower=lower, upper=upper, velocity=velocity, effort=effort)


#: ``mask.all()`` for a boolean vector without ndarray.all's Python-level dispatch (half
#: of its 1.6 µs, which counts several times per 1 kHz tick).
all_true = np.logical_and.reduce


def clip_into(
    values: np.ndarray, low: np.ndarray, high: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """``np.clip(values, low, high, out=out)`` without np.clip's Python-level dispatch
    (a few µs per call, which counts at 1 kHz); ``out`` may be ``values``. Returns ``out``."""
    np.minimum(values, high, out=out)
    return np.maximum(out, low, out=out)


def check_vector(values: object, n: int, name: str) -> tuple[bool, str]:
    """Check that ``values`` is a finite numeric vector of length ``n``.

    Returns (ok, reason); reason is "" when ok, otherwise it says what is wrong.
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return False, f"{name} is not numeric"
    if array.shape != (n,):
        return False, f"{name} has shape {array.shape}, expected ({n},)"
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array)).tolist()
        return False, f"{name} is not finite at joint index {bad}"
    return True, ""
