"""Sim node through real rclpy: topic types, frames and QoS; bad joint commands; episode
and target services; realtime pacing and lockstep stepping; parameters; GUI refusal.

Each test runs a SimNode in-process on a fresh context, spun by a SingleThreadedExecutor
in a background thread (as the in-process runner does); a probe node on its own executor,
spun by the test, publishes commands and records what the sim publishes.
"""

from __future__ import annotations

import itertools
import math
import threading
import time

import numpy as np
import pytest
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from visualization_msgs.msg import Marker

from visuomotor_interfaces.msg import TaskStatus
from visuomotor_interfaces.srv import ResetEpisode, SetTarget
from visuomotor_ros.node_common import LATCHED_QOS, SENSOR_QOS, ThrottledWarnings, time_to_seconds
from visuomotor_sim.node import SimNode
from visuomotor_sim.world import ARM_JOINT_NAMES

COMMANDS = "/effort_controller/commands"
N = len(ARM_JOINT_NAMES)
RELIABLE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.BEST_EFFORT)


class Harness:
    """A SimNode spinning in a thread plus a probe node spun by the test."""

    def __init__(self, context, **params):
        self.node = SimNode(context=context, parameter_overrides=[
            Parameter(name, value=value) for name, value in params.items()])
        self.sim_executor = SingleThreadedExecutor(context=context)
        self.sim_executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.probe = Node("sim_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.probe)
        self.received: dict[str, list] = {}

    def _spin(self):
        try:
            self.sim_executor.spin()
        except ExternalShutdownException:
            pass

    def record(self, msg_type, topic, qos=10):
        """Keep every message of ``topic`` in ``self.received[topic]``."""
        store = self.received.setdefault(topic, [])
        self.probe.create_subscription(msg_type, topic, store.append, qos)
        return store

    def spin_until(self, condition, timeout=10.0):
        return spin_until(self.executor, condition, timeout)

    def command_publisher(self, qos=RELIABLE_QOS):
        publisher = self.probe.create_publisher(Float64MultiArray, COMMANDS, qos)
        assert self.spin_until(lambda: publisher.get_subscription_count() > 0, 5.0)
        return publisher

    def send(self, publisher, values, settle_steps=5):
        """Publish a command; return once the node has handled it and stepped after it."""
        counters = self.node.counters
        handled = counters.commands + 1
        publisher.publish(Float64MultiArray(data=[float(v) for v in values]))
        assert self.spin_until(lambda: counters.commands >= handled, 5.0), "command lost"
        stepped = counters.steps + settle_steps
        assert self.spin_until(lambda: counters.steps >= stepped, 5.0)

    def call(self, srv_type, name, request):
        client = self.probe.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(request)
        assert self.spin_until(future.done, 10.0), f"{name} did not answer"
        return future.result()

    def close(self):
        self.sim_executor.shutdown(timeout_sec=2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.probe.destroy_node()
        self.thread.join(timeout=5.0)


@pytest.fixture
def make_sim(ros_context):
    harnesses: list[Harness] = []

    def make(**params):
        harness = Harness(ros_context, **params)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()


def applied_effort(node: SimNode) -> np.ndarray:
    """Torques the world applied in its last step, N·m (7,)."""
    return node.world.joint_state()[2]


# ------------------------------------------------------------------------ topics, QoS


def _publisher_info(probe: Node, topic: str):
    infos = [i for i in probe.get_publishers_info_by_topic(topic) if i.node_name == "sim_node"]
    assert len(infos) == 1, f"sim_node should publish {topic} once, got {infos}"
    return infos[0]


def test_publishers_have_contract_types_and_qos(make_sim):
    sim = make_sim(step_mode="realtime", camera_rate_hz=10.0)
    probe = sim.probe
    expected = {
        "/camera/image_raw": ("sensor_msgs/msg/Image", ReliabilityPolicy.BEST_EFFORT,
                              DurabilityPolicy.VOLATILE),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", ReliabilityPolicy.BEST_EFFORT,
                                DurabilityPolicy.VOLATILE),
        "/robot_description": ("std_msgs/msg/String", ReliabilityPolicy.RELIABLE,
                               DurabilityPolicy.TRANSIENT_LOCAL),
        "/joint_states": ("sensor_msgs/msg/JointState", ReliabilityPolicy.RELIABLE,
                          DurabilityPolicy.VOLATILE),
        "/clock": ("rosgraph_msgs/msg/Clock", None, None),
        "/sim/task_status": ("visuomotor_interfaces/msg/TaskStatus", None, None),
        "/sim/target_marker": ("visualization_msgs/msg/Marker", None,
                               DurabilityPolicy.TRANSIENT_LOCAL),
        "/diagnostics": ("diagnostic_msgs/msg/DiagnosticArray", None, None),
    }
    assert sim.spin_until(lambda: all(
        probe.get_publishers_info_by_topic(t) for t in expected), 5.0)
    for topic, (type_name, reliability, durability) in expected.items():
        info = _publisher_info(probe, topic)
        assert info.topic_type == type_name, topic
        if reliability is not None:
            assert info.qos_profile.reliability == reliability, topic
        if durability is not None:
            assert info.qos_profile.durability == durability, topic
    subs = [i for i in probe.get_subscriptions_info_by_topic(COMMANDS)
            if i.node_name == "sim_node"]
    assert [i.topic_type for i in subs] == ["std_msgs/msg/Float64MultiArray"]
    # best effort: matches reliable and best-effort command publishers alike
    assert subs[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def test_messages_carry_frames_stamps_and_contents(make_sim):
    sim = make_sim(step_mode="realtime", camera_rate_hz=10.0, diagnostics_period=0.1)
    images = sim.record(Image, "/camera/image_raw", SENSOR_QOS)
    infos = sim.record(CameraInfo, "/camera/camera_info", SENSOR_QOS)
    joints = sim.record(JointState, "/joint_states", 10)
    status = sim.record(TaskStatus, "/sim/task_status", 10)
    clocks = sim.record(Clock, "/clock", SENSOR_QOS)
    diagnostics = sim.record(DiagnosticArray, "/diagnostics", 10)
    assert sim.spin_until(lambda: len(images) >= 2 and infos and len(joints) >= 10
                          and status and len(clocks) >= 2 and diagnostics, 10.0)

    image, info = images[-1], infos[-1]
    assert image.encoding == "rgb8"
    assert (image.width, image.height) == (info.width, info.height)
    assert len(image.data) == image.step * image.height == image.width * image.height * 3
    assert image.header.frame_id == info.header.frame_id == "camera_optical_frame"
    assert info.k[0] > 0.0 and info.k[4] > 0.0 and info.k[8] == 1.0

    def stamps(messages):
        return {time_to_seconds(m.header.stamp) for m in messages}

    assert sim.spin_until(lambda: stamps(images) & stamps(infos), 5.0), \
        "image and camera_info of a frame share a stamp"

    js = joints[-1]
    assert list(js.name) == list(ARM_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == N
    joint_stamps = [time_to_seconds(m.header.stamp) for m in joints]
    assert all(b > a for a, b in itertools.pairwise(joint_stamps)), "stamps increase"
    clock_times = [time_to_seconds(c.clock) for c in clocks]
    assert clock_times[-1] > clock_times[0]

    st = status[-1]
    assert st.header.frame_id == "panda_link0"
    assert st.episode == 1 and st.profile == "nominal"
    assert np.allclose([st.target_position.x, st.target_position.y, st.target_position.z],
                       sim.node.task.target)
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    assert diagnostics[-1].status[0].name == "sim_node: simulation"
    assert {"real_time_factor", "commands_rejected", "lockstep_timeouts"} <= set(values)


def test_late_subscribers_get_robot_description_and_target_marker(make_sim):
    sim = make_sim(step_mode="realtime")
    assert sim.spin_until(lambda: sim.node.counters.steps > 50, 5.0)
    descriptions = sim.record(String, "/robot_description", LATCHED_QOS)
    markers = sim.record(Marker, "/sim/target_marker", LATCHED_QOS)
    assert sim.spin_until(lambda: descriptions and markers, 5.0)
    urdf = descriptions[0].data
    assert "<robot" in urdf and 'name="panda_link0"' in urdf and "panda_joint7" in urdf
    marker = markers[0]
    assert marker.header.frame_id == "panda_link0" and marker.type == Marker.SPHERE
    position = [marker.pose.position.x, marker.pose.position.y, marker.pose.position.z]
    assert np.allclose(position, sim.node.task.target)


# ------------------------------------------------------------------------ bad commands


def test_effort_beyond_limit_is_clamped_before_it_is_applied(make_sim):
    sim = make_sim(lockstep_timeout=0.002, command_timeout=10.0)
    limit = sim.node.world.limits.effort
    joints = sim.record(JointState, "/joint_states", 10)
    publisher = sim.command_publisher()
    command = np.zeros(N)
    command[0], command[3] = 1000.0, -1000.0
    sim.send(publisher, command)
    assert sim.node.counters.clamped == 1 and sim.node.counters.rejected == 0
    stored, _ = sim.node.latest_command()
    assert stored[0] == limit[0] and stored[3] == -limit[3]
    applied = applied_effort(sim.node)
    assert np.all(np.abs(applied) <= limit + 1e-9)
    assert applied[0] == pytest.approx(limit[0]) and applied[3] == pytest.approx(-limit[3])
    assert sim.spin_until(lambda: joints and joints[-1].effort[0] == pytest.approx(limit[0]))
    assert all(np.all(np.abs(m.effort) <= limit + 1e-9) for m in joints)


@pytest.mark.parametrize("bad", [
    [math.nan] * N,
    [0.0] * (N - 1) + [math.inf],
    [-math.inf] + [0.0] * (N - 1),
    [1.0] * (N - 1),
    [1.0] * (N + 1),
    [],
], ids=["nan", "inf", "minus-inf", "too-short", "too-long", "empty"])
def test_malformed_command_is_refused_and_previous_kept(make_sim, bad):
    sim = make_sim(lockstep_timeout=0.002, command_timeout=10.0)
    publisher = sim.command_publisher()
    good = np.linspace(-2.0, 2.0, N)
    sim.send(publisher, good)
    assert np.allclose(applied_effort(sim.node), good)

    sim.send(publisher, bad, settle_steps=20)
    assert sim.node.counters.rejected == 1
    stored, _ = sim.node.latest_command()
    assert np.array_equal(stored, good)
    assert np.allclose(applied_effort(sim.node), good), "the previous command stays applied"
    assert sim.node._thread.is_alive()

    sim.send(publisher, -good)  # still accepts commands
    assert np.allclose(applied_effort(sim.node), -good)


@pytest.mark.parametrize("interface", ["position", "velocity"])
def test_position_and_velocity_commands_are_clamped_to_joint_limits(make_sim, interface):
    sim = make_sim(lockstep_timeout=0.002, command_timeout=10.0, command_interface=interface)
    limits = sim.node.world.limits
    upper = limits.upper if interface == "position" else limits.velocity
    publisher = sim.command_publisher()
    sim.send(publisher, np.full(N, 100.0))
    stored, _ = sim.node.latest_command()
    assert np.array_equal(stored, upper)
    assert sim.node.counters.clamped == 1


def test_bursts_of_bad_commands_log_one_warning(make_sim):
    sim = make_sim(lockstep_timeout=0.002)
    logged: list[str] = []

    class Recorder:
        def warning(self, text):
            logged.append(text)

    sim.node._warnings = ThrottledWarnings(Recorder(), period=60.0)
    publisher = sim.command_publisher()
    for _ in range(5):
        sim.send(publisher, [math.nan] * N, settle_steps=1)
    assert sim.node.counters.rejected == 5
    refusals = [text for text in logged if "refused" in text]
    assert len(refusals) == 1 and "NaN" in refusals[0]


def test_throttled_warnings_report_how_many_were_suppressed():
    logged: list[str] = []

    class Recorder:
        def warning(self, text):
            logged.append(text)

    warnings = ThrottledWarnings(Recorder(), period=0.05)
    assert warnings.warn("a", "first")
    assert not warnings.warn("a", "again")
    assert not warnings.warn("a", "again")
    assert warnings.warn("b", "other kind")
    time.sleep(0.06)
    assert warnings.warn("a", "later")
    assert logged == ["first", "other kind", "later (2 more since the last such warning)"]


def test_best_effort_and_reliable_command_publishers_both_reach_the_node(make_sim):
    sim = make_sim(lockstep_timeout=0.002, command_timeout=10.0)
    for index, qos in enumerate((RELIABLE_QOS, BEST_EFFORT_QOS)):
        publisher = sim.command_publisher(qos)
        command = np.full(N, float(index + 1))
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # best effort: resend until one arrives
            publisher.publish(Float64MultiArray(data=command.tolist()))
            if sim.spin_until(lambda c=command: np.array_equal(sim.node.latest_command()[0], c),
                              0.1):
                break
        assert np.array_equal(sim.node.latest_command()[0], command), qos.reliability


# ------------------------------------------------------------------------ services


def test_reset_with_seed_and_profile_is_deterministic(make_sim):
    sim = make_sim(lockstep_timeout=0.002)

    def reset(seed, profile):
        response = sim.call(ResetEpisode, "/sim/reset_episode",
                            ResetEpisode.Request(seed=seed, profile=profile))
        assert response.success, response.message
        p = response.target_position
        return np.array([p.x, p.y, p.z]), sim.node.world.dynamics, response.episode

    first, nominal, episode = reset(7, "nominal")
    again, _, next_episode = reset(7, "nominal")
    other, _, _ = reset(8, "nominal")
    assert np.array_equal(first, again) and next_episode == episode + 1
    assert not np.allclose(first, other)
    assert np.allclose(sim.node.task.target, other)

    _, training, _ = reset(7, "training")
    _, training_again, _ = reset(7, "training")
    _, heldout, _ = reset(7, "heldout")
    assert training == training_again
    assert training != nominal and heldout != training
    assert sim.node.world.dynamics.actuator_strength_scale < 0.85  # heldout range

    bad = sim.call(ResetEpisode, "/sim/reset_episode",
                   ResetEpisode.Request(seed=1, profile="mars"))
    assert not bad.success and "mars" in bad.message
    assert sim.node.world.dynamics == heldout, "a refused reset changes nothing"


def test_set_target_moves_the_task_target(make_sim):
    sim = make_sim(step_mode="realtime", status_rate_hz=50.0)
    status = sim.record(TaskStatus, "/sim/task_status", 10)
    markers = sim.record(Marker, "/sim/target_marker", LATCHED_QOS)
    goal = (0.45, -0.12, 0.22)
    x, y, z = goal
    request = SetTarget.Request()
    request.position.x, request.position.y, request.position.z = goal
    assert sim.call(SetTarget, "/sim/set_target", request).success

    def at_goal(point):
        return np.allclose([point.x, point.y, point.z], goal)

    assert sim.spin_until(lambda: status and at_goal(status[-1].target_position), 5.0)
    assert sim.spin_until(lambda: markers and at_goal(markers[-1].pose.position), 5.0)
    assert np.allclose(sim.node.world.target_position, goal)

    request.position.x = math.nan
    refused = sim.call(SetTarget, "/sim/set_target", request)
    assert not refused.success and "finite" in refused.message
    assert np.allclose(sim.node.world.target_position, (x, y, z))


# ------------------------------------------------------------------------ stepping


def test_without_start_episode_physics_waits_for_the_first_reset(make_sim):
    sim = make_sim(step_mode="realtime", start_episode=False)
    images = sim.record(Image, "/camera/image_raw", SENSOR_QOS)
    sim.spin_until(lambda: False, 0.3)
    assert sim.node.counters.steps == 0 and sim.node.sim_time == 0.0
    response = sim.call(ResetEpisode, "/sim/reset_episode", ResetEpisode.Request(seed=3))
    assert response.success and response.episode == 1
    assert sim.spin_until(lambda: images and sim.node.counters.steps > 10, 5.0)
    assert sim.node._thread.is_alive()



def test_realtime_mode_tracks_the_wall_clock(make_sim):
    # few frames: the check is on pacing, not on how fast this machine renders
    sim = make_sim(step_mode="realtime", camera_rate_hz=2.0)
    node = sim.node
    assert sim.spin_until(lambda: node.counters.steps > 10, 5.0)
    wall0, sim0 = time.perf_counter(), node.sim_time
    time.sleep(1.5)
    factor = (node.sim_time - sim0) / (time.perf_counter() - wall0)
    assert 0.8 <= factor <= 1.2, f"real-time factor {factor:.3f}"


def test_lockstep_advances_on_timeouts_without_commands(make_sim):
    sim = make_sim(lockstep_timeout=0.01, camera_rate_hz=5.0)
    node = sim.node
    q0 = node.world.true_joint_positions()
    time.sleep(1.0)
    steps = node.counters.steps
    # about one step per timeout: >= 20 even on a loaded machine, never free-running
    assert 20 <= steps <= 110, steps
    assert node.counters.lockstep_timeouts >= steps - 1
    assert np.max(np.abs(node.world.true_joint_positions() - q0)) < 0.05, "holds position"


@pytest.mark.parametrize("decimation", [1, 4])
def test_lockstep_steps_as_soon_as_each_command_arrives(make_sim, decimation):
    """The sim waits for an answer to each joint state it publishes, and only to those."""
    sim = make_sim(lockstep_timeout=0.05, camera_rate_hz=5.0, command_timeout=10.0,
                   joint_state_decimation=decimation)
    node = sim.node
    publisher = sim.probe.create_publisher(Float64MultiArray, COMMANDS, RELIABLE_QOS)
    hold = Float64MultiArray(data=[0.0] * N)
    sim.probe.create_subscription(JointState, "/joint_states",
                                  lambda _msg: publisher.publish(hold), 10)
    assert sim.spin_until(lambda: node.counters.steps > 20, 5.0)
    steps0, timeouts0, wall0 = node.counters.steps, node.counters.lockstep_timeouts, time.time()
    sim.spin_until(lambda: False, 1.0)
    steps = node.counters.steps - steps0
    rate = steps / (time.time() - wall0)
    # timeouts alone would give 20 steps/s
    assert rate > 100.0, f"{rate:.0f} steps/s"
    assert node.counters.lockstep_timeouts - timeouts0 < steps / 10


# ------------------------------------------------------------------------ parameters, GUI


def test_task_parameters_change_live_and_invalid_ones_are_refused(make_sim):
    sim = make_sim(step_mode="realtime")
    node = sim.node
    assert node.set_parameters([Parameter("tolerance", value=0.05)])[0].successful
    assert node.task.config.tolerance == 0.05
    refused = node.set_parameters([Parameter("dwell", value=6.0)])[0]  # > episode_timeout
    assert not refused.successful and "timeout" in refused.reason
    assert node.task.config.dwell == 0.3
    assert not node.set_parameters([Parameter("profile", value="mars")])[0].successful
    assert not node.set_parameters([Parameter("gui", value=True)])[0].successful


def test_invalid_step_mode_fails_at_start(ros_context):
    with pytest.raises(ValueError, match="step_mode"):
        SimNode(context=ros_context,
                parameter_overrides=[Parameter("step_mode", value="sometimes")])


def test_gui_without_a_display_fails_with_a_clear_error(ros_context, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="needs a display"):
        SimNode(context=ros_context, parameter_overrides=[Parameter("gui", value=True)])
