"""The sim node: the PyBullet world as a ROS 2 robot.

Publishes what a real Panda + camera driver would (``camera/image_raw`` and
``camera/camera_info`` with sensor-data QoS, ``joint_states``, and
``robot_description`` transient local), plus ``/clock``, the task status, an RViz
marker of the true target and ``/diagnostics``; takes joint commands on a
ros2_control-style ``<controller>/commands`` topic (std_msgs/Float64MultiArray,
one value per arm joint in panda_joint1..7 order); services reset an episode
(seed + randomization profile) and place the target.

Physics runs in its own thread, from the first episode on (at start-up with
``start_episode``, else at the first ``sim/reset_episode`` call), in one of two
step modes:

* ``realtime`` — paced to the wall clock (scaled by ``real_time_factor``); when
  the machine cannot keep up (more than ``MAX_PACING_LAG`` s behind) the pacing
  restarts from the present instead of racing to catch up;
* ``lockstep`` — as fast as possible on sim time: after publishing a joint
  state (every ``joint_state_decimation`` steps), the sim waits (at most
  ``lockstep_timeout`` s of wall time) for the next command before stepping, so
  a controller ticking per joint state sees every state and no command is
  skipped however slow the machine is.

Bad commands (wrong length, NaN/inf) are refused and the previous command is
kept; values beyond the URDF limits of the command interface (effort, position
or velocity) are clamped; each case is counted and logs a throttled warning.
Without a fresh command for ``command_timeout`` s (sim time) the joints hold
their position, as a robot's own safety layer would.

Threads: the physics thread owns the world; services take the world lock
between steps. The command callback only takes a small command lock, so a
frame being rendered never holds up the executor that receives commands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
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
    DiagnosticsReporter,
    ThrottledWarnings,
    declare_schema,
    on_set_validated,
    run_node,
    seconds_to_time,
)
from visuomotor_sim.randomization import DomainRandomizer, load_profile
from visuomotor_sim.task import ReachTask, TaskConfig
from visuomotor_sim.world import ARM_JOINT_NAMES, COMMAND_MODES, PandaWorld, WorldConfig

BASE_FRAME = "panda_link0"
PROFILES = ("nominal", "training", "heldout")
STEP_MODES = ("realtime", "lockstep")
#: Wall time (s) the realtime loop may fall behind before it stops catching up.
MAX_PACING_LAG = 0.1
#: Slack (s) when comparing sim times, against float rounding of summed steps.
TIME_EPS = 1e-9
MARKER_DIAMETER = 0.04  # m
#: How often (s) the physics thread, idle before the first episode, checks for shutdown.
WAIT_POLL_PERIOD = 0.1

#: Joint commands: keep only the newest; best effort so that publishers of either
#: reliability (ros2_control's reliable forward-command convention, a best-effort
#: teleop tool) are matched — a reliable subscription would ignore best-effort ones.
COMMAND_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT
)

SCHEMA = (
    ParamSpec("physics_hz", float, 1000.0, "Physics rate", "Hz", 100.0, 5000.0, read_only=True),
    ParamSpec("camera_rate_hz", float, 20.0, "Camera frame rate (sim time)", "Hz", 1.0, 120.0),
    ParamSpec("joint_state_decimation", int, 1, "Publish joint_states every N physics steps",
              "steps", 1, 100),
    ParamSpec("clock_decimation", int, 1, "Publish /clock every N physics steps", "steps", 1,
              100),
    ParamSpec("status_rate_hz", float, 20.0,
              "Task status rate (also the rate the task's dwell is checked at)", "Hz", 1.0, 200.0),
    ParamSpec("step_mode", str, "lockstep", "realtime (paced to the wall clock) or lockstep "
              "(waits for a command after each step)", "", read_only=True, choices=STEP_MODES),
    ParamSpec("real_time_factor", float, 1.0, "Sim speed in realtime mode", "", 0.05, 10.0),
    ParamSpec("lockstep_timeout", float, 0.05, "Longest wait for a command per step (wall)",
              "s", 0.001, 1.0),
    ParamSpec("command_timeout", float, 0.1, "Hold position without commands for this long "
              "(sim time)", "s", 0.005, 10.0),
    ParamSpec("command_topic", str, graph.DEFAULT_COMMAND_TOPIC, "Joint command topic", "",
              read_only=True),
    ParamSpec("command_interface", str, "effort", "Meaning of the command values: effort "
              "(N·m), position (rad) or velocity (rad/s)", "", read_only=True,
              choices=COMMAND_MODES),
    ParamSpec("profile", str, "nominal", "Domain-randomization profile of episodes reset "
              "without one", "", choices=PROFILES),
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


@dataclass
class SimCounters:
    """What the sim node has counted since start-up (read by diagnostics and tests)."""

    steps: int = 0
    commands: int = 0
    rejected: int = 0
    clamped: int = 0
    lockstep_timeouts: int = 0
    pacing_resets: int = 0


def task_config(params: Mapping[str, Any]) -> TaskConfig:
    """The reach task's configuration from the node's parameters (ValueError if invalid)."""
    return TaskConfig(params["tolerance"], params["dwell"], params["episode_timeout"])


class SimNode(Node):
    """PyBullet robot + camera + reach task behind ROS 2 topics and services."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_node", **kwargs)
        self.params = declare_schema(self, SCHEMA)
        p = self.params
        self.counters = SimCounters()
        self._warnings = ThrottledWarnings(self.get_logger())
        self.world = PandaWorld(WorldConfig(physics_hz=p["physics_hz"], gui=p["gui"]))
        self.task = ReachTask(
            task_config(p),
            grasp_point=self.world.grasp_point,
            effort=lambda: self.world.effort_integral,
        )
        on_set_validated(self, SCHEMA, self._apply_params)
        n = len(ARM_JOINT_NAMES)
        # _world_lock: the world, the task and episode state (physics thread, services).
        # _command_lock: the latest command and its sim time (command callback, physics).
        self._world_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._command_event = threading.Event()
        self._episode_started = threading.Event()
        self._command = np.zeros(n)
        self._command_time = -np.inf
        self._step_command = np.zeros(n)
        self._interface = p["command_interface"]
        self._lower, self._upper = self._command_bounds(self._interface)
        self._hold_q: np.ndarray | None = None
        self._sim_time = 0.0
        self._episode = 0
        self._seed = p["seed"]
        self._profile = p["profile"]
        self._done_reported = False
        self._next_frame = 0.0
        self._next_status = 0.0

        self._pub_clock = self.create_publisher(Clock, graph.CLOCK, SENSOR_QOS)
        self._pub_joints = self.create_publisher(JointState, graph.JOINT_STATES, LATEST_QOS)
        self._pub_image = self.create_publisher(Image, graph.CAMERA_IMAGE, SENSOR_QOS)
        self._pub_info = self.create_publisher(CameraInfo, graph.CAMERA_INFO, SENSOR_QOS)
        self._pub_status = self.create_publisher(TaskStatusMsg, graph.TASK_STATUS, DEFAULT_QOS)
        self._pub_marker = self.create_publisher(Marker, graph.TARGET_MARKER, LATCHED_QOS)
        self._pub_description = self.create_publisher(
            String, graph.ROBOT_DESCRIPTION, LATCHED_QOS
        )
        self._diagnostics = DiagnosticsReporter(
            self, "simulation", hardware_id="pybullet", period=p["diagnostics_period"]
        )
        self._pub_description.publish(String(data=graph.urdf_path().read_text()))
        # Commands and services in separate groups: under a multi-threaded executor a
        # reset waiting for the world lock does not delay the commands behind it.
        self.create_subscription(
            Float64MultiArray, p["command_topic"], self._on_command, COMMAND_QOS,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        services = MutuallyExclusiveCallbackGroup()
        self.create_service(ResetEpisode, graph.SIM_RESET, self._on_reset,
                            callback_group=services)
        self.create_service(SetTarget, graph.SIM_SET_TARGET, self._on_set_target,
                            callback_group=services)

        self._joint_msg = JointState(name=list(ARM_JOINT_NAMES))
        self._clock_msg = Clock()
        self._info_template = self._camera_info_msg()
        self._rate_window = (time.perf_counter(), 0.0, 0)
        if p["start_episode"]:
            self.reset_episode(self._seed, self._profile)
        self._running = True
        self._thread = threading.Thread(target=self._physics_loop, name="sim-physics", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        if any(name in changes for name in _TASK_PARAMS):
            try:
                config = task_config({**self.params, **changes})
            except ValueError as error:
                return False, str(error)
            with self._world_lock:
                self.task.config = config
        self.params.update(changes)
        return True, ""

    # ---------------------------------------------------------------- episodes
    @property
    def sim_time(self) -> float:
        """Simulated time since the node started, s (monotonic across episodes)."""
        return self._sim_time

    def reset_episode(self, seed: int, profile: str) -> np.ndarray:
        """Start an episode: draw the profile's parameters with ``seed``, reset world + task.

        Returns the target position (3,), m, base frame.
        """
        randomizer = DomainRandomizer(load_profile(profile), np.random.default_rng(seed))
        dynamics, visual = randomizer.sample()
        with self._world_lock:
            target = self.world.reset(seed, dynamics=dynamics, visual=visual)
            self._episode += 1
            self._seed, self._profile = seed, profile
            self.task.reset(target, now=self._sim_time)
            self._hold_q = self.world.true_joint_positions()
            with self._command_lock:
                self._command_time = -np.inf
            self._done_reported = False
            self._publish_marker(target)
        self._episode_started.set()
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
        try:
            target = self.reset_episode(int(request.seed), profile)
        except (ValueError, OSError) as error:  # e.g. an unreadable randomization file
            response.success, response.message = False, f"reset failed: {error}"
            return response
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
        with self._world_lock:
            self.world.set_target(position)
            self.task.reset(position, now=self._sim_time)
            self._done_reported = False
            self._publish_marker(position)
        response.success, response.message = True, "target placed"
        return response

    # ---------------------------------------------------------------- commands
    def _command_bounds(self, interface: str) -> tuple[np.ndarray, np.ndarray]:
        limits = self.world.limits
        if interface == "effort":
            return -limits.effort, limits.effort
        if interface == "position":
            return limits.lower, limits.upper
        return -limits.velocity, limits.velocity

    def _refuse(self, key: str, text: str) -> None:
        self.counters.rejected += 1
        self._warnings.warn(key, f"command refused, previous command kept: {text}")

    def _on_command(self, msg: Float64MultiArray) -> None:
        try:
            self._accept_command(np.asarray(msg.data, dtype=np.float64))
        finally:
            self.counters.commands += 1  # counted once handled, whatever the outcome

    def _accept_command(self, values: np.ndarray) -> None:
        n = len(ARM_JOINT_NAMES)
        if values.shape != (n,):
            self._refuse("length", f"{values.size} values, expected {n} (panda_joint1..7)")
            return
        if not np.isfinite(values).all():
            self._refuse("finite", f"contains NaN or inf: {values.tolist()}")
            return
        if np.any((values < self._lower) | (values > self._upper)):
            self.counters.clamped += 1
            self._warnings.warn(
                "limits", f"{self._interface} command beyond the joint limits: clamped "
                f"({np.round(values, 3).tolist()})"
            )
            values = np.minimum(np.maximum(values, self._lower), self._upper)
        with self._command_lock:
            self._command[:] = values
            self._command_time = self._sim_time
        self._command_event.set()

    def latest_command(self) -> tuple[np.ndarray, float]:
        """The command that will be applied (copy, after checks) and its receipt sim time, s."""
        with self._command_lock:
            return self._command.copy(), self._command_time

    # ---------------------------------------------------------------- physics loop
    def _physics_loop(self) -> None:
        while not self._episode_started.wait(WAIT_POLL_PERIOD):  # nothing to step before
            if not self._running:                               # the world was reset
                return
        with self._world_lock:
            self._publish_joint_state(self._sim_time)  # the state a lockstep peer answers
        pacing = (time.perf_counter(), self._sim_time, self.params["real_time_factor"])
        state_published = True
        try:
            while self._running and rclpy.ok(context=self.context):
                p = self.params
                lockstep = p["step_mode"] == "lockstep"
                if lockstep and state_published:
                    self._wait_for_command(p["lockstep_timeout"])
                with self._world_lock:
                    state_published = self._step_and_publish(p)
                if not lockstep:
                    pacing = self._pace(pacing, p["real_time_factor"])
        except ExternalShutdownException:
            pass
        except Exception as error:
            if self._running and rclpy.ok(context=self.context):
                self.get_logger().fatal(f"physics loop stopped: {error!r}")
                raise

    def _wait_for_command(self, timeout: float) -> None:
        if not self._command_event.wait(timeout):
            self.counters.lockstep_timeouts += 1
        self._command_event.clear()

    def _pace(
        self, pacing: tuple[float, float, float], factor: float
    ) -> tuple[float, float, float]:
        """Sleep until the wall clock reaches the sim time (scaled by ``factor``).

        ``pacing`` is (wall, sim, factor) at the anchor; returns the anchor to use next:
        a new one when the factor changed or the loop fell more than MAX_PACING_LAG behind.
        """
        now_wall, now_sim = time.perf_counter(), self._sim_time
        wall0, sim0, factor0 = pacing
        if factor != factor0:
            return now_wall, now_sim, factor
        ahead = (now_sim - sim0) / factor - (now_wall - wall0)
        if ahead > 0.0:
            time.sleep(ahead)
        elif ahead < -MAX_PACING_LAG:
            self.counters.pacing_resets += 1
            return now_wall, now_sim, factor
        return pacing

    def _step_and_publish(self, p: Mapping[str, Any]) -> bool:
        """One physics step and whatever is due after it; True when it published a joint
        state (in lockstep the next step then waits for the answer to it)."""
        self._apply_latest_command(p)
        self.world.step(1)
        self._sim_time += self.world.dt
        self.counters.steps += 1
        steps, now = self.counters.steps, self._sim_time
        if steps % p["clock_decimation"] == 0:
            self._clock_msg.clock = seconds_to_time(now)
            self._pub_clock.publish(self._clock_msg)
        state_due = steps % p["joint_state_decimation"] == 0
        if state_due:
            self._publish_joint_state(now)
        if now >= self._next_frame - TIME_EPS:
            self._next_frame = max(self._next_frame + 1.0 / p["camera_rate_hz"], now)
            self._publish_camera(now)
        if now >= self._next_status - TIME_EPS:
            self._next_status = max(self._next_status + 1.0 / p["status_rate_hz"], now)
            self._publish_status(now)
            self._report_diagnostics(now)
        return state_due

    def _apply_latest_command(self, p: Mapping[str, Any]) -> None:
        with self._command_lock:
            fresh = self._sim_time - self._command_time <= p["command_timeout"]
            if fresh:
                self._step_command[:] = self._command
        if fresh:
            self._hold_q = None
            self.world.apply_command(self._step_command, self._interface)
            return
        if self._hold_q is None:
            self._hold_q = self.world.true_joint_positions()
            self._warnings.warn("hold", "no fresh command: holding position", period=5.0)
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

    def _report_diagnostics(self, now: float) -> None:
        wall0, sim0, steps0 = self._rate_window
        wall = time.perf_counter() - wall0
        c = self.counters
        values = {
            "step_mode": self.params["step_mode"],
            "sim_time_s": now,
            "real_time_factor": (now - sim0) / wall if wall > 0.0 else 0.0,
            "steps_per_s": (c.steps - steps0) / wall if wall > 0.0 else 0.0,
            "episode": self._episode,
            "commands": c.commands,
            "commands_rejected": c.rejected,
            "commands_clamped": c.clamped,
            "lockstep_timeouts": c.lockstep_timeouts,
            "pacing_resets": c.pacing_resets,
        }
        if self._diagnostics.report("ok", "stepping", values):
            self._rate_window = (time.perf_counter(), now, c.steps)

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
        marker.scale.x = marker.scale.y = marker.scale.z = MARKER_DIAMETER
        marker.color.r, marker.color.a = 1.0, 0.8
        self._pub_marker.publish(marker)

    # ---------------------------------------------------------------- teardown
    def destroy_node(self) -> None:
        """Stop the physics thread, disconnect PyBullet, destroy the node (idempotent)."""
        self._running = False
        self._command_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        with self._world_lock:
            self.world.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    # Two threads: commands and services sit in separate callback groups, so a reset
    # (which waits for the physics thread's world lock) never holds up a command.
    run_node(SimNode, args, threads=2)


if __name__ == "__main__":
    main()
