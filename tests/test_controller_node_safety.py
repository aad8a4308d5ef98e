"""The controller node's safety through real rclpy: e-stop latch across lifecycle
transitions and restarts, teardown of everything configure created, the wall-clock
backstop under a frozen /clock, parameter ranges, and a stateful property test of
the node's own callbacks.

The nodes use the topics backend on a fresh rclpy context, with ``use_sim_time``
(the test sets the node's clock through its own /clock callback) and a wall
clock the test owns (``ControllerNode(wall_clock=...)``). The state machine
feeds joint states through the backend's joint-state callback (the
``joint_states`` trigger ticks the controller there), targets through the
node's target callback, and e-stop / reset through its service callbacks; it
drives lifecycle transitions, node restarts and live parameter changes, and
checks every invariant of docs/safety.md after every step (tests/safety_model.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from safety_model import HOME, MODEL, NIGHTLY, N, SafetyModel, profile
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from visuomotor_core.controller import Mode
from visuomotor_core.robot_description import load_robot
from visuomotor_core.timing import wait_until
from visuomotor_interfaces.msg import JointTargets
from visuomotor_ros import graph
from visuomotor_ros.controller_node import BACKSTOP_FAULT, ControllerNode
from visuomotor_ros.node_common import seconds_to_time, time_to_seconds

NAMES = list(load_robot().arm_joints)
PERIOD = 1e-3  # s, the default rate_hz 1000
#: Steps the ci profile of the node machine must run (see docs/safety.md).
CI_MIN_STEPS = 4000
COUNTS = {"steps": 0, "ticks": 0}


class WallClock:
    """The node's wall clock, set by the test (s)."""

    def __init__(self, start: float = 50.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def make_node(context: Context, wall=time.monotonic, **params) -> ControllerNode:
    """A controller node on the topics backend, sim time, ticking once per joint state."""
    values = {"trigger": "joint_states", "use_sim_time": True, **params}
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return ControllerNode(context=context, wall_clock=wall, parameter_overrides=overrides)


def set_clock(node: ControllerNode, seconds: float) -> None:
    """Deliver a /clock message to the node's own /clock callback."""
    node._time_source.clock_callback(Clock(clock=seconds_to_time(seconds)))


def joint_state(q, qd, stamp: float, names=NAMES) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in q],
                     velocity=[float(v) for v in qd], effort=[])
    msg.header.stamp = seconds_to_time(stamp)
    return msg


def targets(positions, stamp: float, names=NAMES) -> JointTargets:
    msg = JointTargets(name=list(names), position=[float(v) for v in positions])
    msg.header.stamp = seconds_to_time(stamp)
    msg.policy_stamp = msg.header.stamp
    return msg


def call(callback) -> Trigger.Response:
    return callback(Trigger.Request(), Trigger.Response())


def lifecycle_state(node: ControllerNode) -> str:
    return node._state_machine.current_state[1]


def publishers_on(node: ControllerNode, suffix: str) -> int:
    return sum(p.topic_name.endswith(suffix) for p in node.publishers)


@pytest.fixture
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.try_shutdown(context=ctx)


def tracking_node(context: Context, wall: WallClock, now: float = 10.0, **params):
    """A node tracking HOME: clock at ``now``, one joint state, one target."""
    node = make_node(context, wall=wall, **params)
    set_clock(node, now)
    node._on_targets(targets(HOME, now))
    node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), now))
    assert node.controller.mode is Mode.TRACKING, node.controller.reason
    return node


# --------------------------------------------------------------------------- e-stop latch
def test_estop_stays_latched_across_deactivate_cleanup_configure_activate(context):
    wall = WallClock()
    node = tracking_node(context, wall)
    try:
        assert call(node._on_estop).success
        for transition in (node.trigger_deactivate, node.trigger_cleanup,
                           node.trigger_configure, node.trigger_activate):
            assert transition() == TransitionCallbackReturn.SUCCESS
            assert node.estop_latched
        assert node.controller.mode is Mode.ESTOP and node.controller.estop_latched
        refused = node.controller.targets_refused
        node._on_targets(targets(HOME, 10.0))
        assert node.controller.targets_refused == refused + 1, "targets refused while latched"
        node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), 10.0))
        assert node.controller.mode is Mode.ESTOP
        response = call(node._on_reset_estop)
        assert response.success and node.controller.mode is Mode.HOLD
    finally:
        node.destroy_node()


def test_estop_stays_latched_across_a_node_restart_in_the_process(context):
    node = make_node(context)
    assert call(node._on_estop).success
    node.destroy_node()
    node = make_node(context)  # same name, same process (context)
    try:
        assert node.estop_latched and node.controller.mode is Mode.ESTOP
        assert call(node._on_reset_estop).success
        assert not node.estop_latched
    finally:
        node.destroy_node()
    other = Context()
    rclpy.init(context=other)
    try:
        fresh = make_node(other)  # another process's session starts without a latch
        assert not fresh.estop_latched
        fresh.destroy_node()
    finally:
        rclpy.try_shutdown(context=other)


def test_estop_is_served_and_latches_in_every_lifecycle_state(context):
    node = make_node(context, autostart=False)
    try:
        assert lifecycle_state(node) == "unconfigured"
        assert call(node._on_estop).success  # no controller yet: the latch waits for one
        node.trigger_configure()
        node.trigger_activate()
        assert node.controller.mode is Mode.ESTOP
    finally:
        node.destroy_node()


def test_reset_estop_with_nothing_latched_answers_nothing_to_release(context):
    node = make_node(context)
    try:
        response = call(node._on_reset_estop)
        assert not response.success and "nothing to release" in response.message
        call(node._on_estop)
        response = call(node._on_reset_estop)
        assert response.success and response.message == "e-stop released"
        assert not call(node._on_reset_estop).success
    finally:
        node.destroy_node()


# --------------------------------------------------------------------------- teardown
def test_cleanup_destroys_every_entity_configure_created(context):
    node = make_node(context)
    try:
        created = (len(list(node.publishers)), len(list(node.subscriptions)),
                   len(list(node.services)), len(list(node.timers)), len(list(node.guards)))
        for _ in range(3):
            node.trigger_deactivate()
            node.trigger_cleanup()
            assert publishers_on(node, graph.DEFAULT_COMMAND_TOPIC) == 0
            assert publishers_on(node, graph.CONTROLLER_STATE) == 0
            assert publishers_on(node, graph.DIAGNOSTICS) == 0
            assert not any(s.topic_name.endswith(graph.JOINT_STATES) for s in node.subscriptions)
            assert len(list(node.timers)) == 0 and len(list(node.guards)) == 0
            node.trigger_configure()
            node.trigger_activate()
        assert (len(list(node.publishers)), len(list(node.subscriptions)),
                len(list(node.services)), len(list(node.timers)),
                len(list(node.guards))) == created
        assert publishers_on(node, graph.DEFAULT_COMMAND_TOPIC) == 1
        assert node.count_publishers(f"/{graph.DEFAULT_COMMAND_TOPIC}") == 1
        # The e-stop services stay through cleanup (they are the node's, not a configuration's).
        node.trigger_deactivate()
        node.trigger_cleanup()
        names = {s.srv_name for s in node.services}
        assert {graph.CONTROLLER_ESTOP, graph.CONTROLLER_RESET_ESTOP} <= names
    finally:
        node.destroy_node()


def test_joint_states_are_subscribed_best_effort_as_the_readme_says(context):
    from pathlib import Path

    node = make_node(context)
    try:
        infos = node.get_subscriptions_info_by_topic(f"/{graph.JOINT_STATES}")
        mine = [i for i in infos if i.node_name == node.get_name()]
        assert mine and mine[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    finally:
        node.destroy_node()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `joint_states` |"))
    assert "subscribes best effort" in row


# --------------------------------------------------------------------------- clocks
def test_frozen_sim_clock_holds_on_the_wall_clock_within_target_timeout(context):
    wall = WallClock()
    node = tracking_node(context, wall)
    try:
        timeout = node.controller.config.target_timeout
        for k in range(1, 300):  # /clock frozen at 10 s; the driver keeps publishing
            wall.now += PERIOD
            node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), 10.0 - 1e-6 * k))
            if node.controller.mode is Mode.HOLD:
                break
        assert "wall-clock" in node.controller.reason
        assert timeout < wall.now - 50.0 <= timeout + 2 * PERIOD
    finally:
        node.destroy_node()


def test_deadline_loop_on_a_frozen_clock_holds_by_the_wall_clock(context):
    # The real loop thread at 1 kHz on sim time; /clock and the joint states stop.
    node = make_node(context, trigger="deadline", wall=time.monotonic)
    try:
        set_clock(node, 10.0)
        node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), 10.0))
        node._on_targets(targets(HOME, 10.0))
        assert wait_for(lambda: node.controller.mode is Mode.TRACKING)
        frozen_at = time.monotonic()
        assert wait_for(lambda: node.controller.mode is Mode.HOLD, timeout=2.0)
        held_after = time.monotonic() - frozen_at
        assert "wall-clock" in node.controller.reason
        # state_timeout (0.05 s) by the wall clock; a loose bound for a shared machine (the
        # exact bound is held with the test's own clocks above).
        assert held_after < 1.0
    finally:
        node.destroy_node()


def test_backstop_holds_when_joint_states_stop_under_the_joint_states_trigger(context):
    wall = WallClock()
    node = tracking_node(context, wall)
    try:
        written = node.commands_written
        wall.now += 0.5 * node.params["state_timeout"]
        node._on_backstop()
        assert node.backstop_ticks == 0, "a recent tick: no backstop"
        wall.now += node.params["state_timeout"]
        node._on_backstop()
        assert node.backstop_ticks == 1 and node.commands_written == written + 1
        assert node.controller.mode is Mode.HOLD and node.controller.reason == BACKSTOP_FAULT
        # No measurement trusted: gravity compensation at the reference.
        reference = node.controller.reference[0]
        np.testing.assert_allclose(node.last_command, MODEL.gravity_torques(reference))
    finally:
        node.destroy_node()


def test_backstop_holds_on_a_fresh_sample_when_the_loop_has_stopped(context):
    # The deadline loop ended (as on an exception in a tick); joint states still arrive.
    wall = WallClock()
    node = make_node(context, wall=wall, trigger="deadline")
    try:
        node._stop_loop()
        set_clock(node, 10.0)
        node._on_targets(targets(HOME, 10.0))
        node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), 10.0))
        node._tick()
        assert node.controller.mode is Mode.TRACKING
        wall.now += 2 * node.params["state_timeout"]
        set_clock(node, 10.001)
        node.hardware._on_joint_state(joint_state(HOME + 0.01, np.zeros(N), 10.001))
        node._on_backstop()  # the sample is fresh, but no tick ran for state_timeout
        assert node.controller.mode is Mode.HOLD and node.controller.reason == BACKSTOP_FAULT
        np.testing.assert_allclose(node.controller.hold_target, HOME)
    finally:
        node.destroy_node()


def test_backstop_timer_runs_on_the_steady_clock_while_sim_time_is_frozen(context):
    node = make_node(context, wall=time.monotonic)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinning = threading.Thread(target=executor.spin, daemon=True)
    try:
        set_clock(node, 10.0)
        node._on_targets(targets(HOME, 10.0))
        node.hardware._on_joint_state(joint_state(HOME, np.zeros(N), 10.0))
        spinning.start()
        assert wait_for(lambda: node.backstop_ticks > 0, timeout=2.0)
        assert wait_for(lambda: node.controller.mode is Mode.HOLD)
    finally:
        executor.shutdown()
        spinning.join(2.0)
        node.destroy_node()


def wait_for(condition, timeout: float = 5.0) -> bool:
    return wait_until(condition, timeout, 0.002)

# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("name", "value", "reason"), [
    ("kd", [1000.0] * 7, "kd·dt/I <= 0.5"),
    ("hold_kp", [0.0] * 7, "hold_kp must be > 0"),
    ("hold_kd", [50.0, 50.0, 40.0, 30.0, 8.0, 6.0, 400.0], "hold_kd[6]"),
    ("rate_hz", 50.0, "below 100 Hz"),
    ("target_timeout", 0.002, "shorter than 5 control periods"),
    ("state_timeout", 0.001, "shorter than 5 control periods"),
])
def test_parameters_beyond_physics_are_refused_live_with_the_reason(context, name, value,
                                                                    reason):
    node = make_node(context)
    try:
        call(node._on_estop)  # refused during e-stop too
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, result.reason
        assert node.get_parameter(name).value != value
        node.trigger_deactivate()
        node.trigger_cleanup()  # and while unconfigured (checked on the last robot model)
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason, result.reason
    finally:
        node.destroy_node()


def test_bad_gains_at_start_up_fail_configure_with_the_reason(context):
    node = make_node(context, autostart=False, kd=[1000.0] * 7)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert lifecycle_state(node) == "unconfigured" and node.controller is None
    finally:
        node.destroy_node()


# =========================================================================== state machine
offsets = st.lists(st.floats(-0.3, 0.3), min_size=N, max_size=N).map(np.array)
joint = st.integers(0, N - 1)
state_kinds = st.sampled_from(
    ["good", "good", "good", "reordered", "extra_joint", "stale", "future", "nan",
     "out_of_range", "far_out", "fast", "repeat", "missing_name", "empty", "short"]
)
#: Malformed messages the topics backend drops (no sample reaches the controller).
DROPPED = ("missing_name", "empty", "short")
parameter_changes = st.sampled_from([
    ("kd", [50.0, 50.0, 40.0, 30.0, 8.0, 6.0, 1.5]),
    ("kd", [1000.0] * 7),
    ("kp", [400.0, 400.0, 400.0, 400.0, 200.0, 120.0, 40.0]),
    ("hold_kp", [0.0] * 7),
    ("hold_kd", [30.0] * 7),
    ("rate_hz", 50.0),
    ("rate_hz", 250.0),
    ("rate_hz", 1000.0),
    ("target_timeout", 0.002),
    ("target_timeout", 0.1),
    ("target_timeout", 0.3),
    ("state_timeout", 0.02),
    ("state_timeout", 0.05),
    ("velocity_scale", 0.3),
    ("velocity_scale", 1.0),
    ("effort_scale", 0.5),
    ("position_margin", 0.05),
    ("position_margin", 0.01),
    ("state_tolerance", 0.0),
    ("state_tolerance", 0.05),
])


class NodeMachine(RuleBasedStateMachine):
    """A ControllerNode driven through its callbacks; the test owns both clocks."""

    @initialize(interface=st.sampled_from(["effort", "position", "velocity"]),
                start=st.floats(20.0, 1000.0))
    def start(self, interface: str, start: float) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.wall = WallClock()
        self.ros_now = start
        self.params = {"command_interface": interface}
        self.latched = False
        self.last_tick_wall = -math.inf
        self.node: ControllerNode | None = None
        self._new_node()

    def teardown(self) -> None:
        if getattr(self, "node", None) is not None:
            self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def _new_node(self) -> None:
        self.node = make_node(self.context, wall=self.wall, **self.params)
        set_clock(self.node, self.ros_now)
        self.last_tick_wall = -math.inf
        self._configured()

    def _configured(self) -> None:
        """A new configuration (or node): nothing seen yet."""
        self.model = SafetyModel()
        self.sample = None
        self.written = self.node.commands_written

    # ------------------------------------------------------------------ helpers
    @property
    def state(self) -> str:
        return lifecycle_state(self.node)

    @property
    def now(self) -> float:
        """The node's clock as the controller reads it."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _tick(self, deliver, q, qd, stamp: float, fault: str = "") -> None:
        """Run one tick through ``deliver()`` (a node callback) and check it."""
        COUNTS["ticks"] += 1
        node = self.node
        controller = node.controller
        if controller is None:
            deliver()
            assert node.commands_written == self.written
            return
        self.last_tick_wall = self.wall.now
        active = self.state == "active"
        mode_before = controller.mode
        now = self.now
        updates = self.sample is not None and now > 0.0
        valid = updates and active and self.model.judge(controller, q, qd, stamp, now,
                                                        self.wall.now, fault)
        deliver()
        wrote = node.commands_written > self.written
        self.written = node.commands_written
        if not (updates and active):
            assert not wrote, "a command while inactive or before any joint state"
            return
        values = node.last_command if wrote else None
        self.model.updated(controller, q, values, valid, mode_before, now, self.wall.now,
                           self.latched)

    # ------------------------------------------------------------------ rules
    @rule(kind=state_kinds, offset=offsets, which=joint, clock=st.sampled_from(
        [1.0, 1.0, 1.0, 0.0, 3.0, 40.0]), wall=st.sampled_from([1.0, 1.0, 0.0, 2.0, 30.0]),
          age=st.floats(0.0, 0.4), shuffle=st.randoms(use_true_random=False))
    def state_message(self, kind, offset, which, clock, wall, age, shuffle):
        """A JointState through the topics backend's callback (a tick when accepted)."""
        COUNTS["steps"] += 1
        self._advance(clock * PERIOD, wall * PERIOD)
        self._joint_state(kind, offset, which, age, shuffle)

    @rule(ticks=st.integers(1, 40), offset=offsets, drift=offsets, send_target=st.booleans(),
          clock=st.sampled_from([1.0, 1.0, 0.0]), wall=st.sampled_from([1.0, 1.0, 0.0, 3.0]))
    def run(self, ticks, offset, drift, send_target, clock, wall):
        """A stretch of good joint states (after a fresh target when ``send_target``)."""
        COUNTS["steps"] += 1
        if send_target:
            self._target("good", offset, 0, 0.0, "ordered")
        for k in range(ticks):
            self._advance(clock * PERIOD, wall * PERIOD)
            self._joint_state("good", offset + drift * (k / 40.0), 0, 0.1, None)

    def _advance(self, clock: float, wall: float) -> None:
        self.wall.now += wall
        if clock:
            self.ros_now = max(self.ros_now + clock, 5.0)
            set_clock(self.node, self.ros_now)

    def _joint_state(self, kind, offset, which, age, shuffle) -> None:
        node = self.node
        limits = MODEL.limits
        if node.controller is not None:
            limits = node.controller.limits
            state_timeout = node.controller.config.state_timeout
            tolerance = node.controller.config.state_tolerance
        else:
            state_timeout, tolerance = 0.05, 0.05
        now = self.now
        q = np.clip(HOME + offset, limits.lower, limits.upper)
        qd = 0.1 * offset
        stamp = now - age * state_timeout
        names = list(NAMES)
        if kind == "stale":
            stamp = now - 2.0 * state_timeout - age
        elif kind == "future":
            stamp = now + 2.0 * state_timeout + age
        elif kind == "nan":
            q[which] = math.nan
        elif kind == "out_of_range":
            q[which] = limits.upper[which] + tolerance + 0.05 + age
        elif kind == "far_out":
            q[which] = 3.5 if which != 3 else -3.5
        elif kind == "fast":
            qd[which] = 2.5 * MODEL.limits.velocity[which]
        stamp_msg = seconds_to_time(max(stamp, 0.0))
        if kind == "repeat" and self.sample is not None:
            q, qd, _, stamp_msg = self.sample
        msg = joint_state(q, qd, 0.0, names)
        if kind == "reordered":
            order = list(range(N))
            shuffle.shuffle(order)
            msg = joint_state(q[order], qd[order], 0.0, [names[i] for i in order])
        elif kind == "extra_joint":
            msg = joint_state(np.r_[q, 0.02], np.r_[qd, 0.0], 0.0,
                              [*names, "panda_finger_joint1"])
        elif kind == "missing_name":
            msg = joint_state(q[1:], qd[1:], 0.0, names[1:])
        elif kind == "empty":
            msg = JointState(name=names, position=[], velocity=[])
        elif kind == "short":
            msg = joint_state(q, qd[:-1], 0.0)
        msg.header.stamp = stamp_msg
        stamp = time_to_seconds(stamp_msg)  # what the node reads
        if node.hardware is None:
            return  # unconfigured: no subscription
        if kind in DROPPED:
            dropped = node.hardware.dropped
            node.hardware._on_joint_state(msg)
            assert node.hardware.dropped == dropped + 1
            assert node.commands_written == self.written
            return
        self.sample = (q, qd, stamp, stamp_msg)
        self._tick(lambda: node.hardware._on_joint_state(msg), q, qd, stamp)

    @rule(clock=st.sampled_from([0.0, 0.0, PERIOD, -1.0, 0.5, 10.0]),
          wall=st.sampled_from([0.0, PERIOD, 0.03, 0.2]))
    def clock(self, clock, wall):
        """/clock and the wall clock move (0: frozen; -1 s: a jump back), then the loop
        ticks on the sample it has (the deadline loop's tick)."""
        COUNTS["steps"] += 1
        self._advance(clock, wall)
        if self.sample is not None:
            q, qd, stamp, _ = self.sample
            self._tick(self.node._tick, q, qd, stamp)

    @rule(wall=st.sampled_from([0.01, 0.03, 0.08, 0.3]))
    def backstop(self, wall):
        """The steady-clock backstop timer fires ``wall`` s later."""
        COUNTS["steps"] += 1
        self.wall.now += wall
        node = self.node
        before = node.backstop_ticks
        due = node.controller is not None and (
            self.wall.now - self.last_tick_wall > node.params["state_timeout"])
        if due and self.sample is not None:
            q, qd, stamp, _ = self.sample
            self._tick(node._on_backstop, q, qd, stamp, BACKSTOP_FAULT)
        else:
            node._on_backstop()
            if due:
                self.last_tick_wall = self.wall.now
        assert node.backstop_ticks == before + int(due)

    @rule(kind=st.sampled_from(["good", "good", "edge", "far", "nan", "short", "stale"]),
          offset=offsets, which=joint, age=st.floats(-0.4, 0.4),
          naming=st.sampled_from(["ordered", "reordered", "unnamed", "missing"]))
    def target(self, kind, offset, which, age, naming):
        COUNTS["steps"] += 1
        self._target(kind, offset, which, age, naming)

    def _target(self, kind, offset, which, age, naming) -> None:
        node = self.node
        controller = node.controller
        limits = controller.limits if controller is not None else MODEL.limits
        max_age = controller.config.max_target_age if controller is not None else 0.25
        tolerance = controller.config.out_of_range_tolerance if controller else 0.2
        now = self.now
        positions = HOME + offset
        stamp = now - age * max_age
        if kind == "edge":
            positions[which] = limits.upper[which] + 0.5 * tolerance
        elif kind == "far":
            positions[which] = limits.upper[which] + tolerance + 0.1
        elif kind == "nan":
            positions[which] = math.nan
        elif kind == "short":
            positions = positions[:-1]
        elif kind == "stale":
            stamp = now - 2.0 * max_age
        names = NAMES[: len(positions)]
        order = list(range(len(positions)))
        if naming == "reordered":
            order = order[::-1]
        msg = targets(positions[order], max(stamp, 0.0), [names[i] for i in order])
        if naming == "unnamed":
            msg.name = []
        elif naming == "missing":
            msg.name, msg.position = msg.name[1:], msg.position[1:]
        accepted_before = controller.targets_accepted if controller is not None else 0
        node._on_targets(msg)
        assert node.commands_written == self.written
        if controller is None:
            return
        accepted = controller.targets_accepted > accepted_before
        acceptable = (kind in ("good", "edge") and naming != "missing"
                      and self.state == "active" and not self.latched)
        assert accepted == acceptable
        if accepted:
            self.model.target_accepted(self.now, self.wall.now)

    @rule(event=st.sampled_from(["estop", "reset_estop", "reset_estop", "deactivate", "cleanup",
                                 "configure", "activate", "restart"]))
    def operator(self, event):
        """E-stop services, lifecycle transitions (only the legal ones) and restarts."""
        COUNTS["steps"] += 1
        node, state = self.node, self.state
        if event == "estop":
            assert call(node._on_estop).success
            self.latched = True
            if state == "active":
                self.model.hold_began()
        elif event == "reset_estop":
            assert call(node._on_reset_estop).success == self.latched
            self.latched = False
        elif event == "deactivate" and state == "active":
            node.trigger_deactivate()
            self.model.forget()
        elif event == "cleanup" and state == "inactive":
            node.trigger_cleanup()
        elif event == "configure" and state == "unconfigured":
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            self._configured()
        elif event == "activate" and state == "inactive":
            node.trigger_activate()
            self.model.forget()
        elif event == "restart":
            node.destroy_node()
            self._new_node()
        assert self.node.commands_written == self.written

    @rule(change=parameter_changes)
    def parameter(self, change):
        COUNTS["steps"] += 1
        name, value = change
        node = self.node
        config_before = node.controller.config if node.controller is not None else None
        result = node.set_parameters([Parameter(name, value=value)])[0]
        if not result.successful:
            assert result.reason
            if node.controller is not None:
                assert node.controller.config == config_before
            return
        self.params[name] = value
        if node.controller is not None:
            held = getattr(node.controller.config, name)
            assert (list(held) if isinstance(held, tuple) else held) == value

    # ------------------------------------------------------------------ invariants
    @invariant()
    def estop_stays_latched_across_everything_until_reset(self):
        node = self.node
        assert node.estop_latched == self.latched
        if node.controller is not None:
            assert node.controller.estop_latched == self.latched
            if self.state == "active":
                assert (node.controller.mode is Mode.ESTOP) == self.latched
            else:
                assert node.controller.mode is Mode.INACTIVE

    @invariant()
    def one_command_publisher_while_configured_none_after_cleanup(self):
        configured = self.node.controller is not None
        for topic in (graph.DEFAULT_COMMAND_TOPIC, graph.CONTROLLER_STATE, graph.DIAGNOSTICS):
            assert publishers_on(self.node, topic) == int(configured), topic

    @invariant()
    def reason_says_why_not_tracking_and_nothing_while_tracking(self):
        controller = self.node.controller
        if controller is not None:
            assert (controller.reason == "") == (controller.mode is Mode.TRACKING)

    @invariant()
    def setpoints_lie_in_the_range_at_the_last_valid_state(self):
        controller = self.node.controller
        if controller is not None:
            self.model.check_setpoints(controller, self.state == "active")


def test_no_interleaving_of_node_inputs_breaks_a_safety_invariant():
    COUNTS["steps"] = COUNTS["ticks"] = 0
    run_state_machine_as_test(NodeMachine, settings=profile("node"))
    print(f"controller node state machine: {COUNTS['steps']} steps, {COUNTS['ticks']} ticks")
    if not NIGHTLY:
        assert COUNTS["steps"] >= CI_MIN_STEPS, COUNTS


def test_time_messages_round_trip_as_the_node_reads_them():
    # The machine models stamps as the node converts them (ns); a sanity check.
    assert time_to_seconds(Time(sec=3, nanosec=500)) == 3.0000005
