"""The sim node: the PyBullet robot's ROS side, in the robot process beside the controller.

The physics is stepped by the controller's loop through the hardware seam
(:class:`visuomotor_sim.hardware.SimHardware`, created here and handed to the
controller node of the same process, see :mod:`visuomotor_ros.sim_robot`).
This node publishes what a real arm + camera driver would —
``camera/image_raw`` and ``camera/camera_info`` (sensor-data QoS),
``joint_states`` at an observer rate, ``robot_description`` (transient local) —
plus ``/clock``, the task status, an RViz marker of the true target and
``/diagnostics``; services reset an episode (seed + randomization profile) and
place the target, each validating its request and answering with a reason.

Threads: the control loop only announces due outputs; an output thread
(:class:`visuomotor_ros.node_common.OutputThread`) builds and publishes the
messages, and a frame thread publishes each camera frame as the render worker
delivers it. No DDS work runs in the loop, and the executor wakes only for the
services and parameter changes: the policy's targets, which let lockstep go on,
reach the hardware through the controller that takes them
(``SimHardware.set_answer_source``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from visualization_msgs.msg import Marker

from visuomotor_core.hardware import JointSample
from visuomotor_core.params import ParamSpec
from visuomotor_core.robot_description import DEFAULT_ROBOT
from visuomotor_interfaces.msg import TaskStatus as TaskStatusMsg
from visuomotor_interfaces.srv import ResetEpisode, SetTarget
from visuomotor_ros import graph
from visuomotor_ros.image_conversion import numpy_to_image
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATCHED_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    DiagnosticsReporter,
    OutputThread,
    declare_schema,
    on_set_validated,
    seconds_to_time,
)
from visuomotor_sim.hardware import OUTPUTS, SimHardware, SimHardwareConfig
from visuomotor_sim.task import TaskConfig
from visuomotor_sim.world import WorldConfig

MARKER_DIAMETER = 0.04  # m
#: Largest seed a reset accepts (seeds are drawn into numpy's 64-bit generators, and
#: ResetEpisode.seed is uint32 on the wire).
MAX_SEED = 2**32 - 1

SCHEMA = (
    ParamSpec("robot", str, DEFAULT_ROBOT, "the simulated robot (its description "
              "urdf/<robot>.yaml in visuomotor_description)", read_only=True),
    ParamSpec("physics_hz", float, 1000.0, "Physics rate (an integer multiple of the "
              "controller's rate)", "Hz", 100.0, 5000.0, read_only=True),
    ParamSpec("camera_rate_hz", float, 20.0, "Camera frame rate (sim time)", "Hz", 1.0, 120.0,
              read_only=True),
    ParamSpec("joint_state_rate_hz", float, 100.0, "Rate of joint_states for observers "
              "(the controller reads the world directly)", "Hz", 1.0, 1000.0, read_only=True),
    ParamSpec("clock_rate_hz", float, 200.0, "Rate of /clock", "Hz", 10.0, 1000.0,
              read_only=True),
    ParamSpec("status_rate_hz", float, 20.0,
              "Task status rate (also the rate the task's dwell is checked at)", "Hz", 1.0,
              200.0, read_only=True),
    ParamSpec("lockstep_latency", float, 0.005, "Perception latency modelled in lockstep: "
              "the physics waits for the policy's answer to a frame this long after it",
              "s", 0.0, 0.05, read_only=True),
    ParamSpec("lockstep_timeout", float, 1.0, "Longest wait for the policy's answer to one "
              "frame in lockstep (wall)", "s", 0.001, 5.0, read_only=True),
    ParamSpec("command_timeout", float, 0.1, "Hold position without commands for this long "
              "(sim time), as the robot's own safety layer", "s", 0.005, 10.0, read_only=True),
    ParamSpec("profile", str, "nominal", "Domain-randomization profile of episodes reset "
              "without one (a profile of the sim's randomization YAML)", ""),
    ParamSpec("seed", int, 0, "Seed of the first episode", "", 0, 2**31 - 1),
    ParamSpec("episode_timeout", float, 5.0, "Task timeout", "s", 0.5, 600.0),
    ParamSpec("tolerance", float, 0.02, "Task success radius", "m", 0.001, 0.5),
    ParamSpec("dwell", float, 0.3, "Time inside the radius for success", "s", 0.0, 10.0),
    ParamSpec("start_episode", bool, True, "Start an episode at start-up", ""),
    ParamSpec("gui", bool, False, "Show the world in PyBullet's GUI window (needs a display)",
              "", read_only=True),
    ParamSpec("diagnostics_period", float, 1.0, "Interval between /diagnostics reports", "s",
              0.05, 60.0),
)
_TASK_PARAMS = ("tolerance", "dwell", "episode_timeout")


def task_config(params: Mapping[str, Any]) -> TaskConfig:
    """The reach task's configuration from the node's parameters (ValueError if invalid)."""
    return TaskConfig(params["tolerance"], params["dwell"], params["episode_timeout"])


class SimNode(Node):
    """The simulated robot's topics and services; its physics is stepped by the controller."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_node", **kwargs)
        try:
            self._start()
        except BaseException:
            # A node that failed to start leaves nothing behind: its rcl node, and the
            # render worker once started, go with it now, not whenever it is collected.
            self.destroy_node()
            raise

    def _start(self) -> None:
        if not self.get_parameter("use_sim_time").value:
            raise ValueError(
                "sim_node needs use_sim_time:=true: the simulated robot stamps everything with "
                "sim time (a real robot runs robot_bringup on the wall clock)"
            )
        self.params = declare_schema(self, SCHEMA)
        p = self.params
        self.hardware = SimHardware(
            SimHardwareConfig(
                physics_hz=p["physics_hz"], camera_rate_hz=p["camera_rate_hz"],
                joint_state_rate_hz=p["joint_state_rate_hz"], clock_rate_hz=p["clock_rate_hz"],
                status_rate_hz=p["status_rate_hz"], lockstep_latency=p["lockstep_latency"],
                lockstep_timeout=p["lockstep_timeout"], command_timeout=p["command_timeout"],
            ),
            WorldConfig(physics_hz=p["physics_hz"], gui=p["gui"], robot=p["robot"]),
            task_config(p),
            on_output=self._announce,
        )
        if p["profile"] not in self.hardware.profiles:
            raise ValueError(f"sim_node: unknown profile '{p['profile']}' "
                             f"(known: {sorted(self.hardware.profiles)})")
        on_set_validated(self, SCHEMA, self._apply_params)
        self._observed = JointSample.zeros(len(self.hardware.joint_names))
        self._base_frame = self.hardware.world.config.description.base_frame

        self._pub_clock = self.create_publisher(Clock, graph.CLOCK, SENSOR_QOS)
        self._pub_joints = self.create_publisher(JointState, graph.JOINT_STATES, LATEST_QOS)
        self._pub_image = self.create_publisher(Image, graph.CAMERA_IMAGE, SENSOR_QOS)
        self._pub_info = self.create_publisher(CameraInfo, graph.CAMERA_INFO, SENSOR_QOS)
        self._pub_status = self.create_publisher(TaskStatusMsg, graph.TASK_STATUS, DEFAULT_QOS)
        self._pub_marker = self.create_publisher(Marker, graph.TARGET_MARKER, LATCHED_QOS)
        self._pub_description = self.create_publisher(String, graph.ROBOT_DESCRIPTION,
                                                      LATCHED_QOS)
        self._diagnostics = DiagnosticsReporter(
            self, "simulation", hardware_id="pybullet", period=p["diagnostics_period"]
        )
        urdf = self.hardware.world.config.description.urdf
        self._pub_description.publish(String(data=urdf.read_text()))
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(ResetEpisode, graph.SIM_RESET, self._on_reset,
                            callback_group=services)
        self.create_service(SetTarget, graph.SIM_SET_TARGET, self._on_set_target,
                            callback_group=services)
        self._joint_msg = JointState(name=list(self.hardware.joint_names))
        self._clock_msg = Clock()
        self._driven_clocks: list[Any] = []
        self._info_template = self._camera_info_msg()
        self._rate_window = (time.perf_counter(), 0.0, 0)
        self._done_reported = 0
        self.frames_published = 0
        self._outputs = OutputThread(self, "sim-outputs", self._publish_due)
        if p["start_episode"]:
            self.reset_episode(p["seed"], p["profile"])
        self._running = True
        self._frame_thread = threading.Thread(target=self._frame_loop, name="sim-frames",
                                              daemon=True)
        self._frame_thread.start()

    # ---------------------------------------------------------------- parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        if "profile" in changes and changes["profile"] not in self.hardware.profiles:
            return False, (f"unknown profile '{changes['profile']}' "
                           f"(known: {sorted(self.hardware.profiles)})")
        if any(name in changes for name in _TASK_PARAMS):
            try:
                self.hardware.task.config = task_config({**self.params, **changes})
            except ValueError as error:
                return False, str(error)
        self.params.update(changes)
        return True, ""

    # ---------------------------------------------------------------- episodes
    @property
    def sim_time(self) -> float:
        """Simulated time since the node started, s (monotonic across episodes)."""
        return self.hardware.now()

    @property
    def counters(self):
        return self.hardware.counters

    def reset_episode(self, seed: int, profile: str) -> np.ndarray:
        """Start an episode (ValueError for an unknown profile); returns the target, m."""
        episode = self.hardware.reset_episode(seed, profile)
        self._publish_marker(episode.target)
        self.get_logger().info(
            f"episode {episode.number}: seed {seed}, profile '{profile}', "
            f"target {np.round(episode.target, 3).tolist()} m"
        )
        return episode.target

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        profile = request.profile or self.params["profile"]
        seed = int(request.seed)
        if not 0 <= seed <= MAX_SEED:
            response.success, response.message = False, f"seed {seed} outside [0, {MAX_SEED}]"
            return response
        try:
            target = self.reset_episode(seed, profile)
        except (ValueError, OSError) as error:
            response.success, response.message = False, f"reset refused: {error}"
            return response
        response.success = True
        response.episode = self.hardware.episode.number
        response.message = f"episode {response.episode} started"
        response.target_position = Point(x=target[0], y=target[1], z=target[2])
        return response

    def _on_set_target(self, request: SetTarget.Request, response: SetTarget.Response):
        position = np.array([request.position.x, request.position.y, request.position.z])
        try:
            self.hardware.set_target(position)
        except ValueError as error:
            response.success, response.message = False, f"target refused: {error}"
            return response
        self._publish_marker(position)
        response.success, response.message = True, "target placed"
        return response

    # ---------------------------------------------------------------- outputs
    def _announce(self, kind: str) -> None:
        """Called in the control loop: note the output and wake the output thread (the
        loop can step the physics before the node has finished constructing)."""
        outputs = getattr(self, "_outputs", None)
        if outputs is not None:
            outputs.announce(kind)

    def _publish_due(self, due: frozenset[str]) -> None:
        for kind in OUTPUTS:
            if kind in due:
                getattr(self, f"_publish_{kind}")()

    def drive_clocks(self, nodes: Sequence[Node]) -> None:
        """Set the ROS clocks of ``nodes`` — nodes of this process following sim time,
        this node included — directly each time ``/clock`` is published, in place of their
        own ``/clock`` subscriptions (destroyed here).

        The clock a node reads is the same as through the subscription; what goes is an
        executor wake-up per node and ``/clock`` message (hundreds a second), each of
        which holds the GIL the control loop of this process needs. Other processes
        still follow ``/clock``.
        """
        for node in nodes:
            for subscription in list(node.subscriptions):
                if subscription.topic_name == graph.CLOCK:
                    node.destroy_subscription(subscription)
            clock = node.get_clock()
            clock.set_ros_time_override(Time.from_msg(seconds_to_time(self.hardware.now())))
            self._driven_clocks.append(clock)

    def _publish_clock(self) -> None:
        self._clock_msg.clock = seconds_to_time(self.hardware.now())
        self._pub_clock.publish(self._clock_msg)
        if self._driven_clocks:
            stamp = Time.from_msg(self._clock_msg.clock)
            for clock in self._driven_clocks:
                clock.set_ros_time_override(stamp)

    def _publish_joint_state(self) -> None:
        self.hardware.observed_state(self._observed)
        msg, s = self._joint_msg, self._observed
        msg.header.stamp = seconds_to_time(s.stamp)
        msg.position, msg.velocity, msg.effort = (
            s.position.tolist(), s.velocity.tolist(), s.effort.tolist())
        self._pub_joints.publish(msg)

    def _publish_status(self) -> None:
        snapshot = self.hardware.status()
        episode = self.hardware.episode
        if snapshot is None or episode is None or snapshot.episode != episode.number:
            return
        status, now, target, grasp = (snapshot.status, snapshot.time, snapshot.target,
                                      snapshot.grasp)
        msg = TaskStatusMsg(
            episode=episode.number, seed=episode.seed, profile=episode.profile,
            target_position=Point(x=target[0], y=target[1], z=target[2]),
            grasp_position=Point(x=grasp[0], y=grasp[1], z=grasp[2]),
            error=status.error, elapsed=status.time, success=status.success,
            time_to_success=-1.0 if status.time_to_success is None else status.time_to_success,
            done=status.done, effort=status.effort,
        )
        msg.header.stamp = seconds_to_time(now)
        msg.header.frame_id = self._base_frame
        self._pub_status.publish(msg)
        if status.done and self._done_reported != episode.number:
            self._done_reported = episode.number
            self.get_logger().info(
                f"episode {episode.number} done: success={status.success}, "
                f"error={status.error * 100:.1f} cm, t={status.time:.2f} s"
            )
        self._report_diagnostics()

    def _frame_loop(self) -> None:
        while self._running:
            frame = self.hardware.receive_frame(0.1)
            if frame is None or not self._running:
                continue
            stamp = seconds_to_time(frame.stamp)
            image = numpy_to_image(frame.image, encoding="rgb8")
            image.header.frame_id = self._info_template.header.frame_id
            image.header.stamp = stamp
            self._info_template.header.stamp = stamp
            try:
                self._pub_image.publish(image)
                self._pub_info.publish(self._info_template)
            except Exception:  # noqa: BLE001 - the context is shutting down
                return
            self.frames_published += 1

    def _report_diagnostics(self) -> None:
        """/diagnostics when due, after a status. The counters are paired with the sim
        time read together with them (within a tick), not with the status's time: this
        thread runs some ticks after it, by a varying delay, which biased commands per sim
        second by a few per cent."""
        wall0, sim0, steps0 = self._rate_window
        wall = time.perf_counter() - wall0
        c = self.hardware.counters
        renderer = self.hardware.renderer
        commands, current = c.commands, self.hardware.now()
        values = {
            "lockstep": self.hardware.lockstep,
            "sim_time_s": current,
            "real_time_factor": (current - sim0) / wall if wall > 0.0 else 0.0,
            "steps_per_s": (c.steps - steps0) / wall if wall > 0.0 else 0.0,
            "episode": self.hardware.episode.number if self.hardware.episode else 0,
            "commands": commands,
            "commands_rejected": c.rejected,
            "commands_clamped": c.clamped,
            "holds_without_command": c.holds,
            "frames_published": self.frames_published,
            "frames_dropped": renderer.dropped if renderer is not None else 0,
            "lockstep_waits": c.lockstep_waits,
            "lockstep_timeouts": c.lockstep_timeouts,
        }
        if self._diagnostics.report("ok", "stepping", values):
            self._rate_window = (time.perf_counter(), current, c.steps)

    def _camera_info_msg(self) -> CameraInfo:
        info = self.hardware.world.camera_info()
        msg = CameraInfo(
            width=int(info["width"]), height=int(info["height"]),
            distortion_model=info["distortion_model"],
            d=[float(v) for v in info["d"]], k=[float(v) for v in info["k"]],
            r=[float(v) for v in info["r"]], p=[float(v) for v in info["p"]],
        )
        msg.header.frame_id = info["frame_id"]
        return msg

    def _publish_marker(self, target: np.ndarray) -> None:
        marker = Marker(ns="target", id=0, type=Marker.SPHERE, action=Marker.ADD)
        marker.header.frame_id = self._base_frame
        marker.header.stamp = seconds_to_time(self.hardware.now())
        marker.pose.position = Point(x=target[0], y=target[1], z=target[2])
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = MARKER_DIAMETER
        marker.color.r, marker.color.a = 1.0, 0.8
        self._pub_marker.publish(marker)

    # ---------------------------------------------------------------- teardown
    def destroy_node(self) -> None:
        """Stop the frame thread and the render worker, disconnect PyBullet (idempotent)."""
        self._running = False
        outputs = getattr(self, "_outputs", None)
        if outputs is not None:
            outputs.stop()
        thread = getattr(self, "_frame_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout=2.0)
        hardware = getattr(self, "hardware", None)
        if hardware is not None:
            hardware.close()
        super().destroy_node()
