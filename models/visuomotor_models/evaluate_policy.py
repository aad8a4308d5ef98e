"""Evaluate the exported policies (ONNX, the deployed runtime path) on identical episodes.

Every policy runs the same episode seeds, hence the same targets, target-estimate errors and
dynamics, in each randomization profile (``nominal``, ``training``, ``heldout``). Reported
per policy and profile: success rate, final grasp-point error (m) and time to success (s,
over successful episodes). The privileged expert is included as a reference::

    python -m visuomotor_models.evaluate_policy                # 50 episodes per profile
    python -m visuomotor_models.evaluate_policy --episodes 10  # quicker

Writes ``<artifacts>/policy_eval.json`` and ``policy_eval.md`` and records the held-out
figures in each policy's manifest entry (``metrics``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from visuomotor_core.goal_filter import GoalFilter
from visuomotor_core.manifest import read_manifest
from visuomotor_core.policy_runtime import load_policy_runtime
from visuomotor_models.export import write_manifest_entry
from visuomotor_models.policy_sim import EpisodeResult, ReachSim, SimConfig
from visuomotor_sim.expert import ExpertConfig, ReachExpert

DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PROFILES = ("nominal", "training", "heldout")
POLICIES = ("policy", "policy_no_history")
EVAL_SEED_BASE = 900_000_000  # disjoint from training seeds (seed * 1e6 + i, seed < 900)


def run_episodes(sim: ReachSim, act, reset, seeds: list[int], profile: str
                 ) -> list[EpisodeResult]:
    """Run one controller over the episodes; ``act(q, qd) -> action``, ``reset(dynamics)``."""
    results = []
    for seed in seeds:
        q, qd = sim.reset(profile, seed)
        reset(sim.dynamics)
        while not sim.done:
            q, qd = sim.step(act(q, qd))
        results.append(sim.result())
    return results


def summarize(results: list[EpisodeResult]) -> dict:
    """Success rate, final error (mean, median; m) and time to success (mean, s)."""
    errors = np.array([r.final_error for r in results])
    times = np.array([r.time_to_success for r in results if r.success])
    return {
        "episodes": len(results),
        "success_rate": float(np.mean([r.success for r in results])),
        "final_error_mean_m": float(errors.mean()),
        "final_error_median_m": float(np.median(errors)),
        "time_to_success_mean_s": float(times.mean()) if times.size else None,
    }


def policy_controller(sim: ReachSim, artifacts: Path, name: str):
    runtime = load_policy_runtime(artifacts / "manifest.json", name, sim.model,
                                  action_scale=sim.config.action_scale)
    goal_filter = GoalFilter()  # the policy node's filter, as in the graph

    def act(q, qd):
        return runtime.act_on_estimate(q, qd, sim.target_estimate, goal_filter)[1].action

    def reset(dynamics) -> None:
        runtime.reset()
        goal_filter.reset()

    return act, reset


def expert_controller(sim: ReachSim):
    expert = ReachExpert(ExpertConfig(action_scale=sim.config.action_scale, kp=tuple(sim.kp)))
    return (lambda q, qd: expert.act(q, sim.target)), expert.reset


def markdown_table(table: dict) -> str:
    lines = ["| policy | profile | success | final error mean / median (cm) | "
             "time to success (s) |", "| --- | --- | --- | --- | --- |"]
    for policy, per_profile in table.items():
        for profile, m in per_profile.items():
            tts = "-" if m["time_to_success_mean_s"] is None \
                else f"{m['time_to_success_mean_s']:.2f}"
            lines.append(f"| {policy} | {profile} | {100 * m['success_rate']:.0f}% "
                         f"({m['episodes']}) | {100 * m['final_error_mean_m']:.2f} / "
                         f"{100 * m['final_error_median_m']:.2f} | {tts} |")
    return "\n".join(lines)


def record_metrics(artifacts: Path, table: dict, command: str) -> None:
    manifest = read_manifest(artifacts / "manifest.json")["models"]
    for name in POLICIES:
        if name in manifest and name in table:
            entry = dict(manifest[name])
            entry["metrics"] = {"evaluation_command": command, **table[name]}
            write_manifest_entry(artifacts / "manifest.json", name, entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evaluate-policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS,
                        help=f"directory with manifest.json and the policies "
                             f"(default {DEFAULT_ARTIFACTS})")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per profile")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES),
                        help="randomization profiles to evaluate (default: %(default)s)")
    parser.add_argument("--randomization", default=None,
                        help="randomization YAML holding the profiles (default: the shipped "
                             "sim/config/randomization.yaml); e.g. one term per profile to "
                             "see which dynamics term a policy fails on")
    parser.add_argument("--out-name", default="policy_eval",
                        help="report file stem in the artifact directory (default "
                             "%(default)s); manifest metrics are recorded only for the "
                             "default profiles")
    parser.add_argument("--first-seed", type=int, default=EVAL_SEED_BASE,
                        help="seed of the first episode (default %(default)s); another range "
                             "gives fresh episodes of the same profiles")
    parser.add_argument("--no-expert", action="store_true", help="skip the expert reference")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.first_seed < EVAL_SEED_BASE:
        parser.error(f"--first-seed must be >= {EVAL_SEED_BASE} (below are training seeds)")
    command = "python -m visuomotor_models.evaluate_policy " + shlex.join(argv or sys.argv[1:])
    sim = ReachSim(SimConfig(randomization_path=args.randomization))
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    controllers = {name: (lambda n=name: policy_controller(sim, args.artifacts, n))
                   for name in POLICIES}
    if not args.no_expert:
        controllers["expert (privileged)"] = lambda: expert_controller(sim)
    table: dict[str, dict] = {}
    for name, make in controllers.items():
        act, reset = make()
        table[name] = {}
        for profile in args.profiles:
            start = time.perf_counter()
            table[name][profile] = summarize(run_episodes(sim, act, reset, seeds, profile))
            m = table[name][profile]
            print(f"{name:>20} {profile:>8}: success {100 * m['success_rate']:5.1f}%  "
                  f"final error {100 * m['final_error_mean_m']:.2f} cm  "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    markdown = markdown_table(table)
    print("\n" + markdown)
    report = {"command": command.strip(), "seeds": [seeds[0], seeds[-1]],
              "sim": asdict(sim.config),
              "results": table}
    (args.artifacts / f"{args.out_name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.artifacts / f"{args.out_name}.md").write_text(
        "# Policy evaluation (identical seeds per profile)\n\n"
        f"Command: `{command.strip()}`\n\n{markdown}\n")
    if args.randomization is None and set(args.profiles) == set(PROFILES) \
            and args.first_seed == EVAL_SEED_BASE:
        record_metrics(args.artifacts, table, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
