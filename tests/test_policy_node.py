"""Policy node through real rclpy: features + joint states in, stamped joint targets out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from conftest import spin_until
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from visuomotor_interfaces.msg import EncoderFeatures, JointTargets
from visuomotor_ros.node_common import LATEST_QOS, seconds_to_time, time_to_seconds
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


def _features(stamp: Time, target=(0.5, 0.1, 0.2)) -> EncoderFeatures:
    msg = EncoderFeatures()
    msg.header.stamp = stamp
    msg.header.frame_id = "camera_optical_frame"
    msg.target_position.x, msg.target_position.y, msg.target_position.z = map(float, target)
    msg.target_frame_id = "panda_link0"
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


def test_deactivated_node_publishes_nothing(graph):
    node, peer, executor, received, features_pub, _ = graph
    _send_state(graph)
    node.trigger_deactivate()
    features_pub.publish(_features(peer.get_clock().now().to_msg()))
    spin_until(executor, lambda: False, 0.3)
    assert received == []


def test_autostart_with_a_missing_manifest_fails_with_a_clear_error(ros_context, tmp_path):
    overrides = [Parameter("manifest_path", value=str(tmp_path / "missing.json"))]
    with pytest.raises(RuntimeError, match="manifest not found"):
        PolicyNode(context=ros_context, parameter_overrides=overrides)
