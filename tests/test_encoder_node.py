"""Encoder node through real rclpy: lifecycle, publishing, bad input, non-finite output,
frame dropping, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import spin_until
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from visuomotor_interfaces.msg import EncoderFeatures
from visuomotor_ros.image_conversion import numpy_to_image
from visuomotor_ros.node_common import SENSOR_QOS

SIZE = 32


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from visuomotor_core.image import PreprocessConfig
    from visuomotor_models.encoder import EncoderConfig, VisionEncoder
    from visuomotor_models.train_encoder import export_encoder

    torch.manual_seed(0)
    model = VisionEncoder(EncoderConfig(input_size=SIZE, channels=(4, 6), keypoints=4,
                                        hidden=16, embedding_dim=16))
    out = tmp_path_factory.mktemp("encoder_node")
    return export_encoder(model, PreprocessConfig(width=SIZE, height=SIZE), out,
                          torch.zeros(1, 3, SIZE, SIZE), {})


class Harness:
    """Encoder node + a probe node publishing images and recording outputs."""

    def __init__(self, context, model_files, **params):
        from visuomotor_ros.encoder_node import EncoderNode

        onnx_path, manifest = model_files
        values = {"model_path": str(onnx_path), "manifest_path": str(manifest),
                  "diagnostics_period": 0.1, **params}
        self.node = EncoderNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        self.probe = Node("encoder_probe", context=context)
        self.images = self.probe.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
        self.features: list[EncoderFeatures] = []
        self.targets: list[PointStamped] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.probe.create_subscription(EncoderFeatures, "/encoder/features",
                                       self.features.append, 10)
        self.probe.create_subscription(PointStamped, "/encoder/target_estimate",
                                       self.targets.append, 10)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics",
                                       self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)

    def spin_until(self, condition, timeout=5.0):
        return spin_until(self.executor, condition, timeout)

    def connected(self):
        return self.spin_until(lambda: self.images.get_subscription_count() > 0)

    def send(self, msg: Image):
        self.images.publish(msg)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()


def _image(stamp_sec=7, encoding="rgb8"):
    frame = np.random.default_rng(stamp_sec).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    msg = numpy_to_image(frame, encoding)
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = "camera_optical_frame"
    return msg


@pytest.fixture
def harness(ros_context, model_files):
    h = Harness(ros_context, model_files)
    yield h
    h.close()


def test_autostart_activates_and_publishes_stamped_features(harness):
    assert harness.connected()
    harness.send(_image(7))
    assert harness.spin_until(lambda: harness.features and harness.targets)
    feat, target = harness.features[0], harness.targets[0]
    assert feat.header.stamp.sec == 7 and feat.header.frame_id == "camera_optical_frame"
    assert len(feat.embedding) == 16 and 0.0 <= feat.confidence <= 1.0
    assert feat.model_sha256 == harness.node.runtime.sha256 and len(feat.model_sha256) == 64
    assert feat.inference_time > 0.0 and feat.target_frame_id == "panda_link0"
    assert target.header.frame_id == "panda_link0" and target.header.stamp.sec == 7
    assert target.point.x == pytest.approx(feat.target_position.x)


def test_bad_images_are_skipped_counted_and_the_node_keeps_running(harness):
    assert harness.connected()
    wrong_encoding = _image(1)
    wrong_encoding.encoding = "yuv422"
    short = _image(2)
    short.height = 50  # data no longer matches step x height
    for msg in (wrong_encoding, short):
        harness.send(msg)
        assert harness.spin_until(lambda: harness.node.counters["received"] > 0 and
                                  harness.node.counters["bad_inputs"] > 0 and
                                  harness.node._slot is None, timeout=3.0)
    assert harness.spin_until(lambda: harness.node.counters["bad_inputs"] == 2)
    assert harness.features == []
    harness.send(_image(3))
    assert harness.spin_until(lambda: len(harness.features) == 1)
    assert harness.features[0].header.stamp.sec == 3
    assert harness.spin_until(lambda: any(
        kv.key == "bad_inputs" and kv.value == "2"
        for d in harness.diagnostics for s in d.status for kv in s.values))


def test_non_finite_output_is_never_published_and_is_counted(harness, monkeypatch):
    assert harness.connected()
    runtime = harness.node.runtime
    real = runtime.run_raw

    def poisoned(batch):
        out = real(batch)
        out["target_position"] = np.full_like(out["target_position"], np.nan)
        return out

    monkeypatch.setattr(runtime, "run_raw", poisoned)
    harness.send(_image(4))
    assert harness.spin_until(lambda: harness.node.counters["rejected_outputs"] == 1)
    harness.spin_until(lambda: False, timeout=0.2)
    assert harness.features == [] and harness.targets == []
    assert harness.spin_until(lambda: any(
        kv.key == "rejected_outputs" and kv.value == "1"
        for d in harness.diagnostics for s in d.status for kv in s.values))


def test_only_the_newest_frame_is_kept(harness):
    node = harness.node
    for sec in (1, 2, 3):
        node._on_image(_image(sec))
    assert node.counters["dropped"] == 2
    assert node._take().header.stamp.sec == 3 and node._take() is None


def test_invalid_parameter_values_are_refused(harness):
    node = harness.node
    result = node.set_parameters([Parameter("execution_provider", value="gpu")])[0]
    assert not result.successful and "not one of" in result.reason
    result = node.set_parameters([Parameter("intra_op_threads", value=-1)])[0]
    assert not result.successful
    assert node.set_parameters([Parameter("execution_provider", value="cuda")])[0].successful


def test_configure_fails_with_a_hash_mismatch(ros_context, model_files, tmp_path):
    onnx_path, manifest = model_files
    tampered = tmp_path / "encoder.onnx"
    tampered.write_bytes(onnx_path.read_bytes() + b"\0")
    h = Harness(ros_context, (tampered, manifest), autostart=False)
    try:
        from rclpy.lifecycle import TransitionCallbackReturn

        assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert h.node.runtime is None
    finally:
        h.close()
