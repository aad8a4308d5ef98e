"""Joint limits: validation and the robot's limits after the configured overrides.

Whether the controller keeps its commands within these limits is tested on the
controller itself (tests/test_core_controller.py, tests/test_core_controller_properties.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from visuomotor_core.limits import JointLimits, LimitOverrides, check_vector, effective_limits

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


def test_margin_that_empties_a_range_is_refused():
    with pytest.raises(ValueError, match="lower >= upper"):
        effective_limits(LIMITS, LimitOverrides(position_margin=1.5))


def test_check_vector_rejects_non_finite_and_wrong_length():
    assert check_vector([0.0, 1.0, 2.0], 3, "q") == (True, "")
    ok, reason = check_vector([0.0, np.inf, 2.0], 3, "q")
    assert not ok and "index [1]" in reason
    ok, reason = check_vector([0.0, 1.0], 3, "q")
    assert not ok and "shape" in reason


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
