"""Encoder benchmark: ONNX Runtime vs torch eager, end-to-end frames/s.

One run measures, on this machine's CPU:

1. the same network (the committed encoder's architecture, seeded weights) run by torch
   eager and by ONNX Runtime on identical inputs, batch 1: median latency and ratio;
2. end-to-end frames/s of the committed model at the camera's default resolution
   (uint8 image -> preprocessing -> inference -> output checks -> camera-pose refinement
   on the landmark keypoints and the target's position by geometry).

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


def _default_manifest() -> Path:
    from visuomotor_models.export import MANIFEST_PATH

    return MANIFEST_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visuomotor_models.bench_encoder",
        description="Benchmark the encoder: ONNX Runtime vs torch eager, end-to-end "
                    "frames/s.")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="model manifest (default: models/artifacts/manifest.json)")
    parser.add_argument("--frames", type=int, default=300, help="frames for the fps run")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per latency")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (both)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    manifest = args.manifest or _default_manifest()

    results = {
        "torch_vs_onnx": bench_torch_vs_onnx(manifest, args.repeats, args.threads),
        "end_to_end": bench_end_to_end(manifest, args.frames, args.threads),
    }
    t, e = results["torch_vs_onnx"], results["end_to_end"]
    print(f"encoder batch 1, {t['threads']} thread(s): torch eager {t['torch_eager_ms']:.3f} ms"
          f", ONNX Runtime {t['onnxruntime_ms']:.3f} ms -> ONNX Runtime is "
          f"{t['torch_over_onnx']:.2f}x faster (max |diff| {t['max_abs_diff']:.1e})")
    print(f"end to end at {e['resolution'][1]}x{e['resolution'][0]} (preprocess + "
          f"inference + geometry, {e['provider']}): {e['fps']:.0f} frames/s, p50 "
          f"{e['latency_p50_ms']:.3f} ms, p99 {e['latency_p99_ms']:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
