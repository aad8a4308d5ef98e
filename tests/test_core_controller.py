"""JointController: modes, targets, interpolation, watchdog, e-stop, limits, live tuning."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from visuomotor_core.controller import RECOVERED_REASON, JointController, Mode
from visuomotor_core.controller_config import (
    ControllerConfig,
    config_from_parameters,
    parameter_schema,
)
from visuomotor_core.params import defaults, validate
from visuomotor_core.robot_model import RobotModel

URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_description/urdf/panda.urdf"
HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
ZERO = np.zeros(7)
DT = 1e-3


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf_file(URDF)


def make(model: RobotModel, activate: bool = True, **config) -> JointController:
    controller = JointController(ControllerConfig(**config), model)
    if activate:
        controller.activate()
    return controller


def tick(controller: JointController, now: float, q=HOME, qd=ZERO, stamp: float | None = None):
    return controller.update(now, q, qd, now if stamp is None else stamp)


# ----------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"rate_hz": 0.0}, "rate_hz"),
        ({"rate_hz": float("nan")}, "rate_hz"),
        ({"kp": (1.0,) * 6}, "kp"),
        ({"kd": (-1.0,) + (1.0,) * 6}, "kd"),
        ({"hold_kp": (float("inf"),) * 7}, "hold_kp"),
        ({"command_interface": "torque"}, "command_interface"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"interpolation": "linear", "interpolation_time": 0.0}, "interpolation_time"),
        ({"target_timeout": -0.1}, "target_timeout"),
        ({"state_timeout": 0.0}, "state_timeout"),
        ({"max_target_age": 0.0}, "max_target_age"),
        ({"velocity_scale": 1.5}, "velocity_scale"),
        ({"effort_scale": 0.0}, "effort_scale"),
        ({"position_margin": -0.01}, "position_margin"),
        ({"num_joints": 0}, "num_joints"),
        ({"gravity_compensation": 1}, "gravity_compensation"),
    ],
)
def test_config_fails_with_a_message_naming_the_invalid_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ControllerConfig(**changes)


def test_config_defaults_are_panda_gains_at_1khz_effort():
    config = ControllerConfig()
    assert config.rate_hz == 1000.0 and config.command_interface == "effort"
    assert config.kp[0] == 600.0 and len(config.kd) == 7
    assert config.effective_hold_kp == config.kp
    assert (config.target_timeout, config.state_timeout, config.max_target_age) == (
        0.1,
        0.05,
        0.25,
    )


def test_controller_fails_when_config_joint_count_differs_from_model(model):
    config = ControllerConfig(num_joints=6, kp=(1.0,) * 6, kd=(1.0,) * 6)
    with pytest.raises(ValueError, match=r"6.*7 joints"):
        JointController(config, model)


# ----------------------------------------------------------------- lifecycle
def test_inactive_controller_commands_nothing_and_refuses_targets(model):
    controller = make(model, activate=False)
    command = tick(controller, 0.0)
    assert command.mode is Mode.INACTIVE and not command.valid
    result = controller.set_target(HOME, 0.0, 0.0)
    assert not result.accepted and "inactive" in result.reason


def test_activation_holds_the_measured_position_with_gravity_compensation(model):
    controller = make(model)
    command = tick(controller, 0.0)
    assert command.mode is Mode.HOLD and command.valid
    assert "first target" in command.reason
    np.testing.assert_allclose(command.values, model.gravity_torques(HOME), atol=1e-12)


def test_deactivate_stops_commanding(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.deactivate()
    command = tick(controller, DT)
    assert command.mode is Mode.INACTIVE and not command.valid


def test_no_command_is_valid_before_a_joint_state_was_seen(model):
    controller = make(model)
    command = controller.update(0.0, np.full(7, np.nan), ZERO, 0.0)
    assert not command.valid and "no valid joint state" in command.reason
    assert np.isfinite(command.values).all()


# ----------------------------------------------------------------- targets
def test_accepted_target_switches_hold_to_tracking(model):
    controller = make(model)
    tick(controller, 0.0)
    result = controller.set_target(HOME + 0.01, 0.0, 0.0)
    assert result.accepted and result.reason == ""
    assert tick(controller, DT).mode is Mode.TRACKING


@pytest.mark.parametrize(
    ("positions", "reason"),
    [
        (np.full(7, np.nan), "not finite"),
        (np.r_[HOME[:6], np.inf], "not finite at joint index \\[6\\]"),
        (HOME[:6], "shape"),
        ("abc", "not numeric"),
        (np.r_[HOME[:3], 5.0, HOME[4:]], "outside the robot's position range .* \\[3\\]"),
    ],
)
def test_invalid_targets_are_refused_with_a_reason(model, positions, reason):
    controller = make(model)
    tick(controller, 0.0)
    result = controller.set_target(positions, 0.0, 0.0)
    assert not result.accepted
    assert re.search(reason, result.reason), result.reason
    assert controller.targets_refused == 1


def test_stale_target_is_refused_by_its_stamp(model):
    controller = make(model)
    tick(controller, 1.0)
    stale = controller.set_target(HOME, stamp=0.7, now=1.0)
    assert not stale.accepted and "stale" in stale.reason
    fresh = controller.set_target(HOME, stamp=0.76, now=1.0)
    assert fresh.accepted


def test_target_stamped_far_in_the_future_is_refused(model):
    controller = make(model)
    result = controller.set_target(HOME, stamp=2.0, now=1.0)
    assert not result.accepted and "future" in result.reason


def test_slightly_out_of_range_target_is_clamped_inside_the_margin(model):
    controller = make(model, interpolation="none")
    upper = model.limits.upper[3]  # joint 4 upper limit 0 rad
    q = HOME.copy()
    q[3] = upper - 0.02
    tick(controller, 0.0, q=q)
    target = q.copy()
    target[3] = upper + 0.1
    assert controller.set_target(target, 0.0, 0.0).accepted
    for k in range(1, 60):  # within target_timeout
        tick(controller, k * DT, q=q)
    reference, _ = controller.reference
    assert reference[3] == pytest.approx(upper - controller.config.position_margin)


# ----------------------------------------------------------------- interpolation
def test_linear_interpolation_reaches_half_way_at_half_time(model):
    controller = make(model, interpolation="linear", interpolation_time=0.1)
    tick(controller, 0.0)
    goal = HOME + 0.05  # 0.5 rad/s: below every velocity limit
    controller.set_target(goal, 0.0, 0.0)
    for k in range(1, 51):
        tick(controller, k * DT)
    reference, velocity = controller.reference
    np.testing.assert_allclose(reference, HOME + 0.025, atol=1e-9)
    np.testing.assert_allclose(velocity, 0.5, atol=1e-9)
    for k in range(51, 101):
        tick(controller, k * DT)
    np.testing.assert_allclose(controller.reference[0], goal, atol=1e-9)


def _reference_velocity_steps(model: RobotModel, interpolation: str) -> np.ndarray:
    """Per-tick changes of joint 1's reference velocity while targets arrive at 20 Hz."""
    controller = make(model, interpolation=interpolation, interpolation_time=0.05)
    tick(controller, 0.0)
    velocities, now = [], 0.0
    for segment in range(6):  # a new target every policy period, mid-motion
        controller.set_target(HOME + 0.01 * (segment + 1), now, now)
        for _ in range(50):
            now += DT
            tick(controller, now)
            velocities.append(controller.reference[1][0])
    assert max(velocities) > 0.1
    return np.abs(np.diff(velocities))


def test_min_jerk_reference_velocity_is_continuous_across_targets(model):
    # 0.01 rad in 0.05 s peaks at ~23 rad/s² (0.023 rad/s per tick); linear steps by 0.2.
    assert _reference_velocity_steps(model, "min_jerk").max() < 0.03
    assert _reference_velocity_steps(model, "linear").max() > 0.1


def test_reference_speed_never_exceeds_the_scaled_velocity_limit(model):
    controller = make(model, interpolation="none", velocity_scale=0.5)
    tick(controller, 0.0)
    goal = HOME.copy()
    goal[0] = 2.0
    controller.set_target(goal, 0.0, 0.0)
    previous = controller.reference[0]
    for k in range(1, 100):
        if k % 40 == 0:
            controller.set_target(goal, k * DT, k * DT)
        tick(controller, k * DT)
        reference = controller.reference[0]
        step = np.abs(reference - previous)
        assert (step <= model.limits.velocity * 0.5 * DT + 1e-12).all()
        previous = reference
    assert step[0] == pytest.approx(model.limits.velocity[0] * 0.5 * DT)


def test_late_update_does_not_make_the_reference_jump(model):
    controller = make(model, interpolation="none", target_timeout=10.0, state_timeout=10.0)
    tick(controller, 0.0)
    goal = HOME + 0.5
    controller.set_target(goal, 0.0, 0.0)
    before = controller.reference[0]
    tick(controller, 1.0)  # one second without an update
    jump = np.abs(controller.reference[0] - before)
    assert (jump <= model.limits.velocity * 5 * DT + 1e-12).all()


# ----------------------------------------------------------------- control law
def test_effort_law_is_pd_plus_gravity(model):
    controller = make(model, interpolation="none")
    tick(controller, 0.0)
    q = HOME + 0.001
    qd = np.full(7, 0.01)
    command = tick(controller, DT, q=q, qd=qd)  # reference still at HOME (no target)
    assert command.mode is Mode.HOLD
    controller.set_target(HOME, DT, DT)
    command = tick(controller, 2 * DT, q=q, qd=qd)
    assert command.mode is Mode.TRACKING
    reference, velocity = controller.reference
    kp, kd = np.array(controller.config.kp), np.array(controller.config.kd)
    expected = kp * (reference - q) + kd * (velocity - qd) + model.gravity_torques(q)
    np.testing.assert_allclose(command.values, expected, atol=1e-9)


def test_at_the_velocity_limit_the_effort_law_adds_no_torque_beyond_gravity(model):
    controller = make(model, interpolation="none")
    tick(controller, 0.0)
    vmax = model.limits.velocity
    now = 0.0
    for sign in (1.0, -1.0):
        # The arm lags 0.1 rad behind the reference: the PD term pushes on.
        now += DT
        controller.set_target(HOME + sign * 0.3, now, now)
        lagging = HOME - sign * 0.1
        at_limit = tick(controller, now, q=lagging, qd=sign * vmax)
        now += DT
        beyond = tick(controller, now, q=lagging, qd=sign * (vmax + 0.5))
        assert at_limit.mode is beyond.mode is Mode.TRACKING
        gravity = model.gravity_torques(lagging)
        assert (sign * (at_limit.values - gravity) <= 1e-9).all()
        assert (sign * (beyond.values - gravity) < 0.0).all(), "beyond the limit it brakes"
    # Well below the limits the bound is not reached: the law is PD + gravity.
    now += DT
    controller.set_target(HOME + 0.01, now, now)
    slow = tick(controller, now, q=HOME, qd=0.1 * vmax)
    reference, velocity = controller.reference
    kp, kd = np.array(controller.config.kp), np.array(controller.config.kd)
    np.testing.assert_allclose(
        slow.values,
        kp * (reference - HOME) + kd * (velocity - 0.1 * vmax) + model.gravity_torques(HOME),
        atol=1e-9)


def test_effort_is_clamped_to_the_scaled_effort_limits(model):
    controller = make(model, effort_scale=0.5)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    command = tick(controller, DT, q=HOME + 0.5, qd=np.full(7, 2.0))
    np.testing.assert_allclose(np.abs(command.values), model.limits.effort * 0.5)


def test_position_interface_outputs_the_reference_inside_the_margin(model):
    controller = make(model, command_interface="position", interpolation="none")
    tick(controller, 0.0)
    controller.set_target(HOME + 0.001, 0.0, 0.0)
    command = tick(controller, DT)
    np.testing.assert_allclose(command.values, controller.reference[0])
    assert command.interface == "position"


def test_velocity_interface_output_stays_within_velocity_limits(model):
    controller = make(model, command_interface="velocity")
    tick(controller, 0.0)
    controller.set_target(HOME + 0.1, 0.0, 0.0)
    command = tick(controller, DT, q=HOME - 0.6)
    assert command.mode is Mode.TRACKING
    assert (np.abs(command.values) <= model.limits.velocity + 1e-12).all()
    assert np.abs(command.values).max() == pytest.approx(model.limits.velocity.max())


# ----------------------------------------------------------------- watchdog
def test_target_timeout_switches_to_hold_within_two_periods(model):
    controller = make(model)
    timeout = controller.config.target_timeout
    tick(controller, 0.0)
    controller.set_target(HOME + 0.01, 0.0, 0.0)
    now, switched_at = 0.0, None
    while now < 0.3:
        now = round(now + DT, 9)
        if tick(controller, now).mode is Mode.HOLD:
            switched_at = now
            break
    assert switched_at is not None
    assert timeout < switched_at <= timeout + 2 * DT
    assert "target_timeout" in controller.reason


def _hold_torque(controller: JointController, model: RobotModel, q, qd) -> np.ndarray:
    config = controller.config
    reference, _ = controller.reference
    expected = (
        np.array(config.effective_hold_kp) * (reference - q)
        - np.array(config.effective_hold_kd) * qd
        + model.gravity_torques(q)
    )
    return np.clip(expected, -model.limits.effort, model.limits.effort)


def test_hold_is_a_damped_hold_at_the_position_where_it_started(model):
    controller = make(model, target_timeout=0.1, state_timeout=10.0)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    q_at_timeout = HOME + 0.02
    tick(controller, 0.2, q=q_at_timeout)  # times out here
    assert controller.mode is Mode.HOLD
    np.testing.assert_allclose(controller.hold_target, q_at_timeout)
    q, qd = HOME + 0.03, np.full(7, 0.1)
    for k in range(1, 30):  # the reference reaches the hold target at the velocity limit
        command = tick(controller, 0.2 + k * DT, q=q, qd=qd)
        np.testing.assert_allclose(command.values, _hold_torque(controller, model, q, qd),
                                   atol=1e-9)
    np.testing.assert_allclose(controller.reference[0], q_at_timeout, atol=1e-12)


def test_stale_joint_state_switches_to_hold_within_two_periods(model):
    controller = make(model, target_timeout=10.0)
    state_timeout = controller.config.state_timeout
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    now, switched_at = 0.0, None
    while now < 0.2:
        now = round(now + DT, 9)
        if tick(controller, now, stamp=0.0).mode is Mode.HOLD:  # the state stops updating
            switched_at = now
            break
    assert switched_at is not None
    assert state_timeout < switched_at <= state_timeout + 2 * DT
    assert "stale" in controller.reason


def test_fresh_target_resumes_tracking_from_hold(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    tick(controller, 0.5)
    assert controller.mode is Mode.HOLD
    assert controller.set_target(HOME + 0.01, 0.5, 0.5).accepted
    assert tick(controller, 0.501).mode is Mode.TRACKING


def test_hold_stays_until_a_target_arrives_even_when_the_state_recovers(model):
    controller = make(model, target_timeout=10.0)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    tick(controller, 0.1, stamp=0.0)
    assert controller.mode is Mode.HOLD
    assert tick(controller, 0.101).mode is Mode.HOLD


def test_clock_jumping_backwards_switches_to_hold(model):
    controller = make(model)
    tick(controller, 5.0)
    controller.set_target(HOME, 5.0, 5.0)
    tick(controller, 5.001)
    command = tick(controller, 1.0)
    assert command.mode is Mode.HOLD and "backwards" in command.reason


def test_non_finite_state_holds_with_a_reason_and_finite_output(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    tick(controller, DT)
    q = HOME.copy()
    q[2] = np.nan
    command = tick(controller, 2 * DT, q=q)
    assert command.mode is Mode.HOLD and "not finite" in command.reason
    assert np.isfinite(command.values).all()
    # Without a measurement the hold is gravity compensation at the hold position.
    np.testing.assert_allclose(command.values, model.gravity_torques(HOME), atol=1e-9)
    command = tick(controller, 3 * DT, qd=np.full(7, np.inf))
    assert command.mode is Mode.HOLD and "velocities" in command.reason


def test_target_during_a_joint_state_fault_keeps_the_hold_until_the_state_recovers(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    assert tick(controller, DT).mode is Mode.TRACKING
    bad = HOME.copy()
    bad[3] = np.nan
    assert tick(controller, 2 * DT, q=bad).mode is Mode.HOLD
    # A target arriving while the fault lasts is accepted as the goal, but the
    # controller stays in HOLD and keeps naming the fault, tick after tick.
    for k in range(3, 8):
        assert controller.set_target(HOME + 0.01, k * DT, k * DT).accepted
        assert controller.mode is Mode.HOLD and "not finite" in controller.reason
        command = tick(controller, k * DT, q=bad)
        assert command.mode is Mode.HOLD and "not finite" in command.reason
    # The state recovers: still holding, until a fresh target.
    command = tick(controller, 8 * DT)
    assert command.mode is Mode.HOLD and "recovered" in command.reason
    assert controller.set_target(HOME + 0.01, 9 * DT, 9 * DT).accepted
    assert tick(controller, 9 * DT).mode is Mode.TRACKING


def test_wrong_length_state_holds_instead_of_raising(model):
    controller = make(model)
    tick(controller, 0.0)
    command = controller.update(DT, HOME[:5], ZERO, DT)
    assert command.mode is Mode.HOLD and "shape" in command.reason


# ----------------------------------------------------------------- e-stop
def test_estop_latches_refuses_targets_until_reset(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    controller.estop("operator")
    for k in range(1, 5):
        command = tick(controller, k * DT)
        assert command.mode is Mode.ESTOP and command.reason == "operator"
    refused = controller.set_target(HOME, 4 * DT, 4 * DT)
    assert not refused.accepted and "e-stop" in refused.reason
    controller.reset()
    assert tick(controller, 5 * DT).mode is Mode.ESTOP
    controller.reset_estop()
    assert tick(controller, 6 * DT).mode is Mode.HOLD
    assert controller.set_target(HOME, 6 * DT, 6 * DT).accepted
    assert tick(controller, 7 * DT).mode is Mode.TRACKING


def test_estop_is_a_damped_hold_where_it_was_triggered(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME + 0.2, 0.0, 0.0)
    q_stop = HOME + 0.001
    tick(controller, DT, q=q_stop)
    controller.estop()
    np.testing.assert_allclose(controller.hold_target, q_stop)
    q, qd = HOME + 0.002, np.full(7, -0.05)
    for k in range(2, 6):
        command = tick(controller, k * DT, q=q, qd=qd)
        assert command.mode is Mode.ESTOP
        np.testing.assert_allclose(command.values, _hold_torque(controller, model, q, qd),
                                   atol=1e-9)
    np.testing.assert_allclose(controller.reference[0], q_stop, atol=1e-12)


def test_estop_survives_deactivate_and_activate(model):
    controller = make(model)
    controller.estop("bumper")
    controller.deactivate()
    controller.activate()
    command = tick(controller, 0.0)
    assert command.mode is Mode.ESTOP and command.reason == "bumper"


# ----------------------------------------------------------------- live tuning
def test_gain_change_takes_effect_and_invalid_gains_are_refused(model):
    controller = make(model, interpolation="none")
    tick(controller, 0.0)
    controller.set_target(HOME, 0.0, 0.0)
    before = tick(controller, DT, q=HOME - 0.001).values
    assert controller.update_config(kp=(100.0,) * 7, kd=(1.0,) * 7).accepted
    after = tick(controller, 2 * DT, q=HOME - 0.001).values
    assert not np.allclose(before, after)
    refused = controller.update_config(kp=(-1.0,) * 7)
    assert not refused.accepted and "kp" in refused.reason
    refused = controller.update_config(kp=(1.0,) * 6)
    assert not refused.accepted and "7 entries" in refused.reason
    assert controller.config.kp == (100.0,) * 7


def test_update_config_refuses_unknown_fields_and_interface_change_while_active(model):
    controller = make(model)
    result = controller.update_config(kp_scale=2.0)
    assert not result.accepted and "unknown" in result.reason
    result = controller.update_config(command_interface="position")
    assert not result.accepted and "inactive" in result.reason
    controller.deactivate()
    assert controller.update_config(command_interface="position").accepted


def test_update_config_tightens_limits_live(model):
    controller = make(model)
    assert controller.update_config(effort_scale=0.25).accepted
    np.testing.assert_allclose(controller.limits.effort, model.limits.effort * 0.25)
    result = controller.update_config(velocity_scale=2.0)
    assert not result.accepted and "velocity_scale" in result.reason


def test_reset_holds_the_next_measured_position(model):
    controller = make(model)
    tick(controller, 0.0)
    controller.set_target(HOME + 0.1, 0.0, 0.0)
    tick(controller, DT)
    controller.reset()
    command = tick(controller, 2 * DT, q=HOME + 0.3)
    assert command.mode is Mode.HOLD
    np.testing.assert_allclose(controller.reference[0], HOME + 0.3)


def test_reset_refuses_targets_stamped_before_the_jump(model):
    """A target computed from the world before a sim reset must not drive the arm the
    reset moved: targets stamped before ``not_before`` are refused, later ones accepted."""
    controller = make(model)
    tick(controller, 0.0)
    assert controller.set_target(HOME + 0.1, 0.0, 0.0).accepted
    tick(controller, DT)
    controller.reset(not_before=0.5)
    tick(controller, 0.5, q=HOME + 0.3)
    result = controller.set_target(HOME + 0.1, 0.49, 0.5)
    assert not result.accepted and "before the reset" in result.reason
    assert controller.mode is Mode.HOLD
    assert controller.set_target(HOME + 0.2, 0.5, 0.5).accepted
    assert controller.mode is Mode.TRACKING
    for bad in (math.nan, math.inf):  # a non-finite time refuses nothing
        controller.reset(not_before=bad)
        tick(controller, 0.6, q=HOME)
        assert controller.set_target(HOME, 0.45, 0.6).accepted


# ----------------------------------------------------------------- parameters
def test_parameter_schema_defaults_build_the_default_config():
    schema = parameter_schema()
    for spec in schema:
        assert validate(spec, spec.default)[0], spec.name
    config = config_from_parameters(defaults(schema))
    assert config.kp == ControllerConfig().kp
    assert config.effective_hold_kd == ControllerConfig().effective_hold_kd
    assert {spec.name for spec in schema if spec.read_only} == {"num_joints", "command_interface"}


def test_config_from_parameters_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown"):
        config_from_parameters({"gain": 1.0})


# ----------------------------------------------------------------- cost
def test_update_cost_is_tens_of_microseconds(model):
    controller = make(model)
    tick(controller, 0.0)
    durations = []
    for k in range(1, 2001):
        now = k * DT
        if k % 50 == 0:
            controller.set_target(HOME + 0.01 * np.sin(k), now, now)
        start = time.perf_counter()
        controller.update(now, HOME, ZERO, now)
        durations.append(time.perf_counter() - start)
    assert controller.mode is Mode.TRACKING
    # Generous bound for shared CI machines; about 30-50 µs on a 2-core VM.
    assert np.median(durations) < 250e-6


# ----------------------------------------------------------------- safety: samples and setpoints
class WallClock:
    """A monotonic clock the test sets (s), handed to the controller as its wall clock."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def tracking(model: RobotModel, wall: WallClock | None = None, **config) -> JointController:
    """An active controller tracking HOME at t = 0, with ``wall`` as its wall clock."""
    controller = JointController(ControllerConfig(**config), model, wall_clock=wall)
    controller.activate()
    tick(controller, 0.0)
    assert controller.set_target(HOME, 0.0, 0.0).accepted
    assert tick(controller, DT).mode is Mode.TRACKING
    return controller


def test_stale_sample_never_becomes_the_hold_setpoint(model):
    controller = tracking(model)
    controller.estop("operator")
    stale = HOME.copy()
    stale[0] += 0.5  # joint 1 off by 0.5 rad, stamped 1 s in the past
    command = tick(controller, 2 * DT, q=stale, stamp=2 * DT - 1.0)
    assert command.mode is Mode.ESTOP
    np.testing.assert_allclose(controller.hold_target, HOME)
    # ... nor when the stale sample arrives as the watchdog fires.
    controller = tracking(model)
    command = tick(controller, 0.5, q=stale, stamp=-0.5)
    assert command.mode is Mode.HOLD and "stale" in command.reason
    np.testing.assert_allclose(controller.hold_target, HOME)


@pytest.mark.parametrize("interface", ["effort", "position"])
def test_out_of_range_sample_never_becomes_a_setpoint_or_moves_the_command(model, interface):
    controller = tracking(model, command_interface=interface)
    previous = tick(controller, 2 * DT).values
    beyond = HOME.copy()
    beyond[0] = 3.5  # joint 1 limit 2.8973 rad
    for k in range(3, 50):
        command = tick(controller, k * DT, q=beyond)
        assert command.mode is Mode.HOLD and "outside the robot's position range" in command.reason
        np.testing.assert_allclose(controller.hold_target, HOME)
        if interface == "position":
            step = np.abs(command.values - previous)
            assert (step <= model.limits.velocity * DT + 1e-12).all()
        else:  # no measurement trusted: gravity compensation at the reference, no error
            np.testing.assert_allclose(command.values,
                                       model.gravity_torques(controller.reference[0]))
        previous = command.values


def test_sample_slightly_beyond_the_range_is_valid_and_its_hold_target_is_clamped(model):
    controller = tracking(model)
    config = controller.config
    q = HOME.copy()
    q[3] = controller.limits.upper[3] + 0.5 * config.state_tolerance
    command = tick(controller, 2 * DT, q=q)
    assert command.mode is Mode.TRACKING  # a valid sample
    controller.estop()
    np.testing.assert_allclose(controller.hold_source, q)
    assert controller.hold_target[3] == controller.limits.upper[3]
    held = controller.hold_target
    q[3] = controller.limits.upper[3] + 2.0 * config.state_tolerance  # beyond the tolerance
    controller.reset_estop()
    assert "outside" in tick(controller, 3 * DT, q=q).reason
    np.testing.assert_allclose(controller.hold_target, held)


def test_entering_estop_moves_the_position_command_at_most_vmax_dt(model):
    controller = tracking(model, command_interface="position", interpolation="none",
                          target_timeout=10.0)
    goal = HOME.copy()
    goal[0] += 1.0
    controller.set_target(goal, DT, DT)
    previous = tick(controller, 2 * DT).values
    for k in range(3, 40):  # the reference runs at the velocity limit; the arm lags
        previous = tick(controller, k * DT).values
    assert previous[0] > HOME[0] + 0.05
    controller.estop()
    np.testing.assert_allclose(controller.hold_target, HOME)
    for k in range(40, 200):
        command = tick(controller, k * DT)
        step = np.abs(command.values - previous)
        assert (step <= model.limits.velocity * DT + 1e-12).all()
        previous = command.values
    np.testing.assert_allclose(previous, HOME)


def test_clock_jump_forward_holds_without_moving_the_reference_beyond_the_tick_bound(model):
    controller = tracking(model, command_interface="position", interpolation="none")
    goal = HOME + 0.5
    controller.set_target(goal, DT, DT)
    before = tick(controller, 2 * DT).values
    command = tick(controller, 10.0)  # 10 s later
    assert command.mode is Mode.HOLD and "target_timeout" in command.reason
    bound = model.limits.velocity * controller.config.period * 5  # MAX_TICK_PERIODS
    assert (np.abs(command.values - before) <= bound + 1e-12).all()


def test_clock_jump_backwards_holds_and_time_then_runs_from_the_new_value(model):
    controller = tracking(model)
    command = tick(controller, -5.0)
    assert command.mode is Mode.HOLD and "backwards" in command.reason
    assert tick(controller, -5.0 + DT).reason == RECOVERED_REASON
    assert controller.set_target(HOME, -5.0 + DT, -5.0 + DT).accepted
    assert tick(controller, -5.0 + 2 * DT).mode is Mode.TRACKING


def test_frozen_controller_clock_holds_on_the_wall_clock(model):
    wall = WallClock()
    controller = tracking(model, wall=wall)
    timeout = controller.config.target_timeout
    for k in range(1, 200):  # /clock frozen at 1 ms; joint states keep coming (new stamps)
        wall.now += DT
        command = tick(controller, DT, stamp=DT - 1e-6 * k)
        if command.mode is Mode.HOLD:
            break
    assert command.mode is Mode.HOLD and "wall-clock" in command.reason
    assert timeout < wall.now - 100.0 <= timeout + 2 * DT


def test_joint_state_stamp_unchanged_on_the_wall_clock_is_stale(model):
    wall = WallClock()
    controller = tracking(model, wall=wall, target_timeout=10.0)
    state_timeout = controller.config.state_timeout
    for _ in range(1, 200):  # the clock and the sample both frozen
        wall.now += DT
        command = tick(controller, DT)
        if command.mode is Mode.HOLD:
            break
    assert "unchanged" in command.reason and "wall-clock" in command.reason
    assert state_timeout < wall.now - 100.0 <= state_timeout + 2 * DT


def test_fault_declared_by_the_caller_holds_and_its_sample_is_not_stored(model):
    controller = tracking(model)
    command = controller.update(2 * DT, HOME + 0.1, ZERO, 2 * DT, fault="loop stalled")
    assert command.mode is Mode.HOLD and command.reason == "loop stalled"
    np.testing.assert_allclose(controller.hold_target, HOME)


def test_reason_names_a_fault_while_it_lasts_and_is_empty_once_tracking(model):
    controller = tracking(model, target_timeout=10.0)
    q = HOME.copy()
    q[2] = np.nan
    assert "not finite" in tick(controller, 2 * DT, q=q).reason
    assert tick(controller, 3 * DT).reason == RECOVERED_REASON
    assert controller.set_target(HOME, 3 * DT, 3 * DT).accepted
    command = tick(controller, 4 * DT)
    assert command.mode is Mode.TRACKING and command.reason == "" and controller.reason == ""


def test_reset_estop_says_whether_anything_was_released(model):
    controller = tracking(model)
    assert controller.reset_estop() is False
    controller.estop("bumper")
    assert controller.reset_estop() is True
    assert controller.reset_estop() is False
    assert controller.mode is Mode.HOLD


def test_live_margin_that_would_clamp_the_reference_is_refused(model):
    controller = tracking(model)
    q = HOME.copy()
    q[3] = controller.limits.upper[3] - 0.02
    controller.reset()
    tick(controller, 2 * DT, q=q)
    result = controller.update_config(position_margin=0.1)
    assert not result.accepted and "reference" in result.reason and "[3]" in result.reason
    assert controller.update_config(position_margin=0.02).accepted
    controller.deactivate()
    assert controller.update_config(position_margin=0.1).accepted
