"""rclpy nodes of the visuomotor loop: vision encoder, policy, actuator controller,
in-process runner.
"""
