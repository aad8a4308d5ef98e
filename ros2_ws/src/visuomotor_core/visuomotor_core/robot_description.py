"""The robot description: one YAML file beside a robot's URDF, read into one typed object.

The file names what the URDF alone does not say: which joints form the arm (in chain
order), the base and tool frames, the grasp link, the home posture, the controller's
default gains and the margins and scales that tighten the URDF's joint limits. Every
layer (controller, sim, training, nodes) reads the robot from here, so a robot is
described once. Units: rad, N·m/rad, N·m·s/rad; frames REP-103.

Descriptions are found by robot name: ``<name>.yaml`` in the ``urdf`` folder of the
visuomotor_description package (data only), looked up in the ament prefixes
(``share/visuomotor_description/urdf`` under ``AMENT_PREFIX_PATH``, without importing ROS),
then in the source checkout (``ros2_ws/src/visuomotor_description/urdf`` under
``VISUOMOTOR_ROOT`` or this file's checkout).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

#: The robot used where none is named.
DEFAULT_ROBOT = "panda"
#: The package that ships the URDFs and their descriptions, and its folder for them.
DESCRIPTION_PACKAGE = "visuomotor_description"
DESCRIPTION_FOLDER = "urdf"

_REQUIRED = ("name", "urdf", "base_frame", "tool_frame", "grasp_link", "arm_joints", "home",
             "gains", "reach")


def _names(field_name: str, value: Any, allow_empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or (not value and not allow_empty):
        raise ValueError(f"RobotDescription.{field_name} must be a list of names, got {value!r}")
    names = tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"RobotDescription.{field_name} must hold non-empty strings: {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"RobotDescription.{field_name} has duplicates: {value!r}")
    return names


def _vector(field_name: str, value: Any, n: int, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise ValueError(f"RobotDescription.{field_name} needs {n} numbers (one per arm "
                         f"joint), got {value!r}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"RobotDescription.{field_name}[{i}] must be a finite number, "
                             f"got {v!r}")
        if v < 0.0 or (positive and v == 0.0):
            raise ValueError(f"RobotDescription.{field_name}[{i}] must be "
                             f"{'> 0' if positive else '>= 0'}, got {v!r}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class RobotDescription:
    """One robot, as its description file states it (validated on construction).

    Attributes:
        name: robot name (the description file's stem).
        urdf: absolute path of the robot's URDF.
        sim_urdf: the same robot inside ``pybullet_data`` (relative path; it carries the
            meshes the sim renders), or None to load ``urdf``.
        base_frame: link every pose, target and goal is expressed in.
        tool_frame: flange link that carries a payload.
        grasp_link: link whose origin is the point that reaches (between the fingertips).
        arm_joints: the controlled joints, in chain order from the base.
        gripper_joints: joints the sim holds at a fixed opening (may be empty).
        home: home posture, rad, ``arm_joints`` order.
        kp: default tracking position gains, N·m/rad.
        kd: default tracking damping gains, N·m·s/rad.
        hold_kp: default HOLD/ESTOP position gains, N·m/rad; None: ``kp``.
        hold_kd: default HOLD/ESTOP damping gains, N·m·s/rad; None: ``kd``.
        position_margin: rad kept free at both ends of each URDF joint range.
        velocity_scale: factor in (0, 1] on the URDF velocity limits.
        effort_scale: factor in (0, 1] on the URDF effort limits.
        shoulder: the shoulder (the second joint's axis) in the base frame, m, (3,).
        reach: the farthest the grasp link gets from the shoulder, m (> 0): targets
            beyond it are out of reach.
    """

    name: str
    urdf: Path
    base_frame: str
    tool_frame: str
    grasp_link: str
    arm_joints: tuple[str, ...]
    home: tuple[float, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    hold_kp: tuple[float, ...] | None = None
    hold_kd: tuple[float, ...] | None = None
    gripper_joints: tuple[str, ...] = ()
    sim_urdf: str | None = None
    position_margin: float = 0.0
    velocity_scale: float = 1.0
    effort_scale: float = 1.0
    shoulder: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reach: float = 1.0

    def __post_init__(self) -> None:
        for name in ("name", "base_frame", "tool_frame", "grasp_link"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"RobotDescription.{name} must be a non-empty string, "
                                 f"got {value!r}")
        object.__setattr__(self, "urdf", Path(self.urdf))
        if not self.urdf.is_file():
            raise ValueError(f"RobotDescription {self.name!r}: URDF not found: {self.urdf}")
        joints = _names("arm_joints", self.arm_joints)
        object.__setattr__(self, "arm_joints", joints)
        gripper = _names("gripper_joints", self.gripper_joints, allow_empty=True)
        object.__setattr__(self, "gripper_joints", gripper)
        if set(gripper) & set(joints):
            raise ValueError(f"RobotDescription {self.name!r}: joints both arm and gripper: "
                             f"{sorted(set(gripper) & set(joints))}")
        n = len(joints)
        home = self.home
        if not isinstance(home, list | tuple) or len(home) != n or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in home):
            raise ValueError(f"RobotDescription.home needs {n} finite numbers (rad), got "
                             f"{home!r}")
        object.__setattr__(self, "home", tuple(float(v) for v in home))
        object.__setattr__(self, "kp", _vector("kp", self.kp, n))
        object.__setattr__(self, "kd", _vector("kd", self.kd, n))
        for name in ("hold_kp", "hold_kd"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _vector(name, getattr(self, name), n, True))
        margin = self.position_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or not (
                0.0 <= margin < math.inf):
            raise ValueError(f"RobotDescription.position_margin must be >= 0 rad, got "
                             f"{margin!r}")
        for name in ("velocity_scale", "effort_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0.0 < value <= 1.0):
                raise ValueError(f"RobotDescription.{name} must be in (0, 1], got {value!r}")
        shoulder = self.shoulder
        if not isinstance(shoulder, list | tuple) or len(shoulder) != 3 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in shoulder):
            raise ValueError(f"RobotDescription.reach shoulder must be 3 finite numbers (m), "
                             f"got {shoulder!r}")
        object.__setattr__(self, "shoulder", tuple(float(v) for v in shoulder))
        if isinstance(self.reach, bool) or not isinstance(self.reach, int | float) or not (
                0.0 < self.reach < math.inf):
            raise ValueError(f"RobotDescription.reach radius must be > 0 m, got {self.reach!r}")

    @property
    def n(self) -> int:
        """Number of arm joints."""
        return len(self.arm_joints)

    @property
    def path(self) -> Path:
        """The description file (beside the URDF)."""
        return self.urdf.parent / f"{self.name}.yaml"

    @classmethod
    def from_file(cls, path: str | Path) -> RobotDescription:
        """Read a description file; ValueError names what is missing or malformed."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read robot description {path}: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"robot description {path} must be a mapping")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"robot description {path} lacks {missing}")
        known = set(_REQUIRED) | {"sim_urdf", "gripper_joints", "limits"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"robot description {path}: unknown keys {unknown}")
        gains = data["gains"] or {}
        unknown = sorted(set(gains) - {"kp", "kd", "hold_kp", "hold_kd"})
        if unknown or "kp" not in gains or "kd" not in gains:
            raise ValueError(f"robot description {path}: gains needs kp and kd (and may have "
                             f"hold_kp, hold_kd); unknown {unknown}")
        reach = data["reach"] or {}
        if not isinstance(reach, dict) or set(reach) != {"shoulder", "radius"}:
            raise ValueError(f"robot description {path}: reach needs exactly shoulder and "
                             f"radius, got {reach!r}")
        limits = data.get("limits") or {}
        unknown = sorted(set(limits) - {"position_margin", "velocity_scale", "effort_scale"})
        if unknown:
            raise ValueError(f"robot description {path}: unknown limits {unknown}")
        if data["name"] != path.stem:
            raise ValueError(f"robot description {path}: name {data['name']!r} differs from "
                             f"the file name {path.stem!r}")
        return cls(
            name=data["name"], urdf=(path.parent / data["urdf"]).resolve(),
            sim_urdf=data.get("sim_urdf"), base_frame=data["base_frame"],
            tool_frame=data["tool_frame"], grasp_link=data["grasp_link"],
            arm_joints=data["arm_joints"], gripper_joints=data.get("gripper_joints") or (),
            home=data["home"], kp=gains["kp"], kd=gains["kd"],
            hold_kp=gains.get("hold_kp"), hold_kd=gains.get("hold_kd"),
            shoulder=reach["shoulder"], reach=reach["radius"], **limits)


def _source_root() -> Path:
    env = os.environ.get("VISUOMOTOR_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[4]


def description_path(robot: str = DEFAULT_ROBOT) -> Path:
    """Path of ``robot``'s description file; ValueError lists where it was looked for."""
    if not robot or "/" in robot or robot.startswith("."):
        raise ValueError(f"robot name must be a plain name, got {robot!r}")
    relative = Path("share") / DESCRIPTION_PACKAGE / DESCRIPTION_FOLDER / f"{robot}.yaml"
    tried = []
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix) / relative
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    candidate = (_source_root() / "ros2_ws" / "src" / DESCRIPTION_PACKAGE / DESCRIPTION_FOLDER
                 / f"{robot}.yaml")
    if candidate.is_file():
        return candidate
    tried.append(str(candidate))
    raise ValueError(f"no description for robot {robot!r}; looked for {tried}")


@lru_cache(maxsize=8)
def load_robot(robot: str = DEFAULT_ROBOT) -> RobotDescription:
    """The description of the robot named ``robot`` (cached: descriptions are immutable)."""
    return RobotDescription.from_file(description_path(robot))
