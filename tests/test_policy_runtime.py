"""Policy feature builders, history window and ONNX runtime wrapper (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest

from visuomotor_core.policy_runtime import (
    HISTORY_DIM,
    OBSERVATION_DIM,
    HistoryBuffer,
    PolicyConfig,
    PolicyRuntime,
    action_to_targets,
    build_history_row,
    build_observation,
    layout_description,
)

Q = np.linspace(-0.3, 0.3, 7)
QD = np.linspace(0.1, 0.7, 7)


def test_observation_layout_matches_the_documented_fields():
    target, hand = np.array([0.5, 0.1, 0.2]), np.array([0.4, 0.0, 0.3])
    obs = build_observation(Q, QD, target, hand)
    assert obs.shape == (OBSERVATION_DIM,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[0:7], Q, atol=1e-7)
    np.testing.assert_allclose(obs[7:14], QD, atol=1e-7)
    np.testing.assert_allclose(obs[14:17], target, atol=1e-7)
    np.testing.assert_allclose(obs[17:20], hand, atol=1e-7)
    np.testing.assert_allclose(obs[20:23], target - hand, atol=1e-7)
    sizes = sum(f["size"] for f in layout_description()["observation"])
    assert sizes == OBSERVATION_DIM
    assert layout_description()["embedding_used"] is False


def test_history_row_shortfall_is_commanded_minus_achieved_displacement():
    previous = Q - 0.01
    commanded = np.full(7, 0.05)
    row = build_history_row(Q, QD, previous, commanded)
    assert row.shape == (HISTORY_DIM,)
    np.testing.assert_allclose(row[14:21], commanded, atol=1e-7)
    np.testing.assert_allclose(row[21:28], 0.04, atol=1e-6)


def test_history_first_push_fills_window_with_the_first_state():
    buf = HistoryBuffer(4)
    window = buf.push(Q, QD)
    assert window.shape == (4, HISTORY_DIM)
    for row in window:
        np.testing.assert_allclose(row[:7], Q, atol=1e-7)
        np.testing.assert_allclose(row[14:], 0.0)


def test_history_window_is_oldest_first_and_uses_the_recorded_command():
    buf = HistoryBuffer(3)
    buf.push(Q, QD)
    buf.record_command(np.full(7, 0.1))
    buf.push(Q + 0.08, QD)
    buf.record_command(np.full(7, 0.2))
    window = buf.push(Q + 0.1, QD)
    np.testing.assert_allclose(window[-1, :7], Q + 0.1, atol=1e-6)
    np.testing.assert_allclose(window[-2, :7], Q + 0.08, atol=1e-6)
    np.testing.assert_allclose(window[-1, 14:21], 0.2, atol=1e-6)
    np.testing.assert_allclose(window[-1, 21:28], 0.2 - 0.02, atol=1e-6)
    np.testing.assert_allclose(window[-2, 21:28], 0.1 - 0.08, atol=1e-6)
    buf.reset()
    assert buf.empty


def test_history_length_below_one_is_refused():
    with pytest.raises(ValueError, match="history length"):
        HistoryBuffer(0)


def test_action_to_targets_clips_the_action_to_unit_range():
    targets = action_to_targets(Q, np.array([2.0, -3.0, 0.5, 0, 0, 0, 0]), 0.15)
    np.testing.assert_allclose(targets[:3] - Q[:3], [0.15, -0.15, 0.075])


def test_policy_config_rejects_out_of_range_action_scale():
    with pytest.raises(ValueError, match="action_scale"):
        PolicyConfig(action_scale=0.0)


class _Io:
    def __init__(self, name):
        self.name = name


class _FakeSession:
    def __init__(self, inputs=("observation", "history"), action=None):
        self._inputs = inputs
        self.action = np.full((1, 7), 0.5, np.float32) if action is None else action
        self.feeds = None

    def get_inputs(self):
        return [_Io(n) for n in self._inputs]

    def get_outputs(self):
        return [_Io("action"), _Io("dynamics_latent")]

    def run(self, names, feeds):
        self.feeds = feeds
        return [self.action, np.ones((1, 8), np.float32)]


def _hand(q):
    return np.array([0.4, 0.0, 0.3])


def test_runtime_targets_are_q_plus_scaled_action_and_history_advances():
    session = _FakeSession()
    runtime = PolicyRuntime(session, _hand, PolicyConfig(action_scale=0.1, history_length=5))
    out = runtime(Q, QD, np.array([0.5, 0.0, 0.2]))
    np.testing.assert_allclose(out.targets, Q + 0.05)
    assert out.latent.shape == (8,)
    assert session.feeds["history"].shape == (1, 5, HISTORY_DIM)
    runtime(Q, QD, np.array([0.5, 0.0, 0.2]))
    np.testing.assert_allclose(session.feeds["history"][0, -1, 14:21], 0.05, atol=1e-6)


def test_runtime_uses_a_grasp_point_the_caller_already_computed():
    session = _FakeSession()
    runtime = PolicyRuntime(session, _hand, PolicyConfig())
    target = np.array([0.5, 0.0, 0.2])
    runtime(Q, QD, target)
    computed = session.feeds["observation"].copy()
    np.testing.assert_allclose(computed[0, 17:20], _hand(Q))
    runtime(Q, QD, target, hand=np.array([0.1, 0.2, 0.3]))  # observation layout: hand 17:20
    np.testing.assert_allclose(session.feeds["observation"][0, 17:20], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(session.feeds["observation"][0, 20:23], target - [0.1, 0.2, 0.3])


def test_runtime_refuses_non_finite_model_output():
    session = _FakeSession(action=np.full((1, 7), np.nan, np.float32))
    runtime = PolicyRuntime(session, _hand, PolicyConfig())
    with pytest.raises(FloatingPointError, match="action"):
        runtime(Q, QD, np.zeros(3))


def test_runtime_feeds_memoryless_model_without_history_input():
    session = _FakeSession(inputs=("observation",))
    runtime = PolicyRuntime(session, _hand, PolicyConfig())
    runtime(Q, QD, np.zeros(3))
    assert set(session.feeds) == {"observation"} and not runtime.uses_history


def test_runtime_rejects_model_with_unexpected_inputs():
    with pytest.raises(ValueError, match="inputs"):
        PolicyRuntime(_FakeSession(inputs=("image",)), _hand, PolicyConfig())


def test_goal_filter_freezes_near_the_hand_smooths_away_and_jumps_to_new_targets():
    from visuomotor_core.policy_runtime import GoalFilter

    f = GoalFilter(smoothing=0.5, freeze_radius=0.15, jump_distance=0.1)
    far_hand = np.array([0.0, 0.0, 0.8])
    target = np.array([0.5, 0.0, 0.2])
    np.testing.assert_allclose(f.update(target, far_hand), target)  # first estimate
    dx = np.array([0.01, 0.0, 0.0])
    np.testing.assert_allclose(f.update(target + 2 * dx, far_hand), target + dx)
    goal = f.goal
    # Hand at the target: a shifted estimate (occlusion) leaves the goal untouched.
    np.testing.assert_allclose(f.update(goal + np.array([-0.03, 0.0, 0.03]), goal), goal)
    # A new target far away is taken at once, hand near or not.
    moved = np.array([0.4, 0.2, 0.3])
    np.testing.assert_allclose(f.update(moved, goal), moved)
    f.reset()
    assert f.goal is None
    with pytest.raises(ValueError):
        GoalFilter(smoothing=0.0)
