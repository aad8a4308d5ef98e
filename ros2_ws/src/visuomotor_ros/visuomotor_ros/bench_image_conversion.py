"""Image conversion benchmark: sensor_msgs/Image <-> numpy, fast vs naive.

sensor_msgs/Image -> numpy: the zero-copy view vs the naive
``np.array(msg.data).reshape(...)`` path, and numpy -> Image: one-copy ``array.array``
vs the naive ``msg.data = frame.tobytes()`` path, each with the ratio; the latter also
with rclpy's field checks on (``ROS_PYTHON_CHECK_FIELDS=1``), where the naive path
checks every byte in Python.

    python -m visuomotor_ros.bench_image_conversion [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Image

from visuomotor_core.timing import median_call_seconds
from visuomotor_ros.image_conversion import (
    image_to_numpy,
    naive_image_to_numpy,
    naive_numpy_to_image,
    numpy_to_image,
)

CONVERSION_RESOLUTIONS = ((128, 128), (480, 640))  # (height, width): sim camera, VGA


def bench_conversion(repeats: int) -> list[dict]:
    """Image <-> numpy costs, fast vs naive, at the conversion resolutions."""
    rows = []
    for height, width in CONVERSION_RESOLUTIONS:
        frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        msg = numpy_to_image(frame)
        to_np_fast = median_call_seconds(lambda m=msg: image_to_numpy(m), repeats)
        to_np_naive = median_call_seconds(lambda m=msg: naive_image_to_numpy(m), repeats)
        to_msg_fast = median_call_seconds(lambda f=frame: numpy_to_image(f), repeats)
        to_msg_naive = median_call_seconds(lambda f=frame: naive_numpy_to_image(f), repeats)
        to_msg_checked = median_call_seconds(
            lambda f=frame: _checked_assign(f, naive=False), 3, 1)
        to_msg_naive_checked = median_call_seconds(
            lambda f=frame: _checked_assign(f, naive=True), 3, 1)
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
    msg = Image()
    msg._check_fields = True  # what the generated class does under ROS_PYTHON_CHECK_FIELDS=1
    if naive:
        msg.data = frame.tobytes()
        return msg
    return numpy_to_image(frame, msg=msg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visuomotor_ros.bench_image_conversion",
        description="Benchmark sensor_msgs/Image <-> numpy conversion vs the naive path.")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per latency")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    rows = bench_conversion(args.repeats)
    for row in rows:
        h, w = row["resolution"]
        print(f"Image->numpy {w}x{h}: view {row['image_to_numpy_us']:.1f} us vs naive "
              f"{row['naive_image_to_numpy_us']:.1f} us ({row['image_to_numpy_speedup']:.0f}x);"
              f" numpy->Image: {row['numpy_to_image_us']:.1f} us vs naive tobytes "
              f"{row['naive_numpy_to_image_us']:.1f} us ({row['numpy_to_image_speedup']:.1f}x);"
              f" with field checks on: {row['numpy_to_image_checked_us']:.1f} us vs "
              f"{row['naive_numpy_to_image_checked_us']:.0f} us "
              f"({row['numpy_to_image_checked_speedup']:.0f}x)")
    if args.json:
        args.json.write_text(json.dumps({"conversion": rows}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
