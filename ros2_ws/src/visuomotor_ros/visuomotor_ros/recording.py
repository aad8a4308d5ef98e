"""Record the loop's topics to MCAP, readable by rosbag2 and Foxglove.

Messages are taken off the wire already serialized (``raw=True`` subscriptions)
and written as CDR with ``ros2msg`` schemas, the same encoding rosbag2's MCAP
storage plugin uses, so nothing is deserialized on the recording path.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from mcap.writer import CompressionType, Writer
from rclpy.node import Node
from rclpy.qos import QoSProfile

from visuomotor_ros import graph
from visuomotor_ros.node_common import LATCHED_QOS, SENSOR_QOS

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


def loop_topics() -> dict[str, tuple[type, QoSProfile | int]]:
    """Every topic of the visuomotor loop with its type and a compatible QoS."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PointStamped
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from visualization_msgs.msg import Marker

    from visuomotor_interfaces.msg import ControllerState, EncoderFeatures, JointTargets, TaskStatus

    return {
        graph.CAMERA_IMAGE: (Image, SENSOR_QOS),
        graph.CAMERA_INFO: (CameraInfo, SENSOR_QOS),
        graph.JOINT_STATES: (JointState, SENSOR_QOS),
        graph.ROBOT_DESCRIPTION: (String, LATCHED_QOS),
        graph.ENCODER_FEATURES: (EncoderFeatures, 10),
        graph.ENCODER_TARGET: (PointStamped, 10),
        graph.POLICY_TARGETS: (JointTargets, 10),
        graph.POLICY_GOAL: (PointStamped, 10),
        graph.DEFAULT_COMMAND_TOPIC: (Float64MultiArray, SENSOR_QOS),
        graph.CONTROLLER_STATE: (ControllerState, 10),
        graph.TASK_STATUS: (TaskStatus, 10),
        graph.TARGET_MARKER: (Marker, 10),
        graph.CONTROLLER_STATUS_TEXT: (Marker, 10),
        graph.DIAGNOSTICS: (DiagnosticArray, 10),
        graph.CLOCK: (Clock, SENSOR_QOS),
    }


class McapRecorder:
    """Subscribes to ``topics`` on ``node`` and writes every message to an MCAP file.

    Call :meth:`close` to finish the file (summary and indexes are written then).
    Topics that never publish simply have no messages.
    """

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: Mapping[str, tuple[type, QoSProfile | int]] | None = None,
    ):
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = self._path.open("wb")
        self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="visuomotor")
        self._lock = threading.Lock()
        self._closed = False
        self.counts: dict[str, int] = {}
        self._subscriptions = []
        for topic, (msg_type, qos) in (topics or loop_topics()).items():
            type_name = _type_name(msg_type)
            schema_id = self._writer.register_schema(
                name=type_name,
                encoding="ros2msg",
                data=message_definition(type_name).encode(),
            )
            self.counts[topic] = 0
            channel = {}
            subscription = node.create_subscription(
                msg_type,
                topic,
                lambda data, t=topic, c=channel: self._write(t, c["id"], data),
                qos,
                raw=True,
            )
            # Channels carry the fully resolved name (namespace included), as rosbag2 does.
            channel["id"] = self._writer.register_channel(
                topic=subscription.topic_name, message_encoding="cdr", schema_id=schema_id
            )
            self._subscriptions.append(subscription)

    def _write(self, topic: str, channel_id: int, data: bytes) -> None:
        now = time.time_ns()
        with self._lock:
            if self._closed:
                return
            self._writer.add_message(
                channel_id=channel_id,
                log_time=now,
                publish_time=now,
                data=data,
                sequence=self.counts[topic],
            )
            self.counts[topic] += 1

    def close(self) -> None:
        """Finish and close the file (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.finish()
            self._stream.close()
