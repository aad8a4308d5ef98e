"""State-only reach episodes for policy training and evaluation, on ``VisualReachEnv``.

:class:`ReachSim` drives ``visuomotor_sim.env.VisualReachEnv`` with rendering off: each step
holds one policy action for one policy period while the project's ``JointController``
(PD + gravity compensation of the *nominal* model) runs at the physics rate,
``q_target = q + clip(action, -1, 1) * action_scale``. The target the policy sees is the
env's estimate (true target plus per-episode Gaussian noise, a stand-in for the encoder);
the expert gets the true target and the episode's dynamics (privileged).

Episodes are fully determined by ``(profile, seed)``, so every policy evaluated with the same
seeds meets the same targets, target-estimate errors and dynamics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visuomotor_core.policy_features import DEFAULT_ACTION_SCALE
from visuomotor_core.robot_model import RobotModel
from visuomotor_sim.env import EnvConfig, VisualReachEnv
from visuomotor_sim.randomization import DynamicsParams
from visuomotor_sim.task import TaskConfig


@dataclass(frozen=True)
class SimConfig:
    """Episode settings.

    Attributes:
        policy_hz: policy (camera) rate, Hz.
        action_scale: rad per unit action.
        target_noise_std: per-axis std of the per-episode error of the target estimate, m.
        tolerance, dwell, timeout: success radius (m), hold time (s), episode length (s).
        randomization_path: YAML with the randomization profiles (None: the shipped one).
    """

    policy_hz: float = 20.0
    action_scale: float = DEFAULT_ACTION_SCALE
    target_noise_std: float = 0.005
    tolerance: float = 0.02
    dwell: float = 0.3
    timeout: float = 5.0
    randomization_path: str | None = None

    def __post_init__(self) -> None:
        if self.policy_hz <= 0.0 or self.action_scale <= 0.0 or self.timeout <= self.dwell:
            raise ValueError("SimConfig: policy_hz, action_scale > 0 and timeout > dwell needed")
        if self.target_noise_std < 0.0 or self.tolerance <= 0.0:
            raise ValueError("SimConfig: target_noise_std >= 0 and tolerance > 0 needed")


@dataclass
class EpisodeResult:
    """Outcome of one episode: success, final error (m), time to success (s, NaN if none)."""

    success: bool
    final_error: float
    time_to_success: float
    steps: int


class ReachSim:
    """State-only VisualReachEnv instances (one per profile) behind a small stepping API."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self._envs: dict[str, VisualReachEnv] = {}
        self.env = self._env("nominal")
        self._info: dict = {}
        self._ended = False
        self._steps = 0
        self._model: RobotModel | None = None

    def _env(self, profile: str) -> VisualReachEnv:
        if profile not in self._envs:
            c = self.config
            self._envs[profile] = VisualReachEnv(EnvConfig(
                policy_hz=c.policy_hz, action_scale=c.action_scale, render_images=False,
                target_noise_std=c.target_noise_std, profile=profile,
                randomization_path=c.randomization_path,
                task=TaskConfig(tolerance=c.tolerance, dwell=c.dwell, timeout=c.timeout)))
        return self._envs[profile]

    @property
    def model(self) -> RobotModel:
        """The nominal robot model (same URDF as the controller's), for forward kinematics."""
        if self._model is None:
            self._model = RobotModel.from_description(self.env.config.world.description)
        return self._model

    @property
    def kp(self) -> np.ndarray:
        return np.asarray(self.env.controller.config.kp, float)

    @property
    def dynamics(self) -> DynamicsParams:
        return self.env.world.dynamics

    @property
    def target(self) -> np.ndarray:
        """True target, m, base frame (privileged)."""
        return self.env.world.target_position

    @property
    def target_estimate(self) -> np.ndarray:
        """What the policy sees: the noisy target estimate, m, base frame."""
        return self._obs["target"].astype(np.float64)

    def reset(self, profile: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Start the episode ``(profile, seed)``; returns the measured (q, qd)."""
        self.env = self._env(profile)
        self._obs, self._info = self.env.reset(seed=seed)
        self._ended, self._steps = False, 0
        return self._state()

    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        proprio = self._obs["proprio"].astype(np.float64)
        return proprio[:7], proprio[7:14]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply one policy action (relative to the measured q); returns the new (q, qd)."""
        self._obs, _, terminated, truncated, self._info = self.env.step(action)
        self._ended = bool(terminated or truncated)
        self._steps += 1
        return self._state()

    @property
    def success(self) -> bool:
        return bool(self._info.get("success", False))

    @property
    def done(self) -> bool:
        return self._ended

    def result(self) -> EpisodeResult:
        tts = self._info.get("time_to_success")
        return EpisodeResult(self.success, float(self._info["error"]),
                             float("nan") if tts is None else float(tts), self._steps)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
