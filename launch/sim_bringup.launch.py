"""Simulated bringup: PyBullet sim + encoder + policy + controller (+ RViz, robot_state_publisher).

    ros2 launch launch/sim_bringup.launch.py                      # headless, sim time
    ros2 launch launch/sim_bringup.launch.py rviz:=true profile:=heldout
    ros2 launch launch/sim_bringup.launch.py execution_provider:=cuda namespace:=arm

The node list, parameter files and topic names come from visuomotor_ros.graph,
the same description the in-process runner (make demo) uses.
"""

from _bringup_common import bringup_description


def generate_launch_description():
    return bringup_description(sim=True)
