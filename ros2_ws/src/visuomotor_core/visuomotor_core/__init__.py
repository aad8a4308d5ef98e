"""ROS-free runtime of the visuomotor loop: controller law, limits, robot model, ONNX
runtimes, timing.
"""
