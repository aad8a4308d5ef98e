"""Vision encoder node: camera image -> EncoderFeatures + target estimate (lifecycle).

Subscribes ``/camera/image_raw`` (sensor-data QoS, depth 1) and encodes each frame in the
image callback itself, one executor wake-up per frame: while a frame is encoded the
middleware keeps only the newest one, so a slow encoder drops frames instead of building
a backlog. Dropped frames are counted from gaps in the camera publisher's sequence numbers
(``publication_sequence_number`` of the message info; a sequence that goes back, a new
publisher, starts the count again).

The encoder (:class:`visuomotor_core.encoder_runtime.EncoderRuntime`) finds keypoints and
locates the target by camera geometry, so it needs the camera's model: it subscribes
``/camera/camera_info`` (sensor-data QoS) and hands every new or changed CameraInfo to the
runtime. Until the first one arrives the manifest's intrinsics are used (diagnostics say
so). A CameraInfo that does not show the view the model was trained on (focal lengths,
principal point, aspect ratio) is refused with a throttled error, and every frame is then
refused and counted (``refused_camera_model``) until a matching CameraInfo arrives; the
node keeps running. Frames whose size does not fit the camera are refused and counted the
same way. The camera's calibrated pose comes from the manifest unless
``camera_extrinsics`` sets it; the runtime refines it per frame on scene landmarks.

Publishes (while Active):
* ``/encoder/features`` (visuomotor_interfaces/EncoderFeatures): header = the image's
  header, embedding, target estimate, confidence, inference time, model SHA-256;
* ``/encoder/target_estimate`` (geometry_msgs/PointStamped, ``base_frame``) for RViz;
* ``/diagnostics``: fps, inference latency p50/p99, received/dropped frames, bad inputs,
  rejected outputs, frames refused for the camera model, the camera in use and the share
  of frames whose camera pose was refined, execution provider.

Lifecycle: ``configure`` verifies the model against its manifest (hashes, and the
manifest's inputs, outputs, preprocessing and geometry against the ONNX graph and the base
frame) and creates the ONNX Runtime session; ``activate`` starts the subscriptions;
``deactivate`` stops them;
``cleanup`` releases the session. With ``autostart`` (default) the node configures and
activates itself as soon as it spins, so launch files without a lifecycle manager work.
Model and provider parameters take effect at the next configure.

Failure handling: a model or manifest that cannot be used makes ``configure`` return
FAILURE with one log line naming the field and both values, and an ERROR status on
``/diagnostics``; the node stays up, unconfigured, and can be configured again. A
malformed image (encoding, size, step, data length) is refused with a throttled warning
and counted (``bad_inputs``); anything else a callback raises is caught by
:class:`visuomotor_ros.callback_guard.CallbackGuard`, logged (throttled) and counted
(``callback_errors``). Received frames vary in size, so the node fixes the C heap's mmap
threshold (:mod:`visuomotor_ros.heap`) to keep the heap from fragmenting.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geometry_msgs.msg import PointStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import Node, State, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, Image

from visuomotor_core.camera_geometry import pose_from_list
from visuomotor_core.encoder_runtime import (
    EncoderRuntime,
    ImageCameraMismatch,
    InferenceStats,
    InvalidEncoderOutput,
)
from visuomotor_core.manifest import ModelContractError
from visuomotor_core.onnx_session import PROVIDER_NAMES, SessionConfig
from visuomotor_core.params import ParamSpec, check_schema
from visuomotor_core.robot_description import DEFAULT_ROBOT
from visuomotor_interfaces.msg import EncoderFeatures
from visuomotor_ros import graph
from visuomotor_ros.callback_guard import CallbackGuard, one_line
from visuomotor_ros.heap import bound_heap_growth
from visuomotor_ros.image_conversion import COLOUR_ORDER, ImageConversionError, image_to_numpy
from visuomotor_ros.node_common import (
    DEFAULT_QOS,
    SENSOR_QOS,
    DiagnosticsReporter,
    ThrottledWarnings,
    declare_schema,
    on_set_validated,
    run_node,
)

NODE_NAME = "encoder_node"
MODEL_FILE = "encoder.onnx"
MANIFEST_FILE = "manifest.json"

SCHEMA: list[ParamSpec] = check_schema([
    ParamSpec("model_path", str, "",
              "Encoder ONNX file; empty = share/visuomotor_models/artifacts/encoder.onnx "
              "(source tree models/artifacts when not installed). Applied at configure."),
    ParamSpec("manifest_path", str, "",
              "Model manifest JSON; empty = manifest.json beside the default artifacts. "
              "Applied at configure."),
    ParamSpec("execution_provider", str, "cpu",
              "Requested ONNX Runtime provider; falls back tensorrt -> cuda -> cpu. "
              "Applied at configure.", choices=tuple(PROVIDER_NAMES)),
    ParamSpec("fp16", bool, False,
              "FP16 inference where the provider supports it (TensorRT). Applied at configure."),
    ParamSpec("intra_op_threads", int, 1,
              "ONNX Runtime intra-op threads (0 = runtime's choice). Applied at configure.",
              min=0, max=64),
    ParamSpec("robot", str, DEFAULT_ROBOT, "The robot (its description urdf/<robot>.yaml in "
              "visuomotor_description names the base frame).", read_only=True),
    ParamSpec("base_frame", str, "",
              "Frame of the target estimate (must be the model's geometry base frame); "
              "empty: the robot description's base frame. Applied at configure."),
    ParamSpec("camera_extrinsics", float, [],
              "Calibrated pose of the camera's optical frame (REP-103) in the base frame: "
              "x y z (m) qx qy qz qw (normalised); empty: the model manifest's calibration. "
              "Takes effect at once."),
    ParamSpec("autostart", bool, True,
              "Configure and activate at start-up (no lifecycle manager needed).",
              read_only=True),
    ParamSpec("diagnostics_period", float, 1.0, "Period of /diagnostics reports.", unit="s",
              min=0.05, max=60.0),
    ParamSpec("error_log_period", float, 2.0,
              "Minimum interval between repeated error log lines (bad input/output).",
              unit="s", min=0.1, max=600.0),
])


def _default_model_paths() -> tuple[Path, Path]:
    """Installed artifacts (ament index), else the source tree's models/artifacts."""
    model = graph.model_path(MODEL_FILE)
    if not model.is_file():
        source = graph.source_root() / "models" / "artifacts" / MODEL_FILE
        model = source if source.is_file() else model
    return model, model.parent / MANIFEST_FILE


class EncoderNode(Node):
    """Lifecycle node wrapping :class:`visuomotor_core.encoder_runtime.EncoderRuntime`.

    Keyword arguments go to :class:`rclpy.lifecycle.Node` (context, parameter_overrides).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = declare_schema(self, SCHEMA)
        pose_from_list(self.params["camera_extrinsics"])  # ValueError: refused at start-up
        self._robot_base_frame = graph.robot(self.params["robot"]).base_frame
        on_set_validated(self, SCHEMA, self._apply_params)
        bound_heap_growth()
        self.runtime: EncoderRuntime | None = None
        self.configure_error = ""
        self._guard = CallbackGuard(self.get_logger(), self.params["error_log_period"],
                                    alive=self.context.ok)
        self._warnings = ThrottledWarnings(self.get_logger(), self.params["error_log_period"])
        self._lock = threading.Lock()
        self._last_sequence: int | None = None  # the camera publisher's, last frame seen
        self._subscription = None
        self._info_subscription = None
        self._camera_key: tuple | None = None  # (width, height, K) of the last CameraInfo
        self._camera_refused = ""  # why the last CameraInfo was refused; "" when accepted
        self._features_pub = None
        self._target_pub = None
        self._active = False
        self._receive_group = MutuallyExclusiveCallbackGroup()
        self._counters = dict.fromkeys(
            ("received", "processed", "dropped", "bad_inputs", "rejected_outputs",
             "refused_camera_model", "pose_refined"), 0)
        self._stats = InferenceStats()
        self._features = EncoderFeatures()
        self._target = PointStamped()
        self._diagnostics = DiagnosticsReporter(self, "vision encoder",
                                                period=self.params["diagnostics_period"])
        self._diag_timer = self.create_timer(self.params["diagnostics_period"],
                                             self._guard(self._report), self._receive_group)
        self._start_timer = None
        if self.params["autostart"]:
            self._start_timer = self.create_timer(0.0, self._guard(self._autostart))

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        if "camera_extrinsics" in changes:
            try:
                pose_from_list(changes["camera_extrinsics"])
            except ValueError as err:
                return False, f"'camera_extrinsics': {err}"
        self.params.update(changes)
        if "diagnostics_period" in changes:
            self._diagnostics._period = changes["diagnostics_period"]
            self._diag_timer.timer_period_ns = int(changes["diagnostics_period"] * 1e9)
        runtime = self.runtime
        if "camera_extrinsics" in changes and runtime is not None:
            self._apply_extrinsics(runtime)
        return True, ""

    def _apply_extrinsics(self, runtime: EncoderRuntime) -> None:
        pose = pose_from_list(self.params["camera_extrinsics"])
        if pose is None:
            runtime.use_manifest_extrinsics()
        else:
            runtime.set_extrinsics(pose.position, pose.quaternion)

    def _resolve_paths(self) -> tuple[Path, Path]:
        default_model, default_manifest = _default_model_paths()
        model = Path(self.params["model_path"]) if self.params["model_path"] else default_model
        manifest = Path(self.params["manifest_path"]) if self.params["manifest_path"] else (
            model.parent / MANIFEST_FILE if self.params["model_path"] else default_manifest)
        return model, manifest

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self._start_timer.cancel()
        self.destroy_timer(self._start_timer)
        self.configure_and_activate()

    def configure_and_activate(self) -> bool:
        """Drive unconfigured -> inactive -> active; True when the node ends up Active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        model, manifest = self._resolve_paths()
        session = SessionConfig(provider=self.params["execution_provider"],
                                fp16=self.params["fp16"],
                                intra_op_threads=self.params["intra_op_threads"])
        try:
            runtime = EncoderRuntime(manifest, model, session, log=self.get_logger().info,
                                     base_frame=self._base_frame())
            self._apply_extrinsics(runtime)
        except Exception as err:  # noqa: BLE001 - any load failure refuses the transition
            self.configure_error = f"cannot configure the encoder: {one_line(err, 600)}"
            self.get_logger().error(self.configure_error)
            self._report()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self._camera_key, self._camera_refused = None, ""
        self.runtime = runtime
        self._features_pub = self.create_publisher(EncoderFeatures, graph.ENCODER_FEATURES,
                                                   DEFAULT_QOS)
        self._target_pub = self.create_publisher(PointStamped, graph.ENCODER_TARGET,
                                                 DEFAULT_QOS)
        self._features.model_sha256 = self.runtime.sha256
        return TransitionCallbackReturn.SUCCESS

    def _base_frame(self) -> str:
        return self.params["base_frame"] or self._robot_base_frame

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._last_sequence = None  # frames missed while inactive are not drops
        self._info_subscription = self.create_subscription(
            CameraInfo, graph.CAMERA_INFO, self._guard(self._on_camera_info), SENSOR_QOS,
            callback_group=self._receive_group)
        self._subscription = self.create_subscription(
            Image, graph.CAMERA_IMAGE, self._guard(self._on_image), SENSOR_QOS,
            callback_group=self._receive_group)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._stop_subscriptions()
        return super().on_deactivate(state)

    def _stop_subscriptions(self) -> None:
        for subscription in (self._subscription, self._info_subscription):
            if subscription is not None:
                self.destroy_subscription(subscription)
        self._subscription = self._info_subscription = None

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._stop_subscriptions()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for publisher in (self._features_pub, self._target_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._features_pub = self._target_pub = None
        self.runtime = None

    # ------------------------------------------------------------------ data path
    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Hand a new or changed camera model to the runtime; a refused one stops frames."""
        key = (msg.width, msg.height, tuple(msg.k))
        runtime = self.runtime
        if runtime is None or key == self._camera_key:
            return
        self._camera_key = key
        try:
            runtime.set_camera_info(msg.width, msg.height, msg.k)
        except ModelContractError as err:
            self._camera_refused = one_line(err)
            self.get_logger().error(
                f"camera_info refused, frames refused until a matching one arrives: "
                f"{self._camera_refused}",
                throttle_duration_sec=self.params["error_log_period"])
            return
        if self._camera_refused:
            self.get_logger().info(f"camera_info {msg.width}x{msg.height} accepted, "
                                   f"frames are encoded again")
        self._camera_refused = ""

    def _on_image(self, msg: Image, info: Mapping[str, Any]) -> None:
        """Image callback: count the frame (and those the middleware dropped before it),
        encode it, publish."""
        sequence = info.get("publication_sequence_number")
        with self._lock:
            self._counters["received"] += 1
            last, self._last_sequence = self._last_sequence, sequence
            if last is not None and sequence is not None and sequence > last + 1:
                self._counters["dropped"] += sequence - last - 1
        self._encode(msg)

    def _encode(self, msg: Image) -> None:
        runtime = self.runtime
        if runtime is None or not self._active:
            return
        period = self.params["error_log_period"]
        if self._camera_refused:
            self._count("refused_camera_model")
            return
        try:
            frame = image_to_numpy(msg)
            result = runtime.infer(frame, COLOUR_ORDER[msg.encoding])
        except ImageCameraMismatch as err:
            self._count("refused_camera_model")
            self._warnings.warn("camera_size", f"camera image refused: {one_line(err)}",
                                period)
            return
        except InvalidEncoderOutput as err:
            self._count("rejected_outputs")
            self._warnings.warn("rejected_output", f"encoder output rejected, not "
                                f"published: {one_line(err)}", period)
            return
        except (ImageConversionError, ValueError) as err:
            self._count("bad_inputs")
            self._warnings.warn("bad_input", f"bad camera image refused: {one_line(err)}",
                                period)
            return
        self._publish(msg, result)
        with self._lock:
            self._counters["processed"] += 1
            self._counters["pose_refined"] += int(result.pose_refined)
        self._stats.add(result.inference_time, time.monotonic())

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1

    def _publish(self, image: Image, result) -> None:
        features, target = self._features, self._target
        features.header = image.header
        features.embedding = array.array("f", result.embedding.tobytes())
        p = result.target_position
        features.target_position.x, features.target_position.y, features.target_position.z = (
            float(p[0]), float(p[1]), float(p[2]))
        features.target_frame_id = self._base_frame()
        features.confidence = result.confidence
        features.inference_time = result.inference_time
        self._features_pub.publish(features)
        target.header.stamp = image.header.stamp
        target.header.frame_id = features.target_frame_id
        target.point = features.target_position
        self._target_pub.publish(target)

    # ------------------------------------------------------------------ diagnostics
    @property
    def counters(self) -> dict[str, int]:
        """received / processed / dropped frames, bad inputs, rejected outputs, frames
        refused for the camera model, processed frames with a refined camera pose and
        exceptions caught in callbacks (a copy)."""
        with self._lock:
            counters = dict(self._counters)
        counters["callback_errors"] = self._guard.total
        return counters

    def _report(self) -> None:
        counters = self.counters
        values: dict[str, Any] = {**self._stats.summary(), **counters}
        level, message = "ok", "running"
        if self.runtime is None and self.configure_error:
            level, message = "error", self.configure_error
        elif self.runtime is None:
            level, message = "warn", "not configured"
        else:
            runtime = self.runtime
            info = runtime.info
            camera = self._camera_text(runtime)
            processed = counters["processed"]
            values.update(provider=PROVIDER_NAMES[info.active], fp16=info.fp16,
                          model_sha256=runtime.sha256, camera=camera,
                          calibration="parameter camera_extrinsics"
                          if self.params["camera_extrinsics"] else "manifest",
                          pose_refined_share=counters["pose_refined"] / processed
                          if processed else 0.0)
            if not self._active:
                level, message = "warn", "inactive"
            elif self._camera_refused:
                level, message = "error", f"frames refused: {self._camera_refused}"
            elif counters["rejected_outputs"] or counters["bad_inputs"] \
                    or counters["callback_errors"] or counters["refused_camera_model"]:
                level, message = "warn", ("frames skipped (bad input, image not fitting the "
                                          "camera, non-finite output or callback error)")
            elif not runtime.camera.from_camera_info:
                message = "running on the manifest's camera intrinsics (no camera_info yet)"
        self._diagnostics.report(level, message, values, force=True)

    def _camera_text(self, runtime: EncoderRuntime) -> str:
        if self._camera_refused:
            return f"camera_info refused: {self._camera_refused}"
        camera = runtime.camera
        if not camera.from_camera_info:
            return "manifest intrinsics (no camera_info yet)"
        return f"camera_info {camera.model.width}x{camera.model.height}"


def main(args: list[str] | None = None) -> None:
    """Run the encoder node alone."""
    # One thread. rclpy's MultiThreadedExecutor (receive and processing groups running
    # concurrently) delayed frames by 49 ms p50 / 613 ms p90 between the camera and the
    # features in the multi-process sim graph; a SingleThreadedExecutor: 4.9 / 7.2 ms. The
    # image subscription's depth-1 QoS drops, not queues, frames that arrive while one is
    # encoded.
    run_node(EncoderNode, args, threads=1)


if __name__ == "__main__":
    main()
