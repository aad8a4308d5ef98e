"""Actuator controller node through real rclpy, on both hardware backends.

* ``topics`` — joint_states in, ``effort_controller/commands`` out (a robot whose
  driver runs its own loop): a feeder node publishes joint states at the control
  rate and policy targets at 20 Hz; the controller's loop runs in a thread of its
  own on wall-clock deadlines (``trigger: deadline``), or ticks once per joint
  state (``trigger: joint_states``) with its deadline figures from the stamps.
* ``sim`` — the PyBullet world of the same process, composed as the sim robot
  process does it (the in-process runner's roles ``sim`` and ``controller``),
  in lockstep on sim time: watchdog timing is asserted exactly, in sim time.

Every node spins on an executor of its own in its own thread (as the runner and
``ros2 launch`` run them). Nothing here asserts wall-clock counts or rates: waits
are bounded waits on conditions, counts come from the loop's counters and
timing from stamps or sim time. Log lines are read where the nodes print them (the
console, captured by pytest).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker

from visuomotor_core.robot_description import load_robot
from visuomotor_core.timing import wait_until
from visuomotor_interfaces.msg import ControllerState, JointTargets
from visuomotor_ros import graph
from visuomotor_ros.bench_controller import HOME, FeederConfig, SyntheticFeeder
from visuomotor_ros.controller_node import ControllerNode
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    seconds_to_time,
    time_to_seconds,
)
from visuomotor_ros.runner import GraphRunner, Spinner
from visuomotor_sim.hardware import SimHardware, SimHardwareConfig

#: The default robot's arm joints, in the controller's order.
ARM_JOINTS = load_robot().arm_joints
RATE_HZ = 1000.0
PERIOD = 1.0 / RATE_HZ
TARGET_TIMEOUT = 0.1  # s, controller.yaml default
WAIT = 10.0  # s, upper bound on any wait for a condition
#: Panda effort limits (URDF), N·m.
EFFORT_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                       reliability=ReliabilityPolicy.BEST_EFFORT)


def wait_for(condition, timeout: float = WAIT, period: float = 0.002) -> bool:
    return wait_until(condition, timeout, period)

def stamp_of(msg) -> float:
    return time_to_seconds(msg.header.stamp)


def entered(state: ControllerState) -> float:
    """Controller time of the tick that entered the state's mode, s."""
    return time_to_seconds(state.mode_since)


class Console:
    """The controller's log lines as the node prints them (stderr, captured by pytest)."""

    def __init__(self, capfd) -> None:
        self._capfd = capfd
        self.text = ""

    def mark(self) -> int:
        """Position from which :meth:`logged` looks."""
        self._read()
        return len(self.text)

    def _read(self) -> None:
        self.text += self._capfd.readouterr().err

    def logged(self, level: str, *parts: str, since: int = 0) -> bool:
        """A ``[LEVEL]`` line of controller_node holding every one of ``parts``."""
        self._read()
        return any(line.startswith(f"[{level}]") and "controller_node]:" in line
                   and all(p in line for p in parts)
                   for line in self.text[since:].splitlines())


@pytest.fixture
def console(capfd) -> Console:
    return Console(capfd)


class Probe(Node):
    """Test-side node: records commands, controller states, diagnostics, status texts and
    calls the e-stop services. Topic names are relative (its namespace)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("controller_probe", **kwargs)
        self.commands: list[tuple[float, ...]] = []
        self.states: list[ControllerState] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.texts: list[Marker] = []
        self.create_subscription(Float64MultiArray, graph.DEFAULT_COMMAND_TOPIC,
                                 lambda m: self.commands.append(tuple(m.data)), LATEST_QOS)
        self.create_subscription(ControllerState, graph.CONTROLLER_STATE, self.states.append,
                                 DEFAULT_QOS)
        self.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diagnostics,
                                 DEFAULT_QOS)
        self.create_subscription(Marker, graph.CONTROLLER_STATUS_TEXT, self.texts.append,
                                 DEFAULT_QOS)
        self.estop = self.create_client(Trigger, graph.CONTROLLER_ESTOP)
        self.reset_estop = self.create_client(Trigger, graph.CONTROLLER_RESET_ESTOP)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.diagnostics.extend(s for s in msg.status if "controller_node" in s.name)

    def call(self, client) -> Trigger.Response:
        assert client.wait_for_service(timeout_sec=WAIT), "service not available"
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done), "service call timed out"
        return future.result()

    def wait_mode(self, mode: int, since: int = 0, timeout: float = WAIT) -> ControllerState:
        found: list[ControllerState] = []

        def seen() -> bool:
            found[:] = [s for s in list(self.states)[since:] if s.mode == mode]
            return bool(found)

        assert wait_for(seen, timeout), (
            f"no controller/state with mode {mode}; last: "
            f"{[(s.mode, s.reason) for s in list(self.states)[-3:]]}"
        )
        return found[0]



# =========================================================================== topics backend
@dataclass
class Rig:
    controller: ControllerNode
    feeder: SyntheticFeeder
    probe: Probe
    spinner: Spinner
    context: object
    extra: list = field(default_factory=list)


@pytest.fixture
def make_rig(ros_context) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(controller_params: dict | None = None, feeder: FeederConfig | None = None,
             use_sim_time: bool = False, targets: bool = True, namespace: str = "",
             feeder_sim_time: bool | None = None, spinner: Spinner | None = None) -> Rig:
        params = {"rate_hz": RATE_HZ, "state_rate_hz": 200.0, **(controller_params or {})}
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        sim = [Parameter("use_sim_time", value=use_sim_time)]
        spinner = spinner or Spinner(ros_context)
        probe = Probe(context=ros_context, namespace=namespace)
        spinner.add(probe)
        controller = ControllerNode(context=ros_context, namespace=namespace,
                                    parameter_overrides=overrides + sim)
        feeder_sim = use_sim_time if feeder_sim_time is None else feeder_sim_time
        feeder_node = SyntheticFeeder(
            feeder or FeederConfig(state_rate_hz=params["rate_hz"]), context=ros_context,
            namespace=namespace, parameter_overrides=[Parameter("use_sim_time", value=feeder_sim)],
        )
        feeder_node.targets_enabled = targets
        rig = Rig(controller, feeder_node, probe, spinner, ros_context)
        rigs.append(rig)
        spinner.add(controller)
        spinner.add(feeder_node)
        return rig

    try:
        yield make
    finally:
        for rig in rigs:
            rig.spinner.shutdown()
            for node in (rig.controller, rig.probe, rig.feeder, *rig.extra):
                node.destroy_node()


def test_commands_go_out_on_the_relative_command_topic_under_the_namespace(make_rig, console):
    rig = make_rig(namespace="arm")
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert wait_for(lambda: len(rig.probe.commands) >= 5)
    infos = rig.probe.get_publishers_info_by_topic("/arm/effort_controller/commands")
    assert [(i.node_name, i.node_namespace, i.topic_type) for i in infos] == [
        ("controller_node", "/arm", "std_msgs/msg/Float64MultiArray")]
    assert rig.probe.get_publishers_info_by_topic("/effort_controller/commands") == []
    commands = np.array(rig.probe.commands)
    assert commands.shape[1] == len(ARM_JOINTS)
    assert np.isfinite(commands).all() and (np.abs(commands) <= EFFORT_LIMITS + 1e-9).all()
    # The loop is a thread of its own on wall-clock deadlines, not an rclpy timer.
    loop = rig.controller.loop
    assert loop is not None and loop.running and loop.config.pacing == "deadline"
    assert loop.config.rate_hz == RATE_HZ
    assert wait_for(lambda: console.logged("INFO", "configured", "topics hardware",
                                           "'effort_controller/commands'"))


def test_target_timeout_switches_to_hold_says_so_and_logs_a_warning(make_rig, console):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    since, diag_since, log_since = (len(rig.probe.states), len(rig.probe.diagnostics),
                                    console.mark())
    loop = rig.controller.loop
    loop.period_stats.reset()
    rig.feeder.targets_enabled = False
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD, since)
    assert "target_timeout" in hold.reason
    assert hold.target_age > TARGET_TIMEOUT  # by the target's stamp
    if "wall-clock" not in hold.reason:
        # On the first tick past the deadline (node clock): never before it, and no later
        # than the longest period between two ticks the loop measured around it.
        lateness = entered(hold) - (rig.controller.last_target_arrival + TARGET_TIMEOUT)
        worst_period = PERIOD + loop.period_stats.summary().jitter_max
        assert 0.0 < lateness <= worst_period + 1e-3
    assert wait_for(lambda: console.logged("WARN", "hold", "target_timeout", since=log_since)), \
        "no WARN log line on entering hold"
    assert wait_for(lambda: any(
        d.level == DiagnosticStatus.WARN and "hold" in d.message and "target_timeout" in d.message
        for d in rig.probe.diagnostics[diag_since:])), "no /diagnostics status reporting the hold"
    # Still commanding (a damped hold), never NaN.
    count = len(rig.probe.commands)
    assert wait_for(lambda: len(rig.probe.commands) >= count + 5)
    assert np.isfinite(np.array(rig.probe.commands[count:])).all()


def test_stale_joint_states_switch_to_hold(make_rig):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    since = len(rig.probe.states)
    rig.feeder.states_enabled = False
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD, since)
    assert "joint state stale" in hold.reason


def test_estop_latches_hold_and_refuses_targets_until_reset(make_rig, console):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert rig.probe.call(rig.probe.estop).success
    since = len(rig.probe.states)
    estop = rig.probe.wait_mode(ControllerState.MODE_ESTOP, since)
    refused = estop.rejected_targets
    assert wait_for(lambda: rig.probe.states[-1].rejected_targets >= refused + 3), \
        "targets arriving while latched are refused"
    assert all(s.mode == ControllerState.MODE_ESTOP for s in rig.probe.states[since:])
    assert wait_for(lambda: console.logged("WARN", "E-STOP latched"))
    assert wait_for(lambda: any(d.level == DiagnosticStatus.ERROR for d in rig.probe.diagnostics))
    assert rig.probe.call(rig.probe.reset_estop).success
    since = len(rig.probe.states)
    rig.probe.wait_mode(ControllerState.MODE_TRACKING, since)  # a fresh target resumes


def test_bad_targets_are_refused_and_commands_stay_finite_within_limits(make_rig):
    rig = make_rig(targets=False)
    rig.probe.wait_mode(ControllerState.MODE_HOLD)
    count = len(rig.probe.commands)
    status = rig.controller.controller.status
    for index, positions in enumerate(([math.nan, *HOME[1:]], [math.inf, *HOME[1:]],
                                       [5.0, *HOME[1:]])):  # joint 1's range is ±2.9 rad
        rig.feeder.publish_target(positions)
        assert wait_for(lambda i=index: status()["targets_refused"] >= i + 1), positions
    assert rig.controller.controller.mode.value == "hold"
    # A far but in-range target is tracked within the effort limits (saturating).
    far = [2.9, 1.76, -2.9, -0.07, 2.9, 3.75, 2.9]
    rig.feeder.publish_target(far)
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert wait_for(lambda: (np.abs(np.array(rig.probe.commands[count:]))
                             >= EFFORT_LIMITS - 1e-6).any()), "saturation expected"
    commands = np.array(rig.probe.commands[count:])
    assert np.isfinite(commands).all()
    assert (np.abs(commands) <= EFFORT_LIMITS + 1e-9).all()


def test_target_older_than_max_target_age_is_refused_as_stale(make_rig):
    rig = make_rig(targets=False)
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD)
    refused = hold.rejected_targets
    rig.feeder.publish_target(HOME, stamp_offset=-0.5)  # max_target_age is 0.25 s
    assert wait_for(lambda: rig.controller.controller.status()["targets_refused"] == refused + 1)
    assert "stale target" in rig.controller.controller.status()["last_refusal"]
    assert rig.controller.controller.mode.value == "hold"
    rig.feeder.publish_target(HOME)  # the same target, fresh, is accepted
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)


class StallingNode(Node):
    """Shares the controller's executor; its one callback blocks until released."""

    def __init__(self, **kwargs) -> None:
        super().__init__("stalling_node", **kwargs)
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.create_timer(0.01, self._on_timer)

    def _on_timer(self) -> None:
        if not self.stalled.is_set():
            self.stalled.set()
            self.release.wait(WAIT)


def test_a_stalled_executor_delays_neither_the_control_loop_nor_the_watchdog(ros_context):
    """The controller's executor stalls (services and parameter changes wait): its loop
    thread, which takes the joint states and the targets itself, keeps tracking and
    commanding, and its watchdog fires on time when the targets stop."""
    spinner = Spinner(ros_context)
    probe = Probe(context=ros_context)
    feeder = SyntheticFeeder(FeederConfig(state_rate_hz=RATE_HZ), context=ros_context)
    controller = ControllerNode(context=ros_context, parameter_overrides=[
        Parameter("rate_hz", value=RATE_HZ), Parameter("state_rate_hz", value=200.0)])
    stalling = StallingNode(context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(controller)
    thread: threading.Thread | None = None
    try:
        for node in (probe, feeder):
            spinner.add(node)
        thread = threading.Thread(target=_spin, args=(executor,), daemon=True)
        thread.start()
        probe.wait_mode(ControllerState.MODE_TRACKING)
        executor.add_node(stalling)  # its timer's callback blocks the controller's executor
        assert stalling.stalled.wait(WAIT)
        accepted_before = controller.controller.status()["targets_accepted"]
        ticks, commands = controller.loop.counters.ticks, len(probe.commands)
        sent = feeder.targets_sent
        # Joint states and targets still reach the loop: it keeps tracking fresh targets.
        assert wait_for(lambda: feeder.targets_sent >= sent + 3
                        and controller.controller.status()["targets_accepted"]
                        >= accepted_before + 3)
        assert controller.controller.mode.value == "tracking"
        # The targets stop: the loop's watchdog holds on its own.
        feeder.targets_enabled = False
        assert wait_for(lambda: controller.controller.mode.value == "hold")
        reason = controller.controller.reason
        assert "target_timeout" in reason, reason
        assert wait_for(lambda: controller.loop.counters.ticks >= ticks + 200
                        and len(probe.commands) >= commands + 50), "the loop kept commanding"
        assert not stalling.release.is_set(), "all of that during the stall"
        feeder.targets_enabled = True
        stalling.release.set()
        since = len(probe.states)
        probe.wait_mode(ControllerState.MODE_TRACKING, since)  # targets flow again
    finally:
        stalling.release.set()
        spinner.shutdown()
        executor.shutdown(timeout_sec=2.0)
        if thread is not None:
            thread.join(timeout=5.0)
        for node in (controller, stalling, feeder, probe):
            node.destroy_node()


def _spin(executor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


def test_output_thread_publishes_what_was_announced_and_survives_a_failing_publish(
        ros_context):
    from visuomotor_ros.node_common import OutputThread

    node = Node("outputs_owner", context=ros_context)
    calls: list[frozenset[str]] = []

    def publish(kinds: frozenset[str]) -> None:
        calls.append(kinds)
        if "bad" in kinds:
            raise RuntimeError("publisher gone")

    outputs = OutputThread(node, "test-outputs", publish)
    try:
        outputs.announce("bad")
        assert wait_for(lambda: outputs.guard.total == 1)
        outputs.announce("clock")
        assert wait_for(lambda: frozenset({"clock"}) in calls)
        assert calls[0] == frozenset({"bad"})
    finally:
        outputs.stop()
        node.destroy_node()
    count = len(calls)
    outputs.announce("late")  # after stop: nothing runs
    time.sleep(0.05)
    assert len(calls) == count


def test_topic_hardware_without_a_tick_callback_is_read_by_the_loop_not_by_an_executor(
        ros_context):
    """``trigger: deadline``: read() takes the newest joint state from the middleware
    itself; the owner node has no joint_states subscription for an executor to wake on."""
    from visuomotor_core.hardware import JointSample
    from visuomotor_ros.topic_hardware import TopicHardware

    robot = Node("robot_driver", context=ros_context, namespace="arm")
    owner = Node("hardware_owner", context=ros_context, namespace="arm")
    hardware = TopicHardware(owner, ARM_JOINTS, graph.DEFAULT_COMMAND_TOPIC)
    states = robot.create_publisher(JointState, graph.JOINT_STATES, LATEST_QOS)
    try:
        assert [s.topic_name for s in owner.subscriptions] == []
        assert wait_for(lambda: states.get_subscription_count() > 0)
        sample = JointSample.zeros(len(ARM_JOINTS))
        hardware.read(sample)
        assert sample.sequence == 0  # nothing published yet
        for k in range(3):  # three waiting: the newest is taken
            msg = JointState(name=list(ARM_JOINTS), position=[float(k)] * 7,
                             velocity=[0.0] * 7)
            msg.header.stamp = seconds_to_time(1.0 + k)
            states.publish(msg)

        def newest() -> bool:
            hardware.read(sample)
            return sample.stamp == 3.0

        assert wait_for(newest)  # no executor spins either node
        assert sample.position.tolist() == [2.0] * 7
        states.publish(JointState(name=list(ARM_JOINTS[:-1]), position=[0.0] * 6,
                                  velocity=[0.0] * 6))

        def dropped() -> bool:
            hardware.read(sample)
            return hardware.dropped == 1

        assert wait_for(dropped)
        assert sample.stamp == 3.0  # the malformed one changed nothing
    finally:
        hardware.close()
        owner.destroy_node()
        robot.destroy_node()


def test_latest_message_reader_waits_for_a_message_without_an_executor(ros_context):
    """LatestMessageReader.wait blocks until a message is waiting (no executor spins the
    reader), times out without one, and returns False once the reader is destroyed."""
    from visuomotor_ros.node_common import LatestMessageReader

    owner = Node("reader_owner", context=ros_context)
    peer = Node("reader_peer", context=ros_context)
    received: list[float] = []
    reader = LatestMessageReader(owner, JointTargets, graph.POLICY_TARGETS, LATEST_QOS,
                                 lambda msg: received.append(stamp_of(msg)), "targets")
    publisher = peer.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
    try:
        assert wait_for(lambda: publisher.get_subscription_count() == 1)
        start = time.monotonic()
        assert not reader.wait(0.05)
        assert time.monotonic() - start >= 0.04, "it waited the timeout"
        msg = JointTargets()
        msg.header.stamp = seconds_to_time(2.5)

        def later() -> None:
            time.sleep(0.05)
            publisher.publish(msg)

        threading.Thread(target=later, daemon=True).start()
        assert reader.wait(WAIT)
        assert reader.take_latest() and received == [2.5]
        assert not reader.take_latest()
        reader.destroy()
        assert not reader.wait(0.01)
    finally:
        peer.destroy_node()
        owner.destroy_node()


def test_topic_hardware_maps_joint_states_by_name_and_drops_malformed_ones(ros_context):
    from visuomotor_core.hardware import JointSample
    from visuomotor_ros.topic_hardware import TopicHardware

    spinner = Spinner(ros_context)
    robot = Node("robot_driver", context=ros_context, namespace="arm")
    owner = Node("hardware_owner", context=ros_context, namespace="arm")
    samples: list[int] = []
    hardware = TopicHardware(owner, ARM_JOINTS, graph.DEFAULT_COMMAND_TOPIC,
                             on_sample=lambda: samples.append(1))
    commands: list[tuple[float, ...]] = []
    robot.create_subscription(Float64MultiArray, graph.DEFAULT_COMMAND_TOPIC,
                              lambda m: commands.append(tuple(m.data)), LATEST_QOS)
    states = robot.create_publisher(JointState, graph.JOINT_STATES, LATEST_QOS)
    try:
        spinner.add(robot)
        spinner.add(owner)
        assert wait_for(lambda: states.get_subscription_count() > 0)
        # The driver's order, fingers included: mapped onto the arm's order by name.
        names = ["panda_finger_joint1", *reversed(ARM_JOINTS), "panda_finger_joint2"]
        values = {name: float(i) for i, name in enumerate(names)}
        msg = JointState(name=names, position=[values[n] for n in names],
                         velocity=[-values[n] for n in names], effort=[])
        msg.header.stamp = seconds_to_time(12.5)
        states.publish(msg)
        assert wait_for(lambda: hardware.samples == 1)
        sample = JointSample.zeros(len(ARM_JOINTS))
        hardware.read(sample)
        assert sample.position.tolist() == [values[n] for n in ARM_JOINTS]
        assert sample.velocity.tolist() == [-values[n] for n in ARM_JOINTS]
        assert sample.effort.tolist() == [0.0] * len(ARM_JOINTS)  # none sent
        assert (sample.stamp, sample.sequence, len(samples)) == (12.5, 1, 1)
        # Malformed samples are dropped and counted; the last good one stays.
        missing = JointState(name=list(ARM_JOINTS[:-1]), position=[0.0] * 6,
                             velocity=[0.0] * 6)
        short = JointState(name=list(ARM_JOINTS), position=[0.0] * 7, velocity=[0.0])
        for bad in (missing, short):
            dropped = hardware.dropped
            states.publish(bad)
            assert wait_for(lambda d=dropped: hardware.dropped == d + 1)
        hardware.read(sample)
        assert sample.sequence == 1 and hardware.samples == 1 and len(samples) == 1
        # Commands go out on the relative topic, in the arm's order.
        hardware.write(np.arange(7.0), "effort")
        assert wait_for(lambda: commands == [tuple(np.arange(7.0))])
    finally:
        spinner.shutdown()
        hardware.close()
        owner.destroy_node()
        robot.destroy_node()


# --------------------------------------------------------------------------- overruns
def test_consecutive_deadline_misses_hold_and_report_error(make_rig, console):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    since, log_since = len(rig.probe.states), console.mark()
    # A 10 kHz loop allowed 1 µs of lateness: no machine wakes a Python thread that
    # precisely, so every tick is a miss from the first.
    result = rig.controller.set_parameters_atomically([
        Parameter("rate_hz", value=10000.0), Parameter("deadline_tolerance", value=0.01),
        Parameter("max_consecutive_misses", value=3)])
    assert result.successful, result.reason
    loop = rig.controller.loop
    assert wait_for(lambda: loop.counters.overruns >= 1)
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD, since)
    assert "deadlines missed in a row" in hold.reason

    assert wait_for(lambda: console.logged("ERROR", "3 consecutive control deadlines missed",
                                           since=log_since))
    assert wait_for(lambda: any(d.level == DiagnosticStatus.ERROR
                                and "deadlines missed" in d.message
                                for d in rig.probe.diagnostics))


# --------------------------------------------------------------------------- joint_states
class Driver(Node):
    """A robot driver in step with the controller, on sim time: publishes /clock and a
    joint state stamped with it, waits for the command that answers it, then the next."""

    def __init__(self, start: float = 1.0, period: float = PERIOD, **kwargs) -> None:
        super().__init__("robot_driver", **kwargs)
        self.time = start
        self.period = period
        self.commands = 0
        self.published = 0
        self._answered = threading.Event()
        self._clock = self.create_publisher(Clock, graph.CLOCK, CLOCK_QOS)
        self._states = self.create_publisher(JointState, graph.JOINT_STATES, LATEST_QOS)
        self.create_subscription(Float64MultiArray, graph.DEFAULT_COMMAND_TOPIC,
                                 self._on_command, LATEST_QOS)
        self._msg = JointState(name=list(ARM_JOINTS), position=list(HOME),
                               velocity=[0.0] * len(HOME), effort=[0.0] * len(HOME))

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands += 1
        self._answered.set()

    def step(self, skip: int = 0) -> None:
        """Advance by (1 + skip) periods and publish that state; return when answered
        (a state lost on the way is published again, with the same stamp)."""
        self.time += (1 + skip) * self.period
        stamp = seconds_to_time(self.time)
        self._answered.clear()
        for _ in range(50):
            self._clock.publish(Clock(clock=stamp))
            self._msg.header.stamp = stamp
            self._states.publish(self._msg)
            self.published += 1
            if self._answered.wait(0.2):
                return
        raise AssertionError("the controller did not answer a joint state")


def test_joint_states_trigger_ticks_once_per_state_with_deadline_figures_from_stamps(make_rig):
    rig = make_rig(controller_params={"trigger": "joint_states"}, use_sim_time=True,
                   targets=False, feeder=FeederConfig(state_rate_hz=1.0))
    rig.feeder.states_enabled = False  # the driver below is the robot
    driver = Driver(context=rig.context, parameter_overrides=[
        Parameter("use_sim_time", value=True)])
    rig.extra.append(driver)
    rig.spinner.add(driver)
    assert wait_for(lambda: driver.count_subscribers(graph.JOINT_STATES) > 0
                    and driver.count_publishers(graph.DEFAULT_COMMAND_TOPIC) > 0)
    assert rig.controller.loop is None, "no loop thread: the joint states set the pace"
    for _ in range(100):
        driver.step()
    controller = rig.controller
    assert controller.hardware.samples >= 100
    periods = controller.stamp_periods.summary()
    assert periods.count >= 98 and periods.total_deadline_misses == 0
    assert periods.jitter_max < 1e-6, "stamps exactly one period apart"
    driver.step(skip=4)  # the robot lost four periods
    for _ in range(5):
        driver.step()
    assert controller.stamp_periods.summary().total_deadline_misses == 1
    assert wait_for(lambda: rig.probe.states and rig.probe.states[-1].deadline_misses == 1)
    assert any({kv.key: kv.value for kv in d.values}.get("trigger") == "joint_states"
               for d in rig.probe.diagnostics)


def test_joint_states_trigger_on_sim_time_commands_nothing_before_clock(make_rig):
    # Joint states stamped with wall time reach a controller on sim time that ticks once
    # per joint state: without /clock it must still command nothing.
    rig = make_rig(controller_params={"trigger": "joint_states"}, use_sim_time=True,
                   feeder_sim_time=False, feeder=FeederConfig(state_rate_hz=200.0))
    assert wait_for(lambda: rig.controller.hardware is not None
                    and rig.controller.hardware.samples >= 20)
    assert rig.probe.commands == []


def test_deadline_trigger_on_sim_time_commands_nothing_until_clock_arrives(make_rig):
    rig = make_rig(use_sim_time=True, feeder=FeederConfig(state_rate_hz=200.0))
    loop = rig.controller.loop
    assert wait_for(lambda: loop.counters.ticks >= 200)
    assert rig.probe.commands == []
    assert rig.feeder.targets_sent == 0  # the feeder's timers wait for /clock too
    # The same graph commands once /clock runs (so the silence above was the missing clock).
    clock_node = Node("test_clock", context=rig.context)
    rig.extra.append(clock_node)
    pub = clock_node.create_publisher(Clock, graph.CLOCK, CLOCK_QOS)
    sim_time = [100.0]

    def tick() -> None:
        sim_time[0] += 0.001
        pub.publish(Clock(clock=seconds_to_time(sim_time[0])))

    clock_node.create_timer(0.001, tick)
    rig.spinner.add(clock_node)
    assert wait_for(lambda: len(rig.probe.commands) > 10)
    assert np.isfinite(np.array(rig.probe.commands)).all()


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("name", "value", "reason_part"),
    [
        ("kp", [-1.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0], "below the minimum"),
        ("kp", [600.0, 600.0, 600.0], "expected 7 elements"),
        ("rate_hz", 20000.0, ""),
        ("rate_hz", 0.0, ""),
        ("command_interface", "position", "read-only"),
        ("hardware", "sim", "read-only"),
        ("trigger", "lockstep", "read-only"),
        ("max_consecutive_misses", 0, ""),
    ],
)
def test_invalid_parameter_changes_are_refused_with_a_reason(make_rig, name, value, reason_part):
    rig = make_rig(targets=False)
    before = rig.controller.get_parameter(name).value
    result = rig.controller.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful
    assert result.reason and reason_part in result.reason
    after = rig.controller.get_parameter(name).value
    assert list(np.atleast_1d(after)) == list(np.atleast_1d(before))


def test_kp_change_through_a_parameter_client_takes_effect_live(make_rig):
    from rclpy.parameter_client import AsyncParameterClient

    offset = 0.05  # rad on joint 1, whose gravity torque is zero (vertical axis)
    rig = make_rig(feeder=FeederConfig(state_rate_hz=RATE_HZ, amplitude=0.0,
                                       target_bias=offset))
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)

    def joint1_effort(expected: float) -> bool:
        return bool(rig.probe.commands) and abs(rig.probe.commands[-1][0] - expected) < 0.5

    assert wait_for(lambda: joint1_effort(600.0 * offset))  # the segment has finished
    client = AsyncParameterClient(rig.probe, "controller_node")
    assert client.wait_for_services(timeout_sec=WAIT)
    kp = [300.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0]
    future = client.set_parameters([Parameter("kp", value=kp)])
    assert wait_for(future.done)
    assert future.result().results[0].successful
    assert wait_for(lambda: joint1_effort(300.0 * offset))

    bad = client.set_parameters([Parameter("kd", value=[1.0, 2.0])])
    assert wait_for(bad.done)
    result = bad.result().results[0]
    assert not result.successful and "kd" in result.reason
    assert rig.controller.controller.config.kd[0] == 50.0


def test_rate_change_restarts_the_loop_at_the_new_period(make_rig):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    old_loop = rig.controller.loop
    result = rig.controller.set_parameters([Parameter("rate_hz", value=250.0)])[0]
    assert result.successful, result.reason
    loop = rig.controller.loop
    assert loop is not old_loop and not old_loop.running and loop.running
    assert loop.config.rate_hz == 250.0 and loop.period_stats.nominal_period == 1.0 / 250.0
    assert rig.controller.controller.config.rate_hz == 250.0
    assert wait_for(lambda: loop.counters.ticks >= 5)


# --------------------------------------------------------------------------- lifecycle
def test_nothing_is_commanded_unless_active(make_rig):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    rig.controller.trigger_deactivate()
    loop = rig.controller.loop
    ticks = loop.counters.ticks
    assert wait_for(lambda: loop.counters.ticks >= ticks + 100)  # commands in flight land
    count = len(rig.probe.commands)
    assert wait_for(lambda: loop.counters.ticks >= ticks + 400)
    assert len(rig.probe.commands) == count, "no command while inactive"
    rig.controller.trigger_activate()
    assert wait_for(lambda: len(rig.probe.commands) > count + 10)


def test_rviz_status_text_follows_the_mode(make_rig):
    rig = make_rig()
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert wait_for(lambda: any(m.text.startswith("tracking") for m in rig.probe.texts))
    since = len(rig.probe.texts)
    rig.probe.call(rig.probe.estop)
    assert wait_for(lambda: any(m.text.startswith("estop") for m in rig.probe.texts[since:]))
    marker = rig.probe.texts[-1]
    assert marker.type == Marker.TEXT_VIEW_FACING and marker.header.frame_id == "panda_link0"
    assert "jitter p99" in marker.text


# --------------------------------------------------------------------------- configure
def _configure(context, sim_hardware: SimHardware | None,
               **params) -> tuple[ControllerNode, TransitionCallbackReturn]:
    overrides = [Parameter("autostart", value=False)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    node = ControllerNode(hardware=sim_hardware, context=context, parameter_overrides=overrides)
    return node, node.trigger_configure()


@pytest.fixture
def bare_sim_hardware() -> Iterator[SimHardware]:
    hardware = SimHardware(SimHardwareConfig(lockstep=False), renderer=False)
    yield hardware
    hardware.close()


@pytest.mark.parametrize(("params", "with_sim", "message"), [
    ({"hardware": "sim"}, False, "hardware 'sim' runs only in the sim robot process"),
    ({"trigger": "lockstep"}, False, "trigger 'lockstep' needs hardware 'sim'"),
    ({"hardware": "sim", "trigger": "joint_states"}, True,
     "trigger 'joint_states' needs hardware 'topics'"),
    ({"hardware": "sim", "rate_hz": 300.0}, True, "integer multiple of the control rate"),
    ({"rt_priority": 10, "io_priority": 10}, False, "io_priority must be"),
], ids=["sim-without-a-sim", "lockstep-with-topics", "joint-states-with-sim", "rate-ratio",
        "io-priority-not-below"])
def test_bad_hardware_and_trigger_combinations_fail_at_configure(
    ros_context, bare_sim_hardware, console, params, with_sim, message
):
    node, result = _configure(ros_context, bare_sim_hardware if with_sim else None, **params)
    try:
        assert result == TransitionCallbackReturn.FAILURE
        assert node._state_machine.current_state[1] == "unconfigured"
        assert node.loop is None and node.hardware is None
        assert wait_for(lambda: console.logged("ERROR", "configure failed", message))
    finally:
        node.destroy_node()
    assert bare_sim_hardware.counters.cycles == 0, "nothing stepped the world"


# =========================================================================== sim backend
class PolicyStandIn(Node):
    """Answers every camera frame with ``goal`` stamped with the frame's stamp (what the
    policy node does), while ``answering``."""

    def __init__(self, goal, **kwargs) -> None:
        super().__init__("policy_stand_in", **kwargs)
        self.goal = list(goal)
        self.answering = True
        self.answered = 0
        self._pub = self.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
        self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)

    def _on_image(self, msg: Image) -> None:
        if not self.answering:
            return
        target = JointTargets(name=list(ARM_JOINTS), position=self.goal)
        target.header = msg.header
        target.policy_stamp = msg.header.stamp
        self._pub.publish(target)
        self.answered += 1


@dataclass
class SimRig:
    runner: GraphRunner
    controller: ControllerNode
    hardware: SimHardware
    policy: PolicyStandIn
    probe: Probe


@pytest.fixture
def make_sim_rig() -> Iterator[Callable[..., SimRig]]:
    runners: list[GraphRunner] = []

    def make(controller: dict | None = None, sim: dict | None = None, goal=None,
             answering: bool = True) -> SimRig:
        runner = GraphRunner(roles=("sim", "controller"),
                             overrides={"sim": {"lockstep_timeout": 1.0, **(sim or {})},
                                        "controller": {"state_rate_hz": 200.0,
                                                       **(controller or {})}})
        runners.append(runner)
        runner.start()
        sim_time = [Parameter("use_sim_time", value=True)]
        hardware = runner.nodes["sim"].hardware
        policy = PolicyStandIn(goal if goal is not None else hardware.world.config.home_q,
                               context=runner.context, parameter_overrides=sim_time)
        policy.answering = answering
        probe = Probe(context=runner.context, parameter_overrides=sim_time)
        for node in (policy, probe):
            runner.nodes[node.get_name()] = node
            runner.add_node(node)
        return SimRig(runner, runner.nodes["controller"], hardware, policy, probe)

    yield make
    for runner in runners:
        runner.stop()


GOAL = (0.3, -0.3, 0.2, -2.0, 0.1, 1.9, 0.6)  # rad, near home, inside every range


def test_sim_without_targets_holds_the_arm_where_it_is(make_sim_rig):
    rig = make_sim_rig(answering=False)
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD)
    # Held for want of a target: since activation, or (when the probe's subscription
    # matched only after the activation's state message) since the first episode's
    # reset moved the arm, which the first tick with sim time sees.
    assert hold.reason in ("waiting for first target", "reset: waiting for target"), \
        hold.reason
    hardware = rig.hardware
    assert hardware.lockstep and rig.controller.loop.config.pacing == "free"
    assert wait_for(lambda: hardware.now() > 0.1)
    q0, t0 = hardware.world.true_joint_positions(), hardware.now()
    holds, commands, cycles = (hardware.counters.holds, hardware.counters.commands,
                               hardware.counters.cycles)
    assert wait_for(lambda: hardware.now() > t0 + 0.5)
    assert np.abs(hardware.world.true_joint_positions() - q0).max() < 0.02
    counters = hardware.counters
    assert counters.commands - commands >= counters.cycles - cycles - 2, \
        "one command per cycle, through the seam"
    assert counters.holds == holds, "the sim's own hold never had to step in"
    # Lockstep runs on sim time: no period of the loop is a deadline miss.
    assert wait_for(lambda: any(
        {kv.key: kv.value for kv in d.values}.get("trigger") == "lockstep"
        for d in rig.probe.diagnostics))
    values = {kv.key: kv.value for kv in rig.probe.diagnostics[-1].values}
    assert values["loop_misses"] == "0" and values["hardware"] == "sim"


def test_sim_tracks_a_target_and_holds_on_sim_time_when_targets_stop(make_sim_rig, console):
    rig = make_sim_rig(goal=GOAL)
    hardware, controller = rig.hardware, rig.controller
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert wait_for(settled(hardware, GOAL), 3 * WAIT), "the arm reaches the target, at rest"
    since, log_since = len(rig.probe.states), console.mark()
    # The policy goes silent; the physics stops waiting for it at once, so sim time runs
    # ahead of the wall clock and the sim-time watchdog, not the wall-clock backstop,
    # is the one that runs out (on a starved machine the backstop may win the race).
    hardware.config = replace(hardware.config, lockstep_timeout=0.001)
    rig.policy.answering = False
    hold = rig.probe.wait_mode(ControllerState.MODE_HOLD, since)
    assert "no target for more than target_timeout" in hold.reason
    if "wall-clock" not in hold.reason:
        # In lockstep every tick is exactly one period of sim time: the hold comes on
        # the first tick past the deadline (at it, to float rounding of the difference).
        lateness = entered(hold) - (controller.last_target_arrival + TARGET_TIMEOUT)
        assert -1e-9 <= lateness <= PERIOD + 1e-9, (
            entered(hold), controller.last_target_arrival,
            [(s.mode, s.reason[:30], round(entered(s), 3), round(stamp_of(s), 3))
             for s in rig.probe.states[since - 3:since + 3]])
    assert wait_for(lambda: console.logged("WARN", "hold", "target_timeout", since=log_since))
    # Settled into the hold (the light wrist joint swings briefly), it stays put.
    t_hold = entered(hold)
    assert wait_for(lambda: hardware.now() > t_hold + 0.2)
    q_hold, t_settled = hardware.world.true_joint_positions(), hardware.now()
    assert wait_for(lambda: hardware.now() > t_settled + 0.5)
    assert np.abs(hardware.world.true_joint_positions() - q_hold).max() < 0.02, \
        [(s.mode, s.reason) for s in rig.probe.states[since:]][-5:]


def settled(hardware: SimHardware, goal=None) -> Callable[[], bool]:
    """The arm at rest (and at ``goal``, rad, when given)."""
    def condition() -> bool:
        q, qd, _ = hardware.world.joint_state()
        near = goal is None or np.abs(q - np.array(goal)).max() < 0.01
        return near and np.abs(qd).max() < 0.05
    return condition


def test_sim_estop_holds_refuses_targets_and_reset_resumes(make_sim_rig):
    rig = make_sim_rig(goal=GOAL)
    rig.probe.wait_mode(ControllerState.MODE_TRACKING)
    assert wait_for(settled(rig.hardware, GOAL), 3 * WAIT)
    assert rig.probe.call(rig.probe.estop).success
    since = len(rig.probe.states)
    estop = rig.probe.wait_mode(ControllerState.MODE_ESTOP, since)
    status = rig.controller.controller.status
    refused = status()["targets_refused"]
    assert wait_for(lambda: status()["targets_refused"] >= refused + 2), \
        "the policy's targets are refused while latched"
    q0, t0 = rig.hardware.world.true_joint_positions(), rig.hardware.now()
    assert wait_for(lambda: rig.hardware.now() > t0 + 0.3)
    assert np.abs(rig.hardware.world.true_joint_positions() - q0).max() < 0.02
    assert rig.probe.call(rig.probe.reset_estop).success
    rig.probe.wait_mode(ControllerState.MODE_TRACKING, since)
    assert estop.reason == "e-stop service"


def test_sim_lockstep_goes_on_only_once_the_controller_holds_the_answer(make_sim_rig,
                                                                        monkeypatch):
    """In lockstep the loop's thread takes the policy's targets itself (the sim's answer
    source): every target answering a frame reaches the controller at sim time frame +
    lockstep_latency exactly, where the physics waits — never after the physics went on
    without it, and never at an earlier tick however fast it came — and none of the
    waits times out."""
    taken: list[tuple[float, float]] = []  # (target stamp, sim time when taken)
    on_targets = ControllerNode._on_targets

    def recording(self, msg):
        taken.append((time_to_seconds(msg.header.stamp), self.hardware.now()))
        on_targets(self, msg)

    monkeypatch.setattr(ControllerNode, "_on_targets", recording)
    rig = make_sim_rig(goal=GOAL)
    hardware = rig.hardware
    latency = hardware.config.lockstep_latency
    # (The first frames may come before the stand-in policy is discovered.)
    assert wait_for(lambda: len(taken) >= 1, 3 * WAIT)
    timeouts, waits = hardware.counters.lockstep_timeouts, hardware.counters.lockstep_waits
    assert wait_for(lambda: len(taken) >= 21, 3 * WAIT)
    assert all(abs(now - (stamp + latency)) <= 1e-9 for stamp, now in taken), taken
    assert hardware.counters.lockstep_timeouts == timeouts
    assert hardware.counters.lockstep_waits >= waits + 19
    assert list(rig.runner.nodes["sim"].subscriptions) == [], \
        "the sim node needs no subscription of its own for the answers"


def test_sim_rate_change_live_keeps_an_integer_number_of_steps_per_cycle(make_sim_rig):
    rig = make_sim_rig(answering=False)
    rig.probe.wait_mode(ControllerState.MODE_HOLD)
    refused = rig.controller.set_parameters([Parameter("rate_hz", value=300.0)])[0]
    assert not refused.successful and "integer multiple" in refused.reason
    assert rig.hardware.config.control_rate_hz == 1000.0
    assert rig.controller.get_parameter("rate_hz").value == 1000.0
    accepted = rig.controller.set_parameters([Parameter("rate_hz", value=500.0)])[0]
    assert accepted.successful, accepted.reason
    assert rig.hardware.config.control_rate_hz == 500.0
    assert rig.hardware.config.steps_per_cycle == 2
    assert rig.controller.loop.config.rate_hz == 500.0
    t0 = rig.hardware.now()
    assert wait_for(lambda: rig.hardware.now() > t0 + 0.1)
    assert round((rig.hardware.now() - t0) * 1e9) % 2_000_000 == 0, "2 ms per cycle"


def test_destroying_the_controller_removes_its_readers_from_the_graph(ros_context):
    """The topics backend's joint-state reader and the targets reader are nodes of their
    own: destroy_node (no cleanup before) must take them along, or a subscriber outlives
    the controller. The controller node itself subscribes to nothing an executor spins."""
    peer = Node("graph_peer", context=ros_context)
    controller = ControllerNode(context=ros_context)
    try:
        assert [s.topic_name for s in controller.subscriptions] in ([], ["/clock"])
        for topic in ("/joint_states", "/" + graph.POLICY_TARGETS):
            assert wait_for(lambda t=topic: peer.count_subscribers(t) == 1)
        controller.destroy_node()
        for topic in ("/joint_states", "/" + graph.POLICY_TARGETS):
            assert wait_for(lambda t=topic: peer.count_subscribers(t) == 0)
    finally:
        peer.destroy_node()
