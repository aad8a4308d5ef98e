"""Property tests: no input sequence makes the controller output non-finite or out of limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visuomotor_core.controller import ControllerConfig, JointController, Mode
from visuomotor_core.robot_model import RobotModel

URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_bringup/urdf/panda.urdf"
MODEL = RobotModel.from_urdf_file(URDF)
HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])

# Any float, weighted toward the troublesome ones.
wild = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0, 1e3, -1e3]),
    st.floats(-4.0, 4.0),
)
vector = st.one_of(
    st.lists(wild, min_size=7, max_size=7),
    st.lists(st.floats(-0.3, 0.3), min_size=7, max_size=7).map(lambda d: (HOME + d).tolist()),
    st.lists(st.floats(-3.0, 3.0), min_size=0, max_size=9),  # wrong lengths too
)
time_step = st.one_of(
    st.just(1e-3), st.floats(-1.0, 1.0), st.sampled_from([0.0, 0.2, -5.0, np.nan, np.inf])
)
operation = st.one_of(
    st.tuples(st.just("update"), time_step, vector, vector, st.floats(-0.2, 0.2)),
    st.tuples(st.just("target"), vector, st.floats(-0.5, 0.5), st.booleans(), vector),
    st.tuples(st.just("estop")),
    st.tuples(st.just("reset_estop")),
    st.tuples(st.just("reset")),
    st.tuples(st.just("activate")),
    st.tuples(st.just("deactivate")),
    st.tuples(st.just("gains"), vector, vector),
    st.tuples(st.just("scale"), st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)),
)


def _assert_within_limits(controller: JointController, values: np.ndarray) -> None:
    limits = controller.limits
    assert values.shape == (7,)
    assert np.isfinite(values).all(), values
    interface = controller.config.command_interface
    if interface == "effort":
        assert (np.abs(values) <= limits.effort).all(), values
    elif interface == "position":
        assert (values >= limits.lower).all() and (values <= limits.upper).all(), values
    else:
        assert (np.abs(values) <= limits.velocity).all(), values


def _apply(controller: JointController, op: tuple, clock: list[float]) -> None:
    kind = op[0]
    if kind == "update":
        _, step, q, qd, state_lag = op
        clock[0] += step
        command = controller.update(clock[0], q, qd, clock[0] - state_lag)
        _assert_within_limits(controller, command.values)
        assert isinstance(command.mode, Mode)
        if command.mode is not Mode.TRACKING:
            assert command.reason
    elif kind == "target":
        _, positions, age, with_velocity, velocities = op
        result = controller.set_target(
            positions, clock[0] - age, clock[0], velocities if with_velocity else None
        )
        assert result.accepted or result.reason
        if controller.estop_latched:
            assert not result.accepted
    elif kind == "gains":
        result = controller.set_gains(op[1], op[2])
        assert result.accepted or result.reason
    elif kind == "scale":
        result = controller.update_config(velocity_scale=op[1], effort_scale=op[2])
        assert result.accepted == (0.0 < op[1] <= 1.0 and 0.0 < op[2] <= 1.0)
    else:
        getattr(controller, kind)()


@pytest.mark.parametrize("interface", ["effort", "position", "velocity"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(operations=st.lists(operation, min_size=1, max_size=40), start=st.floats(0.0, 1e6))
def test_output_is_always_finite_and_within_limits(interface, operations, start):
    controller = JointController(ControllerConfig(command_interface=interface), MODEL)
    controller.activate()
    clock = [start]
    controller.update(clock[0], HOME, np.zeros(7), clock[0])
    for op in operations:
        _apply(controller, op, clock)
    # Whatever happened, one more update with a good state is still safe.
    command = controller.update(clock[0] + 1e-3, HOME, np.zeros(7), clock[0] + 1e-3)
    _assert_within_limits(controller, command.values)


@settings(max_examples=40, deadline=None)
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("update"), time_step, vector, vector, st.floats(-0.2, 0.2)),
            st.tuples(st.just("target"), vector, st.floats(-0.5, 0.5), st.booleans(), vector),
            st.tuples(st.just("reset")),
        ),
        max_size=30,
    )
)
def test_estop_stays_latched_whatever_happens_until_reset_estop(operations):
    controller = JointController(ControllerConfig(), MODEL)
    controller.activate()
    controller.estop()
    clock = [0.0]
    for op in operations:
        _apply(controller, op, clock)
        assert controller.mode is Mode.ESTOP
    controller.reset_estop()
    assert controller.mode is Mode.HOLD
