"""The simulated arm: its URDF loaded through the robot description, joints, limits,
episode dynamics, actuators and joint sensing.

The arm is the one a robot description names (:mod:`visuomotor_core.robot_description`):
its URDF, arm and gripper joints, tool and grasp links all come from there. The base is
fixed at the origin of the world frame with identity orientation, so the world frame *is*
the robot base frame. Units are SI (m, rad, s, kg, N·m).

Commands go through a delay line of whole physics steps (``DynamicsParams.actuation_delay``)
and are always clamped to the URDF effort limit of each joint before they reach PyBullet.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from visuomotor_core.limits import all_true
from visuomotor_core.robot_description import DEFAULT_ROBOT, RobotDescription, load_robot
from visuomotor_sim.randomization import DynamicsParams

#: The default robot's arm joints (its description's ``arm_joints``).
ARM_JOINT_NAMES: tuple[str, ...] = load_robot().arm_joints
COMMAND_MODES: tuple[str, ...] = ("effort", "position", "velocity")
_MODE_CODES = {name: code for code, name in enumerate(COMMAND_MODES)}
_EFFORT, _POSITION, _VELOCITY = 0, 1, 2
_FINGER_FORCE = 20.0  # N, force of each gripper joint's position motor


@dataclass(frozen=True)
class JointLimits:
    """URDF limits of the arm joints (7,) each: rad, rad, rad/s, N·m."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


def robot_urdf_path(robot: str = DEFAULT_ROBOT) -> Path:
    """The robot's URDF shared with the controller model (its description's)."""
    return load_robot(robot).urdf


def sim_urdf(robot: RobotDescription) -> str:
    """The URDF the sim loads: the robot inside pybullet_data (with its meshes), else its
    description's URDF."""
    if robot.sim_urdf is None:
        return str(robot.urdf)
    return os.path.join(pybullet_data.getDataPath(), robot.sim_urdf)


@lru_cache(maxsize=4)
def _low_poly_urdf(urdf: str) -> str:
    """Path of a copy of ``urdf`` whose visuals are its collision meshes (where the URDF
    keeps them under ``meshes/visual`` and ``meshes/collision``; mesh paths made absolute)."""
    mesh_dir = os.path.join(os.path.dirname(urdf), "meshes")
    text = Path(urdf).read_text(encoding="utf-8")
    text = text.replace("package://meshes/visual/", "package://meshes/collision/")
    text = text.replace("package://meshes/", mesh_dir + "/")
    text = text.replace('filename="meshes/', f'filename="{mesh_dir}/')  # relative paths
    out_dir = tempfile.mkdtemp(prefix="visuomotor_sim_")
    path = os.path.join(out_dir, "low_poly_" + os.path.basename(urdf))
    Path(path).write_text(text, encoding="utf-8")
    return path


class SimRobot:
    """The arm of one PyBullet client: loads it, applies episode dynamics, queues and
    applies commands, and reads its joints and links.

    Args:
        client: the PyBullet client (physics parameters already set).
        description: the robot's description.
        robot_visual: ``"collision"`` renders the arm with its collision meshes (see
            :class:`~visuomotor_sim.world.WorldConfig`), ``"full"`` with its visual meshes.

    Attributes:
        body: the PyBullet body id of the arm.
        arm_joints, finger_joints: joint indices of the arm and gripper joints.
        link_index: {link name: link index}.
        hand_link, grasp_link: link indices of the tool frame and the grasp link.
        limits: URDF limits of the arm joints.
        applied_tau: (n,) torques last applied to the arm joints, N·m (updated in place).
    """

    def __init__(self, client: BulletClient, description: RobotDescription,
                 robot_visual: str) -> None:
        self._client = client
        # Bound once: each attribute access of a BulletClient builds a new partial (0.75 µs,
        # several times per 1 kHz tick).
        self._get_joint_states = client.getJointStates
        self._set_motors = client.setJointMotorControlArray
        self._description = description
        urdf = sim_urdf(description)
        if robot_visual == "collision":
            urdf = _low_poly_urdf(urdf)
        self.body = client.loadURDF(urdf, [0.0, 0.0, 0.0], useFixedBase=True,
                                    flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        self._index_joints()
        # The URDF's link masses and inertias, which apply_dynamics scales.
        infos = [client.getDynamicsInfo(self.body, j)
                 for j in range(client.getNumJoints(self.body))]
        self._nominal_masses = np.array([info[0] for info in infos])
        self._nominal_inertias = np.array([info[2] for info in infos])
        self._dynamics = DynamicsParams()
        self._external_force: list[float] | None = None
        self.reset_commands(delay_steps=0)

    def _index_joints(self) -> None:
        c = self._client
        joints, links = {}, {}
        for j in range(c.getNumJoints(self.body)):
            info = c.getJointInfo(self.body, j)
            joints[info[1].decode()] = j
            links[info[12].decode()] = j
        robot = self._description
        missing = [n for n in (*robot.arm_joints, *robot.gripper_joints) if n not in joints]
        missing += [n for n in (robot.tool_frame, robot.grasp_link) if n not in links]
        if missing:
            raise ValueError(f"robot {robot.name!r}: the sim's URDF has no {missing}")
        self.arm_joints = [joints[n] for n in robot.arm_joints]
        self.finger_joints = [joints[n] for n in robot.gripper_joints]
        self.link_index = links
        self.hand_link = links[robot.tool_frame]
        self.grasp_link = links[robot.grasp_link]
        infos = [c.getJointInfo(self.body, j) for j in self.arm_joints]
        self.limits = JointLimits(
            lower=np.array([i[8] for i in infos]), upper=np.array([i[9] for i in infos]),
            effort=np.array([i[10] for i in infos]), velocity=np.array([i[11] for i in infos]))
        self._neg_effort = -self.limits.effort

    # ------------------------------------------------------------------ episode
    def apply_dynamics(self, d: DynamicsParams) -> None:
        """Take an episode's dynamics: link masses and inertias, payload at the hand, joint
        damping, friction, actuator strength, joint-state noise, force on the hand."""
        self._dynamics = d
        c = self._client
        masses = self._nominal_masses * d.link_mass_scale
        masses[self.hand_link] += d.payload_mass
        inertias = self._nominal_inertias * d.link_mass_scale  # payload: a point mass at the
        for link, mass in enumerate(masses):                  # hand's centre of mass
            if self._nominal_masses[link] > 0.0:
                # pass the inertia too: a mass-only change makes PyBullet recompute it from
                # the collision shape instead of keeping the URDF's
                c.changeDynamics(self.body, link, mass=float(mass),
                                 localInertiaDiagonal=inertias[link].tolist())
        for joint in self.arm_joints:
            c.changeDynamics(self.body, joint, jointDamping=d.joint_damping)
        force = [float(f) for f in d.external_force]
        self._external_force = force if any(force) else None

    def reset_pose(self, home_q: np.ndarray, noise_std: float, finger_opening: float,
                   rng: np.random.Generator) -> None:
        """Place the arm at rest at ``home_q`` plus Gaussian noise of ``noise_std`` (rad,
        drawn from ``rng``) within its limits, the fingers at ``finger_opening`` (m, held by
        position motors), and hand the arm joints to torque control."""
        c = self._client
        q0 = np.asarray(home_q) + rng.normal(0.0, noise_std, len(self.arm_joints))
        q0 = np.clip(q0, self.limits.lower, self.limits.upper)
        for joint, angle in zip(self.arm_joints, q0, strict=True):
            c.resetJointState(self.body, joint, float(angle), 0.0)
        for joint in self.finger_joints:
            c.resetJointState(self.body, joint, finger_opening, 0.0)
        if self.finger_joints:
            n_fingers = len(self.finger_joints)
            c.setJointMotorControlArray(
                self.body, self.finger_joints, pybullet.POSITION_CONTROL,
                targetPositions=[finger_opening] * n_fingers,
                forces=[_FINGER_FORCE] * n_fingers)
        self._release_arm_motors()

    def _release_arm_motors(self) -> None:
        """Velocity motors off except for joint friction (a zero-velocity motor whose
        force is the friction torque); arm torques then come from TORQUE_CONTROL."""
        friction = self._dynamics.joint_friction
        self._client.setJointMotorControlArray(
            self.body, self.arm_joints, pybullet.VELOCITY_CONTROL,
            targetVelocities=[0.0] * len(self.arm_joints),
            forces=[friction] * len(self.arm_joints))
        self._motor_mode = _EFFORT

    def reset_commands(self, delay_steps: int) -> None:
        """Empty the command delay line and make it ``delay_steps`` physics steps long."""
        n = len(self.arm_joints)
        self._ring = np.zeros((delay_steps + 1, n))
        self._ring_modes = np.zeros(delay_steps + 1, dtype=np.int64)
        self._ring_head = 0
        self._latest = np.zeros(n)
        self._latest_mode = _EFFORT
        self._primed = False
        self.applied_tau = np.zeros(n)
        self._tau_buffer = np.zeros(n)

    @property
    def delay_steps(self) -> int:
        """Actuation delay in whole physics steps."""
        return self._ring.shape[0] - 1

    # ------------------------------------------------------------------ commands
    def apply_command(self, values: np.ndarray, mode: str = "effort") -> None:
        """Queue an arm command; it reaches the joints after the actuation delay.

        Args:
            values: (7,) torques (N·m, ``"effort"``), positions (rad, ``"position"``) or
                velocities (rad/s, ``"velocity"``) for the arm joints.
            mode: one of :data:`COMMAND_MODES` (an enum with such a ``.value`` works too).

        Raises:
            ValueError: unknown mode, wrong length or non-finite values (nothing is queued).
        """
        mode_name = getattr(mode, "value", mode)
        code = _MODE_CODES.get(mode_name)
        if code is None:
            raise ValueError(f"unknown command mode '{mode_name}' (use one of {COMMAND_MODES})")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self._latest.shape or not all_true(np.isfinite(values)):
            raise ValueError(f"arm command must be {self._latest.shape[0]} finite values, got "
                             f"{values.tolist()}")
        self._latest[:] = values
        self._latest_mode = code
        if not self._primed:
            self._ring[:] = self._latest
            self._ring_modes[:] = code
            self._primed = True

    def actuate(self) -> None:
        """Apply, for the coming physics step, the command queued ``delay_steps`` steps ago
        and the episode's external force on the hand (PyBullet clears it every step)."""
        self._push_and_apply()
        force = self._external_force
        if force is not None:
            com = self._client.getLinkState(self.body, self.hand_link)[0]
            self._client.applyExternalForce(self.body, self.hand_link, force, com,
                                            pybullet.WORLD_FRAME)

    def _push_and_apply(self) -> None:
        ring = self._ring
        ring[self._ring_head] = self._latest
        self._ring_modes[self._ring_head] = self._latest_mode
        self._ring_head = (self._ring_head + 1) % ring.shape[0]
        oldest = self._ring_head  # the slot written delay_steps pushes ago
        self._send(ring[oldest], int(self._ring_modes[oldest]))

    def _send(self, values: np.ndarray, mode: int) -> None:
        c, lim = self._client, self.limits.effort
        strength = self._dynamics.actuator_strength_scale
        if mode == _EFFORT:
            if self._motor_mode != _EFFORT:
                self._release_arm_motors()
            tau = np.multiply(values, strength, out=self._tau_buffer)
            np.minimum(tau, lim, out=tau)  # two ufuncs: several times faster than np.clip
            np.maximum(tau, self._neg_effort, out=tau)
            self.applied_tau[:] = tau
            self._set_motors(self.body, self.arm_joints, pybullet.TORQUE_CONTROL,
                             forces=tau.tolist())
            return
        forces = np.minimum(lim * strength, lim).tolist()
        if mode == _POSITION:
            target = np.clip(values, self.limits.lower, self.limits.upper).tolist()
            c.setJointMotorControlArray(self.body, self.arm_joints, pybullet.POSITION_CONTROL,
                                        targetPositions=target, forces=forces)
        else:
            target = np.clip(values, -self.limits.velocity, self.limits.velocity).tolist()
            c.setJointMotorControlArray(self.body, self.arm_joints, pybullet.VELOCITY_CONTROL,
                                        targetVelocities=target, forces=forces)
        self._motor_mode = mode
        self.applied_tau[:] = self._motor_torques()

    def _motor_torques(self) -> np.ndarray:
        states = self._get_joint_states(self.body, self.arm_joints)
        return np.array([s[3] for s in states])

    # ------------------------------------------------------------------ sensing
    def joint_state(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Measured arm state: positions (rad, with the episode's joint-state noise drawn
        from ``rng``), velocities (rad/s) and the torques last applied (N·m), each (7,)."""
        states = self._get_joint_states(self.body, self.arm_joints)
        q = np.array([s[0] for s in states])
        qd = np.array([s[1] for s in states])
        noise = self._dynamics.joint_state_noise
        if noise > 0.0:
            q += rng.normal(0.0, noise, q.shape)
        return q, qd, self.applied_tau.copy()

    def true_joint_positions(self) -> np.ndarray:
        """Arm joint positions without measurement noise, rad (7,)."""
        states = self._get_joint_states(self.body, self.arm_joints)
        return np.array([s[0] for s in states])

    def pose_arm(self, positions: np.ndarray) -> None:
        """Place the arm joints at ``positions`` (7,), rad, at rest, without stepping."""
        c = self._client
        for joint, angle in zip(self.arm_joints, positions, strict=True):
            c.resetJointState(self.body, joint, float(angle), 0.0)

    def grasp_point(self) -> np.ndarray:
        """Position of the grasp link (between the fingertips), m, base frame (3,)."""
        state = self._client.getLinkState(self.body, self.grasp_link,
                                          computeForwardKinematics=1)
        return np.array(state[4])

    def hand_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Pose of the tool frame: position (3,), m, and rotation (3, 3) whose columns are
        its axes, base frame."""
        state = self._client.getLinkState(self.body, self.hand_link,
                                          computeForwardKinematics=1)
        rotation = np.asarray(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        return np.asarray(state[4]), rotation

    def link_mass(self, link_name: str) -> float:
        """Current mass of a robot link, kg (includes payload and mass scaling)."""
        return float(self._client.getDynamicsInfo(self.body, self.link_index[link_name])[0])
