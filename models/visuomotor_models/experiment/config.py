"""The experiment file: typed, validated when read, with precise errors.

Layout (every key but ``name`` and one of ``profiles``/``sweeps`` optional)::

    name: heldout_shift                 # names the run directory (runs/experiments/<name>)
    description: ...
    policies: [policy, policy_no_history, expert]   # manifest names; `expert` = privileged
    modes: [state_only]                 # state_only | closed_loop | closed_loop_oracle
    seeds: {first: 900000000, count: 20}
    profiles:                           # randomization profiles, from any YAML file
      - names: [nominal, training, heldout]         # no `file`: the sim's shipped YAML
      - file: my_robot.yaml             # relative to this file; `names` omitted: all of them
        modes: [closed_loop]            # optional per-group modes / seeds
        seeds: {first: 1000, count: 5}
    sweeps:                             # one term of the shift at chosen values, the rest
      - term: payload_mass              #   drawn from `base` (default: nominal)
        values: [0.0, 1.0, 2.0, 3.0]
        unit: kg
      - term: camera_pose_jitter        # vector term: nominal + value * direction
        label: camera displacement
        direction: [0.577, 0.577, 0.577, 0, 0, 0]
        values: [0.0, 0.02, 0.04]
        unit: m
        modes: [closed_loop]
    state_only: {timeout: 5.0, target_noise_std: 0.005, tolerance: 0.02, dwell: 0.3}
    closed_loop:
      episode_wall_timeout: 120         # s of wall time before an episode counts as stalled
      record: failed                    # failed | all | none: rosbag2 directory per episode
      params: {policy.goal_smoothing: 0.5}          # node parameter overrides (demo --param)
    traces: {policies: [policy], per_condition: 1}  # state-only adaptation traces
    artifacts: null                     # directory with manifest.json (default: shipped)

A combination that cannot run (the expert needs the sim's privileged state, so it runs
state-only only) is skipped and named in the report, not refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visuomotor_sim.randomization import (
    TERM_NOMINALS,
    VISUAL_TERMS,
    DynamicsParams,
    RandomizationProfile,
    VisualParams,
    default_config_path,
    load_profiles,
)

MODES = ("state_only", "closed_loop", "closed_loop_oracle")
EXPERT = "expert"
RECORD_CHOICES = ("failed", "all", "none")
MAX_SEED = 2**32 - 1  # the sim's reset service carries a uint32 seed


class ConfigError(ValueError):
    """An experiment file that cannot be run; the message names the file and the key."""


def _check_keys(where: str, data: Mapping, allowed: set[str], required: set[str] = frozenset()
                ) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: "
                          f"{sorted(allowed)})")
    missing = required - set(data)
    if missing:
        raise ConfigError(f"{where}: missing key(s) {sorted(missing)}")


def _modes(where: str, value: Any) -> tuple[str, ...]:
    modes = tuple(value) if isinstance(value, list | tuple) else (value,)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"{where}: modes must be a non-empty list of {list(MODES)}, got "
                          f"{value!r}")
    return modes


@dataclass(frozen=True)
class SeedRange:
    """Episode seeds ``first, first + 1, ..., first + count - 1``."""

    first: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.first < 0 or self.first + self.count - 1 > MAX_SEED:
            raise ConfigError(f"seeds: need count >= 1 and 0 <= first <= first + count - 1 <= "
                              f"{MAX_SEED}, got first={self.first} count={self.count}")

    @classmethod
    def from_dict(cls, where: str, data: Any) -> SeedRange:
        _check_keys(where, data, {"first", "count"}, {"first", "count"})
        return cls(int(data["first"]), int(data["count"]))

    def seeds(self) -> list[int]:
        return list(range(self.first, self.first + self.count))


@dataclass(frozen=True)
class ProfileGroup:
    """Profiles of one randomization YAML (``file`` None: the sim's shipped one)."""

    file: Path | None = None
    names: tuple[str, ...] = ()
    modes: tuple[str, ...] | None = None
    seeds: SeedRange | None = None


@dataclass(frozen=True)
class Sweep:
    """One term of the shift at chosen values; every other term is drawn from ``base``.

    A scalar term takes each value as is (SI units, as in the randomization YAML); a vector
    term takes ``nominal + value * direction``.
    """

    term: str
    values: tuple[float, ...]
    direction: tuple[float, ...] | None = None
    label: str | None = None
    unit: str = ""
    base: str = "nominal"
    base_file: Path | None = None
    modes: tuple[str, ...] | None = None
    seeds: SeedRange | None = None

    def __post_init__(self) -> None:
        where = f"sweep '{self.name}'"
        if self.term not in TERM_NOMINALS:
            raise ConfigError(f"{where}: unknown term '{self.term}' (known: "
                              f"{sorted(TERM_NOMINALS)})")
        if not self.values or not all(math.isfinite(v) for v in self.values):
            raise ConfigError(f"{where}: values must be a non-empty list of numbers")
        if len(set(self.values)) != len(self.values):
            raise ConfigError(f"{where}: values repeat: {list(self.values)}")
        shape = np.shape(TERM_NOMINALS[self.term])
        if shape and (self.direction is None or np.shape(self.direction) != shape):
            raise ConfigError(f"{where}: '{self.term}' is a vector term: give a direction "
                              f"of {shape[0]} numbers (value = nominal + value * direction)")
        if not shape and self.direction is not None:
            raise ConfigError(f"{where}: '{self.term}' is a scalar term: no direction")
        for value in self.values:  # the physical range check of the params dataclasses
            params = VisualParams if self.term in VISUAL_TERMS else DynamicsParams
            try:
                params(**{self.term: self.term_value(value)})
            except ValueError as err:
                raise ConfigError(f"{where}, value {value}: {err}") from None

    @property
    def name(self) -> str:
        return self.label or self.term

    def term_value(self, value: float) -> float | list[float]:
        """The term's setting at sweep ``value``."""
        if self.direction is None:
            return float(value)
        nominal = np.asarray(TERM_NOMINALS[self.term], float)
        return [float(v) for v in nominal + value * np.asarray(self.direction, float)]


@dataclass(frozen=True)
class StateOnlySettings:
    """Episodes of the state-only mode (see ``visuomotor_models.policy_sim.SimConfig``)."""

    policy_hz: float = 20.0
    target_noise_std: float = 0.005
    tolerance: float = 0.02
    dwell: float = 0.3
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.policy_hz <= 0 or self.target_noise_std < 0 or self.tolerance <= 0 \
                or self.dwell < 0 or self.timeout <= self.dwell:
            raise ConfigError("state_only: need policy_hz > 0, target_noise_std >= 0, "
                              "tolerance > 0 and timeout > dwell >= 0")


@dataclass(frozen=True)
class ClosedLoopSettings:
    """Episodes through the ROS graph (``visuomotor_ros.demo``, one process per episode).

    Attributes:
        episode_wall_timeout: wall time after which an episode counts as stalled, s.
        record: keep a rosbag2 directory of ``failed`` episodes, ``all`` or ``none``.
        params: node parameter overrides ``{"ROLE.NAME": value}`` (``demo --param``).
    """

    episode_wall_timeout: float = 120.0
    record: str = "failed"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episode_wall_timeout <= 0:
            raise ConfigError("closed_loop.episode_wall_timeout must be > 0 s")
        if self.record not in RECORD_CHOICES:
            raise ConfigError(f"closed_loop.record must be one of {list(RECORD_CHOICES)}, "
                              f"got {self.record!r}")
        for key in self.params:
            role, dot, name = str(key).partition(".")
            if not (role and dot and name):
                raise ConfigError(f"closed_loop.params: key {key!r} must be ROLE.NAME")
            if key == "policy.model_name":
                raise ConfigError("closed_loop.params: the policy comes from `policies`, "
                                  "not policy.model_name")

    def param_args(self) -> list[str]:
        """``ROLE.NAME=VALUE`` items for ``demo --param`` (values as YAML scalars)."""
        def text(value: Any) -> str:
            dumped = yaml.safe_dump(value, default_flow_style=True).strip()
            return dumped.removesuffix("...").strip()

        return [f"{k}={text(v)}" for k, v in sorted(self.params.items())]


@dataclass(frozen=True)
class TraceSettings:
    """Which state-only episodes keep a per-step trace (sag estimate, latent, error)."""

    policies: tuple[str, ...] = ("policy",)
    per_condition: int = 1

    def __post_init__(self) -> None:
        if self.per_condition < 0:
            raise ConfigError("traces.per_condition must be >= 0")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    policies: tuple[str, ...]
    modes: tuple[str, ...]
    seeds: SeedRange
    profiles: tuple[ProfileGroup, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    state_only: StateOnlySettings = field(default_factory=StateOnlySettings)
    closed_loop: ClosedLoopSettings = field(default_factory=ClosedLoopSettings)
    traces: TraceSettings = field(default_factory=TraceSettings)
    artifacts: Path | None = None
    description: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"name must be non-empty letters, digits, '-', '_' or '.', got "
                              f"{self.name!r}")
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise ConfigError(f"policies must be a non-empty list without repeats, got "
                              f"{list(self.policies)}")
        if not self.profiles and not self.sweeps:
            raise ConfigError("give at least one of `profiles` and `sweeps`")
        names = [s.name for s in self.sweeps]
        if len(set(names)) != len(names):
            raise ConfigError(f"sweeps: two sweeps share a name {names}; set `label`")

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read: {err}") from None
        try:
            return cls.from_dict(data, path.parent, source=path)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, data: Any, base_dir: Path, source: Path | None = None
                  ) -> ExperimentConfig:
        top = {"name", "description", "policies", "modes", "seeds", "profiles", "sweeps",
               "state_only", "closed_loop", "traces", "artifacts"}
        _check_keys("experiment", data, top, {"name", "policies", "seeds"})

        def path_of(value: Any) -> Path | None:
            if value is None:
                return None
            p = Path(str(value)).expanduser()
            return p if p.is_absolute() else (base_dir / p).resolve()

        modes = _modes("modes", data.get("modes", ["state_only"]))
        groups = []
        for i, g in enumerate(data.get("profiles") or []):
            where = f"profiles[{i}]"
            _check_keys(where, g, {"file", "names", "modes", "seeds"})
            names = g.get("names") or []
            groups.append(ProfileGroup(
                path_of(g.get("file")), tuple(str(n) for n in names),
                _modes(f"{where}.modes", g["modes"]) if "modes" in g else None,
                SeedRange.from_dict(f"{where}.seeds", g["seeds"]) if "seeds" in g else None))
        sweeps = []
        for i, s in enumerate(data.get("sweeps") or []):
            where = f"sweeps[{i}]"
            _check_keys(where, s, {"term", "values", "direction", "label", "unit", "base",
                                   "base_file", "modes", "seeds"}, {"term", "values"})
            try:
                sweeps.append(Sweep(
                    str(s["term"]), tuple(float(v) for v in s["values"]),
                    tuple(float(v) for v in s["direction"]) if "direction" in s else None,
                    s.get("label"), str(s.get("unit", "")), str(s.get("base", "nominal")),
                    path_of(s.get("base_file")),
                    _modes(f"{where}.modes", s["modes"]) if "modes" in s else None,
                    SeedRange.from_dict(f"{where}.seeds", s["seeds"]) if "seeds" in s
                    else None))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}: {err}") from None

        def settings(key: str, kind, allowed: set[str]):
            raw = data.get(key) or {}
            _check_keys(key, raw, allowed)
            try:
                return kind(**raw)
            except TypeError as err:
                raise ConfigError(f"{key}: {err}") from None

        closed = dict(data.get("closed_loop") or {})
        _check_keys("closed_loop", closed, {"episode_wall_timeout", "record", "params"})
        traces = dict(data.get("traces") or {})
        _check_keys("traces", traces, {"policies", "per_condition"})
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")).strip(),
            policies=tuple(str(p) for p in data["policies"] or []),
            modes=modes,
            seeds=SeedRange.from_dict("seeds", data["seeds"]),
            profiles=tuple(groups),
            sweeps=tuple(sweeps),
            state_only=settings("state_only", StateOnlySettings,
                                {"policy_hz", "target_noise_std", "tolerance", "dwell",
                                 "timeout"}),
            closed_loop=ClosedLoopSettings(
                float(closed.get("episode_wall_timeout", 120.0)),
                str(closed.get("record", "failed")), dict(closed.get("params") or {})),
            traces=TraceSettings(tuple(traces.get("policies", ["policy"])),
                                 int(traces.get("per_condition", 1))),
            artifacts=path_of(data.get("artifacts")),
            source=source,
        )


@dataclass(frozen=True)
class Condition:
    """One randomization condition, resolved to its term ranges (plain data).

    ``group`` is ``"profiles"`` or the sweep's name; ``value`` the sweep magnitude (None for
    a profile).
    """

    label: str
    group: str
    terms: Mapping[str, Mapping[str, Any]]
    modes: tuple[str, ...]
    seeds: SeedRange
    value: float | None = None
    unit: str = ""
    source: str = ""


def profile_terms(profile: RandomizationProfile) -> dict[str, dict[str, Any]]:
    """A profile's ranges as YAML-ready data (floats or lists of floats)."""
    def plain(a: np.ndarray):
        return float(a) if np.ndim(a) == 0 else [float(x) for x in a]

    return {t.name: {"low": plain(t.low), "high": plain(t.high)} for t in profile.terms}


def _load(path: Path | None, cache: dict) -> dict[str, RandomizationProfile]:
    key = path or default_config_path()
    if key not in cache:
        try:
            cache[key] = load_profiles(key)
        except (OSError, ValueError) as err:
            raise ConfigError(f"randomization file {key}: {err}") from None
    return cache[key]


def resolve_conditions(config: ExperimentConfig) -> list[Condition]:
    """Every condition of the experiment in file order, profiles then sweep points."""
    cache: dict = {}
    loaded = []
    for group in config.profiles:
        profiles = _load(group.file, cache)
        names = group.names or tuple(profiles)
        missing = [n for n in names if n not in profiles]
        if missing:
            raise ConfigError(f"profiles: {missing} not in {group.file or 'the shipped YAML'} "
                              f"(available: {sorted(profiles)})")
        loaded += [(group, n, profiles[n]) for n in names]
    counts: dict[str, int] = {}
    for _, name, _ in loaded:
        counts[name] = counts.get(name, 0) + 1
    conditions = []
    for group, name, profile in loaded:
        source = str(group.file) if group.file else "shipped"
        label = name if counts[name] == 1 else f"{Path(source).stem}:{name}"
        conditions.append(Condition(label, "profiles", profile_terms(profile),
                                    group.modes or config.modes, group.seeds or config.seeds,
                                    source=source))
    for sweep in config.sweeps:
        profiles = _load(sweep.base_file, cache)
        if sweep.base not in profiles:
            raise ConfigError(f"sweep '{sweep.name}': base profile '{sweep.base}' not found "
                              f"(available: {sorted(profiles)})")
        base = profile_terms(profiles[sweep.base])
        for value in sweep.values:
            setting = sweep.term_value(value)
            terms = {**base, sweep.term: {"low": setting, "high": setting}}
            conditions.append(Condition(f"{sweep.name}={value:g}", sweep.name, terms,
                                        sweep.modes or config.modes,
                                        sweep.seeds or config.seeds, value, sweep.unit,
                                        source=f"sweep of {sweep.term} on {sweep.base}"))
    labels = [c.label for c in conditions]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ConfigError(f"conditions {duplicates} appear twice")
    return conditions


def randomization_yaml(conditions: list[Condition]) -> str:
    """A randomization YAML holding every condition as a profile (what the sim reads)."""
    profiles = {c.label: dict(c.terms) for c in conditions}
    return yaml.safe_dump({"profiles": profiles}, sort_keys=True)
