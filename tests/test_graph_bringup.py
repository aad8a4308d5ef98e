"""The bringup is consistent: every node the launch files start exists as installed,
its parameter file exists and is keyed by the node's name, and every parameter
in it is declared by the node's schema (so a typo is caught here, not on a robot).
The launch files themselves need ``launch``/``launch_ros`` (not on PyPI); they
are checked for syntax and for reading the graph description only.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from visuomotor_ros import graph

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _prefix(package: str) -> Path:
    from ament_index_python.packages import get_package_prefix

    return Path(get_package_prefix(package))


@pytest.mark.parametrize("spec", graph.GRAPH, ids=lambda s: s.role)
def test_node_executable_is_installed(spec):
    executable = _prefix(spec.package) / "lib" / spec.package / spec.executable
    assert executable.is_file(), f"{executable} missing: ros2 launch could not start {spec.name}"
    assert os.access(executable, os.X_OK)


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
    rviz = graph.package_share(graph.BRINGUP_PACKAGE) / "rviz" / "visuomotor.rviz"
    assert rviz.is_file()
    text = rviz.read_text()
    for topic in (graph.CAMERA_IMAGE, graph.ENCODER_TARGET, graph.TARGET_MARKER, graph.POLICY_GOAL):
        assert "/" + topic in text, f"RViz config does not show {topic}"


class _Recorder:
    """Stands in for a launch action class; keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules() -> dict[str, types.ModuleType]:
    """Minimal `launch` / `launch_ros` modules recording what the launch files build."""
    modules = {}
    for name in ("launch", "launch.actions", "launch.conditions", "launch.substitutions",
                 "launch_ros", "launch_ros.actions"):
        modules[name] = types.ModuleType(name)
    modules["launch"].LaunchDescription = lambda actions: list(actions)
    for attr in ("DeclareLaunchArgument", "OpaqueFunction"):
        setattr(modules["launch.actions"], attr, type(attr, (_Recorder,), {}))
    modules["launch.conditions"].IfCondition = type("IfCondition", (_Recorder,), {})
    modules["launch.substitutions"].LaunchConfiguration = lambda name: f"$({name})"
    modules["launch_ros.actions"].Node = type("Node", (_Recorder,), {})
    return modules


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_starts_the_graph_with_existing_params(path, monkeypatch):
    for name, module in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(path.parent))
    monkeypatch.delitem(sys.modules, "_bringup_common", raising=False)
    actions = runpy.run_path(str(path))["generate_launch_description"]()
    nodes = [a.kwargs for a in actions if type(a).__name__ == "Node"]
    sim = path.name.startswith("sim")
    started = {(n["package"], n["executable"]) for n in nodes if n.get("name")}
    expected = {(s.package, s.executable) for s in graph.nodes(sim=sim)}
    assert started == expected
    declared = {a.args[0] for a in actions if type(a).__name__ == "DeclareLaunchArgument"}
    for node in nodes:
        for entry in node.get("parameters", []):
            if isinstance(entry, str):
                assert Path(entry).is_file(), entry
            else:
                for value in entry.values():
                    if isinstance(value, str) and value.startswith("$("):
                        assert value[2:-1] in declared, value
        remappings = node.get("remappings", [])
        assert all(isinstance(pair, tuple) and len(pair) == 2 for pair in remappings)
    rviz = [n for n in nodes if n["package"] == "rviz2"]
    assert rviz and Path(rviz[0]["arguments"][1]).name == "visuomotor.rviz"
