"""The controller's parts on their own: reference trajectory, control law, joint-state check.

The JointController that composes them is tested in tests/test_core_controller.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from visuomotor_core.control_law import ControlLaw
from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.joint_state_check import MEASURED_SPEED_FACTOR, JointStateCheck
from visuomotor_core.limits import JointLimits
from visuomotor_core.reference_trajectory import ReferenceTrajectory
from visuomotor_core.robot_description import load_robot
from visuomotor_core.robot_model import RobotModel

HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
ZERO = np.zeros(7)
DT = 1e-3
#: Wide limits, so only the behaviour under test binds.
WIDE = JointLimits(lower=[-3.0] * 7, upper=[3.0] * 7, velocity=[10.0] * 7, effort=[100.0] * 7)


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_description(load_robot())


def reference_at(q: np.ndarray, limits: JointLimits = WIDE, interpolation: str = "linear",
                 duration: float = 0.05) -> ReferenceTrajectory:
    reference = ReferenceTrajectory(7)
    reference.configure(limits, interpolation, duration)
    reference.begin_at(q)
    return reference


# ----------------------------------------------------------------- reference trajectory
def test_linear_segment_is_half_way_at_half_its_duration():
    reference = reference_at(HOME)
    reference.set_goal(HOME + 0.05, None, now=0.0)
    reference.advance(0.025, 0.025)
    np.testing.assert_allclose(reference.position, HOME + 0.025, atol=1e-12)
    np.testing.assert_allclose(reference.velocity, 1.0, atol=1e-12)


def test_reference_moves_at_most_the_velocity_limit_per_step():
    slow = JointLimits(lower=WIDE.lower, upper=WIDE.upper, velocity=[0.5] * 7,
                       effort=WIDE.effort)
    reference = reference_at(HOME, slow, interpolation="none")
    reference.set_goal(HOME + 1.0, None, now=0.0)
    reference.advance(0.0, DT)
    np.testing.assert_allclose(reference.position, HOME + 0.5 * DT, atol=1e-12)


def test_segment_offered_before_a_measurement_starts_from_the_first_one():
    reference = ReferenceTrajectory(7)
    reference.configure(WIDE, "linear", 0.05)
    reference.set_goal(HOME + 0.05, None, now=0.0)
    assert not reference.valid
    reference.begin_at(HOME)
    reference.advance(0.05, 0.05)
    np.testing.assert_allclose(reference.position, HOME + 0.05, atol=1e-12)


def test_approach_moves_toward_the_goal_at_rest():
    reference = reference_at(HOME)
    reference.approach(HOME + 1.0, DT)
    np.testing.assert_allclose(reference.position, HOME + 10.0 * DT, atol=1e-12)
    assert not reference.velocity.any()


# ----------------------------------------------------------------- control law
def test_effort_hold_is_damped_pd_plus_gravity(model):
    config = ControllerConfig()
    law = ControlLaw(model)
    law.configure(config, model.limits)
    q, qd = HOME + 0.001, np.full(7, 0.01)
    expected = (np.array(config.effective_hold_kp) * (HOME - q)
                - np.array(config.effective_hold_kd) * qd + model.gravity_torques(q))
    np.testing.assert_allclose(law.hold(HOME, q, qd), expected, atol=1e-9)


def test_blind_hold_is_gravity_compensation_at_the_reference(model):
    law = ControlLaw(model)
    law.configure(ControllerConfig(), model.limits)
    np.testing.assert_allclose(law.blind_hold(HOME), model.gravity_torques(HOME), atol=1e-9)


def test_idle_command_is_within_limits_on_every_interface(model):
    law = ControlLaw(model)
    for interface in ("effort", "position", "velocity"):
        law.configure(ControllerConfig(command_interface=interface), WIDE)
        expected = np.clip(ZERO, WIDE.lower, WIDE.upper) if interface == "position" else ZERO
        np.testing.assert_array_equal(law.idle, expected)


# ----------------------------------------------------------------- joint-state check
def state_check(timeout: float = 0.05) -> JointStateCheck:
    check = JointStateCheck(WIDE.velocity)
    check.configure(WIDE, tolerance=0.05, timeout=timeout)
    return check


def test_fresh_plausible_sample_is_valid_and_accepted():
    check = state_check()
    assert check.check(HOME, ZERO, 1.0, 1.0, 0.0, None) == ""
    check.accept()
    assert check.has_valid
    np.testing.assert_array_equal(check.last_good, HOME)


@pytest.mark.parametrize(
    ("q", "qd", "stamp", "now", "last", "reason"),
    [
        (HOME + np.r_[np.nan, ZERO[1:]], ZERO, 1.0, 1.0, None, "positions not finite"),
        (HOME, np.full(7, MEASURED_SPEED_FACTOR * 10.0 + 1.0), 1.0, 1.0, None, "velocities"),
        (HOME[:6], ZERO, 1.0, 1.0, None, "shape"),
        (HOME, ZERO, 0.9, 1.0, None, "older than state_timeout"),
        (HOME, ZERO, math.nan, 1.0, None, "stamp is not finite"),
        (HOME, ZERO, 1.0, 1.0, 1.5, "clock jumped backwards"),
    ],
)
def test_implausible_or_stale_sample_is_a_fault_naming_why(q, qd, stamp, now, last, reason):
    assert reason in state_check().check(q, qd, stamp, now, 0.0, last)


def test_stamp_unchanged_for_the_timeout_on_the_wall_clock_is_stale():
    check = state_check()
    assert check.check(HOME, ZERO, 1.0, 1.0, 0.0, None) == ""
    assert "wall-clock" in check.check(HOME, ZERO, 1.0, 1.0, 0.06, 1.0)
