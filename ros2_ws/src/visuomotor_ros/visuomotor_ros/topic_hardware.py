"""The controller's hardware seam over ROS topics, for a robot whose driver runs the fast loop.

``joint_states`` (sensor_msgs/JointState) in, a ros2_control forward-command
topic (std_msgs/Float64MultiArray, one value per arm joint in the
controller's order) out, as with ros2_control's ``forward_command_controller``
on the robot side. With a control loop of its own (``trigger: deadline``) the
loop thread reads ``joint_states`` itself: :meth:`TopicHardware.read` takes the
newest waiting message from a subscription no executor spins
(:class:`visuomotor_ros.node_common.LatestMessageReader`), so the 1 kHz stream
wakes no executor, whose per-message wait-set rebuild would hold the GIL the
loop needs. With ``trigger: joint_states`` the subscription is the executor's
and its callback ticks the controller. Either way the message is mapped onto
the arm's joint order and dropped into a single-slot mailbox that the tick
takes without waiting. Malformed samples
(missing joints, arrays shorter than the name list) are dropped and counted;
whether a sample is usable (finite, plausible, fresh) is the controller's
judgement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from visuomotor_core.hardware import JointSample, LatestSample
from visuomotor_ros import graph
from visuomotor_ros.node_common import (
    LATEST_QOS,
    JointOrder,
    LatestMessageReader,
    ThrottledWarnings,
    time_to_seconds,
)

#: Joint states: newest only; best effort, so that publishers of either reliability
#: (a reliable driver, a best-effort bridge) are matched.
JOINT_STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT
)


class TopicHardware:
    """``joint_states`` in, ``<controller>/commands`` out.

    Args:
        node: the node owning the subscription and the publisher.
        joint_names: the arm joints, in the controller's order.
        command_topic: forward-command topic (relative: moved by the namespace).
        on_sample: called in the executor thread after each accepted sample (the
            ``joint_states`` trigger ticks the controller here). None: the subscription
            is read by :meth:`read` (the caller's thread) instead of an executor.
        callback_group: of the executor's joint-state subscription.
    """

    lockstep = False

    def __init__(
        self,
        node: Node,
        joint_names: Sequence[str],
        command_topic: str,
        on_sample: Callable[[], None] | None = None,
        callback_group=None,
    ) -> None:
        self.joint_names = tuple(joint_names)
        n = len(self.joint_names)
        self._node = node
        self._order = JointOrder(self.joint_names)
        self._mailbox = LatestSample(n)
        self._on_sample = on_sample
        self._warnings = ThrottledWarnings(node.get_logger())
        self._command_msg = Float64MultiArray()
        self.samples = 0
        self.dropped = 0
        self._publisher = node.create_publisher(Float64MultiArray, command_topic, LATEST_QOS)
        self._reader: LatestMessageReader | None = None
        if on_sample is None:
            self._reader = LatestMessageReader(node, JointState, graph.JOINT_STATES,
                                               JOINT_STATE_QOS, self._on_joint_state,
                                               "joint_states")
        else:
            self._subscription = node.create_subscription(
                JointState, graph.JOINT_STATES, self._on_joint_state, JOINT_STATE_QOS,
                callback_group=callback_group,
            )

    def now(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def read(self, sample: JointSample) -> None:
        """The newest sample (taken from the middleware first when no executor delivers
        them). Callers serialise reads (the controller's tick lock)."""
        if self._reader is not None:
            self._reader.take_latest()
        self._mailbox.take(sample)

    def write(self, command: np.ndarray, interface: str) -> None:
        self._command_msg.data = command.tolist()
        self._publisher.publish(self._command_msg)

    def cycle(self) -> None:
        """Nothing: the robot's driver runs its own loop."""

    def close(self) -> None:
        if self._reader is not None:
            self._reader.destroy()
        else:
            self._node.destroy_subscription(self._subscription)
        self._node.destroy_publisher(self._publisher)

    def _on_joint_state(self, msg: JointState) -> None:
        index = self._order.index(msg.name)
        n = len(msg.name)
        if index is None:
            self._drop("names", f"joint state lacks joints {self._order.missing(msg.name)}")
            return
        if len(msg.position) != n or len(msg.velocity) != n:
            self._drop("sizes", f"joint state has {len(msg.position)} positions and "
                       f"{len(msg.velocity)} velocities for {n} names")
            return
        effort = np.asarray(msg.effort)[index] if len(msg.effort) == n else None
        self._mailbox.put(np.asarray(msg.position)[index], np.asarray(msg.velocity)[index],
                          effort, time_to_seconds(msg.header.stamp))
        self.samples += 1
        if self._on_sample is not None:
            self._on_sample()

    def _drop(self, key: str, text: str) -> None:
        self.dropped += 1
        self._warnings.warn(key, f"{text}: ignored")
