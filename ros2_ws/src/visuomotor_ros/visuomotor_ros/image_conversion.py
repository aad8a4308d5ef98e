"""sensor_msgs/Image <-> numpy without needless copies.

* :func:`image_to_numpy` returns a read-only (H, W, C) ``uint8`` *view* of ``msg.data``
  (``np.frombuffer``; rows padded by ``step`` are handled by striding, not copying).
* :func:`numpy_to_image` copies the pixels once (``array.array('B').frombytes`` on the
  array's buffer) and assigns that array. rclpy's generated setter stores an
  ``array.array`` of type code ``'B'`` as is; given ``bytes`` (the naive
  ``msg.data = frame.tobytes()``) it builds a second copy with ``array.array('B', value)``
  after ``tobytes`` made the first, and when field checks are on
  (``ROS_PYTHON_CHECK_FIELDS=1``) it also checks every byte in Python, which costs
  orders of magnitude more. ``python -m visuomotor_ros.bench_image_conversion`` measures both.

Malformed messages raise :class:`ImageConversionError` with the reason.
"""

from __future__ import annotations

import array

import numpy as np
from sensor_msgs.msg import Image

#: Supported encodings -> channels (all 8-bit).
ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
COLOUR_ORDER = {"rgb8": "rgb", "bgr8": "bgr"}


class ImageConversionError(ValueError):
    """The Image message cannot be interpreted (encoding, size, step or data)."""


def image_to_numpy(msg: Image, encodings: tuple[str, ...] = ("rgb8", "bgr8")) -> np.ndarray:
    """View of ``msg.data`` as (height, width, channels) uint8, no copy.

    Args:
        msg: the image.
        encodings: encodings the caller accepts.

    Raises:
        ImageConversionError: unsupported encoding, empty data, ``step`` smaller than a
            row, or ``len(data) != step * height``.
    """
    if msg.encoding not in encodings or msg.encoding not in ENCODING_CHANNELS:
        raise ImageConversionError(f"unsupported encoding '{msg.encoding}' "
                                   f"(accepted: {', '.join(encodings)})")
    channels = ENCODING_CHANNELS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    size = len(msg.data)
    if size == 0 or height == 0 or width == 0:
        raise ImageConversionError(f"empty image ({width}x{height}, {size} data bytes)")
    row = width * channels
    if step < row:
        raise ImageConversionError(f"step {step} B is smaller than one row "
                                   f"({width} px x {channels} B = {row} B)")
    if size != step * height:
        raise ImageConversionError(f"data holds {size} B, expected step x height = "
                                   f"{step} x {height} = {step * height} B")
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(height, step)
    if step == row:
        return rows.reshape(height, width, channels)
    return np.lib.stride_tricks.as_strided(rows, (height, width, channels),
                                           (step, channels, 1), writeable=False)


def numpy_to_image(frame: np.ndarray, encoding: str = "rgb8", msg: Image | None = None
                   ) -> Image:
    """Fill (or create) an Image from a (H, W, C) or (H, W) uint8 array.

    The pixels are copied once (``array.array.frombytes`` on a contiguous buffer);
    ``step = width * channels``. The header is left to the caller.

    Raises:
        ImageConversionError: wrong dtype, shape or encoding.
    """
    if encoding not in ENCODING_CHANNELS:
        raise ImageConversionError(f"unsupported encoding '{encoding}'")
    if frame.dtype != np.uint8:
        raise ImageConversionError(f"frame must be uint8, got {frame.dtype}")
    channels = ENCODING_CHANNELS[encoding]
    shape_ok = (frame.ndim == 3 and frame.shape[2] == channels) or \
        (frame.ndim == 2 and channels == 1)
    if not shape_ok or frame.size == 0:
        raise ImageConversionError(f"frame of shape {frame.shape} does not match encoding "
                                   f"'{encoding}' ({channels} channels)")
    msg = msg if msg is not None else Image()
    height, width = frame.shape[:2]
    msg.height, msg.width = height, width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = width * channels
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(frame).data)
    msg.data = data
    return msg


def naive_numpy_to_image(frame: np.ndarray, encoding: str = "rgb8") -> Image:
    """The common ``msg.data = frame.tobytes()`` path (reference for benchmarks only)."""
    msg = Image(height=frame.shape[0], width=frame.shape[1], encoding=encoding,
                step=frame.shape[1] * ENCODING_CHANNELS[encoding])
    msg.data = frame.tobytes()
    return msg


def naive_image_to_numpy(msg: Image) -> np.ndarray:
    """The common ``np.array(msg.data).reshape(...)`` path (reference for benchmarks only)."""
    channels = ENCODING_CHANNELS[msg.encoding]
    return np.array(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, channels)
