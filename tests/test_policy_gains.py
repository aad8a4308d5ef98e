"""One source for the controller's gains: the policy's sag estimator computes against the
controller's kp (the robot description's unless overridden), warns when it differs from the
kp the model was trained with, and follows a live change of the controller's kp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import spin_until

from visuomotor_core.policy_runtime import load_policy_runtime
from visuomotor_core.robot_description import load_robot
from visuomotor_core.robot_model import RobotModel
from visuomotor_core.sag_estimator import SagEstimator, gains_mismatch

ARTIFACTS = Path(__file__).resolve().parents[1] / "models" / "artifacts"
MANIFEST = ARTIFACTS / "manifest.json"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_description(load_robot())


def test_sag_bases_scale_with_the_inverse_of_the_controller_kp(model):
    estimator = SagEstimator(model)
    q = np.asarray(load_robot().home)
    before = estimator.bases(q).copy()
    estimator.set_kp([2.0 * k for k in estimator.kp])
    np.testing.assert_allclose(estimator.bases(q), before / 2.0)
    assert estimator.trained_kp == load_robot().kp


def test_sag_estimator_refuses_kp_of_the_wrong_size(model):
    with pytest.raises(ValueError, match="kp must be 7 positive gains"):
        SagEstimator(model).set_kp([600.0] * 6)


def test_gains_mismatch_names_both_gains_and_the_source():
    kp = load_robot().kp
    assert gains_mismatch(kp, list(kp), "controller.yaml kp") is None
    changed = [2.0 * kp[0], *kp[1:]]
    message = gains_mismatch(kp, changed, "controller.yaml kp")
    assert message is not None and "controller.yaml kp" in message
    assert str(changed) in message and str(list(kp)) in message


def test_policy_runtime_uses_the_controller_kp_and_warns_when_it_differs_from_training(model):
    warnings: list[str] = []
    trained = load_robot().kp
    same = load_policy_runtime(MANIFEST, "policy", model, controller_kp=trained,
                               warn=warnings.append)
    assert warnings == [] and same.sag.kp == trained
    stiffer = tuple(1.5 * k for k in trained)
    runtime = load_policy_runtime(MANIFEST, "policy", model, controller_kp=stiffer,
                                  warn=warnings.append,
                                  sources={"controller_kp": "parameter kp"})
    assert runtime.sag.kp == stiffer and runtime.sag.trained_kp == trained
    assert len(warnings) == 1 and "parameter kp" in warnings[0]


def test_policy_runtime_refuses_a_controller_kp_of_the_wrong_size(model):
    with pytest.raises(ValueError, match="controller kp must be 7 positive gains"):
        load_policy_runtime(MANIFEST, "policy", model, controller_kp=[600.0] * 6)


def test_live_controller_kp_change_reaches_the_policy_sag_estimator(ros_context):
    """As ``ros2 param set /controller_node kp ...``: a parameter client sets the running
    controller's kp; the policy node's sag estimator follows; a refused value does not."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    from visuomotor_ros.controller_node import ControllerNode
    from visuomotor_ros.policy_node import PolicyNode

    controller = ControllerNode(context=ros_context, parameter_overrides=[
        Parameter("autostart", value=False)])
    policy = PolicyNode(context=ros_context, parameter_overrides=[
        Parameter("manifest_path", value=str(MANIFEST))])
    peer = rclpy.create_node("gain_test_peer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    for node in (controller, policy, peer):
        executor.add_node(node)
    try:
        controller.trigger_configure()
        sag = policy._runtime.sag
        assert sag.kp == load_robot().kp  # controller.yaml sets no kp: the description's
        client = AsyncParameterClient(peer, "controller_node")
        assert client.wait_for_services(TIMEOUT)

        def set_kp(kp):
            future = client.set_parameters([Parameter("kp", value=kp)])
            assert spin_until(executor, future.done, TIMEOUT)
            return future.result().results[0]

        softer = [0.5 * k for k in load_robot().kp]
        assert set_kp(softer).successful
        assert spin_until(executor, lambda: list(sag.kp) == softer, TIMEOUT)
        refused = [-1.0, *softer[1:]]
        assert not set_kp(refused).successful
        executor.spin_once(timeout_sec=0.2)
        assert list(sag.kp) == softer
        assert list(controller.get_parameter("kp").value) == softer
    finally:
        executor.shutdown()
        for node in (controller, policy, peer):
            node.destroy_node()


def test_policy_started_after_a_live_change_asks_the_controller_for_its_kp(ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from visuomotor_ros.controller_node import ControllerNode
    from visuomotor_ros.policy_node import PolicyNode

    controller = ControllerNode(context=ros_context, parameter_overrides=[
        Parameter("autostart", value=False)])
    stiffer = [1.2 * k for k in load_robot().kp]
    assert controller.set_parameters([Parameter("kp", value=stiffer)])[0].successful
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(controller)
    policy = None
    try:
        policy = PolicyNode(context=ros_context, parameter_overrides=[
            Parameter("manifest_path", value=str(MANIFEST))])
        executor.add_node(policy)
        sag = policy._runtime.sag
        assert sag.kp == load_robot().kp  # what configure knew: the description's
        assert spin_until(executor, lambda: list(sag.kp) == stiffer, TIMEOUT)
        assert rclpy.ok(context=ros_context)
    finally:
        executor.shutdown()
        for node in (controller, policy):
            if node is not None:
                node.destroy_node()
