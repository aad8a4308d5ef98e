"""Recording loop topics as a rosbag2 bag: a real publish session goes in, and what comes
back through independent readers (rosbags reading the bag directory and its metadata.yaml,
the mcap library reading the MCAP summary) matches what was published, with the QoS the
publishers offered."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
import yaml
from conftest import spin_until
from mcap.reader import make_reader
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from sensor_msgs.msg import Image
from std_msgs.msg import String

from visuomotor_interfaces.msg import JointTargets
from visuomotor_ros import demo
from visuomotor_ros.image_conversion import numpy_to_image
from visuomotor_ros.node_common import LATCHED_QOS, SENSOR_QOS
from visuomotor_ros.recording import (
    BagRecorder,
    check_bag_path,
    loop_topics,
    message_definition,
    subscription_qos,
)

IMAGE, TARGETS, DESCRIPTION = "/camera/image_raw", "/policy/joint_targets", "/robot_description"


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
    assert topics["camera/image_raw"] is Image


def test_subscription_qos_is_compatible_with_every_offer():
    reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    assert subscription_qos([reliable]).reliability == ReliabilityPolicy.RELIABLE
    assert subscription_qos([reliable, best_effort]).reliability == ReliabilityPolicy.BEST_EFFORT
    assert subscription_qos([LATCHED_QOS]).durability == DurabilityPolicy.TRANSIENT_LOCAL
    assert subscription_qos([LATCHED_QOS, reliable]).durability == DurabilityPolicy.VOLATILE


def test_an_existing_bag_is_never_overwritten(tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    assert check_bag_path(bag) == bag  # an empty directory is taken
    (bag / "metadata.yaml").write_text("keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        check_bag_path(bag)
    file = tmp_path / "file.mcap"
    file.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        check_bag_path(file)
    with pytest.raises(SystemExit) as exit_info:  # refused before the graph starts
        demo.main(["--episodes", "1", "--record", str(bag)])
    assert exit_info.value.code == 2
    assert (bag / "metadata.yaml").read_text() == "keep me"


def _publish_and_wait(executor, recorder, publisher, message, topic, times):
    """Publish ``message`` once and spin until the recorder has it; logs the wall-clock
    interval (ns since the epoch) within which it was received."""
    before = recorder.counts.get(topic, 0)
    sent = time.time_ns()
    publisher.publish(message)
    assert spin_until(executor, lambda: recorder.counts.get(topic, 0) > before, timeout=10.0)
    times.setdefault(topic, []).append((sent, time.time_ns()))


def test_recorded_bag_reads_back_as_published(ros_context, tmp_path):
    talker = rclpy.create_node("recording_talker", context=ros_context)
    listener = rclpy.create_node("recording_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    bag = tmp_path / "session"
    frames = [np.full((16, 24, 3), value, dtype=np.uint8) for value in (10, 20, 30)]
    targets = [JointTargets(name=["a", "b"], position=[0.5 * i, -1.0]) for i in range(2)]
    description = String(data="<robot name='panda'/>")
    times: dict[str, list[tuple[int, int]]] = {}

    # Latched: published before the recorder exists, so only a transient-local
    # subscription can still record it.
    description_pub = talker.create_publisher(String, "robot_description", LATCHED_QOS)
    description_time = time.time_ns()
    description_pub.publish(description)
    image_pub = talker.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    recorder = BagRecorder(listener, bag, {k: v for k, v in loop_topics().items()
                                           if k in ("camera/image_raw", "policy/joint_targets",
                                                    "robot_description", "joint_states")})
    try:
        assert spin_until(executor, lambda: recorder.counts.get(DESCRIPTION) == 1, timeout=10.0)
        times[DESCRIPTION] = [(description_time, time.time_ns())]
        for frame in frames:
            _publish_and_wait(executor, recorder, image_pub, numpy_to_image(frame, "rgb8"),
                              IMAGE, times)
        # A publisher that appears after the recorder started is picked up too.
        target_pub = talker.create_publisher(JointTargets, "policy/joint_targets", 10)
        assert spin_until(executor, lambda: TARGETS in recorder.topics, timeout=10.0)
        for message in targets:
            _publish_and_wait(executor, recorder, target_pub, message, TARGETS, times)
        type_hashes = {
            topic: str(talker.get_publishers_info_by_topic(topic)[0].topic_type_hash)
            for topic in (IMAGE, TARGETS, DESCRIPTION)
        }
    finally:
        recorder.close()
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()

    mcap_file = bag / "session_0.mcap"
    assert sorted(p.name for p in bag.iterdir()) == ["metadata.yaml", mcap_file.name]
    published = {IMAGE: len(frames), TARGETS: len(targets), DESCRIPTION: 1}
    first = min(sent for spans in times.values() for sent, _ in spans)
    last = max(seen for spans in times.values() for _, seen in spans)

    # rosbags opens the directory as a rosbag2 bag: metadata.yaml, then the MCAP file.
    with AnyReader([bag]) as reader:
        connections = {c.topic: c for c in reader.connections}
        assert set(connections) == set(published)  # joint_states had no publisher
        assert {t: c.msgtype for t, c in connections.items()} == {
            IMAGE: "sensor_msgs/msg/Image", TARGETS: "visuomotor_interfaces/msg/JointTargets",
            DESCRIPTION: "std_msgs/msg/String",
        }
        assert {t: c.msgcount for t, c in connections.items()} == published
        assert reader.message_count == sum(published.values())
        stamps: dict[str, list[int]] = {}
        decoded: dict[str, list] = {}
        for connection, stamp, raw in reader.messages():
            stamps.setdefault(connection.topic, []).append(stamp)
            decoded.setdefault(connection.topic, []).append(
                reader.deserialize(raw, connection.msgtype))
        all_stamps = sorted(s for values in stamps.values() for s in values)
        assert reader.start_time == all_stamps[0]
        assert reader.end_time == all_stamps[-1] + 1  # rosbags' end time is exclusive
        qos = {t: c.ext.offered_qos_profiles for t, c in connections.items()}
    assert first <= all_stamps[0] <= all_stamps[-1] <= last
    for topic, spans in times.items():  # each message received between publish and record
        for (sent, seen), stamp in zip(spans, stamps[topic], strict=True):
            assert sent <= stamp <= seen, topic
    assert [bytes(m.data) for m in decoded[IMAGE]] == [f.tobytes() for f in frames]
    assert [list(m.position) for m in decoded[TARGETS]] == [list(t.position) for t in targets]
    assert decoded[DESCRIPTION][0].data == description.data
    # The offered QoS parses back to what each publisher offered.
    assert [(q[0].reliability, q[0].durability) for q in (qos[IMAGE], qos[TARGETS],
                                                          qos[DESCRIPTION])] == [
        (QosReliability.BEST_EFFORT, QosDurability.VOLATILE),
        (QosReliability.RELIABLE, QosDurability.VOLATILE),
        (QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL),
    ]
    assert all(len(profiles) == 1 for profiles in qos.values())

    # metadata.yaml against the MCAP file's own summary and records.
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    with mcap_file.open("rb") as stream:
        mcap = make_reader(stream)
        header = mcap.get_header()
        summary = mcap.get_summary()
        records = {m.name: m.metadata for m in mcap.iter_metadata()}
    stats = summary.statistics
    assert header.profile == "ros2"
    assert info["version"] == 9
    assert info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == [mcap_file.name]
    assert info["message_count"] == stats.message_count == sum(published.values())
    assert info["starting_time"]["nanoseconds_since_epoch"] == stats.message_start_time
    assert info["duration"]["nanoseconds"] == stats.message_end_time - stats.message_start_time
    assert info["files"] == [{
        "path": mcap_file.name, "starting_time": info["starting_time"],
        "duration": info["duration"], "message_count": info["message_count"],
    }]  # fmt: skip
    assert (info["compression_format"], info["compression_mode"]) == ("", "")
    assert info["custom_data"] is None and info["ros_distro"]
    topics = {t["topic_metadata"]["name"]: t for t in info["topics_with_message_count"]}
    assert {t: v["message_count"] for t, v in topics.items()} == published
    for channel_id, channel in summary.channels.items():
        metadata = topics[channel.topic]["topic_metadata"]
        schema = summary.schemas[channel.schema_id]
        assert (schema.name, schema.encoding) == (metadata["type"], "ros2msg")
        assert schema.data.decode() == message_definition(metadata["type"])
        assert channel.message_encoding == metadata["serialization_format"] == "cdr"
        assert stats.channel_message_counts[channel_id] == topics[channel.topic]["message_count"]
        # The channel carries the same offered profiles, as a YAML string.
        assert yaml.safe_load(channel.metadata["offered_qos_profiles"]) == (
            metadata["offered_qos_profiles"])
        assert channel.metadata["topic_type_hash"] == metadata["type_description_hash"]
        assert metadata["type_description_hash"] == type_hashes[channel.topic]
    assert topics[IMAGE]["topic_metadata"]["offered_qos_profiles"][0]["reliability"] == (
        "best_effort")
    assert topics[DESCRIPTION]["topic_metadata"]["offered_qos_profiles"][0]["durability"] == (
        "transient_local")
    # The storage plugin's own copy of the metadata, read by `ros2 bag info file.mcap`.
    assert yaml.safe_load(records["rosbag2"]["serialized_metadata"]) == info
