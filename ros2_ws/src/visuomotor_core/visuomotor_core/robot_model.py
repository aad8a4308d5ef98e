"""Rigid-body model of a serial arm read from a URDF: kinematics, gravity torques, limits.

Frames: every pose is expressed in the base link's frame (the description's
``base_frame``), REP-103 (x forward, y left, z up), metres and radians. Gravity is
a vector in that frame (default (0, 0, -9.81) m/s²).

The model is the serial chain from the base link through the named revolute
(or continuous) joints. Each named joint moves one *body*: the joint's child
link plus every link hanging from it through joints that are not named
(fixed joints, and unnamed movable joints frozen at position 0, e.g.
a gripper's finger joints). The masses, centres of mass and inertias of a body's
links are merged into one rigid body. Links before the first named joint
belong to the base and do not move.

Gravity torques are exact for that chain (up to floating point):
``tau_j = z_j · ((S_j - M_j p_j) × (-g))`` where ``z_j``/``p_j`` are joint j's
axis and origin, ``M_j`` the mass of all bodies from j outwards and ``S_j`` the
sum of their mass-weighted centres of mass; this is ``sum_i J_com,i^T (-m_i g)``,
the torque that holds the arm still. The model is numpy only and keeps small
scratch buffers, so one instance must not be used by two threads at once.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visuomotor_core.limits import JointLimits
from visuomotor_core.robot_description import RobotDescription, load_robot

#: Standard gravity in the base frame, m/s².
DEFAULT_GRAVITY: tuple[float, float, float] = (0.0, 0.0, -9.81)

_MOVING_TYPES = ("revolute", "continuous")
_KNOWN_TYPES = ("revolute", "continuous", "prismatic", "fixed", "floating", "planar")


@dataclass(frozen=True)
class Payload:
    """A point mass rigidly attached to a link (unknown to the URDF).

    Attributes:
        mass: kg (>= 0).
        com: centre of mass in ``link``'s frame, m, shape (3,).
        link: the carrying link; None means the last body of the chain.
    """

    mass: float
    com: tuple[float, float, float] = (0.0, 0.0, 0.0)
    link: str | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.mass) and self.mass >= 0.0):
            raise ValueError(f"Payload.mass must be finite and >= 0 kg, got {self.mass!r}")
        com = np.asarray(self.com, dtype=np.float64)
        if com.shape != (3,) or not np.isfinite(com).all():
            raise ValueError(f"Payload.com must be 3 finite numbers (m), got {self.com!r}")
        object.__setattr__(self, "com", tuple(float(c) for c in com))


@dataclass(frozen=True)
class _Joint:
    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray  # 4x4, parent link frame -> joint frame
    axis: np.ndarray  # (3,), unit, joint frame
    limit: tuple[float, float, float, float] | None  # lower, upper, velocity, effort


@dataclass(frozen=True)
class _Inertial:
    mass: float
    com: np.ndarray  # (3,), link frame
    inertia: np.ndarray  # 3x3 about the com, link frame axes


def _floats(text: str | None, count: int, what: str) -> np.ndarray:
    if text is None:
        return np.zeros(count)
    try:
        values = np.array([float(v) for v in text.split()])
    except ValueError as error:
        raise ValueError(f"{what}: cannot parse {text!r} as numbers") from error
    if values.shape != (count,) or not np.isfinite(values).all():
        raise ValueError(f"{what}: expected {count} finite numbers, got {text!r}")
    return values


def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes X, Y, Z) -> rotation matrix Rz @ Ry @ Rx."""
    cr, sr = np.cos(rpy[0]), np.sin(rpy[0])
    cp, sp = np.cos(rpy[1]), np.sin(rpy[1])
    cy, sy = np.cos(rpy[2]), np.sin(rpy[2])
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _origin(element: ET.Element | None, what: str) -> np.ndarray:
    transform = np.eye(4)
    if element is None:
        return transform
    transform[:3, :3] = _rpy_matrix(_floats(element.get("rpy"), 3, f"{what} origin rpy"))
    transform[:3, 3] = _floats(element.get("xyz"), 3, f"{what} origin xyz")
    return transform


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _align_z(axis: np.ndarray) -> np.ndarray:
    """A rotation matrix that maps the z unit vector onto ``axis`` (unit)."""
    z = np.array([0.0, 0.0, 1.0])
    cosine = float(axis @ z)
    if cosine > 1.0 - 1e-12:
        return np.eye(3)
    if cosine < -1.0 + 1e-12:
        return np.diag([1.0, -1.0, -1.0])  # half turn about x
    v = _skew(np.cross(z, axis))
    return np.eye(3) + v + v @ v / (1.0 + cosine)


def _required(element: ET.Element, tag: str, attribute: str, what: str) -> str:
    child = element.find(tag)
    value = None if child is None else child.get(attribute)
    if value is None:
        raise ValueError(f"{what} is missing <{tag} {attribute}=...>")
    return value


def _parse_inertial(link: ET.Element, name: str) -> _Inertial:
    inertial = link.find("inertial")
    if inertial is None:
        return _Inertial(0.0, np.zeros(3), np.zeros((3, 3)))
    what = f"link '{name}' inertial"
    mass = float(_floats(_required(inertial, "mass", "value", what), 1, f"{what} mass")[0])
    if mass < 0.0:
        raise ValueError(f"{what}: negative mass {mass}")
    frame = _origin(inertial.find("origin"), what)
    inertia = np.zeros((3, 3))
    element = inertial.find("inertia")
    if element is not None:
        keys = ("ixx", "ixy", "ixz", "iyy", "iyz", "izz")
        values = {k: float(_floats(element.get(k, "0"), 1, f"{what} {k}")[0]) for k in keys}
        inertia = np.array(
            [
                [values["ixx"], values["ixy"], values["ixz"]],
                [values["ixy"], values["iyy"], values["iyz"]],
                [values["ixz"], values["iyz"], values["izz"]],
            ]
        )
    rotation = frame[:3, :3]
    return _Inertial(mass, frame[:3, 3].copy(), rotation @ inertia @ rotation.T)


def _parse_joint(element: ET.Element) -> _Joint:
    name = element.get("name")
    if not name:
        raise ValueError("URDF joint without a name")
    kind = element.get("type")
    if kind not in _KNOWN_TYPES:
        raise ValueError(f"joint '{name}' has unknown type {kind!r}")
    what = f"joint '{name}'"
    parent = _required(element, "parent", "link", what)
    child = _required(element, "child", "link", what)
    axis_element = element.find("axis")
    axis = _floats(None if axis_element is None else axis_element.get("xyz"), 3, f"{what} axis")
    if axis_element is None:
        axis = np.array([1.0, 0.0, 0.0])  # URDF default
    limit = None
    limit_element = element.find("limit")
    if limit_element is not None:
        limit = tuple(
            float(_floats(limit_element.get(key, "0"), 1, f"{what} limit {key}")[0])
            for key in ("lower", "upper", "velocity", "effort")
        )
    if kind in _MOVING_TYPES:
        norm = np.linalg.norm(axis)
        if norm == 0.0:
            raise ValueError(f"{what} has a zero axis")
        axis = axis / norm
    return _Joint(name, kind, parent, child, _origin(element.find("origin"), what), axis, limit)


def _merge(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> _Inertial:
    """Merge (mass, com, inertia about com) parts given in one frame into one body."""
    mass = sum(m for m, _, _ in parts)
    if mass <= 0.0:
        return _Inertial(0.0, np.zeros(3), np.zeros((3, 3)))
    com = sum(m * c for m, c, _ in parts) / mass
    inertia = np.zeros((3, 3))
    for m, c, part_inertia in parts:
        d = c - com
        inertia += part_inertia + m * (d @ d * np.eye(3) - np.outer(d, d))
    return _Inertial(mass, com, inertia)


class RobotModel:
    """Kinematics and gravity of the serial chain through ``joint_names``.

    Build with :meth:`from_urdf_file` or :meth:`from_urdf_string`. Joint
    positions ``q`` are in rad, ordered as ``joint_names``.
    """

    def __init__(
        self,
        joints: Sequence[_Joint],
        links: dict[str, _Inertial],
        joint_names: Sequence[str],
        base_link: str | None = None,
        gravity: Sequence[float] = DEFAULT_GRAVITY,
    ) -> None:
        joint_names = tuple(joint_names)
        if not joint_names:
            raise ValueError("joint_names is empty")
        if len(set(joint_names)) != len(joint_names):
            raise ValueError(f"joint_names has duplicates: {joint_names}")
        by_name = {joint.name: joint for joint in joints}
        missing = [name for name in joint_names if name not in by_name]
        if missing:
            raise ValueError(f"URDF has no joint named {missing}")
        for name in joint_names:
            if by_name[name].type not in _MOVING_TYPES:
                raise ValueError(
                    f"joint '{name}' is {by_name[name].type}; only revolute/continuous are modelled"
                )
        for joint in joints:
            for link in (joint.parent, joint.child):
                if link not in links:
                    raise ValueError(f"joint '{joint.name}' refers to missing link '{link}'")
        children: dict[str, list[_Joint]] = {}
        parent_of: dict[str, _Joint] = {}
        for joint in joints:
            if joint.child in parent_of:
                raise ValueError(f"link '{joint.child}' has two parent joints")
            parent_of[joint.child] = joint
            children.setdefault(joint.parent, []).append(joint)
        if base_link is None:
            roots = [link for link in links if link not in parent_of]
            if len(roots) != 1:
                raise ValueError(f"URDF must have exactly one root link, found {roots}")
            base_link = roots[0]
        elif base_link not in links:
            raise ValueError(f"URDF has no link named '{base_link}'")

        index = {name: k for k, name in enumerate(joint_names)}
        # Walk the tree from the base: which body carries each link, and where.
        body_of: dict[str, int] = {base_link: -1}
        offset: dict[str, np.ndarray] = {base_link: np.eye(4)}
        joint_origin: dict[str, np.ndarray] = {}
        stack = [base_link]
        while stack:
            link = stack.pop()
            for joint in children.get(link, []):
                if joint.name in index:
                    k = index[joint.name]
                    if body_of[link] != k - 1:
                        expected = "the base" if k == 0 else f"'{joint_names[k - 1]}'"
                        raise ValueError(
                            f"joint '{joint.name}' does not follow {expected} in a serial chain"
                        )
                    joint_origin[joint.name] = offset[link] @ joint.origin
                    body_of[joint.child], offset[joint.child] = k, np.eye(4)
                else:
                    body_of[joint.child] = body_of[link]
                    offset[joint.child] = offset[link] @ joint.origin
                stack.append(joint.child)
        unreached = [name for name in joint_names if name not in joint_origin]
        if unreached:
            raise ValueError(f"joints {unreached} are not below base link '{base_link}'")

        n = len(joint_names)
        parts: list[list[tuple[float, np.ndarray, np.ndarray]]] = [[] for _ in range(n)]
        for link, body in body_of.items():
            if body < 0:
                continue
            inertial, frame = links[link], offset[link]
            rotation = frame[:3, :3]
            parts[body].append(
                (
                    inertial.mass,
                    rotation @ inertial.com + frame[:3, 3],
                    rotation @ inertial.inertia @ rotation.T,
                )
            )
        bodies = [_merge(p) for p in parts]

        limits = []
        for name in joint_names:
            limit = by_name[name].limit
            if limit is None or not limit[0] < limit[1]:
                raise ValueError(f"joint '{name}' has no <limit> with lower < upper")
            if limit[2] <= 0.0 or limit[3] <= 0.0:
                raise ValueError(f"joint '{name}' <limit> needs velocity > 0 and effort > 0")
            limits.append(limit)
        limit_array = np.array(limits)

        gravity_vector = np.asarray(gravity, dtype=np.float64)
        if gravity_vector.shape != (3,) or not np.isfinite(gravity_vector).all():
            raise ValueError(f"gravity must be 3 finite numbers (m/s²), got {gravity!r}")

        self._joint_names = joint_names
        self._base_link = base_link
        self._body_of = body_of
        self._limits = JointLimits(*limit_array.T)
        self._n = n
        axes = np.array([by_name[name].axis for name in joint_names])
        # Each body is tracked in an "aligned" frame: its child-link frame rotated so
        # that the joint axis is z. Then every joint rotation is a rotation about z.
        align = np.array([_align_z(axis) for axis in axes])
        align4 = np.zeros((n, 4, 4))
        align4[:, :3, :3] = align
        align4[:, 3, 3] = 1.0
        unalign4 = np.transpose(align4, (0, 2, 1))
        origins = np.array([joint_origin[name] for name in joint_names])
        self._pre = origins @ align4
        self._pre[1:] = unalign4[:-1] @ self._pre[1:]
        # Link poses relative to their body's aligned frame (base links: base frame).
        self._link_offset = {
            name: (frame.copy() if body_of[name] < 0 else unalign4[body_of[name]] @ frame)
            for name, frame in offset.items()
        }
        self._unalign4 = unalign4
        self._axes = axes
        self._masses = np.array([body.mass for body in bodies])
        self._suffix_mass = np.cumsum(self._masses[::-1])[::-1].copy()
        self._coms = np.array([body.com for body in bodies])
        aligned_coms = np.einsum("kji,kj->ki", align, self._coms)
        self._mass_com_h = np.concatenate([aligned_coms, np.ones((n, 1))], axis=1)
        self._mass_com_h = (self._mass_com_h * self._masses[:, None])[:, :, None]
        self._suffix_ones = np.triu(np.ones((n, n)))
        self._suffix_mass_col = self._suffix_mass[:, None].copy()
        self._ones3 = np.ones(3)
        self._weighted = np.empty((n, 4, 1))
        self._lever = np.empty((n, 3))
        self._moment = np.empty((n, 3))
        self._inertias = np.array([body.inertia for body in bodies])
        # (r × a) for rows r equals r @ skew(a); a = -g is fixed.
        self._anti_gravity_skew = _skew(-gravity_vector)
        self._gravity = gravity_vector
        # Scratch buffers for the hot path; rotations/positions are views of transforms.
        self._rz = np.zeros((n, 4, 4))
        self._rz[:, 2, 2] = 1.0
        self._rz[:, 3, 3] = 1.0
        self._transforms = np.empty((n, 4, 4))
        self._scratch = np.empty((n, 4, 4))
        self._rotations = self._transforms[:, :3, :3]
        self._positions = self._transforms[:, :3, 3]
        self._scan_strides = tuple(1 << i for i in range(max(n - 1, 1).bit_length()))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_urdf_string(
        cls,
        text: str,
        joint_names: Sequence[str] | None = None,
        base_link: str | None = None,
        gravity: Sequence[float] = DEFAULT_GRAVITY,
    ) -> RobotModel:
        """Parse URDF XML text. ValueError names what is malformed or missing.

        ``joint_names`` default to the default robot's arm joints."""
        try:
            root = ET.fromstring(text)
        except ET.ParseError as error:
            raise ValueError(f"URDF is not well-formed XML: {error}") from error
        if root.tag != "robot":
            raise ValueError(f"URDF root element must be <robot>, got <{root.tag}>")
        links: dict[str, _Inertial] = {}
        for link in root.findall("link"):
            name = link.get("name")
            if not name:
                raise ValueError("URDF link without a name")
            links[name] = _parse_inertial(link, name)
        if not links:
            raise ValueError("URDF has no <link> elements")
        joints = [_parse_joint(element) for element in root.findall("joint")]
        if joint_names is None:
            joint_names = load_robot().arm_joints
        return cls(joints, links, joint_names, base_link=base_link, gravity=gravity)

    @classmethod
    def from_urdf_file(
        cls,
        path: str | Path,
        joint_names: Sequence[str] | None = None,
        base_link: str | None = None,
        gravity: Sequence[float] = DEFAULT_GRAVITY,
    ) -> RobotModel:
        """Read and parse a URDF file (see :meth:`from_urdf_string`)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"URDF file not found: {path}")
        return cls.from_urdf_string(
            path.read_text(encoding="utf-8"), joint_names, base_link=base_link, gravity=gravity
        )

    @classmethod
    def from_description(
        cls, robot: RobotDescription, gravity: Sequence[float] = DEFAULT_GRAVITY
    ) -> RobotModel:
        """The model of ``robot``'s arm joints from its URDF, in its base frame."""
        return cls.from_urdf_file(robot.urdf, robot.arm_joints, base_link=robot.base_frame,
                                  gravity=gravity)

    # ----------------------------------------------------------------- properties
    @property
    def n(self) -> int:
        """Number of modelled joints."""
        return self._n

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Modelled joints in chain order."""
        return self._joint_names

    @property
    def base_link(self) -> str:
        """The link whose frame every pose is expressed in."""
        return self._base_link

    @property
    def link_names(self) -> tuple[str, ...]:
        """Links reachable from the base (valid arguments of :meth:`forward_kinematics`)."""
        return tuple(self._body_of)

    @property
    def limits(self) -> JointLimits:
        """Position (rad), velocity (rad/s) and effort (N·m) limits from the URDF."""
        return self._limits

    @property
    def body_masses(self) -> np.ndarray:
        """Mass (kg) moved by each joint's body (merged links), shape (n,)."""
        return self._masses.copy()

    @property
    def body_coms(self) -> np.ndarray:
        """Centre of mass of each body in its joint's child-link frame, m, shape (n, 3)."""
        return self._coms.copy()

    @property
    def body_inertias(self) -> np.ndarray:
        """Inertia of each body about its centre of mass, kg·m², shape (n, 3, 3)."""
        return self._inertias.copy()

    @property
    def gravity(self) -> np.ndarray:
        """Gravity vector in the base frame, m/s²."""
        return self._gravity.copy()

    # ----------------------------------------------------------------- kinematics
    def _update_frames(self, q: np.ndarray) -> None:
        """Fill the aligned body transforms (base frame, 4x4) for joint positions ``q`` (rad)."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self._n,):
            raise ValueError(f"q has shape {q.shape}, expected ({self._n},)")
        rz, transforms, scratch = self._rz, self._transforms, self._scratch
        cos, sin = np.cos(q), np.sin(q)
        rz[:, 0, 0] = cos
        rz[:, 1, 1] = cos
        rz[:, 1, 0] = sin
        np.negative(sin, out=rz[:, 0, 1])
        # Local transform of body k relative to body k-1, then a prefix product
        # (Hillis-Steele scan) turns them into base-frame transforms.
        np.matmul(self._pre, rz, out=transforms)
        for stride in self._scan_strides:
            np.matmul(transforms[:-stride], transforms[stride:], out=scratch[stride:])
            transforms[stride:] = scratch[stride:]

    def forward_kinematics(self, q: np.ndarray, link: str) -> np.ndarray:
        """Pose of ``link`` in the base frame as a 4x4 homogeneous transform (m)."""
        body = self._body_of.get(link)
        if body is None:
            raise ValueError(f"unknown link '{link}'; known: {sorted(self._body_of)}")
        self._update_frames(q)
        if body < 0:
            return self._link_offset[link].copy()
        return self._transforms[body] @ self._link_offset[link]

    def joint_frames(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each joint's child-link frame in the base frame at ``q``.

        Returns (rotations (n,3,3), origins (n,3) in m, joint axes (n,3) unit).
        """
        self._update_frames(q)
        axes = self._rotations[:, :, 2].copy()
        child = self._transforms @ self._unalign4
        return child[:, :3, :3], child[:, :3, 3], axes

    # ----------------------------------------------------------------- inertia
    def inertia_diagonal(self, q: np.ndarray) -> np.ndarray:
        """Diagonal of the joint-space inertia matrix M(q), kg·m², shape (n,).

        ``M_jj = sum_b (m_b |z_j × (c_b - p_j)|² + z_j · I_b z_j)`` over the bodies b
        from joint j outwards (``c_b``, ``I_b``: centre of mass and inertia about it in
        the base frame; ``z_j``, ``p_j``: joint j's axis and origin): the inertia that
        a torque on joint j alone accelerates. Not for the control loop (allocates).
        """
        rotations, origins, axes = self.joint_frames(q)
        coms = np.einsum("kij,kj->ki", rotations, self._coms) + origins
        inertias = rotations @ self._inertias @ np.transpose(rotations, (0, 2, 1))
        diagonal = np.empty(self._n)
        for j in range(self._n):
            lever = np.cross(axes[j], coms[j:] - origins[j])
            translational = self._masses[j:] @ np.einsum("ki,ki->k", lever, lever)
            rotational = np.einsum("i,kij,j->", axes[j], inertias[j:], axes[j])
            diagonal[j] = translational + rotational
        return diagonal

    def inertia_floor(self) -> np.ndarray:
        """A lower bound on :meth:`inertia_diagonal` over every configuration, kg·m², (n,).

        Joint j's own body turns rigidly with it, so its term of ``M_jj`` is the same at
        every q; each body further out adds at least the smallest principal moment of
        its inertia (its ``m·d²`` term is >= 0). The bound is what discrete-time gain
        limits are derived from (:mod:`visuomotor_core.controller_config`).
        """
        own = np.empty(self._n)
        rotations, origins, axes = self.joint_frames(np.zeros(self._n))
        for j in range(self._n):
            com = rotations[j] @ self._coms[j] + origins[j]
            lever = np.cross(axes[j], com - origins[j])
            inertia = rotations[j] @ self._inertias[j] @ rotations[j].T
            own[j] = self._masses[j] * (lever @ lever) + axes[j] @ inertia @ axes[j]
        smallest = np.array([np.linalg.eigvalsh(inertia)[0] for inertia in self._inertias])
        beyond = np.concatenate([np.cumsum(smallest[::-1])[::-1][1:], [0.0]])
        return own + np.maximum(beyond, 0.0)

    # ----------------------------------------------------------------- gravity
    def gravity_torques(
        self,
        q: np.ndarray,
        extra_payload: Payload | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Joint torques (N·m) that hold the arm still against gravity at ``q`` (rad).

        ``extra_payload`` adds a point mass carried by a link. ``out`` (shape (n,))
        receives the result without allocating a new array.
        """
        self._update_frames(q)
        positions = self._positions
        # Mass-weighted centres of mass in the base frame: T_k @ (m_k [com_k; 1]).
        weighted = np.matmul(self._transforms, self._mass_com_h, out=self._weighted)
        # Suffix sums over the chain (everything from joint k outwards) as one matmul.
        lever = np.matmul(self._suffix_ones, weighted[:, :3, 0], out=self._lever)
        if extra_payload is not None and extra_payload.mass > 0.0:
            body, point = self._payload_point(extra_payload)
            lever[: body + 1] += extra_payload.mass * (point - positions[: body + 1])
        np.multiply(self._suffix_mass_col, positions, out=self._moment)
        lever -= self._moment
        moment = np.matmul(lever, self._anti_gravity_skew, out=self._moment)
        moment *= self._rotations[:, :, 2]  # joint axes in the base frame
        return np.matmul(moment, self._ones3, out=out)

    def _payload_point(self, payload: Payload) -> tuple[int, np.ndarray]:
        """(carrying body index, payload position in base frame) after _update_frames."""
        link = payload.link
        if link is None:
            body, frame = self._n - 1, self._unalign4[-1]
        else:
            if link not in self._body_of:
                raise ValueError(f"payload link '{link}' is not part of the model")
            body, frame = self._body_of[link], self._link_offset[link]
        local = frame[:3, :3] @ np.asarray(payload.com) + frame[:3, 3]
        if body < 0:
            return body, local
        return body, self._rotations[body] @ local + self._positions[body]
