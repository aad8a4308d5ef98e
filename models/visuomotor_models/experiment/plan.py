"""The experiment's episodes, each with an id derived from everything that determines it.

A task id is a hash of the policy (its manifest name and the SHA-256 of its ONNX file), the
mode, the condition's term ranges, the seed and the mode's settings. A finished episode is
therefore reused by any later run that asks for the same episode (resume, more seeds, a
renamed condition) and never by one that differs (a retrained policy, an edited profile).
Two conditions with the same ranges (a sweep's nominal point and the nominal profile) share
their episodes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from visuomotor_models.experiment.config import (
    EXPERT,
    Condition,
    ConfigError,
    ExperimentConfig,
)

#: Version of the per-step trace a traced episode records (part of its id: a new trace
#: format runs traced episodes again).
TRACE_FORMAT = 2

#: Order of modes in a plan: cheap episodes first, so early results cover every condition.
_MODE_ORDER = ("state_only", "closed_loop_oracle", "closed_loop")


@dataclass(frozen=True)
class Task:
    """One episode to run (plain data: it travels to Ray workers and into the JSONL)."""

    id: str
    policy: str
    mode: str
    seed: int
    profile: str
    terms: dict[str, Any]
    settings: dict[str, Any]
    model_sha256: str | None = None
    artifacts: str | None = None
    traced: bool = False
    record_dir: str | None = None
    keep_recording: str = "failed"


@dataclass
class Plan:
    """Tasks by id, the (condition, policy, mode) cells they fill, and what was skipped."""

    tasks: dict[str, Task] = field(default_factory=dict)
    cells: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def task_ids(self) -> list[str]:
        return list(self.tasks)


def policy_hashes(config: ExperimentConfig) -> dict[str, str | None]:
    """SHA-256 of every ONNX policy named by the experiment (None for the expert); a
    ConfigError names a policy the manifest lacks."""
    from visuomotor_models.evaluate_policy import DEFAULT_ARTIFACTS

    manifest_path = (config.artifacts or DEFAULT_ARTIFACTS) / "manifest.json"
    try:
        models = json.loads(manifest_path.read_text())["models"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"cannot read the model manifest {manifest_path}: {err}") from None
    hashes: dict[str, str | None] = {}
    for name in config.policies:
        if name == EXPERT:
            hashes[name] = None
        elif name not in models or "policy" not in models[name]:
            policies = sorted(k for k, v in models.items() if "policy" in v)
            raise ConfigError(f"policy '{name}' is not in {manifest_path} (policies there: "
                              f"{policies}, or '{EXPERT}')")
        else:
            hashes[name] = models[name]["sha256"]
    return hashes


def _task_id(policy: str, sha: str | None, mode: str, terms: dict, seed: int,
             settings: dict, trace: bool) -> str:
    key = {"policy": policy, "sha256": sha, "mode": mode, "terms": terms, "seed": seed,
           "settings": settings, "trace": TRACE_FORMAT if trace else False}
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)


def build_plan(config: ExperimentConfig, conditions: list[Condition], out_dir: Path
               ) -> Plan:
    """Expand policies x conditions x modes x seeds into tasks (deterministic order)."""
    hashes = policy_hashes(config)
    plan = Plan(conditions={c.label: c for c in conditions})
    state_settings = asdict(config.state_only)
    closed = config.closed_loop
    closed_settings = {"episode_wall_timeout": closed.episode_wall_timeout,
                       "params": closed.param_args()}
    artifacts = str(config.artifacts) if config.artifacts else None
    for mode in _MODE_ORDER:
        for condition in conditions:
            if mode not in condition.modes:
                continue
            for policy in config.policies:
                if policy == EXPERT and mode != "state_only":
                    note = (f"{policy} in {mode}: the expert acts on the sim's privileged "
                            f"state, so it runs state_only only")
                    if note not in plan.skipped:
                        plan.skipped.append(note)
                    continue
                ids = []
                settings = state_settings if mode == "state_only" else closed_settings
                for index, seed in enumerate(condition.seeds.seeds()):
                    trace = (mode == "state_only" and policy in config.traces.policies
                             and index < config.traces.per_condition)
                    tid = _task_id(policy, hashes[policy], mode, dict(condition.terms), seed,
                                   settings, trace)
                    ids.append(tid)
                    if tid in plan.tasks:
                        continue
                    record_dir = None
                    if mode != "state_only" and closed.record != "none":
                        record_dir = str((out_dir / "recordings" / _safe(condition.label) /
                                          f"{policy}_{mode}_seed{seed}_{tid[:8]}").resolve())
                    plan.tasks[tid] = Task(
                        id=tid, policy=policy, mode=mode, seed=seed, profile=condition.label,
                        terms=dict(condition.terms), settings=dict(settings),
                        model_sha256=hashes[policy], artifacts=artifacts, traced=trace,
                        record_dir=record_dir, keep_recording=closed.record)
                plan.cells[(condition.label, policy, mode)] = ids
    return plan
