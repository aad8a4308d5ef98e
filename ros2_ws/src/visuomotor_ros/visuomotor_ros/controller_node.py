"""Actuator controller node: policy targets -> joint commands, read → update → write in one loop.

The control law, limits, watchdog and e-stop live in
:class:`visuomotor_core.controller.JointController`; the robot is behind the
hardware seam (:mod:`visuomotor_core.hardware`), chosen by ``hardware``:

* ``sim`` — the PyBullet world of the same process (the robot process of the
  sim bringup, :mod:`visuomotor_ros.sim_robot`): each tick steps the physics;
* ``topics`` — ``joint_states`` in, ``<controller>/commands``
  (std_msgs/Float64MultiArray) out, for a robot whose driver runs its own loop.

``trigger`` says what runs a tick: ``deadline`` — a dedicated thread on
absolute wall-clock deadlines at ``rate_hz`` (:class:`visuomotor_core.rt_loop.ControlLoop`,
with optional SCHED_FIFO priority, CPU affinity and locked memory); ``lockstep``
— the same thread without sleeping, the simulator setting the pace on sim time
(sim only); ``joint_states`` — one tick per received joint state, timed by its
stamp (topics only). ``max_consecutive_misses`` deadline misses in a row →
HOLD and ERROR on ``/diagnostics``.

rclpy only carries the I/O around the loop: targets, services and parameters
arrive on the executor; ``controller/state``, the RViz text and
``/diagnostics`` are built on the executor when the loop announces them (a
guard condition), so no DDS work runs inside a tick except the command itself
(topics backend). Commands go out only while the node is active.
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
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker

from visuomotor_core.controller import (
    JointController,
    Mode,
    config_from_parameters,
    parameter_schema,
)
from visuomotor_core.hardware import Hardware, JointSample
from visuomotor_core.params import ParamSpec
from visuomotor_core.robot_model import PANDA_ARM_JOINTS, RobotModel
from visuomotor_core.rt_loop import ControlLoop, LoopConfig
from visuomotor_core.timing import LatencyStats, PeriodStats
from visuomotor_interfaces.msg import ControllerState, JointTargets
from visuomotor_ros import graph
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATEST_QOS,
    DiagnosticsReporter,
    JointOrder,
    ThrottledWarnings,
    declare_schema,
    on_set_validated,
    run_node,
    seconds_to_time,
    time_to_seconds,
)
from visuomotor_ros.topic_hardware import TopicHardware

HARDWARES = ("topics", "sim")
TRIGGERS = ("deadline", "lockstep", "joint_states")

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
              "a tick starting later than this x period (or ending after its deadline) is a "
              "deadline miss", "", 0.01, 10.0),
    ParamSpec("stats_window", int, 5000, "control periods in the jitter statistics", "",
              100, 1_000_000, read_only=True),
    ParamSpec("autostart", bool, True, "configure and activate at start-up", read_only=True),
    ParamSpec("hardware", str, "topics",
              "the robot behind the seam: 'topics' (joint_states in, command_topic out; the "
              "robot's driver runs its own loop) or 'sim' (the PyBullet world of the sim robot "
              "process)", read_only=True, choices=HARDWARES),
    ParamSpec("trigger", str, "deadline",
              "what runs a control tick: 'deadline' (own thread, absolute wall-clock deadlines "
              "at rate_hz), 'lockstep' (sim only: as fast as the sim steps, on sim time) or "
              "'joint_states' (topics only: one tick per joint state, timed by its stamp)",
              read_only=True, choices=TRIGGERS),
    ParamSpec("max_consecutive_misses", int, 20,
              "deadline misses in a row that make the controller hold and report ERROR", "",
              1, 10000),
    ParamSpec("rt_priority", int, 0, "SCHED_FIFO priority of the loop thread (0: normal "
              "scheduling); applied where permitted, logged where not", "", 0, 99,
              read_only=True),
    ParamSpec("cpu_affinity", int, [-1], "CPUs the loop thread may run on ([-1]: any)", "",
              -1, 1023, read_only=True),
    ParamSpec("lock_memory", bool, False, "mlockall the process (no page faults in the loop)",
              "", read_only=True),
)
CONTROLLER_SCHEMA = tuple(parameter_schema())
SCHEMA = CONTROLLER_SCHEMA + NODE_SCHEMA
_CONTROLLER_NAMES = frozenset(spec.name for spec in CONTROLLER_SCHEMA)


class ControllerNode(LifecycleNode):
    """Lifecycle node running :class:`JointController` against a hardware backend.

    Args:
        hardware: the in-process hardware for ``hardware: sim`` (the sim node's
            :class:`~visuomotor_sim.hardware.SimHardware`); None for ``topics``.
    """

    def __init__(self, hardware: Hardware | None = None, **kwargs: Any) -> None:
        super().__init__("controller_node", **kwargs)
        self.params = declare_schema(self, SCHEMA)
        on_set_validated(self, SCHEMA, self._apply_params)
        self.controller: JointController | None = None
        self._sim_hardware = hardware
        self.hardware: Hardware | None = None
        self.loop: ControlLoop | None = None
        self._lock = threading.Lock()
        self._joint_names = list(PANDA_ARM_JOINTS)
        self._sample = JointSample.zeros(len(self._joint_names))
        self._target_order = JointOrder(self._joint_names)
        self._target_camera_stamp: float | None = None
        self._target_policy_stamp = 0.0
        #: Hardware-clock time (s) at which the latest accepted target arrived.
        self.last_target_arrival = -np.inf
        self._latency_pending = False
        self._last_mode: Mode | None = None
        self._last_reason = ""
        self._mode_since = 0.0
        self._last_state_pub = -np.inf
        self._last_command = np.zeros(len(self._joint_names))
        self._announced = threading.Event()
        self._mode_changed = False
        self._overrun = False
        self._loop_error: BaseException | None = None
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
            controller = JointController(config, model)
            self._check_topology(p)
        except ValueError as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.controller = controller
        self.latency = LatencyStats(
            ("camera_to_command", "policy_to_command", "tick_compute"), capacity=2000
        )
        self.stamp_periods = PeriodStats(config.period, p["stats_window"], p["deadline_tolerance"])
        self._last_e2e = 0.0
        self._io_group = MutuallyExclusiveCallbackGroup()
        self._pub_state = self.create_publisher(
            ControllerState, graph.CONTROLLER_STATE, DEFAULT_QOS
        )
        self._pub_text = self.create_publisher(Marker, graph.CONTROLLER_STATUS_TEXT, DEFAULT_QOS)
        self._diagnostics = DiagnosticsReporter(self, "actuator controller")
        self._guard = self.create_guard_condition(self._publish_announced)
        self._input_subs = [
            self.create_subscription(
                JointTargets, graph.POLICY_TARGETS, self._on_targets, LATEST_QOS,
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
        if p["hardware"] == "sim":
            self.hardware = self._sim_hardware
            self.hardware.set_control_rate(config.rate_hz)
            self.hardware.lockstep = p["trigger"] == "lockstep"
        else:
            on_sample = self._tick if p["trigger"] == "joint_states" else None
            self.hardware = TopicHardware(self, self._joint_names, p["command_topic"],
                                          on_sample=on_sample, callback_group=self._io_group)
        if p["trigger"] != "joint_states":
            self._start_loop()
        self.get_logger().info(
            f"configured: {config.command_interface} commands to the {p['hardware']} hardware"
            + (f" on '{p['command_topic']}'" if p["hardware"] == "topics" else "")
            + (f", {config.rate_hz:.0f} Hz {p['trigger']} loop" if p["trigger"] != "joint_states"
               else ", one tick per joint state")
        )
        return TransitionCallbackReturn.SUCCESS

    def _check_topology(self, p: Mapping[str, Any]) -> None:
        """ValueError when hardware and trigger do not go together."""
        if p["hardware"] == "sim":
            if self._sim_hardware is None:
                raise ValueError("hardware 'sim' runs only in the sim robot process "
                                 "(visuomotor_ros.sim_robot), beside the sim node")
            if p["trigger"] == "joint_states":
                raise ValueError("trigger 'joint_states' needs hardware 'topics'; the sim is "
                                 "stepped by the loop ('lockstep' or 'deadline')")
            self._sim_hardware.set_control_rate(p["rate_hz"])
        elif p["trigger"] == "lockstep":
            raise ValueError("trigger 'lockstep' needs hardware 'sim' (a robot's clock cannot "
                             "wait); use 'deadline' or 'joint_states'")

    def _loop_config(self) -> LoopConfig:
        p = self.params
        return LoopConfig(
            rate_hz=self.controller.config.rate_hz,
            pacing="free" if p["trigger"] == "lockstep" else "deadline",
            tolerance=p["deadline_tolerance"],
            max_consecutive_misses=p["max_consecutive_misses"],
            priority=p["rt_priority"],
            cpu_affinity=tuple(int(c) for c in p["cpu_affinity"] if c >= 0),
            lock_memory=p["lock_memory"],
        )

    def _start_loop(self) -> None:
        self.loop = ControlLoop(self._tick, self._loop_config(), on_overrun=self._on_overrun,
                                on_error=self._on_loop_error, name="controller-loop",
                                stats_capacity=self.params["stats_window"])
        self.loop.start()
        for line in self.loop.realtime.applied:
            self.get_logger().info(f"control loop: {line}")
        for line in self.loop.realtime.refused:
            self.get_logger().warning(f"control loop: not applied: {line}")

    def _stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.stop()
            self.loop = None

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
        self._stop_loop()
        if isinstance(self.hardware, TopicHardware):
            self.hardware.close()
        self.hardware = None
        for sub in getattr(self, "_input_subs", []):
            self.destroy_subscription(sub)
        for srv in getattr(self, "_trigger_services", []):
            self.destroy_service(srv)
        for pub in ("_pub_state", "_pub_text"):
            if getattr(self, pub, None) is not None:
                self.destroy_publisher(getattr(self, pub))
                setattr(self, pub, None)
        self._input_subs, self._trigger_services = [], []
        self.controller = None

    def destroy_node(self) -> None:
        self._stop_loop()
        super().destroy_node()

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        controller_changes = {k: v for k, v in changes.items() if k in _CONTROLLER_NAMES}
        if "rate_hz" in changes and self.params["hardware"] == "sim" and self.hardware:
            try:
                self.hardware.set_control_rate(changes["rate_hz"])
            except ValueError as error:
                return False, str(error)
        if controller_changes and self.controller is not None:
            converted = {
                k: tuple(v) if isinstance(v, list | tuple) else v
                for k, v in controller_changes.items()
            }
            with self._lock:
                result = self.controller.update_config(**converted)
            if not result.accepted:
                return False, result.reason
        self.params.update(changes)
        loop_fields = {"rate_hz", "deadline_tolerance", "max_consecutive_misses"}
        if self.loop is not None and loop_fields & set(changes):
            # The loop restarts with the new period/limits between two ticks.
            self._stop_loop()
            self.stamp_periods = PeriodStats(self.controller.config.period,
                                             self.params["stats_window"],
                                             self.params["deadline_tolerance"])
            self._start_loop()
        return True, ""

    # ------------------------------------------------------------------ inputs
    def _on_targets(self, msg: JointTargets) -> None:
        if self.controller is None or self.hardware is None:
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
        now = self.hardware.now()
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
    def _tick(self) -> None:
        """One control period: read → control law → write (→ the sim steps)."""
        controller, hardware = self.controller, self.hardware
        if controller is None or hardware is None:
            return
        start = time.perf_counter()
        sample = self._sample
        hardware.read(sample)
        now = hardware.now()
        command = None
        if sample.sequence > 0 and now > 0.0:
            with self._lock:
                command = controller.update(now, sample.position, sample.velocity, sample.stamp)
            if command.valid:
                hardware.write(command.values, command.interface)
                self._last_command[:] = command.values
        hardware.cycle()
        if command is None:
            return
        if self.params["trigger"] == "joint_states":
            self.stamp_periods.record_time(sample.stamp)
        if command.mode is not self._last_mode or command.reason != self._last_reason:
            self._mode_changed = command.mode is not self._last_mode
            if self._mode_changed:
                self._mode_since = now
            self._last_mode, self._last_reason = command.mode, command.reason
            self._announce(now)
        if self._latency_pending and command.mode is Mode.TRACKING:
            self._latency_pending = False
            self._last_e2e = now - self._target_camera_stamp
            self.latency.record("camera_to_command", self._last_e2e)
            self.latency.record("policy_to_command", now - self._target_policy_stamp)
        if now - self._last_state_pub >= self._state_interval():
            self._announce(now)
        self.latency.record("tick_compute", time.perf_counter() - start)

    def _state_interval(self) -> float:
        """Spacing of controller/state messages, s (half a control period early still counts)."""
        return 1.0 / self.params["state_rate_hz"] - 0.5 * self.controller.config.period

    def _announce(self, now: float) -> None:
        self._last_state_pub = now
        self._state_time = now
        self._guard.trigger()

    def _on_overrun(self, misses: int) -> None:
        with self._lock:
            if self.controller is not None:
                self.controller.hold(f"{misses} control deadlines missed in a row")
        self._overrun = True
        self._guard.trigger()

    def _on_loop_error(self, error: BaseException) -> None:
        self._loop_error = error
        self._guard.trigger()

    def _publish_announced(self) -> None:
        """On the executor: controller/state, the RViz text, /diagnostics, mode-change logs."""
        controller = self.controller
        if controller is None:
            return
        if self._loop_error is not None:
            self.get_logger().fatal(f"control loop stopped: {self._loop_error!r}")
            self._loop_error = None
        if self._overrun:
            self._overrun = False
            self.get_logger().error(
                f"{self.params['max_consecutive_misses']} consecutive control deadlines "
                "missed: holding (the machine cannot keep the control rate)"
            )
        mode_changed, self._mode_changed = self._mode_changed, False
        with self._lock:
            status = controller.status()
            mode = controller.mode
            reason = controller.reason
            q_ref = controller.reference[0].tolist()
        if mode_changed:
            text = f"{mode.value}" + (f": {reason}" if reason else "")
            if mode in (Mode.HOLD, Mode.ESTOP):
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)
        self._publish_state(getattr(self, "_state_time", 0.0), mode, reason, q_ref, status,
                            mode_changed)

    def _timing(self) -> dict[str, Any]:
        """Loop figures for diagnostics and controller/state."""
        if self.loop is not None:
            summary = self.loop.period_stats.summary()
            counters = self.loop.counters
            values = {
                **summary.as_dict(),
                "trigger": self.params["trigger"],
                "loop_misses": counters.misses,
                "loop_consecutive_misses": counters.consecutive_misses,
                "loop_overruns": counters.overruns,
                "loop_skipped_periods": counters.skipped_periods,
                "loop_gc_collections": counters.gc_collections,
                "loop_cpu_fraction": counters.cpu_fraction,
                "rt_applied": "; ".join(self.loop.realtime.applied) or "none",
                "rt_refused": "; ".join(self.loop.realtime.refused) or "none",
            }
            if self.params["trigger"] == "lockstep":
                # Sim-time periods are exact in lockstep: no deadline can be missed.
                values["loop_misses"] = 0
                values["wall_rate_hz"] = summary.rate_hz
            return values
        summary = self.stamp_periods.summary()
        return {**summary.as_dict(), "trigger": self.params["trigger"],
                "loop_misses": summary.total_deadline_misses}

    def _publish_state(self, now: float, mode: Mode, reason: str, q_ref: list[float],
                       status: dict[str, Any], mode_changed: bool) -> None:
        """controller/state and (rate-limited, at once on a mode change) /diagnostics."""
        if self._pub_state is None:
            return
        timing = self._timing()
        jitter_p50 = float(timing.get("jitter_p50_s", 0.0))
        jitter_p99 = float(timing.get("jitter_p99_s", 0.0))
        msg = ControllerState(
            mode=_MODE_CODES[mode],
            reason=reason,
            mode_since=seconds_to_time(self._mode_since),
            name=self._joint_names,
            reference_position=q_ref,
            measured_position=self._sample.position.tolist(),
            command=self._last_command.tolist(),
            command_interface=self.controller.config.command_interface,
            target_age=max(0.0, now - (self._target_camera_stamp or now)),
            end_to_end_latency=self._last_e2e,
            period_jitter_p50=jitter_p50,
            period_jitter_p99=jitter_p99,
            deadline_misses=int(timing["loop_misses"]),
            rejected_targets=status["targets_refused"],
        )
        msg.header.stamp = seconds_to_time(max(now, 0.0))
        msg.header.frame_id = "panda_link0"
        self._pub_state.publish(msg)
        level = "ok" if mode is Mode.TRACKING else "warn"
        overrunning = self.loop is not None and (
            self.loop.counters.consecutive_misses >= self.params["max_consecutive_misses"])
        if mode is Mode.ESTOP or overrunning:
            level = "error"
        message = f"{mode.value}" + (f": {reason}" if reason else "")
        published = self._diagnostics.report(
            level,
            message,
            {
                **status,
                "nominal_rate_hz": self.controller.config.rate_hz,
                "hardware": self.params["hardware"],
                **timing,
                **self.latency.as_dict(),
            },
            force=mode_changed,
        )
        if published:
            self._publish_status_text(now, message, timing)

    def _publish_status_text(self, now: float, message: str, timing: Mapping[str, Any]) -> None:
        """The diagnostics summary as a text marker above the robot, for RViz."""
        e2e = self.latency.summary("camera_to_command")
        marker = Marker(ns="controller", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        marker.header.stamp = seconds_to_time(max(now, 0.0))
        marker.header.frame_id = "panda_link0"
        marker.pose.position.z = 1.1
        marker.pose.orientation.w = 1.0
        marker.scale.z = 0.05
        marker.color.r = marker.color.g = marker.color.b = marker.color.a = 1.0
        marker.text = (
            f"{message}\n{float(timing.get('rate_hz', 0.0)):.0f} Hz, jitter p99 "
            f"{float(timing.get('jitter_p99_s', 0.0)) * 1e3:.2f} ms, "
            f"misses {timing['loop_misses']}\n"
            f"camera->command p50 {e2e.p50 * 1e3:.0f} ms, p99 {e2e.p99 * 1e3:.0f} ms"
        )
        self._pub_text.publish(marker)


def main(args: list[str] | None = None) -> None:
    # One executor thread for the I/O; the loop has a thread of its own.
    run_node(ControllerNode, args, threads=1)


if __name__ == "__main__":
    main()
