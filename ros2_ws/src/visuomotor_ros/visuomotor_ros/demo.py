"""The main job: the full graph, headless, on the committed models; prints a report.

    python -m visuomotor_ros.demo --episodes 10 --profile nominal --seed 0
    python -m visuomotor_ros.demo --episodes 3 --record runs/demo_bag
    python -m visuomotor_ros.demo --robot iiwa --expert --episodes 5

Sim, encoder, policy and controller run as separate rclpy nodes in one process
(the in-process runner, same parameter files as ``ros2 launch``) on sim time,
the sim stepping in lockstep with the 1 kHz controller. A supervisor node
resets each episode through ``sim/reset_episode`` (then ``policy/reset``: new
dynamics, new target), waits for the task to end and collects rates and per-stage
latencies from the loop's own topics. ``--expert`` puts the simulator's privileged
expert in place of the encoder and policy (no learned model: any robot with a
description runs, ``--robot iiwa``). Exit status: 0 when the success rate reaches
``--min-success``, 1 otherwise, 2 when the loop stalled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from geometry_msgs.msg import PointStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from visuomotor_core.estimate_metrics import (
    CONFIDENT,
    format_band,
    goal_met,
    samples_by_hand_distance,
)
from visuomotor_core.robot_description import DEFAULT_ROBOT
from visuomotor_interfaces.msg import ControllerState, EncoderFeatures, JointTargets, TaskStatus
from visuomotor_interfaces.srv import ResetEpisode
from visuomotor_ros import graph
from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS, JointOrder, time_to_seconds
from visuomotor_ros.runner import GraphRunner

#: Camera frames remembered while waiting for their policy targets (~5 s at 20 Hz).
_MAX_PENDING_FRAMES = 100
#: Task statuses remembered to place estimates (~5 s at 20 Hz).
_MAX_STATUSES = 100
#: An estimate is compared with the task status nearest its stamp, within this, s.
_STATUS_MATCH_S = 0.03


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    error: float
    time_to_success: float
    elapsed: float


@dataclass
class LoopStats:
    """Rates and latencies gathered by the supervisor (wall clock unless noted)."""

    image_wall: dict[float, float] = field(default_factory=dict)
    encoder_latency: list[float] = field(default_factory=list)
    policy_latency: list[float] = field(default_factory=list)
    encoder_inference: list[float] = field(default_factory=list)
    policy_inference: list[float] = field(default_factory=list)
    camera_to_command_sim: list[float] = field(default_factory=list)
    frames: int = 0
    #: (commands received by the robot, sim time s) at the first and latest sim diagnostics.
    robot_commands: list[tuple[float, float]] = field(default_factory=list)
    jitter_p99: float = float("nan")
    deadline_misses: int = 0
    #: Target estimates against the truth: (hand–target distance m, error m, confidence).
    #: ``estimate``: the encoder's per-frame estimate (features); ``goal``: the policy's
    #: goal (the estimates filtered by confidence: what the policy acts on; confidence 1).
    estimate_errors: list[tuple[float, float, float]] = field(default_factory=list)
    goal_errors: list[tuple[float, float, float]] = field(default_factory=list)

    def errors_by_band(self, kind: str, min_confidence: float = 0.0) -> dict:
        """``estimate`` or ``goal`` errors by hand–target distance band, of the samples at
        least ``min_confidence`` confident."""
        return samples_by_hand_distance(getattr(self, f"{kind}_errors"), min_confidence)

    def control_rate(self) -> float:
        """Commands the robot received per second of sim time (nan before two reports)."""
        samples = self.robot_commands
        if len(samples) < 2 or samples[-1][1] <= samples[0][1]:
            return float("nan")
        return (samples[-1][0] - samples[0][0]) / (samples[-1][1] - samples[0][1])


class Supervisor(Node):
    """Drives episodes and listens to the loop (not part of the graph itself)."""

    def __init__(self, context) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image

        super().__init__("demo_supervisor", context=context)
        self.stats = LoopStats()
        self.status: TaskStatus | None = None
        self._lock = threading.Lock()
        self.reset_client = self.create_client(ResetEpisode, graph.SIM_RESET)
        self.policy_reset_client = self.create_client(Trigger, graph.POLICY_RESET)
        self.create_subscription(TaskStatus, graph.TASK_STATUS, self._on_status, 10)
        self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)
        self.create_subscription(EncoderFeatures, graph.ENCODER_FEATURES, self._on_features, 10)
        self.create_subscription(JointTargets, graph.POLICY_TARGETS, self._on_targets, 10)
        self.create_subscription(ControllerState, graph.CONTROLLER_STATE, self._on_state, 10)
        self.create_subscription(DiagnosticArray, graph.DIAGNOSTICS, self._on_diagnostics, 10)
        self.create_subscription(PointStamped, graph.POLICY_GOAL, self._on_goal, 10)
        #: Recent task statuses: (stamp s, episode start s, target, grasp point), m.
        self._statuses: list[tuple[float, float, np.ndarray, np.ndarray]] = []

    def _on_status(self, msg: TaskStatus) -> None:
        stamp = time_to_seconds(msg.header.stamp)
        target = np.array([msg.target_position.x, msg.target_position.y, msg.target_position.z])
        grasp = np.array([msg.grasp_position.x, msg.grasp_position.y, msg.grasp_position.z])
        with self._lock:
            self.status = msg
            self._statuses.append((stamp, stamp - msg.elapsed, target, grasp))
            del self._statuses[:-_MAX_STATUSES]

    def _on_goal(self, msg: PointStamped) -> None:
        self._record_estimate("goal", msg.header.stamp, msg.point, 1.0)

    def _record_estimate(self, kind: str, stamp, point, confidence: float) -> None:
        """Compare an estimate with the true target of the task status nearest its stamp
        (same episode, within _STATUS_MATCH_S), placed by that status's hand distance."""
        stamp = time_to_seconds(stamp)
        with self._lock:
            statuses = list(self._statuses)
        if not statuses:
            return
        when, start, target, grasp = min(statuses, key=lambda s: abs(s[0] - stamp))
        if abs(when - stamp) > _STATUS_MATCH_S or stamp < start:
            return
        estimate = np.array([point.x, point.y, point.z])
        getattr(self.stats, f"{kind}_errors").append(
            (float(np.linalg.norm(grasp - target)), float(np.linalg.norm(estimate - target)),
             confidence))

    def _on_image(self, msg) -> None:
        self.stats.frames += 1
        pending = self.stats.image_wall
        pending[time_to_seconds(msg.header.stamp)] = time.perf_counter()
        if len(pending) > _MAX_PENDING_FRAMES:  # frames the encoder dropped never get targets
            del pending[next(iter(pending))]

    def _on_features(self, msg: EncoderFeatures) -> None:
        sent = self.stats.image_wall.get(time_to_seconds(msg.header.stamp))
        if sent is not None:
            self.stats.encoder_latency.append(time.perf_counter() - sent)
        self.stats.encoder_inference.append(msg.inference_time)
        self._record_estimate("estimate", msg.header.stamp, msg.target_position,
                              float(msg.confidence))

    def _on_targets(self, msg: JointTargets) -> None:
        stamp = time_to_seconds(msg.header.stamp)
        sent = self.stats.image_wall.pop(stamp, None)
        if sent is not None:
            self.stats.policy_latency.append(time.perf_counter() - sent)
        self.stats.policy_inference.append(msg.inference_time)

    def _on_state(self, msg: ControllerState) -> None:
        if msg.end_to_end_latency > 0.0:
            self.stats.camera_to_command_sim.append(msg.end_to_end_latency)
        self.stats.jitter_p99 = msg.period_jitter_p99
        self.stats.deadline_misses = msg.deadline_misses

    def _on_diagnostics(self, msg) -> None:
        """Keep the sim's own count of commands it received, against sim time."""
        for status in msg.status:
            if not status.name.startswith("sim_node"):
                continue
            values = {kv.key: kv.value for kv in status.values}
            if "commands" in values and "sim_time_s" in values:
                sample = (float(values["commands"]), float(values["sim_time_s"]))
                del self.stats.robot_commands[1:]
                self.stats.robot_commands.append(sample)

    def latest_status(self) -> TaskStatus | None:
        with self._lock:
            return self.status

    def reset(self, seed: int, profile: str, timeout: float = 30.0) -> int:
        """New sim episode, then a policy reset (a new reach: new dynamics, new target)."""
        response = self._call(self.reset_client, graph.SIM_RESET,
                              ResetEpisode.Request(seed=seed, profile=profile), timeout)
        self._call(self.policy_reset_client, graph.POLICY_RESET, Trigger.Request(), timeout)
        return response.episode

    @staticmethod
    def _call(client, name: str, request, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service '{name}' did not appear in {timeout} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer")
            time.sleep(0.01)
        response = future.result()
        if not response.success:
            raise RuntimeError(f"{name} refused: {response.message}")
        return response


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


class OracleEncoder(Node):
    """Diagnostic stand-in for the encoder: publishes the sim's TRUE target position as
    the features of every camera frame (same topic, same stamps). Running the loop with
    it isolates the policy and controller from perception error."""

    def __init__(self, context, robot: str = DEFAULT_ROBOT) -> None:
        from sensor_msgs.msg import Image

        super().__init__("oracle_encoder", context=context)
        self._target = None
        self._base_frame = graph.robot(robot).base_frame
        self._pub = self.create_publisher(EncoderFeatures, graph.ENCODER_FEATURES, 10)
        self.create_subscription(TaskStatus, graph.TASK_STATUS, self._on_status, 10)
        self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)

    def _on_status(self, msg: TaskStatus) -> None:
        self._target = msg.target_position

    def _on_image(self, msg) -> None:
        if self._target is None:
            return
        features = EncoderFeatures(
            header=msg.header, target_position=self._target, target_frame_id=self._base_frame,
            confidence=1.0, model_sha256="oracle",
        )
        self._pub.publish(features)


class ExpertPolicy(Node):
    """Diagnostic stand-in for the encoder and the policy (``--expert``): the simulator's
    privileged expert (:mod:`visuomotor_sim.expert`) acts on every camera frame with what
    only the simulator knows — the true target and the episode's dynamics, read from the
    sim's world in this process — and publishes joint targets as the policy does (same
    topic, the frame's stamp, ``q + action * action_scale``). It needs no learned model,
    so every robot with a description runs the loop with it. ``policy/reset`` restarts
    its integral with the new episode's dynamics, as the supervisor calls it."""

    def __init__(self, context, world, robot: str = DEFAULT_ROBOT) -> None:
        from sensor_msgs.msg import Image

        from visuomotor_sim.expert import ExpertConfig, ReachExpert

        super().__init__("expert_policy", context=context)
        self._world = world
        self._robot = graph.robot(robot)
        self._expert = ReachExpert(ExpertConfig(robot=robot, kp=self._robot.kp))
        self._order = JointOrder(self._robot.arm_joints)
        self._q: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._lock = threading.Lock()
        self._pub = self.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
        self.create_subscription(JointState, graph.JOINT_STATES, self._on_joint_state,
                                 SENSOR_QOS)
        self.create_subscription(TaskStatus, graph.TASK_STATUS, self._on_status, 10)
        self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)
        self.create_service(Trigger, graph.POLICY_RESET, self._on_reset)

    def _on_joint_state(self, msg: JointState) -> None:
        index = self._order.index(msg.name)
        if index is None or len(msg.position) != len(msg.name):
            return
        q = np.asarray(msg.position, np.float64)[index]
        if np.all(np.isfinite(q)):
            self._q = q

    def _on_status(self, msg: TaskStatus) -> None:
        p = msg.target_position
        self._target = np.array([p.x, p.y, p.z])

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            self._expert.reset(self._world.dynamics)
        response.success, response.message = True, "expert reset with the episode's dynamics"
        return response

    def _on_image(self, msg) -> None:
        q, target = self._q, self._target
        if q is None or target is None:
            return
        start = time.perf_counter()
        with self._lock:
            action = self._expert.act(q, target)
        targets = JointTargets()
        targets.header.stamp = msg.header.stamp
        targets.header.frame_id = self._robot.base_frame
        targets.name = list(self._robot.arm_joints)
        targets.position = (q + action * self._expert.config.action_scale).tolist()
        targets.policy_stamp = self.get_clock().now().to_msg()
        targets.inference_time = time.perf_counter() - start
        self._pub.publish(targets)

    def destroy_node(self) -> None:
        self._expert.close()
        super().destroy_node()


def run_episodes(
    episodes: int,
    seed: int,
    profile: str,
    record: Path | None = None,
    wall_timeout: float = 180.0,
    overrides: dict | None = None,
    oracle_target: bool = False,
    robot: str = DEFAULT_ROBOT,
    expert: bool = False,
) -> tuple[list[EpisodeResult], LoopStats, float, float]:
    """Run ``episodes`` episodes; returns (results, stats, sim seconds, wall seconds).

    ``robot`` names the robot description every node reads. ``oracle_target`` replaces
    the encoder node by :class:`OracleEncoder`; ``expert`` replaces the encoder and the
    policy by :class:`ExpertPolicy`.
    """
    node_overrides: dict[str, dict] = {
        role: {"robot": robot} for role in (spec.role for spec in graph.nodes(sim=True))}
    node_overrides["sim"].update(profile=profile, seed=seed, start_episode=False)
    for role, values in (overrides or {}).items():
        node_overrides.setdefault(role, {}).update(values)
    roles = [spec.role for spec in graph.nodes(sim=True)]
    if oracle_target or expert:
        roles.remove("encoder")
    if expert:
        roles.remove("policy")
    runner = GraphRunner(sim=True, use_sim_time=True, overrides=node_overrides, roles=roles)
    results: list[EpisodeResult] = []
    recorder = None
    with runner:
        policy = runner.nodes.get("policy")
        if policy is not None and getattr(policy, "configure_error", ""):
            raise RuntimeError(f"policy node: {policy.configure_error}")
        supervisor = Supervisor(runner.context)
        runner.add_node(supervisor)
        if expert:
            runner.add_node(ExpertPolicy(runner.context, runner.nodes["sim"].hardware.world,
                                         robot))
        elif oracle_target:
            runner.add_node(OracleEncoder(runner.context, robot))
        if record is not None:
            from visuomotor_ros.recording import BagRecorder

            recorder = BagRecorder(supervisor, record)
        wall_start = time.perf_counter()
        sim_start = None
        try:
            for index in range(episodes):
                episode_seed = seed + index
                episode = supervisor.reset(episode_seed, profile)
                status = _wait_for_end(supervisor, episode, wall_timeout)
                if sim_start is None:
                    sim_start = 0.0
                results.append(
                    EpisodeResult(
                        seed=episode_seed,
                        success=status.success,
                        error=status.error,
                        time_to_success=status.time_to_success,
                        elapsed=status.elapsed,
                    )
                )
                outcome = (
                    f"success in {status.time_to_success:.2f} s" if status.success else "FAIL"
                )
                print(
                    f"episode {index + 1}/{episodes} seed {episode_seed}: {outcome}, "
                    f"final error {status.error * 100:.2f} cm",
                    flush=True,
                )
        finally:
            if recorder is not None:
                recorder.close()
        wall = time.perf_counter() - wall_start
    sim_seconds = sum(r.elapsed for r in results)
    return results, supervisor.stats, sim_seconds, wall


def _wait_for_end(supervisor: Supervisor, episode: int, wall_timeout: float) -> TaskStatus:
    deadline = time.monotonic() + wall_timeout
    while time.monotonic() < deadline:
        status = supervisor.latest_status()
        if status is not None and status.episode == episode and status.done:
            return status
        time.sleep(0.02)
    raise TimeoutError(f"episode {episode} did not finish within {wall_timeout} s of wall time")


def format_report(
    results: list[EpisodeResult], stats: LoopStats, sim_seconds: float, wall: float, profile: str
) -> str:
    n = len(results)
    successes = [r for r in results if r.success]
    errors = np.array([r.error for r in results]) * 100.0
    tts = [r.time_to_success for r in successes]
    enc50, enc99 = _percentiles(stats.encoder_latency)
    pol50, pol99 = _percentiles(stats.policy_latency)
    ei50, ei99 = _percentiles(stats.encoder_inference)
    pi50, pi99 = _percentiles(stats.policy_inference)
    e2e50, e2e99 = _percentiles(stats.camera_to_command_sim)
    median_tts = np.median(tts) if tts else float("nan")
    lines = [
        "",
        f"visuomotor closed loop — profile '{profile}', {n} episodes",
        f"  success rate            {len(successes)}/{n} "
        f"= {100.0 * len(successes) / max(n, 1):.0f}%",
        f"  final error             median {np.median(errors):.2f} cm, max {errors.max():.2f} cm",
        f"  time to success         median {median_tts:.2f} s",
        f"  sim time / wall time    {sim_seconds:.1f} s / {wall:.1f} s "
        f"(real-time factor {sim_seconds / max(wall, 1e-9):.2f})",
        f"  control rate            {stats.control_rate():.0f} Hz sim time (commands the sim "
        f"received), {stats.control_rate() * sim_seconds / max(wall, 1e-9):.0f} Hz wall",
        f"  camera rate             {stats.frames / max(sim_seconds, 1e-9):.1f} Hz sim time, "
        f"{stats.frames / max(wall, 1e-9):.1f} Hz wall",
        "  latency per stage (p50 / p99)",
        f"    encoder inference             {ei50 * 1e3:7.2f} / {ei99 * 1e3:7.2f} ms wall",
        f"    camera -> encoder features    {enc50 * 1e3:7.2f} / {enc99 * 1e3:7.2f} ms wall",
        f"    policy inference              {pi50 * 1e3:7.2f} / {pi99 * 1e3:7.2f} ms wall",
        f"    camera -> policy targets      {pol50 * 1e3:7.2f} / {pol99 * 1e3:7.2f} ms wall",
        f"    camera -> joint command       {e2e50 * 1e3:7.2f} / {e2e99 * 1e3:7.2f} ms sim time",
        f"  controller period jitter p99    {stats.jitter_p99 * 1e6:.0f} us wall, "
        f"deadline misses {stats.deadline_misses}",
        "  target estimate error by hand-target distance, median / p95 cm (count)",
    ]
    for kind, confidence, label in (("estimate", 0.0, "encoder, every frame"),
                                    ("estimate", CONFIDENT, "encoder, confident"),
                                    ("goal", 0.0, "goal, filtered")):
        bands = stats.errors_by_band(kind, confidence)
        cells = [f"{name} {format_band(band)}" for name, band in bands.items()]
        met = "goal met" if goal_met(bands) else "goal not met"
        lines.append(f"    {label:<20} " + ", ".join(cells) + f"  [{met}]")
    return "\n".join(lines)


def report_record(
    results: list[EpisodeResult], stats: LoopStats, sim_seconds: float, wall: float, profile: str
) -> dict:
    """The report as plain data (``--json``): per-episode results and per-stage latency
    samples (s; wall clock except ``camera_to_command_sim``, sim time)."""
    return {
        "profile": profile,
        "episodes": [
            {"seed": r.seed, "success": bool(r.success), "error_m": float(r.error),
             "time_to_success_s": float(r.time_to_success), "elapsed_s": float(r.elapsed)}
            for r in results
        ],
        "sim_seconds": float(sim_seconds),
        "wall_seconds": float(wall),
        "control_rate_hz": float(stats.control_rate()),
        "camera_frames": int(stats.frames),
        "controller_jitter_p99_s": float(stats.jitter_p99),
        "deadline_misses": int(stats.deadline_misses),
        "target_error_by_hand_distance": {
            "estimate": stats.errors_by_band("estimate"),
            "estimate_confident": stats.errors_by_band("estimate", CONFIDENT),
            "goal": stats.errors_by_band("goal")},
        "target_error_samples_m": {"estimate": stats.estimate_errors,
                                   "goal": stats.goal_errors},
        "latency_samples_s": {
            "encoder_inference": stats.encoder_inference,
            "camera_to_encoder_features": stats.encoder_latency,
            "policy_inference": stats.policy_inference,
            "camera_to_policy_targets": stats.policy_latency,
            "camera_to_joint_command_sim": stats.camera_to_command_sim,
        },
    }


def parse_param_overrides(items: list[str]) -> dict[str, dict]:
    """``["policy.goal_smoothing=0.2", ...]`` -> ``{"policy": {"goal_smoothing": 0.2}}``;
    values are read as YAML scalars (numbers, booleans, strings, lists)."""
    roles = {spec.role for spec in graph.nodes(sim=True)}
    overrides: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition("=")
        role, dot, name = key.partition(".")
        if not (sep and dot and name) or role not in roles:
            raise ValueError(f"--param {item!r}: expected ROLE.NAME=VALUE with ROLE one of "
                             f"{sorted(roles)}")
        overrides.setdefault(role, {})[name] = yaml.safe_load(text)
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes (10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (0)")
    parser.add_argument(
        "--profile", default="nominal",
        help="domain-randomization profile (nominal); any profile of the sim's randomization "
        "YAML (nominal, training, heldout, ...), an unknown one is refused",
    )
    parser.add_argument(
        "--randomization", type=Path, metavar="YAML",
        help="the sim's randomization YAML for this run instead of the shipped one (sets "
        "$VISUOMOTOR_RANDOMIZATION, see visuomotor_sim.randomization)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH",
        help="also write the report as JSON to PATH: per-episode results and every "
        "per-stage latency sample",
    )
    parser.add_argument(
        "--record", type=Path, metavar="BAG_DIR",
        help="record every loop topic into this new rosbag2 bag directory (MCAP storage; "
        "`ros2 bag info BAG_DIR` reads it); an existing non-empty one is refused",
    )
    parser.add_argument(
        "--min-success", type=float, default=0.9,
        help="success rate below which the loop counts as failed (exit status 1); default 0.9, "
        "the project's goal in the nominal profile (the CI test asserts the same)",
    )
    parser.add_argument(
        "--episode-wall-timeout", type=float, default=180.0,
        help="give up when an episode takes longer than this much wall time (s)",
    )
    parser.add_argument(
        "--gui", action="store_true",
        help="show the PyBullet GUI (needs a display; the loop itself stays the same)",
    )
    parser.add_argument(
        "--oracle-target", action="store_true",
        help="diagnostic: replace the encoder by the sim's true target (isolates perception)",
    )
    parser.add_argument(
        "--robot", default=DEFAULT_ROBOT,
        help=f"robot description every node reads ({DEFAULT_ROBOT}); the committed "
        "models were trained for one robot and refuse another: use --expert for the others",
    )
    parser.add_argument(
        "--expert", action="store_true",
        help="diagnostic: the simulator's privileged expert (true target, true dynamics) "
        "in place of the encoder and the policy; runs any robot with a description",
    )
    parser.add_argument(
        "--domain-id", type=int,
        help="ROS_DOMAIN_ID of the graph (default: the environment's), e.g. to watch it in RViz",
    )
    parser.add_argument(
        "--param", action="append", default=[], metavar="ROLE.NAME=VALUE",
        help="override a node parameter from its config YAML for this run, e.g. "
        "policy.goal_smoothing=0.2 or policy.manifest_path=runs/p/manifest.json "
        f"(roles: {', '.join(spec.role for spec in graph.nodes(sim=True))}); repeatable",
    )
    args = parser.parse_args(argv)
    if args.domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)
    if args.randomization is not None:
        if not args.randomization.is_file():
            parser.error(f"--randomization {args.randomization}: no such file")
        os.environ["VISUOMOTOR_RANDOMIZATION"] = str(args.randomization.resolve())
    try:
        graph.robot(args.robot)
    except (OSError, ValueError) as error:
        parser.error(f"--robot {args.robot}: {error}")
    try:
        overrides = parse_param_overrides(args.param)
    except ValueError as error:
        parser.error(str(error))
    if args.gui:
        overrides.setdefault("sim", {})["gui"] = True
    if args.record is not None:
        from visuomotor_ros.recording import check_bag_path

        try:
            check_bag_path(args.record)
        except FileExistsError as error:
            parser.error(str(error))
    try:
        results, stats, sim_seconds, wall = run_episodes(
            args.episodes, args.seed, args.profile, args.record,
            args.episode_wall_timeout, overrides, args.oracle_target, args.robot, args.expert,
        )
    except (TimeoutError, RuntimeError) as error:
        print(f"loop failed: {error}", file=sys.stderr)
        return 2
    print(format_report(results, stats, sim_seconds, wall, args.profile))
    if args.json is not None:
        args.json.write_text(json.dumps(
            report_record(results, stats, sim_seconds, wall, args.profile)) + "\n")
    if args.record is not None:
        print(f"  recording                       {args.record}")
    rate = sum(r.success for r in results) / max(len(results), 1)
    return 0 if rate >= args.min_success else 1


if __name__ == "__main__":
    raise SystemExit(main())
