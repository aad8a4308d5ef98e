"""Parameter schemas for nodes, independent of ROS.

A schema is a list of :class:`ParamSpec`: name, type, default, description,
unit, valid range and whether the parameter may change at run time. Nodes
declare their ROS parameters from it (the node layer maps a spec to an
``rcl_interfaces/ParameterDescriptor``) and check every live change with
:func:`validate` before it reaches the core, so an invalid value is refused
with a reason instead of reaching the control loop.

Array parameters are specs whose default is a list or tuple: ``type`` is then
the element type and ``length`` (optional) the required number of elements;
``min``/``max``/``choices`` apply to every element.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Element types a parameter may have (the ROS 2 scalar parameter types).
PARAM_TYPES: tuple[type, ...] = (bool, int, float, str)


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter.

    Attributes:
        name: parameter name (ROS naming: letters, digits, '_' and '.').
        type: element type, one of bool, int, float, str.
        default: default value; a list/tuple makes this an array parameter.
        description: what the parameter does (shown by ``ros2 param describe``).
        unit: SI unit of the value ("" when dimensionless).
        min, max: inclusive numeric range (int/float only), None for unbounded.
        read_only: True when the value may only be set at start-up.
        choices: allowed values (str/int parameters), None for any.
        length: required element count of an array parameter, None for any.
    """

    name: str
    type: type
    default: Any
    description: str
    unit: str = ""
    min: float | None = None
    max: float | None = None
    read_only: bool = False
    choices: tuple[Any, ...] | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_." for c in self.name):
            raise ValueError(f"ParamSpec name {self.name!r} is empty or has invalid characters")
        if self.type not in PARAM_TYPES:
            raise ValueError(f"ParamSpec '{self.name}': type must be one of {PARAM_TYPES}")
        if not self.description:
            raise ValueError(f"ParamSpec '{self.name}': description is empty")
        if (self.min is not None or self.max is not None) and self.type not in (int, float):
            raise ValueError(f"ParamSpec '{self.name}': min/max only apply to int and float")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"ParamSpec '{self.name}': min {self.min} > max {self.max}")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if isinstance(self.default, list):
            object.__setattr__(self, "default", tuple(self.default))
        if self.length is not None and (not self.is_array or self.length < 0):
            raise ValueError(f"ParamSpec '{self.name}': length needs an array default, >= 0")
        ok, reason = validate(self, self.default)
        if not ok:
            raise ValueError(f"ParamSpec '{self.name}': default is invalid: {reason}")

    @property
    def is_array(self) -> bool:
        """True when the parameter holds a list of ``type`` values."""
        return isinstance(self.default, tuple | list)


def _check_scalar(spec: ParamSpec, value: Any) -> str:
    """'' when ``value`` is a valid element of ``spec``, else the reason."""
    kind = spec.type
    if kind is bool:
        if not isinstance(value, bool):
            return f"expected a bool, got {type(value).__name__}"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return f"expected an integer, got {type(value).__name__}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"expected a number, got {type(value).__name__}"
        if not math.isfinite(value):
            return f"{value} is not finite"
    elif not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if spec.min is not None and value < spec.min:
        return f"{value} is below the minimum {spec.min}{_unit(spec)}"
    if spec.max is not None and value > spec.max:
        return f"{value} is above the maximum {spec.max}{_unit(spec)}"
    if spec.choices is not None and value not in spec.choices:
        return f"{value!r} is not one of {list(spec.choices)}"
    return ""


def _unit(spec: ParamSpec) -> str:
    return f" {spec.unit}" if spec.unit else ""


def validate(spec: ParamSpec, value: Any) -> tuple[bool, str]:
    """Check ``value`` against ``spec``; returns (ok, reason), reason "" when ok."""
    if not spec.is_array:
        reason = _check_scalar(spec, value)
        return (not reason), reason
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return False, f"expected a list of {spec.type.__name__}, got {type(value).__name__}"
    items = list(value)
    if spec.length is not None and len(items) != spec.length:
        return False, f"expected {spec.length} elements, got {len(items)}"
    for index, item in enumerate(items):
        reason = _check_scalar(spec, item)
        if reason:
            return False, f"element {index}: {reason}"
    return True, ""


def check_schema(schema: Iterable[ParamSpec]) -> list[ParamSpec]:
    """Return the schema as a list; ValueError when two specs share a name."""
    specs = list(schema)
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"parameter '{spec.name}' is declared twice")
        seen.add(spec.name)
    return specs


def defaults(schema: Iterable[ParamSpec]) -> dict[str, Any]:
    """{name: default} for every spec of ``schema``."""
    return {spec.name: spec.default for spec in schema}
