"""Headless PyBullet stand-in for the robot: world, camera, domain randomization, reach task,
Gymnasium env, sim node.

Importing the package registers the Gymnasium id ``visuomotor/VisualReach-v0`` (entry point
``visuomotor_sim.env:VisualReachEnv``) when Gymnasium is installed.
"""

ENV_ID = "visuomotor/VisualReach-v0"

try:
    import gymnasium as _gym
except ImportError:  # the ROS sim node does not need Gymnasium
    _gym = None

if _gym is not None and ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="visuomotor_sim.env:VisualReachEnv")
