"""What a bringup starts, as data: the processes, their parameters and remappings.

One plan serves ``ros2 launch`` (:mod:`visuomotor_bringup.launch_description`) and
the multi-process bringup (:mod:`visuomotor_bringup.multiprocess`), so both start
the same executables with the same parameters. Pure Python: no ``launch``, no
rclpy; tested like any other code.

The launch arguments (:data:`ARGUMENTS`) are strings, as on the command line
(``name:=value``); :func:`resolve` checks them and refuses a bad value with a
``ValueError`` that says what to do instead, before anything is started.

Parameters reach a process as one generated YAML document
(:meth:`ProcessPlan.parameters`): each node's sections of its parameter files
(``config/<node>.yaml`` of visuomotor_ros, :func:`visuomotor_ros.graph.params_path`)
merged with the launch arguments' overrides, keyed ``/**/<node name>`` so they apply
in any namespace (a file keyed by the bare node name matches only a node in the root
namespace, and ``-p`` cannot address one node of a multi-node process).
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from visuomotor_core.robot_description import DEFAULT_ROBOT, load_robot
from visuomotor_ros import graph

#: The two bringups (launch file ``<name>_bringup.launch.py``).
SIM, ROBOT = "sim", "robot"
#: ONNX Runtime providers the encoder and policy nodes accept.
EXECUTION_PROVIDERS = ("cpu", "cuda", "tensorrt")
#: What the controller writes (``visuomotor_core.controller_config.COMMAND_INTERFACES``).
COMMAND_INTERFACES = ("effort", "position", "velocity")
#: Simulation stepping -> the controller's ``trigger``: lockstep steps the world
#: once per control tick as fast as the CPU allows, on sim time; realtime runs the
#: control loop on absolute wall-clock deadlines, the world paced by it.
STEP_MODES = {"lockstep": "lockstep", "realtime": "deadline"}
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_TOKEN = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"^/?{_TOKEN}(/{_TOKEN})*$")
#: This package: it ships the launch files and the RViz configuration.
PACKAGE = "visuomotor_bringup"
RVIZ_CONFIG = "visuomotor.rviz"
#: The bundled Fast DDS profile (``dds/`` of this package) and the variables that name a
#: profile file to Fast DDS (the older name first; Fast DDS reads either).
DDS_PROFILE = "fastdds.xml"
DDS_PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


@dataclass(frozen=True)
class Argument:
    """One launch argument: default (a string, as typed after ``:=``), help text,
    accepted values (empty: any) and the bringups that declare it."""

    default: str
    description: str
    choices: tuple[str, ...] = ()
    bringups: tuple[str, ...] = (SIM, ROBOT)


#: Every launch argument of the two bringups. Defaults equal the values in the
#: parameter files (tests/test_bringup_plan.py checks it), so an argument left
#: out starts the node as its YAML says.
ARGUMENTS: dict[str, Argument] = {
    "use_sim_time": Argument(
        "true", "Nodes use /clock (sim bringup: must stay true, the sim stamps sim time; "
        "robot bringup default false, true to replay a bag with --clock)", ("true", "false")),
    "namespace": Argument(
        "", "Namespace of every node, e.g. arm: moves every relative topic and service "
        "(/clock, /diagnostics stay absolute)"),
    "robot": Argument(
        DEFAULT_ROBOT, "The robot: its description urdf/<robot>.yaml in visuomotor_description "
        "names the joints, frames, URDF and default gains of every node (one per <robot>.yaml)"),
    "rviz": Argument("false", "Start RViz with the bundled configuration (where rviz2 is "
                     "installed)", ("true", "false")),
    "execution_provider": Argument(
        "cpu", "ONNX Runtime provider of the encoder and the policy (falls back toward cpu)",
        EXECUTION_PROVIDERS),
    "encoder_model": Argument("", "Encoder ONNX file (empty: the installed "
                              "visuomotor_models artifact named in encoder.yaml)"),
    "policy_model": Argument("", "Policy ONNX file (empty: the installed "
                             "visuomotor_models artifact named in policy.yaml)"),
    "profile": Argument("nominal", "Domain-randomization profile of the sim's episodes",
                        bringups=(SIM,)),
    "step_mode": Argument(
        "lockstep", "lockstep: the controller steps the sim once per tick as fast as the "
        "CPU allows (sim time); realtime: the 1 kHz loop on wall-clock deadlines",
        tuple(STEP_MODES), bringups=(SIM,)),
    "rt_priority": Argument(
        "0", "SCHED_FIFO priority 1-98 of the controller's loop thread (0: normal scheduling); "
        "the other threads of its process get 10 less (io_priority; 0 for a loop at 10 or less)"),
    "image_topic": Argument(graph.CAMERA_IMAGE, "Camera image topic the encoder reads "
                            "(relative names move with the namespace)", bringups=(ROBOT,)),
    "joint_states_topic": Argument(graph.JOINT_STATES, "Joint state topic of the robot "
                                   "driver", bringups=(ROBOT,)),
    "command_topic": Argument(
        graph.DEFAULT_COMMAND_TOPIC, "ros2_control forward-command topic the controller "
        "writes (relative: a namespace moves it)"),
    "command_interface": Argument(
        "effort", "Controller output: effort (N·m), position (rad) or velocity (rad/s); "
        "must match the ros2_control controller behind command_topic", COMMAND_INTERFACES),
    "dds_profile": Argument(
        "default", "Fast DDS XML profile of every process (FASTRTPS_DEFAULT_PROFILES_FILE): "
        "default = the bundled dds/fastdds.xml (8 MB shared-memory segments, so 640x480 "
        "images are not fragmented over UDP) unless the environment already names one; a "
        "file; or none"),
}


def arguments(sim: bool) -> dict[str, Argument]:
    """The arguments one bringup declares, with its defaults."""
    kind = SIM if sim else ROBOT
    declared = {name: arg for name, arg in ARGUMENTS.items() if kind in arg.bringups}
    if not sim:
        declared["use_sim_time"] = Argument(
            "false", ARGUMENTS["use_sim_time"].description, ("true", "false"))
    return declared


def bringup_name(sim: bool) -> str:
    return "sim_bringup" if sim else "robot_bringup"


@dataclass(frozen=True)
class ProcessPlan:
    """One OS process to start: the executable, its namespace, parameters and remappings.

    Attributes:
        role: short name (``robot``, ``encoder``, ...), the prefix of its output.
        package, executable: ``lib/<package>/<executable>`` in the install prefix.
        namespace: absolute namespace (``/arm``), or ``""`` for the root namespace.
        node_names: names of the nodes the process holds (empty: unknown, e.g. rviz2).
        params_files: the parameter files its nodes read (absolute; visuomotor_ros's
            ``config/<node>.yaml``).
        overrides: parameter values on top of the files, per node name; ``"/**"``
            applies to every node of the process.
        remappings: ``(from, to)`` topic remappings for the whole process.
        arguments: command-line arguments before ``--ros-args``.
        required: when it exits, the whole graph is shut down.
        environment: ``(name, value)`` variables set for the process on top of the
            launcher's environment (the DDS profile).
    """

    role: str
    package: str
    executable: str
    namespace: str
    node_names: tuple[str, ...]
    params_files: tuple[Path, ...]
    overrides: Mapping[str, Mapping[str, Any]]
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    required: bool = False
    environment: tuple[tuple[str, str], ...] = ()

    def parameters(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The process's parameter document: each node's file sections, then the overrides.

        Keys are ``/**/<node name>`` (any namespace); a process with no known node
        names gets its ``/**`` overrides only.
        """
        every = dict(self.overrides.get("/**", {}))
        if not self.node_names:
            return {"/**": {"ros__parameters": every}} if every else {}
        documents = [_load_yaml(path) for path in self.params_files]
        result = {}
        for name in self.node_names:
            values: dict[str, Any] = {}
            for document in documents:
                for key in ("/**", name, "/" + name, "/**/" + name):
                    section = document.get(key) or {}
                    values.update(section.get("ros__parameters") or {})
            values.update(every)
            values.update(self.overrides.get(name, {}))
            result["/**/" + name] = {"ros__parameters": values}
        return result

    def parameters_yaml(self) -> str:
        """:meth:`parameters` as YAML text, with a header naming its sources."""
        sources = ", ".join(str(path) for path in self.params_files) or "launch arguments"
        header = f"# {self.role}: generated by visuomotor_bringup from {sources}\n"
        return header + yaml.safe_dump(_plain(self.parameters()), sort_keys=False)

    def ros_arguments(self, params_file: str | Path) -> list[str]:
        """``--ros-args`` of the process, with ``params_file`` holding :meth:`parameters_yaml`."""
        args = ["--ros-args"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        args += ["--params-file", str(params_file)]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args


def resolve(sim: bool, given: Mapping[str, str]) -> dict[str, str]:
    """Every argument of the bringup with its value: ``given`` over the defaults, checked.

    Raises:
        ValueError: an unknown argument or a refused value; the message names each
            one and what to use instead.
    """
    declared = arguments(sim)
    name = bringup_name(sim)
    errors = []
    for key in given:
        if key not in declared:
            other = "robot_bringup" if sim else "sim_bringup"
            hint = f" (an argument of {other})" if key in ARGUMENTS else ""
            errors.append(f"unknown argument '{key}'{hint}; "
                          f"{name} takes: {', '.join(declared)}")
    values = {key: str(given.get(key, arg.default)).strip() for key, arg in declared.items()}
    for key, arg in declared.items():
        if key in ("use_sim_time", "rviz"):
            values[key] = values[key].lower()
            if values[key] not in _BOOLEANS:
                errors.append(f"{key}:={values[key]} is not a boolean (true or false)")
                continue
            values[key] = "true" if _BOOLEANS[values[key]] else "false"
        elif arg.choices and values[key] not in arg.choices:
            errors.append(f"{key}:={values[key]} is not one of {', '.join(arg.choices)}")
    if sim and values.get("use_sim_time") == "false":
        errors.append("use_sim_time:=false is refused: the sim stamps every message with "
                      "sim time (/clock), so wall-clock nodes would drop its frames as stale "
                      "and the loop would never start; keep use_sim_time:=true, or run "
                      "robot_bringup for a robot on the wall clock")
    errors += _check_namespace(values)
    errors += _check_rt_priority(values["rt_priority"])
    for key in ("command_topic", "image_topic", "joint_states_topic"):
        if key in values and not _NAME.match(values[key]):
            errors.append(f"{key}:={values[key]} is not a valid topic name")
    for key in ("encoder_model", "policy_model"):
        if values[key]:
            path = Path(values[key]).expanduser().absolute()
            if not path.is_file():
                errors.append(f"{key}:={values[key]}: no such file")
            values[key] = str(path)
    if values["dds_profile"] not in ("default", "none"):
        path = Path(values["dds_profile"]).expanduser().absolute()
        if not path.is_file():
            errors.append(f"dds_profile:={values['dds_profile']}: no such file (default, "
                          "none or an XML profile file)")
        values["dds_profile"] = str(path)
    if sim and "profile" in values:
        errors += _check_profile(values["profile"])
    try:
        graph.robot(values["robot"])
    except ValueError as err:
        errors.append(f"robot:={values['robot']}: {err}")
    if errors:
        raise ValueError(f"{name}: " + "; ".join(errors))
    return values


def dds_environment(
    value: str, environ: Mapping[str, str] | None = None
) -> tuple[tuple[str, str], ...]:
    """The variables that give the graph's processes the DDS profile ``value`` (a resolved
    ``dds_profile``): none for ``none``; for ``default`` the bundled profile, unless
    ``environ`` (default: this process's environment) already names a profile, which the
    processes then inherit."""
    environ = os.environ if environ is None else environ
    if value == "none":
        return ()
    if value == "default":
        if any(environ.get(name) for name in DDS_PROFILE_VARIABLES):
            return ()
        value = str(graph.package_share(PACKAGE) / "dds" / DDS_PROFILE)
    return tuple((name, value) for name in DDS_PROFILE_VARIABLES)


def plan(sim: bool, given: Mapping[str, str]) -> list[ProcessPlan]:
    """The graph's processes (``graph.processes(sim)``) as the bringup starts them.

    Raises:
        ValueError: see :func:`resolve`.
    """
    values = resolve(sim, given)
    use_sim_time = values["use_sim_time"] == "true"
    remappings = _remappings(values)
    environment = dds_environment(values["dds_profile"])
    plans = []
    for process in graph.processes(sim):
        # Every node of the graph reads its robot from the same description.
        overrides: dict[str, dict[str, Any]] = {
            "/**": {"use_sim_time": use_sim_time, "robot": values["robot"]}}
        for node in process.nodes:
            node_overrides = dict(graph.SIM_OVERRIDES.get(node.role, {})) if sim else {}
            node_overrides.update(_node_overrides(node.role, sim, values))
            if node_overrides:
                overrides[node.name] = node_overrides
        plans.append(ProcessPlan(
            role=process.role,
            package=process.package,
            executable=process.executable,
            namespace=values["namespace"],
            node_names=tuple(node.name for node in process.nodes),
            params_files=tuple(graph.params_path(file) for file in process.params_files),
            overrides=overrides,
            remappings=remappings,
            required=process.required,
            environment=environment,
        ))
    return plans


def optional_processes(
    sim: bool, given: Mapping[str, str], installed: Callable[[str], bool]
) -> tuple[list[ProcessPlan], list[str]]:
    """RViz (``rviz:=true``) and robot_state_publisher, where ``installed(package)``.

    Returns the processes and one line per one left out, saying why.
    """
    values = resolve(sim, given)
    use_sim_time = values["use_sim_time"] == "true"
    environment = dds_environment(values["dds_profile"])
    plans, notes = [], []
    if installed("robot_state_publisher"):
        plans.append(ProcessPlan(
            role="robot_state_publisher",
            package="robot_state_publisher",
            executable="robot_state_publisher",
            namespace=values["namespace"],
            node_names=(),
            params_files=(),
            overrides={"/**": {"use_sim_time": use_sim_time,
                               "robot_description":
                                   graph.urdf_path(values["robot"]).read_text()}},
            remappings=_remappings(values),
            environment=environment,
        ))
    elif values["rviz"] == "true":
        notes.append("robot_state_publisher is not installed: RViz gets no TF for the "
                     "robot model")
    if values["rviz"] == "true":
        if installed("rviz2"):
            config = graph.package_share(PACKAGE) / "rviz" / RVIZ_CONFIG
            plans.append(ProcessPlan(
                role="rviz",
                package="rviz2",
                executable="rviz2",
                namespace=values["namespace"],
                node_names=(),
                params_files=(),
                overrides={"/**": {"use_sim_time": use_sim_time}},
                # The robot's base frame as the fixed frame, whichever robot runs.
                arguments=("-d", str(config),
                           "--fixed-frame", load_robot(values["robot"]).base_frame),
                environment=environment,
            ))
        else:
            notes.append("rviz:=true but rviz2 is not installed: starting without RViz "
                         "(install ros-jazzy-rviz2, or run RViz on another machine)")
    return plans, notes


def installed(package: str) -> bool:
    """Whether the ament index (AMENT_PREFIX_PATH) has ``package``: rviz2 and
    robot_state_publisher come with a ROS 2 install, not with this project."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix(package)
    except (PackageNotFoundError, ValueError):
        return False
    return True


def describe_exit(returncode: int | None) -> str:
    """How a process ended: ``exited with code 1``, ``was killed by SIGKILL``."""
    if returncode is None:
        return "is running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["name:=value", ...]`` (as ``ros2 launch`` takes them) -> {name: value}; last wins."""
    result = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"'{item}': launch arguments are written name:=value")
        result[name] = value
    return result


def _node_overrides(role: str, sim: bool, values: Mapping[str, str]) -> dict[str, Any]:
    if role == "sim":
        return {"profile": values["profile"]}
    if role in ("encoder", "policy"):
        model = values[f"{role}_model"]
        return {"execution_provider": values["execution_provider"],
                **({"model_path": model} if model else {})}
    if role == "controller":
        priority = int(values["rt_priority"])
        result = {"command_interface": values["command_interface"],
                  "command_topic": values["command_topic"],
                  "rt_priority": priority, "io_priority": io_priority(priority)}
        if sim:
            result["trigger"] = STEP_MODES[values["step_mode"]]
        return result
    return {}


def _remappings(values: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    pairs = ((graph.CAMERA_IMAGE, values.get("image_topic", graph.CAMERA_IMAGE)),
             (graph.JOINT_STATES, values.get("joint_states_topic", graph.JOINT_STATES)))
    return tuple((source, target) for source, target in pairs if source != target)


def io_priority(rt_priority: int) -> int:
    """SCHED_FIFO priority of the controller process's other threads for a loop at
    ``rt_priority``: 10 below it (0, normal scheduling, for a loop at 10 or less)."""
    return rt_priority - 10 if rt_priority > 10 else 0


def _check_rt_priority(text: str) -> list[str]:
    if not (text.isdigit() and 0 <= int(text) <= 98):
        return [f"rt_priority:={text} is not an integer 0-98 (0: normal scheduling)"]
    return []


def _check_namespace(values: dict[str, str]) -> list[str]:
    namespace = values["namespace"].strip("/")
    if namespace and not _NAME.match(namespace):
        return [f"namespace:={values['namespace']} is not a valid namespace "
                "(tokens of letters, digits and _, not starting with a digit)"]
    values["namespace"] = "/" + namespace if namespace else ""
    return []


def _check_profile(profile: str) -> list[str]:
    try:
        from visuomotor_sim.randomization import default_config_path, load_profiles
    except ImportError:  # the sim package is absent: the sim node is the one to refuse
        return []
    try:
        names = sorted(load_profiles(default_config_path()))
    except (OSError, ValueError):
        return []
    if profile not in names:
        return [f"profile:={profile} is not a profile of randomization.yaml "
                f"({', '.join(names)})"]
    return []


def _load_yaml(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def _plain(value: Any) -> Any:
    """Tuples -> lists (yaml.safe_dump writes plain sequences only)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
