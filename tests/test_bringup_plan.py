"""The bringup plan (visuomotor_bringup.plan): what ``ros2 launch`` and the multi-process
bringup start, tested without ``launch``. Every launch argument does what it says,
a bad value is refused before anything starts, and the generated parameter files
reach the right node in any namespace (checked through rcl itself)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from visuomotor_bringup import plan
from visuomotor_core.robot_description import load_robot
from visuomotor_ros import graph

BY_ROLE = {spec.role: spec for spec in graph.GRAPH}


def _schema(role: str) -> dict:
    module = importlib.import_module(BY_ROLE[role].factory.partition(":")[0])
    return {spec.name: spec for spec in module.SCHEMA}


def _by_role(plans):
    return {process.role: process for process in plans}


def _yaml_values(role: str) -> dict:
    spec = BY_ROLE[role]
    return yaml.safe_load(graph.params_path(spec).read_text())[spec.name]["ros__parameters"]


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "robot"])
def test_plan_starts_the_graph_processes_with_their_parameter_files(sim):
    plans = plan.plan(sim, {})
    assert [(p.role, p.package, p.executable, p.required) for p in plans] == [
        (s.role, s.package, s.executable, s.required) for s in graph.processes(sim)]
    for process, spec in zip(plans, graph.processes(sim), strict=True):
        assert process.node_names == tuple(node.name for node in spec.nodes)
        assert process.params_files and all(path.is_absolute() and path.is_file()
                                            for path in process.params_files)
        assert process.namespace == ""


def test_sim_robot_process_holds_sim_and_controller_and_is_required():
    robot = _by_role(plan.plan(True, {}))["robot"]
    assert robot.executable == "sim_robot" and robot.required
    assert robot.node_names == ("sim_node", "controller_node")
    names = {path.name for path in robot.params_files}
    assert names == {"sim.yaml", "controller.yaml"}


def test_robot_bringup_requires_the_controller():
    plans = _by_role(plan.plan(False, {}))
    assert plans["controller"].required
    assert not plans["encoder"].required and not plans["policy"].required


def test_argument_defaults_equal_the_parameter_files():
    """An argument left out starts the node as its YAML says."""
    controller, sim = _yaml_values("controller"), _yaml_values("sim")
    assert plan.ARGUMENTS["command_interface"].default == controller["command_interface"]
    assert plan.ARGUMENTS["command_topic"].default == controller["command_topic"]
    assert plan.ARGUMENTS["profile"].default == sim["profile"]
    assert int(plan.ARGUMENTS["rt_priority"].default) == controller["rt_priority"]
    assert plan.io_priority(controller["rt_priority"]) == controller["io_priority"]
    for role in ("encoder", "policy"):
        assert plan.ARGUMENTS["execution_provider"].default == \
            _yaml_values(role)["execution_provider"]


def test_argument_choices_are_the_nodes_choices():
    assert set(plan.EXECUTION_PROVIDERS) == set(_schema("encoder")["execution_provider"].choices)
    assert set(plan.EXECUTION_PROVIDERS) == set(_schema("policy")["execution_provider"].choices)
    assert set(plan.COMMAND_INTERFACES) == set(_schema("controller")["command_interface"].choices)
    assert set(plan.STEP_MODES.values()) <= set(_schema("controller")["trigger"].choices)


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "robot"])
def test_every_override_is_a_parameter_the_node_declares(sim):
    given = {"encoder_model": str(graph.model_path("encoder.onnx")),
             "policy_model": str(graph.model_path("policy.onnx"))}
    for process in plan.plan(sim, given):
        for node_name, values in process.overrides.items():
            if node_name == "/**":
                assert set(values) == {"use_sim_time", "robot"}
                for spec in graph.GRAPH:  # every node of the graph declares the robot
                    assert "robot" in _schema(spec.role), spec.name
                continue
            role = next(s.role for s in graph.GRAPH if s.name == node_name)
            undeclared = set(values) - set(_schema(role))
            assert not undeclared, f"{node_name}: {undeclared}"


def test_command_topic_default_is_relative_so_a_namespace_moves_it():
    assert not plan.ARGUMENTS["command_topic"].default.startswith("/")
    robot = _by_role(plan.plan(True, {"namespace": "arm"}))["robot"]
    assert robot.overrides["controller_node"]["command_topic"] == graph.DEFAULT_COMMAND_TOPIC
    assert robot.namespace == "/arm"
    assert robot.ros_arguments("p.yaml")[:3] == ["--ros-args", "-r", "__ns:=/arm"]


@pytest.mark.parametrize("given, expected", [("arm", "/arm"), ("/arm/", "/arm"),
                                             ("left/arm", "/left/arm"), ("", ""), ("/", "")])
def test_namespace_is_normalised_to_absolute(given, expected):
    assert {p.namespace for p in plan.plan(True, {"namespace": given})} == {expected}


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "robot"])
def test_rt_priority_sets_the_loop_and_its_process_threads_below_it(sim):
    controller = _by_role(plan.plan(sim, {"rt_priority": "80"}))["robot" if sim else
                                                                  "controller"]
    overrides = controller.overrides["controller_node"]
    assert (overrides["rt_priority"], overrides["io_priority"]) == (80, 70)
    low = _by_role(plan.plan(sim, {"rt_priority": "5"}))["robot" if sim else "controller"]
    assert (low.overrides["controller_node"]["rt_priority"],
            low.overrides["controller_node"]["io_priority"]) == (5, 0)
    for bad in ("99", "-1", "high", "1.5"):
        with pytest.raises(ValueError, match=f"rt_priority:={bad}"):
            plan.plan(sim, {"rt_priority": bad})


def test_step_mode_sets_the_controller_trigger():
    for step_mode, trigger in (("lockstep", "lockstep"), ("realtime", "deadline")):
        robot = _by_role(plan.plan(True, {"step_mode": step_mode}))["robot"]
        assert robot.overrides["controller_node"]["trigger"] == trigger
        assert robot.overrides["controller_node"]["hardware"] == "sim"


def test_robot_bringup_keeps_the_controller_yaml_trigger_and_topics_hardware():
    controller = _by_role(plan.plan(False, {}))["controller"]
    assert "trigger" not in controller.overrides["controller_node"]
    assert "hardware" not in controller.overrides["controller_node"]


def test_per_node_arguments_reach_their_node_only():
    encoder = str(graph.model_path("encoder.onnx"))
    plans = _by_role(plan.plan(True, {"profile": "heldout", "execution_provider": "cuda",
                                      "encoder_model": encoder,
                                      "command_interface": "position"}))
    robot = plans["robot"]
    assert robot.overrides["sim_node"] == {"profile": "heldout"}
    assert robot.overrides["controller_node"]["command_interface"] == "position"
    assert plans["encoder"].overrides["encoder_node"] == {"execution_provider": "cuda",
                                                          "model_path": encoder}
    assert plans["policy"].overrides["policy_node"] == {"execution_provider": "cuda"}


def test_robot_goes_to_every_node_and_an_unknown_robot_is_refused():
    assert {p.overrides["/**"]["robot"] for p in plan.plan(True, {})} == {"panda"}
    assert {p.overrides["/**"]["robot"] for p in plan.plan(False, {"robot": "iiwa"})} == {"iiwa"}
    with pytest.raises(ValueError, match="robot:=ur5: no description for robot 'ur5'"):
        plan.plan(True, {"robot": "ur5"})


def test_use_sim_time_goes_to_every_node():
    for sim, value in ((True, True), (False, False)):
        assert {p.overrides["/**"]["use_sim_time"] for p in plan.plan(sim, {})} == {value}
    assert {p.overrides["/**"]["use_sim_time"]
            for p in plan.plan(False, {"use_sim_time": "true"})} == {True}


def test_robot_topics_are_remapped_only_when_changed():
    assert all(not p.remappings for p in plan.plan(False, {}))
    plans = plan.plan(False, {"image_topic": "/camera/color/image_raw",
                              "joint_states_topic": "/franka/joint_states"})
    for process in plans:
        assert process.remappings == ((graph.CAMERA_IMAGE, "/camera/color/image_raw"),
                                      (graph.JOINT_STATES, "/franka/joint_states"))
        assert ["-r", f"{graph.CAMERA_IMAGE}:=/camera/color/image_raw"] == \
            process.ros_arguments("p.yaml")[-4:-2]


@pytest.mark.parametrize("sim, given, message", [
    (True, {"use_sim_time": "false"}, r"use_sim_time:=false is refused.*sim stamps.*"
                                      r"use_sim_time:=true.*robot_bringup"),
    (True, {"step_mode": "fast"}, r"step_mode:=fast is not one of lockstep, realtime"),
    (False, {"command_interface": "torque"}, r"command_interface:=torque is not one of "
                                             r"effort, position, velocity"),
    (True, {"execution_provider": "gpu"}, r"execution_provider:=gpu is not one of "
                                          r"cpu, cuda, tensorrt"),
    (True, {"rviz": "maybe"}, r"rviz:=maybe is not a boolean"),
    (True, {"namespace": "2arms"}, r"namespace:=2arms is not a valid namespace"),
    (False, {"command_topic": "a b"}, r"command_topic:=a b is not a valid topic name"),
    (True, {"encoder_model": "/nonexistent/encoder.onnx"}, r"encoder_model:=.*no such file"),
    (True, {"profile": "windy"}, r"profile:=windy is not a profile of randomization.yaml "
                                 r"\(.*nominal.*training_with_force"),
    (True, {"image_topic": "/cam"}, r"unknown argument 'image_topic' \(an argument of "
                                    r"robot_bringup\)"),
    (False, {"step_mode": "lockstep"}, r"unknown argument 'step_mode'"),
    (True, {"rvis": "true"}, r"unknown argument 'rvis'; sim_bringup takes: .*rviz"),
    (False, {"dds_profile": "/nonexistent/fastdds.xml"}, r"dds_profile:=.*no such file"),
])
def test_refused_arguments_say_why(sim, given, message):
    with pytest.raises(ValueError, match=message):
        plan.plan(sim, given)
    with pytest.raises(ValueError, match=message):
        plan.optional_processes(sim, given, lambda package: True)


def test_every_refusal_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        plan.plan(True, {"step_mode": "x", "command_interface": "y"})
    assert "step_mode:=x" in str(error.value) and "command_interface:=y" in str(error.value)
    assert str(error.value).startswith("sim_bringup: ")


def test_booleans_accept_launch_spellings():
    assert plan.resolve(False, {"use_sim_time": "True", "rviz": "1"})["rviz"] == "true"
    assert plan.resolve(False, {"use_sim_time": "0"})["use_sim_time"] == "false"


def test_relative_model_path_becomes_absolute(tmp_path, monkeypatch):
    (tmp_path / "enc.onnx").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    encoder = _by_role(plan.plan(True, {"encoder_model": "enc.onnx"}))["encoder"]
    assert encoder.overrides["encoder_node"]["model_path"] == str(tmp_path / "enc.onnx")


def test_declared_arguments_differ_per_bringup():
    sim, robot = plan.arguments(True), plan.arguments(False)
    assert "step_mode" in sim and "profile" in sim and "image_topic" not in sim
    assert "image_topic" in robot and "step_mode" not in robot
    assert sim["use_sim_time"].default == "true" and robot["use_sim_time"].default == "false"
    assert set(sim) | set(robot) == set(plan.ARGUMENTS)


def test_parameter_document_merges_file_and_overrides_per_node():
    robot = _by_role(plan.plan(True, {"profile": "training", "step_mode": "realtime"}))["robot"]
    document = robot.parameters()
    assert set(document) == {"/**/sim_node", "/**/controller_node"}
    sim = document["/**/sim_node"]["ros__parameters"]
    controller = document["/**/controller_node"]["ros__parameters"]
    assert sim["profile"] == "training" and sim["use_sim_time"] is True
    assert controller["trigger"] == "deadline" and controller["hardware"] == "sim"
    assert "trigger" not in sim and "profile" not in controller
    yaml_controller = _yaml_values("controller")
    assert controller["rate_hz"] == yaml_controller["rate_hz"]
    assert "kp" not in controller  # the gains are the robot description's unless overridden
    text = robot.parameters_yaml()
    assert text.startswith("# robot: generated by visuomotor_bringup from ")
    assert yaml.safe_load(text) == document


def test_generated_parameters_reach_each_node_in_a_namespace(tmp_path):
    """rcl itself reads the generated file: a node of a two-node process in /arm gets its
    own section (a file keyed by the bare node name would not apply there)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    robot = _by_role(plan.plan(True, {"namespace": "arm", "profile": "heldout"}))["robot"]
    path = tmp_path / "robot.yaml"
    path.write_text(robot.parameters_yaml())
    context = Context()
    rclpy.init(args=["proc", *robot.ros_arguments(path)], context=context)
    try:
        sim = Node("sim_node", context=context,
                   automatically_declare_parameters_from_overrides=True)
        controller = Node("controller_node", context=context,
                          automatically_declare_parameters_from_overrides=True)
        assert sim.get_fully_qualified_name() == "/arm/sim_node"
        assert sim.get_parameter("profile").value == "heldout"
        assert not sim.has_parameter("trigger")
        assert controller.get_parameter("trigger").value == "lockstep"
        assert controller.get_parameter("use_sim_time").value is True
        sim.destroy_node()
        controller.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_rviz_only_where_installed_with_a_note_otherwise():
    processes, notes = plan.optional_processes(True, {"rviz": "true"}, lambda package: False)
    assert processes == []
    assert any("rviz2 is not installed: starting without RViz" in note for note in notes)
    processes, notes = plan.optional_processes(True, {"rviz": "true"}, lambda package: True)
    by_role = _by_role(processes)
    assert set(by_role) == {"rviz", "robot_state_publisher"} and notes == []
    rviz = by_role["rviz"]
    assert rviz.arguments[0] == "-d" and Path(rviz.arguments[1]).is_file()
    assert rviz.arguments[2:] == ("--fixed-frame", "panda_link0")
    processes, _ = plan.optional_processes(True, {"rviz": "true", "robot": "iiwa"},
                                           lambda package: True)
    iiwa_frame = _by_role(processes)["rviz"].arguments[3]
    assert iiwa_frame == load_robot("iiwa").base_frame != "panda_link0"
    assert not rviz.required
    description = by_role["robot_state_publisher"].parameters()["/**"]["ros__parameters"]
    assert description["robot_description"].lstrip().startswith("<")
    assert description["use_sim_time"] is True


def test_no_rviz_requested_no_rviz_and_no_note():
    processes, notes = plan.optional_processes(True, {}, lambda package: False)
    assert processes == [] and notes == []


def test_parse_assignments_takes_launch_syntax():
    assert plan.parse_assignments(["a:=1", "b:=", "a:=2"]) == {"a": "2", "b": ""}
    with pytest.raises(ValueError, match="name:=value"):
        plan.parse_assignments(["rviz=true"])


def test_describe_exit_names_code_or_signal():
    assert plan.describe_exit(1) == "exited with code 1"
    assert plan.describe_exit(-9) == "was killed by SIGKILL"


@pytest.mark.parametrize("sim", [True, False], ids=["sim", "robot"])
def test_every_process_gets_the_bundled_dds_profile_by_default(sim, monkeypatch):
    for name in plan.DDS_PROFILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    processes = plan.plan(sim, {}) + plan.optional_processes(sim, {}, lambda p: True)[0]
    bundled = graph.package_share(plan.PACKAGE) / "dds" / plan.DDS_PROFILE
    for process in processes:
        assert dict(process.environment) == {name: str(bundled)
                                             for name in plan.DDS_PROFILE_VARIABLES}
    # The profile enlarges Fast DDS's shared-memory segment past a 640x480 rgb8 image,
    # keeps UDPv4 for other hosts, and is the default participant profile.
    import xml.etree.ElementTree as ElementTree

    ns = {"dds": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ElementTree.parse(bundled).getroot()
    transports = {d.findtext("dds:type", namespaces=ns): d
                  for d in root.iterfind(".//dds:transport_descriptor", ns)}
    assert set(transports) == {"SHM", "UDPv4"}
    assert int(transports["SHM"].findtext("dds:segment_size", namespaces=ns)) >= 2 * 640 * 480 * 3
    participant = root.find(".//dds:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//dds:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", ns)]
    assert sorted(used) == sorted(d.findtext("dds:transport_id", namespaces=ns)
                                  for d in transports.values())


def test_a_dds_profile_of_the_environment_is_kept_and_none_sets_nothing(tmp_path):
    own = tmp_path / "own.xml"
    own.write_text("<profiles/>")
    assert plan.dds_environment("default", {"FASTRTPS_DEFAULT_PROFILES_FILE": "/x.xml"}) == ()
    assert plan.dds_environment("default", {"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}) == ()
    assert plan.dds_environment("none", {}) == ()
    given = plan.plan(False, {"dds_profile": str(own)})
    assert all(dict(p.environment) == {name: str(own) for name in plan.DDS_PROFILE_VARIABLES}
               for p in given)
    assert all(p.environment == () for p in plan.plan(False, {"dds_profile": "none"}))
