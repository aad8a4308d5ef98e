"""Sim node through real rclpy: the simulated robot's topics, services and parameters.

The physics is stepped by a control loop in the robot process (see
visuomotor_ros.sim_robot); here a ControlLoop ticking ``SimHardware.cycle`` on
wall-clock deadlines stands in for the controller's loop, or the real composition
(sim + controller nodes, as the in-process runner builds it) runs. The SimNode
spins on an executor of its own in a background thread; a probe node spun by the
test records what it publishes and calls its services. Every timing figure is on
sim time or message stamps; waits are bounded waits on conditions.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import Marker

from visuomotor_core.hardware import JointSample
from visuomotor_core.rt_loop import ControlLoop, LoopConfig
from visuomotor_core.timing import wait_until
from visuomotor_interfaces.msg import JointTargets, TaskStatus
from visuomotor_interfaces.srv import ResetEpisode, SetTarget
from visuomotor_ros import graph
from visuomotor_ros.node_common import (
    LATCHED_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    seconds_to_time,
    time_to_seconds,
)
from visuomotor_ros.runner import GraphRunner
from visuomotor_ros.sim_node import SimNode
from visuomotor_sim.hardware import MAX_SEED, MAX_UNANSWERED, load_profiles_default
from visuomotor_sim.robot import ARM_JOINT_NAMES

N = len(ARM_JOINT_NAMES)
WAIT = 20.0  # s, upper bound on any wait for a condition
PROFILES = sorted(load_profiles_default())
BEST_EFFORT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                             reliability=ReliabilityPolicy.BEST_EFFORT)


def stamp_of(msg) -> float:
    return time_to_seconds(msg.header.stamp)


def on_grid(seconds: float, period: float) -> bool:
    """``seconds`` is a whole multiple of ``period`` (both exact to the ns)."""
    return round(seconds * 1e9) % round(period * 1e9) == 0


class Harness:
    """A SimNode spinning in a thread, a loop stepping its world, a probe node."""

    def __init__(self, context, **params) -> None:
        overrides = [Parameter("use_sim_time", value=True)]
        overrides += [Parameter(name, value=value) for name, value in params.items()]
        self.node = SimNode(context=context, parameter_overrides=overrides)
        self.hardware = self.node.hardware
        self.hardware.lockstep = False  # paced by the loop below, as with trigger 'deadline'
        self.sim_executor = SingleThreadedExecutor(context=context)
        self.sim_executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.probe = Node("sim_probe", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.probe)
        self.loop: ControlLoop | None = None

    def _spin(self) -> None:
        try:
            self.sim_executor.spin()
        except ExternalShutdownException:
            pass

    def start_loop(self) -> None:
        """Step the world at 1 kHz on wall-clock deadlines (one cycle per tick)."""
        self.loop = ControlLoop(self.hardware.cycle, LoopConfig(rate_hz=1000.0),
                                name="test-sim-loop")
        self.loop.start()

    def record(self, msg_type, topic: str, qos=10) -> list:
        store: list = []
        self.probe.create_subscription(msg_type, topic, store.append, qos)
        return store

    def spin_until(self, condition, timeout: float = WAIT) -> bool:
        return spin_until(self.executor, condition, timeout)

    def call(self, srv_type, name: str, request):
        client = self.probe.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=WAIT)
        future = client.call_async(request)
        assert self.spin_until(future.done), f"{name} did not answer"
        return future.result()

    def reset(self, seed: int, profile: str = ""):
        return self.call(ResetEpisode, "/sim/reset_episode",
                         ResetEpisode.Request(seed=seed, profile=profile))

    def set_target(self, position):
        request = SetTarget.Request()
        request.position.x, request.position.y, request.position.z = (float(v) for v in position)
        return self.call(SetTarget, "/sim/set_target", request)

    def close(self) -> None:
        if self.loop is not None:
            self.loop.stop()
        self.sim_executor.shutdown(timeout_sec=2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.probe.destroy_node()


@pytest.fixture
def make_sim(ros_context) -> Iterator:
    harnesses: list[Harness] = []

    def make(loop: bool = True, **params) -> Harness:
        harness = Harness(ros_context, **params)
        harnesses.append(harness)
        if loop:
            harness.start_loop()
        return harness

    yield make
    for harness in harnesses:
        harness.close()


# ------------------------------------------------------------------------ start-up
@pytest.mark.parametrize("overrides", [[], [Parameter("use_sim_time", value=False)]],
                         ids=["default", "false"])
def test_the_sim_node_refuses_to_run_on_the_wall_clock(ros_context, overrides, monkeypatch):
    destroyed: list[str] = []
    original = SimNode.destroy_node

    def recording(self):
        destroyed.append(self.get_name())
        original(self)

    monkeypatch.setattr(SimNode, "destroy_node", recording)
    with pytest.raises(ValueError, match="use_sim_time:=true"):
        SimNode(context=ros_context, parameter_overrides=overrides)
    assert destroyed == ["sim_node"], "the node that failed to start is destroyed at once"


def test_an_unknown_start_profile_fails_at_start_and_stops_the_render_worker(
    ros_context, monkeypatch
):
    import visuomotor_sim.render_worker as render_worker

    started: list = []
    original = render_worker.RenderWorker.__init__

    def remember(self, *args, **kwargs):  # the real worker, remembered to check its end
        original(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(render_worker.RenderWorker, "__init__", remember)
    with pytest.raises(ValueError, match="unknown profile 'mars'"):
        SimNode(context=ros_context, parameter_overrides=[
            Parameter("use_sim_time", value=True), Parameter("profile", value="mars")])
    assert started and not any(worker.alive for worker in started)


def test_gui_without_a_display_fails_with_a_clear_error(ros_context, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="needs a display"):
        SimNode(context=ros_context, parameter_overrides=[
            Parameter("use_sim_time", value=True), Parameter("gui", value=True)])


# ------------------------------------------------------------------------ topics, QoS
def _publisher_info(probe: Node, topic: str):
    infos = [i for i in probe.get_publishers_info_by_topic(topic) if i.node_name == "sim_node"]
    assert len(infos) == 1, f"sim_node should publish {topic} once, got {infos}"
    return infos[0]


def test_publishers_have_contract_types_and_qos_and_commands_never_cross_dds(make_sim):
    sim = make_sim(loop=False)
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
    # The policy's targets reach the sim through the controller that takes them (its
    # answer source), not through a subscription of the sim node; the controller's
    # commands go through the hardware seam in-process and never over DDS.
    assert [s.topic_name for s in sim.node.subscriptions] in ([], ["/clock"])
    command_topic = "/" + graph.DEFAULT_COMMAND_TOPIC
    assert not [i for i in probe.get_subscriptions_info_by_topic(command_topic)
                if i.node_name == "sim_node"]


def test_messages_carry_frames_stamps_on_sim_time_and_contents(make_sim):
    sim = make_sim(camera_rate_hz=10.0, diagnostics_period=0.1, joint_state_rate_hz=100.0)
    images = sim.record(Image, "/camera/image_raw", SENSOR_QOS)
    infos = sim.record(CameraInfo, "/camera/camera_info", SENSOR_QOS)
    joints = sim.record(JointState, "/joint_states", 50)
    status = sim.record(TaskStatus, "/sim/task_status", 10)
    clocks = sim.record(Clock, "/clock", BEST_EFFORT_QOS)
    diagnostics = sim.record(DiagnosticArray, "/diagnostics", 10)
    assert sim.spin_until(lambda: len(images) >= 2 and infos and len(joints) >= 10
                          and status and len(clocks) >= 2 and diagnostics)

    image, info = images[-1], infos[-1]
    assert image.encoding == "rgb8"
    assert (image.width, image.height) == (info.width, info.height)
    assert len(image.data) == image.step * image.height == image.width * image.height * 3
    assert image.header.frame_id == info.header.frame_id == "camera_optical_frame"
    assert info.k[0] > 0.0 and info.k[4] > 0.0 and info.k[8] == 1.0
    assert sim.spin_until(lambda: {stamp_of(m) for m in images} & {stamp_of(m) for m in infos}), \
        "image and camera_info of a frame share a stamp"
    # Frames are stamped with the sim time they show: multiples of the camera period.
    assert all(on_grid(stamp_of(m), 0.1) and stamp_of(m) > 0.0 for m in images)

    js = joints[-1]
    assert list(js.name) == list(ARM_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == N
    joint_stamps = [stamp_of(m) for m in joints]
    assert all(b > a for a, b in itertools.pairwise(joint_stamps)), "stamps increase"
    assert all(on_grid(t, 0.01) for t in joint_stamps)
    clock_times = [time_to_seconds(c.clock) for c in clocks]
    assert all(b > a for a, b in itertools.pairwise(clock_times))
    assert clock_times[-1] <= sim.hardware.now() + 1e-9  # ns stamps, float seconds

    st = status[-1]
    assert st.header.frame_id == "panda_link0"
    assert st.episode == 1 and st.profile == "nominal" and st.seed == 0
    assert np.allclose([st.target_position.x, st.target_position.y, st.target_position.z],
                       sim.hardware.task.target)
    report = diagnostics[-1].status[0]
    assert report.name == "sim_node: simulation" and report.hardware_id == "pybullet"
    values = {kv.key: kv.value for kv in report.values}
    assert {"real_time_factor", "sim_time_s", "commands_rejected", "frames_published",
            "frames_dropped", "lockstep_waits", "lockstep_timeouts"} <= set(values)
    assert values["lockstep"] == "False"


def test_late_subscribers_get_robot_description_and_target_marker(make_sim):
    sim = make_sim()
    assert sim.spin_until(lambda: sim.hardware.counters.steps > 50)
    descriptions = sim.record(String, "/robot_description", LATCHED_QOS)
    markers = sim.record(Marker, "/sim/target_marker", LATCHED_QOS)
    assert sim.spin_until(lambda: descriptions and markers)
    urdf = descriptions[0].data
    assert "<robot" in urdf and 'name="panda_link0"' in urdf and "panda_joint7" in urdf
    marker = markers[0]
    assert marker.header.frame_id == "panda_link0" and marker.type == Marker.SPHERE
    position = [marker.pose.position.x, marker.pose.position.y, marker.pose.position.z]
    assert np.allclose(position, sim.hardware.task.target)


# ------------------------------------------------------------------------ services
def test_reset_with_seed_and_profile_is_deterministic_for_every_profile(make_sim):
    sim = make_sim(loop=False)
    hardware = sim.hardware

    def reset(seed: int, profile: str):
        response = sim.reset(seed, profile)
        assert response.success, response.message
        p = response.target_position
        return np.array([p.x, p.y, p.z]), hardware.world.dynamics, response.episode

    drawn = {}
    for profile in PROFILES:
        first, dynamics, episode = reset(7, profile)
        again, dynamics_again, next_episode = reset(7, profile)
        assert np.array_equal(first, again) and next_episode == episode + 1, profile
        assert dynamics == dynamics_again, profile
        assert np.allclose(hardware.task.target, again)
        assert hardware.episode.profile == profile
        drawn[profile] = dynamics
    other, _, _ = reset(8, "nominal")
    assert not np.allclose(first, other)
    assert drawn["training"] != drawn["nominal"] and drawn["heldout"] != drawn["training"]
    assert drawn["heldout"].actuator_strength_scale < 0.85  # heldout range
    assert any(drawn["training_with_force"].external_force)
    assert not any(drawn["training"].external_force)
    # An empty profile keeps the node's profile parameter.
    response = sim.reset(3)
    assert response.success and hardware.episode.profile == "nominal"
    # The largest uint32 seed is a valid seed.
    assert sim.reset(MAX_SEED, "nominal").success


def test_reset_refuses_unknown_profiles_and_seeds_out_of_range_with_a_reason(make_sim):
    sim = make_sim(loop=False)
    assert sim.reset(4, "heldout").success
    episode, dynamics = sim.hardware.episode, sim.hardware.world.dynamics
    bad = sim.reset(1, "mars")
    assert not bad.success and "unknown profile 'mars'" in bad.message
    assert "nominal" in bad.message, "the known profiles are named"
    for seed in (-1, MAX_SEED + 1):
        with pytest.raises(ValueError, match=f"seed {seed} "):
            sim.node.reset_episode(seed, "nominal")
    assert sim.hardware.episode is episode, "a refused reset changes nothing"
    assert sim.hardware.world.dynamics == dynamics


def test_set_target_moves_the_task_target_marker_and_status(make_sim):
    sim = make_sim(status_rate_hz=50.0)
    status = sim.record(TaskStatus, "/sim/task_status", 10)
    markers = sim.record(Marker, "/sim/target_marker", LATCHED_QOS)
    goal = (0.45, -0.12, 0.22)
    response = sim.set_target(goal)
    assert response.success, response.message

    def at_goal(point) -> bool:
        return np.allclose([point.x, point.y, point.z], goal)

    assert sim.spin_until(lambda: status and at_goal(status[-1].target_position))
    assert sim.spin_until(lambda: markers and at_goal(markers[-1].pose.position))
    assert np.allclose(sim.hardware.world.target_position, goal)
    assert status[-1].elapsed < 1.0, "the task restarted toward the new target"


BAD_TARGETS = {
    "nan": ((math.nan, 0.0, 0.2), "finite"),
    "inf": ((0.4, math.inf, 0.2), "finite"),
    "1e20": ((1e20, 0.0, 0.2), "not over the table"),
    "+1e308": ((0.4, 0.0, 1e308), "beyond the arm's reach"),
    "-1e308": ((0.4, 0.0, -1e308), "not above the table"),
    "below-table": ((0.4, 0.0, 0.0), "not above the table"),
    "outside-table": ((0.4, 0.75, 0.2), "not over the table"),
    "beyond-reach": ((0.89, 0.0, 0.05), "beyond the arm's reach"),
}


def test_set_target_refuses_unplaceable_positions_with_a_reason_and_keeps_the_target(make_sim):
    sim = make_sim(loop=False)
    markers = sim.record(Marker, "/sim/target_marker", LATCHED_QOS)
    assert sim.spin_until(lambda: markers)
    before = sim.hardware.world.target_position
    for name, (position, reason) in BAD_TARGETS.items():
        response = sim.set_target(position)
        assert not response.success, name
        assert response.message.startswith("target refused: ") and reason in response.message, \
            (name, response.message)
        assert np.array_equal(sim.hardware.world.target_position, before), name
        assert np.array_equal(sim.hardware.task.target, before), name
    sim.spin_until(lambda: len(markers) > 1, 0.2)
    assert len(markers) == 1, "no marker for a refused target"


def test_without_start_episode_the_world_waits_for_the_first_reset(make_sim):
    sim = make_sim(start_episode=False, camera_rate_hz=10.0)
    images = sim.record(Image, "/camera/image_raw", SENSOR_QOS)
    assert sim.spin_until(lambda: sim.loop.counters.ticks > 20)
    assert sim.hardware.counters.steps == 0 and sim.node.sim_time == 0.0
    response = sim.reset(3)
    assert response.success and response.episode == 1
    assert sim.spin_until(lambda: images and sim.hardware.counters.steps > 10)


# ------------------------------------------------------------------------ parameters
def test_task_parameters_change_live_and_invalid_ones_are_refused(make_sim):
    sim = make_sim(loop=False)
    node = sim.node
    assert node.set_parameters([Parameter("tolerance", value=0.05)])[0].successful
    assert node.hardware.task.config.tolerance == 0.05
    refused = node.set_parameters([Parameter("dwell", value=6.0)])[0]  # > episode_timeout
    assert not refused.successful and "timeout" in refused.reason
    assert node.hardware.task.config.dwell == 0.3
    refused = node.set_parameters([Parameter("profile", value="mars")])[0]
    assert not refused.successful and "mars" in refused.reason
    assert node.set_parameters([Parameter("profile", value="heldout")])[0].successful
    assert sim.reset(2).success and node.hardware.episode.profile == "heldout"
    for name, value in (("gui", True), ("camera_rate_hz", 5.0), ("lockstep_timeout", 1.0)):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and "read-only" in result.reason, name


# ------------------------------------------------------------------------ the robot process
class FramePolicy(Node):
    """Stands in for the policy: answers every camera frame with joint targets stamped
    with the frame's stamp (the arm's current positions), while ``answering``."""

    def __init__(self, **kwargs) -> None:
        super().__init__("frame_policy", **kwargs)
        self.answering = True
        self.offset = 0.0  # rad added to every joint of the answer
        self.frames: list[float] = []
        self.answered: list[float] = []
        self._positions: list[float] | None = None
        self._pub = self.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
        self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)
        self.create_subscription(JointState, graph.JOINT_STATES, self._on_joints, LATEST_QOS)

    def _on_joints(self, msg: JointState) -> None:
        self._positions = list(msg.position)

    def _on_image(self, msg: Image) -> None:
        stamp = stamp_of(msg)
        self.frames.append(stamp)
        if not self.answering or self._positions is None:
            return
        target = JointTargets(name=list(ARM_JOINT_NAMES),
                              position=[q + self.offset for q in self._positions])
        target.header.stamp = seconds_to_time(stamp)
        target.policy_stamp = seconds_to_time(stamp)
        self._pub.publish(target)
        self.answered.append(stamp)


@pytest.fixture
def robot_process() -> Iterator:
    """The sim and the controller composed as in the sim robot process (the runner's
    roles 'sim' and 'controller', the nodes' parameter files), plus a frame policy."""
    runners: list[GraphRunner] = []

    def start(sim: dict | None = None, controller: dict | None = None):
        runner = GraphRunner(roles=("sim", "controller"),
                             overrides={"sim": sim or {}, "controller": controller or {}})
        runners.append(runner)
        runner.start()
        policy = FramePolicy(context=runner.context,
                             parameter_overrides=[Parameter("use_sim_time", value=True)])
        runner.nodes["policy_stand_in"] = policy
        runner.add_node(policy)
        return runner, runner.nodes["sim"], policy

    yield start
    for runner in runners:
        runner.stop()


def _wait(condition, timeout: float = WAIT) -> bool:
    return wait_until(condition, timeout, 0.005)

def test_frames_are_published_on_the_camera_grid_while_the_loop_is_paced(robot_process):
    _, sim, policy = robot_process(sim={"camera_rate_hz": 20.0},
                                  controller={"trigger": "deadline"})
    hardware = sim.hardware
    assert not hardware.lockstep, "a deadline-paced loop: the sim never waits"
    assert _wait(lambda: len(policy.frames) >= 3)
    assert all(on_grid(t, 0.05) and t > 0.0 for t in policy.frames), policy.frames
    assert hardware.counters.lockstep_waits == 0
    assert hardware.counters.commands > 0, "the controller's commands reach the world"


def test_lockstep_waits_for_the_policys_answer_and_stops_waiting_without_one(robot_process):
    _, sim, policy = robot_process(sim={"lockstep_timeout": 1.0, "camera_rate_hz": 20.0})
    hardware, counters = sim.hardware, sim.hardware.counters
    assert hardware.lockstep, "the sim bringup runs the controller in lockstep"
    assert _wait(lambda: len(policy.answered) >= 2)
    timeouts = counters.lockstep_timeouts  # frames before the policy was discovered
    waits = counters.lockstep_waits
    answered = len(policy.answered)
    assert _wait(lambda: len(policy.answered) >= answered + 4)
    assert counters.lockstep_waits > waits, "the physics waited for answers"
    assert counters.lockstep_timeouts == timeouts, "and every answer came in time"
    # Each answered frame let the physics go on: the sim time is past the answers.
    assert hardware.now() >= policy.answered[-1]

    policy.answering = False
    frames = len(policy.frames)
    assert _wait(lambda: counters.lockstep_timeouts >= timeouts + MAX_UNANSWERED)
    assert _wait(lambda: len(policy.frames) >= frames + MAX_UNANSWERED + 3)
    assert counters.lockstep_timeouts == timeouts + MAX_UNANSWERED, \
        "after MAX_UNANSWERED frames without an answer the physics stops waiting"


def test_an_episode_reset_restarts_the_controller_from_where_the_arm_was_put(robot_process):
    """A sim episode reset teleports the arm: the controller learns it from the sample's
    epoch, holds where the arm now is (instead of pulling it back to the reference of the
    last episode) and refuses targets computed before the reset."""
    runner, sim, policy = robot_process(sim={"camera_rate_hz": 20.0},
                                        controller={"trigger": "deadline"})
    controller, hardware = runner.nodes["controller"], sim.hardware
    policy.offset = 0.1  # every answer moves the arm 0.1 rad further on each joint
    assert _wait(lambda: hardware.now() > 1.0)
    resets, refused = controller.hardware_resets, controller.controller.targets_refused
    policy.answering = False  # the policy is silent after the reset
    sim.reset_episode(3, "nominal")
    reset_at = hardware.now()
    assert _wait(lambda: controller.hardware_resets == resets + 1)
    stale = controller.controller.set_target(np.zeros(N), reset_at - 0.01, hardware.now())
    assert not stale.accepted and "before the reset" in stale.reason
    assert controller.controller.targets_refused == refused + 1
    sample, peak = JointSample.zeros(N), np.zeros(N)
    while hardware.now() < reset_at + 0.5:  # observer states at 100 Hz of sim time
        hardware.observed_state(sample)
        if sample.stamp > reset_at:
            np.maximum(peak, np.abs(sample.velocity), out=peak)
    assert np.all(peak <= 0.05), f"the arm moved after the reset: joint speeds {peak}"


def test_clocks_driven_by_the_sim_follow_sim_time_without_a_clock_subscription(
        make_sim, ros_context):
    """Nodes of the robot process read the sim's clock without /clock subscriptions (which
    would wake their executor hundreds of times a second); the others still get /clock."""
    sim = make_sim(loop=False)
    neighbour = Node("neighbour", context=ros_context,
                     parameter_overrides=[Parameter("use_sim_time", value=True)])
    try:
        assert [s.topic_name for s in neighbour.subscriptions] == ["/clock"]
        sim.node.drive_clocks([sim.node, neighbour])
        assert "/clock" not in [s.topic_name for s in neighbour.subscriptions]
        assert "/clock" not in [s.topic_name for s in sim.node.subscriptions]
        clocks = sim.record(Clock, "/clock", BEST_EFFORT_QOS)
        sim.start_loop()
        assert sim.spin_until(lambda: len(clocks) >= 3)
        published = time_to_seconds(clocks[-1].clock)
        for node in (sim.node, neighbour):
            now = node.get_clock().now().nanoseconds * 1e-9
            assert published <= now <= sim.hardware.now() + 1e-9
            assert now > 0.0
    finally:
        neighbour.destroy_node()
