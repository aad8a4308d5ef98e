"""Robot bringup: the controller (talking to the robot's ros2_control controllers over
topics), the encoder and the policy, each its own process.

The camera driver publishes the image topics and ros2_control (or the vendor driver)
takes the commands and publishes joint states; point the graph at them:

    ros2 launch visuomotor_bringup robot_bringup.launch.py \
        image_topic:=/camera/color/image_raw \
        command_topic:=/joint_group_position_controller/commands command_interface:=position
    ros2 launch visuomotor_bringup robot_bringup.launch.py --show-args

What it starts comes from visuomotor_bringup.plan (the multi-process bringup,
`visuomotor-bringup robot`, starts the same processes).
"""

from visuomotor_bringup.launch_description import generate


def generate_launch_description():
    return generate(sim=False)
