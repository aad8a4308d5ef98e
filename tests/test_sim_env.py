"""Gymnasium env: API conformance in both modes, determinism, action semantics, reward."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import visuomotor_core.controller  # noqa: F401
from visuomotor_sim.env import ENV_ID, EnvConfig, VisualReachEnv
from visuomotor_sim.randomization import DYNAMICS_VECTOR_DIM
from visuomotor_sim.task import TaskConfig


@pytest.fixture(scope="module")
def state_env():
    env = VisualReachEnv(EnvConfig(render_images=False))
    yield env
    env.close()


@pytest.mark.parametrize("render_images", [True, False], ids=["image", "state_only"])
def test_env_passes_gymnasium_check_env(render_images):
    env = VisualReachEnv(EnvConfig(render_images=render_images), render_mode="rgb_array")
    try:
        check_env(env, skip_render_check=False)
    finally:
        env.close()


def test_registered_id_makes_the_env():
    env = gym.make(ENV_ID, render_images=False)
    try:
        obs, info = env.reset(seed=0)
        assert set(obs) == {"proprio", "target"}
        assert {"success", "error", "dynamics", "true_target"} <= set(info)
    finally:
        env.close()


def test_observation_keys_follow_the_mode():
    with VisualReachEnv(EnvConfig(render_images=True)) as env:
        obs, _ = env.reset(seed=0)
        assert set(obs) == {"image", "proprio"}
        assert obs["image"].shape == (128, 128, 3) and obs["image"].dtype == np.uint8


def test_same_seed_same_episode(state_env):
    def episode(seed):
        obs, _ = state_env.reset(seed=seed)
        rng = np.random.default_rng(0)
        trace = [obs["proprio"]]
        for _ in range(5):
            obs, reward, *_ = state_env.step(rng.uniform(-1, 1, 7).astype(np.float32))
            trace.append(np.append(obs["proprio"], reward))
        return np.concatenate(trace)

    np.testing.assert_array_equal(episode(3), episode(3))
    assert not np.array_equal(episode(3), episode(4))


def test_zero_action_holds_the_arm_and_residual_moves_it(state_env):
    obs, _ = state_env.reset(seed=1)
    q0 = obs["proprio"][:7].copy()
    for _ in range(4):
        obs, *_ = state_env.step(np.zeros(7, np.float32))
    assert np.max(np.abs(obs["proprio"][:7] - q0)) < 0.02
    action = np.zeros(7, np.float32)
    action[0] = 1.0
    for _ in range(6):
        obs, *_ = state_env.step(action)
    assert obs["proprio"][0] - q0[0] > 0.3  # 6 steps of +0.15 rad targets on joint 1
    np.testing.assert_array_equal(obs["proprio"][14:], action)


def test_target_observation_is_noisy_true_target(state_env):
    errors = []
    for seed in range(20):
        obs, info = state_env.reset(seed=seed)
        errors.append(obs["target"] - info["true_target"])
    std = np.std(errors)
    assert 0.005 < std < 0.02


def test_reaching_the_target_terminates_with_bonus():
    config = EnvConfig(render_images=False, target_noise_std=0.0,
                       task=TaskConfig(tolerance=0.05, dwell=0.1, timeout=5.0))
    with VisualReachEnv(config) as env:
        env.reset(seed=0)
        # put the target where the grasp point already is: success after the dwell
        env.reset(seed=0, options={"target_position": env.world.grasp_point()})
        rewards, terminated, truncated = [], False, False
        while not (terminated or truncated):
            _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
            rewards.append(reward)
        assert terminated and not truncated and info["success"]
        assert rewards[-1] > 5.0 and info["time_to_success"] <= 0.2 + 1e-9
        assert env.reset(seed=0)[1]["time_to_success"] is None


def test_timeout_truncates():
    config = EnvConfig(render_images=False, task=TaskConfig(dwell=0.1, timeout=0.5))
    with VisualReachEnv(config) as env:
        env.reset(seed=0, options={"target_position": np.array([0.6, 0.2, 0.1])})
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            _, reward, terminated, truncated, info = env.step(np.zeros(7, np.float32))
            steps += 1
            assert reward < 0.0
        assert truncated and not terminated and steps == 10 and not info["success"]


def test_randomized_profile_reports_privileged_dynamics():
    with VisualReachEnv(EnvConfig(render_images=False, profile="training")) as env:
        vectors = [env.reset(seed=s)[1]["dynamics"] for s in range(3)]
    assert vectors[0].shape == (DYNAMICS_VECTOR_DIM,) and not np.array_equal(vectors[0], vectors[1])


def test_config_rejects_rate_that_does_not_divide_physics():
    with pytest.raises(ValueError, match="must divide"):
        EnvConfig(policy_hz=30.0)
    with pytest.raises(ValueError, match="include_target"):
        EnvConfig(render_images=False, include_target=False)


def jacobian_expert(env: VisualReachEnv, target: np.ndarray) -> np.ndarray:
    """Damped least-squares step of the grasp point towards ``target`` as a residual action."""
    world = env.world
    q = world.true_joint_positions().tolist() + [world.config.finger_opening] * 2
    zeros = [0.0] * len(q)
    linear, _ = world.client.calculateJacobian(world.robot, world.grasp_link, [0.0] * 3, q,
                                               zeros, zeros)
    jac = np.array(linear)[:, :7]
    error = target - world.grasp_point()
    dq = jac.T @ np.linalg.solve(jac @ jac.T + 1e-3 * np.eye(3), error)
    return np.clip(dq / env.config.action_scale, -1.0, 1.0).astype(np.float32)


def test_residual_actions_can_solve_the_nominal_task():
    with VisualReachEnv(EnvConfig(render_images=False, target_noise_std=0.0)) as env:
        for seed in range(3):
            _, info = env.reset(seed=seed)
            terminated = truncated = False
            while not (terminated or truncated):
                _, _, terminated, truncated, info = env.step(
                    jacobian_expert(env, info["true_target"]))
            assert info["success"], f"seed {seed}: final error {info['error']:.3f} m"
            assert info["time_to_success"] < 2.0
