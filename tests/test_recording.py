"""MCAP recording of loop topics: what is published comes back from the file,
decoded by an independent reader (mcap-ros2-support) against the embedded schemas."""

from __future__ import annotations

import numpy as np
import rclpy
from conftest import spin_until
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from visuomotor_interfaces.msg import JointTargets
from visuomotor_ros.image_conversion import numpy_to_image
from visuomotor_ros.recording import McapRecorder, loop_topics, message_definition


def test_message_definition_contains_every_dependency():
    text = message_definition("visuomotor_interfaces/msg/JointTargets")
    assert text.startswith("# Joint-space targets")
    for dep in ("MSG: std_msgs/Header", "MSG: builtin_interfaces/Time"):
        assert dep in text
    assert text.count("MSG: builtin_interfaces/Time") == 1


def test_loop_topics_cover_the_graph():
    topics = loop_topics()
    for name in ("camera/image_raw", "joint_states", "encoder/features", "policy/joint_targets",
                 "effort_controller/commands", "controller/state", "/diagnostics", "/clock"):
        assert name in topics


def test_recorded_messages_decode_back(ros_context, tmp_path):
    node = rclpy.create_node("recording_test", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    path = tmp_path / "loop.mcap"
    topics = {k: v for k, v in loop_topics().items() if k in ("camera/image_raw",
                                                                "policy/joint_targets")}
    recorder = McapRecorder(node, path, topics)
    image_pub = node.create_publisher(Image, "camera/image_raw", 10)
    target_pub = node.create_publisher(JointTargets, "policy/joint_targets", 10)
    frame = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    image = numpy_to_image(frame, "rgb8")
    image.header.frame_id = "camera_optical_frame"
    targets = JointTargets(name=["a", "b"], position=[0.5, -1.0])
    targets.header.stamp.sec = 7

    def both_recorded() -> bool:
        if recorder.counts["camera/image_raw"] == 0:
            image_pub.publish(image)
        if recorder.counts["policy/joint_targets"] == 0:
            target_pub.publish(targets)
        return min(recorder.counts.values()) > 0

    try:
        assert spin_until(executor, both_recorded, timeout=10.0, period=0.05)
    finally:
        recorder.close()
        executor.shutdown()
        node.destroy_node()
    with path.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        decoded = {channel.topic: msg for _, channel, _, msg in reader.iter_decoded_messages()}
    assert set(decoded) == {"/camera/image_raw", "/policy/joint_targets"}
    got = decoded["/camera/image_raw"]
    assert (got.height, got.width, got.encoding) == (16, 24, "rgb8")
    assert bytes(got.data) == frame.tobytes()
    assert list(decoded["/policy/joint_targets"].position) == [0.5, -1.0]
    assert decoded["/policy/joint_targets"].header.stamp.sec == 7
