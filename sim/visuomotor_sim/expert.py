"""Privileged analytic expert for the reach task (train time only; uses PyBullet as a model).

The expert knows what the deployed policy does not: the true target position and the
episode's dynamics parameters. Each policy step it

1. moves a hand waypoint toward the target by at most ``max_step`` (m),
2. converts the Cartesian step to joint space by damped least squares on the grasp-point
   Jacobian, with a null-space pull toward the home posture,
3. adds the *sag offset* the joint controller will suffer under these dynamics: the
   controller compensates gravity with the nominal model and its torques are scaled by the
   actuator strength, and an external force ``F`` on the hand adds ``J_hand(q)^T F``, so at
   rest ``strength * (kp * delta + g_nom(q)) = g_true(q) - J_hand(q)^T F``, i.e.
   ``delta = ((g_true(q) - J_hand(q)^T F) / strength - g_nom(q)) / kp`` (rad),
4. adds a bounded integral of the remaining task-space error near the goal (friction and
   model mismatch),

and returns the action ``(q_des - q + delta + integral) / action_scale`` clipped to [-1, 1].
The robot (URDF, joints, grasp and tool links, home, default gains) is the robot
description's (:mod:`visuomotor_core.robot_description`).
Frames: the robot's base frame (= PyBullet world frame); SI units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from visuomotor_core.policy_features import DEFAULT_ACTION_SCALE, N_JOINTS
from visuomotor_core.robot_description import DEFAULT_ROBOT, RobotDescription, load_robot
from visuomotor_core.robot_model import Payload, RobotModel
from visuomotor_core.sag_estimator import PAYLOAD_COM
from visuomotor_sim.world import sim_urdf

HAND_COM = PAYLOAD_COM  # m, the tool link's inertial origin in the URDF
GRAVITY = 9.81  # m/s^2, as in visuomotor_sim.world.WorldConfig


@dataclass(frozen=True)
class ExpertConfig:
    """Settings of the analytic expert.

    Attributes:
        action_scale: rad per unit action (must match the env's).
        max_step: largest hand displacement commanded per policy step, m.
        step_gain: fraction of the remaining hand error commanded per step.
        damping: damped-least-squares damping, m.
        null_gain: null-space pull toward the robot's home posture per step (fraction).
        integral_gain: task-space integral gain per step (fraction of the error).
        integral_radius: the integral runs only within this distance of the target, m.
        integral_limit: bound on the integral's joint offset, rad.
        kp: joint controller stiffness, N·m/rad (one per arm joint), as in the controller
            config; default: the robot description's.
        robot: the robot's description name.
    """

    action_scale: float = DEFAULT_ACTION_SCALE
    max_step: float = 0.03
    step_gain: float = 0.5
    damping: float = 0.03
    null_gain: float = 0.05
    integral_gain: float = 0.05
    integral_radius: float = 0.05
    integral_limit: float = 0.08
    kp: tuple[float, ...] = field(default_factory=lambda: load_robot().kp)
    robot: str = DEFAULT_ROBOT

    def __post_init__(self) -> None:
        if self.action_scale <= 0.0 or self.max_step <= 0.0 or self.damping <= 0.0:
            raise ValueError("ExpertConfig: action_scale, max_step and damping must be > 0")
        if not (0.0 < self.step_gain <= 1.0):
            raise ValueError(f"ExpertConfig.step_gain must be in (0, 1], got {self.step_gain}")
        if len(self.kp) != N_JOINTS or min(self.kp) <= 0.0:
            raise ValueError(f"ExpertConfig.kp must be {N_JOINTS} positive gains, got {self.kp}")


class ArmModel:
    """Kinematics (PyBullet DIRECT) and gravity (core :class:`RobotModel`) of the arm.

    Gravity is linear in the masses, and the sim scales every link mass by
    ``link_mass_scale`` and adds the payload to the tool link, so the episode's gravity
    torques are ``scale * g_nom(q) + g_payload(q)``. (PyBullet's inverse dynamics is not
    used for this: it caches masses at its first call.)
    """

    def __init__(self, robot: RobotDescription | None = None) -> None:
        robot = robot or load_robot()
        self.robot = robot
        self._client = BulletClient(connection_mode=pybullet.DIRECT)
        self._client.setGravity(0.0, 0.0, -GRAVITY)
        self._body = self._client.loadURDF(sim_urdf(robot), useFixedBase=True,
                                           flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        infos = [self._client.getJointInfo(self._body, i)
                 for i in range(self._client.getNumJoints(self._body))]
        joints = {info[1].decode(): i for i, info in enumerate(infos)}
        links = {info[12].decode(): i for i, info in enumerate(infos)}
        movable = [i for i, info in enumerate(infos) if info[2] != pybullet.JOINT_FIXED]
        self._n_dof = len(movable)
        # calculateJacobian takes and returns the movable joints in index order
        self._arm_joints = tuple(joints[name] for name in robot.arm_joints)
        self._arm_dofs = [movable.index(j) for j in self._arm_joints]
        self._model = RobotModel.from_description(robot)
        self._hand_link = links[robot.tool_frame]
        self._grasp_link = links[robot.grasp_link]
        self._mass_scale = 1.0
        self._payload: Payload | None = None
        self._strength = 1.0
        self._force = np.zeros(3)

    def set_dynamics(self, link_mass_scale: float, payload_mass: float,
                     actuator_strength_scale: float,
                     external_force: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        """Use an episode's masses, actuator strength and external hand force (N, base
        frame), as the sim world applies them."""
        self._mass_scale = link_mass_scale
        self._payload = Payload(payload_mass, HAND_COM, self.robot.tool_frame) \
            if payload_mass > 0.0 else None
        self._strength = actuator_strength_scale
        self._force = np.asarray(external_force, float)

    def _full(self, q: np.ndarray) -> list[float]:
        full = [0.0] * self._n_dof
        for dof, angle in zip(self._arm_dofs, q.tolist(), strict=True):
            full[dof] = angle
        return full

    def gravity(self, q: np.ndarray, actual: bool) -> np.ndarray:
        """Gravity torques (7,), N·m, at q: nominal masses or the episode's (``actual``)."""
        nominal = self._model.gravity_torques(q)
        if not actual:
            return nominal
        tau = self._mass_scale * nominal
        if self._payload is not None:
            tau += self._model.gravity_torques(q, self._payload) - nominal
        return tau

    def external_torques(self, q: np.ndarray) -> np.ndarray:
        """Joint torques (7,), N·m, of the episode's external force on the hand's centre of
        mass: ``J_hand(q)^T F``."""
        if not self._force.any():
            return np.zeros(N_JOINTS)
        self._set_joints(q)
        return self._jacobian(self._hand_link, q).T @ self._force

    def sag(self, q: np.ndarray, kp: np.ndarray) -> np.ndarray:
        """Steady joint offset (rad) under the episode dynamics at q (see module doc)."""
        loaded = self.gravity(q, True) - self.external_torques(q)
        return (loaded / self._strength - self.gravity(q, False)) / kp

    def _set_joints(self, q: np.ndarray) -> None:
        for joint, angle in zip(self._arm_joints, q, strict=True):
            self._client.resetJointState(self._body, joint, float(angle))

    def _jacobian(self, link: int, q: np.ndarray) -> np.ndarray:
        """Translational Jacobian (3, 7) of ``link``'s centre of mass at q (set first)."""
        zeros = [0.0] * self._n_dof
        jac_t, _ = self._client.calculateJacobian(self._body, link, [0.0, 0.0, 0.0],
                                                  self._full(q), zeros, zeros)
        return np.asarray(jac_t)[:, self._arm_dofs]

    def grasp_and_jacobian(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grasp-point position (3,) m and its translational Jacobian (3, 7)."""
        self._set_joints(q)
        state = self._client.getLinkState(self._body, self._grasp_link,
                                          computeForwardKinematics=True)
        return np.asarray(state[4]), self._jacobian(self._grasp_link, q)

    def close(self) -> None:
        self._client.disconnect()


class ReachExpert:
    """Privileged expert: ``act(q, target) -> action`` for the current episode.

    Call :meth:`reset` with the episode's dynamics at the start of every episode.
    """

    def __init__(self, config: ExpertConfig | None = None, model: ArmModel | None = None):
        self.config = config or ExpertConfig()
        self.model = model or ArmModel(load_robot(self.config.robot))
        self._kp = np.asarray(self.config.kp, float)
        self._home = np.asarray(self.model.robot.home, float)
        self._integral = np.zeros(N_JOINTS)
        self.last_sag = np.zeros(N_JOINTS)  # sag offset (rad) in the latest act()

    def reset(self, dynamics) -> None:
        """New episode with ``dynamics`` (a ``visuomotor_sim.randomization.DynamicsParams``)."""
        self.model.set_dynamics(dynamics.link_mass_scale, dynamics.payload_mass,
                                dynamics.actuator_strength_scale, dynamics.external_force)
        self._integral.fill(0.0)

    def joint_step(self, q: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
        """Joint displacement (rad) moving the hand toward ``target``, and the hand error (m)."""
        cfg = self.config
        hand, jac = self.model.grasp_and_jacobian(q)
        error = target - hand
        distance = float(np.linalg.norm(error))
        step = error * min(cfg.step_gain, cfg.max_step / max(distance, 1e-9))
        jjt = jac @ jac.T + cfg.damping ** 2 * np.eye(3)
        pinv = jac.T @ np.linalg.inv(jjt)
        dq = pinv @ step
        dq += (np.eye(N_JOINTS) - pinv @ jac) @ (cfg.null_gain * (self._home - q))
        if distance < cfg.integral_radius:
            self._integral += cfg.integral_gain * (pinv @ error)
            np.clip(self._integral, -cfg.integral_limit, cfg.integral_limit, out=self._integral)
        return dq, distance

    def act(self, q: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Action in [-1, 1]^7 for measured joint positions q (rad) and the true target (m)."""
        q = np.asarray(q, float)
        dq, _ = self.joint_step(q, np.asarray(target, float))
        self.last_sag = self.model.sag(q + dq, self._kp)
        residual = dq + self.last_sag + self._integral
        return np.clip(residual / self.config.action_scale, -1.0, 1.0)

    def close(self) -> None:
        self.model.close()
