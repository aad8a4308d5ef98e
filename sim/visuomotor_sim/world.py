"""PyBullet world: an arm on a table, a visual-only target and a fixed RGB camera.

The arm is the one its robot description names (``WorldConfig.robot``, default the Franka
Panda; :mod:`visuomotor_core.robot_description`): its URDF, arm and gripper joints, tool
and grasp links and home posture all come from there.

:class:`ArmWorld` owns one PyBullet client (DIRECT, or GUI on request) and is the only
place that talks to PyBullet. Frames: the world frame *is* the robot base frame (the
description's ``base_frame``; base fixed at the origin, identity orientation); the table
top is the plane z = 0. Units are SI throughout (m, rad, s, kg, N·m).

Commands go through a delay line of whole physics steps (``DynamicsParams.actuation_delay``)
and are always clamped to the URDF effort limit of each joint before they reach PyBullet.
"""

from __future__ import annotations

import logging
import os
import pkgutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from visuomotor_core.robot_description import DEFAULT_ROBOT, RobotDescription, load_robot
from visuomotor_sim.camera import CameraConfig, CameraPose, PinholeCamera
from visuomotor_sim.randomization import DynamicsParams, VisualParams

_LOG = logging.getLogger(__name__)

#: The default robot's arm joints (its description's ``arm_joints``).
ARM_JOINT_NAMES: tuple[str, ...] = load_robot().arm_joints
COMMAND_MODES: tuple[str, ...] = ("effort", "position", "velocity")
_MODE_CODES = {name: code for code, name in enumerate(COMMAND_MODES)}
_EFFORT, _POSITION, _VELOCITY = 0, 1, 2
_FINGER_FORCE = 20.0  # N, force of each gripper joint's position motor
_WRIST_CAMERA_OFFSET = 0.02  # m along the hand z axis


@dataclass(frozen=True)
class TargetConfig:
    """Where targets may appear and how they look.

    Attributes:
        x_range, y_range, z_range: (low, high) of the sphere centre, m, base frame.
        radius: sphere radius, m.
        post_radius: radius of the thin post under the sphere (monocular depth cue), m.
        post_colour: RGB of the post.
    """

    x_range: tuple[float, float] = (0.35, 0.65)
    y_range: tuple[float, float] = (-0.25, 0.25)
    z_range: tuple[float, float] = (0.10, 0.35)
    radius: float = 0.02
    post_radius: float = 0.004
    post_colour: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"TargetConfig.{name}: low {low} > high {high}")
        if self.z_range[0] <= self.radius:
            raise ValueError(f"TargetConfig.z_range low {self.z_range[0]} m must be above the "
                             f"table by more than the radius {self.radius} m")
        if self.radius <= 0.0 or self.post_radius <= 0.0:
            raise ValueError("TargetConfig: radius and post_radius must be positive")

    @property
    def low(self) -> np.ndarray:
        return np.array([self.x_range[0], self.y_range[0], self.z_range[0]])

    @property
    def high(self) -> np.ndarray:
        return np.array([self.x_range[1], self.y_range[1], self.z_range[1]])

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly drawn sphere centre (3,), m, base frame."""
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class WorldConfig:
    """Static description of the simulated world.

    Attributes:
        physics_hz: physics rate, Hz (``dt = 1 / physics_hz``).
        robot: the robot's description name (``visuomotor_core.robot_description``).
        home_q: arm home configuration, rad (one per arm joint); None: the description's.
        home_noise_std: std of the seeded Gaussian noise added to ``home_q`` at reset, rad.
        finger_opening: position held by each finger joint, m (position control).
        robot_visual: ``"collision"`` renders the arm with its low-poly collision meshes
            (about 6x faster on the CPU renderer, same kinematics and dynamics);
            ``"full"`` uses the detailed visual meshes.
        use_egl: render with the EGL plugin when it loads (falls back to the CPU
            TinyRenderer with a log line). Worth it only with a GPU: on a CPU-only
            machine EGL runs on Mesa llvmpipe and is ~6x slower than TinyRenderer here.
        gui: connect with PyBullet's GUI (an OpenGL window showing the world) instead of
            headless DIRECT. Needs a display (an X server on Linux); camera images are
            still rendered by the configured renderer, so they do not change.
        table_half_extents: half sizes of the box table, m; its top is the plane z = 0.
        table_centre_xy: table centre in the base frame, m.
        camera: the fixed scene camera.
        wrist_camera: also create a camera on the hand (see :meth:`ArmWorld.render_wrist`).
        target: target sampling ranges and looks.
        gravity: gravity along -z, m/s^2.
    """

    physics_hz: float = 1000.0
    robot: str = DEFAULT_ROBOT
    home_q: tuple[float, ...] | None = None
    home_noise_std: float = 0.02
    finger_opening: float = 0.02
    robot_visual: str = "collision"
    use_egl: bool = False
    gui: bool = False
    table_half_extents: tuple[float, float, float] = (0.6, 0.6, 0.02)
    table_centre_xy: tuple[float, float] = (0.3, 0.0)
    camera: CameraConfig = field(default_factory=CameraConfig)
    wrist_camera: bool = False
    target: TargetConfig = field(default_factory=TargetConfig)
    gravity: float = 9.81

    def __post_init__(self) -> None:
        if not 50.0 <= self.physics_hz <= 10000.0:
            raise ValueError(f"WorldConfig.physics_hz must be in [50, 10000] Hz, got "
                             f"{self.physics_hz}")
        robot = self.description
        if self.home_q is None:
            object.__setattr__(self, "home_q", robot.home)
        if len(self.home_q) != robot.n:
            raise ValueError(f"WorldConfig.home_q needs {robot.n} values ({robot.name}), got "
                             f"{len(self.home_q)}")
        if self.home_noise_std < 0.0:
            raise ValueError("WorldConfig.home_noise_std must be >= 0")
        if not 0.0 <= self.finger_opening <= 0.04:
            raise ValueError(f"WorldConfig.finger_opening must be in [0, 0.04] m, got "
                             f"{self.finger_opening}")
        if self.robot_visual not in ("collision", "full"):
            raise ValueError(f"WorldConfig.robot_visual must be 'collision' or 'full', got "
                             f"'{self.robot_visual}'")
        if min(self.table_half_extents) <= 0.0:
            raise ValueError("WorldConfig.table_half_extents must be positive")

    @property
    def dt(self) -> float:
        return 1.0 / self.physics_hz

    @property
    def description(self) -> RobotDescription:
        """The robot's description (ValueError for an unknown robot)."""
        return load_robot(self.robot)


@dataclass(frozen=True)
class JointLimits:
    """URDF limits of the arm joints (7,) each: rad, rad, rad/s, N·m."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


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


def _display_problem() -> str | None:
    """Why PyBullet's GUI cannot open a window here, or None when it can try.

    PyBullet's X11 GUI calls ``exit()`` when it cannot reach the X server, taking the
    whole process down, so a missing display must be caught before connecting.
    """
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set (no X server; on a headless machine keep gui off)"
    host, _, number = display.rpartition(":")
    if host in ("", "unix"):
        socket_path = f"/tmp/.X11-unix/X{number.split('.')[0]}"
        if not os.path.exists(socket_path):
            return f"DISPLAY={display} but the X server socket {socket_path} does not exist"
    return None


def _connect(gui: bool) -> BulletClient:
    """A PyBullet client: DIRECT (headless) or GUI, with a clear error when the GUI fails."""
    if not gui:
        return BulletClient(connection_mode=pybullet.DIRECT)
    problem = _display_problem()
    if problem is not None:
        raise RuntimeError(f"WorldConfig.gui=True needs a display: {problem}")
    try:
        client = BulletClient(connection_mode=pybullet.GUI)
    except pybullet.error as error:
        raise RuntimeError(f"could not open the PyBullet GUI ({error}); only one GUI "
                           "connection is allowed per process") from error
    client.configureDebugVisualizer(pybullet.COV_ENABLE_GUI, 0)
    client.resetDebugVisualizerCamera(cameraDistance=1.4, cameraYaw=50.0, cameraPitch=-30.0,
                                      cameraTargetPosition=[0.3, 0.0, 0.2])
    return client


def robot_urdf_path(robot: str = DEFAULT_ROBOT) -> Path:
    """The robot's URDF shared with the controller model (its description's)."""
    return load_robot(robot).urdf


class ArmWorld:
    """One PyBullet client holding the arm, a table, a target and a camera.

    Call :meth:`reset` before stepping. Typical loop at the physics rate::

        q, qd, tau = world.joint_state()
        world.apply_command(torques, "effort")
        world.step()
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self._client = _connect(self.config.gui)
        self._renderer = self._choose_renderer()
        convention = "opengl" if self._renderer == pybullet.ER_BULLET_HARDWARE_OPENGL else "tiny"
        self.camera = PinholeCamera(self.config.camera, pixel_convention=convention)
        self._build_scene()
        self._dynamics = DynamicsParams()
        self._external_force: list[float] | None = None
        self._visual = VisualParams()
        self._render_pose = self.camera.pose
        self._rng = np.random.default_rng(0)
        self._init_command_state(delay_steps=0)
        self._target = np.zeros(3)
        self._steps = 0
        self._effort_integral = 0.0

    # ------------------------------------------------------------------ construction
    def _choose_renderer(self) -> int:
        if not self.config.use_egl:
            return pybullet.ER_TINY_RENDERER
        egl = pkgutil.get_loader("eglRenderer")
        plugin = -1
        if egl is not None:
            plugin = self._client.loadPlugin(egl.get_filename(), "_eglRendererPlugin")
        if plugin < 0:
            _LOG.warning("EGL renderer plugin unavailable; rendering with the CPU TinyRenderer")
            return pybullet.ER_TINY_RENDERER
        _LOG.info("rendering with the EGL hardware renderer")
        return pybullet.ER_BULLET_HARDWARE_OPENGL

    def _build_scene(self) -> None:
        cfg, c = self.config, self._client
        c.setPhysicsEngineParameter(fixedTimeStep=cfg.dt, deterministicOverlappingPairs=1)
        c.setGravity(0.0, 0.0, -cfg.gravity)
        urdf = sim_urdf(cfg.description)
        if cfg.robot_visual == "collision":
            urdf = _low_poly_urdf(urdf)
        self.robot = c.loadURDF(urdf, [0.0, 0.0, 0.0], useFixedBase=True,
                                flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        self._index_joints()
        self.table = self._create_table()
        self.target_body, self.post_body = self._create_target()
        infos = [c.getDynamicsInfo(self.robot, j) for j in range(c.getNumJoints(self.robot))]
        self._nominal_masses = np.array([info[0] for info in infos])
        self._nominal_inertias = np.array([info[2] for info in infos])
        self._initial_state = c.saveState()

    def _index_joints(self) -> None:
        c = self._client
        joints, links = {}, {}
        for j in range(c.getNumJoints(self.robot)):
            info = c.getJointInfo(self.robot, j)
            joints[info[1].decode()] = j
            links[info[12].decode()] = j
        robot = self.config.description
        missing = [n for n in (*robot.arm_joints, *robot.gripper_joints) if n not in joints]
        missing += [n for n in (robot.tool_frame, robot.grasp_link) if n not in links]
        if missing:
            raise ValueError(f"robot {robot.name!r}: the sim's URDF has no {missing}")
        self.arm_joints = [joints[n] for n in robot.arm_joints]
        self.finger_joints = [joints[n] for n in robot.gripper_joints]
        self.link_index = links
        self.hand_link = links[robot.tool_frame]
        self.grasp_link = links[robot.grasp_link]
        infos = [c.getJointInfo(self.robot, j) for j in self.arm_joints]
        self.limits = JointLimits(
            lower=np.array([i[8] for i in infos]), upper=np.array([i[9] for i in infos]),
            effort=np.array([i[10] for i in infos]), velocity=np.array([i[11] for i in infos]))
        self._neg_effort = -self.limits.effort

    def _create_table(self) -> int:
        c, cfg = self._client, self.config
        half = list(cfg.table_half_extents)
        colour = [*VisualParams().table_colour, 1.0]
        visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=colour)
        collision = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
        centre = [cfg.table_centre_xy[0], cfg.table_centre_xy[1], -half[2]]
        return c.createMultiBody(0.0, collision, visual, centre)

    def _create_target(self) -> tuple[int, int]:
        """Visual-only sphere and a post long enough to reach below the table top
        from the highest target (the table hides the rest)."""
        c, tcfg = self._client, self.config.target
        sphere = c.createVisualShape(pybullet.GEOM_SPHERE, radius=tcfg.radius,
                                     rgbaColor=[*VisualParams().object_colour, 1.0])
        self._post_length = tcfg.z_range[1] + 2.0 * self.config.table_half_extents[2]
        post = c.createVisualShape(pybullet.GEOM_CYLINDER, radius=tcfg.post_radius,
                                   length=self._post_length,
                                   rgbaColor=[*tcfg.post_colour, 1.0])
        target = c.createMultiBody(0.0, -1, sphere, [0.5, 0.0, 0.2])
        post_body = c.createMultiBody(0.0, -1, post, [0.5, 0.0, 0.0])
        return target, post_body

    # ------------------------------------------------------------------ properties
    @property
    def client(self) -> BulletClient:
        """The underlying PyBullet client (for inspection and tests)."""
        return self._client

    @property
    def dt(self) -> float:
        """Physics step, s."""
        return self.config.dt

    @property
    def time(self) -> float:
        """Simulated time since the last reset, s."""
        return self._steps * self.config.dt

    @property
    def dynamics(self) -> DynamicsParams:
        return self._dynamics

    @property
    def visual(self) -> VisualParams:
        return self._visual

    @property
    def target_position(self) -> np.ndarray:
        """Target sphere centre, m, base frame (copy)."""
        return self._target.copy()

    @property
    def effort_integral(self) -> float:
        """Integral of the sum of squared applied arm torques since reset, N²·m²·s."""
        return self._effort_integral

    @property
    def delay_steps(self) -> int:
        """Actuation delay in whole physics steps."""
        return self._ring.shape[0] - 1

    # ------------------------------------------------------------------ reset
    def reset(self, seed: int, dynamics: DynamicsParams | None = None,
              visual: VisualParams | None = None,
              target_position: np.ndarray | None = None) -> np.ndarray:
        """Restore the initial scene, apply episode parameters, place the arm and target.

        Args:
            seed: seeds the home-pose noise, the target draw, the joint-state noise and
                the image noise of this episode.
            dynamics, visual: episode parameters (nominal when None).
            target_position: sphere centre (3,), m, base frame; drawn from
                ``config.target`` when None.

        Returns:
            The target position (3,), m, base frame.
        """
        c = self._client
        c.restoreState(self._initial_state)
        self._rng = np.random.default_rng(seed)
        self._dynamics = dynamics or DynamicsParams()
        self._visual = visual or VisualParams()
        self._apply_dynamics(self._dynamics)
        self._apply_visual(self._visual)
        q0 = np.asarray(self.config.home_q) + self._rng.normal(
            0.0, self.config.home_noise_std, len(self.arm_joints))
        q0 = np.clip(q0, self.limits.lower, self.limits.upper)
        for joint, angle in zip(self.arm_joints, q0, strict=True):
            c.resetJointState(self.robot, joint, float(angle), 0.0)
        for joint in self.finger_joints:
            c.resetJointState(self.robot, joint, self.config.finger_opening, 0.0)
        if self.finger_joints:
            n_fingers = len(self.finger_joints)
            c.setJointMotorControlArray(
                self.robot, self.finger_joints, pybullet.POSITION_CONTROL,
                targetPositions=[self.config.finger_opening] * n_fingers,
                forces=[_FINGER_FORCE] * n_fingers)
        self._release_arm_motors()
        target = (self.config.target.sample(self._rng) if target_position is None
                  else np.asarray(target_position, float))
        self.set_target(target)
        delay = round(self._dynamics.actuation_delay / self.config.dt)
        self._init_command_state(delay_steps=delay)
        self._steps = 0
        self._effort_integral = 0.0
        return self._target.copy()

    def _apply_dynamics(self, d: DynamicsParams) -> None:
        c = self._client
        masses = self._nominal_masses * d.link_mass_scale
        masses[self.hand_link] += d.payload_mass
        inertias = self._nominal_inertias * d.link_mass_scale  # payload: a point mass at the
        for link, mass in enumerate(masses):                  # hand's centre of mass
            if self._nominal_masses[link] > 0.0:
                # pass the inertia too: a mass-only change makes PyBullet recompute it from
                # the collision shape instead of keeping the URDF's
                c.changeDynamics(self.robot, link, mass=float(mass),
                                 localInertiaDiagonal=inertias[link].tolist())
        for joint in self.arm_joints:
            c.changeDynamics(self.robot, joint, jointDamping=d.joint_damping)
        force = [float(f) for f in d.external_force]
        self._external_force = force if any(force) else None

    def _apply_visual(self, v: VisualParams) -> None:
        c = self._client
        c.changeVisualShape(self.target_body, -1, rgbaColor=[*v.object_colour, 1.0])
        c.changeVisualShape(self.table, -1, rgbaColor=[*v.table_colour, 1.0])
        jitter = np.asarray(v.camera_pose_jitter)
        self._render_pose = self.camera.pose.perturbed(jitter[:3], jitter[3:])
        self._view_matrix = self._render_pose.view_matrix()
        self._projection = self.camera.projection_matrix()
        light = np.asarray(v.light_direction, float)
        self._light_direction = (light / np.linalg.norm(light)).tolist()

    def _release_arm_motors(self) -> None:
        """Velocity motors off except for joint friction (a zero-velocity motor whose
        force is the friction torque); arm torques then come from TORQUE_CONTROL."""
        friction = self._dynamics.joint_friction
        self._client.setJointMotorControlArray(
            self.robot, self.arm_joints, pybullet.VELOCITY_CONTROL,
            targetVelocities=[0.0] * len(self.arm_joints),
            forces=[friction] * len(self.arm_joints))
        self._motor_mode = _EFFORT

    def _init_command_state(self, delay_steps: int) -> None:
        n = len(self.arm_joints)
        self._ring = np.zeros((delay_steps + 1, n))
        self._ring_modes = np.zeros(delay_steps + 1, dtype=np.int64)
        self._ring_head = 0
        self._latest = np.zeros(n)
        self._latest_mode = _EFFORT
        self._primed = False
        self._applied_tau = np.zeros(n)
        self._tau_buffer = np.zeros(n)

    def set_target(self, position: np.ndarray) -> None:
        """Move the target sphere (and its post) to ``position`` (3,), m, base frame."""
        self._target = np.asarray(position, float).reshape(3).copy()
        c, identity = self._client, [0.0, 0.0, 0.0, 1.0]
        c.resetBasePositionAndOrientation(self.target_body, self._target.tolist(), identity)
        post_centre = [self._target[0], self._target[1],
                       self._target[2] - self._post_length / 2.0]
        c.resetBasePositionAndOrientation(self.post_body, post_centre, identity)

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
        if values.shape != self._latest.shape or not np.isfinite(values).all():
            raise ValueError(f"arm command must be {self._latest.shape[0]} finite values, got "
                             f"{values.tolist()}")
        self._latest[:] = values
        self._latest_mode = code
        if not self._primed:
            self._ring[:] = self._latest
            self._ring_modes[:] = code
            self._primed = True

    def step(self, n: int = 1) -> None:
        """Advance the physics by ``n`` steps, applying the delayed command each step."""
        step_simulation, tau, dt = self._client.stepSimulation, self._applied_tau, self.dt
        force = self._external_force
        for _ in range(n):
            self._push_and_apply()
            if force is not None:  # PyBullet clears external forces after every step
                com = self._client.getLinkState(self.robot, self.hand_link)[0]
                self._client.applyExternalForce(self.robot, self.hand_link, force, com,
                                                pybullet.WORLD_FRAME)
            step_simulation()
            self._effort_integral += float(tau @ tau) * dt
            self._steps += 1

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
            self._applied_tau[:] = tau
            c.setJointMotorControlArray(self.robot, self.arm_joints, pybullet.TORQUE_CONTROL,
                                        forces=tau.tolist())
            return
        forces = np.minimum(lim * strength, lim).tolist()
        if mode == _POSITION:
            target = np.clip(values, self.limits.lower, self.limits.upper).tolist()
            c.setJointMotorControlArray(self.robot, self.arm_joints, pybullet.POSITION_CONTROL,
                                        targetPositions=target, forces=forces)
        else:
            target = np.clip(values, -self.limits.velocity, self.limits.velocity).tolist()
            c.setJointMotorControlArray(self.robot, self.arm_joints, pybullet.VELOCITY_CONTROL,
                                        targetVelocities=target, forces=forces)
        self._motor_mode = mode
        self._applied_tau[:] = self._motor_torques()

    def _motor_torques(self) -> np.ndarray:
        states = self._client.getJointStates(self.robot, self.arm_joints)
        return np.array([s[3] for s in states])

    # ------------------------------------------------------------------ sensing
    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Measured arm state: positions (rad, with the episode's joint-state noise),
        velocities (rad/s) and the torques last applied (N·m), each (7,)."""
        states = self._client.getJointStates(self.robot, self.arm_joints)
        q = np.array([s[0] for s in states])
        qd = np.array([s[1] for s in states])
        noise = self._dynamics.joint_state_noise
        if noise > 0.0:
            q += self._rng.normal(0.0, noise, q.shape)
        return q, qd, self._applied_tau.copy()

    def true_joint_positions(self) -> np.ndarray:
        """Arm joint positions without measurement noise, rad (7,)."""
        states = self._client.getJointStates(self.robot, self.arm_joints)
        return np.array([s[0] for s in states])

    def pose_arm(self, positions: np.ndarray) -> None:
        """Place the arm joints at ``positions`` (7,), rad, at rest, without stepping
        (a kinematic copy of another world's arm, for rendering)."""
        c = self._client
        for joint, angle in zip(self.arm_joints, positions, strict=True):
            c.resetJointState(self.robot, joint, float(angle), 0.0)

    def grasp_point(self) -> np.ndarray:
        """Position of the grasp link (between the fingertips), m, base frame (3,)."""
        state = self._client.getLinkState(self.robot, self.grasp_link,
                                          computeForwardKinematics=1)
        return np.array(state[4])

    def link_mass(self, link_name: str) -> float:
        """Current mass of a robot link, kg (includes payload and mass scaling)."""
        return float(self._client.getDynamicsInfo(self.robot, self.link_index[link_name])[0])

    # ------------------------------------------------------------------ camera
    def camera_info(self) -> dict:
        """``sensor_msgs/CameraInfo`` fields of the scene camera (see
        :meth:`PinholeCamera.camera_info`)."""
        return self.camera.camera_info()

    def camera_pose(self) -> CameraPose:
        """Calibrated (published) pose of ``camera_optical_frame`` in the base frame."""
        return self.camera.pose

    def render_camera_pose(self) -> CameraPose:
        """Pose the image is actually rendered from (calibrated pose + episode jitter)."""
        return self._render_pose

    def render(self) -> np.ndarray:
        """RGB image from the scene camera, (H, W, 3) uint8, C-contiguous."""
        cfg = self.config.camera
        return self._render(cfg.width, cfg.height, self._view_matrix, self._projection)

    def render_wrist(self) -> np.ndarray:
        """RGB image from a camera on the hand looking along its z axis, (H, W, 3) uint8.

        Raises:
            RuntimeError: when ``WorldConfig.wrist_camera`` is off.
        """
        if not self.config.wrist_camera:
            raise RuntimeError("wrist camera disabled (WorldConfig.wrist_camera=False)")
        state = self._client.getLinkState(self.robot, self.hand_link,
                                          computeForwardKinematics=1)
        rot = np.asarray(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
        pose = CameraPose(np.asarray(state[4]) + rot[:, 2] * _WRIST_CAMERA_OFFSET, rot)
        cfg = self.config.camera
        return self._render(cfg.width, cfg.height, pose.view_matrix(), self._projection)

    def _render(self, width: int, height: int, view: list[float],
                projection: list[float]) -> np.ndarray:
        v = self._visual
        _, _, rgba, _, _ = self._client.getCameraImage(
            width, height, viewMatrix=view, projectionMatrix=projection,
            lightDirection=self._light_direction, lightColor=list(v.light_colour),
            shadow=0, flags=pybullet.ER_NO_SEGMENTATION_MASK, renderer=self._renderer)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
        if v.image_noise > 0.0:
            noisy = rgb + self._rng.normal(0.0, v.image_noise, rgb.shape)
            return np.clip(noisy, 0.0, 255.0).astype(np.uint8)
        return np.ascontiguousarray(rgb)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Disconnect the PyBullet client (idempotent)."""
        if getattr(self, "_client", None) is not None:
            try:
                self._client.disconnect()
            except pybullet.error:
                pass
            self._client = None

    def __enter__(self) -> ArmWorld:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

