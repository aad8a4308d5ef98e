"""Gymnasium env: reach a visually presented target with joint-target residual actions.

``VisualReachEnv`` (id ``visuomotor/VisualReach-v0``) composes the parts without owning
their logic: :class:`ArmWorld` (physics, camera), :class:`DomainRandomizer` (episode
parameters), :class:`ReachTask` (success, timeout, effort) and the project's
``visuomotor_core`` :class:`JointController` (interpolation, PD + gravity compensation,
limits) running at the physics rate.

One env step = one policy period (default 1/20 s = the camera rate):

1. ``q_target = q_measured + clip(action, -1, 1) * action_scale`` (rad) goes to the
   controller's ``set_target``;
2. for every physics step of the period the controller turns the measured state into a
   command and the world applies it (through the episode's actuation delay);
3. the task is evaluated and the next observation is assembled.

Observation (``Dict``):

* ``image`` — (H, W, 3) uint8 camera frame; present when ``render_images`` is on.
* ``proprio`` — float32 (21,): measured q (rad), qd (rad/s), previous action (clipped).
* ``target`` — float32 (3,): target position estimate, m, base frame: the true centre plus
  Gaussian noise of ``target_noise_std`` drawn once per episode (a correlated estimate
  error standing in for the vision encoder's); present by
  default when images are off (state-only training), configurable with ``include_target``.

Reward: ``-distance_weight * error`` (m) each step, plus ``success_bonus`` on the step that
completes the dwell. ``terminated`` on success, ``truncated`` on the task timeout.
``info``: ``success``, ``error`` (m), ``time`` (s), ``time_to_success`` (s, None before success),
``effort`` (N²·m²·s), ``dynamics`` (privileged vector, see
:meth:`DynamicsParams.as_vector`), ``true_target`` (m).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from visuomotor_sim import ENV_ID  # noqa: F401 - re-exported; registered on package import
from visuomotor_sim.randomization import (
    DYNAMICS_VECTOR_FIELDS,
    DomainRandomizer,
    load_profile,
)
from visuomotor_sim.robot import ARM_JOINT_NAMES
from visuomotor_sim.task import ReachTask, TaskConfig, TaskStatus
from visuomotor_sim.world import ArmWorld, WorldConfig

N_JOINTS = len(ARM_JOINT_NAMES)
PROPRIO_SIZE = 3 * N_JOINTS
_SEED_LIMIT = 2**31 - 1
_Q_BOUND = 2.0 * np.pi  # rad, observation-space bound on joint positions
_QD_BOUND = 50.0  # rad/s, observation-space bound on joint velocities
_TARGET_BOUND = 2.0  # m, observation-space bound on target coordinates


@dataclass(frozen=True)
class RewardConfig:
    """Reward shaping.

    Attributes:
        distance_weight: penalty per metre of grasp-point error, per step.
        success_bonus: added once when the dwell completes.
        action_weight: penalty on the squared norm of the (clipped) action, per step.
    """

    distance_weight: float = 1.0
    success_bonus: float = 10.0
    action_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("distance_weight", "success_bonus", "action_weight"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class EnvConfig:
    """Everything that defines a ``VisualReachEnv``.

    Attributes:
        policy_hz: env steps per simulated second; must divide ``world.physics_hz``.
        action_scale: joint-target residual per unit action, rad.
        render_images: render the camera into ``obs["image"]`` every step.
        include_target: put the noisy target in the observation (None: when images are off).
        target_noise_std: std of the noise on ``obs["target"]``, m (per axis).
        profile: randomization profile name (see ``sim/config/randomization.yaml``).
        randomization_path: YAML with the profiles (None: the shipped one).
        world, task, reward: the parts' configurations.
    """

    policy_hz: float = 20.0
    action_scale: float = 0.15
    render_images: bool = True
    include_target: bool | None = None
    target_noise_std: float = 0.01
    profile: str = "nominal"
    randomization_path: str | None = None
    world: WorldConfig = field(default_factory=WorldConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if self.policy_hz <= 0.0:
            raise ValueError(f"EnvConfig.policy_hz must be > 0, got {self.policy_hz}")
        ratio = self.world.physics_hz / self.policy_hz
        if ratio < 1.0 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"EnvConfig.policy_hz ({self.policy_hz} Hz) must divide the "
                             f"physics rate ({self.world.physics_hz} Hz)")
        if not 0.0 < self.action_scale <= 1.0:
            raise ValueError(f"EnvConfig.action_scale must be in (0, 1] rad, got "
                             f"{self.action_scale}")
        if self.target_noise_std < 0.0:
            raise ValueError(f"EnvConfig.target_noise_std must be >= 0 m, got "
                             f"{self.target_noise_std}")
        if not self.render_images and self.include_target is False:
            raise ValueError("EnvConfig: with render_images=False the target must be "
                             "observed (include_target cannot be False)")

    @property
    def steps_per_action(self) -> int:
        """Physics steps per env step."""
        return round(self.world.physics_hz / self.policy_hz)

    @property
    def observe_target(self) -> bool:
        return (not self.render_images) if self.include_target is None else self.include_target


def _make_controller(world: WorldConfig):
    """The project's joint controller for the world's robot (its description's model and
    default gains), running at the physics rate."""
    from visuomotor_core.controller import JointController
    from visuomotor_core.controller_config import ControllerConfig
    from visuomotor_core.robot_model import RobotModel

    robot = world.description
    model = RobotModel.from_description(robot)
    return JointController(ControllerConfig.for_robot(robot, rate_hz=world.physics_hz), model)


class VisualReachEnv(gym.Env):
    """Reach task on the simulated arm (see the module docstring for the contract).

    Args:
        config: the env configuration (default: images on, nominal dynamics).
        render_mode: ``None`` or ``"rgb_array"`` (the scene camera image).
        **overrides: fields of :class:`EnvConfig` to replace (handy with ``gym.make``).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None,
                 **overrides) -> None:
        super().__init__()
        config = config or EnvConfig()
        self.config = replace(config, **overrides) if overrides else config
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.policy_hz}
        self.world = ArmWorld(self.config.world)
        self.task = ReachTask(self.config.task, self.world.grasp_point,
                              lambda: self.world.effort_integral)
        self.controller = _make_controller(self.config.world)
        path = Path(self.config.randomization_path) if self.config.randomization_path else None
        self._profile = load_profile(self.config.profile, path)
        self.action_space = spaces.Box(-1.0, 1.0, (N_JOINTS,), np.float32)
        self.observation_space = self._observation_space()
        self._prev_action = np.zeros(N_JOINTS, np.float32)
        self._q = np.zeros(N_JOINTS)
        self._qd = np.zeros(N_JOINTS)
        self._frame: np.ndarray | None = None
        self._target_estimate = np.zeros(3, np.float32)
        self._status: TaskStatus | None = None

    def _observation_space(self) -> spaces.Dict:
        cfg, cam = self.config, self.config.world.camera
        entries: dict[str, spaces.Space] = {}
        if cfg.render_images:
            entries["image"] = spaces.Box(0, 255, (cam.height, cam.width, 3), np.uint8)
        bound = np.concatenate([np.full(N_JOINTS, _Q_BOUND), np.full(N_JOINTS, _QD_BOUND),
                                np.ones(N_JOINTS)]).astype(np.float32)
        entries["proprio"] = spaces.Box(-bound, bound, dtype=np.float32)
        if cfg.observe_target:
            entries["target"] = spaces.Box(-_TARGET_BOUND, _TARGET_BOUND, (3,), np.float32)
        return spaces.Dict(entries)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode. ``options``: ``{"target_position": (3,) m}`` fixes the target."""
        super().reset(seed=seed)
        options = options or {}
        randomizer = DomainRandomizer(self._profile, self.np_random)
        dynamics, visual = randomizer.sample()
        world_seed = int(self.np_random.integers(0, _SEED_LIMIT))
        target = self.world.reset(world_seed, dynamics=dynamics, visual=visual,
                                  target_position=options.get("target_position"))
        now = self.world.time
        self._q, self._qd, _ = self.world.joint_state()
        self.controller.reset()
        self.controller.activate()
        self.controller.set_target(self._q, now, now)
        self._prev_action[:] = 0.0
        self._target_estimate = self._noisy_target(target)
        self._status = self.task.reset(target, now)
        return self._observation(), self._info()

    def step(self, action):
        clipped = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        now = self.world.time
        q_target = self._q + clipped.astype(np.float64) * self.config.action_scale
        self.controller.set_target(q_target, now, now)
        self._run_control_period()
        self._prev_action[:] = clipped
        was_success = self._status.success
        self._status = self.task.update(self.world.time)
        newly_succeeded = self._status.success and not was_success
        reward = self._reward(clipped, newly_succeeded)
        return (self._observation(), reward, self._status.success, self._status.timed_out,
                self._info())

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._frame is not None and self.config.render_images:
            return self._frame.copy()
        return self.world.render()

    def close(self) -> None:
        self.world.close()

    # ------------------------------------------------------------------ internals
    def _run_control_period(self) -> None:
        world, ctrl = self.world, self.controller
        for _ in range(self.config.steps_per_action):
            now = world.time
            q, qd, _ = world.joint_state()
            command = ctrl.update(now, q, qd, now)
            if command.valid:
                world.apply_command(command.values, command.interface)
            world.step()
        self._q, self._qd, _ = world.joint_state()

    def _noisy_target(self, target: np.ndarray) -> np.ndarray:
        noise = self.np_random.normal(0.0, self.config.target_noise_std, 3)
        return (target + noise).astype(np.float32)

    def _reward(self, action: np.ndarray, newly_succeeded: bool) -> float:
        r = self.config.reward
        reward = -r.distance_weight * self._status.error
        reward -= r.action_weight * float(action @ action)
        if newly_succeeded:
            reward += r.success_bonus
        return float(reward)

    def _observation(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        if self.config.render_images:
            self._frame = self.world.render()
            obs["image"] = self._frame
        obs["proprio"] = np.concatenate([self._q, self._qd, self._prev_action]).astype(
            np.float32)
        if self.config.observe_target:
            obs["target"] = self._target_estimate.copy()
        return obs

    def _info(self) -> dict:
        s = self._status
        return {
            "success": s.success,
            "error": s.error,
            "time": s.time,
            "time_to_success": s.time_to_success,
            "effort": s.effort,
            "dynamics": self.world.dynamics.as_vector(),
            "dynamics_fields": DYNAMICS_VECTOR_FIELDS,
            "true_target": self.world.target_position,
        }

