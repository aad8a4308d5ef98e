"""Shared body of the bringup launch files (thin: the graph itself is data).

Needs a ROS 2 install with `launch` and `launch_ros` (not on PyPI); the
description it reads, visuomotor_ros.graph, is tested without them.
"""

import os
import sys

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from visuomotor_ros import graph

ARGUMENTS = {
    "use_sim_time": ("true", "Use /clock (sim) instead of the wall clock"),
    "namespace": ("", "Namespace of every node"),
    "rviz": ("false", "Start RViz with the bundled configuration"),
    "execution_provider": ("cpu", "ONNX Runtime provider: cpu, cuda or tensorrt"),
    "encoder_model": (str(graph.model_path("encoder.onnx")), "Encoder ONNX file"),
    "policy_model": (str(graph.model_path("policy.onnx")), "Policy ONNX file"),
    "profile": ("nominal", "Domain-randomization profile of the sim"),
    "image_topic": ("/" + graph.CAMERA_IMAGE, "Camera image topic"),
    "joint_states_topic": ("/" + graph.JOINT_STATES, "Joint state topic"),
    "command_topic": ("/" + graph.DEFAULT_COMMAND_TOPIC, "ros2_control forward-command topic"),
    "command_interface": ("effort", "Controller output: effort, position or velocity"),
}


def _overrides(role, sim):
    arg = LaunchConfiguration
    common = {"use_sim_time": arg("use_sim_time")}
    per_role = {
        "sim": {"profile": arg("profile"), "command_topic": arg("command_topic")},
        "encoder": {
            "execution_provider": arg("execution_provider"),
            "model_path": arg("encoder_model"),
        },
        "policy": {
            "execution_provider": arg("execution_provider"),
            "model_path": arg("policy_model"),
        },
        "controller": {
            "command_topic": arg("command_topic"),
            "command_interface": arg("command_interface"),
        },
    }
    sim_only = graph.SIM_OVERRIDES.get(role, {}) if sim else {}
    return {**common, **sim_only, **per_role.get(role, {})}


def _remappings(sim):
    if sim:
        return []
    return [
        (graph.CAMERA_IMAGE, LaunchConfiguration("image_topic")),
        (graph.JOINT_STATES, LaunchConfiguration("joint_states_topic")),
    ]


def _robot_state_publisher(context):
    """robot_state_publisher gives RViz its TF where it is installed."""
    try:
        from ament_index_python.packages import get_package_prefix

        get_package_prefix("robot_state_publisher")
    except Exception:  # noqa: BLE001 - PackageNotFoundError or no ament index: skip it
        return []
    description = graph.urdf_path().read_text()
    return [
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            namespace=LaunchConfiguration("namespace"),
            parameters=[
                {"robot_description": description},
                {"use_sim_time": LaunchConfiguration("use_sim_time")},
            ],
        )
    ]


def bringup_description(sim):
    defaults = {**ARGUMENTS, "use_sim_time": ("true" if sim else "false", "Use /clock")}
    actions = [
        DeclareLaunchArgument(name, default_value=default, description=text)
        for name, (default, text) in defaults.items()
    ]
    for spec in graph.nodes(sim=sim):
        actions.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=LaunchConfiguration("namespace"),
                parameters=[str(graph.params_path(spec)), _overrides(spec.role, sim)],
                remappings=_remappings(sim),
                output="screen",
                emulate_tty=True,
            )
        )
    actions.append(OpaqueFunction(function=_robot_state_publisher))
    rviz_config = graph.package_share(graph.BRINGUP_PACKAGE) / "rviz" / "visuomotor.rviz"
    actions.append(
        Node(
            package="rviz2",
            executable="rviz2",
            arguments=["-d", str(rviz_config)],
            parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        )
    )
    return LaunchDescription(actions)
