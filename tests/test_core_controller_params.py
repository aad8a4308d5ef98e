"""Parameter schemas and the controller's parameter ranges from physics and the loop rate."""

from __future__ import annotations

import array
from pathlib import Path

import numpy as np
import pytest

from visuomotor_core.controller import JointController
from visuomotor_core.controller_config import (
    MAX_DAMPING_STEP,
    MIN_EFFORT_RATE_HZ,
    MIN_TIMEOUT_PERIODS,
    ControllerConfig,
    check_gains,
    gain_bounds,
)
from visuomotor_core.params import ParamSpec, check_schema, defaults, validate
from visuomotor_core.robot_description import load_robot
from visuomotor_core.robot_model import RobotModel

RATE = ParamSpec("rate_hz", float, 1000.0, "control rate", "Hz", 1.0, 5000.0)
GAINS = ParamSpec("kp", float, [1.0, 2.0], "gains", "N·m/rad", 0.0, 100.0, length=2)
MODE = ParamSpec("mode", str, "effort", "interface", choices=("effort", "position"))
COUNT = ParamSpec("count", int, 3, "a count", min=0, max=10, read_only=True)
FLAG = ParamSpec("enabled", bool, True, "a switch")


@pytest.mark.parametrize(
    ("spec", "value", "ok", "reason"),
    [
        (RATE, 500.0, True, ""),
        (RATE, 500, True, ""),
        (RATE, 0.5, False, "below the minimum 1.0 Hz"),
        (RATE, 9000.0, False, "above the maximum"),
        (RATE, float("nan"), False, "not finite"),
        (RATE, "fast", False, "expected a number"),
        (RATE, True, False, "expected a number"),
        (GAINS, [3.0, 4.0], True, ""),
        (GAINS, array.array("d", [3.0, 4.0]), True, ""),
        (GAINS, np.array([3.0, 4.0]), True, ""),
        (GAINS, [3.0], False, "expected 2 elements"),
        (GAINS, [3.0, -1.0], False, "element 1: -1.0 is below"),
        (GAINS, 3.0, False, "expected a list"),
        (MODE, "position", True, ""),
        (MODE, "torque", False, "not one of"),
        (COUNT, 4, True, ""),
        (COUNT, 4.0, False, "expected an integer"),
        (FLAG, 1, False, "expected a bool"),
    ],
)
def test_validate_accepts_valid_values_and_explains_refusals(spec, value, ok, reason):
    result = validate(spec, value)
    assert result[0] is ok
    assert reason in result[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "invalid characters"),
        ({"description": ""}, "description"),
        ({"default": 0.5}, "default is invalid"),
        ({"min": 10.0, "max": 1.0}, "min 10.0 > max"),
        ({"type": list}, "type"),
        ({"length": 3}, "length"),
    ],
)
def test_invalid_specs_fail_at_declaration(kwargs, message):
    fields = {
        "name": "rate_hz",
        "type": float,
        "default": 1000.0,
        "description": "rate",
        "min": 1.0,
        "max": 5000.0,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ParamSpec(**fields)


def test_schema_helpers():
    assert defaults([RATE, GAINS]) == {"rate_hz": 1000.0, "kp": (1.0, 2.0)}
    with pytest.raises(ValueError, match="declared twice"):
        check_schema([RATE, RATE])


# ----------------------------------------------------------------- ranges from physics
URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_description/urdf/panda.urdf"


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf_file(URDF)


def test_inertia_diagonal_is_pybullets_and_the_floor_bounds_it_from_below(model):
    import pybullet
    import pybullet_data

    client = pybullet.connect(pybullet.DIRECT)
    try:
        # The sim loads the URDF's own inertias (visuomotor_sim.robot), as here.
        robot = pybullet.loadURDF(f"{pybullet_data.getDataPath()}/franka_panda/panda.urdf",
                                  useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
                                  physicsClientId=client)
        movable = sum(
            pybullet.getJointInfo(robot, j, physicsClientId=client)[2] != pybullet.JOINT_FIXED
            for j in range(pybullet.getNumJoints(robot, physicsClientId=client))
        )
        rng = np.random.default_rng(0)
        floor = model.inertia_floor()
        for _ in range(50):
            q = rng.uniform(model.limits.lower, model.limits.upper)
            full = list(q) + [0.0] * (movable - model.n)
            mass = np.array(pybullet.calculateMassMatrix(robot, full, physicsClientId=client))
            diagonal = model.inertia_diagonal(q)
            np.testing.assert_allclose(diagonal, np.diag(mass)[: model.n], rtol=1e-9)
            assert (floor <= diagonal + 1e-12).all()
    finally:
        pybullet.disconnect(client)


def test_default_gains_are_stable_from_100_hz_up(model):
    for rate in (100.0, 500.0, 1000.0, 10000.0):
        config = ControllerConfig(rate_hz=rate)
        assert check_gains(config, model) == ""
        kp_max, kd_max = gain_bounds(model, rate)
        ratio = np.array(config.kd) * (1.0 / rate) / model.inertia_floor()
        assert (ratio <= MAX_DAMPING_STEP).all()
        assert (np.array(config.kp) <= kp_max).all() and (np.array(config.kd) <= kd_max).all()


def test_damping_beyond_the_discrete_stability_bound_is_refused_with_the_reason(model):
    kd = (1000.0,) * 7  # the kd: joints 1 and 7 chattered at the torque limit
    with pytest.raises(ValueError, match=r"kd\[0\] = 1000 N·m·s/rad on panda_joint1 .* 1000 Hz"):
        JointController(ControllerConfig(kd=kd), model)
    controller = JointController(ControllerConfig(), model)
    controller.activate()
    result = controller.update_config(kd=kd)
    assert not result.accepted and "kd·dt/I <= 0.5" in result.reason
    result = controller.update_config(hold_kd=(50.0, 50.0, 40.0, 30.0, 8.0, 6.0, 400.0))
    assert not result.accepted and "hold_kd[6]" in result.reason and "panda_joint7" in result.reason
    assert controller.config.kd == ControllerConfig().kd


def test_rate_change_is_checked_against_the_gains_in_force(model):
    controller = JointController(ControllerConfig(kd=(50.0, 50.0, 40.0, 30.0, 8.0, 6.0, 40.0)),
                                 model)
    result = controller.update_config(rate_hz=100.0)  # 40·0.01/0.6 = 0.67 > 0.5 on joint 7
    assert not result.accepted and "kd[6]" in result.reason and "raise rate_hz" in result.reason
    assert controller.update_config(rate_hz=500.0).accepted


def test_gains_of_an_interface_that_does_not_use_them_are_not_bounded(model):
    config = ControllerConfig(command_interface="position", rate_hz=20.0, target_timeout=0.5,
                              state_timeout=0.5)
    assert check_gains(config, model) == ""


@pytest.mark.parametrize("name", ["hold_kp", "hold_kd"])
def test_zero_hold_gains_are_refused_also_during_estop(model, name):
    zero = (0.0,) + (1.0,) * 6
    with pytest.raises(ValueError, match=rf"{name} must be > 0 .* \[0\]"):
        ControllerConfig(**{name: zero})
    controller = JointController(ControllerConfig(), model)
    controller.activate()
    controller.estop()
    result = controller.update_config(**{name: zero})
    assert not result.accepted and name in result.reason
    assert controller.estop_latched


def test_zero_tracking_gains_without_hold_gains_are_refused():
    with pytest.raises(ValueError, match="hold_kd in force"):
        ControllerConfig(kd=(0.0,) * 7)
    assert ControllerConfig(kd=(0.0,) * 7, hold_kd=load_robot().kd).kd == (0.0,) * 7


def test_effort_interface_below_100_hz_is_refused():
    with pytest.raises(ValueError, match=f"below {MIN_EFFORT_RATE_HZ:g} Hz"):
        ControllerConfig(rate_hz=50.0, target_timeout=1.0, state_timeout=1.0)
    ControllerConfig(command_interface="position", rate_hz=50.0, target_timeout=1.0,
                     state_timeout=1.0)


@pytest.mark.parametrize("name", ["target_timeout", "state_timeout"])
def test_timeouts_shorter_than_a_few_periods_are_refused(name):
    # rate_hz 1 made the watchdog 0.5 s late for a 0.1 s timeout.
    with pytest.raises(ValueError, match=f"{name} .* shorter than 5 control periods"):
        ControllerConfig(command_interface="position", rate_hz=1.0,
                         **{"target_timeout": 10.0, "state_timeout": 10.0, name: 0.1})
    ControllerConfig(rate_hz=1000.0, **{name: MIN_TIMEOUT_PERIODS * 1e-3})


def test_velocity_feedback_gain_is_bounded_by_the_rate():
    with pytest.raises(ValueError, match=r"velocity_feedback_gain .* overshoot"):
        ControllerConfig(command_interface="velocity", rate_hz=100.0,
                         velocity_feedback_gain=100.0)
