"""The visuomotor graph as data: which nodes run, their parameter files and topics.

One description serves the launch files (``launch/*.launch.py``) and the
in-process runner (:mod:`visuomotor_ros.runner`), so both start the same nodes
with the same parameter files and remappings. ROS-free: importable without
rclpy or launch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

BRINGUP_PACKAGE = "visuomotor_bringup"
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
        role: short name used by the runner and the launch files.
        package: ROS package holding the executable.
        executable: console script installed in ``lib/<package>``.
        name: node name; the key of its section in ``params_file``.
        params_file: file name in ``share/visuomotor_bringup/config``.
        factory: ``module:attribute`` creating the node in-process.
        sim_only: started only in simulation.
    """

    role: str
    package: str
    executable: str
    name: str
    params_file: str
    factory: str
    sim_only: bool = False
    remappings: tuple[tuple[str, str], ...] = field(default=())


GRAPH: tuple[NodeSpec, ...] = (
    NodeSpec(
        role="sim",
        package="visuomotor_sim",
        executable="sim_node",
        name="sim_node",
        params_file="sim.yaml",
        factory="visuomotor_sim.node:SimNode",
        sim_only=True,
    ),
    NodeSpec(
        role="encoder",
        package="visuomotor_ros",
        executable="encoder_node",
        name="encoder_node",
        params_file="encoder.yaml",
        factory="visuomotor_ros.encoder_node:EncoderNode",
    ),
    NodeSpec(
        role="policy",
        package="visuomotor_ros",
        executable="policy_node",
        name="policy_node",
        params_file="policy.yaml",
        factory="visuomotor_ros.policy_node:PolicyNode",
    ),
    NodeSpec(
        role="controller",
        package="visuomotor_ros",
        executable="controller_node",
        name="controller_node",
        params_file="controller.yaml",
        factory="visuomotor_ros.controller_node:ControllerNode",
    ),
)


#: Parameters that differ in simulation, on top of the YAML files (launch files
#: and the runner both apply them): the sim steps in lockstep with the
#: controller, which ticks once per joint state it receives.
SIM_OVERRIDES: dict[str, dict[str, object]] = {
    "controller": {"trigger": "joint_states"},
}


def nodes(sim: bool) -> tuple[NodeSpec, ...]:
    """The nodes to start: all of them in simulation, all but the sim on a robot."""
    return tuple(spec for spec in GRAPH if sim or not spec.sim_only)


def source_root() -> Path:
    """Root of the source checkout (used when packages are not installed)."""
    env = os.environ.get("VISUOMOTOR_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4]


def package_share(package: str) -> Path:
    """``share/<package>`` from the ament index, else the package's source folder."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(package))
    except Exception:  # not installed / no ament index: fall back to the checkout
        root = source_root()
        candidates = {
            BRINGUP_PACKAGE: root / "ros2_ws" / "src" / BRINGUP_PACKAGE,
            MODELS_PACKAGE: root / "models",
        }
        if package not in candidates:
            raise
        return candidates[package]


def params_path(spec_or_file: NodeSpec | str) -> Path:
    """Absolute path of a node's parameter file in the bringup package."""
    name = spec_or_file.params_file if isinstance(spec_or_file, NodeSpec) else spec_or_file
    return package_share(BRINGUP_PACKAGE) / "config" / name


def model_path(file_name: str) -> Path:
    """Absolute path of a committed model artifact (``models/artifacts``)."""
    return package_share(MODELS_PACKAGE) / "artifacts" / file_name


def urdf_path() -> Path:
    """The robot description shipped with the bringup package."""
    return package_share(BRINGUP_PACKAGE) / "urdf" / "panda.urdf"
