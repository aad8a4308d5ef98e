"""Privileged expert and the policy training command (smoke budget)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from visuomotor_core.robot_model import RobotModel
from visuomotor_core.sag_estimator import SagEstimator, SagEstimatorConfig
from visuomotor_models import train_policy
from visuomotor_models.policy_sim import ReachSim
from visuomotor_sim.expert import ArmModel, ExpertConfig, ReachExpert
from visuomotor_sim.robot import ARM_JOINT_NAMES, robot_urdf_path

HOME = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
KP = np.array(ExpertConfig().kp)


@pytest.fixture(scope="module")
def arm():
    model = ArmModel()
    yield model
    model.close()


def test_sag_offset_is_zero_for_nominal_dynamics(arm):
    arm.set_dynamics(1.0, 0.0, 1.0)
    np.testing.assert_allclose(arm.sag(HOME, KP), 0.0, atol=1e-9)


def test_payload_and_weak_actuators_increase_the_sag(arm):
    arm.set_dynamics(1.0, 1.0, 1.0)
    payload = np.abs(arm.sag(HOME, KP)).max()
    arm.set_dynamics(1.0, 1.0, 0.7)
    weak = np.abs(arm.sag(HOME, KP)).max()
    assert 1e-3 < payload < weak


def test_downward_hand_force_sags_like_the_equal_payload(arm):
    arm.set_dynamics(1.0, 1.0, 1.0)
    payload = arm.sag(HOME, KP)
    arm.set_dynamics(1.0, 0.0, 1.0, external_force=(0.0, 0.0, -9.81))
    np.testing.assert_allclose(arm.sag(HOME, KP), payload, rtol=1e-3, atol=1e-6)
    arm.set_dynamics(1.0, 0.0, 1.0, external_force=(0.0, 0.0, 9.81))
    np.testing.assert_allclose(arm.sag(HOME, KP), -payload, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("mass_scale,payload,strength", [(1.2, 2.0, 0.7), (0.9, 0.3, 1.05)])
def test_sag_estimator_model_is_the_experts_sag(arm, mass_scale, payload, strength):
    """The runtime estimator's bases B(q) and the true theta = (link_mass_scale / strength - 1,
    payload / strength) give the expert's sag."""
    model = RobotModel.from_urdf_file(str(robot_urdf_path()), list(ARM_JOINT_NAMES))
    estimator = SagEstimator(model, SagEstimatorConfig(kp=tuple(KP)))
    theta = np.array([mass_scale / strength - 1.0, payload / strength])
    arm.set_dynamics(mass_scale, payload, strength)
    for q in HOME + np.random.default_rng(1).normal(0.0, 0.3, (4, 7)):
        np.testing.assert_allclose(estimator.bases(q) @ theta, arm.sag(q, KP), atol=1e-6)


def test_expert_reaches_the_target_in_the_nominal_env():
    sim = ReachSim()
    expert = ReachExpert(ExpertConfig(kp=tuple(sim.kp)))
    try:
        q, _ = sim.reset("nominal", 3)
        expert.reset(sim.dynamics)
        while not sim.done:
            q, _ = sim.step(expert.act(q, sim.target))
        assert sim.success and sim.result().final_error < 0.02
    finally:
        expert.close()
        sim.close()


def test_expert_config_rejects_wrong_gain_count():
    with pytest.raises(ValueError, match="kp"):
        ExpertConfig(kp=(1.0, 2.0))


def test_quick_training_exports_both_models_with_manifest_entries(tmp_path):
    assert train_policy.main(["--quick", "--out", str(tmp_path)]) == 0
    models = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert set(models) == {"policy", "policy_no_history"}
    assert [o["name"] for o in models["policy"]["outputs"]] == ["action", "dynamics_latent"]
    assert models["policy"]["policy"]["sag_estimator"]["kp"] == list(KP)
    assert models["policy_no_history"]["policy"]["sag_estimator"] is None
    assert models["policy"]["training"]["command"].startswith(
        "python -m visuomotor_models.train_policy")
    assert (tmp_path / "policy.onnx").stat().st_size < 2_000_000
    # The writer's entries pass the runtime's fail-closed checks (seal, graph, robot, rates).
    from visuomotor_core.policy_runtime import load_policy_runtime
    from visuomotor_core.robot_model import RobotModel
    from visuomotor_sim.robot import robot_urdf_path

    model = RobotModel.from_urdf_file(str(robot_urdf_path()))
    for name in models:
        assert models[name]["robot"] == "panda"
        load_policy_runtime(tmp_path / "manifest.json", name, model, robot="panda",
                            camera_rate_hz=20.0, control_rate_hz=1000.0)
