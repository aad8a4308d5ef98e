"""Record the loop's topics as a rosbag2 bag, readable by ``ros2 bag info``/``play`` and Foxglove.

A recording is a bag directory laid out as rosbag2's MCAP storage plugin (Jazzy)
writes one::

    <bag>/metadata.yaml      rosbag2_bagfile_information, version 9
    <bag>/<bag>_0.mcap       profile ros2; one ros2msg schema per type; one cdr
                             channel per topic whose metadata holds the
                             publishers' offered_qos_profiles and topic_type_hash;
                             a "rosbag2" metadata record with the same metadata

Each topic is subscribed once its publishers are discovered, with a QoS
compatible with all of them (best effort unless every publisher is reliable,
transient local only when every publisher is), and the profiles they offer are
stored so that ``ros2 bag play`` offers the same again. Messages are taken off
the wire already serialized (``raw=True``), so nothing is deserialized on the
recording path; the log time is the reception time, the publish time the
source time, both from the middleware (ns since the epoch), as rosbag2 records
them when not on sim time.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.writer import CompressionType, Writer
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from visuomotor_ros import graph

#: rosbag2_bagfile_information version written by Jazzy's rosbag2.
METADATA_VERSION = 9
METADATA_FILE = "metadata.yaml"
#: rosbag2's default depth for the subscriptions it adapts to the offers.
_SUBSCRIPTION_DEPTH = 10
#: How often topics without a publisher yet are looked up again (s), as rosbag2 polls.
_DISCOVERY_PERIOD = 0.1
#: rosbag2's starting time before the first message (std::chrono::nanoseconds::max()).
_NO_TIME = 2**63 - 1

_SEPARATOR = "=" * 80
_PRIMITIVES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "string", "wstring",
}  # fmt: skip


def _msg_file(full_type: str) -> Path:
    from ament_index_python.packages import get_package_share_directory

    package, _, name = full_type.partition("/")
    return Path(get_package_share_directory(package)) / "msg" / f"{name}.msg"


def _field_types(text: str, package: str) -> list[str]:
    """Full names of the non-primitive field types declared in a .msg text."""
    types = []
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if not line or "=" in line.split()[0] or len(line.split()) < 2:
            continue
        if re.match(r"^\S+\s+\S+\s*=", line):  # constant
            continue
        base = re.sub(r"(\[.*\]|<=\d+)$", "", line.split()[0])
        base = re.sub(r"<=\d+", "", base)
        if base in _PRIMITIVES:
            continue
        types.append(base if "/" in base else f"{package}/{base}")
    return types


def message_definition(full_type: str) -> str:
    """The rosbag2-style concatenated definition of ``pkg/Type`` and its dependencies."""
    full_type = full_type.replace("/msg/", "/")
    seen: list[str] = []
    texts: dict[str, str] = {}
    pending = [full_type]
    while pending:
        current = pending.pop(0)
        if current in texts:
            continue
        text = _msg_file(current).read_text()
        texts[current] = text
        seen.append(current)
        pending.extend(_field_types(text, current.partition("/")[0]))
    parts = [texts[full_type].rstrip()]
    for dep in seen[1:]:
        parts.append(f"{_SEPARATOR}\nMSG: {dep}\n{texts[dep].rstrip()}")
    return "\n".join(parts) + "\n"


def _type_name(msg_type: type) -> str:
    module = msg_type.__module__.split(".")[0]
    return f"{module}/msg/{msg_type.__name__}"


def loop_topics() -> dict[str, type]:
    """Every topic of the visuomotor loop with its message type."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from rosgraph_msgs.msg import Clock as ClockMsg
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from visualization_msgs.msg import Marker

    from visuomotor_interfaces.msg import ControllerState, EncoderFeatures, JointTargets, TaskStatus

    return {
        graph.CAMERA_IMAGE: Image,
        graph.CAMERA_INFO: CameraInfo,
        graph.JOINT_STATES: JointState,
        graph.ROBOT_DESCRIPTION: String,
        graph.ENCODER_FEATURES: EncoderFeatures,
        graph.ENCODER_TARGET: PointStamped,
        graph.POLICY_TARGETS: JointTargets,
        graph.POLICY_GOAL: PointStamped,
        graph.DEFAULT_COMMAND_TOPIC: Float64MultiArray,
        graph.CONTROLLER_STATE: ControllerState,
        graph.TASK_STATUS: TaskStatus,
        graph.TARGET_MARKER: Marker,
        graph.CONTROLLER_STATUS_TEXT: Marker,
        graph.DIAGNOSTICS: DiagnosticArray,
        graph.CLOCK: ClockMsg,
    }


# --- QoS, as rosbag2_storage serializes it (qos.cpp, metadata version 9) ---


def _rmw_time(duration: Duration) -> dict[str, int]:
    seconds, nanoseconds = divmod(duration.nanoseconds, 1_000_000_000)
    return {"sec": seconds, "nsec": nanoseconds}


def qos_to_dict(profile: QoSProfile) -> dict:
    """One offered profile in rosbag2's version-9 form (policy names, durations as sec/nsec)."""
    return {
        "history": profile.history.name.lower(),
        "depth": profile.depth,
        "reliability": profile.reliability.name.lower(),
        "durability": profile.durability.name.lower(),
        "deadline": _rmw_time(profile.deadline),
        "lifespan": _rmw_time(profile.lifespan),
        "liveliness": profile.liveliness.name.lower(),
        "liveliness_lease_duration": _rmw_time(profile.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": profile.avoid_ros_namespace_conventions,
    }


def subscription_qos(offered: Iterable[QoSProfile]) -> QoSProfile:
    """A request compatible with every offer (rosbag2's ``adapt_request_to_offers``).

    Reliable only when every publisher is reliable, transient local only when every
    publisher is; history is rosbag2's default (keep last 10), it does not affect matching.
    """
    offered = list(offered)
    reliable = bool(offered) and all(
        p.reliability == ReliabilityPolicy.RELIABLE for p in offered
    )
    latched = bool(offered) and all(
        p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered
    )
    return QoSProfile(
        depth=_SUBSCRIPTION_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


# --- YAML in the block style yaml-cpp emits ---


class _YamlCppDumper(yaml.SafeDumper):
    """Sequences indented under their key, ``~`` for null, ``""`` for an empty string,
    repeated values written out again (no anchors)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: object) -> bool:
        return True


_YamlCppDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style='"' if value == "" else None
    ),
)
_YamlCppDumper.add_representer(
    type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", "~")
)


def dump_yaml(data: object) -> str:
    """``data`` as yaml-cpp's ``YAML::Dump`` writes it (block style, no final newline)."""
    text = yaml.dump(
        data, Dumper=_YamlCppDumper, default_flow_style=False, sort_keys=False,
        allow_unicode=True, width=2**31 - 1,
    )  # fmt: skip
    return text.rstrip("\n")


def serialize_qos_profiles(profiles: Iterable[QoSProfile]) -> str:
    """The ``offered_qos_profiles`` string of an MCAP channel (``serialize_rclcpp_qos_vector``)."""
    return dump_yaml([qos_to_dict(p) for p in profiles])


# --- the bag ---


@dataclass
class _Topic:
    """One recorded topic: rosbag2's TopicMetadata plus its MCAP channel and count."""

    name: str
    type: str
    offered_qos_profiles: list[dict]
    type_description_hash: str
    channel_id: int
    message_count: int = 0

    def information(self) -> dict:
        return {
            "topic_metadata": {
                "name": self.name,
                "type": self.type,
                "serialization_format": "cdr",
                "offered_qos_profiles": self.offered_qos_profiles,
                "type_description_hash": self.type_description_hash,
            },
            "message_count": self.message_count,
        }


@dataclass
class _Span:
    """Earliest and latest log time written (ns since the epoch)."""

    start: int = _NO_TIME
    end: int = _NO_TIME

    def add(self, stamp: int) -> None:
        if self.start == _NO_TIME:
            self.start = self.end = stamp
        self.start = min(self.start, stamp)
        self.end = max(self.end, stamp)

    @property
    def duration(self) -> int:
        return 0 if self.start == _NO_TIME else self.end - self.start


@dataclass
class _Bag:
    file_name: str
    ros_distro: str
    topics: dict[str, _Topic] = field(default_factory=dict)
    span: _Span = field(default_factory=_Span)

    def metadata(self) -> dict:
        """rosbag2's BagMetadata node (yaml.hpp, ``convert<BagMetadata>::encode``)."""
        count = sum(t.message_count for t in self.topics.values())
        starting_time = {"nanoseconds_since_epoch": self.span.start}
        duration = {"nanoseconds": self.span.duration}
        return {
            "version": METADATA_VERSION,
            "storage_identifier": "mcap",
            "duration": duration,
            "starting_time": starting_time,
            "message_count": count,
            "topics_with_message_count": [t.information() for t in self.topics.values()],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.file_name],
            "files": [{
                "path": self.file_name,
                "starting_time": starting_time,
                "duration": duration,
                "message_count": count,
            }],
            "custom_data": None,
            "ros_distro": self.ros_distro,
        }  # fmt: skip


def check_bag_path(path: str | Path) -> Path:
    """``path`` as a bag directory to create; refuses an existing file or non-empty directory."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(
            f"recording: {path} already exists and is not an empty directory; "
            "a bag is never overwritten, name a new one"
        )
    return path


class BagRecorder:
    """Records ``topics`` (name → message class) seen by ``node`` into the bag directory ``path``.

    Topics are subscribed as their publishers appear (looked up every 0.1 s on a steady
    clock, so it works on sim time too); a topic whose publishers never appear is not
    in the bag, one whose publishers never publish has a count of 0. Call :meth:`close`
    to finish the bag: the MCAP summary and ``metadata.yaml`` are written then.
    """

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: Mapping[str, type] | None = None,
    ):
        self.path = check_bag_path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._node = node
        # Jazzy's rosbag2 stores $ROS_DISTRO; the pip-installed Jazzy wheels leave it unset.
        self._bag = _Bag(f"{self.path.name}_0.mcap", os.environ.get("ROS_DISTRO") or "jazzy")
        self._stream = (self.path / self._bag.file_name).open("wb")
        # Chunks compressed with zstd, as with rosbag2's MCAP "zstd_fast" storage preset.
        self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="visuomotor")
        self._schemas: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pending = dict(loop_topics() if topics is None else topics)
        self._subscriptions = []
        self._discover()
        self._timer = node.create_timer(
            _DISCOVERY_PERIOD, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )

    @property
    def counts(self) -> dict[str, int]:
        """Messages written so far per topic (fully resolved names)."""
        return {name: topic.message_count for name, topic in self._bag.topics.items()}

    @property
    def topics(self) -> list[str]:
        """The topics subscribed so far (fully resolved names)."""
        return list(self._bag.topics)

    def _discover(self) -> None:
        with self._lock:
            if self._closed:
                return
            for topic, msg_type in list(self._pending.items()):
                publishers = self._node.get_publishers_info_by_topic(topic)
                if not publishers:
                    continue
                del self._pending[topic]
                type_name = _type_name(msg_type)
                offered = [info.topic_type for info in publishers]
                if any(name != type_name for name in offered):
                    self._node.get_logger().warning(
                        f"recording: {topic} is published as {sorted(set(offered))}, "
                        f"expected {type_name}; not recorded"
                    )
                    continue
                self._subscribe(topic, msg_type, type_name, publishers)

    def _subscribe(self, topic: str, msg_type: type, type_name: str, publishers: list) -> None:
        profiles = [info.qos_profile for info in publishers]
        name = self._node.resolve_topic_name(topic)
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
            )
        channel_id = self._writer.register_channel(
            topic=name,
            message_encoding="cdr",
            schema_id=self._schemas[type_name],
            metadata={
                "offered_qos_profiles": serialize_qos_profiles(profiles),
                "topic_type_hash": str(publishers[0].topic_type_hash),
            },
        )
        record = _Topic(
            name, type_name, [qos_to_dict(p) for p in profiles],
            str(publishers[0].topic_type_hash), channel_id,
        )  # fmt: skip
        self._bag.topics[name] = record
        subscription = self._node.create_subscription(
            msg_type, topic, lambda data, info: self._write(record, data, info),
            subscription_qos(profiles), raw=True,
        )  # fmt: skip
        self._subscriptions.append(subscription)

    def _write(self, topic: _Topic, data: bytes, info: dict) -> None:
        received = info.get("received_timestamp") or time.time_ns()
        sent = info.get("source_timestamp") or received
        with self._lock:
            if self._closed:
                return
            self._writer.add_message(
                channel_id=topic.channel_id, log_time=received, publish_time=sent,
                data=data, sequence=0,
            )  # fmt: skip
            topic.message_count += 1
            self._bag.span.add(received)

    def metadata(self) -> dict:
        """The bag's metadata so far, as ``metadata.yaml`` holds it under
        ``rosbag2_bagfile_information``."""
        with self._lock:
            return self._bag.metadata()

    def close(self) -> None:
        """Stop recording, finish the MCAP file and write ``metadata.yaml`` (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            metadata = self._bag.metadata()
            self._writer.add_metadata("rosbag2", {"serialized_metadata": dump_yaml(metadata)})
            self._writer.finish()
            self._stream.close()
            (self.path / METADATA_FILE).write_text(
                dump_yaml({"rosbag2_bagfile_information": metadata})
            )
        self._node.destroy_timer(self._timer)
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
