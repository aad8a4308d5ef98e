"""A second arm by configuration only: the KUKA LBR iiwa (its description and URDF beside
the Panda's) is held and reached by the project's controller in the sim, runs in the
Gymnasium env, and the Panda's learned models refuse to load for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visuomotor_core.controller import JointController
from visuomotor_core.controller_config import ControllerConfig
from visuomotor_core.manifest import ManifestError, robot_name
from visuomotor_core.policy_runtime import load_policy_runtime
from visuomotor_core.robot_description import load_robot
from visuomotor_core.robot_model import RobotModel
from visuomotor_core.timing import wait_until
from visuomotor_sim.world import ArmWorld, WorldConfig

MANIFEST = Path(__file__).resolve().parents[1] / "models" / "artifacts" / "manifest.json"
ROBOTS = ("panda", "iiwa")


@pytest.mark.parametrize("name", ROBOTS)
def test_description_names_joints_and_links_its_urdf_has_and_a_home_inside_the_limits(name):
    robot = load_robot(name)
    model = RobotModel.from_description(robot)
    assert model.joint_names == robot.arm_joints and model.base_link == robot.base_frame
    assert {robot.tool_frame, robot.grasp_link} <= set(model.link_names)
    assert np.all(model.limits.lower < robot.home) and np.all(robot.home < model.limits.upper)
    # the default gains are stable at the default rate (JointController checks the bounds)
    JointController(ControllerConfig.for_robot(robot), model)


def _track(world: ArmWorld, controller: JointController, target: np.ndarray,
           seconds: float, t: float) -> tuple[np.ndarray, float]:
    dt = world.config.dt
    q = world.joint_state()[0]
    for i in range(round(seconds / dt)):
        t += dt
        q, qd, _ = world.joint_state()
        if i % 50 == 0:  # targets at 20 Hz, as the policy sends them
            controller.set_target(target, stamp=t, now=t)
        world.apply_command(controller.update(t, q, qd, t).values, "effort")
        world.step()
    return q, t


@pytest.mark.parametrize("name", ROBOTS)
def test_controller_holds_home_and_reaches_a_joint_target_in_the_sim(name):
    robot = load_robot(name)
    with ArmWorld(WorldConfig(robot=name, home_noise_std=0.0)) as world:
        world.reset(0)
        controller = JointController(
            ControllerConfig.for_robot(robot, rate_hz=world.config.physics_hz),
            RobotModel.from_description(robot))
        controller.activate()
        home = np.asarray(robot.home)
        q, t = _track(world, controller, home, 1.0, 0.0)
        assert np.max(np.abs(q - home)) < 0.01
        start = world.grasp_point()
        goal = home + np.array([0.3, 0.2, 0.0, 0.3, 0.0, -0.2, 0.3])
        q, t = _track(world, controller, goal, 2.0, t)
        assert controller.mode.value == "tracking"
        assert np.max(np.abs(q - goal)) < 0.01
        assert np.linalg.norm(world.grasp_point() - start) > 0.05


def test_gymnasium_env_runs_the_iiwa_by_configuration():
    from visuomotor_sim.env import EnvConfig, VisualReachEnv

    env = VisualReachEnv(EnvConfig(world=WorldConfig(robot="iiwa"), render_images=False))
    try:
        obs, _ = env.reset(seed=0)
        for _ in range(5):
            obs, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
        assert np.all(np.isfinite(obs["proprio"] if isinstance(obs, dict) else obs))
        assert env.world.config.description.name == "iiwa"
    finally:
        env.close()


def test_panda_policy_refuses_to_load_for_the_iiwa():
    robot = load_robot("iiwa")
    with pytest.raises(ManifestError, match="robot"):
        load_policy_runtime(MANIFEST, "policy", RobotModel.from_description(robot),
                            robot=robot_name(robot.urdf), sources={"robot": "URDF iiwa.urdf"})


def _wait_for(condition, timeout: float = 20.0) -> bool:
    return wait_until(condition, timeout, 0.01)

def test_sim_robot_process_holds_and_tracks_the_iiwa_by_the_robot_parameter():
    """The sim node and the controller node of the sim robot process, both given only
    ``robot: iiwa``: the controller takes the iiwa's joints and gains, and the arm reaches
    joint targets answered to each camera frame, through the lockstep hardware seam."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from visuomotor_interfaces.msg import JointTargets
    from visuomotor_ros import graph
    from visuomotor_ros.node_common import LATEST_QOS, SENSOR_QOS
    from visuomotor_ros.runner import GraphRunner

    robot = load_robot("iiwa")
    goal = [h + d for h, d in zip(robot.home, (0.2, 0.1, 0.0, 0.2, 0.0, -0.1, 0.2),
                                  strict=True)]

    class TargetStandIn(Node):
        """Answers every camera frame with ``goal``, stamped as the policy does."""

        def __init__(self, **kwargs) -> None:
            super().__init__("target_stand_in", **kwargs)
            self._pub = self.create_publisher(JointTargets, graph.POLICY_TARGETS, LATEST_QOS)
            self.create_subscription(Image, graph.CAMERA_IMAGE, self._on_image, SENSOR_QOS)

        def _on_image(self, msg: Image) -> None:
            target = JointTargets(name=list(robot.arm_joints), position=goal)
            target.header = msg.header
            target.policy_stamp = msg.header.stamp
            self._pub.publish(target)

    runner = GraphRunner(roles=("sim", "controller"),
                         overrides={"sim": {"robot": "iiwa", "lockstep_timeout": 1.0},
                                    "controller": {"robot": "iiwa"}})
    runner.start()
    try:
        controller, hardware = runner.nodes["controller"], runner.nodes["sim"].hardware
        assert hardware.world.config.description.name == "iiwa"
        assert controller.controller.config.kp == robot.kp
        stand_in = TargetStandIn(context=runner.context,
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        runner.nodes[stand_in.get_name()] = stand_in
        runner.add_node(stand_in)
        assert _wait_for(lambda: hardware.now() > 2.0)
        assert controller.controller.mode.value == "tracking"
        error = np.abs(hardware.world.true_joint_positions() - np.asarray(goal)).max()
        assert error < 0.02
    finally:
        runner.stop()


@pytest.mark.parametrize("name", ROBOTS)
def test_privileged_expert_reaches_placed_targets_with_each_robot(name):
    from visuomotor_sim.env import EnvConfig, VisualReachEnv
    from visuomotor_sim.expert import ExpertConfig, ReachExpert

    robot = load_robot(name)
    env = VisualReachEnv(EnvConfig(world=WorldConfig(robot=name), render_images=False))
    expert = ReachExpert(ExpertConfig(robot=name, kp=robot.kp,
                                      action_scale=env.config.action_scale))
    try:
        successes = 0
        for seed in range(5):
            _, info = env.reset(seed=seed)
            expert.reset(env.world.dynamics)
            for _ in range(200):
                q = env.world.joint_state()[0]
                _, _, terminated, truncated, info = env.step(
                    expert.act(q, info["true_target"]))
                if terminated or truncated:
                    break
            successes += bool(info["success"])
        assert successes == 5
    finally:
        env.close()
        expert.close()


def test_demo_runs_the_iiwa_graph_with_the_privileged_expert():
    """``demo --robot iiwa --expert``: the whole sim graph on the iiwa by the robot
    argument alone (sim, controller, supervisor, the expert in place of the learned
    models), episodes reset through the sim and policy reset services."""
    from visuomotor_ros.demo import run_episodes

    results, stats, sim_seconds, _ = run_episodes(3, 0, "nominal", robot="iiwa", expert=True)
    assert len(results) == 3
    assert all(r.success for r in results), [(r.seed, r.error) for r in results]
    assert stats.control_rate() == pytest.approx(1000.0, rel=0.02)  # commands per sim second
    assert stats.frames >= 0.9 * 20.0 * sim_seconds  # the camera at 20 Hz of sim time


def test_demo_with_the_panda_models_refuses_the_iiwa_with_both_names(capsys):
    from visuomotor_ros.demo import main

    assert main(["--robot", "iiwa", "--episodes", "1"]) == 2  # "loop failed", nothing run
    error = capsys.readouterr().err
    assert "manifest 'panda'" in error and "iiwa" in error, error


def test_demo_refuses_an_unknown_robot():
    from visuomotor_ros.demo import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--robot", "ur5"])
    assert exit_info.value.code == 2
