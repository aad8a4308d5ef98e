"""The safety tests' model of the controller, and the invariants it holds the controller to.

Shared by the stateful property tests of the JointController
(tests/test_core_controller_properties.py) and of the controller node's callbacks
(tests/test_controller_node_safety.py). The model judges each joint-state sample
the way docs/safety.md says the controller must (length, finiteness, the robot's
position range plus ``state_tolerance``, speed, staleness on the controller
clock and on the wall clock, a clock running backwards), remembers the last
valid sample and when a hold began, and after every update checks the
controller against it. Hypothesis settings profiles for both tests live here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

from visuomotor_core.controller import MAX_TICK_PERIODS, JointController, Mode
from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.joint_state_check import MEASURED_SPEED_FACTOR
from visuomotor_core.robot_model import RobotModel

URDF = Path(__file__).resolve().parents[1] / "ros2_ws/src/visuomotor_description/urdf/panda.urdf"
MODEL = RobotModel.from_urdf_file(URDF)
HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
N = MODEL.n
#: Slack on float comparisons of limits and steps.
EPS = 1e-9
#: A hold began before any valid sample: the first valid one becomes its source.
PENDING = "pending"

#: ``HYPOTHESIS_PROFILE=nightly`` selects the long profile of the safety state machines.
NIGHTLY = os.environ.get("HYPOTHESIS_PROFILE") == "nightly"
_HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]
settings.register_profile("safety-controller-ci", max_examples=120, stateful_step_count=60,
                          deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("safety-controller-nightly", max_examples=2500,
                          stateful_step_count=100, deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("safety-node-ci", max_examples=75, stateful_step_count=80,
                          deadline=None, suppress_health_check=_HEALTH)
settings.register_profile("safety-node-nightly", max_examples=1200, stateful_step_count=120,
                          deadline=None, suppress_health_check=_HEALTH)


def profile(machine: str) -> settings:
    """The settings of ``machine`` ("controller" or "node") for this run."""
    return settings.get_profile(f"safety-{machine}-{'nightly' if NIGHTLY else 'ci'}")


class SafetyModel:
    """What the controller has seen, by the rules of docs/safety.md.

    ``now`` is the controller's clock (sim or ROS time), ``wall`` the wall clock,
    both owned by the test. Call :meth:`forget` where the controller forgets its
    state (activation, reset, a new configuration).
    """

    def __init__(self) -> None:
        self.forget()
        self.fault_reason: str | None = None

    def forget(self) -> None:
        self.last_valid: np.ndarray | None = None
        self.expected_source: np.ndarray | str = PENDING
        self.stamp_seen = math.nan
        self.stamp_wall = math.nan
        self.last_update: float | None = None
        self.last_target_now = -math.inf
        self.last_target_wall = -math.inf
        self.previous_reference: np.ndarray | None = None

    # ------------------------------------------------------------------ judgements
    def judge(self, controller: JointController, q, qd, stamp, now: float, wall: float,
              fault: str = "") -> bool:
        """Whether the controller may use this sample (tracks its stamp as the controller
        does: a stamp that changed is fresh on the wall clock from now on)."""
        try:
            stamp_value = float(stamp)
        except (TypeError, ValueError):
            stamp_value = math.nan
        if math.isfinite(stamp_value) and stamp_value != self.stamp_seen:
            self.stamp_seen, self.stamp_wall = stamp_value, wall
        if fault or not math.isfinite(stamp_value):
            return False
        q, qd = np.asarray(q, dtype=float), np.asarray(qd, dtype=float)
        if q.shape != (N,) or qd.shape != (N,):
            return False
        limits, config = controller.limits, controller.config
        low, high = limits.lower - config.state_tolerance, limits.upper + config.state_tolerance
        if not ((q >= low).all() and (q <= high).all()):
            return False
        if not (np.abs(qd) <= MEASURED_SPEED_FACTOR * MODEL.limits.velocity).all():
            return False
        if not math.isfinite(now) or (self.last_update is not None and now < self.last_update):
            return False
        timeout = config.state_timeout
        age = now - stamp_value
        return not (age > timeout or age < -timeout or wall - self.stamp_wall > timeout)

    def target_fresh(self, config: ControllerConfig, now: float, wall: float) -> bool:
        timeout = config.target_timeout
        return now - self.last_target_now <= timeout and wall - self.last_target_wall <= timeout

    # ------------------------------------------------------------------ events
    def target_accepted(self, now: float, wall: float) -> None:
        self.last_target_now, self.last_target_wall = now, wall

    def hold_began(self) -> None:
        """A hold or e-stop began now: it holds the last valid sample (or the next)."""
        self.expected_source = PENDING if self.last_valid is None else self.last_valid.copy()

    # ------------------------------------------------------------------ the update
    def updated(self, controller: JointController, q, values: np.ndarray | None, valid: bool,
                mode_before: Mode, now: float, wall: float, latched: bool) -> None:
        """Check one update of an active controller on sample positions ``q``: ``values``
        is the command it wrote (None when none), ``valid`` the model's judgement of
        the sample (:meth:`judge`, called before the update)."""
        if valid:
            self.last_valid = np.array(q, dtype=float)
            if isinstance(self.expected_source, str):
                self.expected_source = self.last_valid.copy()
        # Invariant: a command only with a valid state seen since activation.
        assert (values is not None) == (self.last_valid is not None), (
            "commanded without a valid state" if values is not None else "no command")
        if values is None:
            return
        last_update = self.last_update
        if math.isfinite(now):
            self.last_update = now
        mode = controller.mode
        if mode_before is Mode.TRACKING and mode is not Mode.TRACKING:
            self.hold_began()
        # Invariant: tracking only on a valid sample and a target fresh on both clocks
        # (hold within target_timeout by either clock), and then always.
        fresh = self.target_fresh(controller.config, now, wall)
        if mode is Mode.TRACKING:
            assert valid and fresh, controller.reason
        elif mode_before is Mode.TRACKING and not latched:
            assert not (valid and fresh), controller.reason
        # Invariant: HOLD names a joint-state fault while it lasts, and no longer.
        if mode is Mode.HOLD:
            if valid:
                assert controller.reason != self.fault_reason, "a cleared fault is the reason"
            else:
                self.fault_reason = controller.reason
        self.check_command(controller, values, valid)
        # Invariant: the reference (the position command) moves at most vmax·dt per
        # update, dt the controller-clock time since the last, at most MAX_TICK_PERIODS.
        reference = controller.reference[0]
        if self.previous_reference is not None:
            period = controller.config.period
            dt = period if last_update is None else now - last_update
            dt = min(max(dt, 0.0), MAX_TICK_PERIODS * period) if math.isfinite(dt) else 0.0
            bound = controller.limits.velocity * dt
            step = np.abs(reference - self.previous_reference)
            assert (step <= bound + EPS).all(), (step, bound)
        self.previous_reference = reference

    @staticmethod
    def check_command(controller: JointController, values: np.ndarray, valid: bool) -> None:
        """Every command finite and within the robot's limits; a faulty sample never
        reaches it (the hold then needs no measurement)."""
        limits = controller.limits
        interface = controller.config.command_interface
        reference = controller.reference[0]
        assert np.isfinite(values).all(), values
        if interface == "effort":
            assert (np.abs(values) <= limits.effort + EPS).all(), values
        elif interface == "position":
            assert (values >= limits.lower - EPS).all() and (values <= limits.upper + EPS).all()
            np.testing.assert_array_equal(values, reference)
        else:
            assert (np.abs(values) <= limits.velocity + EPS).all(), values
        if controller.mode is Mode.TRACKING or valid:
            return
        if interface == "effort":
            expected = np.clip(MODEL.gravity_torques(reference), -limits.effort, limits.effort)
            np.testing.assert_allclose(values, expected, atol=1e-9)
        elif interface == "velocity":
            np.testing.assert_array_equal(values, np.zeros(N))

    def check_setpoints(self, controller: JointController, active: bool) -> None:
        """The reference in the range; the hold target the last valid state before the
        hold began, clamped into the range."""
        limits = controller.limits
        if active and self.last_valid is not None:
            reference = controller.reference[0]
            assert (reference >= limits.lower - EPS).all()
            assert (reference <= limits.upper + EPS).all()
        if controller.mode not in (Mode.HOLD, Mode.ESTOP):
            return
        target = controller.hold_target
        if isinstance(self.expected_source, str):
            assert target is None
            return
        np.testing.assert_array_equal(controller.hold_source, self.expected_source)
        np.testing.assert_array_equal(
            target, np.clip(self.expected_source, limits.lower, limits.upper))
