"""Joint limits: validation, clamping, rate limiting, configured overrides."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visuomotor_core.limits import (
    JointLimits,
    LimitOverrides,
    check_vector,
    clamp_effort,
    clamp_position,
    clamp_velocity,
    effective_limits,
    rate_limit_sequence,
    rate_limit_step,
)

LIMITS = JointLimits(
    lower=[-2.0, -1.0, 0.0], upper=[2.0, 1.0, 3.0], velocity=[1.0, 2.0, 0.5], effort=[10, 20, 5]
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lower": [2.5, 0.0, 0.0]}, "lower >= upper at joint index \\[0\\]"),
        ({"velocity": [1.0, 0.0, 1.0]}, "velocity must be > 0"),
        ({"effort": [1.0, 1.0, -1.0]}, "effort must be > 0"),
        ({"upper": [1.0, 1.0]}, "upper has 2 entries"),
        ({"lower": [np.nan, 0.0, 0.0]}, "not finite"),
        ({"effort": [[1.0, 2.0, 3.0]]}, "1-D"),
    ],
)
def test_joint_limits_validation_names_the_problem(kwargs, message):
    fields = {
        "lower": LIMITS.lower,
        "upper": LIMITS.upper,
        "velocity": LIMITS.velocity,
        "effort": LIMITS.effort,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        JointLimits(**fields)


def test_joint_limit_arrays_are_read_only():
    with pytest.raises(ValueError):
        LIMITS.lower[0] = 5.0


def test_clamp_position_respects_the_margin():
    clamped = clamp_position(np.array([5.0, -5.0, 1.0]), LIMITS, margin=0.1)
    np.testing.assert_allclose(clamped, [1.9, -0.9, 1.0])


def test_margin_that_empties_a_range_is_refused():
    with pytest.raises(ValueError, match="no range"):
        LIMITS.position_bounds(1.5)


def test_clamp_effort_and_velocity_are_symmetric():
    np.testing.assert_allclose(clamp_effort(np.array([100.0, -100.0, 1.0]), LIMITS), [10, -20, 1])
    np.testing.assert_allclose(clamp_velocity(np.array([-9.0, 9.0, 0.1]), LIMITS), [-1, 2, 0.1])


def test_check_vector_rejects_non_finite_and_wrong_length():
    assert check_vector([0.0, 1.0, 2.0], 3, "q") == (True, "")
    ok, reason = check_vector([0.0, np.inf, 2.0], 3, "q")
    assert not ok and "index [1]" in reason
    ok, reason = check_vector([0.0, 1.0], 3, "q")
    assert not ok and "shape" in reason


def test_rate_limit_step_ignores_negative_time():
    np.testing.assert_allclose(
        rate_limit_step(np.zeros(3), np.ones(3), LIMITS.velocity, -1.0), np.zeros(3)
    )


@settings(max_examples=50, deadline=None)
@given(
    targets=st.lists(
        st.lists(st.floats(-10.0, 10.0), min_size=3, max_size=3), min_size=1, max_size=30
    ),
    dt=st.floats(1e-4, 0.1),
)
def test_rate_limited_sequence_never_moves_faster_than_the_limit(targets, dt):
    targets = np.array(targets)
    start = np.zeros(3)
    result = rate_limit_sequence(start, targets, LIMITS.velocity, dt)
    steps = np.abs(np.diff(np.vstack([start, result]), axis=0))
    assert (steps <= LIMITS.velocity * dt * (1 + 1e-9) + 1e-12).all()
    # A target within reach is reached exactly.
    reachable = np.abs(targets[0]) <= LIMITS.velocity * dt
    np.testing.assert_allclose(result[0][reachable], targets[0][reachable])


def test_effective_limits_scale_and_never_widen():
    overrides = LimitOverrides(
        velocity_scale=0.5,
        effort_scale=0.5,
        position_margin=0.1,
        upper=(5.0, 0.5, 5.0),
        effort=(100.0, 1.0, 100.0),
    )
    limits = effective_limits(LIMITS, overrides)
    np.testing.assert_allclose(limits.velocity, LIMITS.velocity * 0.5)
    np.testing.assert_allclose(limits.effort, [5.0, 1.0, 2.5])
    np.testing.assert_allclose(limits.upper, [1.9, 0.5, 2.9])
    np.testing.assert_allclose(limits.lower, LIMITS.lower + 0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"velocity_scale": 0.0}, "velocity_scale"),
        ({"effort_scale": 1.01}, "effort_scale"),
        ({"position_margin": -1.0}, "position_margin"),
        ({"lower": (np.nan, 0.0, 0.0)}, "lower"),
    ],
)
def test_limit_overrides_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LimitOverrides(**kwargs)


def test_override_of_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 entries"):
        effective_limits(LIMITS, LimitOverrides(velocity=(1.0, 1.0)))
