"""The sim node: the PyBullet world as a ROS 2 robot.

Publishes what a real Panda + camera driver would (``camera/image_raw``,
``camera/camera_info``, ``joint_states``, ``robot_description``), plus ``/clock``,
the task status and an RViz marker of the true target; takes joint commands on
a ros2_control-style ``<controller>/commands`` topic (std_msgs/Float64MultiArray).

Physics runs in its own thread, in one of two step modes:

* ``realtime`` — paced to the wall clock (scaled by ``real_time_factor``);
* ``lockstep`` — as fast as possible on sim time: after publishing the joint
  state of a step, the sim waits (at most ``lockstep_timeout`` s of wall time)
  for the next command before stepping, so a 1 kHz controller on sim time sees
  every state and no command is skipped however slow the machine is.

Bad commands (wrong length, NaN/inf) are refused and the previous command is
kept; efforts beyond the URDF limit are clamped; each case logs a throttled
warning. Without a fresh command for ``command_timeout`` s (sim time) the
joints hold their position, as a robot's own safety layer would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Point
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from visualization_msgs.msg import Marker

from visuomotor_core.params import ParamSpec
from visuomotor_interfaces.msg import TaskStatus as TaskStatusMsg
from visuomotor_interfaces.srv import ResetEpisode, SetTarget
from visuomotor_ros import graph
from visuomotor_ros.image_conversion import numpy_to_image
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATCHED_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    declare_schema,
    on_set_validated,
    seconds_to_time,
)
from visuomotor_sim.randomization import DomainRandomizer, load_profile
from visuomotor_sim.task import ReachTask, TaskConfig
from visuomotor_sim.world import ARM_JOINT_NAMES, PandaWorld, WorldConfig

BASE_FRAME = "panda_link0"
PROFILES = ("nominal", "training", "heldout")
STEP_MODES = ("realtime", "lockstep")

SCHEMA = (
    ParamSpec("physics_hz", float, 1000.0, "Physics rate", "Hz", 100.0, 5000.0, read_only=True),
    ParamSpec("camera_rate_hz", float, 20.0, "Camera frame rate (sim time)", "Hz", 1.0, 120.0),
    ParamSpec("joint_state_decimation", int, 1, "Publish joint_states every N physics steps",
              "steps", 1, 100),
    ParamSpec("clock_decimation", int, 1, "Publish /clock every N physics steps", "steps", 1,
              100),
    ParamSpec("status_rate_hz", float, 20.0, "Task status rate", "Hz", 1.0, 200.0),
    ParamSpec("step_mode", str, "lockstep", "realtime or lockstep", "", read_only=True),
    ParamSpec("real_time_factor", float, 1.0, "Sim speed in realtime mode", "", 0.05, 10.0),
    ParamSpec("lockstep_timeout", float, 0.05, "Longest wait for a command per step", "s",
              0.001, 1.0),
    ParamSpec("command_timeout", float, 0.1, "Hold position without commands for this long",
              "s", 0.005, 10.0),
    ParamSpec("command_topic", str, graph.DEFAULT_COMMAND_TOPIC, "Joint command topic", "",
              read_only=True),
    ParamSpec("command_interface", str, "effort", "effort, position or velocity", "",
              read_only=True),
    ParamSpec("profile", str, "nominal", "Domain-randomization profile", ""),
    ParamSpec("seed", int, 0, "Seed of the first episode", "", 0, 2**31 - 1),
    ParamSpec("episode_timeout", float, 5.0, "Task timeout", "s", 0.5, 600.0),
    ParamSpec("tolerance", float, 0.02, "Task success radius", "m", 0.001, 0.5),
    ParamSpec("dwell", float, 0.3, "Time inside the radius for success", "s", 0.0, 10.0),
    ParamSpec("start_episode", bool, True, "Start an episode at start-up", ""),
)


class SimNode(Node):
    """PyBullet robot + camera + reach task behind ROS 2 topics and services."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_node", **kwargs)
        self.params = declare_schema(self, SCHEMA)
        self._check_choices(self.params)
        on_set_validated(self, SCHEMA, self._apply_params)
        p = self.params
        self.world = PandaWorld(WorldConfig(physics_hz=p["physics_hz"]))
        self.task = ReachTask(
            TaskConfig(p["tolerance"], p["dwell"], p["episode_timeout"]),
            grasp_point=self.world.grasp_point,
            effort=lambda: self.world.effort_integral,
        )
        self._lock = threading.Lock()
        self._command_event = threading.Event()
        self._command = np.zeros(len(ARM_JOINT_NAMES))
        self._command_time = -np.inf
        self._hold_q: np.ndarray | None = None
        self._sim_time = 0.0
        self._episode = 0
        self._seed = p["seed"]
        self._profile = p["profile"]
        self._done_reported = False
        self._rejected = 0
        self._warned: dict[str, float] = {}

        self._pub_clock = self.create_publisher(Clock, graph.CLOCK, SENSOR_QOS)
        self._pub_joints = self.create_publisher(JointState, graph.JOINT_STATES, SENSOR_QOS)
        self._pub_image = self.create_publisher(Image, graph.CAMERA_IMAGE, SENSOR_QOS)
        self._pub_info = self.create_publisher(CameraInfo, graph.CAMERA_INFO, SENSOR_QOS)
        self._pub_status = self.create_publisher(TaskStatusMsg, graph.TASK_STATUS, DEFAULT_QOS)
        self._pub_marker = self.create_publisher(Marker, graph.TARGET_MARKER, LATCHED_QOS)
        self._pub_description = self.create_publisher(
            String, graph.ROBOT_DESCRIPTION, LATCHED_QOS
        )
        self._pub_description.publish(String(data=graph.urdf_path().read_text()))
        self.create_subscription(
            Float64MultiArray, p["command_topic"], self._on_command, LATEST_QOS
        )
        self.create_service(ResetEpisode, graph.SIM_RESET, self._on_reset)
        self.create_service(SetTarget, graph.SIM_SET_TARGET, self._on_set_target)

        self._joint_msg = JointState(name=list(ARM_JOINT_NAMES))
        self._info_template = self._camera_info_msg()
        if p["start_episode"]:
            self.reset_episode(self._seed, self._profile)
        self._running = True
        self._thread = threading.Thread(target=self._physics_loop, name="sim-physics", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- parameters
    @staticmethod
    def _check_choices(values: Mapping[str, Any]) -> tuple[bool, str]:
        checks = {
            "profile": PROFILES,
            "step_mode": STEP_MODES,
            "command_interface": ("effort", "position", "velocity"),
        }
        for name, choices in checks.items():
            if name in values and values[name] not in choices:
                reason = f"'{name}' must be one of {choices}, got '{values[name]}'"
                if name in ("step_mode", "command_interface"):
                    raise ValueError(reason)
                return False, reason
        return True, ""

    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        ok, reason = self._check_choices(changes)
        if ok:
            with self._lock:
                self.params.update(changes)
        return ok, reason

    # ---------------------------------------------------------------- episodes
    def reset_episode(self, seed: int, profile: str) -> np.ndarray:
        """Start an episode: draw the profile's parameters with ``seed``, reset world + task."""
        randomizer = DomainRandomizer(load_profile(profile), np.random.default_rng(seed))
        dynamics, visual = randomizer.sample()
        with self._lock:
            target = self.world.reset(seed, dynamics=dynamics, visual=visual)
            self._episode += 1
            self._seed, self._profile = seed, profile
            self._episode_start = self._sim_time
            self.task.reset(target, now=self._sim_time)
            self._hold_q = self.world.true_joint_positions()
            self._command_time = -np.inf
            self._done_reported = False
        self._publish_marker(target)
        self.get_logger().info(
            f"episode {self._episode}: seed {seed}, profile '{profile}', "
            f"target {np.round(target, 3).tolist()} m"
        )
        return target

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        profile = request.profile or self._profile
        if profile not in PROFILES:
            response.success = False
            response.message = f"unknown profile '{profile}' (use one of {PROFILES})"
            return response
        target = self.reset_episode(int(request.seed), profile)
        response.success = True
        response.episode = self._episode
        response.message = f"episode {self._episode} started"
        response.target_position = Point(x=target[0], y=target[1], z=target[2])
        return response

    def _on_set_target(self, request: SetTarget.Request, response: SetTarget.Response):
        position = np.array([request.position.x, request.position.y, request.position.z])
        if not np.isfinite(position).all():
            response.success, response.message = False, "target position is not finite"
            return response
        with self._lock:
            self.world.set_target(position)
            self.task.reset(position, now=self._sim_time)
            self._done_reported = False
        self._publish_marker(position)
        response.success, response.message = True, "target placed"
        return response

    # ---------------------------------------------------------------- commands
    def _warn(self, key: str, text: str, period: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -np.inf) >= period:
            self._warned[key] = now
            self.get_logger().warning(text)

    def _on_command(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(ARM_JOINT_NAMES)
        if values.shape != (n,):
            self._rejected += 1
            self._warn("length", f"command refused: {values.size} values, expected {n}")
            return
        if not np.isfinite(values).all():
            self._rejected += 1
            self._warn("finite", "command refused: contains NaN or inf")
            return
        if self.params["command_interface"] == "effort":
            limit = self.world.limits.effort
            if np.any(np.abs(values) > limit):
                self._warn("effort", "command beyond the joint effort limits: clamped")
                values = np.clip(values, -limit, limit)
        elif self.params["command_interface"] == "position":
            lower, upper = self.world.limits.lower, self.world.limits.upper
            if np.any((values < lower) | (values > upper)):
                self._warn("position", "position command beyond the joint limits: clamped")
                values = np.clip(values, lower, upper)
        else:
            limit = self.world.limits.velocity
            if np.any(np.abs(values) > limit):
                self._warn("velocity", "velocity command beyond the joint limits: clamped")
                values = np.clip(values, -limit, limit)
        with self._lock:
            self._command[:] = values
            self._command_time = self._sim_time
        self._command_event.set()

    # ---------------------------------------------------------------- physics loop
    def _physics_loop(self) -> None:
        dt = self.world.dt
        wall_start, sim_start = time.perf_counter(), self._sim_time
        next_frame = self._sim_time
        next_status = self._sim_time
        step = 0
        try:
            while self._running and rclpy.ok(context=self.context):
                p = self.params
                lockstep = p["step_mode"] == "lockstep"
                if lockstep:
                    self._command_event.wait(p["lockstep_timeout"])
                    self._command_event.clear()
                with self._lock:
                    self._apply_latest_command(p)
                    self.world.step(1)
                    self._sim_time += dt
                    step += 1
                    now = self._sim_time
                    if step % p["clock_decimation"] == 0:
                        self._pub_clock.publish(Clock(clock=seconds_to_time(now)))
                    if step % p["joint_state_decimation"] == 0:
                        self._publish_joint_state(now)
                    if now >= next_frame - 1e-9:
                        next_frame += 1.0 / p["camera_rate_hz"]
                        self._publish_camera(now)
                    if now >= next_status - 1e-9:
                        next_status += 1.0 / p["status_rate_hz"]
                        self._publish_status(now)
                if not lockstep:
                    ahead = (now - sim_start) / p["real_time_factor"] - (
                        time.perf_counter() - wall_start
                    )
                    if ahead > 0.0:
                        time.sleep(ahead)
        except ExternalShutdownException:
            pass

    def _apply_latest_command(self, p: Mapping[str, Any]) -> None:
        fresh = self._sim_time - self._command_time <= p["command_timeout"]
        if fresh:
            self._hold_q = None
            self.world.apply_command(self._command, p["command_interface"])
            return
        if self._hold_q is None:
            self._hold_q = self.world.true_joint_positions()
            self._warn("hold", "no fresh command: holding position", period=5.0)
        self.world.apply_command(self._hold_q, "position")

    def _publish_joint_state(self, now: float) -> None:
        q, qd, tau = self.world.joint_state()
        msg = self._joint_msg
        msg.header.stamp = seconds_to_time(now)
        msg.position, msg.velocity, msg.effort = q.tolist(), qd.tolist(), tau.tolist()
        self._pub_joints.publish(msg)

    def _publish_camera(self, now: float) -> None:
        frame = self.world.render()
        stamp = seconds_to_time(now)
        image = numpy_to_image(frame, encoding="rgb8")
        image.header.frame_id = self._info_template.header.frame_id
        image.header.stamp = stamp
        self._info_template.header.stamp = stamp
        self._pub_image.publish(image)
        self._pub_info.publish(self._info_template)

    def _publish_status(self, now: float) -> None:
        status = self.task.update(now)
        target, grasp = self.task.target, self.world.grasp_point()
        msg = TaskStatusMsg(
            episode=self._episode,
            seed=self._seed,
            profile=self._profile,
            target_position=Point(x=target[0], y=target[1], z=target[2]),
            grasp_position=Point(x=grasp[0], y=grasp[1], z=grasp[2]),
            error=status.error,
            elapsed=status.time,
            success=status.success,
            time_to_success=-1.0 if status.time_to_success is None else status.time_to_success,
            done=status.done,
            effort=status.effort,
        )
        msg.header.stamp = seconds_to_time(now)
        msg.header.frame_id = BASE_FRAME
        self._pub_status.publish(msg)
        if status.done and not self._done_reported:
            self._done_reported = True
            self.get_logger().info(
                f"episode {self._episode} done: success={status.success}, "
                f"error={status.error * 100:.1f} cm, t={status.time:.2f} s"
            )

    def _camera_info_msg(self) -> CameraInfo:
        info = self.world.camera_info()
        msg = CameraInfo(
            width=int(info["width"]),
            height=int(info["height"]),
            distortion_model=info["distortion_model"],
            d=[float(v) for v in info["d"]],
            k=[float(v) for v in info["k"]],
            r=[float(v) for v in info["r"]],
            p=[float(v) for v in info["p"]],
        )
        msg.header.frame_id = info["frame_id"]
        return msg

    def _publish_marker(self, target: np.ndarray) -> None:
        marker = Marker(ns="target", id=0, type=Marker.SPHERE, action=Marker.ADD)
        marker.header.frame_id = BASE_FRAME
        marker.header.stamp = seconds_to_time(self._sim_time)
        marker.pose.position = Point(x=target[0], y=target[1], z=target[2])
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 0.04
        marker.color.r, marker.color.a = 1.0, 0.8
        self._pub_marker.publish(marker)

    # ---------------------------------------------------------------- teardown
    def destroy_node(self) -> None:
        self._running = False
        self._command_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.world.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = SimNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
