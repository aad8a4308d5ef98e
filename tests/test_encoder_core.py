"""Encoder core: preprocessing, manifest hash checks, provider fallback, the keypoint
encoder's runtime (ONNX Runtime + camera geometry, real sessions on constant-keypoint test
models, tests/keypoint_model.py), export fidelity (torch vs ONNX Runtime) and output sanity
checks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from keypoint_model import (
    KEYPOINTS,
    TARGET,
    scene_keypoints,
    shifted_pose,
    sim_camera,
    write_encoder,
)

from visuomotor_core import image as core_image
from visuomotor_core.camera_geometry import scale_intrinsics
from visuomotor_core.encoder_runtime import (
    EncoderRuntime,
    ImageCameraMismatch,
    InferenceStats,
    InvalidEncoderOutput,
    check_outputs,
)
from visuomotor_core.image import PreprocessConfig, Preprocessor, preprocess, preprocess_batch
from visuomotor_core.manifest import (
    ManifestError,
    ModelContractError,
    load_model_spec,
    seal_entry,
    sha256_file,
)
from visuomotor_core.onnx_session import (
    PROVIDER_NAMES,
    SessionConfig,
    _provider_entry,
    create_session,
    provider_chain,
)

SMALL_SIZE = 32


#: Largest error on perfect keypoints from the test camera (about 2 cm / 0.02 rad off its
#: calibration) that the pose refinement's calibration prior may leave, m.
PRIOR_BIAS_M = 0.006


@pytest.fixture(scope="module")
def keypoint_encoder(tmp_path_factory):
    """A 128-px keypoint encoder whose keypoints are the scene's seen by the sim camera
    knocked 2 cm / 0.02 rad off its calibration: (onnx, manifest)."""
    return write_encoder(tmp_path_factory.mktemp("encoder"), scene_keypoints(shifted_pose()))


def _runtime(tmp_path, keypoints=None, visibility=None) -> EncoderRuntime:
    keypoints = scene_keypoints(shifted_pose()) if keypoints is None else keypoints
    _, manifest = write_encoder(tmp_path, keypoints, visibility)
    return EncoderRuntime(manifest)


@pytest.fixture(scope="module")
def small_encoder(tmp_path_factory):
    """A seeded, untrained small network exported with its manifest: (model, onnx,
    manifest)."""
    import torch

    from visuomotor_models.encoder import EncoderConfig, VisionEncoder
    from visuomotor_models.train_encoder import export_encoder

    torch.manual_seed(0)
    model = VisionEncoder(EncoderConfig(input_size=SMALL_SIZE, channels=(4, 6), keypoints=8,
                                        hidden=16, embedding_dim=16)).eval()
    prep = PreprocessConfig(width=SMALL_SIZE, height=SMALL_SIZE)
    out = tmp_path_factory.mktemp("encoder")
    example = torch.zeros(2, 3, SMALL_SIZE, SMALL_SIZE)
    onnx_path, manifest = export_encoder(model, prep, out, example,
                                         {"training": {"command": "test"}})
    return model, onnx_path, manifest


def _image(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- preprocessing
def test_preprocess_gives_normalized_chw_float32_at_model_size():
    cfg = PreprocessConfig(width=32, height=24)
    out = preprocess(np.full((48, 64, 3), 255, np.uint8), cfg)
    assert out.shape == (3, 24, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, (1.0 - 0.5) / 0.25, rtol=1e-6)


def test_preprocess_matches_reference_formula():
    cfg = PreprocessConfig(width=64, height=48, mean=(0.1, 0.2, 0.3), std=(0.5, 0.4, 0.3))
    img = _image()
    expected = ((img / 255.0 - np.array(cfg.mean)) / np.array(cfg.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess(img, cfg), expected, atol=1e-5)


def test_bgr_input_is_swapped_to_rgb():
    cfg = PreprocessConfig(width=64, height=48)
    img = _image()
    np.testing.assert_array_equal(preprocess(img[:, :, ::-1].copy(), cfg, "bgr"),
                                  preprocess(img, cfg, "rgb"))


def test_batch_preprocessing_equals_per_frame_path():
    cfg = PreprocessConfig(width=16, height=16)
    images = np.stack([_image(seed=s) for s in range(3)])
    batch = preprocess_batch(images, cfg)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], Preprocessor(cfg)(images[i]))


def test_training_code_uses_the_core_preprocessing_function():
    from visuomotor_models import train_encoder

    assert train_encoder.preprocess_batch is core_image.preprocess_batch


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                                 np.zeros((0, 8, 3), np.uint8)])
def test_preprocess_rejects_malformed_images(bad):
    with pytest.raises(ValueError, match="image must"):
        preprocess(bad, PreprocessConfig())


def test_preprocess_config_rejects_invalid_values():
    with pytest.raises(ValueError, match="colour_order"):
        PreprocessConfig(colour_order="yuv")
    with pytest.raises(ValueError, match="std"):
        PreprocessConfig(std=(0.0, 1.0, 1.0))
    assert PreprocessConfig.from_dict(PreprocessConfig(width=8, height=8).to_dict()) == \
        PreprocessConfig(width=8, height=8)


# ---------------------------------------------------------------- manifest
def test_manifest_check_accepts_matching_file(keypoint_encoder):
    onnx_path, manifest = keypoint_encoder
    spec = load_model_spec(manifest, "encoder")
    assert spec.sha256 == sha256_file(onnx_path)
    assert [o.name for o in spec.outputs] == ["embedding", "keypoints", "visibility"]
    assert spec.inputs[0].shape == ("batch", 3, 128, 128)


def test_hash_mismatch_is_refused_before_any_session(keypoint_encoder, tmp_path, monkeypatch):
    onnx_path, manifest = keypoint_encoder
    tampered = tmp_path / "encoder.onnx"
    tampered.write_bytes(onnx_path.read_bytes() + b"\0")
    created = []
    monkeypatch.setattr("visuomotor_core.encoder_runtime.create_session",
                        lambda *a, **k: created.append(a))
    with pytest.raises(ManifestError, match="SHA-256 mismatch"):
        EncoderRuntime(manifest, tampered)
    assert created == []


def test_missing_file_entry_and_manifest_are_clear_errors(keypoint_encoder, tmp_path):
    _, manifest = keypoint_encoder
    with pytest.raises(ManifestError, match="not found"):
        load_model_spec(manifest, "encoder", tmp_path / "absent.onnx")
    with pytest.raises(ManifestError, match="no entry 'policy_x'"):
        load_model_spec(manifest, "policy_x")
    with pytest.raises(ManifestError, match="manifest not found"):
        load_model_spec(tmp_path / "manifest.json", "encoder")


def test_write_manifest_entry_keeps_other_models(tmp_path):
    from visuomotor_models.export import write_manifest_entry

    path = tmp_path / "manifest.json"
    write_manifest_entry(path, "policy", {"file": "policy.onnx"})
    write_manifest_entry(path, "encoder", {"file": "encoder.onnx"})
    write_manifest_entry(path, "encoder", {"file": "encoder2.onnx"})
    models = json.loads(path.read_text())["models"]
    assert models == {"encoder": seal_entry({"file": "encoder2.onnx"}),
                      "policy": seal_entry({"file": "policy.onnx"})}


# ---------------------------------------------------------------- providers
def test_fallback_chain_goes_from_requested_down_to_cpu():
    every = list(PROVIDER_NAMES.values())
    assert provider_chain("tensorrt", every) == (["tensorrt", "cuda", "cpu"], [])
    assert provider_chain("cuda", every) == (["cuda", "cpu"], [])
    assert provider_chain("tensorrt", ["CPUExecutionProvider"]) == (["cpu"],
                                                                    ["tensorrt", "cuda"])
    assert provider_chain("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        (["cuda", "cpu"], ["tensorrt"])
    with pytest.raises(ValueError, match="unknown execution provider"):
        provider_chain("gpu")


def test_fp16_is_requested_from_tensorrt_only():
    name, options = _provider_entry("tensorrt", SessionConfig(provider="tensorrt", fp16=True))
    assert name == "TensorrtExecutionProvider" and options["trt_fp16_enable"] is True
    assert _provider_entry("cuda", SessionConfig(provider="cuda", fp16=True))[1] == {}


def test_session_logs_the_provider_that_runs(keypoint_encoder):
    onnx_path, _ = keypoint_encoder
    lines: list[str] = []
    session, info = create_session(onnx_path, SessionConfig(provider="tensorrt", fp16=True),
                                   "encoder", lines.append)
    assert session.get_providers()[0] == PROVIDER_NAMES[info.active]
    assert len(lines) == 1 and PROVIDER_NAMES[info.active] in lines[0]
    assert "requested tensorrt" in lines[0]
    if info.active == "cpu":
        assert info.fp16 is False and "FP32" in lines[0]


def test_session_config_rejects_unknown_provider():
    with pytest.raises(ValueError, match="provider"):
        SessionConfig(provider="gpu")


# ---------------------------------------------------------------- runtime
def test_exported_network_runs_the_same_in_torch_and_onnx_runtime(small_encoder):
    """Export fidelity of the project's network and exporter, every output compared."""
    import torch
    model, onnx_path, _ = small_encoder
    session, _ = create_session(onnx_path, SessionConfig(), "encoder", lambda line: None)
    rng = np.random.default_rng(1)
    batch = rng.normal(0.0, 1.0, (5, 3, SMALL_SIZE, SMALL_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = [t.numpy() for t in model(torch.from_numpy(batch))]
    got = session.run(None, {"image": batch})  # dynamic batch axis: 5 rows, exported at 2
    assert len(got) == len(expected)
    for name, out, ref in zip([o.name for o in session.get_outputs()], got, expected,
                              strict=True):
        assert out.shape == ref.shape
        assert np.max(np.abs(out - ref)) <= 1e-4, name


def test_infer_returns_the_checked_output_and_the_target_from_geometry(keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    out = runtime.infer(_image(128, 128))
    assert out.embedding.shape == (16,) and out.embedding.dtype == np.float32
    assert out.keypoints.shape == (len(KEYPOINTS), 2) and out.inference_time > 0.0
    np.testing.assert_allclose(out.keypoints, scene_keypoints(shifted_pose()), atol=1e-4)
    # The calibration is 2 cm / 0.02 rad off; the landmarks put the camera back.
    assert out.pose_refined and out.confidence == 1.0
    # PRIOR_BIAS_M: the refinement's calibration prior costs millimetres on perfect keypoints
    # (exactness without it: test_camera_geometry); the calibrated pose alone is 3.6 cm off.
    assert np.linalg.norm(out.target_position - TARGET) < PRIOR_BIAS_M


def test_with_the_true_pose_as_calibration_the_error_is_below_a_millimetre(keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    true = shifted_pose()
    runtime.set_extrinsics(true.position, true.quaternion)
    out = runtime.infer(_image(128, 128))
    assert np.linalg.norm(out.target_position - TARGET) < 0.001
    np.testing.assert_allclose(runtime.calibration.position, true.position)
    runtime.use_manifest_extrinsics()
    np.testing.assert_allclose(runtime.calibration.position, sim_camera().pose.position)


def test_extrinsics_that_are_no_pose_are_refused_and_the_calibration_kept(keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    before = runtime.calibration
    for position, quaternion in (([0.0, 0.0], [0, 0, 0, 1]), ([0.0, 0.0, 1.0], [0, 0, 0, 0.1]),
                                 ([0.0, np.nan, 1.0], [0, 0, 0, 1])):
        with pytest.raises(ValueError):
            runtime.set_extrinsics(position, quaternion)
        assert runtime.calibration is before
    runtime.set_extrinsics([1.0, 0.0, 0.7], [0.0, 0.0, 0.0, 3.0])  # normalised
    np.testing.assert_allclose(runtime.calibration.rotation, np.eye(3))


def test_hidden_landmarks_cost_the_refinement_and_scale_confidence(tmp_path):
    visibility = np.ones(len(KEYPOINTS))
    visibility[KEYPOINTS.index("target_foot")] = 0.9
    for name in ("robot_shoulder", "robot_base", "table_corner_left"):  # one landmark left
        visibility[KEYPOINTS.index(name)] = 0.2
    out = _runtime(tmp_path, visibility=visibility).infer(_image(128, 128))
    assert not out.pose_refined
    assert out.confidence == pytest.approx(0.9 * 0.3, abs=1e-6)


def test_a_target_outside_the_workspace_has_confidence_zero(tmp_path):
    outside = np.array([0.8, 0.0, 0.2])
    out = _runtime(tmp_path, scene_keypoints(shifted_pose(), outside)).infer(_image(128, 128))
    assert out.confidence == 0.0
    assert np.linalg.norm(out.target_position - outside) < PRIOR_BIAS_M


def test_camera_info_at_twice_the_size_is_accepted_and_positions_do_not_change(
        keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    k = sim_camera().intrinsics()
    at_128 = runtime.infer(_image(128, 128)).target_position
    runtime.set_camera_info(256, 256, scale_intrinsics(k, (128, 128), (256, 256)).ravel())
    out = runtime.infer(_image(256, 256))
    np.testing.assert_allclose(out.target_position, at_128, atol=1e-6)
    np.testing.assert_allclose(out.keypoints, (scene_keypoints(shifted_pose()) + 0.5) * 2 - 0.5,
                               atol=1e-3)
    doubled = k * np.array([[2.0, 1.0, 2.0], [1.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    runtime.set_camera_info(256, 256, doubled.ravel().tolist())  # K doubled, literally
    assert runtime.camera.from_camera_info and runtime.camera.model.size == (256, 256)
    out = runtime.infer(_image(256, 256))
    assert out.pose_refined and np.linalg.norm(out.target_position - at_128) < 0.002
    with pytest.raises(ImageCameraMismatch, match="camera_info 256x256"):
        runtime.infer(_image(128, 128))


def test_a_640x480_camera_with_the_trained_vertical_view_is_cropped_about_its_centre(
        keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    at_128 = runtime.infer(_image(128, 128)).target_position
    # The sim camera's vertical field of view on a 640x480 sensor: its centre 480x480 shows
    # what the model was trained on.
    k = scale_intrinsics(sim_camera().intrinsics(), (128, 128), (480, 480))
    k[0, 2] += 80.0
    runtime.set_camera_info(640, 480, k.ravel())
    assert runtime.camera.crop == (80, 0) and runtime.camera.model.size == (480, 480)
    out = runtime.infer(_image(height=480, width=640))
    np.testing.assert_allclose(out.target_position, at_128, atol=1e-6)
    expected = (scene_keypoints(shifted_pose()) + 0.5) * 480 / 128 - 0.5 + [80.0, 0.0]
    np.testing.assert_allclose(out.keypoints, expected, atol=1e-3)
    with pytest.raises(ImageCameraMismatch, match="camera_info 640x480"):
        runtime.infer(_image(height=480, width=480))


@pytest.mark.parametrize(("width", "height", "scale", "expected"), [
    (256, 256, (1.05, 1.05, 1.0, 1.0), "fx 144.1"),           # another field of view
    (256, 256, (1.0, 0.97, 1.0, 1.0), "fy 133.1"),            # non-square pixels
    # another aspect with the same horizontal field of view: its centre crop is a wider view
    (256, 192, (1.0, 0.75, 1.0, 0.75), "cropped to 192x192 about its centre"),
    (256, 256, (1.0, 1.0, 1.03, 1.0), "cx 65.9"),             # principal point 2 px off
])
def test_camera_info_showing_another_view_is_refused_and_the_camera_kept(
        keypoint_encoder, width, height, scale, expected):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    good = scale_intrinsics(sim_camera().intrinsics(), (128, 128), (256, 256))
    runtime.set_camera_info(256, 256, good.ravel())
    k = good.copy()
    k[0, 0] *= scale[0]
    k[1, 1] *= scale[1]
    k[0, 2] *= scale[2]
    k[1, 2] *= scale[3]
    with pytest.raises(ModelContractError) as info:
        runtime.set_camera_info(width, height, k.ravel())
    message = str(info.value)
    assert "camera model mismatch" in message and expected in message and "\n" not in message
    assert runtime.camera.model.size == (256, 256)
    np.testing.assert_allclose(runtime.camera.model.k, good)
    assert runtime.infer(_image(256, 256)).pose_refined


@pytest.mark.parametrize("k", [[0.0] * 9, [137.0, 0, 64, 0, 137.0, 63, 0, 0, 0],
                               [np.nan, 0, 64, 0, 137.0, 63, 0, 0, 1], [137.0, 0, 64]])
def test_camera_info_that_is_no_pinhole_camera_is_refused(keypoint_encoder, k):
    _, manifest = keypoint_encoder
    with pytest.raises(ModelContractError, match="camera model mismatch"):
        EncoderRuntime(manifest).set_camera_info(128, 128, k)


def test_without_camera_info_any_size_of_the_camera_aspect_is_accepted(keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    at_128 = runtime.infer(_image(128, 128)).target_position
    out = runtime.infer(_image(64, 64))
    np.testing.assert_allclose(out.target_position, at_128, atol=1e-6)
    with pytest.raises(ImageCameraMismatch, match=r"aspect ratio 1\.333"):
        runtime.infer(_image(48, 64))
    runtime.set_camera_info(64, 64, scale_intrinsics(sim_camera().intrinsics(), (128, 128),
                                                     (64, 64)).ravel())
    runtime.use_manifest_camera()
    assert not runtime.camera.from_camera_info and runtime.infer(_image(96, 96)).pose_refined


def test_estimate_batch_gives_positions_and_confidences_per_row(keypoint_encoder):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    batch = np.random.default_rng(0).normal(size=(4, 3, 128, 128)).astype(np.float32)
    positions, confidences = runtime.estimate_batch(batch)
    assert positions.shape == (4, 3) and confidences.shape == (4,)
    assert np.all(np.linalg.norm(positions - TARGET, axis=1) < PRIOR_BIAS_M)
    np.testing.assert_allclose(confidences, 1.0)
    raw = runtime.run_raw(batch)
    assert raw["keypoints"].shape == (4, len(KEYPOINTS), 2)
    assert raw["visibility"].shape == (4, len(KEYPOINTS))


def test_estimate_batch_marks_rows_without_a_position_instead_of_raising(tmp_path,
                                                                        monkeypatch):
    runtime = _runtime(tmp_path)
    real = runtime.run_raw

    def half_broken(batch):
        out = real(batch)
        out["keypoints"][1] = np.nan
        return out

    monkeypatch.setattr(runtime, "run_raw", half_broken)
    positions, confidences = runtime.estimate_batch(np.zeros((3, 3, 128, 128), np.float32))
    assert confidences.tolist() == [1.0, 0.0, 1.0] and not np.all(np.isfinite(positions[1]))
    monkeypatch.setattr(runtime, "run_raw", lambda batch: dict(
        real(batch), visibility=np.ones((len(batch), 2), np.float32)))
    with pytest.raises(InvalidEncoderOutput, match="visibility"):
        runtime.estimate_batch(np.zeros((2, 3, 128, 128), np.float32))


def test_non_finite_or_misshapen_outputs_are_rejected(keypoint_encoder, monkeypatch):
    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    count = len(KEYPOINTS)
    good = runtime.run_raw(np.zeros((1, 3, 128, 128), np.float32))
    bad = dict(good, keypoints=np.where(np.arange(count * 2).reshape(1, count, 2) == 3,
                                        np.nan, good["keypoints"]).astype(np.float32))
    with pytest.raises(InvalidEncoderOutput, match="'keypoints' is not finite"):
        check_outputs(bad, 16, count)
    with pytest.raises(InvalidEncoderOutput, match="shape"):
        check_outputs(dict(good, embedding=np.zeros((1, 8), np.float32)), 16, count)
    with pytest.raises(InvalidEncoderOutput, match="'visibility' has shape"):
        check_outputs(dict(good, visibility=np.ones((1, count - 1), np.float32)), 16, count)
    monkeypatch.setattr(runtime, "run_raw", lambda batch: bad)
    with pytest.raises(InvalidEncoderOutput):
        runtime.infer(_image(128, 128))


def test_a_target_behind_the_camera_is_returned_with_confidence_zero(tmp_path):
    keypoints = scene_keypoints(shifted_pose())
    keypoints[KEYPOINTS.index("target_foot")] = (64.0, -400.0)  # above the horizon
    out = _runtime(tmp_path, keypoints).infer(_image(128, 128))
    assert out.confidence == 0.0 and np.all(np.isfinite(out.target_position))


def test_a_non_finite_position_is_rejected_not_returned(keypoint_encoder, monkeypatch):
    from dataclasses import replace

    from visuomotor_core import encoder_runtime

    _, manifest = keypoint_encoder
    runtime = EncoderRuntime(manifest)
    real = encoder_runtime.estimate_target
    monkeypatch.setattr(encoder_runtime, "estimate_target", lambda *a, **k: replace(
        real(*a, **k), position=np.array([np.nan, 0.0, 0.2]), confidence=0.0))
    with pytest.raises(InvalidEncoderOutput, match="no finite target position"):
        runtime.infer(_image(128, 128))


def test_runtime_does_not_import_torch():
    code = ("import sys, visuomotor_core.encoder_runtime, visuomotor_core.onnx_session;"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_inference_stats_report_rate_and_percentiles():
    stats = InferenceStats(window=10)
    for i in range(20):
        stats.add(0.001 * (i % 10 + 1), i * 0.1)
    summary = stats.summary()
    assert summary["fps"] == pytest.approx(10.0)
    assert summary["latency_p50_ms"] == pytest.approx(5.5)
    assert 9.0 < summary["latency_p99_ms"] <= 10.0


# ---------------------------------------------------------------- committed artifact
def test_committed_encoder_matches_manifest_and_meets_heldout_goal():
    from visuomotor_models.export import ARTIFACTS_DIR, MANIFEST_PATH

    assert (ARTIFACTS_DIR / "encoder.onnx").is_file(), "the trained encoder is not committed"
    spec = load_model_spec(MANIFEST_PATH, "encoder")
    entry = spec.entry
    assert entry["opset"] == 17 and spec.path.stat().st_size < 2 * 1024 * 1024
    assert entry["inputs"][0]["shape"][0] == "batch"
    assert "train_encoder" in entry["training"]["command"]
    held = entry["metrics"]["heldout"]
    # The figures the committed keypoint encoder reaches through the run time (ONNX Runtime
    # + camera_geometry), with a margin: a re-trained or re-exported model must not fall
    # behind. Half the held-out images put the gripper within 15 cm of the sphere; where it
    # hides the sphere no single image locates it, and the run time says so by its
    # confidence (the policy's goal filter ignores such estimates), so the tight bounds
    # hold for the confident estimates and for the arm away from the target.
    assert held["median_m"] <= 0.013
    assert held["by_hand_distance"]["ge_15cm"]["median_m"] <= 0.01
    assert held["by_hand_distance"]["ge_15cm"]["p95_m"] <= 0.025
    assert held["confident_fraction"] >= 0.6
    assert held["confident_median_m"] <= 0.011 and held["confident_p95_m"] <= 0.025
    for band in held["confident_by_hand_distance"].values():
        assert band["p95_m"] <= 0.03, band
    for name, keypoint in held["keypoints"].items():
        assert keypoint["median_px"] <= 0.8, (name, keypoint)


def test_committed_encoder_locates_targets_in_fresh_heldout_renders():
    """The committed model through the run time on held-out renders it never saw (another
    seed than its manifest's evaluation): the far-from-hand targets to about a centimetre."""
    from visuomotor_models.dataset import DatasetConfig, render_split
    from visuomotor_models.export import ARTIFACTS_DIR
    from visuomotor_models.train_encoder import evaluate_onnx

    config = DatasetConfig(n_train=1, n_heldout=160, seed=12345, workers=1)
    metrics = evaluate_onnx(ARTIFACTS_DIR / "encoder.onnx",
                            render_split(config, "heldout", config.n_heldout))
    far = metrics["by_hand_distance"]["ge_15cm"]
    assert far["count"] >= 40 and far["median_m"] <= 0.015, far
    assert metrics["confident_fraction"] >= 0.5
    assert metrics["confident_median_m"] <= 0.015, metrics
