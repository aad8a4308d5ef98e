"""Fault injection against the running graph, one OS process per node (``fault-injection``).

Each case starts a fresh graph from the multi-process bringup (the plan ``ros2 launch``
runs), injects one fault, watches the controller from another process and stops the
graph with SIGINT. Cases:

* ``sim/kill:<role>``, ``sim/stop:<role>`` — SIGKILL, or SIGSTOP then SIGCONT, the robot
  (sim + controller), encoder or policy process of the sim graph (lockstep, sim time);
  ``robot/kill:controller``, ``robot/stop:controller``, ``robot/stop:driver`` on the
  robot graph.
* ``sim/drop:<topic>``, ``sim/delay:<topic>`` — 30 % of the messages dropped, or every
  message delayed by 200 ms, on each topic between two nodes (``camera/image_raw``,
  ``joint_states``, ``encoder/features``, ``policy/joint_targets``);
  ``robot/drop:joint_states``, ``robot/delay:joint_states`` between the driver and the
  controller.
* ``sim/flood:policy/joint_targets``, ``robot/flood:policy/joint_targets`` (10 kHz of
  random in-range targets from a rogue publisher; the table gives the rate it reached),
  ``sim/flood:camera/image_raw`` (200 Hz of noise frames).
* ``sim/images:hostile`` — wrong encodings, zero and huge sizes, wrong steps, truncated
  and overlong data, mixed with the camera's frames.
* ``robot/joint_states:{empty,nan,out_of_range,stale}``, ``robot/targets:{empty,nan}`` —
  malformed or impossible samples among the driver's and the policy's.
* ``memory/encoder`` — the encoder alone, fed square frames of random sizes (48 to 960 px)
  at 30 Hz for ``--memory-minutes``; RSS from ``/proc/<pid>/status`` (issue 11 item 7:
  within 10 MB over 10 minutes).

Graphs. The sim graph runs in lockstep on sim time (``step_mode:=lockstep``), so times
measured on its stamps do not depend on the machine's load. The robot graph is the
controller on the topics backend with the position interface
(``command_interface:=position``, ``command_topic:=position_controller/commands``:
commands are positions, so range and rate can be checked on the wire), the encoder and
the policy, fed by a helper standing in for the robot's driver (joint states at 1 kHz from
a deadline loop) and the policy (20 Hz targets): it runs on the wall clock.

How a fault reaches the graph. Every helper is a process of this module (``--role
relay|rogue|driver``) started beside the graph. A relay or a rogue waits armed: SIGUSR1
starts its fault, SIGUSR2 ends it, and it prints ``fault-start <t>`` / ``fault-end <t>``
with ``t`` on the graph's clock (sim time on the sim graph), so a fault's time is the
graph's own. A *relay* sits between a producer and the consumer of one topic: the
consumer's input is remapped through the bringup plan's remappings to ``fault/<topic>``
(on the sim graph a ``-r <topic>:=fault/<topic>`` added to the consumer's process only; on
the robot graph the plan's ``joint_states_topic`` argument, which moves every consumer),
and the relay subscribes to ``<topic>`` and republishes on ``fault/<topic>``. Disarmed it
passes every message through; armed it drops each message with probability 0.3 (seeded) or
holds it until the graph's clock has advanced 200 ms past its arrival. The delay runs on
the graph's clock: in lockstep a wall-clock delay would be absorbed by the sim waiting for
the policy's answer. A *rogue* publishes on a graph topic next to the real publisher,
stamped with the graph's clock. Kill and stop are signals to the process's group.

Columns. *crashes*: processes that exited non-zero (the killed one excepted) or printed a
Traceback. *limit violations*: commands outside the robot's limits / commands checked. The
robot's limits are the URDF's intersected with controller.yaml's scales and position
margin, as the controller computes them. Checked: on the robot graph every
Float64MultiArray on the command topic (finite, 7 values, in the position range, and a
step between consecutive ones of at most the velocity limit times the difference of their
DDS source timestamps plus ``RATE_SLACK``; commands lost in transport are counted from the
publication sequence numbers), and on both graphs every ``controller/state``: its
``command`` within the effort, position or velocity limit of its interface, its reference
in the position range, and the reference's step between two states at most the velocity
limit times the difference of their stamps plus ``STATE_SKEW`` (sim graph; on the robot
graph the wire carries the reference). *time to hold*: graph time from the
fault to the ``mode_since`` of the first HOLD after it (0 when already holding); where the
case expects a hold, it must come within the timeout that covers the fault
(target_timeout for a lost target stream, state_timeout for a lost driver) plus one
/clock period and the modelled perception latency (sim) or ``RATE_SLACK`` (wall clock)
and two control periods, and the loop must not track again while the fault lasts. Where
the fault stops the controller's own process the time runs from SIGCONT and no hold is
required (the sim's clock and world froze with it; a robot's driver must catch a
frozen controller itself). *result*: ``ok``
or what failed; *outcome*: what the graph did (share of the fault spent tracking, holds
and their reasons, messages sent, refused or lost).

Usage: ``fault-injection [--quick] [--only 'sim/kill:*,robot/*'] [--list]``. The suite
runs in a private DDS domain (``--domain-id``, default 200 + pid % 30) with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: faults must never reach a real robot.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from visuomotor_core.timing import wait_until

#: Share of messages a drop relay discards, and the delay of a delay relay (s, graph clock).
DROP_FRACTION = 0.3
DELAY_S = 0.2
#: Rates of the rogue publishers, Hz.
FLOOD_TARGETS_HZ = 10_000.0
FLOOD_IMAGES_HZ = 200.0
HOSTILE_IMAGES_HZ = 50.0
HOSTILE_SAMPLES_HZ = 100.0
MIXED_IMAGES_HZ = 30.0
#: Joint-state rate of the robot graph's driver, Hz.
DRIVER_HZ = 1000.0
#: Slack on rate checks timed by DDS source timestamps (s): a message is published a
#: little after the control tick it carries.
RATE_SLACK = 0.01
#: Slack on the rate check between two controller/state messages (s): the node assembles
#: the message on its executor thread from the controller's newest reference, which can be
#: a few control ticks newer than the tick named by its stamp.
STATE_SKEW = 0.05
#: Numerical slack of the limit checks (rad, N·m, rad/s).
LIMIT_EPS = 1e-9
#: Memory case: side of the mixed frames (px; square like the sim camera's, since the
#: encoder refuses frames of another aspect ratio than its camera's) and the allowed RSS
#: growth (issue 11 item 7).
MIXED_SIDE_MIN, MIXED_SIDE_MAX = 48, 960
#: Size (width, height) of the noise the rogue's images are cut from, px.
NOISE_SIZE = (1280, 960)
MEMORY_BOUND_MB = 10.0
MEMORY_SAMPLE_S = 2.0
#: Wall-clock bounds on waiting (they only end a hung case).
START_TIMEOUT = 120.0
HELPER_READY_TIMEOUT = 60.0
#: The relayed name of a topic.
RELAY_PREFIX = "fault/"
ROBOT_COMMAND_TOPIC = "position_controller/commands"


# ====================================================================== cases
@dataclass(frozen=True)
class Case:
    """One fault.

    Attributes:
        name: ``<graph>/<fault>:<target>``.
        graph: ``sim``, ``robot`` or ``memory``.
        action: ``kill``, ``stop``, ``relay``, ``rogue`` or ``memory``.
        target: the process role (kill, stop), the topic (relay) or the rogue's kind.
        mode: relay mode, ``drop`` or ``delay``.
        expect_hold: ``target_timeout`` or ``state_timeout`` when the fault must bring the
            controller to HOLD within that parameter; "" when no hold is required.
        hold_from_end: time to hold counted from the end of the fault (the fault froze the
            controller's own process).
        expect_resume: TRACKING again after the fault ends.
        killed: the role whose exit the fault causes (not a crash).
    """

    name: str
    graph: str
    action: str
    target: str
    mode: str = ""
    expect_hold: str = ""
    hold_from_end: bool = False
    expect_resume: bool = False
    killed: str = ""


def _sim_topics() -> tuple[str, ...]:
    from visuomotor_ros import graph

    return (graph.CAMERA_IMAGE, graph.JOINT_STATES, graph.ENCODER_FEATURES, graph.POLICY_TARGETS)


def all_cases() -> list[Case]:
    """Every case, cheapest first within each group."""
    cases = []
    for role in ("policy", "encoder", "robot"):
        required = role == "robot"
        cases.append(Case(f"sim/kill:{role}", "sim", "kill", role, killed=role,
                          expect_hold="" if required else "target_timeout"))
    for role in ("policy", "encoder", "robot"):
        # The robot process holds the sim: sim time and the world freeze with it, so on
        # resumption nothing is stale on the graph's clock and no hold is required.
        frozen = role == "robot"
        cases.append(Case(f"sim/stop:{role}", "sim", "stop", role,
                          expect_hold="" if frozen else "target_timeout",
                          hold_from_end=frozen, expect_resume=True))
    for mode in ("drop", "delay"):
        for topic in _sim_topics():
            cases.append(Case(f"sim/{mode}:{topic}", "sim", "relay", topic, mode=mode,
                              expect_resume=True))
    cases += [
        Case("sim/flood:policy/joint_targets", "sim", "rogue", "targets-flood",
             expect_resume=True),
        Case("sim/flood:camera/image_raw", "sim", "rogue", "images-flood", expect_resume=True),
        Case("sim/images:hostile", "sim", "rogue", "images-hostile", expect_resume=True),
        Case("robot/flood:policy/joint_targets", "robot", "rogue", "targets-flood",
             expect_resume=True),
        Case("robot/kill:controller", "robot", "kill", "controller", killed="controller"),
        Case("robot/stop:controller", "robot", "stop", "controller", hold_from_end=True,
             expect_resume=True),
        Case("robot/stop:driver", "robot", "stop", "driver", expect_hold="state_timeout",
             expect_resume=True),
        Case("robot/drop:joint_states", "robot", "relay", "joint_states", mode="drop",
             expect_resume=True),
        Case("robot/delay:joint_states", "robot", "relay", "joint_states", mode="delay",
             expect_hold="state_timeout", expect_resume=True),
    ]
    for kind in ("empty", "nan", "out_of_range", "stale"):
        cases.append(Case(f"robot/joint_states:{kind}", "robot", "rogue",
                          f"joint-states-{kind.replace('_', '-')}", expect_resume=True))
    for kind in ("empty", "nan"):
        cases.append(Case(f"robot/targets:{kind}", "robot", "rogue", f"targets-{kind}",
                          expect_resume=True))
    cases.append(Case("memory/encoder", "memory", "memory", "images-mixed"))
    return cases


def select(patterns: Iterable[str] | str | None) -> list[Case]:
    """The cases matching any of ``patterns`` (shell patterns or exact names), in suite order.

    Raises:
        ValueError: a pattern matches no case.
    """
    cases = all_cases()
    if not patterns:
        return cases
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p.strip()]
    patterns = [p.strip() for p in patterns]
    unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(c.name, p) for c in cases)]
    if unknown:
        raise ValueError(f"no case matches {', '.join(unknown)}; cases: "
                         f"{', '.join(c.name for c in cases)}")
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


@dataclass(frozen=True)
class Options:
    """Durations of one run (wall-clock seconds) and where the logs go."""

    settle_s: float = 2.0
    fault_s: float = 8.0
    recover_s: float = 5.0
    memory_s: float = 600.0
    memory_warmup_s: float = 30.0
    log_dir: Path = Path("/tmp/visuomotor-fault-injection")

    @classmethod
    def quick(cls, **kwargs: Any) -> Options:
        values = {"settle_s": 1.0, "fault_s": 4.0, "recover_s": 3.0, "memory_s": 60.0,
                  "memory_warmup_s": 15.0}
        values.update(kwargs)
        return cls(**values)


@dataclass
class Result:
    """What one case found (see the module docstring for the columns)."""

    case: str
    crashes: list[str] = field(default_factory=list)
    #: The last lines each crashed process printed (a fault dump, an error), one per crash.
    crash_output: list[str] = field(default_factory=list)
    violations: int = 0
    checked: int = 0
    first_violation: str = ""
    time_to_hold: float | None = None
    hold_bound: float | None = None
    outcome: str = ""
    failures: list[str] = field(default_factory=list)
    #: Figures behind the outcome (``sent``, ``refused``, ``tracking_share``, ...).
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


# ====================================================================== limits
class LimitCheck:
    """The robot's limits (URDF ∩ controller configuration) and checks of commands on them."""

    def __init__(self, controller_params: dict[str, Any]) -> None:
        from visuomotor_core.limits import LimitOverrides, effective_limits
        from visuomotor_core.robot_description import load_robot
        from visuomotor_core.robot_model import RobotModel
        from visuomotor_ros import graph

        urdf = controller_params.get("urdf_path") or str(graph.urdf_path())
        model = RobotModel.from_urdf_file(urdf, load_robot().arm_joints)
        self.limits = effective_limits(model.limits, LimitOverrides(
            velocity_scale=float(controller_params.get("velocity_scale", 1.0)),
            effort_scale=float(controller_params.get("effort_scale", 1.0)),
            position_margin=float(controller_params.get("position_margin", 0.0)),
        ))
        self.n = self.limits.n
        self.checked = 0
        self.violations = 0
        self.first = ""

    def _fail(self, text: str) -> None:
        self.violations += 1
        if not self.first:
            self.first = text

    def command(self, values: np.ndarray, interface: str, where: str) -> None:
        """One command of ``interface`` (effort N·m, position rad, velocity rad/s)."""
        self.checked += 1
        lim = self.limits
        if values.shape != (self.n,) or not np.isfinite(values).all():
            self._fail(f"{where}: malformed command {values.tolist()}")
        elif interface == "effort":
            self._bound(np.abs(values) - lim.effort, f"{where}: effort beyond ±limit")
        elif interface == "velocity":
            self._bound(np.abs(values) - lim.velocity, f"{where}: velocity beyond ±limit")
        else:
            self.position(values, f"{where}: position command")

    def position(self, values: np.ndarray, where: str) -> None:
        if values.shape != (self.n,) or not np.isfinite(values).all():
            self._fail(f"{where}: malformed position {values.tolist()}")
            return
        lim = self.limits
        self._bound(np.maximum(lim.lower - values, values - lim.upper),
                    f"{where} {np.round(values, 4).tolist()} outside the position range")

    def step(self, before: np.ndarray, after: np.ndarray, dt: float, where: str) -> None:
        """Positions ``dt`` s apart move at most velocity limit · dt."""
        if before.shape != (self.n,) or after.shape != (self.n,):
            return
        excess = np.abs(after - before) - self.limits.velocity * max(dt, 0.0)
        self._bound(excess, f"{where}: step beyond the rate limit over {dt * 1e3:.1f} ms")

    def _bound(self, excess: np.ndarray, text: str) -> None:
        worst = int(np.argmax(excess))
        if excess[worst] > LIMIT_EPS:
            self._fail(f"{text} (joint {worst + 1} by {excess[worst]:.4g})")


# ====================================================================== helper processes
class Helper:
    """A helper process of this module (relay, rogue, driver): armed by SIGUSR1, disarmed
    by SIGUSR2, stopped by SIGINT; its output goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, case: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{_file_name(case)}.{name}.log"
        with open(self.log_path, "w") as log:
            self.popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def value(self, key: str) -> float | None:
        """The number after the first ``key`` line of the output, or None."""
        match = re.search(rf"^{re.escape(key)} (\S+)", self.text(), re.MULTILINE)
        return float(match.group(1)) if match else None

    def ready(self) -> bool:
        return "ready" in self.text().split()

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGINT)
            try:
                self.popen.wait(10.0)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def problem(self) -> str:
        """'' when it ended cleanly, else what went wrong."""
        code = self.popen.poll()
        if "Traceback" in self.text():
            return f"helper {self.name} printed a Traceback (see {self.log_path})"
        if code not in (0, None, -signal.SIGINT):
            return f"helper {self.name} exited with {code} (see {self.log_path})"
        return ""


def _file_name(case: str) -> str:
    return case.replace("/", "_").replace(":", "-")


def _module(*args: str) -> list[str]:
    return [sys.executable, "-m", "visuomotor_bringup.fault_injection", *args]


# ====================================================================== observer
@dataclass
class StateSample:
    stamp: float
    mode: int
    reason: str
    mode_since: float
    interface: str
    command: np.ndarray
    reference: np.ndarray
    rejected: int
    published: float


class Observer:
    """A node in this process (its own context and executor thread) recording what the graph
    does: controller/state, commands on the wire, /clock, /diagnostics, policy targets."""

    def __init__(self, command_topic: str | None) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions

        self.lock = threading.Lock()
        self.states: list[StateSample] = []
        #: (DDS source timestamp s, publication sequence number, values) per command.
        self.commands: list[tuple[float, int, np.ndarray]] = []
        self.clock = -math.inf
        self.diagnostics: dict[str, dict[str, str]] = {}
        #: Header stamp (s, the publisher's clock) of each status's newest report.
        self.diagnostics_stamps: dict[str, float] = {}
        self.targets = 0
        #: Newest policy-target stamp received (s, the camera frame it answers).
        self.target_stamp = -math.inf
        self._context = Context()
        # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt here, so a case stops
        # its graph and helpers on the way out.
        rclpy.init(context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("fault_observer", context=self._context)
        self._subscribe(command_topic)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name="observer", daemon=True)
        self._thread.start()

    def _subscribe(self, command_topic: str | None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from std_msgs.msg import Float64MultiArray

        from visuomotor_interfaces.msg import ControllerState, JointTargets
        from visuomotor_ros import graph
        from visuomotor_ros.node_common import SENSOR_QOS

        node = self.node
        node.create_subscription(ControllerState, graph.CONTROLLER_STATE, self._on_state, 500)
        node.create_subscription(Clock, graph.CLOCK, self._on_clock, SENSOR_QOS)
        node.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diagnostics, 50)
        node.create_subscription(JointTargets, graph.POLICY_TARGETS, self._on_targets, 50)
        if command_topic:
            qos = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
            node.create_subscription(Float64MultiArray, command_topic, self._on_command, qos)

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001 - the context shut down under the executor
            pass

    def _on_state(self, msg: Any, info: dict[str, Any]) -> None:
        from visuomotor_ros.node_common import time_to_seconds

        sample = StateSample(time_to_seconds(msg.header.stamp), int(msg.mode), msg.reason,
                             time_to_seconds(msg.mode_since), msg.command_interface,
                             np.array(msg.command, dtype=float),
                             np.array(msg.reference_position, dtype=float),
                             int(msg.rejected_targets), info["source_timestamp"] * 1e-9)
        with self.lock:
            self.states.append(sample)

    def _on_clock(self, msg: Any) -> None:
        from visuomotor_ros.node_common import time_to_seconds

        self.clock = max(self.clock, time_to_seconds(msg.clock))

    def _on_command(self, msg: Any, info: dict[str, Any]) -> None:
        values = np.array(msg.data, dtype=float)
        with self.lock:
            self.commands.append((info["source_timestamp"] * 1e-9,
                                  int(info["publication_sequence_number"] or 0), values))

    def _on_targets(self, msg: Any) -> None:
        self.targets += 1
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            self.target_stamp = max(self.target_stamp, stamp)

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
                self.diagnostics_stamps[status.name] = stamp

    # -- queries -------------------------------------------------------------------
    def graph_time(self, sim: bool) -> float:
        """The graph's clock as known here: sim time (newest /clock or state stamp), or the
        system clock the robot graph's nodes stamp with."""
        if not sim:
            return time.time()
        with self.lock:
            last = self.states[-1].stamp if self.states else -math.inf
        return max(self.clock, last)

    def mode(self) -> int | None:
        with self.lock:
            return self.states[-1].mode if self.states else None

    def diagnostics_stamp(self, node_prefix: str) -> float:
        """Stamp of the newest report of the node named ``node_prefix...``; -inf if none."""
        with self.lock:
            return max((t for name, t in self.diagnostics_stamps.items()
                        if name.startswith(node_prefix)), default=-math.inf)

    def counter(self, node_prefix: str, key: str) -> float:
        with self.lock:
            for name, values in self.diagnostics.items():
                if name.startswith(node_prefix) and key in values:
                    try:
                        return float(values[key])
                    except ValueError:
                        return math.nan
        return math.nan

    def snapshot(self) -> tuple[list[StateSample], list[tuple[float, int, np.ndarray]]]:
        with self.lock:
            return list(self.states), list(self.commands)

    def close(self) -> None:
        import rclpy

        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    return wait_until(condition, timeout, 0.05)


# ====================================================================== graph of a case
def _graph_processes(case: Case) -> list[Any]:
    """The bringup plan of ``case``'s graph, with a relay's remapping on the consumer."""
    from visuomotor_bringup import plan
    from visuomotor_ros import graph

    if case.graph == "sim":
        processes = plan.plan(True, {"step_mode": "lockstep"})
        if case.action == "relay":
            consumer = {graph.CAMERA_IMAGE: "encoder", graph.JOINT_STATES: "policy",
                        graph.ENCODER_FEATURES: "policy", graph.POLICY_TARGETS: "robot"}
            processes = [
                replace(p, remappings=(*p.remappings, (case.target, RELAY_PREFIX + case.target)))
                if p.role == consumer[case.target] else p for p in processes]
        return processes
    arguments = {"command_interface": "position", "command_topic": ROBOT_COMMAND_TOPIC}
    if case.action == "relay":
        arguments["joint_states_topic"] = RELAY_PREFIX + graph.JOINT_STATES
    processes = plan.plan(False, arguments)
    if case.graph == "memory":
        processes = [p for p in processes if p.role == "encoder"]
    return processes


def _node_params(processes: Sequence[Any], node: str) -> dict[str, Any]:
    for process in processes:
        if node in process.node_names:
            return dict(process.parameters()[f"/**/{node}"]["ros__parameters"])
    return {}


def _helpers(case: Case, sim: bool, log_dir: Path) -> dict[str, Helper]:
    sim_flag = ["--sim-time"] if sim else []
    helpers: dict[str, Helper] = {}
    if case.graph == "robot":
        helpers["driver"] = Helper("driver", _module(
            "--role", "driver", "--rate", str(DRIVER_HZ)), log_dir, case.name)
    if case.action == "relay":
        helpers["relay"] = Helper("relay", _module(
            "--role", "relay", "--topic", case.target, "--mode", case.mode, *sim_flag), log_dir,
            case.name)
    elif case.action in ("rogue", "memory"):
        helpers["rogue"] = Helper("rogue", _module(
            "--role", "rogue", "--kind", case.target, *sim_flag), log_dir, case.name)
    return helpers


def run_case(case: Case, options: Options) -> Result:
    """Run one case on a fresh graph; see the module docstring."""
    from visuomotor_bringup.multiprocess import Bringup

    if case.action == "memory":
        return _run_memory(case, options)
    sim = case.graph == "sim"
    options.log_dir.mkdir(parents=True, exist_ok=True)
    processes = _graph_processes(case)
    controller = _node_params(processes, "controller_node")
    sim_params = _node_params(processes, "sim_node")
    limits = LimitCheck(controller)
    result = Result(case.name)
    log = open(options.log_dir / f"{_file_name(case.name)}.log", "w")
    bringup = Bringup(processes, output=log, sigint_timeout=15.0, keep_lines=100_000)
    observer = Observer(None if sim else controller["command_topic"])
    helpers: dict[str, Helper] = {}
    timeline: dict[str, float] = {}
    try:
        helpers = _helpers(case, sim, options.log_dir)
        bringup.start()
        if _wait(lambda: observer.mode() == 1 and all(h.ready() for h in helpers.values()),
                 START_TIMEOUT):
            time.sleep(options.settle_s)
            timeline = _inject(case, options, bringup, observer, helpers, sim)
        else:
            result.failures.append("the graph never tracked a target "
                                   f"(returncodes {bringup.returncodes()})")
    finally:
        for helper in helpers.values():
            helper.stop()
        if case.action == "stop":
            _signal_role(bringup, helpers, case.target, signal.SIGCONT)
        bringup.stop("fault case ended")
        observer.close()
        log.close()
    _analyse(case, result, bringup, observer, limits, controller, sim_params, timeline, sim)
    for helper in helpers.values():
        problem = helper.problem()
        if problem:
            result.failures.append(problem)
    return result


def _signal_role(bringup: Any, helpers: dict[str, Helper], role: str,
                 sig: signal.Signals) -> None:
    if role in helpers:
        helpers[role].signal(sig)
        return
    try:
        os.killpg(bringup.pid(role), sig)
    except ProcessLookupError:
        pass


def _inject(case: Case, options: Options, bringup: Any, observer: Observer,
            helpers: dict[str, Helper], sim: bool) -> dict[str, float]:
    """Start the fault, keep it for ``fault_s``, end it, watch ``recover_s``: graph times."""
    timeline: dict[str, float] = {}
    with observer.lock:
        timeline["rejected_before"] = (observer.states[-1].rejected if observer.states else 0)
    timeline["counter_before"] = _case_counter(case, observer)
    if case.action in ("kill", "stop"):
        timeline["start"] = observer.graph_time(sim)
        sig = signal.SIGKILL if case.action == "kill" else signal.SIGSTOP
        _signal_role(bringup, helpers, case.target, sig)
    else:
        helper = helpers["relay" if case.action == "relay" else "rogue"]
        helper.signal(signal.SIGUSR1)
        _wait(lambda: helper.value("fault-start") is not None, HELPER_READY_TIMEOUT)
    time.sleep(options.fault_s)
    if sim and case.action in ("kill", "stop"):
        # The graph time read before the signal lags the sim by this process's /clock
        # delay (tens of ms of sim time with a loaded machine in lockstep); every target
        # received since answers a frame taken before the signal, so the newest one's
        # stamp is also a time the fault had not begun by.
        with observer.lock:
            timeline["start"] = max(timeline["start"], observer.target_stamp)
    if case.action == "stop":
        timeline["end"] = observer.graph_time(sim)
        _signal_role(bringup, helpers, case.target, signal.SIGCONT)
    elif case.action in ("relay", "rogue"):
        helper = helpers["relay" if case.action == "relay" else "rogue"]
        helper.signal(signal.SIGUSR2)
        _wait(lambda: helper.value("fault-end") is not None, HELPER_READY_TIMEOUT)
        start, end = helper.value("fault-start"), helper.value("fault-end")
        timeline["start"] = math.nan if start is None else start  # 0 s is a time
        timeline["end"] = math.nan if end is None else end
        timeline["sent"] = helper.value("sent") or 0.0
        timeline["sent_rate"] = helper.value("rate") or 0.0
    if case.killed and case.killed == _required_role(bringup):
        _wait(lambda: bringup.wait(0) is not None, 30.0)
        timeline["end"] = observer.graph_time(sim)
        return timeline
    time.sleep(options.recover_s)
    if case.action == "kill":
        timeline["end"] = observer.graph_time(sim)
    timeline["finish"] = observer.graph_time(sim)
    if math.isfinite(_case_counter(case, observer)):
        # The counter comes from /diagnostics, published once per diagnostics period of the
        # node's clock: read it from a report made after the fault ended.
        fault_end = timeline.get("end", timeline["finish"])
        _wait(lambda: observer.diagnostics_stamp("encoder_node") >= fault_end,
              HELPER_READY_TIMEOUT)
    timeline["counter_after"] = _case_counter(case, observer)
    return timeline


def _required_role(bringup: Any) -> str:
    return next((p.role for p in bringup.processes if p.required), "")


def _case_counter(case: Case, observer: Observer) -> float:
    """The node counter a rogue's messages should move (bad images refused, ...)."""
    if case.target == "images-hostile":
        return observer.counter("encoder_node", "bad_inputs")
    if case.target in ("images-flood", "images-mixed"):
        return observer.counter("encoder_node", "processed")
    return math.nan


# ====================================================================== analysis
MODE_NAMES = {0: "INACTIVE", 1: "TRACKING", 2: "HOLD", 3: "ESTOP"}
_TRACKING, _HOLDING = 1, (2, 3)


def _analyse(case: Case, result: Result, bringup: Any, observer: Observer, limits: LimitCheck,
             controller: dict[str, Any], sim_params: dict[str, Any],
             timeline: dict[str, float], sim: bool) -> None:
    states, commands = observer.snapshot()
    lost = _check_limits(states, commands, limits, sim)
    result.violations, result.checked, result.first_violation = (
        limits.violations, limits.checked, limits.first)
    if limits.violations:
        result.failures.append(f"{limits.violations} limit violations: {limits.first}")
    result.crashes, result.crash_output = _crashes(bringup, case)
    if result.crashes:
        result.failures.append(f"crashed: {', '.join(result.crashes)}")
    if "start" not in timeline or not math.isfinite(timeline["start"]):
        if not result.failures:
            result.failures.append("the fault was never injected")
        return
    notes = [f"{len(commands)} commands on the wire ({lost} lost in transport)"] \
        if commands else []
    result.figures.update(commands=len(commands), lost=lost)
    if case.killed and case.killed == _required_role(bringup):
        notes.append(f"graph shut down: {bringup.reason or 'stopped'}")
        others = {r: c for r, c in bringup.returncodes().items() if r != case.killed}
        notes.append(", ".join(f"{r} exited {c}" for r, c in others.items()))
        result.outcome = "; ".join(notes)
        return
    start = timeline["start"]
    end = timeline.get("end", timeline.get("finish", start))
    hold_origin = end if case.hold_from_end else start
    result.time_to_hold = _time_to_hold(states, hold_origin)
    if not (case.expect_hold or case.hold_from_end) and result.time_to_hold is not None \
            and hold_origin + result.time_to_hold > end:
        result.time_to_hold = None  # the first hold came after the fault: not its doing
    if case.expect_hold:
        period = 1.0 / float(controller.get("rate_hz", 1000.0))
        slack = 2.0 * period
        if sim:
            slack += 1.0 / float(sim_params.get("clock_rate_hz", 100.0)) \
                + float(sim_params.get("lockstep_latency", 0.0))
        else:
            slack += RATE_SLACK
        result.hold_bound = float(controller[case.expect_hold]) + slack
        if result.time_to_hold is None:
            result.failures.append("never held")
        elif result.time_to_hold > result.hold_bound:
            result.failures.append(f"held {result.time_to_hold:.3f} s after the fault "
                                   f"(bound {result.hold_bound:.3f} s)")
        if result.time_to_hold is not None and not case.hold_from_end:
            late = [s for s in states if hold_origin + result.hold_bound < s.stamp <= end
                    and s.mode == _TRACKING]
            # The loop stamps mode_since when it changes mode; a TRACKING state that keeps
            # the hold's mode_since was read between a target's arrival and the next tick,
            # which held again: the loop never tracked.
            held_since = hold_origin + result.time_to_hold
            tracked = [s for s in late if s.mode_since > held_since + 1e-9]
            if tracked:
                result.failures.append(
                    f"tracking again {tracked[0].mode_since - start:.3f} s into the fault")
            if len(late) > len(tracked):
                notes.append(f"controller/state read TRACKING {len(late) - len(tracked)}× "
                             "while the loop held")
    window = [s for s in states if start <= s.stamp <= end]
    if window:
        share = sum(s.mode == _TRACKING for s in window) / len(window)
        result.figures["tracking_share"] = share
        holds = _hold_entries(window)
        span = f"{end - start:.2f} s of graph time"
        if share == 0.0:
            notes.append(f"held through the fault ({span})")
        else:
            notes.append(f"tracking {100 * share:.0f}% of the fault ({span}), {holds} "
                         f"hold{'s' if holds != 1 else ''}")
        reasons = collections.Counter(s.reason for s in window
                                      if s.mode in _HOLDING and s.reason)
        if reasons:
            notes.append("hold: " + " / ".join(_short(r) for r, _ in reasons.most_common(2)))
    if case.expect_resume:
        resumed = [s.stamp for s in states if s.stamp > end and s.mode == _TRACKING]
        if resumed:
            notes.append(f"tracking again {resumed[0] - end:.2f} s after the fault ended")
        else:
            result.failures.append("never tracked again after the fault ended")
    notes += _counter_notes(case, states, timeline, result.figures)
    if case.action == "kill":
        alive = [p.role for p in bringup.processes
                 if p.role != case.killed and bringup.returncodes().get(p.role) == 0]
        notes.append(f"{', '.join(alive)} ran on")
    result.outcome = "; ".join(notes)


def _check_limits(states: list[StateSample], commands: list[tuple[float, int, np.ndarray]],
                  limits: LimitCheck, sim: bool) -> int:
    """Check every state and command; returns the commands lost in transport."""
    previous: StateSample | None = None
    for state in states:
        if state.mode == 0 or state.command.size == 0:
            previous = None  # inactive: nothing commanded
            continue
        where = (f"controller/state at {state.stamp:.3f} ({MODE_NAMES.get(state.mode)}"
                 f"{': ' + state.reason if state.reason else ''})")
        # Zeros: the node's report before its first command and, before the first valid
        # joint state, before the controller has a reference (the wire is checked apart).
        if state.command.any():
            limits.command(state.command, state.interface, where)
        if not state.reference.any():
            previous = None
            continue
        limits.position(state.reference, f"{where}: reference")
        if previous is not None and sim:
            # On the robot graph the wire carries the reference (position interface) and
            # is checked below, exactly; here the stamps, the reference possibly a few
            # ticks newer.
            limits.step(previous.reference, state.reference,
                        state.stamp - previous.stamp + STATE_SKEW, f"{where}: reference")
        previous = state
    before: tuple[float, int, np.ndarray] | None = None
    lost = 0
    for published, sequence, values in commands:
        limits.command(values, "position", "command topic")
        if before is not None:
            lost += max(0, sequence - before[1] - 1)
            limits.step(before[2], values, published - before[0] + RATE_SLACK,
                        f"command topic (sequence {sequence})")
        before = (published, sequence, values)
    return lost


#: Lines of a crashed process's output quoted with its crash (a fault dump, an error).
CRASH_TAIL_LINES = 40


def _crashes(bringup: Any, case: Case) -> tuple[list[str], list[str]]:
    """What ended badly, and the last lines each of those processes printed."""
    crashes: list[str] = []
    outputs: list[str] = []
    for process in bringup.processes:
        code = bringup.returncodes().get(process.role)
        output = bringup.output(process.role)
        found = []
        if process.role != case.killed and code not in (0, None):
            found.append(f"{process.role} exited {code}")
        if any("Traceback" in line for line in output):
            found.append(f"{process.role} printed a Traceback")
        crashes += found
        outputs += [f"{crash}; its last output:\n" + "\n".join(output[-CRASH_TAIL_LINES:])
                    for crash in found]
    return crashes, outputs


def _time_to_hold(states: list[StateSample], origin: float) -> float | None:
    """Graph seconds from ``origin`` to the first HOLD/ESTOP after it (0: already holding)."""
    for state in states:
        if state.stamp >= origin and state.mode in _HOLDING:
            return max(0.0, state.mode_since - origin)
    return None


def _hold_entries(states: list[StateSample]) -> int:
    return sum(1 for a, b in itertools.pairwise(states)
               if b.mode in _HOLDING and a.mode not in _HOLDING)


def _short(reason: str) -> str:
    return reason if len(reason) <= 72 else reason[:71] + "…"


def _counter_notes(case: Case, states: list[StateSample], timeline: dict[str, float],
                   figures: dict[str, float]) -> list[str]:
    notes = []
    sent, rate = timeline.get("sent", 0.0), timeline.get("sent_rate", 0.0)
    if case.action == "rogue" and sent:
        figures.update(sent=sent, sent_rate_hz=rate)
        notes.append(f"{int(sent)} sent ({rate:.0f} Hz)")
    if case.action == "relay":
        figures["affected"] = sent
        notes.append(f"{int(sent)} messages {'dropped' if case.mode == 'drop' else 'delayed'}")
    before, after = timeline.get("counter_before", math.nan), timeline.get("counter_after",
                                                                           math.nan)
    if math.isfinite(after):
        count = after - (before if math.isfinite(before) else 0.0)
        hostile = case.target == "images-hostile"
        figures["refused" if hostile else "encoded"] = count
        notes.append(f"{int(count)} {'refused by the encoder' if hostile else 'frames encoded'}")
    if case.target.startswith("targets") and states:
        refused = states[-1].rejected - int(timeline.get("rejected_before", 0))
        figures["refused"] = refused
        notes.append(f"controller refused {refused} targets")
    return notes


# ====================================================================== memory case
def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return math.nan


def _run_memory(case: Case, options: Options) -> Result:
    from visuomotor_bringup.multiprocess import Bringup

    options.log_dir.mkdir(parents=True, exist_ok=True)
    result = Result(case.name)
    log = open(options.log_dir / f"{_file_name(case.name)}.log", "w")
    bringup = Bringup(_graph_processes(case), output=log, sigint_timeout=15.0)
    observer = Observer(None)
    samples: list[tuple[float, float]] = []
    helpers: dict[str, Helper] = {}
    processed = (math.nan, math.nan)
    try:
        helpers = _helpers(case, False, options.log_dir)
        bringup.start()
        rogue = helpers["rogue"]
        if not _wait(lambda: rogue.ready() and not math.isnan(
                observer.counter("encoder_node", "processed")), START_TIMEOUT):
            result.failures.append("the encoder never reported")
            return result
        rogue.signal(signal.SIGUSR1)
        time.sleep(options.memory_warmup_s)
        pid = bringup.pid("encoder")
        t0 = time.monotonic()
        first = observer.counter("encoder_node", "processed")
        while time.monotonic() - t0 < options.memory_s and bringup.alive("encoder"):
            samples.append((time.monotonic() - t0, _rss_mb(pid)))
            time.sleep(MEMORY_SAMPLE_S)
        samples.append((time.monotonic() - t0, _rss_mb(pid)))
        processed = (first, observer.counter("encoder_node", "processed"))
        rogue.signal(signal.SIGUSR2)
        _wait(lambda: rogue.value("fault-end") is not None, HELPER_READY_TIMEOUT)
    finally:
        for helper in helpers.values():
            helper.stop()
        bringup.stop("memory case ended")
        observer.close()
        log.close()
    result.crashes, result.crash_output = _crashes(bringup, case)
    if result.crashes:
        result.failures.append(f"crashed: {', '.join(result.crashes)}")
    if len(samples) >= 2:
        times = np.array([s[0] for s in samples])
        rss = np.array([s[1] for s in samples])
        growth = float(rss[-1] - rss[0])
        slope = float(np.polyfit(times / 60.0, rss, 1)[0]) if times[-1] > 0 else math.nan
        frames = processed[1] - processed[0]
        result.figures.update(rss_start_mb=float(rss[0]), rss_end_mb=float(rss[-1]),
                              rss_growth_mb=growth, rss_slope_mb_per_min=slope,
                              minutes=float(times[-1] / 60.0), encoded=frames)
        rate = (helpers["rogue"].value("rate") or 0.0) if helpers else 0.0
        result.outcome = (f"RSS {rss[0]:.1f} → {rss[-1]:.1f} MB over {times[-1] / 60:.1f} min "
                          f"(growth {growth:+.1f} MB, peak {rss.max():.1f} MB, fit "
                          f"{slope:+.2f} MB/min; bound {MEMORY_BOUND_MB:.0f} MB); "
                          f"{int(frames)} mixed-size frames encoded ({rate:.0f} Hz sent)")
        if growth > MEMORY_BOUND_MB:
            result.failures.append(f"RSS grew {growth:.1f} MB (> {MEMORY_BOUND_MB:.0f} MB)")
        if not frames > 0:
            result.failures.append("the encoder encoded no frame")
    for helper in helpers.values():
        problem = helper.problem()
        if problem:
            result.failures.append(problem)
    return result


# ====================================================================== suite and report
def run_cases(cases: Sequence[Case], options: Options,
              progress: Callable[[str], None] | None = None) -> list[Result]:
    results = []
    for case in cases:
        if progress:
            progress(f"[fault-injection] {case.name} ...")
        started = time.monotonic()
        result = run_case(case, options)
        if progress:
            verdict = "ok" if result.passed else "FAIL: " + "; ".join(result.failures)
            progress(f"[fault-injection] {case.name}: {verdict} "
                     f"({time.monotonic() - started:.0f} s)")
        results.append(result)
    return results


def format_table(results: Sequence[Result]) -> str:
    """The results as a Markdown table."""
    lines = ["| case | crashes | limit violations | time to hold | result | outcome |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        crashes = ", ".join(r.crashes) if r.crashes else "0"
        violations = f"{r.violations} / {r.checked}" if r.checked else "—"
        if r.time_to_hold is None:
            hold = "—"
        elif r.hold_bound is not None:
            hold = f"{r.time_to_hold:.3f} s (≤ {r.hold_bound:.3f})"
        else:
            hold = f"{r.time_to_hold:.3f} s"
        verdict = "ok" if r.passed else "FAIL: " + "; ".join(r.failures)
        lines.append(f"| {r.case} | {crashes} | {violations} | {hold} | {verdict} | "
                     f"{r.outcome.replace('|', '/')} |")
    return "\n".join(lines)


# ====================================================================== helper roles
def _message_types() -> dict[str, tuple[type, Any, Any]]:
    """topic -> (message type, QoS to subscribe the producer, QoS to publish to the consumer)."""
    from sensor_msgs.msg import Image, JointState

    from visuomotor_interfaces.msg import EncoderFeatures, JointTargets
    from visuomotor_ros import graph
    from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS

    return {graph.CAMERA_IMAGE: (Image, SENSOR_QOS, SENSOR_QOS),
            graph.JOINT_STATES: (JointState, SENSOR_QOS, LATEST_QOS),
            graph.ENCODER_FEATURES: (EncoderFeatures, LATEST_QOS, LATEST_QOS),
            graph.POLICY_TARGETS: (JointTargets, LATEST_QOS, LATEST_QOS)}


class _Armed:
    """SIGUSR1 arms, SIGUSR2 disarms, SIGINT/SIGTERM quit: the flags a helper reads.

    rclpy is initialised without its own signal handlers, so a helper stops its
    publishing threads before its context goes away (no publish on a dead context).
    """

    def __init__(self) -> None:
        self.active = False
        self.ended = False
        self.quit = False
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "active", True))
        signal.signal(signal.SIGUSR2, lambda *_: setattr(self, "ended", True))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "quit", True))


def _say(text: str) -> None:
    print(text, flush=True)


def _helper_node(name: str, sim_time: bool) -> Any:
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    return Node(name, parameter_overrides=[Parameter("use_sim_time", value=sim_time)])


#: Longest wait of a sim-time helper for its first /clock before it starts its fault, s.
CLOCK_WAIT_S = 10.0


def _now(node: Any) -> float:
    return node.get_clock().now().nanoseconds * 1e-9


def role_relay(topic: str, mode: str, sim_time: bool, seed: int = 0) -> None:
    """Pass ``topic`` on to ``fault/<topic>``; armed, drop or delay (module docstring)."""
    from rclpy.clock import Clock, ClockType

    msg_type, sub_qos, pub_qos = _message_types()[topic]
    node = _helper_node("fault_relay", sim_time)
    armed = _Armed()
    rng = np.random.default_rng(seed)
    queue: collections.deque[tuple[float, Any]] = collections.deque()
    stats = {"affected": 0, "started": False, "finished": False}
    publisher = node.create_publisher(msg_type, RELAY_PREFIX + topic, pub_qos)

    def on_message(msg: Any) -> None:
        on = armed.active and not armed.ended
        if on and mode == "drop" and rng.random() < DROP_FRACTION:
            stats["affected"] += 1
        elif on and mode == "delay":
            stats["affected"] += 1
            queue.append((_now(node) + DELAY_S, msg))
        elif queue:  # disarmed with messages still held: keep their order
            queue.append((-math.inf, msg))
        else:
            publisher.publish(msg)

    def on_timer() -> None:
        now = _now(node)
        if armed.active and not stats["started"]:
            stats["started"] = True
            _say(f"fault-start {now:.9f}")
        while queue and (queue[0][0] <= now or armed.ended):
            publisher.publish(queue.popleft()[1])
        if armed.ended and not stats["finished"]:
            stats["finished"] = True
            _say(f"sent {stats['affected']}")
            _say(f"fault-end {now:.9f}")

    node.create_subscription(msg_type, topic, on_message, sub_qos)
    node.create_timer(0.002, on_timer, clock=Clock(clock_type=ClockType.STEADY_TIME))
    _say("ready")
    _spin(node, armed)


class _Rogue:
    """What a rogue publishes: message type, topic, QoS, rate and one message per call."""

    def __init__(self, node: Any, kind: str) -> None:
        from sensor_msgs.msg import Image, JointState

        from visuomotor_core.robot_description import load_robot
        from visuomotor_core.robot_model import RobotModel
        from visuomotor_interfaces.msg import JointTargets
        from visuomotor_ros import graph
        from visuomotor_ros.bench_controller import HOME
        from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS

        self.node = node
        self.kind = kind
        self.rng = np.random.default_rng(1)
        robot = load_robot()
        self.names = list(robot.arm_joints)
        self.base_frame = robot.base_frame
        self.home = np.array(HOME)
        self.limits = RobotModel.from_urdf_file(graph.urdf_path()).limits
        self.count = 0
        if kind.startswith("images"):
            self.msg_type, self.topic, self.qos = Image, graph.CAMERA_IMAGE, SENSOR_QOS
            noise = self.rng.integers(0, 256, (NOISE_SIZE[1], NOISE_SIZE[0], 3),
                                      dtype=np.uint8)
            self.noise = noise
            self.rate = {"images-flood": FLOOD_IMAGES_HZ, "images-hostile": HOSTILE_IMAGES_HZ,
                         "images-mixed": MIXED_IMAGES_HZ}[kind]
            self.variants = _hostile_images(noise) if kind == "images-hostile" else []
        elif kind.startswith("joint-states"):
            self.msg_type, self.topic, self.qos = JointState, graph.JOINT_STATES, SENSOR_QOS
            self.rate = HOSTILE_SAMPLES_HZ
        elif kind.startswith("targets"):
            self.msg_type, self.topic, self.qos = JointTargets, graph.POLICY_TARGETS, LATEST_QOS
            self.rate = FLOOD_TARGETS_HZ if kind == "targets-flood" else HOSTILE_SAMPLES_HZ
        else:
            raise ValueError(f"unknown rogue kind {kind!r}")

    def message(self) -> Any:
        self.count += 1
        kind = self.kind
        now = self.node.get_clock().now()
        if kind.startswith("images"):
            return self._image(now)
        if kind.startswith("joint-states"):
            return self._joint_state(now)
        return self._targets(now)

    def _image(self, now: Any) -> Any:
        from visuomotor_ros.image_conversion import numpy_to_image

        if self.kind == "images-hostile":
            msg = self.variants[self.count % len(self.variants)]
        elif self.kind == "images-flood":
            y, x = self.rng.integers(0, 800, 2)
            msg = numpy_to_image(self.noise[y:y + 128, x:x + 128])
        else:
            side = int(self.rng.integers(MIXED_SIDE_MIN, MIXED_SIDE_MAX + 1))
            msg = numpy_to_image(self.noise[:side, :side])
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = "camera_optical_frame"
        return msg

    def _joint_state(self, now: Any) -> Any:
        from sensor_msgs.msg import JointState

        from visuomotor_ros.node_common import seconds_to_time

        msg = JointState()
        msg.header.stamp = now.to_msg()
        msg.name = list(self.names)
        position = self.home.copy()
        velocity = np.zeros(len(self.names))
        if self.kind == "joint-states-empty":
            if self.count % 2:
                msg.name = []
            return msg  # names and no values, or nothing at all
        if self.kind == "joint-states-nan":
            position[self.count % len(position)] = math.nan
            if self.count % 3 == 0:
                velocity[:] = math.nan
        elif self.kind == "joint-states-out-of-range":
            position[0] = 3.5  # the URDF's range of joint 1 ends at 2.8973 rad
        elif self.kind == "joint-states-stale":
            position[0] += 0.5
            msg.header.stamp = seconds_to_time(max(0.0, now.nanoseconds * 1e-9 - 1.0))
        msg.position = position.tolist()
        msg.velocity = velocity.tolist()
        msg.effort = [0.0] * len(self.names)
        return msg

    def _targets(self, now: Any) -> Any:
        from visuomotor_interfaces.msg import JointTargets

        msg = JointTargets()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = self.base_frame
        msg.policy_stamp = msg.header.stamp
        msg.name = list(self.names)
        if self.kind == "targets-flood":
            msg.position = self.rng.uniform(self.limits.lower, self.limits.upper).tolist()
        elif self.kind == "targets-empty":
            if self.count % 2:
                msg.name = []
        else:
            position = self.home.copy()
            position[self.count % len(position)] = math.nan
            msg.position = position.tolist()
        return msg


def _hostile_images(noise: np.ndarray) -> list[Any]:
    """Malformed (and two legal but extreme) rgb8 camera messages."""
    from sensor_msgs.msg import Image

    from visuomotor_ros.image_conversion import numpy_to_image

    small = noise[:128, :128]

    def raw(width: int, height: int, encoding: str, step: int, size: int) -> Image:
        return Image(width=width, height=height, encoding=encoding, step=step,
                     data=bytes(noise.reshape(-1)[:size]))

    padded = np.zeros((128, 128 * 3 + 16), np.uint8)
    padded[:, :128 * 3] = small.reshape(128, -1)
    return [
        raw(128, 128, "bgr16", 128 * 6, 128 * 128 * 6),     # 16-bit encoding
        raw(128, 128, "32FC1", 128 * 4, 128 * 128 * 4),     # float depth image
        raw(128, 128, "yuv422", 128 * 2, 128 * 128 * 2),
        raw(128, 128, "mono8", 128, 128 * 128),
        raw(128, 128, "rgba8", 128 * 4, 128 * 128 * 4),
        raw(128, 128, "", 128 * 3, 128 * 128 * 3),
        raw(0, 0, "rgb8", 0, 0),                            # zero size, no data
        raw(0, 128, "rgb8", 0, 128 * 3),                    # zero width
        raw(100_000, 100_000, "rgb8", 300_000, 128 * 128 * 3),  # huge claim, small data
        raw(128, 128, "rgb8", 128 * 3 - 1, 128 * 128 * 3),  # step shorter than a row
        raw(128, 128, "rgb8", 128 * 3 + 16, 128 * 128 * 3),  # step longer than the data
        raw(128, 128, "rgb8", 128 * 3, 128 * 128 * 3 - 100),  # truncated
        raw(128, 128, "rgb8", 128 * 3, 128 * 128 * 3 + 100),  # overlong
        raw(2**31, 2, "rgb8", 2**31, 64),                   # width near the int32 limit
        Image(width=128, height=128, encoding="rgb8", step=128 * 3 + 16,
              data=padded.tobytes()),                       # legal padded rows
        numpy_to_image(np.ascontiguousarray(noise[:960, :1280])),  # legal, 1280×960
    ]


def role_rogue(kind: str, sim_time: bool) -> None:
    """Publish ``kind`` messages while armed (module docstring), from a thread of its own
    (a 10 kHz flood publishes in batches of 10 per millisecond)."""
    node = _helper_node("fault_rogue", sim_time)
    rogue = _Rogue(node, kind)
    armed = _Armed()
    publisher = node.create_publisher(rogue.msg_type, rogue.topic, rogue.qos)

    def publish_loop() -> None:
        while not (armed.active or armed.quit):
            time.sleep(0.005)
        if armed.quit:
            return
        # On sim time the stamps of the timeline need the first /clock: a rogue armed
        # before it arrived reported its fault as starting at 0.
        deadline = time.monotonic() + CLOCK_WAIT_S
        while sim_time and _now(node) <= 0.0 and time.monotonic() < deadline \
                and not armed.quit:
            time.sleep(0.005)
        _say(f"fault-start {_now(node):.9f}")
        t0 = time.monotonic()
        batch = max(1, int(rogue.rate // 1000))
        next_time = t0
        sent = 0
        while not (armed.ended or armed.quit):
            for _ in range(batch):
                publisher.publish(rogue.message())
            sent += batch
            next_time += batch / rogue.rate
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:
                next_time = time.monotonic()  # cannot keep up: no burst to catch up
        elapsed = time.monotonic() - t0
        _say(f"sent {sent}")
        _say(f"rate {sent / elapsed if elapsed > 0 else 0.0:.1f}")
        _say(f"fault-end {_now(node):.9f}")

    thread = threading.Thread(target=publish_loop, daemon=True)
    thread.start()
    _say("ready")
    _spin(node, armed, on_quit=lambda: thread.join(5.0))


def role_driver(rate: float) -> None:
    """A robot driver's ``joint_states`` (the arm standing at ``bench_controller.HOME``) at
    ``rate`` Hz from a deadline loop, wall-clock stamps, and 20 Hz policy-like targets
    (:class:`visuomotor_ros.bench_controller.SyntheticFeeder`)."""
    from visuomotor_core.rt_loop import ControlLoop, LoopConfig
    from visuomotor_ros.bench_controller import FeederConfig, SyntheticFeeder

    armed = _Armed()
    feeder = SyntheticFeeder(FeederConfig(state_rate_hz=1.0, target_rate_hz=20.0))
    feeder.states_enabled = False  # the loop below publishes the states
    loop = ControlLoop(feeder.publish_state, LoopConfig(rate_hz=rate), name="driver")
    loop.start()
    _say("ready")
    _spin(feeder, armed, on_quit=loop.stop)


def _spin(node: Any, armed: _Armed, on_quit: Callable[[], None] | None = None) -> None:
    """Spin ``node`` until SIGINT/SIGTERM; ``on_quit`` stops the helper's own threads before
    the node and the context go away."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not armed.quit:
            executor.spin_once(timeout_sec=0.05)
    finally:
        if on_quit is not None:
            on_quit()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()


def _role_main(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    if args.role == "relay":
        role_relay(args.topic, args.mode, args.sim_time)
    elif args.role == "driver":
        role_driver(args.rate)
    else:
        role_rogue(args.kind, args.sim_time)


# ====================================================================== command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fault-injection",
        description="Inject faults into the running visuomotor graph (one process per node, "
                    "from the multi-process bringup) and print, per case, crashes, limit "
                    "violations, time to hold and the outcome. Runs in a private DDS domain.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cases:\n" + "\n".join(f"  {c.name}" for c in all_cases()))
    parser.add_argument("--quick", action="store_true",
                        help="short windows (fault 4 s, recovery 3 s) and a 1-minute memory "
                             "case, for development")
    parser.add_argument("--only", default="", metavar="PATTERNS",
                        help="comma-separated case names or shell patterns, e.g. "
                             "'sim/kill:*,robot/joint_states:*'")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--memory-minutes", type=float, default=None, metavar="MIN",
                        help="length of the memory case (default 10, 1 with --quick)")
    parser.add_argument("--json", default="", metavar="PATH", help="also write the results")
    parser.add_argument("--log-dir", default="/tmp/visuomotor-fault-injection",
                        help="graph and helper logs, one file per case")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the run (default 200 + pid %% 30)")
    parser.add_argument("--role", choices=("relay", "rogue", "driver"), help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=DRIVER_HZ, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default="", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("drop", "delay"), default="drop",
                        help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sim-time", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.role:
        _role_main(args)
        return 0
    try:
        cases = select(args.only)
    except ValueError as error:
        print(f"fault-injection: {error}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(case.name for case in cases))
        return 0
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None
                                      else 200 + os.getpid() % 30)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    options = Options.quick() if args.quick else Options()
    changes: dict[str, Any] = {"log_dir": Path(args.log_dir)}
    if args.memory_minutes is not None:
        changes["memory_s"] = args.memory_minutes * 60.0
    options = replace(options, **changes)
    try:
        results = run_cases(cases, options, progress=print)
    except KeyboardInterrupt:  # each case stops its graph and helpers on the way out
        print("fault-injection: interrupted", file=sys.stderr)
        return 130
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
