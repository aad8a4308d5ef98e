"""The visuomotor graph as data: which nodes run, their parameter files and topics.

One description serves the launch files (``launch/*.launch.py``) and the
in-process runner (:mod:`visuomotor_ros.runner`), so both start the same nodes
with the same parameter files and remappings. The parameter files ship with
this package (``config/<node>.yaml``, installed to ``share/visuomotor_ros/config``).
ROS-free: importable without rclpy or launch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from visuomotor_core.robot_description import DEFAULT_ROBOT, RobotDescription, load_robot

#: The package of the nodes, their executables and their parameter files.
ROS_PACKAGE = "visuomotor_ros"
MODELS_PACKAGE = "visuomotor_models"

# Topic and service names of the loop (see README, "Topics"). Relative, so a
# launch namespace moves the whole graph; without one they resolve to "/<name>".
CAMERA_IMAGE = "camera/image_raw"
CAMERA_INFO = "camera/camera_info"
JOINT_STATES = "joint_states"
ROBOT_DESCRIPTION = "robot_description"
ENCODER_FEATURES = "encoder/features"
ENCODER_TARGET = "encoder/target_estimate"
POLICY_TARGETS = "policy/joint_targets"
POLICY_GOAL = "policy/goal"
POLICY_RESET = "policy/reset"
#: Every node's parameter changes (rcl_interfaces/ParameterEvent; absolute).
PARAMETER_EVENTS = "/parameter_events"
CONTROLLER_STATE = "controller/state"
CONTROLLER_STATUS_TEXT = "controller/status_text"
DEFAULT_COMMAND_TOPIC = "effort_controller/commands"
CONTROLLER_ESTOP = "controller/estop"
CONTROLLER_RESET_ESTOP = "controller/reset_estop"
TASK_STATUS = "sim/task_status"
TARGET_MARKER = "sim/target_marker"
SIM_RESET = "sim/reset_episode"
SIM_SET_TARGET = "sim/set_target"
# Absolute by ROS convention.
CLOCK = "/clock"
DIAGNOSTICS = "/diagnostics"


@dataclass(frozen=True)
class NodeSpec:
    """One node of the graph.

    Attributes:
        role: short name used by the runner, the bringup and the launch files.
        name: node name; the key of its section in ``params_file``.
        params_file: file name in ``share/visuomotor_ros/config``.
        factory: ``module:attribute`` creating the node in-process.
    """

    role: str
    name: str
    params_file: str
    factory: str


@dataclass(frozen=True)
class ProcessSpec:
    """One OS process of the deployed graph (``ros2 launch``, the multi-process bringup).

    Attributes:
        role: short name of the process.
        package: ROS package holding the executable.
        executable: console script installed in ``lib/<package>``.
        nodes: the nodes the process holds (their parameter sections all go to it).
        required: when it exits, the whole graph is shut down (the robot side:
            without the controller nothing may command the arm).
    """

    role: str
    package: str
    executable: str
    nodes: tuple[NodeSpec, ...]
    required: bool = False

    @property
    def params_files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(node.params_file for node in self.nodes))


SIM = NodeSpec("sim", "sim_node", "sim.yaml", "visuomotor_ros.sim_node:SimNode")
CONTROLLER = NodeSpec(
    "controller", "controller_node", "controller.yaml",
    "visuomotor_ros.controller_node:ControllerNode",
)
ENCODER = NodeSpec(
    "encoder", "encoder_node", "encoder.yaml", "visuomotor_ros.encoder_node:EncoderNode"
)
POLICY = NodeSpec("policy", "policy_node", "policy.yaml", "visuomotor_ros.policy_node:PolicyNode")

#: Every node, in start order.
GRAPH: tuple[NodeSpec, ...] = (SIM, ENCODER, POLICY, CONTROLLER)

_PERCEPTION = (
    ProcessSpec("encoder", "visuomotor_ros", "encoder_node", (ENCODER,)),
    ProcessSpec("policy", "visuomotor_ros", "policy_node", (POLICY,)),
)
#: Simulation: physics, camera and the 1 kHz controller share one process (the
#: control loop never crosses a process boundary); perception runs beside it.
SIM_PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec("robot", "visuomotor_ros", "sim_robot", (SIM, CONTROLLER), required=True),
    *_PERCEPTION,
)
#: A robot whose driver runs the fast loop: the controller talks to it over topics.
ROBOT_PROCESSES: tuple[ProcessSpec, ...] = (
    ProcessSpec("controller", "visuomotor_ros", "controller_node", (CONTROLLER,), required=True),
    *_PERCEPTION,
)


#: Parameters that differ in simulation, on top of the YAML files (launch files,
#: the multi-process bringup and the runner all apply them): the controller's
#: hardware is the sim world in its own process, stepped once per control tick, in
#: lockstep on sim time (a launch's ``step_mode:=realtime`` paces it on the wall clock).
SIM_OVERRIDES: dict[str, dict[str, object]] = {
    "controller": {"hardware": "sim", "trigger": "lockstep"},
}


def nodes(sim: bool) -> tuple[NodeSpec, ...]:
    """The nodes to start: all of them in simulation, all but the sim on a robot."""
    return tuple(spec for spec in GRAPH if sim or spec is not SIM)


def processes(sim: bool) -> tuple[ProcessSpec, ...]:
    """The OS processes of the deployed graph."""
    return SIM_PROCESSES if sim else ROBOT_PROCESSES


def source_root() -> Path:
    """Root of the source checkout (used when packages are not installed)."""
    env = os.environ.get("VISUOMOTOR_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4]


def package_share(package: str) -> Path:
    """``share/<package>`` from the ament index, else the package's source folder
    (``ros2_ws/src/<package>``; ``models`` for visuomotor_models)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:  # not installed / no ament index: fall back to the checkout
        root = source_root()
        source = (root / "models" if package == MODELS_PACKAGE
                  else root / "ros2_ws" / "src" / package)
        if not source.is_dir():
            raise
        return source


def params_path(spec_or_file: NodeSpec | str) -> Path:
    """Absolute path of a node's parameter file (``config/`` of this package)."""
    name = spec_or_file.params_file if isinstance(spec_or_file, NodeSpec) else spec_or_file
    return package_share(ROS_PACKAGE) / "config" / name


def model_path(file_name: str) -> Path:
    """Absolute path of a committed model artifact (``models/artifacts``)."""
    return package_share(MODELS_PACKAGE) / "artifacts" / file_name


def robot(name: str = DEFAULT_ROBOT) -> RobotDescription:
    """The robot's description (joints, frames, home, gains; beside its URDF in
    visuomotor_description)."""
    return load_robot(name)


def urdf_path(name: str = DEFAULT_ROBOT) -> Path:
    """The robot's URDF (its description names it)."""
    return load_robot(name).urdf
