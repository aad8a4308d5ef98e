"""Domain randomization as data: named, seeded ranges grouped into profiles.

A profile (``nominal``, ``training``, ``heldout``, ... in ``sim/config/randomization.yaml``)
maps term names to ``{low, high}`` ranges. Terms a profile does not name stay at their
nominal value. :class:`DomainRandomizer` draws every term uniformly from its range with a
random stream derived from the episode seed *and the term's name*, so adding or removing a
term never changes what the other terms draw. The result is a frozen
:class:`DynamicsParams` / :class:`VisualParams` pair that the world applies; no code path
branches on a profile's name.

YAML layout::

    profiles:
      training:
        payload_mass: {low: 0.0, high: 1.5}        # scalar term
        light_direction: {low: [..3..], high: [..3..]}   # vector term, per component
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class DynamicsParams:
    """Physical parameters of one episode (hidden from the controller).

    Attributes:
        payload_mass: extra mass at the hand, kg (unknown to the controller's model).
        link_mass_scale: factor on every arm link's mass (links 0..7 and the hand).
        joint_damping: viscous joint damping, N·m·s/rad, all arm joints.
        joint_friction: Coulomb-like joint friction, N·m (a zero-velocity motor of this
            maximum torque, PyBullet's usual friction model), all arm joints.
        actuator_strength_scale: factor on every commanded torque / motor force limit.
        actuation_delay: command transport delay, s (applied as whole physics steps).
        joint_state_noise: standard deviation of the noise on measured joint positions, rad.
        external_force: constant force on the hand's centre of mass, N, base frame (x, y, z):
            an unmodelled push or load. The ``training_with_force`` profile randomizes it as
            a generic disturbance, so that a policy learns to cancel a sag of whatever cause.
    """

    payload_mass: float = 0.0
    link_mass_scale: float = 1.0
    joint_damping: float = 0.0
    joint_friction: float = 0.0
    actuator_strength_scale: float = 1.0
    actuation_delay: float = 0.0
    joint_state_noise: float = 0.0
    external_force: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        checks = {
            "payload_mass": self.payload_mass >= 0.0,
            "link_mass_scale": self.link_mass_scale > 0.0,
            "joint_damping": self.joint_damping >= 0.0,
            "joint_friction": self.joint_friction >= 0.0,
            "actuator_strength_scale": self.actuator_strength_scale > 0.0,
            "actuation_delay": self.actuation_delay >= 0.0,
            "joint_state_noise": self.joint_state_noise >= 0.0,
            "external_force": len(self.external_force) == 3
            and bool(np.all(np.isfinite(self.external_force))),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"DynamicsParams.{name} out of its physical range: "
                                 f"{getattr(self, name)}")

    def as_vector(self) -> np.ndarray:
        """Privileged-information vector (float32, len :data:`DYNAMICS_VECTOR_DIM`) for
        teacher training.

        Order = :data:`DYNAMICS_VECTOR_FIELDS`, vector fields flattened in place; each entry
        is ``(value - lo) / (hi - lo)`` with the fixed reference span in
        :data:`DYNAMICS_VECTOR_SPANS`, so it lies in roughly [0, 1] for the shipped profiles
        (held-out values may exceed 1) and a given physical value always maps to the same
        number whatever the profile.
        """
        values = np.hstack([np.ravel(getattr(self, name)) for name in DYNAMICS_VECTOR_FIELDS])
        return ((values - _SPAN_LOW) / (_SPAN_HIGH - _SPAN_LOW)).astype(np.float32)


DYNAMICS_VECTOR_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DynamicsParams))
"""Field order of :meth:`DynamicsParams.as_vector`."""

DYNAMICS_VECTOR_SPANS: dict[str, tuple[float, float]] = {
    "payload_mass": (0.0, 2.5),
    "link_mass_scale": (0.7, 1.3),
    "joint_damping": (0.0, 2.0),
    "joint_friction": (0.0, 1.0),
    "actuator_strength_scale": (0.6, 1.2),
    "actuation_delay": (0.0, 0.01),
    "joint_state_noise": (0.0, 0.004),
    "external_force": (-50.0, 50.0),  # each component
}
"""Reference span (lo, hi) per dynamics term used to normalize :meth:`as_vector`."""

_SIZES = [np.size(getattr(DynamicsParams(), n)) for n in DYNAMICS_VECTOR_FIELDS]
_SPAN_LOW = np.repeat([DYNAMICS_VECTOR_SPANS[n][0] for n in DYNAMICS_VECTOR_FIELDS], _SIZES)
_SPAN_HIGH = np.repeat([DYNAMICS_VECTOR_SPANS[n][1] for n in DYNAMICS_VECTOR_FIELDS], _SIZES)
DYNAMICS_VECTOR_DIM = int(sum(_SIZES))
"""Length of :meth:`DynamicsParams.as_vector`."""


@dataclass(frozen=True)
class VisualParams:
    """Appearance of one episode.

    Attributes:
        light_direction: direction towards the light, base frame (3,), any length.
        light_colour: RGB light colour, each in [0, 1].
        object_colour: RGB of the target sphere, each in [0, 1].
        table_colour: RGB of the table top, each in [0, 1].
        camera_pose_jitter: (dx, dy, dz) m in the base frame, then (rx, ry, rz) rad
            rotation vector in the optical frame: the rendering camera's offset from the
            calibrated pose that is published in CameraInfo.
        image_noise: standard deviation of additive Gaussian pixel noise, 8-bit levels.
    """

    light_direction: tuple[float, float, float] = (0.4, 0.2, 1.0)
    light_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)
    object_colour: tuple[float, float, float] = (0.9, 0.05, 0.05)
    table_colour: tuple[float, float, float] = (0.55, 0.45, 0.35)
    camera_pose_jitter: tuple[float, float, float, float, float, float] = (0.0,) * 6
    image_noise: float = 0.0

    def __post_init__(self) -> None:
        if np.linalg.norm(self.light_direction) < 1e-9:
            raise ValueError("VisualParams.light_direction must be non-zero")
        for name in ("light_colour", "object_colour", "table_colour"):
            rgb = np.asarray(getattr(self, name))
            if rgb.shape != (3,) or np.any(rgb < 0.0) or np.any(rgb > 1.0):
                raise ValueError(f"VisualParams.{name} must be 3 values in [0, 1], got {rgb}")
        if len(self.camera_pose_jitter) != 6:
            raise ValueError("VisualParams.camera_pose_jitter must have 6 values")
        if self.image_noise < 0.0:
            raise ValueError(f"VisualParams.image_noise must be >= 0, got {self.image_noise}")


_DYNAMICS_NOMINAL = DynamicsParams()
_VISUAL_NOMINAL = VisualParams()
TERM_NOMINALS: dict[str, float | tuple[float, ...]] = {
    **{f.name: getattr(_DYNAMICS_NOMINAL, f.name) for f in fields(DynamicsParams)},
    **{f.name: getattr(_VISUAL_NOMINAL, f.name) for f in fields(VisualParams)},
}
"""Every known term with its nominal value (scalar or tuple)."""

DYNAMICS_TERMS = frozenset(f.name for f in fields(DynamicsParams))
VISUAL_TERMS = frozenset(f.name for f in fields(VisualParams))


@dataclass(frozen=True)
class TermRange:
    """Uniform range of one term; ``low``/``high`` have the nominal value's shape."""

    name: str
    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        if self.name not in TERM_NOMINALS:
            known = ", ".join(sorted(TERM_NOMINALS))
            raise ValueError(f"unknown randomization term '{self.name}' (known: {known})")
        shape = np.shape(TERM_NOMINALS[self.name])
        for label, value in (("low", self.low), ("high", self.high)):
            if np.shape(value) != shape:
                raise ValueError(f"term '{self.name}': {label} must have shape {shape} like "
                                 f"its nominal value, got {np.shape(value)}")
        if np.any(self.low > self.high):
            raise ValueError(f"term '{self.name}': low {self.low.tolist()} > high "
                             f"{self.high.tolist()}")

    def sample(self, rng: np.random.Generator) -> float | tuple[float, ...]:
        value = rng.uniform(self.low, self.high)
        return float(value) if np.ndim(value) == 0 else tuple(float(v) for v in value)


@dataclass(frozen=True)
class RandomizationProfile:
    """A named set of term ranges; terms not listed stay nominal."""

    name: str
    terms: tuple[TermRange, ...] = ()

    @classmethod
    def from_dict(cls, name: str, spec: dict | None) -> RandomizationProfile:
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ValueError(f"profile '{name}': expected a mapping of term -> "
                             f"{{low, high}}, got {type(spec).__name__}")
        terms = []
        for term, rng_spec in spec.items():
            if not isinstance(rng_spec, dict) or set(rng_spec) != {"low", "high"}:
                raise ValueError(f"profile '{name}', term '{term}': expected {{low: ..., "
                                 f"high: ...}}, got {rng_spec!r}")
            terms.append(TermRange(term, np.asarray(rng_spec["low"], float),
                                   np.asarray(rng_spec["high"], float)))
        return cls(name, tuple(terms))

    def term(self, name: str) -> TermRange | None:
        return next((t for t in self.terms if t.name == name), None)


def load_profiles(path: str | Path) -> dict[str, RandomizationProfile]:
    """Read every profile from a randomization YAML file (see module docstring)."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ValueError(f"{path}: expected a top-level 'profiles' mapping")
    profiles = {}
    for name, spec in data["profiles"].items():
        try:
            profiles[name] = RandomizationProfile.from_dict(name, spec)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return profiles


RANDOMIZATION_ENV = "VISUOMOTOR_RANDOMIZATION"
"""Environment variable naming a randomization YAML that replaces the shipped one in every
process that inherits it (the sim node of ``demo --randomization``, experiment workers)."""


def default_config_path() -> Path:
    """The file named by ``$VISUOMOTOR_RANDOMIZATION`` when set, else ``randomization.yaml``
    from the source tree or the installed share directory."""
    override = os.environ.get(RANDOMIZATION_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"${RANDOMIZATION_ENV}={override}: no such file")
        return path
    source = Path(__file__).resolve().parents[1] / "config" / "randomization.yaml"
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("visuomotor_sim")) / "config" / \
            "randomization.yaml"
    except (ImportError, LookupError, ValueError) as err:
        raise FileNotFoundError(f"randomization.yaml not found at {source} and no installed "
                                f"visuomotor_sim share directory ({err})") from None


def load_profile(name: str, path: str | Path | None = None) -> RandomizationProfile:
    """One named profile from ``path`` (default: :func:`default_config_path`)."""
    profiles = load_profiles(path or default_config_path())
    if name not in profiles:
        raise ValueError(f"unknown randomization profile '{name}' "
                         f"(available: {', '.join(sorted(profiles))})")
    return profiles[name]


def _term_stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


class DomainRandomizer:
    """Samples frozen episode parameters from a profile.

    Args:
        profile: the ranges to draw from.
        rng: source of episode seeds; each :meth:`sample` call consumes one draw.
    """

    def __init__(self, profile: RandomizationProfile, rng: np.random.Generator) -> None:
        self.profile = profile
        self._rng = rng

    def sample(self) -> tuple[DynamicsParams, VisualParams]:
        """Draw one episode's dynamics and visual parameters."""
        seed = int(self._rng.integers(0, 2**63 - 1))
        values = {t.name: t.sample(_term_stream(seed, t.name)) for t in self.profile.terms}
        dynamics = DynamicsParams(**{k: v for k, v in values.items() if k in DYNAMICS_TERMS})
        visual = VisualParams(**{k: v for k, v in values.items() if k in VISUAL_TERMS})
        return dynamics, visual
