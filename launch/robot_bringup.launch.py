"""Robot bringup: encoder + policy + controller against a real robot's drivers.

The camera driver publishes the image topics and ros2_control (or the vendor
driver) takes the commands and publishes /joint_states; point the graph at
them with launch arguments:

    ros2 launch launch/robot_bringup.launch.py \
        image_topic:=/camera/color/image_raw \
        command_topic:=/joint_group_position_controller/commands \
        command_interface:=position use_sim_time:=false
"""

from _bringup_common import bringup_description


def generate_launch_description():
    return bringup_description(sim=False)
