"""Encoder benchmark: ONNX Runtime vs torch eager, end-to-end frames/s, Image conversion.

One run measures, on this machine's CPU:

1. the same network (the committed encoder's architecture, seeded weights) run by torch
   eager and by ONNX Runtime on identical inputs, batch 1: median latency and ratio;
2. end-to-end frames/s of the committed model at the camera's default resolution
   (uint8 image -> preprocessing -> inference -> output checks);
3. sensor_msgs/Image -> numpy: the zero-copy view vs the naive
   ``np.array(msg.data).reshape(...)`` path, and numpy -> Image: one-copy ``array.array``
   vs the naive ``msg.data = frame.tobytes()`` path, each with the ratio; the latter also
   with rclpy's field checks on (``ROS_PYTHON_CHECK_FIELDS=1``), where the naive path
   checks every byte in Python.

    python -m visuomotor_models.bench_encoder [--frames 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_RESOLUTION = (128, 128)  # (height, width) of the sim camera
CONVERSION_RESOLUTIONS = ((128, 128), (480, 640))


def _median_s(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    return float(np.median(samples))


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
        torch_s = _median_s(lambda: model(x), repeats)
    onnx_out = session.run(list(OUTPUT_NAMES), feed)
    onnx_s = _median_s(lambda: session.run(list(OUTPUT_NAMES), feed), repeats)
    diff = max(float(np.max(np.abs(o - r.numpy()))) for o, r in zip(onnx_out, reference,
                                                                      strict=True))
    return {"torch_eager_ms": torch_s * 1e3, "onnxruntime_ms": onnx_s * 1e3,
            "torch_over_onnx": torch_s / onnx_s, "max_abs_diff": diff, "threads": threads}


def bench_end_to_end(manifest: Path, frames: int, threads: int) -> dict:
    """Frames/s of the committed encoder on uint8 camera frames (preprocess + inference)."""
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


def bench_conversion(repeats: int) -> list[dict]:
    """Image <-> numpy costs, fast vs naive, at the conversion resolutions."""
    from visuomotor_ros.image_conversion import (
        image_to_numpy,
        naive_image_to_numpy,
        naive_numpy_to_image,
        numpy_to_image,
    )

    rows = []
    for height, width in CONVERSION_RESOLUTIONS:
        frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        msg = numpy_to_image(frame)
        to_np_fast = _median_s(lambda m=msg: image_to_numpy(m), repeats)
        to_np_naive = _median_s(lambda m=msg: naive_image_to_numpy(m), repeats)
        to_msg_fast = _median_s(lambda f=frame: numpy_to_image(f), repeats)
        to_msg_naive = _median_s(lambda f=frame: naive_numpy_to_image(f), repeats)
        to_msg_checked = _median_s(lambda f=frame: _checked_assign(f, naive=False), 3, 1)
        to_msg_naive_checked = _median_s(lambda f=frame: _checked_assign(f, naive=True), 3, 1)
        rows.append({
            "resolution": [height, width],
            "image_to_numpy_us": to_np_fast * 1e6,
            "naive_image_to_numpy_us": to_np_naive * 1e6,
            "image_to_numpy_speedup": to_np_naive / to_np_fast,
            "numpy_to_image_us": to_msg_fast * 1e6,
            "naive_numpy_to_image_us": to_msg_naive * 1e6,
            "numpy_to_image_speedup": to_msg_naive / to_msg_fast,
            "numpy_to_image_checked_us": to_msg_checked * 1e6,
            "naive_numpy_to_image_checked_us": to_msg_naive_checked * 1e6,
            "numpy_to_image_checked_speedup": to_msg_naive_checked / to_msg_checked,
        })
    return rows


def _checked_assign(frame: np.ndarray, naive: bool) -> object:
    """Assign pixels to an Image whose field checks are on (as with
    ROS_PYTHON_CHECK_FIELDS=1): naive ``tobytes`` vs the ``array.array`` path."""
    from sensor_msgs.msg import Image

    from visuomotor_ros.image_conversion import numpy_to_image

    msg = Image()
    msg._check_fields = True  # what the generated class does under ROS_PYTHON_CHECK_FIELDS=1
    if naive:
        msg.data = frame.tobytes()
        return msg
    return numpy_to_image(frame, msg=msg)


def _default_manifest() -> Path:
    from visuomotor_models.export import MANIFEST_PATH

    return MANIFEST_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visuomotor_models.bench_encoder",
        description="Benchmark the encoder: ONNX Runtime vs torch eager, end-to-end "
                    "frames/s, Image<->numpy conversion vs the naive path.")
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
        "conversion": bench_conversion(args.repeats),
    }
    t, e = results["torch_vs_onnx"], results["end_to_end"]
    print(f"encoder batch 1, {t['threads']} thread(s): torch eager {t['torch_eager_ms']:.3f} ms"
          f", ONNX Runtime {t['onnxruntime_ms']:.3f} ms -> ONNX Runtime is "
          f"{t['torch_over_onnx']:.2f}x faster (max |diff| {t['max_abs_diff']:.1e})")
    print(f"end to end at {e['resolution'][1]}x{e['resolution'][0]} (preprocess + "
          f"inference, {e['provider']}): {e['fps']:.0f} frames/s, p50 "
          f"{e['latency_p50_ms']:.3f} ms, p99 {e['latency_p99_ms']:.3f} ms")
    for row in results["conversion"]:
        h, w = row["resolution"]
        print(f"Image->numpy {w}x{h}: view {row['image_to_numpy_us']:.1f} us vs naive "
              f"{row['naive_image_to_numpy_us']:.1f} us ({row['image_to_numpy_speedup']:.0f}x);"
              f" numpy->Image: {row['numpy_to_image_us']:.1f} us vs naive tobytes "
              f"{row['naive_numpy_to_image_us']:.1f} us ({row['numpy_to_image_speedup']:.1f}x);"
              f" with field checks on: {row['numpy_to_image_checked_us']:.1f} us vs "
              f"{row['naive_numpy_to_image_checked_us']:.0f} us "
              f"({row['numpy_to_image_checked_speedup']:.0f}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
