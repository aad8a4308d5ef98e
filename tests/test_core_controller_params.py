"""Parameter schemas: spec validation and value checks used by the nodes."""

from __future__ import annotations

import array

import numpy as np
import pytest

from visuomotor_core.params import ParamSpec, check_schema, defaults, validate, validate_all

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


def test_validate_all_refuses_unknown_and_read_only_changes():
    schema = [RATE, COUNT]
    assert validate_all(schema, {"rate_hz": 10.0}) == (True, "")
    assert validate_all(schema, {"nope": 1})[1] == "unknown parameter 'nope'"
    assert validate_all(schema, {"count": 2}, allow_read_only=False)[1] == "'count' is read-only"
    ok, reason = validate_all(schema, {"rate_hz": -1.0})
    assert not ok and reason.startswith("'rate_hz'")


def test_schema_helpers():
    assert defaults([RATE, GAINS]) == {"rate_hz": 1000.0, "kp": (1.0, 2.0)}
    with pytest.raises(ValueError, match="declared twice"):
        check_schema([RATE, RATE])
