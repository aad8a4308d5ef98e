"""Real-time benchmark of the deployed topology, one OS process per node (``make bench``).

Each scenario starts the processes it needs, measures from a probe in this
process (another process than the one measured) and stops them; every figure
comes with its target (DESIGN.md, issue "real-time topology") and, where one
exists, a baseline measured in the same run. ``--hog`` repeats the scenarios
with a process spinning on one core, to show the degradation.

Scenarios (``--only`` picks some):

* ``wakeup`` — the machine's floor for the loops below: a bare SCHED_FIFO thread (the
  loop's ``--rt-priority``) sleeping to absolute 1 ms deadlines (``clock_nanosleep``, no
  Python work) in a process of its own, while a spinning process per core keeps every
  core busy (the wall-paced graph keeps both busy): how late it wakes, p99/p99.9/max,
  and how often later than the loops' miss tolerance (half a period).
* ``compute`` — the graph's own work with no ROS and no hand-off between processes,
  in one process of its own (:func:`role_compute`): the robot process's tick
  (SimHardware read → JointController update → write → physics step) back to back,
  then in a bare ``ControlLoop`` at 1 kHz on wall-clock deadlines (the loop's
  settings; no rclpy thread beside it): its thread's CPU share, rate, misses; and the
  perception chain per camera frame at the camera's pace (render, encoder, policy
  step, one after the other). These are the floors the graph's figures are measured
  against: the loop's CPU and misses without ROS, camera → command with zero
  transport, and the lockstep real-time factor that compute alone allows
  (``lockstep_ceiling``: one camera period of sim time over the chain plus the ticks
  of a frame, the chain overlapping the ``lockstep_latency`` ticks).
* ``topics`` — the controller with the topics backend (``trigger: deadline``)
  fed by a separate process publishing ``joint_states`` at 1 kHz, seen from a
  subscriber here: command rate, inter-arrival p50/p99/max, gaps over 1.5 ms,
  on the times this process's middleware received the messages (the DDS
  reader's reception timestamps; ``*_callback_*``: when the probe's Python
  callback ran, which adds the probe's own executor jitter);
  the loop's own figures (rate, jitter p99, misses, CPU of the loop thread).
  Baseline: a bare rclpy 1 kHz timer publishing the same message type.
* ``image`` — 640×480 rgb8 Image from another process to a subscriber here:
  stamp → middleware receipt p50/p99 at 30 Hz (``image_callback_*``: stamp → the
  probe's callback, with the message converted to Python).
* ``sim_realtime`` — the sim graph (robot process: physics + camera +
  controller; encoder; policy) paced on the wall clock: real-time factor over
  the window, loop rate, jitter p99, misses, camera stamp → joint command p99.
* ``sim_lockstep`` — the same graph in lockstep on sim time, ``--episodes``
  episodes driven through ``sim/reset_episode``: real-time factor from ``/clock``
  over the run (episode resets included), the episodes' own sim time per wall
  second (``episode_time_factor``: also counts the benchmark's service calls and
  polling between episodes as lost time), success.
* ``robot_camera`` — the robot graph (controller on topics, encoder, policy)
  with a 1 kHz joint-state feeder and a 640×480 camera at 30 Hz: targets per
  second against the camera rate, TRACKING↔HOLD switches.

Usage: ``bench-realtime [--duration 60] [--hog] [--only topics,image] [--rt-priority 80]``.
The figures depend on the machine and what else runs on it; compare ratios
within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from visuomotor_bringup import plan
from visuomotor_bringup.multiprocess import Bringup
from visuomotor_core.rt_loop import (
    ControlLoop,
    LoopConfig,
    apply_realtime_settings,
    sleep_until_ns,
)
from visuomotor_core.timing import wait_until
from visuomotor_interfaces.msg import ControllerState, JointTargets, TaskStatus
from visuomotor_interfaces.srv import ResetEpisode
from visuomotor_ros import graph
from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS, time_to_seconds

SCENARIOS = ("wakeup", "compute", "topics", "image", "sim_realtime", "sim_lockstep",
             "robot_camera")
#: A loop tick starting later than this fraction of its period is a miss (LoopConfig).
MISS_TOLERANCE = 0.5
#: Gaps between commands longer than this count as missed 1 kHz packets.
GAP_LIMIT = 1.5e-3
#: Wait after a measured window for the controller's diagnostics report that closes it, s.
DIAGNOSTICS_PERIOD = 1.5
#: The probe's reader of a 1 kHz stream: reliable, deep enough for the probe's executor
#: to fall behind by a second without losing a message.
PROBE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                       reliability=ReliabilityPolicy.RELIABLE)
#: /clock is published best effort (sensor-data QoS), which a reliable reader cannot match.
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                       reliability=ReliabilityPolicy.BEST_EFFORT)
BASELINE_TOPIC = "bench/timer_commands"
IMAGE_TOPIC = "bench/image"


# ---------------------------------------------------------------------- processes
def _self(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "visuomotor_bringup.bench_realtime", "--role", role, *args]


class Processes:
    """The benchmark's own helper processes (feeder, camera, timer) of one scenario;
    SIGINT on exit, then SIGKILL after a grace period. The graph's processes come from
    the multi-process bringup (:func:`_graph`)."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        log = open(self._log_dir / f"{name}.log", "w")
        # The stand-in drivers run with the bringup's DDS profile, as the README asks of
        # a camera driver (large images need the writer's shared-memory segment to fit).
        env = {**os.environ, **dict(plan.dds_environment("default"))}
        child = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        log.close()
        self._children.append((name, child))
        return child

    def alive(self) -> list[str]:
        return [name for name, child in self._children if child.poll() is None]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for _, child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10.0
        for _, child in self._children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@dataclass(frozen=True)
class LoopSettings:
    """The benchmark's control loop: the bringups' ``rt_priority`` launch argument (the
    loop thread at SCHED_FIFO ``rt_priority``, its process's other threads 10 below) and
    the controller's ``gil_lead`` parameter."""

    rt_priority: int = 0
    gil_lead: float = 3e-4


def _graph(sim: bool, arguments: dict[str, str], log_dir: Path, roles: Sequence[str] = (),
           loop: LoopSettings | None = None):
    """The deployed graph from the multi-process bringup (the plan ``ros2 launch`` runs),
    restricted to ``roles``, with ``loop``'s settings (none: the parameter files')."""
    processes = []
    if loop is not None:
        arguments = {**arguments, "rt_priority": str(loop.rt_priority)}
    for process in plan.plan(sim, arguments):
        if roles and process.role not in roles:
            continue
        if loop is not None and "controller_node" in process.node_names:
            overrides = {**process.overrides}
            overrides["controller_node"] = {**overrides.get("controller_node", {}),
                                            "gil_lead": loop.gil_lead}
            process = replace(process, overrides=overrides)
        processes.append(process)
    output = open(log_dir / f"{'sim' if sim else 'robot'}_graph.log", "a")
    return Bringup(processes, output=output, sigint_timeout=10.0)


# ---------------------------------------------------------------------- probe
class Probe(Node):
    """Subscriptions of the benchmark: arrival times, diagnostics, controller state."""

    def __init__(self, context: Context) -> None:
        super().__init__("bench_probe", context=context)
        self.lock = threading.Lock()
        self.arrivals: dict[str, list[float]] = {}
        self.callback_arrivals: dict[str, list[float]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.callback_latencies: dict[str, list[float]] = {}
        self.diagnostics: dict[str, dict[str, str]] = {}
        #: Every diagnostics report per status name: (monotonic time received, values).
        self.reports: dict[str, list[tuple[float, dict[str, str]]]] = {}
        #: /clock as received: (monotonic time of the callback, sim time s); empty until
        #: ``watch_clock``. The callback's delay (ms) is noise of 1e-4 over a minute.
        self.clock: list[tuple[float, float]] = []
        self.modes: list[int] = []
        self.status: TaskStatus | None = None

    def watch_arrivals(self, topic: str, msg_type: type, qos: Any = PROBE_QOS) -> None:
        """Arrival times of ``topic``'s messages: when this process's middleware received
        each one (``arrivals``, the DDS reader's reception timestamp, s) and when its
        callback ran here (``callback_arrivals``: adds this probe's own executor delay).
        The reader keeps a deep history, so a message the probe's executor takes late is
        still counted at its reception time instead of being replaced by the next one."""
        received = self.arrivals[topic] = []
        called = self.callback_arrivals[topic] = []

        def callback(_msg: Any, info: Any) -> None:
            called.append(time.monotonic())
            received.append(info["received_timestamp"] * 1e-9)

        self.create_subscription(msg_type, topic, callback, qos)

    def watch_latency(self, topic: str, msg_type: type, qos: Any = SENSOR_QOS) -> None:
        """Wall-clock age of each message's header stamp when this process's middleware
        received it (``latencies``) and when its callback ran (``callback_latencies``)."""
        received = self.latencies[topic] = []
        called = self.callback_latencies[topic] = []

        def callback(msg: Any, info: Any) -> None:
            stamp = time_to_seconds(msg.header.stamp)
            called.append(time.time() - stamp)
            received.append(info["received_timestamp"] * 1e-9 - stamp)

        self.create_subscription(msg_type, topic, callback, qos)

    def watch_graph(self) -> None:
        self.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diagnostics, 50)
        self.create_subscription(ControllerState, graph.CONTROLLER_STATE, self._on_state, 50)
        self.create_subscription(TaskStatus, graph.TASK_STATUS, self._on_status, 10)

    def watch_clock(self) -> None:
        def callback(msg: Clock) -> None:
            self.clock.append((time.monotonic(), time_to_seconds(msg.clock)))

        self.create_subscription(Clock, graph.CLOCK, callback, CLOCK_QOS)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        received = time.monotonic()
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            with self.lock:
                self.diagnostics[status.name] = values
                self.reports.setdefault(status.name, []).append((received, values))

    def _on_state(self, msg: ControllerState) -> None:
        with self.lock:
            if not self.modes or self.modes[-1] != msg.mode:
                self.modes.append(msg.mode)

    def _on_status(self, msg: TaskStatus) -> None:
        self.status = msg

    def values(self, prefix: str) -> dict[str, str]:
        with self.lock:
            for name, values in self.diagnostics.items():
                if name.startswith(prefix):
                    return dict(values)
        return {}

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 30.0) -> Any:
        client = self.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.destroy_client(client)
        if not future.done():
            raise RuntimeError(f"service {name} did not answer")
        return future.result()


class ProbeRunner:
    """A probe node spinning in a thread on a context of its own."""

    def __enter__(self) -> Probe:
        self.context = Context()
        rclpy.init(context=self.context)
        self.probe = Probe(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        return self.probe

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - the context shut down
            pass

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _wait(condition, timeout: float) -> bool:
    return wait_until(condition, timeout, 0.05)

def _window(probe: Probe, topic: str, duration: float) -> tuple[list[float], list[float]]:
    """``topic``'s arrivals over the next ``duration`` s: (middleware receipts, callbacks)."""
    probe.arrivals[topic].clear()
    probe.callback_arrivals[topic].clear()
    time.sleep(duration)
    return list(probe.arrivals[topic]), list(probe.callback_arrivals[topic])


def _gaps(arrivals: Sequence[float]) -> dict[str, float]:
    times = np.asarray(arrivals)
    if times.size < 3:
        return {"rate_hz": 0.0, "gap_p50_ms": math.nan, "gap_p99_ms": math.nan,
                "gap_max_ms": math.nan, "gaps_over_1.5ms_pct": math.nan}
    gaps = np.diff(times)
    return {
        "rate_hz": (times.size - 1) / (times[-1] - times[0]),
        "gap_p50_ms": float(np.percentile(gaps, 50)) * 1e3,
        "gap_p99_ms": float(np.percentile(gaps, 99)) * 1e3,
        "gap_max_ms": float(gaps.max()) * 1e3,
        "gaps_over_1.5ms_pct": 100.0 * float(np.mean(gaps > GAP_LIMIT)),
    }


def _real_time_factor(probe: Probe, start: float, end: float) -> float:
    """Sim seconds per wall second between monotonic ``start`` and ``end``, from the
    /clock messages the probe received (``watch_clock``)."""
    inside = [sample for sample in list(probe.clock) if start <= sample[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return math.nan
    (wall0, sim0), (wall1, sim1) = inside[0], inside[-1]
    return (sim1 - sim0) / (wall1 - wall0)


def _loop_figures(probe: Probe, prefix: str, start: float, end: float) -> dict[str, float]:
    """The control loop between monotonic ``start`` and ``end``, from the controller's
    diagnostics reports: rate and misses from its tick and miss counters (first and last
    report inside), period jitter p99 as the mean (and the worst) of the p99s of its
    period windows taken one window apart, loop CPU as the mean of the reports."""
    with probe.lock:
        reports = [(t, values) for name, entries in probe.reports.items()
                   if name.startswith(prefix) for t, values in entries if start <= t <= end]
    if len(reports) < 2:
        return {}
    (t0, first), (t1, last) = reports[0], reports[-1]
    ticks = _f(last, "loop_ticks") - _f(first, "loop_ticks")
    misses = _f(last, "loop_misses") - _f(first, "loop_misses")
    windows, taken = [], -math.inf
    for t, values in reversed(reports):  # non-overlapping: one window's span apart
        span = _f(values, "period_count") * _f(values, "period_mean_s")
        if taken - t >= span or not windows:
            windows.append(_f(values, "jitter_p99_s", 1e6))
            taken = t
    cpu = [_f(values, "loop_cpu_fraction", 100.0) for _, values in reports]
    return {"loop_rate_hz": ticks / (t1 - t0) if t1 > t0 else math.nan,
            "loop_misses_pct": 100.0 * misses / ticks if ticks > 0 else math.nan,
            "loop_jitter_p99_us": float(np.mean(windows)),
            "loop_jitter_p99_worst_window_us": float(np.max(windows)),
            "loop_cpu_pct": float(np.mean(cpu))}


def _f(values: dict[str, str], key: str, scale: float = 1.0) -> float:
    try:
        return float(values[key]) * scale
    except (KeyError, ValueError):
        return math.nan


# ---------------------------------------------------------------------- scenarios
def scenario_topics(duration: float, log_dir: Path, loop: LoopSettings) -> dict[str, float]:
    results: dict[str, float] = {}
    command_topic = "/" + graph.DEFAULT_COMMAND_TOPIC
    with ProbeRunner() as probe, Processes(log_dir) as procs:
        probe.watch_arrivals(command_topic, Float64MultiArray)
        probe.watch_graph()
        procs.start("feeder", _self("feeder", "--rate", "1000"))
        with _graph(False, {}, log_dir, ("controller",), loop) as _robot:
            _wait(lambda: len(probe.arrivals[command_topic]) > 500, 30.0)
            start = time.monotonic()
            arrivals, called = _window(probe, command_topic, duration)
            time.sleep(DIAGNOSTICS_PERIOD)  # the report closing the window
            loop = _loop_figures(probe, "controller_node", start, time.monotonic())
    results.update({f"controller_{k}": v for k, v in _gaps(arrivals).items()})
    results["controller_callback_gap_p99_ms"] = _gaps(called)["gap_p99_ms"]
    results.update({f"controller_{k}": v for k, v in loop.items()})
    with ProbeRunner() as probe, Processes(log_dir) as procs:
        probe.watch_arrivals("/" + BASELINE_TOPIC, Float64MultiArray)
        procs.start("timer", _self("timer"))
        _wait(lambda: len(probe.arrivals["/" + BASELINE_TOPIC]) > 500, 30.0)
        arrivals, called = _window(probe, "/" + BASELINE_TOPIC, duration)
    results.update({f"timer_{k}": v for k, v in _gaps(arrivals).items()})
    results["timer_callback_gap_p99_ms"] = _gaps(called)["gap_p99_ms"]
    return results


def scenario_image(duration: float, log_dir: Path, loop: LoopSettings) -> dict[str, float]:
    topic = "/" + IMAGE_TOPIC
    with ProbeRunner() as probe, Processes(log_dir) as procs:
        probe.watch_latency(topic, Image)
        procs.start("camera", _self("camera", "--topic", IMAGE_TOPIC))
        _wait(lambda: len(probe.latencies[topic]) > 10, 30.0)
        probe.latencies[topic].clear()
        probe.callback_latencies[topic].clear()
        time.sleep(duration)
        latencies = np.asarray(probe.latencies[topic])
        called = np.asarray(probe.callback_latencies[topic])
    if latencies.size == 0:
        return {"image_p50_ms": math.nan, "image_p99_ms": math.nan, "image_rate_hz": 0.0}
    return {"image_p50_ms": float(np.percentile(latencies, 50)) * 1e3,
            "image_p99_ms": float(np.percentile(latencies, 99)) * 1e3,
            "image_callback_p50_ms": float(np.percentile(called, 50)) * 1e3,
            "image_callback_p99_ms": float(np.percentile(called, 99)) * 1e3,
            "image_rate_hz": latencies.size / duration}




def _run_episodes(probe: Probe, seed: int, count: int) -> tuple[int, float]:
    """``count`` nominal episodes through the services; (successes, sim seconds)."""
    successes, sim_seconds = 0, 0.0
    for index in range(count):
        request = ResetEpisode.Request(seed=seed + index, profile="nominal")
        episode = probe.call(ResetEpisode, "/" + graph.SIM_RESET, request).episode
        probe.call(Trigger, "/" + graph.POLICY_RESET, Trigger.Request())
        _wait(lambda episode=episode: probe.status is not None
              and probe.status.episode == episode and probe.status.done, 120.0)
        status = probe.status
        if status is not None and status.episode == episode:
            successes += int(status.success)
            sim_seconds += status.elapsed
    return successes, sim_seconds


def _role_figures(role: str, duration: float, timeout: float, *args: str) -> dict[str, float]:
    """Run ``role`` for ``duration`` s in a process of its own; the JSON line it prints last."""
    out = subprocess.run(_self(role, "--duration", str(duration), *args),
                         capture_output=True, text=True, timeout=duration + timeout,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def scenario_wakeup(duration: float, loop: LoopSettings) -> dict[str, float]:
    hogs = [_hog() for _ in range(os.cpu_count() or 1)]
    try:
        return _role_figures("wakeup", duration, 60.0, "--rt-priority", str(loop.rt_priority))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def scenario_compute(duration: float, loop: LoopSettings) -> dict[str, float]:
    return _role_figures("compute", duration, 120.0, "--rt-priority", str(loop.rt_priority),
                         "--gil-lead", str(loop.gil_lead))


def role_wakeup(duration: float, priority: int, rate: float = 1000.0) -> None:
    """Sleep to absolute deadlines at ``rate`` in a SCHED_FIFO thread; print the lateness
    figures as one JSON line."""
    period = round(1e9 / rate)
    late = np.empty(max(1, round(duration * rate)), dtype=np.int64)
    applied: list[str] = []

    def body() -> None:
        applied.extend(apply_realtime_settings(LoopConfig(priority=priority)).applied)
        deadline = time.monotonic_ns() + period
        for i in range(late.size):
            sleep_until_ns(deadline)
            late[i] = time.monotonic_ns() - deadline
            deadline += period

    thread = threading.Thread(target=body, name="wakeup")
    thread.start()
    thread.join()
    late_us = late * 1e-3
    print(json.dumps({
        "bare_late_p99_us": float(np.percentile(late_us, 99)),
        "bare_late_p999_us": float(np.percentile(late_us, 99.9)),
        "bare_late_max_us": float(late_us.max()),
        "bare_late_over_tolerance_pct": float(np.mean(late > MISS_TOLERANCE * period) * 100),
        "bare_sched_fifo": float(any("SCHED_FIFO" in a for a in applied)),
    }))


def role_compute(duration: float, priority: int, gil_lead: float,
                 frames: int = 100, ticks: int = 5000) -> None:
    """The graph's work without ROS, in this process (see ``compute`` in the module
    docstring); print its figures as one JSON line."""
    from visuomotor_sim.hardware import SimHardware, SimHardwareConfig

    config = SimHardwareConfig(lockstep=False)
    hardware = SimHardware(config, renderer=False)
    try:
        hardware.reset_episode(0, "nominal")
        tick = _sim_tick(hardware)
        tick_s = _back_to_back(tick, ticks)
        figures = _bare_loop(tick, duration, LoopConfig(priority=priority, gil_lead=gil_lead))
        stages = _chain_stages(hardware.world, frames, 1.0 / config.camera_rate_hz)
    finally:
        hardware.close()
    chain = stages.sum(axis=1)
    chain_p50 = float(np.percentile(chain, 50))
    per_frame = round(config.control_rate_hz / config.camera_rate_hz)
    overlap = round(config.lockstep_latency * config.control_rate_hz)
    frame_wall = max(chain_p50, overlap * tick_s) + (per_frame - overlap) * tick_s
    render, encode, step = (float(np.percentile(stages[:, k], 50)) * 1e3 for k in range(3))
    print(json.dumps({
        "tick_back_to_back_p50_us": tick_s * 1e6,
        **figures,
        "render_p50_ms": render, "encoder_p50_ms": encode, "policy_p50_ms": step,
        "chain_p50_ms": chain_p50 * 1e3,
        "chain_p99_ms": float(np.percentile(chain, 99)) * 1e3,
        "lockstep_ceiling": 1.0 / config.camera_rate_hz / frame_wall,
    }))


def _sim_tick(hardware: Any) -> Callable[[], None]:
    """The robot process's tick on ``hardware`` (SimHardware read → JointController
    update → write → physics step) without its ROS outputs, fed a moving target at the
    camera's rate as the policy would."""
    from visuomotor_core.controller import JointController
    from visuomotor_core.controller_config import ControllerConfig
    from visuomotor_core.hardware import JointSample
    from visuomotor_core.robot_model import RobotModel

    controller = JointController(ControllerConfig(), RobotModel.from_description(graph.robot()))
    controller.activate()
    sample = JointSample.zeros(len(hardware.joint_names))
    hardware.read(sample)
    home, target = sample.position.copy(), sample.position.copy()
    config = hardware.config
    per_frame = round(config.control_rate_hz / config.camera_rate_hz)

    def tick() -> None:
        hardware.read(sample)
        now = hardware.now()
        if hardware.counters.cycles % per_frame == 0:
            target[0] = home[0] + 0.2 * math.sin(now)
            controller.set_target(target, stamp=now, now=now)
        command = controller.update(now, sample.position, sample.velocity, sample.stamp)
        if command.valid:
            hardware.write(command.values, command.interface)
        hardware.cycle()

    return tick


def _back_to_back(tick: Callable[[], None], count: int) -> float:
    """Median cost of ``tick`` called ``count`` times in a row, s."""
    elapsed = np.empty(count)
    for i in range(count):
        start = time.perf_counter()
        tick()
        elapsed[i] = time.perf_counter() - start
    return float(np.percentile(elapsed, 50))


def _bare_loop(tick: Callable[[], None], duration: float,
               config: LoopConfig) -> dict[str, float]:
    """``tick`` in a ControlLoop for ``duration`` s after a second of warm-up: its thread's
    CPU share, rate, misses and period jitter p99."""
    control = ControlLoop(tick, config)
    control.start()
    try:
        time.sleep(1.0)
        first, window_start = replace(control.counters), time.monotonic()
        cpu: list[float] = []
        while time.monotonic() < window_start + duration:
            time.sleep(0.5)
            cpu.append(control.counters.cpu_fraction)
        last, window = replace(control.counters), time.monotonic() - window_start
        jitter_p99 = control.period_stats.summary().jitter_p99
        sched_fifo = any("SCHED_FIFO" in text for text in control.realtime.applied)
    finally:
        control.stop()
    ticks = last.ticks - first.ticks
    return {"loop_cpu_pct": float(np.mean(cpu)) * 100.0,
            "loop_rate_hz": ticks / window,
            "loop_misses_pct": 100.0 * (last.misses - first.misses) / max(ticks, 1),
            "loop_jitter_p99_us": jitter_p99 * 1e6,
            "loop_sched_fifo": float(sched_fifo)}


def _chain_stages(world: Any, frames: int, period: float) -> np.ndarray:
    """Render, encoder and policy step of ``frames`` frames, one after the other, a
    frame every ``period`` s (after 5 of warm-up): their times (frames, 3), s."""
    from visuomotor_core.encoder_runtime import EncoderRuntime
    from visuomotor_core.policy_runtime import load_policy_runtime
    from visuomotor_core.robot_model import RobotModel

    manifest = graph.model_path("manifest.json")
    encoder = EncoderRuntime(manifest)
    policy = load_policy_runtime(manifest, "policy", RobotModel.from_description(graph.robot()))
    stages = np.empty((frames, 3))
    for i in range(-5, frames):
        next_frame = time.monotonic() + period
        t0 = time.perf_counter()
        image = world.render()
        t1 = time.perf_counter()
        estimate = encoder.infer(image)
        t2 = time.perf_counter()
        q, qd, _ = world.joint_state()
        policy(q, qd, estimate.target_position)
        t3 = time.perf_counter()
        if i >= 0:
            stages[i] = (t1 - t0, t2 - t1, t3 - t2)
        time.sleep(max(0.0, next_frame - time.monotonic()))
    return stages


def scenario_sim_realtime(duration: float, log_dir: Path, loop: LoopSettings,
                          episodes: int) -> dict[str, float]:
    with ProbeRunner() as probe, _graph(True, {"step_mode": "realtime"}, log_dir,
                                        loop=loop) as _sim:
        probe.watch_graph()
        probe.watch_clock()
        _wait(lambda: bool(probe.values("controller_node")), 60.0)
        time.sleep(3.0)
        start = time.monotonic()
        successes, run = 0, 0
        while time.monotonic() - start < duration:
            ok, _ = _run_episodes(probe, 7000 + run, 1)
            successes, run = successes + ok, run + 1
        end = time.monotonic()
        time.sleep(DIAGNOSTICS_PERIOD)  # the report closing the window
        diag = probe.values("controller_node")
        loop = _loop_figures(probe, "controller_node", start, time.monotonic())
    return {
        "real_time_factor": _real_time_factor(probe, start, end),
        **loop,
        "camera_to_command_p99_ms": _f(diag, "camera_to_command_p99_ms"),
        "episodes": run, "success_pct": 100.0 * successes / run if run else math.nan,
    }


def scenario_sim_lockstep(episodes: int, log_dir: Path, loop: LoopSettings) -> dict[str, float]:
    with ProbeRunner() as probe, _graph(True, {"step_mode": "lockstep"}, log_dir) as _sim:
        probe.watch_graph()
        probe.watch_clock()
        _wait(lambda: bool(probe.values("controller_node")), 60.0)
        wall0 = time.monotonic()
        successes, sim_seconds = _run_episodes(probe, 0, episodes)
        wall1 = time.monotonic()
    return {"real_time_factor": _real_time_factor(probe, wall0, wall1),
            "episode_time_factor": sim_seconds / (wall1 - wall0), "episodes": episodes,
            "success_pct": 100.0 * successes / episodes}


def scenario_robot_camera(duration: float, log_dir: Path, loop: LoopSettings) -> dict[str, float]:
    targets_topic = "/" + graph.POLICY_TARGETS
    with ProbeRunner() as probe, Processes(log_dir) as procs:
        probe.watch_arrivals(targets_topic, JointTargets)
        probe.watch_graph()
        procs.start("feeder", _self("feeder", "--rate", "1000", "--no-targets"))
        procs.start("camera", _self("camera", "--topic", graph.CAMERA_IMAGE))
        with _graph(False, {}, log_dir, loop=loop) as _robot:
            _wait(lambda: len(probe.arrivals[targets_topic]) > 10, 60.0)
            time.sleep(2.0)
            probe.arrivals[targets_topic].clear()
            with probe.lock:
                probe.modes[:] = probe.modes[-1:]
            time.sleep(duration)
            targets = len(probe.arrivals[targets_topic])
            with probe.lock:
                switches = max(0, len(probe.modes) - 1)
    return {"targets_hz": targets / duration, "camera_hz": 30.0, "mode_switches": switches}


# ---------------------------------------------------------------------- helper roles
def role_feeder(rate: float, targets: bool) -> None:
    """Joint states at ``rate`` Hz (wall-clock stamps) from a deadline loop; 20 Hz targets."""
    from visuomotor_core.rt_loop import ControlLoop, LoopConfig
    from visuomotor_ros.bench_controller import FeederConfig, SyntheticFeeder

    rclpy.init()
    feeder = SyntheticFeeder(FeederConfig(state_rate_hz=1.0, target_rate_hz=20.0))
    feeder.states_enabled = False  # the loop below publishes the states
    feeder.targets_enabled = targets
    loop = ControlLoop(feeder.publish_state, LoopConfig(rate_hz=rate), name="feeder")
    loop.start()
    _spin_until_signal(feeder, loop.stop)


def role_timer() -> None:
    """The baseline: a bare rclpy 1 kHz timer publishing Float64MultiArray."""
    rclpy.init()
    node = Node("bench_timer")
    publisher = node.create_publisher(Float64MultiArray, BASELINE_TOPIC, LATEST_QOS)
    msg = Float64MultiArray(data=[0.0] * 7)
    node.create_timer(1e-3, lambda: publisher.publish(msg))
    _spin_until_signal(node)


def role_camera(topic: str, rate: float = 30.0) -> None:
    """640×480 rgb8 frames at ``rate`` Hz, stamped with the wall clock at publication, with
    their CameraInfo: the sim camera's vertical field of view on a 640×480 sensor, as a
    driver would publish it (the encoder uses its centre 480×480)."""
    from sensor_msgs.msg import CameraInfo

    from visuomotor_ros.image_conversion import numpy_to_image
    from visuomotor_sim.camera import CameraConfig, PinholeCamera

    rclpy.init()
    node = Node("bench_camera")
    publisher = node.create_publisher(Image, topic, SENSOR_QOS)
    info_publisher = node.create_publisher(CameraInfo, graph.CAMERA_INFO, SENSOR_QOS)
    camera = PinholeCamera(replace(CameraConfig(), width=640, height=480)).camera_info()
    info = CameraInfo(width=camera["width"], height=camera["height"],
                      distortion_model=camera["distortion_model"], d=camera["d"],
                      k=camera["k"], r=camera["r"], p=camera["p"])
    info.header.frame_id = camera["frame_id"]
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)

    def publish() -> None:
        msg = numpy_to_image(frame, encoding="rgb8")
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = camera["frame_id"]
        info.header.stamp = msg.header.stamp
        info_publisher.publish(info)
        publisher.publish(msg)

    node.create_timer(1.0 / rate, publish)
    _spin_until_signal(node)


def _spin_until_signal(node: Node, on_stop: Callable[[], None] | None = None) -> None:
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        if on_stop is not None:
            on_stop()
        node.destroy_node()
        rclpy.try_shutdown()


# ---------------------------------------------------------------------- report
TARGETS = {
    "wakeup": {"bare_late_over_tolerance_pct": "(misses <= 0.1)"},
    "compute": {"loop_cpu_pct": "(<= 25)", "loop_misses_pct": "(<= 0.1)",
                "chain_p99_ms": "(cam→cmd <= 5)", "lockstep_ceiling": "(>= 3)"},
    "topics": {"controller_rate_hz": ">= 995", "controller_gap_p99_ms": "<= 1.25",
               "controller_loop_misses_pct": "<= 0.1", "controller_loop_cpu_pct": "<= 25"},
    "image": {"image_p50_ms": "<= 1"},
    "sim_realtime": {"real_time_factor": "1.00 ± 0.02", "loop_rate_hz": ">= 999",
                     "loop_jitter_p99_us": "<= 250", "loop_misses_pct": "<= 0.1",
                     "camera_to_command_p99_ms": "<= 5", "success_pct": ">= 90"},
    "sim_lockstep": {"real_time_factor": ">= 3", "success_pct": ">= 90"},
    "robot_camera": {"targets_hz": "= camera (30)", "mode_switches": "0"},
}


def format_report(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    labels = list(runs)
    lines = ["scenario / figure".ljust(46) + "target".ljust(14)
             + "".join(label.rjust(14) for label in labels)]
    scenarios = [s for s in SCENARIOS if any(s in runs[label] for label in labels)]
    for scenario in scenarios:
        lines.append(f"{scenario}")
        keys = sorted({k for label in labels for k in runs[label].get(scenario, {})})
        for key in keys:
            row = f"  {key}".ljust(46) + TARGETS.get(scenario, {}).get(key, "").ljust(14)
            for label in labels:
                value = runs[label].get(scenario, {}).get(key, math.nan)
                row += f"{value:14.3f}" if isinstance(value, float) else f"{value:14}"
            lines.append(row)
    return "\n".join(lines)


def _hog() -> subprocess.Popen:
    """A process spinning on one core (the machine's other load)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"],
                            start_new_session=True)


def run(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    selected = args.only.split(",") if args.only else list(SCENARIOS)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    loop = LoopSettings(args.rt_priority, args.gil_lead)
    for label in ("quiet", "cpu hog") if args.hog else ("quiet",):
        hog = _hog() if label == "cpu hog" else None
        try:
            results: dict[str, dict[str, float]] = {}
            for scenario in selected:
                print(f"[bench] {label}: {scenario} ...", flush=True)
                if scenario == "wakeup":
                    results[scenario] = scenario_wakeup(min(args.duration, 30.0), loop)
                elif scenario == "compute":
                    results[scenario] = scenario_compute(min(args.duration, 30.0), loop)
                elif scenario == "topics":
                    results[scenario] = scenario_topics(args.duration, log_dir, loop)
                elif scenario == "image":
                    results[scenario] = scenario_image(min(args.duration, 20.0), log_dir,
                                                       loop)
                elif scenario == "sim_realtime":
                    results[scenario] = scenario_sim_realtime(
                        args.duration, log_dir, loop, args.episodes)
                elif scenario == "sim_lockstep":
                    results[scenario] = scenario_sim_lockstep(args.episodes, log_dir,
                                                              loop)
                elif scenario == "robot_camera":
                    results[scenario] = scenario_robot_camera(min(args.duration, 30.0),
                                                              log_dir, loop)
            runs[label] = results
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-realtime",
        description="Real-time figures of the deployed topology (one process per node).")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds measured per scenario (default 60)")
    parser.add_argument("--episodes", type=int, default=10,
                        help="lockstep episodes (default 10)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SCENARIOS}")
    parser.add_argument("--hog", action="store_true",
                        help="repeat with a process spinning on one core")
    parser.add_argument("--rt-priority", type=int, default=0,
                        help="SCHED_FIFO priority of the controller's loop thread (0: normal)")
    parser.add_argument("--gil-lead", type=float, default=LoopSettings.gil_lead,
                        help="s before each deadline the loop takes the GIL (gil_lead; "
                        "default as controller.yaml)")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID of the benchmark (default: 150 + pid %% 50)")
    parser.add_argument("--log-dir", default="/tmp/visuomotor-bench",
                        help="folder for the processes' logs")
    parser.add_argument("--role", choices=("feeder", "timer", "camera", "wakeup", "compute"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1000.0, help=argparse.SUPPRESS)
    parser.add_argument("--topic", default=IMAGE_TOPIC, help=argparse.SUPPRESS)
    parser.add_argument("--no-targets", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.role == "wakeup":
        role_wakeup(args.duration, args.rt_priority)
        return
    if args.role == "compute":
        role_compute(args.duration, args.rt_priority, args.gil_lead)
        return
    if args.role == "feeder":
        role_feeder(args.rate, not args.no_targets)
        return
    if args.role == "timer":
        role_timer()
        return
    if args.role == "camera":
        role_camera(args.topic)
        return
    domain = args.domain_id if args.domain_id is not None else 150 + os.getpid() % 50
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    runs = run(args)
    print(format_report(runs))


if __name__ == "__main__":
    main()
