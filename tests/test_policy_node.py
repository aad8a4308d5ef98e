"""Policy node through real rclpy: features + joint states in, stamped joint targets out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import spin_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from visuomotor_interfaces.msg import EncoderFeatures, JointTargets
from visuomotor_ros.node_common import (
    LATEST_QOS,
    SENSOR_QOS,
    seconds_to_time,
    time_to_seconds,
)
from visuomotor_ros.policy_node import JOINT_NAMES, PolicyNode

ARTIFACTS = Path(__file__).resolve().parents[1] / "models" / "artifacts"
HOME = [0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785]
TIMEOUT = 5.0


@pytest.fixture
def graph(ros_context):
    import rclpy

    overrides = [Parameter("manifest_path", value=str(ARTIFACTS / "manifest.json"))]
    node = PolicyNode(context=ros_context, parameter_overrides=overrides)
    peer = rclpy.create_node("policy_test_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    received: list[JointTargets] = []
    peer.create_subscription(JointTargets, "policy/joint_targets", received.append, LATEST_QOS)
    features_pub = peer.create_publisher(EncoderFeatures, "encoder/features", LATEST_QOS)
    states_pub = peer.create_publisher(JointState, "joint_states", LATEST_QOS)
    try:
        yield node, peer, executor, received, features_pub, states_pub
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()


def _features(stamp: Time, target=(0.5, 0.1, 0.2), confidence: float = 1.0
              ) -> EncoderFeatures:
    msg = EncoderFeatures()
    msg.header.stamp = stamp
    msg.header.frame_id = "camera_optical_frame"
    msg.target_position.x, msg.target_position.y, msg.target_position.z = map(float, target)
    msg.target_frame_id = "panda_link0"
    msg.confidence = confidence
    return msg


def _state(peer) -> JointState:
    msg = JointState()
    msg.header.stamp = peer.get_clock().now().to_msg()
    msg.name = list(reversed(JOINT_NAMES))  # order must not matter
    msg.position = list(reversed(HOME))
    msg.velocity = [0.0] * 7
    return msg


def _act(graph_, times: int) -> None:
    """Publish ``times`` feature messages, each answered by targets before the next."""
    _, peer, executor, received, features_pub, _ = graph_
    for count in range(len(received) + 1, len(received) + times + 1):
        features_pub.publish(_features(peer.get_clock().now().to_msg()))
        assert _wait_for_targets(executor, received, count)


def _wait_for_targets(executor, received, count: int) -> bool:
    return spin_until(executor, lambda: len(received) >= count, TIMEOUT)


def _send_state(graph_) -> None:
    node, peer, executor, _, _, states_pub = graph_
    states_pub.publish(_state(peer))
    assert spin_until(executor, lambda: node._have_state, TIMEOUT)


def test_targets_carry_the_camera_stamp_and_stay_near_the_measured_state(graph):
    node, peer, executor, received, features_pub, _ = graph
    _send_state(graph)
    stamp = peer.get_clock().now().to_msg()
    features_pub.publish(_features(stamp))
    assert spin_until(executor, lambda: received, TIMEOUT)
    msg = received[-1]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)
    assert list(msg.name) == list(JOINT_NAMES)
    delta = np.asarray(msg.position) - np.asarray(HOME)
    assert np.all(np.abs(delta) <= node._params["action_scale"] + 1e-9)
    assert len(msg.dynamics_latent) > 0 and msg.inference_time > 0.0


def _stamped_state(peer, offset: float, age: float = 0.0) -> JointState:
    """A usable state: HOME with ``offset`` rad added to the first joint, stamped ``age`` s
    ago."""
    msg = JointState(name=list(JOINT_NAMES), position=[HOME[0] + offset, *HOME[1:]],
                     velocity=[0.0] * 7)
    msg.header.stamp = seconds_to_time(time_to_seconds(peer.get_clock().now().to_msg()) - age)
    return msg


def _publish_and_wait_until_delivered(graph_, states: list[JointState]) -> None:
    """Publish ``states`` in order and spin until a listener in this process has the last
    one (then the policy node's reader has it too)."""
    _, peer, executor, _, _, states_pub = graph_
    heard: list[JointState] = []
    listener = peer.create_subscription(JointState, "joint_states", heard.append,
                                        SENSOR_QOS)
    try:
        for state in states:
            states_pub.publish(state)
        last = states[-1].header.stamp
        assert spin_until(executor, lambda: any(
            (m.header.stamp.sec, m.header.stamp.nanosec) == (last.sec, last.nanosec)
            for m in heard), TIMEOUT)
    finally:
        peer.destroy_subscription(listener)


def test_the_policy_acts_on_the_newest_joint_state_published_before_the_features(graph):
    node, peer, executor, received, features_pub, _ = graph
    action_scale = node._params["action_scale"]
    for count, newest in enumerate((0.6, -0.6, 0.3), start=1):
        # Older states 1 rad away on the first joint: targets near them cannot be taken for
        # targets near the newest (they stay within action_scale of the state acted on).
        older = [_stamped_state(peer, newest - 1.0, age=0.05 - 0.001 * i) for i in range(20)]
        _publish_and_wait_until_delivered(graph, [*older, _stamped_state(peer, newest)])
        stamp = peer.get_clock().now().to_msg()
        features_pub.publish(_features(stamp))
        assert _wait_for_targets(executor, received, count)
        assert node._q[0] == pytest.approx(HOME[0] + newest) and node._q[1:].tolist() == HOME[1:]
        targets = received[-1]
        assert (targets.header.stamp.sec, targets.header.stamp.nanosec) == \
            (stamp.sec, stamp.nanosec)
        assert abs(targets.position[0] - (HOME[0] + newest)) <= action_scale + 1e-9
    assert node.counters["refused_joint_state"] == 0


def test_features_after_a_refused_newest_joint_state_are_refused(graph):
    node, peer, executor, received, features_pub, _ = graph
    refused = node.counters["refused_joint_state"]
    _publish_and_wait_until_delivered(graph, [_stamped_state(peer, 0.0),
                                              _stamped_state(peer, 0.0, age=10.0)])
    features_pub.publish(_features(peer.get_clock().now().to_msg()))
    assert spin_until(executor, lambda: node.counters["refused_no_joint_state"] == 1, TIMEOUT)
    assert node.counters["refused_joint_state"] == refused + 1 and received == []
    _publish_and_wait_until_delivered(graph, [_stamped_state(peer, 0.0)])
    _act(graph, 1)


def test_joint_states_are_read_by_a_subscription_no_executor_wakes_for(graph):
    node, peer, executor, _, _, _ = graph
    subscription = node._joint_states.subscription
    assert subscription.msg_type is JointState
    assert subscription.topic_name == node.resolve_topic_name("joint_states")
    assert subscription not in list(node.subscriptions)  # what an executor waits on
    assert all(subscription not in list(n.subscriptions) for n in executor.get_nodes())
    assert spin_until(executor, lambda: ("policy_node_joint_states", "/") in
                      peer.get_node_names_and_namespaces(), TIMEOUT)


def test_cleanup_removes_the_joint_state_reader_and_configure_makes_a_new_one(graph):
    node, peer, executor, _, _, _ = graph
    assert spin_until(executor, lambda: peer.count_subscribers("joint_states") == 1, TIMEOUT)
    node.trigger_deactivate()
    node.trigger_cleanup()
    assert node._joint_states is None and node._subs == []
    assert spin_until(executor, lambda: peer.count_subscribers("joint_states") == 0, TIMEOUT)
    node.trigger_configure()
    node.trigger_activate()
    assert spin_until(executor, lambda: peer.count_subscribers("joint_states") == 1, TIMEOUT)
    _send_state(graph)
    _act(graph, 1)


def test_diagnostics_report_the_sag_estimate(graph):
    from diagnostic_msgs.msg import DiagnosticArray

    _, peer, executor, _, _, _ = graph
    statuses = []
    peer.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: statuses.extend(m.status), 10)
    _send_state(graph)
    _act(graph, 3)

    def sag_keys():
        return [{kv.key: kv.value for kv in s.values} for s in statuses
                if "sag_link_mass_ratio" in {kv.key for kv in s.values}]

    assert spin_until(executor, lambda: sag_keys(), TIMEOUT)
    values = sag_keys()[0]
    assert np.isfinite(float(values["sag_payload_kg"]))
    assert 0.0 <= float(values["sag_offset_max_rad"]) <= 0.15


def test_reset_service_clears_history_sag_estimate_and_goal(graph):
    from std_srvs.srv import Trigger

    node, peer, executor, _, _, _ = graph
    _send_state(graph)
    _act(graph, 2)
    assert not node._runtime.history.empty and node._goal_filter.goal is not None
    client = peer.create_client(Trigger, "policy/reset")
    assert client.wait_for_service(timeout_sec=TIMEOUT)
    future = client.call_async(Trigger.Request())
    assert spin_until(executor, future.done, TIMEOUT)
    assert future.result().success
    assert node._runtime.history.empty and node._goal_filter.goal is None
    assert not node._runtime.sag.theta.any()


def test_non_finite_and_stale_features_are_refused_and_counted(graph):
    node, peer, executor, received, features_pub, _ = graph
    _send_state(graph)
    now = peer.get_clock().now().to_msg()
    features_pub.publish(_features(now, target=(float("nan"), 0.0, 0.2)))
    assert spin_until(executor, lambda: node.counters["refused_non_finite"] == 1, TIMEOUT)
    old = seconds_to_time(max(time_to_seconds(now) - 10.0, 0.0))
    features_pub.publish(_features(old))
    assert spin_until(executor, lambda: node.counters["refused_stale"] == 1, TIMEOUT)
    assert received == [] and node.counters["published"] == 0


def test_action_scale_changes_live_and_invalid_values_are_refused(graph):
    node = graph[0]
    ok = node.set_parameters([Parameter("action_scale", value=0.1)])[0]
    assert ok.successful and node._runtime.config.action_scale == 0.1
    bad = node.set_parameters([Parameter("action_scale", value=-1.0)])[0]
    assert not bad.successful and node._runtime.config.action_scale == 0.1
    read_only = node.set_parameters([Parameter("model_name", value="policy_no_history")])[0]
    assert not read_only.successful


def test_adaptation_switches_change_live(graph):
    node = graph[0]
    assert node._runtime.sag_enabled and node._runtime.integrator_enabled
    ok = node.set_parameters([Parameter("sag_feedforward", value=False),
                              Parameter("goal_integral", value=False)])
    assert all(r.successful for r in ok)
    assert not node._runtime.sag_enabled and not node._runtime.integrator_enabled
    bad = node.set_parameters([Parameter("sag_feedforward", value="off")])[0]
    assert not bad.successful and not node._runtime.sag_enabled


def test_the_goal_ignores_estimates_below_goal_min_confidence(graph):
    node, peer, executor, received, features_pub, _ = graph
    assert node._goal_filter.min_confidence == 0.5 and node._goal_filter.smoothing == 0.3
    _send_state(graph)
    first = (0.5, 0.1, 0.2)
    for count, (target, confidence) in enumerate(
            [(first, 0.9), ((0.3, -0.2, 0.3), 0.4), ((0.52, 0.1, 0.2), 0.1)], start=1):
        features_pub.publish(_features(peer.get_clock().now().to_msg(), target, confidence))
        assert _wait_for_targets(executor, received, count)  # the policy acts on each
        np.testing.assert_allclose(node._goal_filter.goal, first)
    features_pub.publish(_features(peer.get_clock().now().to_msg(), (0.3, -0.2, 0.3), 0.6))
    assert _wait_for_targets(executor, received, 4)
    np.testing.assert_allclose(node._goal_filter.goal, (0.3, -0.2, 0.3))  # a new target


def test_goal_min_confidence_changes_live_and_invalid_values_are_refused(graph):
    node = graph[0]
    ok = node.set_parameters([Parameter("goal_min_confidence", value=0.8)])[0]
    assert ok.successful and node._goal_filter.min_confidence == 0.8
    for bad in (1.5, -0.1, "high"):
        result = node.set_parameters([Parameter("goal_min_confidence", value=bad)])[0]
        assert not result.successful and node._goal_filter.min_confidence == 0.8


def test_deactivated_node_publishes_nothing(graph):
    node, peer, executor, received, features_pub, _ = graph
    _send_state(graph)
    node.trigger_deactivate()
    features_pub.publish(_features(peer.get_clock().now().to_msg()))
    spin_until(executor, lambda: False, 0.3)
    assert received == []


# ---------------------------------------------------------------- fail-closed configure
def _lifecycle_state(node) -> str:
    return node._state_machine.current_state[1]


def _node_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "[policy_node]" in line]


def test_autostart_with_a_missing_manifest_stays_up_unconfigured_and_reports_an_error(
        ros_context, tmp_path, capfd):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    overrides = [Parameter("manifest_path", value=str(tmp_path / "missing.json"))]
    node = PolicyNode(context=ros_context, parameter_overrides=overrides)
    peer = rclpy.create_node("policy_diag_peer", context=ros_context)
    statuses = []
    peer.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda m: statuses.extend(m.status), 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    try:
        assert _lifecycle_state(node) == "unconfigured" and node._runtime is None
        assert "manifest not found" in node.configure_error
        err = capfd.readouterr().err
        lines = _node_lines(err)
        assert len(lines) == 1 and "[ERROR]" in lines[0] and "manifest not found" in lines[0]
        assert "Traceback" not in err
        assert spin_until(executor, lambda: any(
            s.level == DiagnosticStatus.ERROR and "manifest not found" in s.message
            for s in statuses), TIMEOUT)
    finally:
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()


def _configure_error(ros_context, **params) -> str:
    overrides = [Parameter("manifest_path", value=str(ARTIFACTS / "manifest.json")),
                 *(Parameter(k, value=v) for k, v in params.items())]
    node = PolicyNode(context=ros_context, parameter_overrides=overrides)
    try:
        assert _lifecycle_state(node) == "unconfigured" and node._runtime is None
        return node.configure_error
    finally:
        node.destroy_node()


def test_configure_refuses_a_manifest_that_disagrees_with_the_graph_in_one_line(
        ros_context, tmp_path, capfd):
    from test_model_contract import tampered_copy

    def history_5(entry):
        entry["policy"]["history_length"] = 5

    manifest = tampered_copy(tmp_path, ARTIFACTS / "manifest.json", "policy", history_5)
    message = _configure_error(ros_context, manifest_path=str(manifest))
    assert message.endswith("policy.onnx: policy history_length: manifest 5, model 10")
    err = capfd.readouterr().err
    assert len(_node_lines(err)) == 1 and "Traceback" not in err


@pytest.mark.parametrize(("params", "expected"), [
    ({"policy_rate_hz": 30.0}, "camera rate policy_rate_hz (Hz): manifest 20.0, parameter "
                               "policy_rate_hz 30.0"),
    ({"control_rate_hz": 500.0}, "controller rate control_rate_hz (Hz): manifest 1000.0, "
                                 "parameter control_rate_hz 500.0"),
])
def test_configure_refuses_a_model_trained_for_another_rate(ros_context, params, expected):
    assert _configure_error(ros_context, **params).endswith(expected)


def test_configure_refuses_a_model_trained_for_another_robot(ros_context, tmp_path):
    text = (ARTIFACTS.parents[1] / "ros2_ws" / "src" / "visuomotor_description" / "urdf" /
            "panda.urdf").read_text()
    urdf = tmp_path / "fr3.urdf"
    urdf.write_text(text.replace('<robot name="panda"', '<robot name="fr3"', 1))
    message = _configure_error(ros_context, urdf_path=str(urdf))
    assert message.endswith("policy.onnx: robot: manifest 'panda', URDF fr3.urdf 'fr3'")


def test_default_controller_rate_comes_from_the_shipped_controller_yaml(graph):
    import yaml

    from visuomotor_ros import graph as graph_module

    node = graph[0]
    rate, source = node._control_rate()
    params = yaml.safe_load(graph_module.params_path("controller.yaml").read_text())
    assert rate == params["controller_node"]["ros__parameters"]["rate_hz"]
    assert source == "controller.yaml rate_hz"


# ---------------------------------------------------------------- every input survives
def test_empty_joint_state_arrays_are_refused_and_the_node_keeps_running(graph):
    node, peer, executor, _, _, states_pub = graph
    empty = JointState(name=list(JOINT_NAMES))
    empty.header.stamp = peer.get_clock().now().to_msg()
    states_pub.publish(empty)
    assert spin_until(executor, lambda: node.counters["refused_joint_state"] == 1, TIMEOUT)
    assert not node._have_state and node._guard.total == 0
    _send_state(graph)
    _act(graph, 1)


_ARM = list(JOINT_NAMES)
_EXTRA = ["panda_finger_joint1", "panda_finger_joint2", "unknown_joint", ""]
_values = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.sampled_from(
    [0.0, 0.5, -2.0, float("nan"), float("inf"), 1e308])
_STAMPS = {"now": 0.0, "recent": -0.05, "zero": None, "old": -10.0, "ahead": 10.0,
           "max": "max"}
_JOINT_FLAWS = [None, None, None, "drop_joint", "duplicate", "position_length",
                "velocity_length", "position_value", "velocity_value", "stamp"]


@st.composite
def joint_states(draw):
    """A usable JointState (any order, extra joints with any values, any effort array) or
    one with one flaw: a missing or repeated name, a wrong array length, a non-finite or
    impossible arm value, or a zero, old, future or maximal stamp."""
    names = draw(st.permutations(_ARM + draw(st.lists(st.sampled_from(_EXTRA), max_size=3,
                                                      unique=True))))
    position = [draw(st.floats(-0.4, 0.4)) if n in _ARM else draw(_values) for n in names]
    velocity = [draw(st.floats(-2.0, 2.0)) if n in _ARM else draw(_values) for n in names]
    effort = draw(st.lists(_values, max_size=len(names) + 2))
    stamp = draw(st.sampled_from(["now", "recent"]))
    flaw = draw(st.sampled_from(_JOINT_FLAWS))
    arm_slot = names.index(draw(st.sampled_from(_ARM)))
    if flaw == "drop_joint":
        del names[arm_slot], position[arm_slot], velocity[arm_slot]
    elif flaw == "duplicate":
        names, position, velocity = ([*a, a[arm_slot]] for a in (names, position, velocity))
    elif flaw in ("position_length", "velocity_length"):
        values = position if flaw == "position_length" else velocity
        cut = draw(st.sampled_from([0, len(values) - 1, len(values) + 1]))
        values[:] = [*values, 0.0][:cut]
    elif flaw in ("position_value", "velocity_value"):
        values = position if flaw == "position_value" else velocity
        values[arm_slot] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"),
                                                 1e308, 100.0]))
    elif flaw == "stamp":
        stamp = draw(st.sampled_from(["zero", "old", "ahead", "max"]))
    return names, [position, velocity, effort], stamp


def _stamp(node, kind: str) -> Time:
    offset = _STAMPS[kind]
    if offset is None:
        return Time()
    if offset == "max":
        return Time(sec=2**31 - 1, nanosec=999_999_999)
    return seconds_to_time(max(node.get_clock().now().nanoseconds * 1e-9 + offset, 0.0))


def _usable(node, names, position, velocity, stamp_kind) -> bool:
    if len(set(names)) != len(names) or not set(_ARM) <= set(names):
        return False
    if len(position) != len(names) or len(velocity) != len(names):
        return False
    if stamp_kind not in ("now", "recent"):
        return False
    index = [names.index(j) for j in _ARM]
    q, qd = np.asarray(position)[index], np.asarray(velocity)[index]
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(qd))):
        return False
    lower, upper, vmax = node._state_bounds
    return bool(np.all(q >= lower) and np.all(q <= upper) and np.all(np.abs(qd) <= vmax))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=joint_states())
def test_any_joint_state_is_used_only_when_valid_and_never_raises(graph, message):
    node = graph[0]
    names, (position, velocity, effort), stamp_kind = message
    msg = JointState(name=names, position=position, velocity=velocity, effort=effort)
    msg.header.stamp = _stamp(node, stamp_kind)
    refused = node.counters["refused_joint_state"]
    node._joint_states.subscription.callback(msg)  # its callback, guard included
    usable = _usable(node, names, position, velocity, stamp_kind)
    assert node._have_state == usable
    assert node.counters["refused_joint_state"] == refused + (not usable)
    assert node._guard.total == 0
    if usable:
        assert list(node._q) == [position[names.index(j)] for j in _ARM]


_FEATURE_FLAWS = [None, None, None, "target", "stamp", "frame"]


@st.composite
def features(draw):
    """(target, stamp kind, frame, embedding, valid): a usable features message or one with
    a non-finite or far target, a zero/old/future/maximal stamp or another frame."""
    target = [draw(st.floats(-1.0, 1.0)) for _ in range(3)]
    stamp, frame = draw(st.sampled_from(["now", "recent"])), "panda_link0"
    flaw = draw(st.sampled_from(_FEATURE_FLAWS))
    if flaw == "target":
        target[draw(st.integers(0, 2))] = draw(st.sampled_from(
            [float("nan"), float("inf"), -float("inf"), 1e308, 6.0, -100.0]))
    elif flaw == "stamp":
        stamp = draw(st.sampled_from(["zero", "old", "ahead", "max"]))
    elif flaw == "frame":
        frame = draw(st.sampled_from(["", "camera_optical_frame", "world"]))
    embedding = draw(st.lists(st.floats(width=32), max_size=20))
    return tuple(target), stamp, frame, embedding, flaw is None


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=features())
def test_any_features_message_is_acted_on_only_when_valid_and_never_raises(graph, message):
    node, peer = graph[:2]
    target, stamp_kind, frame, embedding, valid = message
    if not node._have_state:
        node._joint_states.subscription.callback(_state(peer))
    msg = _features(_stamp(node, stamp_kind), target)
    msg.target_frame_id = frame
    msg.embedding = embedding
    before = dict(node.counters)
    node._subs[0].callback(msg)  # the callback the subscription runs, guard included
    changed = {k for k in node.counters if node.counters[k] != before[k]}
    assert node._guard.total == 0
    assert changed == ({"published"} if valid else changed) and len(changed) == 1
    if not valid:
        assert changed <= {"refused_non_finite", "refused_out_of_range", "refused_stale",
                           "refused_future", "refused_frame"}


def test_an_unexpected_exception_in_a_callback_is_counted_and_the_node_keeps_running(
        graph, monkeypatch):
    node, peer, executor, received, features_pub, _ = graph
    _send_state(graph)

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION :\n  what():  boom")

    monkeypatch.setattr(node._runtime, "_infer", broken)
    features_pub.publish(_features(peer.get_clock().now().to_msg()))
    assert spin_until(executor, lambda: node._guard.total == 1, TIMEOUT)
    assert node._guard.errors == {"_on_features": 1} and received == []
    monkeypatch.undo()
    _act(graph, 1)
