"""Shared fixtures: an isolated DDS domain per test session and rclpy helpers."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import pytest

# Keep DDS traffic on this machine and away from other test runs on it.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 80))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture
def ros_context() -> Iterator[object]:
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


def spin_until(
    executor, condition: Callable[[], bool], timeout: float, period: float = 0.01
) -> bool:
    """Spin ``executor`` until ``condition()`` is true or ``timeout`` (s) passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        executor.spin_once(timeout_sec=period)
    return condition()
