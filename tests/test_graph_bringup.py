"""The bringup is consistent: every process the launch files start exists as installed,
its parameter files exist and are keyed by the node's name, and every parameter in them
is declared by the node's schema (so a typo is caught here, not on a robot). The launch
files are loaded exactly as ``ros2 launch`` loads them (from their path, nothing added
to ``sys.path``); what they build comes from visuomotor_bringup, whose plan is tested
in test_bringup_plan.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

from visuomotor_ros import graph

ROOT = Path(__file__).resolve().parents[1]
BRINGUP = "visuomotor_bringup"
DESCRIPTION = "visuomotor_description"
LAUNCH_NAMES = ("sim_bringup.launch.py", "robot_bringup.launch.py")


def _prefix(package: str) -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix(package))


@pytest.mark.parametrize("spec", sorted(set(graph.processes(True) + graph.processes(False)),
                                         key=lambda s: s.role), ids=lambda s: s.role)
def test_process_executable_is_installed(spec):
    executable = _prefix(spec.package) / "lib" / spec.package / spec.executable
    assert executable.is_file(), f"{executable} missing: ros2 launch could not start {spec.role}"
    assert os.access(executable, os.X_OK)


@pytest.mark.parametrize("script", ["visuomotor-bringup", "bench-realtime", "fault-injection"])
def test_bringup_console_script_is_installed(script):
    executable = _prefix(BRINGUP) / "lib" / BRINGUP / script
    assert executable.is_file() and os.access(executable, os.X_OK)


def test_params_files_are_installed_with_the_nodes():
    installed = graph.package_share(graph.ROS_PACKAGE) / "config"
    assert graph.params_path("controller.yaml") == installed / "controller.yaml"
    assert sorted(p.name for p in installed.glob("*.yaml")) == sorted(
        spec.params_file for spec in graph.GRAPH)


@pytest.mark.parametrize("robot", ["panda", "iiwa"])
def test_robot_descriptions_are_installed_with_the_description_package(robot):
    from visuomotor_core.robot_description import description_path, load_robot

    installed = graph.package_share(DESCRIPTION) / "urdf"
    assert description_path(robot) == installed / f"{robot}.yaml"
    assert load_robot(robot).urdf.name == f"{robot}.urdf"
    assert (installed / f"{robot}.urdf").is_file()


@pytest.mark.parametrize("spec", graph.GRAPH, ids=lambda s: s.role)
def test_params_file_is_installed_and_keyed_by_node_name(spec):
    path = graph.params_path(spec)
    assert path.is_file(), path
    data = yaml.safe_load(path.read_text())
    assert list(data) == [spec.name], f"{path.name} must hold one section '{spec.name}'"
    assert "ros__parameters" in data[spec.name]


def _schema_names(spec) -> set[str]:
    module = importlib.import_module(spec.factory.partition(":")[0])
    return {p.name for p in module.SCHEMA}


@pytest.mark.parametrize("spec", graph.GRAPH, ids=lambda s: s.role)
def test_every_yaml_parameter_is_declared_by_the_node(spec):
    values = yaml.safe_load(graph.params_path(spec).read_text())[spec.name]["ros__parameters"]
    undeclared = set(values) - _schema_names(spec)
    assert not undeclared, f"{spec.params_file}: parameters the node does not declare: {undeclared}"


def test_sim_overrides_name_declared_parameters():
    by_role = {spec.role: spec for spec in graph.GRAPH}
    for role, values in graph.SIM_OVERRIDES.items():
        assert set(values) <= _schema_names(by_role[role]), role


def test_demo_param_overrides_are_typed_and_checked():
    from visuomotor_ros.demo import parse_param_overrides

    overrides = parse_param_overrides(
        ["policy.goal_smoothing=0.2", "sim.gui=true", "policy.manifest_path=runs/p/m.json"])
    assert overrides == {"policy": {"goal_smoothing": 0.2, "manifest_path": "runs/p/m.json"},
                         "sim": {"gui": True}}
    for bad in ("goal_smoothing=0.2", "nobody.x=1", "policy.goal_smoothing"):
        with pytest.raises(ValueError, match=r"ROLE\.NAME=VALUE"):
            parse_param_overrides([bad])


def test_robot_graph_has_no_sim_node():
    roles = [spec.role for spec in graph.nodes(sim=False)]
    assert "sim" not in roles and {"encoder", "policy", "controller"} <= set(roles)


def test_committed_models_are_installed():
    for name in ("encoder.onnx", "policy.onnx", "manifest.json"):
        assert graph.model_path(name).is_file(), name


def test_rviz_config_is_installed():
    rviz = graph.package_share(BRINGUP) / "rviz" / "visuomotor.rviz"
    assert rviz.is_file()
    text = rviz.read_text()
    for topic in (graph.CAMERA_IMAGE, graph.ENCODER_TARGET, graph.TARGET_MARKER, graph.POLICY_GOAL):
        assert "/" + topic in text, f"RViz config does not show {topic}"


def _launch_files() -> list[Path]:
    """The installed launch files (``ros2 launch visuomotor_bringup <file>``) and the
    top-level entry points (``ros2 launch launch/<file>``)."""
    installed = graph.package_share(BRINGUP) / "launch"
    return [folder / name for folder in (installed, ROOT / "launch") for name in LAUNCH_NAMES]


def _load_as_ros2_launch_does(path: Path):
    """What launch's ``get_launch_description_from_python_launch_file`` does: import the
    file from its path under a made-up module name; sys.path is left as it is."""
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}",
                                                  str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_files_are_installed_with_the_bringup_package():
    installed = graph.package_share(BRINGUP) / "launch"
    assert sorted(p.name for p in installed.glob("*.launch.py")) == sorted(LAUNCH_NAMES)
    assert not (ROOT / "launch" / "_bringup_common.py").exists()


@pytest.mark.parametrize("path", _launch_files(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_launch_file_loads_from_its_path_alone(path, monkeypatch):
    from visuomotor_bringup import launch_description

    before = list(sys.path)
    module = _load_as_ros2_launch_does(path)
    assert sys.path == before
    assert module.generate is launch_description.generate
    calls = []
    monkeypatch.setattr(module, "generate", lambda sim: calls.append(sim) or "description")
    assert module.generate_launch_description() == "description"
    assert calls == [path.name.startswith("sim")]


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "robot"])
def test_launch_description_where_launch_is_installed(sim):
    """Runs only beside a ROS 2 install with launch_ros: the description's actions, the
    processes its OpaqueFunction returns, and a refused argument raising before any."""
    pytest.importorskip("launch_ros")
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    from launch import LaunchContext
    from visuomotor_bringup import launch_description, plan

    description = launch_description.generate(sim)
    declared = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert [d.name for d in declared] == list(plan.arguments(sim))
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))

    context = LaunchContext()
    for argument in declared:
        context.launch_configurations[argument.name] = argument.default_value[0].text
    nodes = [a for a in opaque.execute(context) if isinstance(a, Node)]
    expected = [(s.package, s.executable) for s in graph.processes(sim)]
    assert [(n.node_package, n.node_executable) for n in nodes][:len(expected)] == expected

    context.launch_configurations["command_interface"] = "torque"
    with pytest.raises(ValueError, match="command_interface:=torque"):
        opaque.execute(context)
