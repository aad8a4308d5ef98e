"""The simulated robot's process: the sim node and the actuator controller, one process.

As ros2_control runs its hardware plugin inside the controller manager's
process, the controller's loop steps the PyBullet world in-process
(:class:`visuomotor_sim.hardware.SimHardware`): the 1 kHz read → update →
write never crosses a process boundary. Only camera-rate and observer-rate
topics leave the process. Parameters: the ``sim_node`` and ``controller_node``
sections of the parameter files given with ``--params-file``.

    ros2 run visuomotor_ros sim_robot --ros-args \\
        --params-file sim.yaml --params-file controller.yaml -p use_sim_time:=true
"""

from __future__ import annotations

from typing import Any

from rclpy.node import Node

from visuomotor_ros.controller_node import ControllerNode
from visuomotor_ros.node_common import run_nodes
from visuomotor_ros.sim_node import SimNode


def build(**kwargs: Any) -> list[Node]:
    """The sim node and a controller stepping its world (``kwargs`` go to both nodes)."""
    sim = SimNode(**kwargs)
    try:
        controller = ControllerNode(hardware=sim.hardware, **kwargs)
    except BaseException:
        sim.destroy_node()
        raise
    sim.drive_clocks([sim, controller])  # the sim node runs on sim time only
    return [sim, controller]


def main(args: list[str] | None = None) -> None:
    # One executor thread for the I/O around the loop (rclpy's multi-threaded executor
    # costs the loop thread more GIL time than it saves); the loop has its own thread.
    run_nodes(build, args, threads=1)


if __name__ == "__main__":
    main()
