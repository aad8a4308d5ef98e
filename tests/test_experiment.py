"""The experiment tool without Ray: config validation, task ids, the JSONL store, Wilson
intervals, and a tiny state-only experiment run serially (report, resume, determinism)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from visuomotor_models.experiment.cli import main, run
from visuomotor_models.experiment.config import (
    ConfigError,
    ExperimentConfig,
    resolve_conditions,
)
from visuomotor_models.experiment.plan import build_plan
from visuomotor_models.experiment.stats import summarize, wilson_interval
from visuomotor_models.experiment.store import ResultStore

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted((REPO / "models" / "config" / "experiments").glob("*.yaml"))

TINY = {
    "name": "tiny",
    "policies": ["policy", "expert"],
    "modes": ["state_only"],
    "seeds": {"first": 900000000, "count": 2},
    "profiles": [{"names": ["nominal"]}],
    "sweeps": [{"term": "payload_mass", "values": [2.5], "unit": "kg"}],
    "state_only": {"timeout": 1.5},
    "traces": {"policies": ["policy"], "per_condition": 1},
}


def config_from(data: dict, tmp_path: Path) -> ExperimentConfig:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return ExperimentConfig.from_yaml(path)


def outcomes(run_dir: Path) -> dict[str, tuple]:
    with open(run_dir / "results.jsonl") as handle:
        return {r["id"]: (r["success"], r["final_error_m"], r["time_to_success_s"], r["steps"])
                for r in map(json.loads, handle)}


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(("change", "message"), [
    ({"modes": ["closed_loop", "fast"]}, "modes must be"),
    ({"colour": 1}, "unknown key"),
    ({"sweeps": [{"term": "payload", "values": [1.0]}]}, "unknown term 'payload'"),
    ({"sweeps": [{"term": "light_direction", "values": [1.0]}]}, "vector term"),
    ({"sweeps": [{"term": "payload_mass", "values": [1.0], "direction": [1.0]}]},
     "scalar term"),
    ({"sweeps": [{"term": "payload_mass", "values": [-1.0]}]}, "physical range"),
    ({"sweeps": [{"term": "payload_mass", "values": [1.0, 1.0]}]}, "values repeat"),
    ({"seeds": {"first": 0, "count": 0}}, "count >= 1"),
    ({"closed_loop": {"record": "sometimes"}}, "record must be"),
    ({"closed_loop": {"params": {"policy.model_name": "x"}}}, "from `policies`"),
    ({"profiles": [], "sweeps": []}, "at least one of"),
])
def test_config_refuses_invalid_files_with_the_key_named(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        config_from({**TINY, **change}, tmp_path)


def test_config_names_profiles_missing_from_a_users_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("profiles:\n  heavy: {payload_mass: {low: 2, high: 3}}\n")
    config = config_from({**TINY, "sweeps": [], "profiles": [
        {"file": "mine.yaml", "names": ["heavy", "light"]}]}, tmp_path)
    with pytest.raises(ConfigError, match=r"\['light'\] not in"):
        resolve_conditions(config)


def test_users_profile_file_and_sweeps_resolve_to_term_ranges(tmp_path):
    (tmp_path / "mine.yaml").write_text("profiles:\n  nominal: {payload_mass: {low: 2, high: 3}}\n")
    config = config_from({**TINY, "profiles": [{"names": ["nominal"]},
                                               {"file": "mine.yaml"}],
                          "sweeps": [{"term": "camera_pose_jitter", "label": "camera shift",
                                      "direction": [1, 0, 0, 0, 0, 0], "values": [0.02]}]},
                         tmp_path)
    labels = {c.label: c for c in resolve_conditions(config)}
    assert set(labels) == {"shipped:nominal", "mine:nominal", "camera shift=0.02"}
    assert labels["mine:nominal"].terms == {"payload_mass": {"low": 2.0, "high": 3.0}}
    shift = labels["camera shift=0.02"].terms["camera_pose_jitter"]
    assert shift["low"] == shift["high"] == [0.02, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_policy_missing_from_the_manifest_is_refused(tmp_path):
    config = config_from({**TINY, "policies": ["policy_v9"]}, tmp_path)
    with pytest.raises(ConfigError, match="policy 'policy_v9' is not in"):
        build_plan(config, resolve_conditions(config), tmp_path)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_experiment_configs_are_valid(path):
    config = ExperimentConfig.from_yaml(path)
    plan = build_plan(config, resolve_conditions(config), Path("/nonexistent"))
    assert plan.tasks


# ------------------------------------------------------------------ plan
def test_task_ids_depend_on_the_episode_not_on_the_run(tmp_path):
    config = config_from(TINY, tmp_path)
    plan = build_plan(config, resolve_conditions(config), tmp_path)
    assert len(plan.tasks) == 2 * 2 * 2  # policies x conditions x seeds
    more_seeds = config_from({**TINY, "seeds": {"first": 900000000, "count": 3}}, tmp_path)
    bigger = build_plan(more_seeds, resolve_conditions(more_seeds), tmp_path)
    assert set(plan.tasks) < set(bigger.tasks)
    heavier = config_from({**TINY, "sweeps": [{"term": "payload_mass", "values": [2.6]}]},
                          tmp_path)
    changed = build_plan(heavier, resolve_conditions(heavier), tmp_path)
    assert len(set(plan.tasks) & set(changed.tasks)) == 4  # only the nominal episodes


def test_expert_is_skipped_in_closed_loop_modes_and_named(tmp_path):
    config = config_from({**TINY, "modes": ["state_only", "closed_loop"]}, tmp_path)
    plan = build_plan(config, resolve_conditions(config), tmp_path)
    assert {(t.policy, t.mode) for t in plan.tasks.values()} == {
        ("policy", "state_only"), ("expert", "state_only"), ("policy", "closed_loop")}
    assert any("expert in closed_loop" in note for note in plan.skipped)
    closed = [t for t in plan.tasks.values() if t.mode == "closed_loop"]
    assert all(t.record_dir and t.record_dir.startswith(str(tmp_path)) for t in closed)


# ------------------------------------------------------------------ store and stats
def test_store_drops_a_torn_last_line_and_retries_broken_episodes(tmp_path):
    with ResultStore(tmp_path) as store:
        store.append({"id": "a", "success": True})
        store.append({"id": "b", "error": "demo exited with status 2"})
    with open(tmp_path / ResultStore.FILE, "a") as handle:
        handle.write('{"id": "c", "succ')
    with ResultStore(tmp_path) as store:
        assert store.torn_lines == 1
        assert store.done("a") and not store.done("b") and not store.done("c")
        store.append({"id": "c", "success": False})
    lines = (tmp_path / ResultStore.FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]


def test_wilson_interval_matches_reference_values():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(47, 50)
    assert low == pytest.approx(0.8378, abs=1e-4) and high == pytest.approx(0.9794, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.7225, abs=1e-4) and high == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_summary_counts_successes_and_times_of_successes_only():
    rows = [{"success": True, "final_error_m": 0.01, "time_to_success_s": 1.0},
            {"success": False, "final_error_m": 0.05, "time_to_success_s": None},
            {"success": True, "final_error_m": 0.02, "time_to_success_s": 3.0}]
    s = summarize(rows)
    assert (s.episodes, s.successes) == (3, 2)
    assert s.final_error_median_m == pytest.approx(0.02)
    assert s.time_to_success_median_s == pytest.approx(2.0)
    assert s.success_text().startswith("67% (2/3) [")


# ------------------------------------------------------------------ end to end, serial
def test_serial_run_writes_results_and_a_self_contained_report(tmp_path):
    config = config_from(TINY, tmp_path)
    out = tmp_path / "run"
    status, paths, info = run(config, out, serial=True, progress=False, log=lambda *_: None)
    assert status == 0 and info.episodes_run == 8
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["error"] is None for r in rows)
    traced = [r for r in rows if isinstance(r.get("trace"), dict)]
    assert len(traced) == 2 and all(r["policy"] == "policy" for r in traced)
    trace = traced[0]["trace"]
    assert len(trace["t"]) == len(trace["sag_theta"]) == len(trace["latent"]) > 5
    heavy = [r for r in rows if r["profile"] == "payload_mass=2.5"]
    assert all(r["dynamics"]["payload_mass"] == 2.5 for r in heavy)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert 'src="http' not in page and "<link" not in page
    markdown = paths["markdown"].read_text()
    assert "| payload_mass (kg) | policy | expert |" in markdown
    assert (out / "figures" / "success_vs_shift.png").stat().st_size > 1000
    summary = json.loads(paths["summary"].read_text())
    assert {c["condition"] for c in summary["cells"]} == {"nominal", "payload_mass=2.5"}


def test_interrupted_run_resumes_to_the_same_table(tmp_path):
    config = config_from(TINY, tmp_path)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(config, whole, serial=True, progress=False, log=lambda *_: None)
    status, _, first = run(config, parts, serial=True, limit=3, progress=False,
                           log=lambda *_: None)
    assert status == 1 and first.episodes_run == 3
    status, _, second = run(config, parts, serial=True, progress=False, log=lambda *_: None)
    assert status == 0 and second.episodes_run == 5
    _, _, third = run(config, parts, serial=True, progress=False, log=lambda *_: None)
    assert third.episodes_run == 0
    assert outcomes(parts) == outcomes(whole)
    table = [line for line in (whole / "report.md").read_text().splitlines()
             if line.startswith("|")]
    assert table == [line for line in (parts / "report.md").read_text().splitlines()
                     if line.startswith("|")]


def test_cli_reports_config_errors_and_report_only_runs_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: bad
        policies: [policy]
        seeds: {first: 0, count: 1}
        sweeps: [{term: payload_mass, values: [1.0], unit: kg, colour: red}]
    """))
    with pytest.raises(SystemExit) as exit_info:
        main([str(bad)])
    assert exit_info.value.code == 2
    assert "unknown key(s) ['colour']" in capsys.readouterr().err
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    assert main([str(config_path), "--out", str(tmp_path / "r"), "--report-only",
                 "--no-progress"]) == 1
    assert not (tmp_path / "r" / "results.jsonl").read_text()
    assert (tmp_path / "r" / "report.html").is_file()


# ------------------------------------------------------------------ runtime stays free of it
def test_runtime_code_imports_neither_ray_nor_matplotlib():
    code = ("import sys\n"
            "import visuomotor_core.policy_runtime, visuomotor_core.encoder_runtime\n"
            "import visuomotor_core.controller, visuomotor_sim.hardware, visuomotor_sim.env\n"
            "import visuomotor_ros.policy_node, visuomotor_ros.encoder_node\n"
            "import visuomotor_ros.controller_node, visuomotor_ros.demo\n"
            "print(sorted(m for m in ('ray', 'matplotlib', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_randomization_file_can_be_named_by_the_environment(tmp_path, monkeypatch):
    from visuomotor_sim.randomization import RANDOMIZATION_ENV, default_config_path, load_profile

    mine = tmp_path / "mine.yaml"
    mine.write_text("profiles:\n  heavy: {payload_mass: {low: 2, high: 3}}\n")
    monkeypatch.setenv(RANDOMIZATION_ENV, str(mine))
    assert default_config_path() == mine
    assert load_profile("heavy").term("payload_mass") is not None
    monkeypatch.setenv(RANDOMIZATION_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        default_config_path()


def test_target_error_table_pools_episodes_by_band_and_judges_the_goal():
    """The closed-loop report's target-error rows: samples of every episode of a (profile,
    policy) pooled per hand–target band; confidence filters the encoder's row; the goal is
    judged on every band (a band above it fails the row)."""
    from visuomotor_models.experiment.report import target_error_rows

    def episode(estimates, goals):
        return {"profile": "heldout", "policy": "policy",
                "target_error_samples_m": {"estimate": estimates, "goal": goals}}

    # (hand distance m, error m, confidence): one sample per band and episode.
    near, mid, far = 0.02, 0.1, 0.3
    done = {
        "a": episode([[near, 0.05, 0.1], [mid, 0.004, 0.9], [far, 0.006, 0.9]],
                     [[near, 0.005, 1.0], [mid, 0.005, 1.0], [far, 0.004, 1.0]]),
        "b": episode([[near, 0.007, 0.8], [mid, 0.004, 0.9], [far, 0.006, 0.9]],
                     [[near, 0.006, 1.0], [mid, 0.006, 1.0], [far, 0.004, 1.0]]),
    }
    rows = {row[2]: row for row in target_error_rows(done)}
    every, confident = rows["encoder, every frame"], rows["encoder, confidence >= 0.5"]
    goal = rows["goal (filtered: what the policy acts on)"]
    assert every[3].endswith("(2)") and confident[3].endswith("(1)")
    assert every[-1] == "no", "the hidden-target frame (5 cm) fails the near band"
    assert confident[-1] == "yes" and goal[-1] == "yes"
    assert goal[3].startswith("0.55 / ")  # median of 0.5 and 0.6 cm
    assert target_error_rows({"x": {"profile": "p", "policy": "q"}}) == []
