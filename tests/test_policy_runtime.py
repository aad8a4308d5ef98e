"""Policy feature builders and history window, sag estimator, goal filter and integrator, and
the ONNX runtime wrapper that composes them (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visuomotor_core import policy_runtime
from visuomotor_core.goal_filter import GoalFilter, GoalIntegrator, GoalIntegratorConfig
from visuomotor_core.policy_features import (
    HISTORY_DIM,
    OBSERVATION_DIM,
    HistoryBuffer,
    action_to_targets,
    build_history_row,
    build_observation,
    layout_description,
)
from visuomotor_core.policy_runtime import PolicyConfig, PolicyRuntime
from visuomotor_core.sag_estimator import SagEstimator, SagEstimatorConfig

Q = np.linspace(-0.3, 0.3, 7)
QD = np.linspace(0.1, 0.7, 7)


def test_policy_runtime_still_exports_the_names_its_parts_moved_out_with():
    """Callers that import the features, the sag estimator or the goal filter from
    ``policy_runtime`` (as before those moved to their own modules) get the same objects."""
    from visuomotor_core import goal_filter, policy_features, sag_estimator

    for module in (policy_features, sag_estimator, goal_filter):
        for name in (n for n in vars(module) if n in policy_runtime.__all__):
            assert getattr(policy_runtime, name) is getattr(module, name), name
    assert {"GoalFilter", "SagEstimator", "HistoryBuffer", "PAYLOAD_COM", "gains_mismatch",
            "load_policy_runtime"} <= set(policy_runtime.__all__)
    assert all(hasattr(policy_runtime, name) for name in policy_runtime.__all__)


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


def test_goal_filter_ignores_unconfident_estimates_once_it_has_a_goal():
    f = GoalFilter(smoothing=0.5, freeze_radius=0.15, jump_distance=0.1, min_confidence=0.5)
    far_hand = np.array([0.0, 0.0, 0.8])
    target = np.array([0.5, 0.0, 0.2])
    f.update(target, far_hand, confidence=1.0)
    step = np.array([0.01, 0.0, 0.0])
    for estimate, confidence in ((target + 5 * step, 0.49),  # would smooth
                                 (np.array([0.3, 0.3, 0.3]), 0.0),  # would jump
                                 (target + 2 * step, float("nan")),
                                 (np.array([np.nan, 0.0, 0.2]), 1.0)):
        np.testing.assert_allclose(f.update(estimate, far_hand, confidence), target)


def test_goal_filter_starts_from_an_unconfident_estimate_until_a_confident_one_comes():
    f = GoalFilter(smoothing=0.3, jump_distance=0.1)
    hand = np.array([0.0, 0.0, 0.8])
    guess = np.array([0.5, 0.0, 0.2])
    np.testing.assert_allclose(f.update(guess, hand, confidence=0.1), guess)  # can act
    step = np.array([0.01, 0.0, 0.0])
    np.testing.assert_allclose(f.update(guess + 5 * step[::-1], hand, 0.2), guess)
    seen = guess + 3 * step  # within jump_distance, but the first confident estimate
    np.testing.assert_allclose(f.update(seen, hand, confidence=0.9), seen)
    np.testing.assert_allclose(f.update(seen + 2 * step, hand, 0.9),
                               seen + 0.3 * 0.9 * 2 * step)
    with pytest.raises(ValueError, match="non-finite"):
        GoalFilter().update(np.array([np.nan, 0.0, 0.0]), hand)
    with pytest.raises(ValueError, match="min_confidence"):
        GoalFilter(min_confidence=1.5)
    assert GoalFilter().smoothing == 0.3 and GoalFilter().min_confidence == 0.5


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(
    st.tuples(*[st.floats(-0.2, 0.2)] * 3), st.floats(0.0, 1.0),
    st.tuples(*[st.floats(-0.5, 0.5)] * 3)), min_size=1, max_size=30))
def test_goal_filter_steps_by_smoothing_times_confidence_and_never_on_doubt(steps):
    """Every update: an unconfident estimate leaves a goal where it is; a confident one
    moves the goal by ``smoothing * confidence`` of the way, jumps to it, or (hand near)
    leaves it."""
    f = GoalFilter(smoothing=0.3, freeze_radius=0.15, jump_distance=0.1, min_confidence=0.5)
    base = np.array([0.5, 0.0, 0.2])
    f.update(base, base + 1.0, confidence=1.0)
    for offset, confidence, hand_offset in steps:
        before = f.goal
        estimate, hand = base + np.array(offset), base + np.array(hand_offset)
        after = f.update(estimate, hand, confidence)
        if confidence < 0.5:
            np.testing.assert_array_equal(after, before)
        elif np.linalg.norm(estimate - before) > 0.1:
            np.testing.assert_array_equal(after, estimate)
        elif np.linalg.norm(hand - before) < 0.15:
            np.testing.assert_array_equal(after, before)
        else:
            np.testing.assert_allclose(after, before + 0.3 * confidence * (estimate - before),
                                       atol=1e-12)


# --------------------------------------------------------------------------- sag estimator
URDF = (Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "visuomotor_description"
        / "urdf" / "panda.urdf")


@pytest.fixture(scope="module")
def robot():
    from visuomotor_core.robot_model import RobotModel

    return RobotModel.from_urdf_file(str(URDF), [f"panda_joint{i}" for i in range(1, 8)])


def _postures(n: int, seed: int = 0) -> np.ndarray:
    home = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
    return home + np.random.default_rng(seed).normal(0.0, 0.3, (n, 7))


MOVING = np.full(7, 1.0)  # rad/s
STILL = np.zeros(7)


def _settle(estimator: SagEstimator, q: np.ndarray, theta: np.ndarray) -> None:
    """The arm comes to rest at ``q``, ``B(q) theta`` below its target."""
    estimator.record_target(q + estimator.bases(q) @ theta)
    estimator.update(q, STILL)


@pytest.mark.parametrize("theta", [(0.1, 0.5), (1.0, 4.0), (-0.2, 0.0)])
def test_sag_estimator_identifies_parameters_outside_any_training_range(robot, theta):
    theta = np.array(theta)
    estimator = SagEstimator(robot, SagEstimatorConfig(ridge=1e-9))  # no pull to nominal
    for q in _postures(6):
        _settle(estimator, q, theta)
    np.testing.assert_allclose(estimator.theta, theta, atol=0.02 * max(1.0, abs(theta).max()))
    q = _postures(1, seed=5)[0]  # a posture not sampled before
    _settle(estimator, q, theta)
    np.testing.assert_allclose(estimator.offset(), estimator.bases(q) @ theta, atol=2e-3)


def test_sag_estimator_ignores_the_tracking_error_of_a_moving_arm(robot):
    estimator = SagEstimator(robot)
    for q in _postures(5):  # a large "error" while the arm moves 0.3 rad a step: lag, not sag
        estimator.record_target(q + estimator.bases(q) @ np.array([3.0, 8.0]))
        estimator.update(q, MOVING)
    assert np.abs(estimator.theta).max() < 1e-3


def test_sag_estimator_uses_an_arm_ringing_about_a_still_mean(robot):
    """Long actuation delays make the arm ring (large measured velocity) while it stays put
    from one policy step to the next: those samples count."""
    theta = np.array([0.5, 3.0])
    estimator = SagEstimator(robot)
    q = _postures(1)[0]
    for _ in range(20):
        estimator.record_target(q + estimator.bases(q) @ theta)
        estimator.update(q, MOVING)
    np.testing.assert_allclose(estimator.offset(), estimator.bases(q) @ theta, atol=2e-3)


def test_sag_estimator_with_forgetting_follows_a_payload_change(robot):
    q = _postures(1)[0]
    before, after = np.array([0.2, 1.0]), np.array([0.2, 4.0])  # a payload is picked up
    kept = SagEstimator(robot)
    fading = SagEstimator(robot, SagEstimatorConfig(forgetting=0.8))
    for estimator in (kept, fading):
        for theta in [before] * 40 + [after] * 20:
            _settle(estimator, q, theta)
    new_offset = kept.bases(q) @ after
    # Forgetting follows the change (the ridge prior keeps some pull in the direction one
    # posture hardly observes); keeping every sample averages the two payloads.
    assert np.linalg.norm(fading.offset() - new_offset) < 0.2 * np.linalg.norm(new_offset)
    assert np.linalg.norm(kept.offset() - new_offset) > 0.3 * np.linalg.norm(new_offset)


def test_sag_estimator_skips_non_finite_samples_and_bounds_its_offset(robot):
    estimator = SagEstimator(robot, SagEstimatorConfig(max_offset=0.02))
    q = _postures(1)[0]
    _settle(estimator, q, np.array([5.0, 20.0]))
    before = estimator.theta
    estimator.record_target(np.full(7, np.nan))
    estimator.update(q, STILL)
    np.testing.assert_array_equal(estimator.theta, before)
    assert np.all(np.isfinite(estimator.offset()))
    assert np.abs(estimator.offset()).max() <= 0.02 + 1e-12
    estimator.reset()
    np.testing.assert_array_equal(estimator.theta, 0.0)


def test_sag_estimator_skips_a_sample_of_an_arm_moved_by_something_else(robot):
    estimator = SagEstimator(robot)
    q = _postures(1)[0]
    estimator.update(q + 0.5, STILL)
    estimator.record_target(q)
    estimator.update(q + 0.5, STILL)  # still, but 0.5 rad from its target: moved by another
    np.testing.assert_array_equal(estimator.theta, 0.0)


def test_sag_estimator_keeps_parameters_within_physical_bounds(robot):
    """A negative payload traded for very heavy links fits one posture but not others."""
    estimator = SagEstimator(robot, SagEstimatorConfig(ridge=1e-9))
    for q in _postures(4):
        _settle(estimator, q, np.array([2.5, -4.0]))  # outside the bounds
    low, high = estimator.config.theta_low, estimator.config.theta_high
    assert low[0] <= estimator.theta[0] <= high[0] and estimator.theta[1] == low[1]


@pytest.mark.parametrize("bad", [dict(kp=(1.0,) * 6), dict(kp=(0.0,) * 7), dict(ridge=0.0),
                                 dict(forgetting=1.5), dict(motion_scale=-1.0),
                                 dict(speed_scale=0.0), dict(max_error=0.0),
                                 dict(theta_low=(0.1, 0.0))])
def test_sag_estimator_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        SagEstimatorConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        SagEstimatorConfig.from_dict({"gain": 1.0})


def test_runtime_adds_the_sag_offset_and_keeps_the_network_part_in_the_history(robot):
    session = _FakeSession(action=np.zeros((1, 7), np.float32))  # network: "stay here"
    estimator = SagEstimator(robot)
    runtime = PolicyRuntime(session, _hand, PolicyConfig(action_scale=0.15, history_length=3),
                            estimator)
    theta = np.array([0.6, 3.5])  # heavier and weaker than any training draw
    q = _postures(1)[0]
    out = runtime(q, np.zeros(7), np.zeros(3))
    np.testing.assert_allclose(out.targets, q)  # no sample yet: no offset
    drift = []
    for _ in range(15):  # a static plant: the arm settles B(q) theta below its target
        settled = out.targets - estimator.bases(out.targets) @ theta
        drift.append(np.abs(settled - q).max())
        q = settled
        out = runtime(q, np.zeros(7), np.zeros(3))
        np.testing.assert_allclose(out.targets, q + out.sag_offset)
    # The sag is undone: the arm sinks ~0.05 rad at the first step and creeps a few mrad
    # per step once the fit has static samples (the ridge prior fades as 1/samples).
    assert drift[0] > 0.03 and max(drift[5:]) < 0.2 * drift[0]
    true_offset = estimator.bases(q) @ theta
    assert np.linalg.norm(out.sag_offset - true_offset) < 0.2 * np.linalg.norm(true_offset)
    # The history's commanded field holds the network's part (zero here), not the offset.
    np.testing.assert_allclose(session.feeds["history"][0, -1, 14:21], 0.0, atol=1e-6)


# --------------------------------------------------------------------------- goal integrator
def test_goal_integrator_removes_a_steady_offset_only_near_the_goal_and_at_rest():
    integrator = GoalIntegrator(GoalIntegratorConfig(gain=0.2, radius=0.05, limit=0.04))
    goal, q = np.array([0.5, 0.0, 0.3]), Q.copy()
    far = goal - np.array([0.0, 0.0, 0.2])
    for _ in range(5):  # hand far away: no integral
        np.testing.assert_allclose(integrator.update(goal, far, q), goal)
    short = goal - np.array([0.0, 0.0, 0.01])  # the hand rests 1 cm below the goal
    for _ in range(3):  # moving: no integral
        q = q + 0.05
        np.testing.assert_allclose(integrator.update(goal, short, q), goal)
    for _ in range(30):
        shifted = integrator.update(goal, short, q)
    np.testing.assert_allclose(shifted - goal, [0.0, 0.0, 0.04], atol=1e-9)  # bounded
    # A new target (moved more than the radius) starts from zero.
    moved = goal + np.array([0.2, 0.0, 0.0])
    integrator.update(moved, moved - np.array([0.0, 0.0, 0.01]), q)
    assert np.linalg.norm(integrator.integral) <= 0.2 * 0.01 + 1e-12
    integrator.reset()
    np.testing.assert_array_equal(integrator.integral, 0.0)


@pytest.mark.parametrize("bad", [dict(gain=0.0), dict(gain=1.5), dict(radius=0.0),
                                 dict(limit=-0.1), dict(still_displacement=0.0)])
def test_goal_integrator_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        GoalIntegratorConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        GoalIntegratorConfig.from_dict({"ki": 1.0})


def test_runtime_feeds_the_integrated_goal_to_the_network():
    session = _FakeSession(action=np.zeros((1, 7), np.float32))
    integrator = GoalIntegrator(GoalIntegratorConfig(gain=0.5))
    runtime = PolicyRuntime(session, _hand, PolicyConfig(), integrator=integrator)
    goal = _hand(Q) + np.array([0.0, 0.0, 0.02])  # the hand rests 2 cm below the goal
    runtime(Q, QD, goal)
    runtime(Q, QD, goal)
    half_way = goal + np.array([0.0, 0.0, 0.01])  # the goal plus half the error
    np.testing.assert_allclose(session.feeds["observation"][0, 14:17], half_way, atol=1e-6)
    runtime.reset()
    runtime(Q, QD, goal)
    np.testing.assert_allclose(session.feeds["observation"][0, 14:17], goal, atol=1e-6)


def test_runtime_switches_turn_the_sag_offset_and_goal_integral_off(robot):
    session = _FakeSession(action=np.zeros((1, 7), np.float32))
    runtime = PolicyRuntime(session, _hand, PolicyConfig(), SagEstimator(robot),
                            GoalIntegrator(GoalIntegratorConfig(gain=0.5)))
    q, theta = _postures(1)[0], np.array([0.6, 3.0])
    runtime(q, np.zeros(7), np.zeros(3))
    runtime.sag.record_target(q + runtime.sag.bases(q) @ theta)  # the arm sags below it
    runtime.sag_enabled = runtime.integrator_enabled = False
    goal = _hand(q) + np.array([0.0, 0.0, 0.02])
    for _ in range(3):
        out = runtime(q, np.zeros(7), goal)
    np.testing.assert_allclose(out.targets, q)  # no offset added
    np.testing.assert_allclose(session.feeds["observation"][0, 14:17], goal, atol=1e-6)
    assert runtime.sag.theta.any()  # the estimate kept running
    runtime.sag_enabled = True
    assert np.abs(runtime(q, np.zeros(7), goal).sag_offset).max() > 1e-3


def test_act_on_estimate_feeds_the_filtered_goal_and_returns_it():
    session = _FakeSession()
    runtime = PolicyRuntime(session, _hand, PolicyConfig())
    goal_filter = GoalFilter()
    first = np.array([0.6, 0.1, 0.2])
    goal, _ = runtime.act_on_estimate(Q, QD, first, goal_filter, confidence=0.9)
    np.testing.assert_allclose(goal, first)
    np.testing.assert_allclose(session.feeds["observation"][0, 20:23], first - _hand(Q))
    # An estimate below min_confidence leaves the goal, and the observation, unchanged.
    goal, _ = runtime.act_on_estimate(Q, QD, first + 0.05, goal_filter, confidence=0.1)
    np.testing.assert_allclose(goal, first)
    np.testing.assert_allclose(session.feeds["observation"][0, 20:23], first - _hand(Q))


def test_evaluations_filter_the_goal_as_the_graphs_policy_node_does():
    """evaluate_policy and the experiments build GoalFilter() with its defaults; the graph's
    policy node builds it from policy.yaml: the two must be the same filter."""
    import yaml

    from visuomotor_ros import graph

    params = yaml.safe_load(graph.params_path("policy.yaml").read_text())
    values = next(iter(params.values()))["ros__parameters"]
    default = GoalFilter()
    assert (values["goal_smoothing"], values["goal_freeze_radius"],
            values["goal_jump_distance"], values["goal_min_confidence"]) == (
        default.smoothing, default.freeze_radius, default.jump_distance,
        default.min_confidence)
