"""Controller benchmark: node loop timing at 1 kHz, bare control-law cost, policy inference.

One run measures, on the wall clock of this machine:

1. the controller node's own loop (``trigger: deadline``, topics backend) for ``--seconds``, fed in
   the same process by a synthetic joint-state publisher and a 20 Hz target
   publisher, each node on an executor of its own (as the in-process runner
   spins them): period jitter p50/p99/max, deadline misses, achieved rate and
   the time one tick spends in the node;
2. the bare :meth:`JointController.update` cost p50/p99, the baseline the node
   tick is compared with;
3. the policy's inference time through :mod:`visuomotor_core.policy_runtime`
   (skipped, with "policy artifact missing", when ``policy.onnx`` is absent).

Usage: ``bench-controller [--seconds 30] [--rate-hz 1000] [--state-rate-hz 1000]``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from visuomotor_core.controller import JointController
from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.robot_model import RobotModel
from visuomotor_interfaces.msg import JointTargets
from visuomotor_ros import graph
from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS, seconds_to_time
from visuomotor_ros.runner import Spinner

#: Default DDS domains of the benchmark: this base plus the process id modulo 100.
PRIVATE_DOMAIN_BASE = 110
#: The robot described, and its home posture (rad), inside every joint range.
ROBOT = graph.robot()
HOME: tuple[float, ...] = ROBOT.home


@dataclass(frozen=True)
class FeederConfig:
    """Synthetic inputs of the controller.

    Attributes:
        home: joint positions published as the measured state, rad.
        state_rate_hz: joint-state rate, Hz (> 0).
        target_rate_hz: policy-target rate, Hz (> 0).
        amplitude: targets swing joint 1 by this much around ``home``, rad.
        swing_period: period of that swing, s (> 0).
        target_bias: constant offset of the targets' joint 1 from ``home``, rad.
    """

    home: tuple[float, ...] = HOME
    state_rate_hz: float = 1000.0
    target_rate_hz: float = 20.0
    amplitude: float = 0.05
    swing_period: float = 2.0
    target_bias: float = 0.0

    def __post_init__(self) -> None:
        if len(self.home) != ROBOT.n:
            raise ValueError(f"FeederConfig.home must have {ROBOT.n} entries")
        for name in ("state_rate_hz", "target_rate_hz", "swing_period"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"FeederConfig.{name} must be > 0, got {value!r}")
        if not (math.isfinite(self.amplitude) and self.amplitude >= 0.0):
            raise ValueError(f"FeederConfig.amplitude must be >= 0 rad, got {self.amplitude!r}")
        if not math.isfinite(self.target_bias):
            raise ValueError(f"FeederConfig.target_bias must be finite, got {self.target_bias!r}")


class SyntheticFeeder(Node):
    """Publishes ``joint_states`` (the arm standing at ``home``) and policy targets.

    Every message is stamped with this node's clock at publication. Set
    :attr:`states_enabled` / :attr:`targets_enabled` to False to stop a stream
    (a stalled driver or policy); :meth:`publish_target` sends one target by hand.
    """

    def __init__(self, config: FeederConfig | None = None, **kwargs: Any) -> None:
        super().__init__("controller_feeder", **kwargs)
        self.config = config or FeederConfig()
        self.states_enabled = True
        self.targets_enabled = True
        self.targets_sent = 0
        self.last_state_stamp = 0.0
        self.last_target_stamp = 0.0
        self._t0 = time.monotonic()
        self._state = JointState()
        self._state.name = list(ROBOT.arm_joints)
        self._state.position = list(self.config.home)
        self._state.velocity = [0.0] * ROBOT.n
        self._state.effort = [0.0] * ROBOT.n
        self._pub_state = self.create_publisher(JointState, graph.JOINT_STATES, SENSOR_QOS)
        self._pub_target = self.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
        self.create_timer(1.0 / self.config.state_rate_hz, self._on_state_timer)
        self.create_timer(1.0 / self.config.target_rate_hz, self._on_target_timer)

    def _on_state_timer(self) -> None:
        if self.states_enabled:
            self.publish_state()

    def publish_state(self) -> None:
        """Publish one joint state stamped now."""
        now = self.get_clock().now()
        self._state.header.stamp = now.to_msg()
        self._pub_state.publish(self._state)
        self.last_state_stamp = now.nanoseconds * 1e-9

    def _on_target_timer(self) -> None:
        if not self.targets_enabled:
            return
        c = self.config
        phase = 2.0 * math.pi * (time.monotonic() - self._t0) / c.swing_period
        positions = list(c.home)
        positions[0] += c.target_bias + c.amplitude * math.sin(phase)
        self.publish_target(positions)

    def publish_target(
        self, positions: Sequence[float], stamp_offset: float = 0.0,
        names: Sequence[str] | None = None,
    ) -> None:
        """Publish one JointTargets stamped now + ``stamp_offset`` (s)."""
        now = self.get_clock().now()
        msg = JointTargets()
        stamp = max(0.0, now.nanoseconds * 1e-9 + stamp_offset)
        msg.header.stamp = seconds_to_time(stamp)
        msg.header.frame_id = ROBOT.base_frame
        msg.name = list(ROBOT.arm_joints if names is None else names)
        msg.position = [float(v) for v in positions]
        msg.policy_stamp = now.to_msg()
        self._pub_target.publish(msg)
        self.targets_sent += 1
        self.last_target_stamp = stamp


def _percentiles_us(samples: np.ndarray) -> tuple[float, float, float]:
    p50, p99 = np.percentile(samples, (50.0, 99.0))
    return float(p50) * 1e6, float(p99) * 1e6, float(samples.max()) * 1e6


def bench_node_loop(seconds: float, rate_hz: float, state_rate_hz: float,
                    executor: str = "single") -> dict[str, float]:
    """Run the controller node on the wall clock for ``seconds``; loop timing figures."""
    from visuomotor_ros.controller_node import ControllerNode

    period = 1.0 / rate_hz
    capacity = max(100, int(seconds * rate_hz * 1.2))
    context = Context()
    rclpy.init(context=context)
    spinner = Spinner(context, executor)
    nodes: list[Node] = []
    try:
        controller = ControllerNode(context=context, parameter_overrides=[
            Parameter("rate_hz", value=float(rate_hz)),
            Parameter("trigger", value="deadline"),
            Parameter("stats_window", value=capacity),
        ])
        nodes.append(spinner.add(controller))
        feeder = SyntheticFeeder(FeederConfig(state_rate_hz=state_rate_hz), context=context)
        nodes.append(spinner.add(feeder))
        time.sleep(0.5)  # warm-up: discovery, first state and target
        controller.loop.period_stats.reset()
        controller.latency.reset()
        time.sleep(seconds)
        summary = controller.loop.period_stats.summary()
        tick = controller.latency.summary("tick_compute")
        status = controller.controller.status()
    finally:
        spinner.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return {
        "seconds": seconds,
        "nominal_period_ms": period * 1e3,
        "ticks": summary.count,
        "rate_hz": summary.rate_hz,
        "jitter_p50_us": summary.jitter_p50 * 1e6,
        "jitter_p99_us": summary.jitter_p99 * 1e6,
        "jitter_max_us": summary.jitter_max * 1e6,
        "deadline_misses": summary.total_deadline_misses,
        "tick_p50_us": tick.p50 * 1e6,
        "tick_p99_us": tick.p99 * 1e6,
        "mode": status["mode"],
        "targets_accepted": status["targets_accepted"],
        "targets_refused": status["targets_refused"],
    }


def bench_bare_update(iterations: int = 20000) -> dict[str, float]:
    """Cost of one :meth:`JointController.update` (effort interface, tracking), s → µs."""
    config = ControllerConfig()
    model = RobotModel.from_description(ROBOT)
    controller = JointController(config, model)
    controller.activate()
    q = np.asarray(HOME, dtype=np.float64)
    qd = np.zeros_like(q)
    target = q.copy()
    period = config.period
    samples = np.empty(iterations)
    now = 1.0
    controller.update(now, q, qd, now)
    for i in range(iterations):
        now += period
        if i % 50 == 0:  # a fresh target at 20 Hz keeps it tracking
            target[0] = HOME[0] + 0.05 * math.sin(i * period)
            controller.set_target(target, stamp=now, now=now)
        start = time.perf_counter()
        controller.update(now, q, qd, now)
        samples[i] = time.perf_counter() - start
    p50, p99, peak = _percentiles_us(samples)
    return {"update_p50_us": p50, "update_p99_us": p99, "update_max_us": peak,
            "mode": controller.mode.value}


def bench_policy(iterations: int = 500, artifacts: Path | None = None) -> dict[str, float] | None:
    """Policy inference time (ONNX Runtime, CPU, one thread); None when the artifact is missing."""
    from visuomotor_core.policy_runtime import load_policy_runtime

    folder = artifacts or graph.model_path("manifest.json").parent
    if not (folder / "policy.onnx").is_file() or not (folder / "manifest.json").is_file():
        return None
    model = RobotModel.from_description(ROBOT)
    runtime = load_policy_runtime(folder / "manifest.json", "policy", model)
    q = np.asarray(HOME, dtype=np.float64)
    qd = np.zeros_like(q)
    target = np.array([0.5, 0.1, 0.3])
    for _ in range(20):  # warm-up
        runtime(q, qd, target)
    infer = np.empty(iterations)
    step = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        out = runtime(q, qd, target)
        step[i] = time.perf_counter() - start
        infer[i] = out.inference_time
    i50, i99, _ = _percentiles_us(infer)
    s50, s99, _ = _percentiles_us(step)
    return {"inference_p50_us": i50, "inference_p99_us": i99,
            "step_p50_us": s50, "step_p99_us": s99}


def format_report(loop: dict[str, Any], bare: dict[str, Any],
                  policy: dict[str, Any] | None) -> str:
    """The compact table printed by :func:`main`."""
    ratio_p50 = loop["tick_p50_us"] / bare["update_p50_us"] if bare["update_p50_us"] else math.nan
    ratio_p99 = loop["tick_p99_us"] / bare["update_p99_us"] if bare["update_p99_us"] else math.nan
    rows = [
        ("controller node loop", f"{loop['seconds']:.0f} s at "
         f"{1e3 / loop['nominal_period_ms']:.0f} Hz nominal, wall clock, mode {loop['mode']}"),
        ("  achieved rate", f"{loop['rate_hz']:.1f} Hz over {loop['ticks']} ticks"),
        ("  period jitter p50 / p99 / max",
         f"{loop['jitter_p50_us']:.0f} / {loop['jitter_p99_us']:.0f} / "
         f"{loop['jitter_max_us']:.0f} µs"),
        ("  deadline misses", f"{loop['deadline_misses']} "
         f"({100.0 * loop['deadline_misses'] / max(loop['ticks'], 1):.3f} %)"),
        ("  targets accepted / refused",
         f"{loop['targets_accepted']} / {loop['targets_refused']}"),
        ("  node tick p50 / p99", f"{loop['tick_p50_us']:.0f} / {loop['tick_p99_us']:.0f} µs"),
        ("bare JointController.update p50 / p99",
         f"{bare['update_p50_us']:.1f} / {bare['update_p99_us']:.1f} µs"),
        ("node tick / bare update", f"{ratio_p50:.1f}x (p50), {ratio_p99:.1f}x (p99)"),
    ]
    if policy is None:
        rows.append(("policy inference", "policy artifact missing (skipped)"))
    else:
        rows.append(("policy inference p50 / p99",
                     f"{policy['inference_p50_us']:.0f} / {policy['inference_p99_us']:.0f} µs"))
        rows.append(("policy step (features, sag estimate, inference) p50 / p99",
                     f"{policy['step_p50_us']:.0f} / {policy['step_p99_us']:.0f} µs"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench-controller",
        description="Measure the actuator controller: the node's loop on the wall clock (fed by "
        "synthetic joint states and 20 Hz targets, one executor per node), the bare control "
        "law, and the policy's inference time. Prints one table.",
    )
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="duration of the node loop measurement, s (default 30)")
    parser.add_argument("--rate-hz", type=float, default=1000.0,
                        help="controller rate, Hz (default 1000)")
    parser.add_argument("--state-rate-hz", type=float, default=1000.0,
                        help="synthetic joint-state rate, Hz (default 1000)")
    parser.add_argument("--executor", choices=("single", "multi"), default="single",
                        help="executor per node: SingleThreaded (default) or MultiThreaded")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="DDS domain of the benchmark's own graph (default: ROS_DOMAIN_ID "
                        "when set, else a private one derived from the process id, so other "
                        "ROS graphs on this network neither disturb nor see it)")
    parser.add_argument("--update-iterations", type=int, default=20000,
                        help="calls of the bare update timed (default 20000)")
    parser.add_argument("--policy-iterations", type=int, default=500,
                        help="policy inferences timed (default 500)")
    return parser


def _isolate(domain_id: int | None) -> None:
    """Run the benchmark's graph on its own DDS domain, discovered on this host only."""
    if domain_id is None and "ROS_DOMAIN_ID" in os.environ:
        return
    domain = domain_id if domain_id is not None else PRIVATE_DOMAIN_BASE + os.getpid() % 100
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def main(args: Sequence[str] | None = None) -> None:
    options = _parser().parse_args(args)
    if options.seconds <= 0.0 or options.rate_hz <= 0.0 or options.state_rate_hz <= 0.0:
        raise SystemExit("--seconds, --rate-hz and --state-rate-hz must be > 0")
    _isolate(options.domain_id)
    bare = bench_bare_update(options.update_iterations)
    policy = bench_policy(options.policy_iterations)
    if policy is None:
        print("policy artifact missing")
    loop = bench_node_loop(options.seconds, options.rate_hz, options.state_rate_hz,
                           options.executor)
    print(format_report(loop, bare, policy))


if __name__ == "__main__":
    main()
