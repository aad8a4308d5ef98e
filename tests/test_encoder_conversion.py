"""sensor_msgs/Image <-> numpy conversion: zero-copy views, step padding, bad input."""

from __future__ import annotations

import array

import numpy as np
import pytest
from sensor_msgs.msg import Image

from visuomotor_ros.image_conversion import (
    ImageConversionError,
    image_to_numpy,
    naive_image_to_numpy,
    naive_numpy_to_image,
    numpy_to_image,
)


def _frame(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_round_trip_preserves_pixels_and_fields():
    frame = _frame()
    msg = numpy_to_image(frame, "bgr8")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 5, 15, "bgr8")
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    np.testing.assert_array_equal(image_to_numpy(msg), frame)


def test_image_to_numpy_is_a_view_of_the_message_buffer():
    msg = numpy_to_image(_frame())
    view = image_to_numpy(msg)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert view[0, 0, 0] == msg.data[0]
    assert not view.flags.writeable or view.base is not None


def test_rows_padded_by_step_are_strided_not_copied():
    frame = _frame(4, 3)
    padded = np.zeros((4, 12), np.uint8)
    padded[:, :9] = frame.reshape(4, 9)
    msg = Image(height=4, width=3, encoding="rgb8", step=12)
    msg.data = array.array("B", padded.tobytes())
    view = image_to_numpy(msg)
    np.testing.assert_array_equal(view, frame)
    assert view.strides == (12, 3, 1)


def test_non_contiguous_array_is_converted_correctly():
    frame = _frame(8, 8)[::2, ::2]
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(frame)), frame)


def test_fast_and_naive_paths_produce_the_same_message_data():
    frame = _frame(16, 16)
    assert numpy_to_image(frame).data == naive_numpy_to_image(frame).data
    np.testing.assert_array_equal(naive_image_to_numpy(numpy_to_image(frame)), frame)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"encoding": "mono16"}, "unsupported encoding"),
        ({"encoding": "mono8"}, "unsupported encoding"),
        ({"step": 10}, "smaller than one row"),
        ({"height": 7}, "expected step x height"),
        ({"data": []}, "empty image"),
        ({"width": 0, "step": 0, "data": []}, "empty image"),
    ],
)
def test_malformed_images_raise_a_clear_error(fields, match):
    msg = numpy_to_image(_frame())
    for key, value in fields.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=match):
        image_to_numpy(msg)


def test_numpy_to_image_rejects_wrong_dtype_and_shape():
    with pytest.raises(ImageConversionError, match="uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ImageConversionError, match="does not match"):
        numpy_to_image(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="unsupported"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "yuv422")
