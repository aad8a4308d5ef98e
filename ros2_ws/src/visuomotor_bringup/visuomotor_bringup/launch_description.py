"""``ros2 launch`` adapter: the bringup plan (:mod:`visuomotor_bringup.plan`) as launch actions.

The launch files only call :func:`generate`. Everything they start comes from
:func:`visuomotor_bringup.plan.plan`, which is tested without ``launch``; this
module maps it onto actions:

* one ``DeclareLaunchArgument`` per argument of the bringup;
* one ``OpaqueFunction`` that reads the arguments, lets the plan check them
  (a refused value ends the launch with the plan's message and an error exit
  status before any process starts) and returns one ``launch_ros`` ``Node``
  per process. A process holding several nodes gets no ``name=`` (a node-name
  remap would rename all of them); a required process shuts the launch down
  when it exits, saying which one and how it ended;
* RViz (``rviz:=true``) and robot_state_publisher only where the ament index has
  them, a log line otherwise.

``launch`` and ``launch_ros`` come with a ROS 2 install (not from PyPI); they are
imported inside the functions, so this module imports without them.
"""

from __future__ import annotations

import tempfile
from typing import Any

from visuomotor_bringup import plan as bringup_plan


def generate(sim: bool) -> Any:
    """The ``LaunchDescription`` of the sim (``sim=True``) or robot bringup."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = bringup_plan.arguments(sim)
    actions = [
        DeclareLaunchArgument(name, default_value=arg.default, description=arg.description)
        for name, arg in declared.items()
    ]
    actions.append(OpaqueFunction(function=_processes, kwargs={"sim": sim}))
    return LaunchDescription(actions)


def write_parameters(process: bringup_plan.ProcessPlan) -> str:
    """Write the process's parameter document to a file that outlives the launch (as
    launch_ros does for parameter dictionaries); returns its path."""
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"visuomotor_{process.role}_", suffix=".yaml", delete=False
    ) as handle:
        handle.write(process.parameters_yaml())
    return handle.name


def _processes(context: Any, sim: bool) -> list[Any]:
    from launch.actions import LogInfo

    given = {name: context.launch_configurations[name]
             for name in bringup_plan.arguments(sim) if name in context.launch_configurations}
    # A refused value raises ValueError here: launch logs its message and exits
    # non-zero, and nothing has been started.
    processes = bringup_plan.plan(sim, given)
    extras, notes = bringup_plan.optional_processes(sim, given, bringup_plan.installed)
    actions: list[Any] = [LogInfo(msg=f"{bringup_plan.bringup_name(sim)}: {note}")
                          for note in notes]
    actions += [_node(process) for process in processes + extras]
    return actions


def _node(process: bringup_plan.ProcessPlan) -> Any:
    from launch_ros.actions import Node

    kwargs: dict[str, Any] = {}
    if len(process.node_names) == 1:
        kwargs["name"] = process.node_names[0]
    if process.required:
        kwargs["on_exit"] = _shutdown_on_exit(process)
    return Node(
        package=process.package,
        executable=process.executable,
        # Relative, so a PushRosNamespace of an including launch file still applies.
        namespace=process.namespace.lstrip("/") or None,
        parameters=[write_parameters(process)],
        remappings=list(process.remappings),
        arguments=list(process.arguments),
        additional_env=dict(process.environment) or None,
        output="screen",
        emulate_tty=True,
        **kwargs,
    )


def _shutdown_on_exit(process: bringup_plan.ProcessPlan) -> Any:
    from launch.actions import Shutdown

    def on_exit(event: Any, context: Any) -> list[Any] | None:
        if context.is_shutdown:
            return None  # the launch is already ending (Ctrl-C, another required exit)
        how = bringup_plan.describe_exit(event.returncode)
        return [Shutdown(reason=f"required process '{process.role}' ({process.executable}) "
                                f"{how}: shutting the graph down")]

    return on_exit
