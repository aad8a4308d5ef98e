"""Actuator controller node: policy targets -> joint commands at a high rate.

Subscribes ``policy/joint_targets`` (visuomotor_interfaces/JointTargets) and
``joint_states``; publishes std_msgs/Float64MultiArray on a ros2_control-style
``<controller>/commands`` topic at ``rate_hz``, a decimated
``controller/state`` and ``/diagnostics``. Services ``controller/estop`` and
``controller/reset_estop`` (std_srvs/Trigger) latch and release the e-stop.

The control law, limits, watchdog and e-stop live in
:class:`visuomotor_core.controller.JointController`; this node only converts
messages and owns the loop. A stall elsewhere in the graph (even 500 ms in an
encoder or policy callback) cannot delay the loop or its watchdog: under
``ros2 launch`` the node has a process of its own, and the in-process runner
gives it an executor and thread of its own. Its own callbacks are short, so
``main`` spins a SingleThreadedExecutor, which keeps time better at 1 kHz than
rclpy's MultiThreadedExecutor (measured by ``bench-controller --executor``);
the loop timer still has a callback group of its own for embedders that use a
multi-threaded one. On sim time the loop runs on ``/clock``: with no clock,
time stays at zero and nothing is commanded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker

from visuomotor_core.controller import (
    ControllerConfig,
    JointController,
    Mode,
    config_from_parameters,
    parameter_schema,
)
from visuomotor_core.params import ParamSpec
from visuomotor_core.robot_model import PANDA_ARM_JOINTS, RobotModel
from visuomotor_core.timing import LatencyStats, PeriodStats
from visuomotor_interfaces.msg import ControllerState, JointTargets
from visuomotor_ros import graph
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATEST_QOS,
    SENSOR_QOS,
    DiagnosticsReporter,
    JointOrder,
    ThrottledWarnings,
    declare_schema,
    now_seconds,
    on_set_validated,
    run_node,
    seconds_to_time,
    time_to_seconds,
)

_MODE_CODES = {
    Mode.INACTIVE: ControllerState.MODE_INACTIVE,
    Mode.TRACKING: ControllerState.MODE_TRACKING,
    Mode.HOLD: ControllerState.MODE_HOLD,
    Mode.ESTOP: ControllerState.MODE_ESTOP,
}

NODE_SCHEMA = (
    ParamSpec("command_topic", str, graph.DEFAULT_COMMAND_TOPIC,
              "ros2_control forward-command topic the commands go to", read_only=True),
    ParamSpec("urdf_path", str, "", "robot description file; empty: the bringup's panda.urdf",
              read_only=True),
    ParamSpec("state_rate_hz", float, 50.0, "rate of controller/state messages", "Hz", 1.0,
              1000.0),
    ParamSpec("deadline_tolerance", float, 0.5,
              "a period longer than (1 + this) x nominal is a deadline miss", "", 0.01, 10.0),
    ParamSpec("stats_window", int, 5000, "control periods in the jitter statistics", "",
              100, 1_000_000, read_only=True),
    ParamSpec("autostart", bool, True, "configure and activate at start-up", read_only=True),
    ParamSpec("trigger", str, "timer",
              "what runs a control tick: 'timer' (own loop at rate_hz) or 'joint_states' "
              "(one tick per joint state, timed by its stamp: lockstep with a simulator or a "
              "driver publishing at the control rate)", read_only=True,
              choices=("timer", "joint_states")),
)
CONTROLLER_SCHEMA = tuple(parameter_schema())
SCHEMA = CONTROLLER_SCHEMA + NODE_SCHEMA
_CONTROLLER_NAMES = frozenset(spec.name for spec in CONTROLLER_SCHEMA)


class ControllerNode(LifecycleNode):
    """Lifecycle node running :class:`JointController` at ``rate_hz``; commands only when active."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("controller_node", **kwargs)
        self.params = declare_schema(self, SCHEMA)
        on_set_validated(self, SCHEMA, self._apply_params)
        self.controller: JointController | None = None
        self._lock = threading.Lock()
        self._joint_names = list(PANDA_ARM_JOINTS)
        self._q = np.zeros(len(self._joint_names))
        self._qd = np.zeros(len(self._joint_names))
        self._state_stamp = -np.inf
        self._have_state = False
        self._state_order = JointOrder(self._joint_names)
        self._target_order = JointOrder(self._joint_names)
        self._target_camera_stamp = None
        #: Node-clock time (s) at which the latest accepted target arrived; the target
        #: watchdog (target_timeout) counts from here.
        self.last_target_arrival = -np.inf
        self._latency_pending = False
        self._timer = None
        self._last_wall: float | None = None
        self._last_state_pub = -np.inf
        self._last_mode: Mode | None = None
        self._mode_since = 0.0
        self._warnings = ThrottledWarnings(self.get_logger())
        if self.params["autostart"]:
            self.trigger_configure()
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = self.params
        try:
            urdf = p["urdf_path"] or str(graph.urdf_path())
            model = RobotModel.from_urdf_file(urdf, self._joint_names)
            config = config_from_parameters(
                {k: v for k, v in p.items() if k in _CONTROLLER_NAMES}
            )
            self.controller = JointController(config, model)
        except ValueError as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self._new_period_stats(config.period)
        self._set_state_interval()
        self.latency = LatencyStats(
            ("camera_to_command", "policy_to_command", "tick_compute"), capacity=2000
        )
        self._last_e2e = 0.0
        self._loop_group = MutuallyExclusiveCallbackGroup()
        self._io_group = MutuallyExclusiveCallbackGroup()
        self._command_msg = Float64MultiArray()
        self._pub_command = self.create_publisher(
            Float64MultiArray, p["command_topic"], LATEST_QOS
        )
        self._pub_state = self.create_publisher(
            ControllerState, graph.CONTROLLER_STATE, DEFAULT_QOS
        )
        self._pub_text = self.create_publisher(Marker, graph.CONTROLLER_STATUS_TEXT, DEFAULT_QOS)
        self._diagnostics = DiagnosticsReporter(self, "actuator controller")
        self._input_subs = [
            self.create_subscription(
                JointTargets, graph.POLICY_TARGETS, self._on_targets, LATEST_QOS,
                callback_group=self._io_group,
            ),
            self.create_subscription(
                JointState, graph.JOINT_STATES, self._on_joint_state, SENSOR_QOS,
                callback_group=self._io_group,
            ),
        ]
        # Not ``self._services``: rclpy's Node keeps its own services (parameters,
        # lifecycle) under that name, and overwriting it unserves them.
        self._trigger_services = [
            self.create_service(Trigger, graph.CONTROLLER_ESTOP, self._on_estop,
                                callback_group=self._io_group),
            self.create_service(Trigger, graph.CONTROLLER_RESET_ESTOP, self._on_reset_estop,
                                callback_group=self._io_group),
        ]
        if p["trigger"] == "timer":
            self._create_timer(config)
        self.get_logger().info(
            f"configured: {config.command_interface} commands on '{p['command_topic']}', "
            + (f"{config.rate_hz:.0f} Hz timer" if p["trigger"] == "timer" else
               "one tick per joint state")
        )
        return TransitionCallbackReturn.SUCCESS

    def _set_state_interval(self) -> None:
        """Spacing of controller/state messages, s. Half a control period early still
        counts, so a tick that comes slightly early does not skip a state message."""
        period = self.controller.config.period
        self._state_interval = 1.0 / self.params["state_rate_hz"] - 0.5 * period

    def _new_period_stats(self, period: float) -> None:
        self.period_stats = PeriodStats(
            nominal_period=period,
            capacity=self.params["stats_window"],
            tolerance=self.params["deadline_tolerance"],
        )

    def _create_timer(self, config: ControllerConfig) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._timer = self.create_timer(
            config.period, self._control_tick, callback_group=self._loop_group
        )

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        with self._lock:
            self.controller.activate()
        self.get_logger().info("active: commanding")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        with self._lock:
            self.controller.deactivate()
        self.get_logger().info("inactive: no commands")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        for sub in getattr(self, "_input_subs", []):
            self.destroy_subscription(sub)
        for srv in getattr(self, "_trigger_services", []):
            self.destroy_service(srv)
        self._input_subs, self._trigger_services = [], []
        self.controller = None

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        controller_changes = {k: v for k, v in changes.items() if k in _CONTROLLER_NAMES}
        if controller_changes and self.controller is not None:
            converted = {
                k: tuple(v) if isinstance(v, list | tuple) else v
                for k, v in controller_changes.items()
            }
            with self._lock:
                result = self.controller.update_config(**converted)
            if not result.accepted:
                return False, result.reason
            if "rate_hz" in converted:
                self._new_period_stats(self.controller.config.period)
                if self.params["trigger"] == "timer":
                    self._create_timer(self.controller.config)
        self.params.update(changes)
        if self.controller is not None:
            self._set_state_interval()
        return True, ""

    # ------------------------------------------------------------------ inputs
    def _on_joint_state(self, msg: JointState) -> None:
        index = self._state_order.index(msg.name)
        if index is None:
            missing = self._state_order.missing(msg.name)
            self._warnings.warn("names", f"joint state lacks joints {missing}: ignored")
            return
        if len(msg.position) != len(msg.name) or len(msg.velocity) != len(msg.name):
            self._warnings.warn("state_len", "joint state with missing position/velocity: ignored")
            return
        with self._lock:
            self._q[:] = np.asarray(msg.position)[index]
            self._qd[:] = np.asarray(msg.velocity)[index]
            self._state_stamp = time_to_seconds(msg.header.stamp)
            self._have_state = True
        if self._timer is None and self.params["trigger"] == "joint_states":
            if now_seconds(self) <= 0.0:
                return  # sim time without /clock yet: no motion is commanded
            self._tick(self._state_stamp)

    def _on_targets(self, msg: JointTargets) -> None:
        if self.controller is None:
            return
        positions = np.asarray(msg.position, dtype=np.float64)
        velocities = np.asarray(msg.velocity, dtype=np.float64) if len(msg.velocity) else None
        if msg.name:
            index = self._target_order.index(msg.name)
            sizes_ok = positions.size == len(msg.name) and (
                velocities is None or velocities.size == len(msg.name)
            )
            if index is None or not sizes_ok:
                self._warnings.warn("target_names", "target names/positions do not match the arm")
                return
            positions = positions[index]
            velocities = None if velocities is None else velocities[index]
        now = now_seconds(self)
        stamp = time_to_seconds(msg.header.stamp)
        with self._lock:
            result = self.controller.set_target(
                positions, stamp=stamp, now=now, velocities=velocities
            )
        if not result.accepted:
            self._warnings.warn("target", f"target refused: {result.reason}")
            return
        self._target_camera_stamp = stamp
        self.last_target_arrival = now
        self._target_policy_stamp = time_to_seconds(msg.policy_stamp)
        self._latency_pending = True

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            self.controller.estop("e-stop service")
        self.get_logger().warning("E-STOP latched: holding until controller/reset_estop")
        response.success, response.message = True, "e-stop latched"
        return response

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            self.controller.reset_estop()
        self.get_logger().info("e-stop released: holding until a fresh target")
        response.success, response.message = True, "e-stop released"
        return response

    # ------------------------------------------------------------------ loop
    def _control_tick(self) -> None:
        self._tick(now_seconds(self))

    def _tick(self, now: float) -> None:
        """One control period at time ``now`` (s, ROS clock or the state's stamp)."""
        controller = self.controller
        if controller is None:
            return
        wall = time.perf_counter()
        if self._last_wall is not None:
            self.period_stats.record_period(wall - self._last_wall)
        self._last_wall = wall
        if now <= 0.0:
            return  # sim time without /clock yet: no motion is commanded
        with self._lock:
            if not self._have_state:
                return
            command = controller.update(now, self._q, self._qd, self._state_stamp)
            if command.valid:
                self._command_msg.data = command.values.tolist()
        mode_changed = command.mode is not self._last_mode
        self._last_mode = command.mode
        if mode_changed:
            self._mode_since = now
        if not command.valid:
            return
        self._pub_command.publish(self._command_msg)
        if self._latency_pending and command.mode is Mode.TRACKING:
            self._latency_pending = False
            self._last_e2e = now - self._target_camera_stamp
            self.latency.record("camera_to_command", self._last_e2e)
            self.latency.record("policy_to_command", now - self._target_policy_stamp)
        if mode_changed or now - self._last_state_pub >= self._state_interval:
            self._last_state_pub = now
            self._publish_state(now, command, mode_changed)
        self.latency.record("tick_compute", time.perf_counter() - wall)

    def _publish_state(self, now: float, command: Any, mode_changed: bool) -> None:
        """controller/state and (rate-limited, at once on a mode change) /diagnostics."""
        controller = self.controller
        q_ref, _ = controller.reference
        jitter = self.period_stats.summary()
        status = controller.status()
        msg = ControllerState(
            mode=_MODE_CODES[command.mode],
            reason=command.reason,
            mode_since=seconds_to_time(self._mode_since),
            name=self._joint_names,
            reference_position=q_ref.tolist(),
            measured_position=self._measured_list(),
            command=self._command_msg.data,
            command_interface=command.interface,
            target_age=max(0.0, now - (self._target_camera_stamp or now)),
            end_to_end_latency=self._last_e2e,
            period_jitter_p50=jitter.jitter_p50,
            period_jitter_p99=jitter.jitter_p99,
            deadline_misses=jitter.total_deadline_misses,
            rejected_targets=status["targets_refused"],
        )
        msg.header.stamp = seconds_to_time(now)
        msg.header.frame_id = "panda_link0"
        self._pub_state.publish(msg)
        level = "ok" if command.mode is Mode.TRACKING else "warn"
        if command.mode is Mode.ESTOP:
            level = "error"
        message = f"{command.mode.value}" + (f": {command.reason}" if command.reason else "")
        published = self._diagnostics.report(
            level,
            message,
            {
                **status,
                "nominal_rate_hz": controller.config.rate_hz,
                **jitter.as_dict(),
                **self.latency.as_dict(),
            },
            force=mode_changed,
        )
        if published:
            self._publish_status_text(now, message, jitter)

    def _publish_status_text(self, now: float, message: str, jitter: Any) -> None:
        """The diagnostics summary as a text marker above the robot, for RViz."""
        e2e = self.latency.summary("camera_to_command")
        marker = Marker(ns="controller", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        marker.header.stamp = seconds_to_time(now)
        marker.header.frame_id = "panda_link0"
        marker.pose.position.z = 1.1
        marker.pose.orientation.w = 1.0
        marker.scale.z = 0.05
        marker.color.r = marker.color.g = marker.color.b = marker.color.a = 1.0
        marker.text = (
            f"{message}\n{jitter.rate_hz:.0f} Hz, jitter p99 {jitter.jitter_p99 * 1e3:.2f} ms, "
            f"misses {jitter.total_deadline_misses}\n"
            f"camera->command p50 {e2e.p50 * 1e3:.0f} ms, p99 {e2e.p99 * 1e3:.0f} ms"
        )
        self._pub_text.publish(marker)

    def _measured_list(self) -> list[float]:
        with self._lock:
            return self._q.tolist()


def main(args: list[str] | None = None) -> None:
    # One thread: the loop and the inputs are serial work, and rclpy's single-threaded
    # executor keeps 1 kHz better than the multi-threaded one (see the module docstring).
    run_node(ControllerNode, args, threads=1)


if __name__ == "__main__":
    main()
