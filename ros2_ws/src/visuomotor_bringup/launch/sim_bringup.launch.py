"""Simulated bringup: the sim robot (PyBullet world, camera and 1 kHz controller in one
process), the encoder and the policy, each its own process (+ RViz, robot_state_publisher
where installed).

    ros2 launch visuomotor_bringup sim_bringup.launch.py
    ros2 launch visuomotor_bringup sim_bringup.launch.py rviz:=true profile:=heldout
    ros2 launch visuomotor_bringup sim_bringup.launch.py step_mode:=realtime namespace:=arm
    ros2 launch visuomotor_bringup sim_bringup.launch.py --show-args

What it starts comes from visuomotor_bringup.plan (the multi-process bringup,
`visuomotor-bringup sim`, starts the same processes).
"""

from visuomotor_bringup.launch_description import generate


def generate_launch_description():
    return generate(sim=True)
