"""Reach task: success needs the full dwell inside the tolerance before the timeout."""

from __future__ import annotations

import numpy as np
import pytest

from visuomotor_sim.task import ReachTask, TaskConfig

DT = 0.05


class FakeArm:
    """Grasp point and effort meter the test moves by hand."""

    def __init__(self) -> None:
        self.point = np.array([1.0, 0.0, 0.0])
        self.effort = 10.0

    def grasp_point(self) -> np.ndarray:
        return self.point.copy()

    def effort_meter(self) -> float:
        return self.effort


def make_task(**config) -> tuple[ReachTask, FakeArm]:
    arm = FakeArm()
    task = ReachTask(TaskConfig(**config), arm.grasp_point, arm.effort_meter)
    task.reset(np.zeros(3), now=0.0)
    return task, arm


def advance(task: ReachTask, start: float, duration: float):
    status = None
    for k in range(1, round(duration / DT) + 1):
        status = task.update(start + k * DT)
    return status


def test_success_after_dwell_inside_tolerance_with_time_and_effort():
    task, arm = make_task(tolerance=0.02, dwell=0.3, timeout=5.0)
    arm.point = np.array([0.01, 0.0, 0.0])
    arm.effort = 12.5
    status = advance(task, 0.0, 0.25)
    assert not status.success and status.error == pytest.approx(0.01)
    status = advance(task, 0.25, 0.2)
    assert status.success and not status.timed_out and status.done
    assert status.time_to_success == pytest.approx(0.35)  # entered at 0.05, dwell 0.3
    assert status.effort == pytest.approx(2.5)


def test_leaving_the_tolerance_restarts_the_dwell():
    task, arm = make_task(tolerance=0.02, dwell=0.3, timeout=5.0)
    arm.point = np.array([0.01, 0.0, 0.0])
    advance(task, 0.0, 0.2)
    arm.point = np.array([0.05, 0.0, 0.0])
    task.update(0.25)
    arm.point = np.array([0.01, 0.0, 0.0])
    assert not advance(task, 0.25, 0.25).success
    assert advance(task, 0.5, 0.1).success


def test_timeout_without_success_and_success_is_sticky():
    task, _ = make_task(tolerance=0.02, dwell=0.3, timeout=1.0)
    status = advance(task, 0.0, 1.0)
    assert status.timed_out and not status.success and status.time_to_success is None
    task2, arm2 = make_task(tolerance=0.02, dwell=0.1, timeout=1.0)
    arm2.point = np.zeros(3)
    assert advance(task2, 0.0, 0.2).success
    arm2.point = np.ones(3)
    status = advance(task2, 0.2, 1.0)
    assert status.success and not status.timed_out and status.error > 1.0


def test_reset_restarts_clock_and_effort():
    task, arm = make_task(dwell=0.1, timeout=1.0)
    arm.point = np.zeros(3)
    assert advance(task, 0.0, 0.2).success
    arm.effort = 50.0
    arm.point = np.ones(3)
    status = task.reset(np.ones(3) * 2.0, now=3.0)
    assert not status.success and status.time == 0.0 and status.effort == 0.0
    np.testing.assert_array_equal(task.target, np.full(3, 2.0))


def test_config_validation():
    with pytest.raises(ValueError, match="tolerance"):
        TaskConfig(tolerance=0.0)
    with pytest.raises(ValueError, match="timeout"):
        TaskConfig(dwell=1.0, timeout=0.5)
