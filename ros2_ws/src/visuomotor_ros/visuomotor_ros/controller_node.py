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

rclpy only carries the I/O around the loop: services and parameters arrive on
the executor; the policy's targets are taken by the tick itself, the newest
waiting at its start (:class:`visuomotor_ros.node_common.LatestMessageReader`,
a subscription no executor spins), and in sim lockstep the loop's thread waits
for them inside the tick (``SimHardware.set_answer_source``), so the physics
goes on only once the controller holds the answer to the frame, and takes an
answer no earlier than ``lockstep_latency`` after its frame
(``SimHardware.answer_held``);
``controller/state``, the RViz text and
``/diagnostics`` are built by an output thread when the loop announces them
(:class:`visuomotor_ros.node_common.OutputThread`: no executor wake-up, whose
wait-set rebuild would hold the GIL the loop needs), so the only DDS work inside
a tick is taking the targets and, with the topics backend, the joint state and the
command. Commands go out only while the node is active.

Safety (``docs/safety.md``):

* The e-stop latch outlives the controller object: it is kept per rclpy context
  and fully qualified node name (:class:`EstopLatches`), so deactivate → cleanup
  → configure → activate, or a node restarted under the same name in the same
  process, comes back in ESTOP until ``controller/reset_estop``. The e-stop
  services exist for the node's whole life, in every lifecycle state; a reset
  with nothing latched answers ``success: false``.
* Cleanup destroys every entity configure created (publishers, the topics
  backend's command publisher and joint-state subscription, subscriptions,
  services, timers, the output thread), so a reconfigure never doubles one.
* The watchdogs run on the node's clock and on the wall clock (the
  controller's ``wall_clock``), so a frozen ``/clock`` cannot keep a target or a
  joint state alive. With the topics backend a steady-clock backstop timer also
  runs a tick when none ran for ``state_timeout`` (joint states stopped under
  the ``joint_states`` trigger, or a stalled loop): that tick trusts no
  measurement, so the controller holds with a law that needs no feedback.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.client import Client
from rclpy.clock import Clock, ClockType
from rclpy.context import Context
from rclpy.guard_condition import GuardCondition
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker

from visuomotor_core.controller import JointController, Mode
from visuomotor_core.controller_config import (
    ControllerConfig,
    check_gains,
    config_from_parameters,
    parameter_schema,
)
from visuomotor_core.hardware import Hardware, JointSample
from visuomotor_core.params import ParamSpec
from visuomotor_core.robot_description import DEFAULT_ROBOT
from visuomotor_core.robot_model import RobotModel
from visuomotor_core.rt_loop import ControlLoop, LoopConfig, LoopLock
from visuomotor_core.timing import LatencyStats, PeriodStats
from visuomotor_interfaces.msg import ControllerState, JointTargets
from visuomotor_ros import graph
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    LATEST_QOS,
    DiagnosticsReporter,
    JointOrder,
    LatestMessageReader,
    OutputThread,
    ThrottledWarnings,
    declare_schema,
    on_set_validated,
    run_node,
    seconds_to_time,
    time_to_seconds,
)
from visuomotor_ros.topic_hardware import TopicHardware

HARDWARES = ("topics", "sim")
#: Period jitter percentiles in controller/state are refreshed this often (s of node time).
TIMING_REFRESH_S = 0.2
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
    ParamSpec("urdf_path", str, "", "robot URDF; empty: the robot description's",
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
    ParamSpec("io_priority", int, 0, "SCHED_FIFO priority of the process's other threads "
              "(executor, output threads, middleware) while the loop runs, below rt_priority "
              "(0: normal): they share the GIL with the loop, and one preempted while "
              "holding it stalls the loop", "", 0, 98, read_only=True),
    ParamSpec("gil_lead", float, 3e-4, "how long before each deadline the loop thread wakes "
              "to take the GIL, then sleeps to the deadline holding it (0: wakes at the "
              "deadline and waits there for the thread holding the GIL); at most half a period is "
              "used", "s", 0.0, 0.1, read_only=True),
    ParamSpec("cpu_affinity", int, [-1], "CPUs the loop thread may run on ([-1]: any)", "",
              -1, 1023, read_only=True),
    ParamSpec("lock_memory", bool, False, "mlockall the process (no page faults in the loop)",
              "", read_only=True),
)
#: The robot parameter, declared first: the other parameters' defaults are its robot's.
ROBOT_SPEC = ParamSpec("robot", str, DEFAULT_ROBOT,
                       "the robot (its description urdf/<robot>.yaml in visuomotor_description "
                       "names the joints, frames, URDF and the default gains and limits)",
                       read_only=True)


def controller_schema(robot: str = DEFAULT_ROBOT) -> tuple[ParamSpec, ...]:
    """The controller's parameters with ``robot``'s joint count, gains and limits as defaults
    (ValueError for a robot without a description)."""
    return tuple(parameter_schema(ControllerConfig.for_robot(graph.robot(robot))))


CONTROLLER_SCHEMA = controller_schema()
SCHEMA = (ROBOT_SPEC, *CONTROLLER_SCHEMA, *NODE_SCHEMA)
_CONTROLLER_NAMES = frozenset(spec.name for spec in CONTROLLER_SCHEMA)
#: Reason of the hold while the loop misses max_consecutive_misses deadlines in a row.
OVERRUN_REASON = "control deadlines missed in a row: holding until the loop keeps time"
#: Reason given to a tick run by the backstop timer (no tick for state_timeout).
BACKSTOP_FAULT = "no control tick for more than state_timeout (wall clock): backstop hold"


def _never() -> bool:
    return False


class EstopLatches:
    """Latched e-stops, per rclpy context and fully qualified node name.

    A controller node keeps its latch here, not in the :class:`JointController`
    that cleanup destroys: the latch lasts as long as the context (the process's
    ROS session), across lifecycle transitions and node restarts under the same
    name. A new context (a new process, or a test's fresh context) starts with none.
    """

    _by_context: ClassVar[weakref.WeakKeyDictionary[Context, dict[str, str]]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get(cls, context: Context, name: str) -> str | None:
        """The latch's reason, or None when not latched."""
        with cls._lock:
            return cls._by_context.get(context, {}).get(name)

    @classmethod
    def latch(cls, context: Context, name: str, reason: str) -> None:
        with cls._lock:
            cls._by_context.setdefault(context, {})[name] = reason

    @classmethod
    def release(cls, context: Context, name: str) -> bool:
        """Release the latch; True when one was latched."""
        with cls._lock:
            return cls._by_context.get(context, {}).pop(name, None) is not None


@dataclass
class _TickSnapshot:
    """What controller/state reports, copied in the loop at the tick that announced it."""

    reference: np.ndarray
    measured: np.ndarray
    command: np.ndarray
    time: float = 0.0
    mode: Mode | None = None
    reason: str = ""
    mode_since: float = 0.0

    @classmethod
    def zeros(cls, n: int) -> _TickSnapshot:
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))


class ControllerNode(LifecycleNode):
    """Lifecycle node running :class:`JointController` against a hardware backend.

    Args:
        hardware: the in-process hardware for ``hardware: sim`` (the sim node's
            :class:`~visuomotor_sim.hardware.SimHardware`); None for ``topics``.
        wall_clock: the monotonic clock of the watchdogs' wall-clock backstop, s.
    """

    def __init__(
        self,
        hardware: Hardware | None = None,
        wall_clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__("controller_node", **kwargs)
        robot = declare_schema(self, (ROBOT_SPEC,))["robot"]
        self._robot = graph.robot(robot)
        schema = (*controller_schema(robot), *NODE_SCHEMA)
        self.params = {"robot": robot, **declare_schema(self, schema)}
        on_set_validated(self, (ROBOT_SPEC, *schema), self._apply_params)
        self.controller: JointController | None = None
        self._sim_hardware = hardware
        self._wall = wall_clock
        self.hardware: Hardware | None = None
        self.loop: ControlLoop | None = None
        self._outputs: OutputThread | None = None
        # Locks the loop's tick takes: LoopLock, so that the tick never waits for the GIL
        # with its long switch interval behind a thread that held one.
        self._lock = LoopLock()
        self._tick_lock = LoopLock()
        self._last_tick_wall = -math.inf
        self._owned: list[Any] = []
        self._backstop_timer = None
        self._robot_model: RobotModel | None = None  # kept across cleanup: checks live changes
        #: Valid commands written to the hardware since start-up.
        self.commands_written = 0
        #: Ticks run by the backstop timer.
        self.backstop_ticks = 0
        #: Jumps of the arm's state the hardware reported (sim episode resets): each one
        #: restarts the controller from the measured state (JointSample.epoch).
        self.hardware_resets = 0
        self._hardware_epoch = 0
        self._joint_names = list(self._robot.arm_joints)
        self._sample = JointSample.zeros(len(self._joint_names))
        self._target_order = JointOrder(self._joint_names)
        self._target_camera_stamp: float | None = None
        self._target_policy_stamp = 0.0
        self._targets: LatestMessageReader | None = None
        #: True while the hardware holds the policy's answer back (sim lockstep).
        self._answer_held: Callable[[], bool] = _never
        #: Stamp (s) of the newest targets received, accepted or not (lockstep answers).
        self._received_target_stamp = -math.inf
        #: Hardware-clock time (s) at which the latest accepted target arrived.
        self.last_target_arrival = -np.inf
        self._latency_pending = False
        self._last_mode: Mode | None = None
        self._last_reason = ""
        self._mode_since = 0.0
        self._last_state_pub = -np.inf
        self._last_command = np.zeros(len(self._joint_names))
        self._snapshot = _TickSnapshot.zeros(len(self._joint_names))
        self._snapshot_lock = LoopLock()
        self._announced = threading.Event()
        self._mode_changed = False
        self._overrun = False
        self._loop_error: BaseException | None = None
        self._warnings = ThrottledWarnings(self.get_logger())
        self._latch_name = self.get_fully_qualified_name()
        # The e-stop is the node's, not a configuration's: served in every state.
        self._safety_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, graph.CONTROLLER_ESTOP, self._on_estop,
                            callback_group=self._safety_group)
        self.create_service(Trigger, graph.CONTROLLER_RESET_ESTOP, self._on_reset_estop,
                            callback_group=self._safety_group)
        latched = EstopLatches.get(self.context, self._latch_name)
        if latched is not None:
            self.get_logger().warning(
                f"E-STOP still latched ({latched}): holding until controller/reset_estop")
        if self.params["autostart"]:
            self.trigger_configure()
            self.trigger_activate()

    @property
    def estop_latched(self) -> bool:
        """True while this node's e-stop is latched (in any lifecycle state)."""
        return EstopLatches.get(self.context, self._latch_name) is not None

    @property
    def last_command(self) -> np.ndarray:
        """A copy of the last command written to the hardware."""
        return self._last_command.copy()

    # ------------------------------------------------------------------ lifecycle
    def _entities(self) -> list[Any]:
        return [*self.publishers, *self.subscriptions, *self.services, *self.clients,
                *self.timers, *self.guards]

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = self.params
        try:
            urdf = p["urdf_path"] or str(self._robot.urdf)
            model = RobotModel.from_urdf_file(urdf, self._joint_names)
            config = config_from_parameters(
                {k: v for k, v in p.items() if k in _CONTROLLER_NAMES}
            )
            # In lockstep the sim's physics advances only when the loop ticks: a paused sim
            # clock is a paused robot, and the lockstep wait for the policy's answer is
            # wall time that nothing moves in. The wall-clock backstop guards every clock
            # that runs on its own (the robot's, a wall-paced sim's, /clock).
            wall = None if p["trigger"] == "lockstep" else self._wall
            controller = JointController(config, model, wall_clock=wall)
            self._check_topology(p)
            self._loop_config(config.rate_hz)  # ValueError: e.g. io_priority >= rt_priority
        except ValueError as error:
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        latched = EstopLatches.get(self.context, self._latch_name)
        if latched is not None:
            controller.estop(latched)
        before = set(map(id, self._entities()))
        self._robot_model = model
        self._sample = JointSample.zeros(len(self._joint_names))
        self.controller = controller
        self.latency = LatencyStats(
            ("camera_to_command", "policy_to_command", "tick_compute"), capacity=2000
        )
        self.stamp_periods = PeriodStats(config.period, p["stats_window"], p["deadline_tolerance"])
        self._last_e2e = 0.0
        self._timing_cache: dict[str, Any] | None = None
        self._timing_time = 0.0
        self._io_group = MutuallyExclusiveCallbackGroup()
        self._pub_state = self.create_publisher(
            ControllerState, graph.CONTROLLER_STATE, DEFAULT_QOS
        )
        self._pub_text = self.create_publisher(Marker, graph.CONTROLLER_STATUS_TEXT, DEFAULT_QOS)
        self._diagnostics = DiagnosticsReporter(self, "actuator controller")
        self._outputs = OutputThread(self, "controller-outputs",
                                     lambda _due: self._publish_announced())
        # Taken by the tick (see the module docstring); a node of its own, destroyed
        # by _teardown.
        self._targets = LatestMessageReader(self, JointTargets, graph.POLICY_TARGETS,
                                            LATEST_QOS, self._on_targets, "targets")
        if p["hardware"] == "sim":
            self.hardware = self._sim_hardware
            self.hardware.set_control_rate(config.rate_hz)
            self.hardware.lockstep = p["trigger"] == "lockstep"
            self.hardware.set_answer_source(self._answers)
            self._answer_held = self.hardware.answer_held
        else:
            self._answer_held = _never
            on_sample = self._tick if p["trigger"] == "joint_states" else None
            self.hardware = TopicHardware(self, self._joint_names, p["command_topic"],
                                          on_sample=on_sample, callback_group=self._io_group)
        # Everything created above is this configuration's: cleanup destroys it.
        self._owned = [e for e in self._entities() if id(e) not in before]
        self._start_backstop()
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
            if tuple(self._sim_hardware.joint_names) != tuple(self._joint_names):
                raise ValueError(f"the sim's arm joints {list(self._sim_hardware.joint_names)} "
                                 f"are not robot '{p['robot']}'s {self._joint_names}")
            if p["trigger"] == "joint_states":
                raise ValueError("trigger 'joint_states' needs hardware 'topics'; the sim is "
                                 "stepped by the loop ('lockstep' or 'deadline')")
            self._sim_hardware.set_control_rate(p["rate_hz"])
        elif p["trigger"] == "lockstep":
            raise ValueError("trigger 'lockstep' needs hardware 'sim' (a robot's clock cannot "
                             "wait); use 'deadline' or 'joint_states'")

    def _loop_config(self, rate_hz: float | None = None) -> LoopConfig:
        p = self.params
        return LoopConfig(
            rate_hz=self.controller.config.rate_hz if rate_hz is None else rate_hz,
            pacing="free" if p["trigger"] == "lockstep" else "deadline",
            tolerance=p["deadline_tolerance"],
            max_consecutive_misses=p["max_consecutive_misses"],
            priority=p["rt_priority"],
            cpu_affinity=tuple(int(c) for c in p["cpu_affinity"] if c >= 0),
            lock_memory=p["lock_memory"],
            io_priority=p["io_priority"],
            gil_lead=p["gil_lead"],
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

    def _start_backstop(self) -> None:
        """(Re)start the steady-clock timer that ticks when the loop does not (topics only)."""
        self._stop_backstop()
        if self.params["hardware"] != "topics":
            return  # the simulator holds by itself without commands (its command_timeout)
        self._backstop_timer = self.create_timer(
            0.5 * self.params["state_timeout"], self._on_backstop,
            callback_group=self._safety_group, clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

    def _stop_backstop(self) -> None:
        if self._backstop_timer is not None:
            self.destroy_timer(self._backstop_timer)
            self._backstop_timer = None

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
        """Stop the loop and the backstop; destroy every entity configure created."""
        self._stop_loop()
        self._stop_backstop()
        if self._outputs is not None:
            self._outputs.stop()
            self._outputs = None
        with self._tick_lock:
            if isinstance(self.hardware, TopicHardware):
                self.hardware.close()
            elif self.hardware is not None:
                self.hardware.set_answer_source(None)
            self.hardware = None
            if self._targets is not None:
                self._targets.destroy()
                self._targets = None
            with self._lock:
                self.controller = None
        destroy = (
            (Publisher, self.destroy_publisher),
            (Subscription, self.destroy_subscription),
            (Service, self.destroy_service),
            (Client, self.destroy_client),
            (Timer, self.destroy_timer),
            (GuardCondition, self.destroy_guard_condition),
        )
        for entity in self._owned:
            for kind, destroy_one in destroy:
                if isinstance(entity, kind):
                    destroy_one(entity)
                    break
        self._owned = []
        self._pub_state = self._pub_text = None

    def destroy_node(self) -> None:
        # As cleanup: the topics backend's joint-state reader is a node of its own, which
        # would outlive this one (a /joint_states subscriber left in the graph).
        self._teardown()
        super().destroy_node()

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        controller_changes = {
            k: tuple(v) if isinstance(v, list | tuple) else v
            for k, v in changes.items() if k in _CONTROLLER_NAMES
        }
        sim_rate = self.params["hardware"] == "sim" and self.hardware and "rate_hz" in changes
        if sim_rate:
            try:
                self.hardware.set_control_rate(changes["rate_hz"])
            except ValueError as error:
                return False, str(error)
        if controller_changes:
            reason = self._change_controller(controller_changes)
            if reason:
                if sim_rate:
                    self.hardware.set_control_rate(self.params["rate_hz"])
                return False, reason
        self.params.update(changes)
        if "state_timeout" in changes and self._backstop_timer is not None:
            self._start_backstop()
        loop_fields = {"rate_hz", "deadline_tolerance", "max_consecutive_misses"}
        if self.loop is not None and loop_fields & set(changes):
            # The loop restarts with the new period/limits between two ticks.
            self._stop_loop()
            self.stamp_periods = PeriodStats(self.controller.config.period,
                                             self.params["stats_window"],
                                             self.params["deadline_tolerance"])
            self._start_loop()
        return True, ""

    def _change_controller(self, changes: Mapping[str, Any]) -> str:
        """Apply controller settings live; '' when accepted, else why not. Unconfigured,
        the merged settings are checked as a configuration (and against the robot model
        of the last configuration, if any; configure checks them again)."""
        with self._lock:
            controller = self.controller
            if controller is not None:
                return controller.update_config(**changes).reason
        merged = {k: v for k, v in self.params.items() if k in _CONTROLLER_NAMES}
        merged.update(changes)
        try:
            config = config_from_parameters(merged)
        except ValueError as error:
            return str(error)
        return check_gains(config, self._robot_model) if self._robot_model else ""

    # ------------------------------------------------------------------ inputs
    def _answers(self, timeout: float) -> float:
        """The sim's lockstep answer source (``SimHardware.set_answer_source``; in the
        loop's thread, inside the tick): the targets waiting, else those arriving
        within ``timeout`` s, go to the controller; returns the newest stamp received."""
        reader = self._targets
        if reader is not None and not reader.take_latest() and timeout > 0.0 \
                and reader.wait(timeout):
            reader.take_latest()
        return self._received_target_stamp

    def _on_targets(self, msg: JointTargets) -> None:
        stamp = time_to_seconds(msg.header.stamp)
        self._received_target_stamp = max(self._received_target_stamp, stamp)
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
        reason = "e-stop service"
        EstopLatches.latch(self.context, self._latch_name, reason)
        with self._lock:
            if self.controller is not None:
                self.controller.estop(reason)
        self.get_logger().warning("E-STOP latched: holding until controller/reset_estop")
        response.success, response.message = True, "e-stop latched"
        return response

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response):
        released = EstopLatches.release(self.context, self._latch_name)
        with self._lock:
            if self.controller is not None:
                released = self.controller.reset_estop() or released
        if released:
            self.get_logger().info("e-stop released: holding until a fresh target")
            response.success, response.message = True, "e-stop released"
        else:
            response.success = False
            response.message = "nothing to release: the e-stop is not latched"
        return response

    # ------------------------------------------------------------------ loop
    def _tick(self) -> None:
        """One control period: read → control law → write (→ the sim steps)."""
        with self._tick_lock:
            self._tick_locked("")

    def _on_backstop(self) -> None:
        """Steady-clock timer (topics backend): tick when no tick ran for state_timeout.

        The tick trusts no measurement (``BACKSTOP_FAULT``): the controller holds with
        a law that needs no feedback, whatever rate the backstop runs at.
        """
        if self._wall() - self._last_tick_wall <= self.params["state_timeout"]:
            return
        if not self._tick_lock.acquire(blocking=False):
            return  # a tick is running (stuck in the hardware): nothing else can write
        try:
            if self.controller is not None:
                self.backstop_ticks += 1
                self._tick_locked(BACKSTOP_FAULT)
        finally:
            self._tick_lock.release()

    def _tick_locked(self, fault: str) -> None:
        controller, hardware = self.controller, self.hardware
        if controller is None or hardware is None:
            return
        self._last_tick_wall = self._wall()
        start = time.perf_counter()
        if self._targets is not None and not self._answer_held():
            self._targets.take_latest()  # the newest targets, before this tick's update
        sample = self._sample
        hardware.read(sample)
        now = hardware.now()
        command = None
        loop = self.loop
        overrunning = loop is not None and (
            loop.counters.consecutive_misses >= self.params["max_consecutive_misses"])
        if sample.sequence > 0 and now > 0.0:
            with self._lock:
                if sample.epoch != self._hardware_epoch:  # the arm was moved (sim reset)
                    self._hardware_epoch = sample.epoch
                    controller.reset(not_before=sample.stamp)
                    self.hardware_resets += 1
                if overrunning:  # no tracking while the loop cannot keep its deadlines
                    controller.hold(OVERRUN_REASON)
                command = controller.update(now, sample.position, sample.velocity, sample.stamp,
                                            fault)
            if command.valid:
                hardware.write(command.values, command.interface)
                self._last_command[:] = command.values
                self.commands_written += 1
        hardware.cycle()
        if command is None:
            return
        if self.params["trigger"] == "joint_states" and not fault:
            self.stamp_periods.record_time(sample.stamp)
        if command.mode is not self._last_mode or command.reason != self._last_reason:
            self._mode_changed = command.mode is not self._last_mode
            if self._mode_changed:
                self._mode_since = now
            self._last_mode, self._last_reason = command.mode, command.reason
            self._announce(now, command)
        if self._latency_pending and command.mode is Mode.TRACKING:
            self._latency_pending = False
            self._last_e2e = now - self._target_camera_stamp
            self.latency.record("camera_to_command", self._last_e2e)
            self.latency.record("policy_to_command", now - self._target_policy_stamp)
        if now - self._last_state_pub >= self._state_interval():
            self._announce(now, command)
        self.latency.record("tick_compute", time.perf_counter() - start)

    def _state_interval(self) -> float:
        """Spacing of controller/state messages, s (half a control period early still counts)."""
        return 1.0 / self.params["state_rate_hz"] - 0.5 * self.controller.config.period

    def _announce(self, now: float, command: Any) -> None:
        """In the loop: snapshot this tick for controller/state and wake the output thread,
        which builds the messages (so a state message describes one tick, whatever the
        thread's delay)."""
        self._last_state_pub = now
        snapshot = self._snapshot
        with self._lock:
            q_ref = self.controller.reference[0]
        with self._snapshot_lock:
            snapshot.time = now
            snapshot.mode, snapshot.reason = command.mode, command.reason
            snapshot.mode_since = self._mode_since
            snapshot.reference[:] = q_ref
            snapshot.measured[:] = self._sample.position
            snapshot.command[:] = self._last_command
        self._outputs.announce()

    def _on_overrun(self, misses: int) -> None:
        with self._lock:
            if self.controller is not None:
                self.controller.hold(OVERRUN_REASON)
        self._overrun = True
        self._outputs.announce()

    def _on_loop_error(self, error: BaseException) -> None:
        with self._lock:
            if self.controller is not None:
                self.controller.hold(f"control loop stopped: {error!r}")
        self._loop_error = error
        self._outputs.announce()

    def _publish_announced(self) -> None:
        """On the output thread: controller/state, the RViz text, /diagnostics, mode-change logs."""
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
        with self._snapshot_lock:
            tick = self._snapshot
            mode, reason, state_time = tick.mode, tick.reason, tick.time
            if mode is None:
                return  # no tick yet
            q_ref = tick.reference.tolist()
            measured, command = tick.measured.tolist(), tick.command.tolist()
            mode_since = tick.mode_since
        if mode_changed:
            text = f"{mode.value}" + (f": {reason}" if reason else "")
            if mode in (Mode.HOLD, Mode.ESTOP):
                self.get_logger().warning(text)
            else:
                self.get_logger().info(text)
        self._publish_state(state_time, mode, reason, q_ref, measured, command, mode_since,
                            status, mode_changed)

    def _timing(self) -> dict[str, Any]:
        """Loop figures for diagnostics and controller/state."""
        if self.loop is not None:
            summary = self.loop.period_stats.summary()
            counters = self.loop.counters
            values = {
                **summary.as_dict(),
                "trigger": self.params["trigger"],
                "loop_ticks": counters.ticks,
                "loop_misses": self._loop_misses(),
                "loop_late_starts": counters.late_starts,
                "loop_long_ticks": counters.long_ticks,
                "loop_consecutive_misses": counters.consecutive_misses,
                "loop_overruns": counters.overruns,
                "loop_skipped_periods": counters.skipped_periods,
                "loop_gc_collections": counters.gc_collections,
                "loop_cpu_fraction": counters.cpu_fraction,
                "rt_applied": "; ".join(self.loop.realtime.applied) or "none",
                "rt_refused": "; ".join(self.loop.realtime.refused) or "none",
            }
            if self.params["trigger"] == "lockstep":
                values["wall_rate_hz"] = summary.rate_hz
            return values
        summary = self.stamp_periods.summary()
        return {**summary.as_dict(), "trigger": self.params["trigger"],
                "loop_misses": self._loop_misses()}

    def _loop_misses(self) -> int:
        """Deadline misses so far (0 in lockstep, where sim-time periods are exact)."""
        if self.loop is None:
            return int(self.stamp_periods.total_deadline_misses)
        return 0 if self.params["trigger"] == "lockstep" else int(self.loop.counters.misses)

    def _publish_state(self, now: float, mode: Mode, reason: str, q_ref: list[float],
                       measured: list[float], command: list[float], mode_since: float,
                       status: dict[str, Any], mode_changed: bool) -> None:
        """controller/state and (rate-limited, at once on a mode change) /diagnostics."""
        if self._pub_state is None:
            return
        # Percentiles over the period window cost more than the rest of a state message:
        # they are refreshed every TIMING_REFRESH_S and for each /diagnostics report.
        diagnostics_due = mode_changed or self._diagnostics.due()
        if diagnostics_due or self._timing_cache is None \
                or abs(now - self._timing_time) >= TIMING_REFRESH_S:
            self._timing_cache, self._timing_time = self._timing(), now
        timing = self._timing_cache
        jitter_p50 = float(timing.get("jitter_p50_s", 0.0))
        jitter_p99 = float(timing.get("jitter_p99_s", 0.0))
        msg = ControllerState(
            mode=_MODE_CODES[mode],
            reason=reason,
            mode_since=seconds_to_time(max(mode_since, 0.0)),
            name=self._joint_names,
            reference_position=q_ref,
            measured_position=measured,
            command=command,
            command_interface=self.controller.config.command_interface,
            target_age=max(0.0, now - (self._target_camera_stamp or now)),
            end_to_end_latency=self._last_e2e,
            period_jitter_p50=jitter_p50,
            period_jitter_p99=jitter_p99,
            deadline_misses=self._loop_misses(),
            rejected_targets=status["targets_refused"],
        )
        msg.header.stamp = seconds_to_time(max(now, 0.0))
        msg.header.frame_id = self._robot.base_frame
        self._pub_state.publish(msg)
        level = "ok" if mode is Mode.TRACKING else "warn"
        overrunning = self.loop is not None and (
            self.loop.counters.consecutive_misses >= self.params["max_consecutive_misses"])
        if mode is Mode.ESTOP or overrunning:
            level = "error"
        message = f"{mode.value}" + (f": {reason}" if reason else "")
        if not diagnostics_due:
            return
        published = self._diagnostics.report(
            level,
            message,
            {
                **status,
                "nominal_rate_hz": self.controller.config.rate_hz,
                "hardware": self.params["hardware"],
                "hardware_resets": self.hardware_resets,
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
        marker.header.frame_id = self._robot.base_frame
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
