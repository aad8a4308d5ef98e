"""Encoder benchmark: ONNX Runtime vs torch eager, end-to-end frames/s, pose refinement.

One run measures, on this machine's CPU:

1. the same network (the committed encoder's architecture, seeded weights) run by torch
   eager and by ONNX Runtime on identical inputs, batch 1: median latency and ratio;
2. end-to-end frames/s of the committed model at the camera's default resolution
   (uint8 image -> preprocessing -> inference -> output checks -> camera-pose refinement
   on the landmark keypoints and the target's position by geometry);
3. the camera-pose refinement alone (:func:`visuomotor_core.camera_geometry.refine_pose`,
   analytic Jacobian) against :func:`refine_pose_numeric` (the same Gauss-Newton with a
   finite-difference Jacobian) on the same landmark sets of the committed model's geometry:
   median time per call of each, their ratio and the largest difference of the poses.

The sensor_msgs/Image conversion cost is a ROS concern, measured by
``python -m visuomotor_ros.bench_image_conversion``.

    python -m visuomotor_models.bench_encoder [--frames 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from visuomotor_core.timing import median_call_seconds

DEFAULT_RESOLUTION = (128, 128)  # (height, width) of the sim camera
#: Camera displacements of the refinement cases: uniform within this per axis (m, rad),
#: the range the encoder is trained under; keypoint noise, network-input pixels.
_CASE_SHIFT_M = 0.03
_CASE_TURN_RAD = 0.03
_CASE_NOISE_PX = 0.3
#: refine_pose_numeric: iterations, finite-difference step of the Jacobian (m, rad) and
#: convergence tolerance (m, rad), those of the refinement before its analytic Jacobian.
_NUMERIC_ITERATIONS = 10
_NUMERIC_STEP = 1e-7
_NUMERIC_TOLERANCE = 1e-7


def bench_torch_vs_onnx(manifest: Path, repeats: int, threads: int) -> dict:
    """Median batch-1 latency of torch eager and ONNX Runtime on the same weights."""
    import torch

    from visuomotor_core.encoder_runtime import INPUT_NAME, OUTPUT_NAMES
    from visuomotor_core.manifest import load_model_spec
    from visuomotor_core.onnx_session import SessionConfig, create_session
    from visuomotor_models.encoder import EncoderConfig, VisionEncoder
    from visuomotor_models.export import export_onnx

    entry = load_model_spec(manifest, "encoder").entry
    cfg = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in entry["training"]["model"].items()})
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = VisionEncoder(cfg).eval()
    x = torch.randn(1, 3, cfg.input_size, cfg.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.onnx"
        export_onnx(model, [x], [INPUT_NAME], list(OUTPUT_NAMES), path)
        session, _ = create_session(path, SessionConfig(intra_op_threads=threads),
                                    log=lambda line: None)
    feed = {INPUT_NAME: x.numpy()}
    with torch.no_grad():
        reference = model(x)
        torch_s = median_call_seconds(lambda: model(x), repeats)
    onnx_out = session.run(list(OUTPUT_NAMES), feed)
    onnx_s = median_call_seconds(lambda: session.run(list(OUTPUT_NAMES), feed), repeats)
    diff = max(float(np.max(np.abs(o - r.numpy()))) for o, r in zip(onnx_out, reference,
                                                                      strict=True))
    return {"torch_eager_ms": torch_s * 1e3, "onnxruntime_ms": onnx_s * 1e3,
            "torch_over_onnx": torch_s / onnx_s, "max_abs_diff": diff, "threads": threads}


def bench_end_to_end(manifest: Path, frames: int, threads: int) -> dict:
    """Frames/s of the committed encoder on uint8 camera frames (preprocess + inference +
    geometry)."""
    from visuomotor_core.encoder_runtime import EncoderRuntime
    from visuomotor_core.onnx_session import SessionConfig

    runtime = EncoderRuntime(manifest, session_config=SessionConfig(intra_op_threads=threads),
                             log=lambda line: None)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, *DEFAULT_RESOLUTION, 3), dtype=np.uint8)
    for i in range(10):
        runtime.infer(images[i % 16])
    latencies = np.empty(frames)
    start = time.perf_counter()
    for i in range(frames):
        latencies[i] = runtime.infer(images[i % 16]).inference_time
    elapsed = time.perf_counter() - start
    return {"resolution": list(DEFAULT_RESOLUTION), "frames": frames,
            "fps": frames / elapsed, "latency_p50_ms": float(np.median(latencies) * 1e3),
            "latency_p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "provider": runtime.info.active, "threads": threads}


def refine_pose_numeric(object_points: np.ndarray, image_points: np.ndarray, k: np.ndarray,
                        calibration, limits):
    """:func:`visuomotor_core.camera_geometry.refine_pose` with a finite-difference
    Jacobian (one reprojection per unknown and iteration, solved by least squares): the
    reference the analytic Jacobian is timed and checked against (same unknowns, prior,
    iterations, tolerance and checks)."""
    import math

    from visuomotor_core import camera_geometry as cg
    from visuomotor_core.rotations import rotation_from_rotvec

    if len(object_points) < limits.min_landmarks:
        return cg.PoseRefinement(calibration, False, cg.POSE_TOO_FEW_LANDMARKS, math.nan)
    objects = np.asarray(object_points, np.float64)
    pixels = np.asarray(image_points, np.float64)
    k = np.asarray(k, np.float64)
    prior = np.array([limits.calibration_sigma_m] * 3 + [limits.calibration_sigma_rad] * 3)

    def perturbed(x: np.ndarray):
        return cg.CameraPose(calibration.position + x[:3],
                             calibration.rotation @ rotation_from_rotvec(x[3:]))

    def residuals(x: np.ndarray) -> np.ndarray:
        reprojection = (cg.project(objects, perturbed(x), k) - pixels).ravel()
        return np.concatenate([reprojection / limits.keypoint_sigma_px, x / prior])

    x = np.zeros(6)
    with np.errstate(all="ignore"):
        for _ in range(_NUMERIC_ITERATIONS):
            r = residuals(x)
            jacobian = np.column_stack([(residuals(x + step) - r) / _NUMERIC_STEP
                                        for step in np.eye(6) * _NUMERIC_STEP])
            if not (np.all(np.isfinite(r)) and np.all(np.isfinite(jacobian))):
                return cg.PoseRefinement(calibration, False, cg.POSE_FAILED, math.nan)
            delta = np.linalg.lstsq(jacobian, -r, rcond=None)[0]
            x = x + delta
            if float(np.max(np.abs(delta))) < _NUMERIC_TOLERANCE:
                break
    if not np.all(np.isfinite(x)):
        return cg.PoseRefinement(calibration, False, cg.POSE_FAILED, math.nan)
    pose = perturbed(x)
    residual = cg.project(objects, pose, k) - pixels
    rms = float(np.sqrt(np.mean(np.sum(residual ** 2, axis=1))))
    moved, turned = pose.offset_from(calibration)
    if moved > limits.max_translation_m or turned > limits.max_rotation_rad:
        return cg.PoseRefinement(calibration, False, cg.POSE_MOVED_TOO_FAR, rms)
    if not rms <= limits.max_reprojection_rms_px:
        return cg.PoseRefinement(calibration, False, cg.POSE_REPROJECTION, rms)
    return cg.PoseRefinement(pose, True, cg.POSE_REFINED, rms)


def refinement_cases(geometry, count: int, seed: int = 0) -> list[tuple]:
    """``count`` refinement inputs ``(landmarks (N, 3), pixels (N, 2), K, calibration)`` of
    a :class:`visuomotor_core.camera_geometry.GeometrySpec`: every landmark seen by a camera
    displaced from the calibration by up to 3 cm and 0.03 rad per axis, keypoints with
    0.3 px of noise."""
    from visuomotor_core import camera_geometry as cg
    from visuomotor_core.rotations import rotation_from_rotvec

    rng = np.random.default_rng(seed)
    calibration, k = geometry.calibration, geometry.camera.k
    cases = []
    for _ in range(count):
        true = cg.CameraPose(
            calibration.position + rng.uniform(-_CASE_SHIFT_M, _CASE_SHIFT_M, 3),
            calibration.rotation @ rotation_from_rotvec(
                rng.uniform(-_CASE_TURN_RAD, _CASE_TURN_RAD, 3)))
        landmarks = geometry.landmark_points
        pixels = cg.project(landmarks, true, k) + rng.normal(0.0, _CASE_NOISE_PX,
                                                             (len(landmarks), 2))
        cases.append((landmarks, pixels, k, calibration))
    return cases


def bench_pose_refinement(manifest: Path, cases: int, repeats: int) -> dict:
    """Median time per call of the analytic and the finite-difference refinement on the
    same ``cases`` inputs, interleaved in one run, and the largest pose difference."""
    from visuomotor_core import camera_geometry as cg
    from visuomotor_core.manifest import load_model_spec
    from visuomotor_core.rotations import rotvec_from_rotation

    geometry = cg.GeometrySpec.from_record(load_model_spec(manifest, "encoder").entry
                                           .get("geometry"))
    limits = cg.GeometryLimits()
    inputs = refinement_cases(geometry, cases)
    moved = turned = 0.0
    for case in inputs:
        new, old = cg.refine_pose(*case, limits), refine_pose_numeric(*case, limits)
        moved = max(moved, float(np.linalg.norm(new.pose.position - old.pose.position)))
        turned = max(turned, float(np.linalg.norm(
            rotvec_from_rotation(new.pose.rotation.T @ old.pose.rotation))))
    analytic, numeric = [], []
    for _ in range(repeats):
        for timings, refine in ((analytic, cg.refine_pose), (numeric, refine_pose_numeric)):
            start = time.perf_counter()
            for case in inputs:
                refine(*case, limits)
            timings.append((time.perf_counter() - start) / len(inputs))
    analytic_s, numeric_s = float(np.median(analytic)), float(np.median(numeric))
    return {"cases": cases, "landmarks": len(geometry.landmark_points),
            "analytic_us": analytic_s * 1e6, "numeric_us": numeric_s * 1e6,
            "numeric_over_analytic": numeric_s / analytic_s,
            "max_position_diff_m": moved, "max_rotation_diff_rad": turned}


def _default_manifest() -> Path:
    from visuomotor_models.export import MANIFEST_PATH

    return MANIFEST_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visuomotor_models.bench_encoder",
        description="Benchmark the encoder: ONNX Runtime vs torch eager, end-to-end "
                    "frames/s, camera-pose refinement (analytic vs finite-difference "
                    "Jacobian).")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="model manifest (default: models/artifacts/manifest.json)")
    parser.add_argument("--frames", type=int, default=300, help="frames for the fps run")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per latency")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (both)")
    parser.add_argument("--cases", type=int, default=200,
                        help="landmark sets of the pose-refinement run")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    manifest = args.manifest or _default_manifest()

    results = {
        "torch_vs_onnx": bench_torch_vs_onnx(manifest, args.repeats, args.threads),
        "end_to_end": bench_end_to_end(manifest, args.frames, args.threads),
        "pose_refinement": bench_pose_refinement(manifest, args.cases,
                                                 max(1, args.repeats // 20)),
    }
    t, e, r = results["torch_vs_onnx"], results["end_to_end"], results["pose_refinement"]
    print(f"encoder batch 1, {t['threads']} thread(s): torch eager {t['torch_eager_ms']:.3f} ms"
          f", ONNX Runtime {t['onnxruntime_ms']:.3f} ms -> ONNX Runtime is "
          f"{t['torch_over_onnx']:.2f}x faster (max |diff| {t['max_abs_diff']:.1e})")
    print(f"end to end at {e['resolution'][1]}x{e['resolution'][0]} (preprocess + "
          f"inference + geometry, {e['provider']}): {e['fps']:.0f} frames/s, p50 "
          f"{e['latency_p50_ms']:.3f} ms, p99 {e['latency_p99_ms']:.3f} ms")
    print(f"pose refinement, {r['landmarks']} landmarks, {r['cases']} cases: analytic "
          f"Jacobian {r['analytic_us']:.1f} us, finite differences {r['numeric_us']:.1f} us "
          f"per call -> {r['numeric_over_analytic']:.2f}x faster (poses differ by at most "
          f"{r['max_position_diff_m']:.1e} m, {r['max_rotation_diff_rad']:.1e} rad)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
