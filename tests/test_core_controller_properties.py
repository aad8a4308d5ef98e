"""Stateful property test of the JointController that writes the robot's commands.

A hypothesis ``RuleBasedStateMachine`` drives the real controller through
arbitrary interleavings of joint states (fresh, stale, from the future, NaN,
infinite, empty, wrong length, out of range, too fast, repeated, declared
faulty), targets (good, clamped, out of range, NaN, short, stale, future),
clock jumps backwards and forwards, frozen controller and wall clocks, a wall
clock running faster than the controller's (a slow simulation), e-stop /
reset, deadline overruns, activation, reset and live configuration changes
(unstable gains, zero hold gains, rates, timeouts, margins, tolerances), and
checks every invariant of docs/safety.md after every step against the test's
model (tests/safety_model.py).

Step counts: the ``ci`` profile runs at least ``CI_MIN_STEPS`` steps (about
40,000 controller updates); ``HYPOTHESIS_PROFILE=nightly`` runs about thirty
times as many.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from safety_model import HOME, MODEL, NIGHTLY, N, SafetyModel, profile

from visuomotor_core.controller import JointController, Mode
from visuomotor_core.controller_config import ControllerConfig, check_gains

#: Steps the ci profile must run (the node machine adds its own; see docs/safety.md):
#: well below the 5,950-7,000 its randomized runs make, above a machine that stalls.
CI_MIN_STEPS = 5000
COUNTS = {"steps": 0, "updates": 0}

offsets = st.lists(st.floats(-0.3, 0.3), min_size=N, max_size=N).map(np.array)
joint = st.integers(0, N - 1)
sample_kinds = st.sampled_from(
    ["good", "good", "good", "good", "edge", "stale", "future", "nan", "inf_velocity", "short",
     "empty", "out_of_range", "far_out", "fast", "repeat", "bad_stamp"]
)
clock_steps = st.one_of(
    st.just(1.0), st.floats(0.0, 3.0), st.sampled_from([0.0, 0.0, -1.0, 40.0, 300.0, -5000.0])
)  # in periods; -5000 and 300 are jumps, 0 a frozen clock
wall_steps = st.one_of(
    st.just(1.0), st.floats(0.0, 3.0), st.sampled_from([0.0, 0.0, 30.0, 200.0])
)  # in periods; the wall clock never runs backwards
config_changes = st.one_of(
    st.fixed_dictionaries({"velocity_scale": st.floats(0.05, 1.0)}),
    st.fixed_dictionaries({"effort_scale": st.floats(0.05, 1.0)}),
    st.fixed_dictionaries({"position_margin": st.sampled_from([0.0, 0.01, 0.05, 0.3])}),
    st.fixed_dictionaries({"state_tolerance": st.sampled_from([0.0, 0.05, 0.2])}),
    st.fixed_dictionaries({"rate_hz": st.sampled_from([20.0, 100.0, 250.0, 1000.0])}),
    st.fixed_dictionaries({"target_timeout": st.sampled_from([0.002, 0.05, 0.1, 1.0])}),
    st.fixed_dictionaries({"state_timeout": st.sampled_from([0.002, 0.02, 0.05, 0.5])}),
    st.fixed_dictionaries({"interpolation": st.sampled_from(["linear", "min_jerk", "none"])}),
    st.fixed_dictionaries({"kd": st.lists(st.sampled_from([0.0, 1.0, 50.0, 400.0, 1000.0]),
                                          min_size=N, max_size=N)}),
    st.fixed_dictionaries({"hold_kp": st.lists(st.sampled_from([0.0, 10.0, 600.0, 5e5]),
                                               min_size=N, max_size=N)}),
    st.fixed_dictionaries({"hold_kd": st.lists(st.sampled_from([0.0, 1.0, 30.0, 800.0]),
                                               min_size=N, max_size=N)}),
    st.fixed_dictionaries({"velocity_feedback_gain": st.sampled_from([0.0, 10.0, 900.0])}),
)


class ControllerMachine(RuleBasedStateMachine):
    """The controller, the two clocks the test owns, and the test's model."""

    @initialize(
        interface=st.sampled_from(["effort", "position", "velocity"]),
        interpolation=st.sampled_from(["linear", "min_jerk", "none"]),
        start=st.floats(1.0, 1e5),
    )
    def start(self, interface: str, interpolation: str, start: float) -> None:
        self.wall = 50.0
        self.now = start
        config = ControllerConfig(command_interface=interface, interpolation=interpolation)
        self.controller = JointController(config, MODEL, wall_clock=lambda: self.wall)
        self.controller.activate()
        self.active = True
        self.latched = False
        self.last_q = HOME.copy()
        self.last_stamp = start
        self.model = SafetyModel()

    @property
    def config(self) -> ControllerConfig:
        return self.controller.config

    # ------------------------------------------------------------------ samples
    @rule(kind=sample_kinds, offset=offsets, which=joint, clock=clock_steps, wall=wall_steps,
          age=st.floats(0.0, 0.4), fault=st.sampled_from(["", "", "", "", "", "loop stalled"]))
    def tick(self, kind, offset, which, clock, wall, age, fault):
        """One update: advance both clocks, then a joint-state sample of ``kind``."""
        COUNTS["steps"] += 1
        self._tick(kind, offset, which, clock, wall, age, fault)

    @rule(ticks=st.integers(1, 80), offset=offsets, drift=offsets, send_target=st.booleans(),
          clock=st.sampled_from([1.0, 1.0, 0.5, 0.0]),
          wall=st.sampled_from([1.0, 1.0, 0.0, 0.5, 2.0, 3.0]))
    def run(self, ticks, offset, drift, send_target, clock, wall):
        """A stretch of good samples, ``clock`` and ``wall`` periods apart on the two
        clocks (0: frozen; the wall faster: a slow simulation), the arm drifting along
        ``drift``, after a fresh target when ``send_target``: what lets the controller
        track, and its watchdogs run out."""
        COUNTS["steps"] += 1
        if send_target:
            self._target("good", offset, 0, 0.0, False)
        for k in range(ticks):
            self._tick("good", offset + drift * (k / 80.0), 0, clock, wall, 0.1, "")

    def _tick(self, kind, offset, which, clock, wall, age, fault):
        COUNTS["updates"] += 1
        period = self.config.period
        self.now += clock * period
        self.wall += wall * period
        limits, config = self.controller.limits, self.config
        q = np.clip(HOME + offset, limits.lower, limits.upper)
        qd = 0.1 * offset
        stamp = self.now - age * config.state_timeout
        if kind == "edge":  # beyond the robot's range but within state_tolerance: valid
            q[which] = limits.upper[which] + 0.5 * config.state_tolerance
        elif kind == "stale":
            stamp = self.now - 2.0 * config.state_timeout - age
        elif kind == "future":
            stamp = self.now + 2.0 * config.state_timeout + age
        elif kind == "nan":
            q[which] = math.nan
        elif kind == "inf_velocity":
            qd[which] = -math.inf
        elif kind == "short":
            q, qd = q[:-1], qd[:-1]
        elif kind == "empty":
            q, qd = np.array([]), np.array([])
        elif kind == "out_of_range":
            q[which] = limits.upper[which] + config.state_tolerance + 0.05 + age
        elif kind == "far_out":
            q[which] = 3.5 if which != 3 else -3.5  # the sample: 3.5 rad on joint 1
        elif kind == "fast":
            qd[which] = 2.5 * MODEL.limits.velocity[which]
        elif kind == "repeat":
            q, stamp = self.last_q, self.last_stamp
        elif kind == "bad_stamp":
            stamp = "later"
        if kind not in ("short", "empty", "bad_stamp"):
            self.last_q, self.last_stamp = q, stamp
        controller = self.controller
        mode_before = controller.mode
        valid = self.active and self.model.judge(controller, q, qd, stamp, self.now, self.wall,
                                                 fault)
        command = controller.update(self.now, q, qd, stamp, fault)
        assert np.isfinite(command.values).all()
        if not self.active:
            assert not command.valid and command.mode is Mode.INACTIVE
            return
        self.model.updated(controller, q, command.values if command.valid else None, valid,
                           mode_before, self.now, self.wall, self.latched)

    # ------------------------------------------------------------------ targets
    @rule(kind=st.sampled_from(["good", "good", "edge", "far", "nan", "short", "stale",
                                "future"]),
          offset=offsets, which=joint, age=st.floats(-0.4, 0.4), velocities=st.booleans())
    def target(self, kind, offset, which, age, velocities):
        COUNTS["steps"] += 1
        self._target(kind, offset, which, age, velocities)

    def _target(self, kind, offset, which, age, velocities):
        limits, config = self.controller.limits, self.config
        positions = HOME + offset
        stamp = self.now - age * config.max_target_age
        if kind == "edge":  # beyond the range, within out_of_range_tolerance: clamped
            positions[which] = limits.upper[which] + 0.5 * config.out_of_range_tolerance
        elif kind == "far":
            positions[which] = limits.upper[which] + config.out_of_range_tolerance + 0.1
        elif kind == "nan":
            positions[which] = math.nan
        elif kind == "short":
            positions = positions[:-1]
        elif kind == "stale":
            stamp = self.now - 2.0 * config.max_target_age
        elif kind == "future":
            stamp = self.now + 2.0 * config.max_target_age
        result = self.controller.set_target(positions, stamp, self.now,
                                            0.1 * offset if velocities else None)
        acceptable = kind in ("good", "edge") and self.active and not self.latched
        assert result.accepted == acceptable, result.reason
        if result.accepted:
            self.model.target_accepted(self.now, self.wall)
        else:
            assert result.reason

    # ------------------------------------------------------------------ operator, lifecycle
    @rule(event=st.sampled_from(["estop", "reset_estop", "reset_estop", "overrun", "reset",
                                 "activate", "deactivate"]))
    def operator(self, event):
        """Rarer events, one rule so that they do not crowd out the samples and targets."""
        COUNTS["steps"] += 1
        controller = self.controller
        if event == "estop":
            controller.estop("property test")
            self.latched = True
            if self.active:
                self.model.hold_began()
        elif event == "reset_estop":
            assert controller.reset_estop() == self.latched
            self.latched = False
        elif event == "overrun":
            tracking = controller.mode is Mode.TRACKING
            controller.hold("deadlines missed")
            if tracking:
                self.model.hold_began()
        elif event == "reset":
            controller.reset()
            self.model.forget()
        elif event == "activate" and not self.active:
            controller.activate()
            self.active = True
            self.model.forget()
        elif event == "deactivate" and self.active:
            controller.deactivate()
            self.active = False
            self.model.forget()

    @rule(changes=config_changes)
    def change_config(self, changes):
        COUNTS["steps"] += 1
        before = self.config
        result = self.controller.update_config(**changes)
        if not result.accepted:
            assert result.reason and self.config == before
            return
        # What was accepted is a configuration the controller allows on this robot.
        assert check_gains(self.config, MODEL) == ""
        assert (np.array(self.config.effective_hold_kp) > 0.0).all()
        assert (np.array(self.config.effective_hold_kd) > 0.0).all()

    # ------------------------------------------------------------------ invariants
    @invariant()
    def estop_stays_latched_until_reset(self):
        controller = self.controller
        assert controller.estop_latched == self.latched
        if self.active:
            assert (controller.mode is Mode.ESTOP) == self.latched
        else:
            assert controller.mode is Mode.INACTIVE

    @invariant()
    def reason_says_why_not_tracking_and_nothing_while_tracking(self):
        mode, reason = self.controller.mode, self.controller.reason
        assert (reason == "") == (mode is Mode.TRACKING)

    @invariant()
    def setpoints_lie_in_the_range_at_the_last_valid_state(self):
        self.model.check_setpoints(self.controller, self.active)


def test_no_interleaving_of_inputs_breaks_a_safety_invariant():
    COUNTS["steps"] = COUNTS["updates"] = 0
    run_state_machine_as_test(ControllerMachine, settings=profile("controller"))
    print(f"controller state machine: {COUNTS['steps']} steps, {COUNTS['updates']} updates")
    if not NIGHTLY:
        assert COUNTS["steps"] >= CI_MIN_STEPS, COUNTS
