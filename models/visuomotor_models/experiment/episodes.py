"""Run one episode of a :class:`~visuomotor_models.experiment.plan.Task`; returns a result row.

State-only episodes run in this process on ``policy_sim.ReachSim`` (sims and ONNX sessions
are cached per worker process, so a Ray worker pays their start-up once). Closed-loop
episodes run the ROS graph as ``python -m visuomotor_ros.demo`` in a child process per
episode: its own rclpy context, DDS discovery off (``ROS_AUTOMATIC_DISCOVERY_RANGE=OFF``:
the in-process graph needs none, and parallel episodes on one host or cluster cannot hear
each other), its own bag directory.

A row is plain data: the task's fields, the outcome (``success``, ``final_error_m``,
``time_to_success_s``), ``wall_s``, and per mode ``dynamics``/``trace`` (state-only) or
``latency_samples_s``/``recording`` (closed loop). A run that breaks gives a row with
``error`` set; such episodes are run again on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visuomotor_core.goal_filter import GoalFilter
from visuomotor_models.experiment.config import EXPERT
from visuomotor_models.experiment.plan import Task

#: State-only sims kept per worker process (each holds one or two PyBullet worlds, ~30 MB).
_MAX_SIMS = 4
_SIMS: OrderedDict[str, Any] = OrderedDict()
_CONTROLLERS: dict[tuple, Any] = {}


def _profile_file(task: Task) -> Path:
    """A randomization YAML with the task's condition (and ``nominal``), written once per
    worker into a temporary directory (workers on other machines need no shared disk)."""
    # ReachSim builds a `nominal` env first, so the file always has one.
    profiles = {"nominal": {}, task.profile: task.terms}
    text = yaml.safe_dump({"profiles": profiles}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"visuomotor-experiment-{os.getuid()}" / \
        f"{digest}.yaml"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_text(text)
        partial.replace(path)
    return path


def _artifacts(task: Task) -> Path:
    from visuomotor_models.evaluate_policy import DEFAULT_ARTIFACTS

    return Path(task.artifacts) if task.artifacts else DEFAULT_ARTIFACTS


def _sim(task: Task):
    from visuomotor_models.policy_sim import ReachSim, SimConfig

    path = str(_profile_file(task))
    key = json.dumps([path, task.settings], sort_keys=True)
    if key in _SIMS:
        _SIMS.move_to_end(key)
        return _SIMS[key]
    s = task.settings
    sim = ReachSim(SimConfig(policy_hz=s["policy_hz"], target_noise_std=s["target_noise_std"],
                             tolerance=s["tolerance"], dwell=s["dwell"], timeout=s["timeout"],
                             randomization_path=path))
    _SIMS[key] = sim
    while len(_SIMS) > _MAX_SIMS:
        _, old = _SIMS.popitem(last=False)
        old.close()
    return sim


def _controller(task: Task, sim):
    """The ONNX policy runtime (or the expert) for the task, cached per worker."""
    key = (task.policy, task.artifacts, sim.config.action_scale, tuple(sim.kp))
    if key not in _CONTROLLERS:
        if task.policy == EXPERT:
            from visuomotor_sim.expert import ExpertConfig, ReachExpert

            _CONTROLLERS[key] = ReachExpert(ExpertConfig(action_scale=sim.config.action_scale,
                                                         kp=tuple(sim.kp)))
        else:
            from visuomotor_core.policy_runtime import load_policy_runtime

            _CONTROLLERS[key] = load_policy_runtime(
                _artifacts(task) / "manifest.json", task.policy, sim.model,
                action_scale=sim.config.action_scale)
    return _CONTROLLERS[key]


def _round(values, digits: int = 5) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in np.ravel(values)]


def true_sag_parameters(dynamics) -> list[float]:
    """The parameters the sag estimator identifies, ``(link_mass_scale / strength - 1,
    payload_mass / strength)``, from an episode's true dynamics."""
    strength = dynamics.actuator_strength_scale
    return [dynamics.link_mass_scale / strength - 1.0, dynamics.payload_mass / strength]


def run_state_only(task: Task) -> dict:
    sim = _sim(task)
    controller = _controller(task, sim)
    q, qd = sim.reset(task.profile, task.seed)
    expert = task.policy == EXPERT
    goal_filter = GoalFilter()  # the policy node's filter, as in the graph
    if expert:
        controller.reset(sim.dynamics)
    else:
        controller.reset()
    trace: dict[str, list] | None = None
    if task.traced and not expert:
        trace = {"t": [], "error_m": [], "sag_theta": [], "sag_offset_rad": [],
                 "true_sag_offset_rad": [], "latent": []}
        true_theta = np.asarray(true_sag_parameters(sim.dynamics))
    target = sim.target
    period = 1.0 / task.settings["policy_hz"]
    step = 0
    while not sim.done:
        if expert:
            action = controller.act(q, target)
        else:
            _, output = controller.act_on_estimate(q, qd, sim.target_estimate, goal_filter)
            action = output.action
            if trace is not None:
                trace["t"].append(round(step * period, 4))
                trace["error_m"].append(
                    float(f"{np.linalg.norm(controller.hand(q) - target):.5g}"))
                if controller.sag is not None:
                    trace["sag_theta"].append(_round(controller.sag.theta))
                    # the joint offset the estimate adds vs the one the true dynamics need
                    trace["sag_offset_rad"].append(
                        float(f"{np.linalg.norm(controller.sag_offset):.5g}"))
                    trace["true_sag_offset_rad"].append(float(
                        f"{np.linalg.norm(controller.sag.bases(q) @ true_theta):.5g}"))
                trace["latent"].append(_round(output.latent))
        q, qd = sim.step(action)
        step += 1
    result = sim.result()
    row: dict[str, Any] = {
        "success": bool(result.success),
        "final_error_m": float(result.final_error),
        "time_to_success_s": None if math.isnan(result.time_to_success)
        else float(result.time_to_success),
        "steps": int(result.steps),
        "dynamics": {k: (list(v) if isinstance(v, tuple) else v)
                     for k, v in asdict(sim.dynamics).items()},
    }
    if trace is not None:
        trace["true_sag_theta"] = true_sag_parameters(sim.dynamics)
        row["trace"] = trace
    return row


def _demo_command(task: Task, json_path: Path) -> list[str]:
    settings = task.settings
    command = [sys.executable, "-m", "visuomotor_ros.demo", "--episodes", "1",
               "--seed", str(task.seed), "--profile", task.profile,
               "--randomization", str(_profile_file(task)), "--json", str(json_path),
               "--min-success", "0",
               "--episode-wall-timeout", str(settings["episode_wall_timeout"]),
               "--domain-id", str(100 + int(task.id[:8], 16) % 100),
               "--param", f"policy.model_name={task.policy}"]
    if task.artifacts:
        command += ["--param", f"policy.manifest_path={_artifacts(task) / 'manifest.json'}"]
    for item in settings["params"]:
        command += ["--param", item]
    if task.mode == "closed_loop_oracle":
        command.append("--oracle-target")
    if task.record_dir:
        command += ["--record", task.record_dir]
    return command


def run_closed_loop(task: Task) -> dict:
    if task.record_dir:  # an episode interrupted earlier may have left a partial bag
        shutil.rmtree(task.record_dir, ignore_errors=True)
        Path(task.record_dir).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="OFF", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="visuomotor-episode-") as tmp:
        json_path = Path(tmp) / "report.json"
        timeout = task.settings["episode_wall_timeout"] + 120.0
        try:
            proc = subprocess.run(_demo_command(task, json_path), env=env, text=True,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"demo did not exit within {timeout:.0f} s"}
        if not json_path.is_file():
            tail = (proc.stderr or proc.stdout or "")[-1500:]
            return {"error": f"demo exited with status {proc.returncode}: {tail}"}
        report = json.loads(json_path.read_text())
    (episode,) = report["episodes"]
    success = bool(episode["success"])
    recording = task.record_dir
    if recording and success and task.keep_recording != "all":
        shutil.rmtree(recording, ignore_errors=True)
        recording = None
    return {
        "success": success,
        "final_error_m": float(episode["error_m"]),
        "time_to_success_s": float(episode["time_to_success_s"]) if success else None,
        "elapsed_s": float(episode["elapsed_s"]),
        "real_time_factor": report["sim_seconds"] / max(report["wall_seconds"], 1e-9),
        "control_rate_hz": report["control_rate_hz"],
        "latency_samples_s": {k: [round(v, 6) for v in values]
                              for k, values in report["latency_samples_s"].items()},
        "target_error_samples_m": {
            kind: [[round(v, 5) for v in sample] for sample in samples]
            for kind, samples in report.get("target_error_samples_m", {}).items()},
        "recording": recording,
    }


def run_task(task: Task) -> dict:
    """Run the episode; the row always carries the task's fields, ``wall_s`` and ``pid``."""
    start = time.perf_counter()
    try:
        outcome = run_state_only(task) if task.mode == "state_only" else run_closed_loop(task)
    except Exception as err:  # noqa: BLE001 - one broken episode must not end the run
        outcome = {"error": f"{type(err).__name__}: {err}"}
    row = asdict(task)
    del row["terms"], row["settings"]
    row.update(outcome)
    row["error"] = outcome.get("error")
    row["wall_s"] = round(time.perf_counter() - start, 4)
    row["pid"] = os.getpid()
    return row
