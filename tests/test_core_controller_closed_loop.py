"""Closed loop with PyBullet (torque control at 1 kHz, nominal dynamics): step tracking and hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pybullet
import pybullet_data
import pytest

from visuomotor_core.controller import JointController, Mode
from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.robot_model import RobotModel

URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_description/urdf/panda.urdf"
HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
STEP = np.array([0.3, 0.3, -0.3, 0.3, 0.3, -0.3, 0.3])
DT = 1e-3
ARM = list(range(7))
POLICY_TICKS = 50  # targets at 20 Hz


class _BulletArm:
    """Panda on a fixed base, arm joints torque-controlled, fingers held at 0."""

    def __init__(self) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        pybullet.setGravity(0.0, 0.0, -9.81, physicsClientId=self.client)
        pybullet.setTimeStep(DT, physicsClientId=self.client)
        self.robot = pybullet.loadURDF(
            str(Path(pybullet_data.getDataPath()) / "franka_panda/panda.urdf"),
            useFixedBase=True,
            physicsClientId=self.client,
        )
        for joint, value in enumerate(HOME):
            pybullet.resetJointState(self.robot, joint, value, physicsClientId=self.client)
        pybullet.setJointMotorControlArray(
            self.robot, ARM, pybullet.VELOCITY_CONTROL, forces=[0.0] * 7,
            physicsClientId=self.client,
        )

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        states = pybullet.getJointStates(self.robot, ARM, physicsClientId=self.client)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def step(self, torques: np.ndarray) -> None:
        pybullet.setJointMotorControlArray(
            self.robot, ARM, pybullet.TORQUE_CONTROL, forces=torques.tolist(),
            physicsClientId=self.client,
        )
        pybullet.stepSimulation(physicsClientId=self.client)

    def close(self) -> None:
        pybullet.disconnect(self.client)


@pytest.fixture
def arm():
    bullet_arm = _BulletArm()
    yield bullet_arm
    bullet_arm.close()


def _run(arm: _BulletArm, controller: JointController, target, ticks: int, start: int = 0):
    """Run ``ticks`` control periods; returns the max |q - target| (rad) per tick."""
    errors = []
    for k in range(start, start + ticks):
        now = k * DT
        q, qd = arm.state()
        if target is not None and k % POLICY_TICKS == 0:
            assert controller.set_target(target, now, now).accepted
        command = controller.update(now, q, qd, now)
        assert command.valid and np.isfinite(command.values).all()
        arm.step(command.values)
        errors.append(np.abs(q - (HOME if target is None else target)).max())
    return np.array(errors)


def test_step_target_is_tracked_to_1e_2_rad_within_one_second(arm):
    controller = JointController(ControllerConfig(), RobotModel.from_urdf_file(URDF))
    controller.activate()
    target = HOME + STEP
    errors = _run(arm, controller, target, ticks=1000)
    assert controller.mode is Mode.TRACKING
    assert errors[0] == pytest.approx(0.3)
    assert errors[-1] < 1e-2
    settled = int(np.argmax(errors < 1e-2))
    assert (errors[settled:] < 1e-2).all()  # stays there: no chatter at the effort limits


def test_hold_keeps_the_arm_still_when_targets_stop(arm):
    controller = JointController(ControllerConfig(), RobotModel.from_urdf_file(URDF))
    controller.activate()
    _run(arm, controller, HOME, ticks=100)  # targets for 0.1 s, then none
    drift = _run(arm, controller, None, ticks=500, start=100)
    assert controller.mode is Mode.HOLD
    assert drift.max() < 1e-2
