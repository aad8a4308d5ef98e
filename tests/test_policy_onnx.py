"""Policy ONNX export: torch/ONNX Runtime parity, manifest checks of the committed artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

import yaml  # noqa: E402

from visuomotor_core.manifest import ManifestError, seal_entry  # noqa: E402
from visuomotor_core.policy_features import HISTORY_DIM, OBSERVATION_DIM  # noqa: E402
from visuomotor_core.policy_runtime import load_policy_runtime  # noqa: E402
from visuomotor_core.robot_description import load_robot  # noqa: E402
from visuomotor_core.robot_model import RobotModel  # noqa: E402
from visuomotor_models.export import export_onnx  # noqa: E402
from visuomotor_models.policy import MemorylessPolicy, PolicyNetConfig, StudentPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "models" / "artifacts"
URDF = ROOT / "ros2_ws" / "src" / "visuomotor_description" / "urdf" / "panda.urdf"
CONTROLLER_YAML = ROOT / "ros2_ws" / "src" / "visuomotor_ros" / "config" / "controller.yaml"
PARITY_TOLERANCE = 1e-4
JOINTS = [f"panda_joint{i}" for i in range(1, 8)]


@pytest.fixture(scope="module")
def model() -> RobotModel:
    return RobotModel.from_urdf_file(str(URDF), JOINTS)


def _inputs(batch: int, history: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch, OBSERVATION_DIM, generator=gen)
    hist = torch.randn(batch, history, HISTORY_DIM, generator=gen)
    return obs, hist


def _fitted(model, cfg):
    obs, hist = _inputs(64, cfg.history_length, seed=1)
    model.head.obs_norm.fit(obs * 0.5 + 0.2)
    if hasattr(model, "adaptation"):
        model.adaptation.history_norm.fit(hist * 2.0 - 0.1)
    return model.eval()


@pytest.mark.parametrize("kind", ["student", "memoryless"])
def test_torch_and_onnx_runtime_agree_within_1e_4(tmp_path, kind):
    torch.manual_seed(0)
    cfg = PolicyNetConfig(history_length=6)
    student = kind == "student"
    model = _fitted(StudentPolicy(cfg) if student else MemorylessPolicy(cfg), cfg)
    outputs = ["action", "dynamics_latent"] if student else ["action"]
    path = tmp_path / "p.onnx"
    export_onnx(model, _inputs(1, 6), ["observation", "history"], outputs, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    obs, hist = _inputs(32, 6, seed=2)
    with torch.no_grad():
        expected = model(obs, hist)
    expected = expected if isinstance(expected, tuple) else (expected,)
    names = [i.name for i in session.get_inputs()]
    feeds = {"observation": obs.numpy(), "history": hist.numpy()}
    got = session.run(outputs, {k: v for k, v in feeds.items() if k in names})
    for want, have in zip(expected, got, strict=True):
        assert np.max(np.abs(want.numpy() - have)) <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", ["policy", "policy_no_history"])
def test_committed_policy_loads_and_returns_bounded_actions(name, model):
    runtime = load_policy_runtime(ARTIFACTS / "manifest.json", name, model)
    q = np.array([0.0, -0.5, 0.0, -2.2, 0.0, 1.7, 0.785])
    out = runtime(q, np.zeros(7), np.array([0.5, 0.1, 0.2]))
    assert np.all(np.abs(out.action) <= 1.0) and np.all(np.isfinite(out.targets))
    assert runtime.uses_history == (name == "policy")
    assert (out.latent.size > 0) == (name == "policy")
    # Only the dynamics-aware model identifies the sag (it needs the history).
    assert (runtime.sag is not None) == (name == "policy")


def test_sag_estimator_gains_match_the_shipped_controller_config():
    """The gains the policy was trained with are the controller's: the robot description's,
    unless controller.yaml overrides them."""
    record = json.loads((ARTIFACTS / "manifest.json").read_text())["models"]["policy"]
    params = yaml.safe_load(CONTROLLER_YAML.read_text())
    kp = next(iter(params.values()))["ros__parameters"].get("kp", list(load_robot().kp))
    assert record["policy"]["sag_estimator"]["kp"] == kp


def test_invalid_sag_estimator_record_is_refused(tmp_path, model):
    manifest = json.loads((ARTIFACTS / "manifest.json").read_text())
    manifest["models"]["policy"]["policy"]["sag_estimator"]["kp"] = [600.0, -1.0]
    manifest["models"]["policy"] = seal_entry(manifest["models"]["policy"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(ARTIFACTS / "policy.onnx", tmp_path / "policy.onnx")
    with pytest.raises(ManifestError, match="sag_estimator"):
        load_policy_runtime(tmp_path / "manifest.json", "policy", model)


def test_manifest_records_policy_layout_and_identical_training_budget():
    models = json.loads((ARTIFACTS / "manifest.json").read_text())["models"]
    a, b = models["policy"], models["policy_no_history"]
    assert a["policy"]["layout"]["embedding_used"] is False
    assert a["training"]["config"] == b["training"]["config"]
    assert a["policy"]["history_length"] >= 1 and not b["policy"]["uses_history"]
    assert [t["name"] for t in b["inputs"]] == ["observation"]


def test_modified_policy_file_is_refused_by_hash(tmp_path, model):
    shutil.copy(ARTIFACTS / "manifest.json", tmp_path / "manifest.json")
    data = (ARTIFACTS / "policy.onnx").read_bytes()
    (tmp_path / "policy.onnx").write_bytes(data + b"\0")
    with pytest.raises(ManifestError, match="SHA-256"):
        load_policy_runtime(tmp_path / "manifest.json", "policy", model)
