"""Every custom message of visuomotor_interfaces crosses real rclpy (Fast DDS).

Each type is published and received within one process and across two
processes, and arrives with every field intact.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import rclpy
from builtin_interfaces.msg import Time
from conftest import spin_until
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Header

from visuomotor_interfaces.msg import (
    ControllerState,
    EncoderFeatures,
    JointTargets,
    TaskStatus,
)

JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


def _header(frame: str) -> Header:
    return Header(stamp=Time(sec=12, nanosec=345_000_000), frame_id=frame)


def sample_messages() -> dict[str, object]:
    """One fully populated message of each type, keyed by type name."""
    return {
        "EncoderFeatures": EncoderFeatures(
            header=_header("camera_optical_frame"),
            embedding=[0.5, -1.25, 3.0],
            target_position=Point(x=0.5, y=-0.1, z=0.2),
            target_frame_id="panda_link0",
            confidence=0.75,
            inference_time=0.0021,
            model_sha256="ab" * 32,
        ),
        "JointTargets": JointTargets(
            header=_header("panda_link0"),
            name=JOINTS,
            position=[0.1 * i for i in range(7)],
            velocity=[],
            dynamics_latent=[0.25, -0.5],
            policy_stamp=Time(sec=12, nanosec=400_000_000),
            inference_time=0.0004,
        ),
        "ControllerState": ControllerState(
            header=_header("panda_link0"),
            mode=ControllerState.MODE_HOLD,
            reason="target timeout",
            name=JOINTS,
            reference_position=[0.0] * 7,
            measured_position=[0.01] * 7,
            command=[1.5] * 7,
            command_interface="effort",
            target_age=0.12,
            end_to_end_latency=0.031,
            period_jitter_p50=1e-5,
            period_jitter_p99=2e-4,
            deadline_misses=3,
            rejected_targets=1,
        ),
        "TaskStatus": TaskStatus(
            header=_header("panda_link0"),
            episode=4,
            seed=7,
            profile="heldout",
            target_position=Point(x=0.5, y=0.0, z=0.2),
            grasp_position=Point(x=0.49, y=0.01, z=0.21),
            error=0.017,
            elapsed=1.2,
            success=True,
            time_to_success=1.1,
            done=True,
            effort=42.0,
        ),
    }


MESSAGE_TYPES = {
    "EncoderFeatures": EncoderFeatures,
    "JointTargets": JointTargets,
    "ControllerState": ControllerState,
    "TaskStatus": TaskStatus,
}


@pytest.mark.parametrize("type_name", sorted(MESSAGE_TYPES))
def test_message_roundtrip_in_one_process(ros_context, type_name):
    msg_type = MESSAGE_TYPES[type_name]
    sent = sample_messages()[type_name]
    node = rclpy.create_node(f"roundtrip_{type_name.lower()}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    received = []
    node.create_subscription(msg_type, "roundtrip", received.append, 10)
    publisher = node.create_publisher(msg_type, "roundtrip", 10)

    def published_and_received() -> bool:
        if not received:
            publisher.publish(sent)
        return bool(received)

    try:
        assert spin_until(executor, published_and_received, timeout=10.0, period=0.05)
        assert received[0] == sent
    finally:
        executor.shutdown()
        node.destroy_node()


ECHO_SCRIPT = textwrap.dedent(
    """
    import sys
    import rclpy
    from visuomotor_interfaces import msg as m

    rclpy.init()
    node = rclpy.create_node("echo")
    pubs = {}
    for name in sys.argv[1:]:
        t = getattr(m, name)
        pubs[name] = node.create_publisher(t, "echo_out/" + name, 10)
        node.create_subscription(t, "echo_in/" + name, pubs[name].publish, 10)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    """
)


def test_every_message_roundtrips_across_two_processes(ros_context):
    names = sorted(MESSAGE_TYPES)
    echo = subprocess.Popen(
        [sys.executable, "-c", ECHO_SCRIPT, *names],
        stdout=subprocess.PIPE,
        text=True,
    )
    node = rclpy.create_node("cross_process_sender", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    samples = sample_messages()
    received: dict[str, object] = {}
    publishers = {}
    for name in names:
        msg_type = MESSAGE_TYPES[name]
        publishers[name] = node.create_publisher(msg_type, f"echo_in/{name}", 10)
        node.create_subscription(
            msg_type, f"echo_out/{name}", lambda m, n=name: received.setdefault(n, m), 10
        )

    def all_echoed() -> bool:
        for name in names:
            if name not in received:
                publishers[name].publish(samples[name])
        return len(received) == len(names)

    try:
        assert echo.stdout.readline().strip() == "ready"
        assert spin_until(executor, all_echoed, timeout=20.0, period=0.1), (
            f"echoed only {sorted(received)}"
        )
        for name in names:
            assert received[name] == samples[name], name
    finally:
        echo.terminate()
        echo.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()


def test_reset_episode_service_roundtrip(ros_context):
    from visuomotor_interfaces.srv import ResetEpisode

    node = rclpy.create_node("service_roundtrip", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    def handle(request, response):
        response.success = request.profile == "heldout"
        response.episode = request.seed + 1
        response.target_position = Point(x=0.4, y=0.1, z=0.2)
        return response

    node.create_service(ResetEpisode, "reset_episode", handle)
    client = node.create_client(ResetEpisode, "reset_episode")
    try:
        assert spin_until(executor, client.service_is_ready, timeout=10.0)
        future = client.call_async(ResetEpisode.Request(seed=41, profile="heldout"))
        assert spin_until(executor, future.done, timeout=10.0)
        result = future.result()
        assert result.success and result.episode == 42
        assert result.target_position.x == pytest.approx(0.4)
    finally:
        executor.shutdown()
        node.destroy_node()
