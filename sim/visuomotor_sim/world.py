"""PyBullet world: an arm on a table, a visual-only target and a fixed RGB camera.

:class:`ArmWorld` owns one PyBullet client (DIRECT, or GUI on request), its physics
(rate, gravity, stepping, the saved initial state an episode starts from) and the episode
random stream, and composes the parts, one job each:

* :class:`~visuomotor_sim.robot.SimRobot` (:mod:`visuomotor_sim.robot`) – the arm its
  robot description names (``WorldConfig.robot``, default the Franka Panda): URDF,
  joints, limits, episode dynamics, actuators with their delay line, joint sensing;
* :class:`~visuomotor_sim.scene.Scene` (:mod:`visuomotor_sim.scene`) – the table and the
  target sphere with its post, their colours;
* :class:`~visuomotor_sim.rendering.SceneRenderer` (:mod:`visuomotor_sim.rendering`) –
  the camera's render pose, view and projection, lighting, images.

Only the world and its parts talk to PyBullet. Frames: the world frame *is* the robot base
frame (the description's ``base_frame``; base fixed at the origin, identity orientation);
the table top is the plane z = 0. Units are SI throughout (m, rad, s, kg, N·m).

Commands go through a delay line of whole physics steps (``DynamicsParams.actuation_delay``)
and are always clamped to the URDF effort limit of each joint before they reach PyBullet.
The names the parts' modules define that callers import from here (``ARM_JOINT_NAMES``,
``COMMAND_MODES``, ``JointLimits``, ``TargetConfig``, ``robot_urdf_path``, ``sim_urdf``)
are importable from here as well.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from visuomotor_core.robot_description import DEFAULT_ROBOT, RobotDescription, load_robot
from visuomotor_sim.camera import CameraConfig, CameraPose
from visuomotor_sim.randomization import DynamicsParams, VisualParams
from visuomotor_sim.rendering import SceneRenderer, wrist_camera_pose
from visuomotor_sim.robot import (
    ARM_JOINT_NAMES,
    COMMAND_MODES,
    JointLimits,
    SimRobot,
    robot_urdf_path,
    sim_urdf,
)
from visuomotor_sim.scene import Scene, TargetConfig

__all__ = [
    "ARM_JOINT_NAMES",
    "COMMAND_MODES",
    "ArmWorld",
    "JointLimits",
    "TargetConfig",
    "WorldConfig",
    "robot_urdf_path",
    "sim_urdf",
]


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


class ArmWorld:
    """One PyBullet client holding the arm, a table, a target and a camera.

    Call :meth:`reset` before stepping. Typical loop at the physics rate::

        q, qd, tau = world.joint_state()
        world.apply_command(torques, "effort")
        world.step()

    Attributes:
        config: the world's configuration.
        arm, scene, renderer: the parts (robot, table and target, rendering).
        robot, table, target_body, post_body: PyBullet body ids.
        camera: the scene camera (intrinsics and calibrated pose).
        arm_joints, finger_joints, link_index, hand_link, grasp_link, limits: the arm's
            joint and link indices and URDF limits (see :class:`SimRobot`).
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = cfg = config or WorldConfig()
        self._client = c = _connect(cfg.gui)
        self._step_simulation = c.stepSimulation  # bound once (see SimRobot)
        self.renderer = SceneRenderer(c, cfg.camera, cfg.use_egl)
        self.camera = self.renderer.camera
        c.setPhysicsEngineParameter(fixedTimeStep=cfg.dt, deterministicOverlappingPairs=1)
        c.setGravity(0.0, 0.0, -cfg.gravity)
        self.arm = SimRobot(c, cfg.description, cfg.robot_visual)
        self.scene = Scene(c, cfg.table_half_extents, cfg.table_centre_xy, cfg.target)
        arm, scene = self.arm, self.scene
        self.robot = arm.body
        self.arm_joints, self.finger_joints = arm.arm_joints, arm.finger_joints
        self.link_index, self.hand_link, self.grasp_link = (
            arm.link_index, arm.hand_link, arm.grasp_link)
        self.limits = arm.limits
        self.table, self.target_body, self.post_body = (
            scene.table, scene.target_body, scene.post_body)
        self._initial_state = c.saveState()
        self._dynamics = DynamicsParams()
        self._visual = VisualParams()
        self._rng = np.random.default_rng(0)
        self._steps = 0
        self._effort_integral = 0.0

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
        return self.scene.target_position

    @property
    def effort_integral(self) -> float:
        """Integral of the sum of squared applied arm torques since reset, N²·m²·s."""
        return self._effort_integral

    @property
    def delay_steps(self) -> int:
        """Actuation delay in whole physics steps."""
        return self.arm.delay_steps

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
        cfg = self.config
        self._client.restoreState(self._initial_state)
        self._rng = np.random.default_rng(seed)
        self._dynamics = dynamics or DynamicsParams()
        self._visual = visual or VisualParams()
        self.arm.apply_dynamics(self._dynamics)
        self.scene.apply_visual(self._visual)
        self.renderer.apply_visual(self._visual)
        self.arm.reset_pose(np.asarray(cfg.home_q), cfg.home_noise_std, cfg.finger_opening,
                            self._rng)
        target = (cfg.target.sample(self._rng) if target_position is None
                  else np.asarray(target_position, float))
        self.set_target(target)
        self.arm.reset_commands(delay_steps=round(self._dynamics.actuation_delay / cfg.dt))
        self._steps = 0
        self._effort_integral = 0.0
        return self.scene.target_position

    def set_target(self, position: np.ndarray) -> None:
        """Move the target sphere (and its post) to ``position`` (3,), m, base frame."""
        self.scene.set_target(position)

    # ------------------------------------------------------------------ commands
    def apply_command(self, values: np.ndarray, mode: str = "effort") -> None:
        """Queue an arm command (:meth:`visuomotor_sim.robot.SimRobot.apply_command`)."""
        self.arm.apply_command(values, mode)

    def step(self, n: int = 1) -> None:
        """Advance the physics by ``n`` steps, applying the delayed command each step."""
        step_simulation, actuate, dt = self._step_simulation, self.arm.actuate, self.dt
        tau = self.arm.applied_tau
        for _ in range(n):
            actuate()
            step_simulation()
            self._effort_integral += float(tau @ tau) * dt
            self._steps += 1

    # ------------------------------------------------------------------ sensing
    def joint_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Measured arm state: positions (rad, with the episode's joint-state noise),
        velocities (rad/s) and the torques last applied (N·m), each (7,)."""
        return self.arm.joint_state(self._rng)

    def true_joint_positions(self) -> np.ndarray:
        """Arm joint positions without measurement noise, rad (7,)."""
        return self.arm.true_joint_positions()

    def pose_arm(self, positions: np.ndarray) -> None:
        """Place the arm joints at ``positions`` (7,), rad, at rest, without stepping
        (a kinematic copy of another world's arm, for rendering)."""
        self.arm.pose_arm(positions)

    def grasp_point(self) -> np.ndarray:
        """Position of the grasp link (between the fingertips), m, base frame (3,)."""
        return self.arm.grasp_point()

    def link_mass(self, link_name: str) -> float:
        """Current mass of a robot link, kg (includes payload and mass scaling)."""
        return self.arm.link_mass(link_name)

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
        return self.renderer.render_pose

    def render(self) -> np.ndarray:
        """RGB image from the scene camera, (H, W, 3) uint8, C-contiguous."""
        return self.renderer.render(self._rng)

    def render_wrist(self) -> np.ndarray:
        """RGB image from a camera on the hand looking along its z axis, (H, W, 3) uint8.

        Raises:
            RuntimeError: when ``WorldConfig.wrist_camera`` is off.
        """
        if not self.config.wrist_camera:
            raise RuntimeError("wrist camera disabled (WorldConfig.wrist_camera=False)")
        return self.renderer.render_from(wrist_camera_pose(*self.arm.hand_pose()), self._rng)

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
