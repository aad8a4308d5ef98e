"""The experiment tool on Ray: a two-node cluster on this machine (a head and a worker node,
both on the loopback address 127.0.0.2) runs a small experiment; the episodes come from
both nodes and equal the serial run's. Then one closed-loop episode through the ROS graph
(the demo in a child process) with its recording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from visuomotor_models.experiment.cli import run
from visuomotor_models.experiment.config import ExperimentConfig

ray = pytest.importorskip("ray")

#: Loopback, but not an address Ray rewrites to the machine's network address (it does so for
#: 127.0.0.1 and localhost), so the test cluster stays off the network.
LOOPBACK = "127.0.0.2"
QUIET = {"log": lambda *_: None, "progress": False}

SMALL = {
    "name": "small",
    "policies": ["policy", "policy_no_history"],
    "modes": ["state_only"],
    "seeds": {"first": 900000000, "count": 3},
    "profiles": [{"names": ["heldout"]}],
    "state_only": {"timeout": 1.0},
    "traces": {"per_condition": 0},
}


def write_config(data: dict, tmp_path: Path) -> ExperimentConfig:
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return ExperimentConfig.from_yaml(path)


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": LOOPBACK, "object_store_memory": 80 * 2**20}
    cluster = Cluster(initialize_head=True,
                      head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, logging_level="warning",
                 log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_two_node_cluster_runs_the_experiment_on_both_nodes(tmp_path, two_node_cluster):
    config = write_config(SMALL, tmp_path)
    status, paths, info = run(config, tmp_path / "ray", address=two_node_cluster.address,
                              **QUIET)
    assert status == 0
    assert info.executor == "ray" and info.workers == 2
    rows = rows_of(tmp_path / "ray")
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
    nodes = {r["node_id"] for r in rows}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]} and len(nodes) == 2
    assert "2 nodes" in paths["markdown"].read_text()

    serial_status, _, _ = run(config, tmp_path / "serial", serial=True, **QUIET)
    assert serial_status == 0
    key = ("success", "final_error_m", "time_to_success_s", "steps")
    assert {r["id"]: [r[k] for k in key] for r in rows} == \
        {r["id"]: [r[k] for k in key] for r in rows_of(tmp_path / "serial")}


@pytest.mark.slow
def test_closed_loop_episode_reports_latencies_and_keeps_its_recording(tmp_path):
    config = write_config({
        "name": "closed",
        "policies": ["policy"],
        "modes": ["closed_loop_oracle"],
        "seeds": {"first": 1000, "count": 1},
        "profiles": [{"names": ["nominal"]}],
        "closed_loop": {"episode_wall_timeout": 60, "record": "all",
                        "params": {"sim.episode_timeout": 2.0}},
    }, tmp_path)
    status, paths, _ = run(config, tmp_path / "run", serial=True, **QUIET)
    (row,) = rows_of(tmp_path / "run")
    assert status == 0, row.get("error")
    assert row["mode"] == "closed_loop_oracle" and row["elapsed_s"] <= 2.0 + 0.1
    samples = row["latency_samples_s"]
    assert samples["policy_inference"] and samples["camera_to_joint_command_sim"]
    assert not any(samples["encoder_inference"])  # the true target stands in for the encoder
    bag = Path(row["recording"])
    assert (bag / "metadata.yaml").is_file() and bag.is_relative_to(tmp_path / "run")
    assert (tmp_path / "run" / "figures" / "latency.png").is_file()
    assert "Failed closed-loop episodes" in paths["markdown"].read_text()
