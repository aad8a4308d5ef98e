"""Vision encoder node: camera image -> EncoderFeatures + target estimate (lifecycle).

Subscribes ``/camera/image_raw`` (sensor-data QoS) and keeps only the newest frame in a
single-slot buffer; a guard condition wakes the processing callback, which runs in its
own callback group, so with a multi-threaded executor frames keep arriving while one is
encoded and a slow encoder drops frames instead of building a backlog (each overwritten
frame counts as dropped).

Publishes (while Active):
* ``/encoder/features`` (visuomotor_interfaces/EncoderFeatures): header = the image's
  header, embedding, target estimate, confidence, inference time, model SHA-256;
* ``/encoder/target_estimate`` (geometry_msgs/PointStamped, ``base_frame``) for RViz;
* ``/diagnostics``: fps, inference latency p50/p99, received/dropped frames, bad inputs,
  rejected outputs, execution provider.

Lifecycle: ``configure`` verifies the model against its manifest (hashes, and the
manifest's inputs, outputs and preprocessing against the ONNX graph) and creates the ONNX
Runtime session; ``activate`` starts the subscription; ``deactivate`` stops it;
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
from sensor_msgs.msg import Image

from visuomotor_core.encoder_runtime import (
    EncoderRuntime,
    InferenceStats,
    InvalidEncoderOutput,
)
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
              "the bringup package names the base frame).", read_only=True),
    ParamSpec("base_frame", str, "",
              "Frame of the target estimate; empty: the robot description's base frame."),
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
        self._robot_base_frame = graph.robot(self.params["robot"]).base_frame
        on_set_validated(self, SCHEMA, self._apply_params)
        bound_heap_growth()
        self.runtime: EncoderRuntime | None = None
        self.configure_error = ""
        self._guard = CallbackGuard(self.get_logger(), self.params["error_log_period"],
                                    alive=self.context.ok)
        self._warnings = ThrottledWarnings(self.get_logger(), self.params["error_log_period"])
        self._lock = threading.Lock()
        self._slot: Image | None = None
        self._subscription = None
        self._features_pub = None
        self._target_pub = None
        self._active = False
        self._receive_group = MutuallyExclusiveCallbackGroup()
        self._process_group = MutuallyExclusiveCallbackGroup()
        self._wake = self.create_guard_condition(self._guard(self._process_latest),
                                                 self._process_group)
        self._counters = dict.fromkeys(
            ("received", "processed", "dropped", "bad_inputs", "rejected_outputs"), 0)
        self._stats = InferenceStats()
        self._features = EncoderFeatures()
        self._target = PointStamped()
        self._diagnostics = DiagnosticsReporter(self, "vision encoder",
                                                period=self.params["diagnostics_period"])
        self._diag_timer = self.create_timer(self.params["diagnostics_period"],
                                             self._guard(self._report), self._process_group)
        self._start_timer = None
        if self.params["autostart"]:
            self._start_timer = self.create_timer(0.0, self._guard(self._autostart))

    # ------------------------------------------------------------------ parameters
    def _apply_params(self, changes: Mapping[str, Any]) -> tuple[bool, str]:
        self.params.update(changes)
        if "diagnostics_period" in changes:
            self._diagnostics._period = changes["diagnostics_period"]
            self._diag_timer.timer_period_ns = int(changes["diagnostics_period"] * 1e9)
        return True, ""

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
            self.runtime = EncoderRuntime(manifest, model, session,
                                          log=self.get_logger().info)
        except Exception as err:  # noqa: BLE001 - any load failure refuses the transition
            self.configure_error = f"cannot configure the encoder: {one_line(err, 600)}"
            self.get_logger().error(self.configure_error)
            self._report()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        self._features_pub = self.create_publisher(EncoderFeatures, graph.ENCODER_FEATURES,
                                                   DEFAULT_QOS)
        self._target_pub = self.create_publisher(PointStamped, graph.ENCODER_TARGET,
                                                 DEFAULT_QOS)
        self._features.model_sha256 = self.runtime.sha256
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._subscription = self.create_subscription(
            Image, graph.CAMERA_IMAGE, self._guard(self._on_image), SENSOR_QOS,
            callback_group=self._receive_group)
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        with self._lock:
            self._slot = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        for publisher in (self._features_pub, self._target_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        self._features_pub = self._target_pub = None
        self.runtime = None

    # ------------------------------------------------------------------ data path
    def _on_image(self, msg: Image) -> None:
        """Receive callback: keep only the newest frame, wake the processing callback."""
        with self._lock:
            if self._slot is not None:
                self._counters["dropped"] += 1
            self._slot = msg
            self._counters["received"] += 1
        self._wake.trigger()

    def _take(self) -> Image | None:
        with self._lock:
            msg, self._slot = self._slot, None
        return msg

    def _process_latest(self) -> None:
        msg = self._take()
        runtime = self.runtime
        if msg is None or runtime is None or not self._active:
            return
        period = self.params["error_log_period"]
        try:
            frame = image_to_numpy(msg)
            result = runtime.infer(frame, COLOUR_ORDER[msg.encoding])
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
        self._count("processed")
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
        features.target_frame_id = self.params["base_frame"] or self._robot_base_frame
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
        """received / processed / dropped frames, bad inputs, rejected outputs and
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
            info = self.runtime.info
            values.update(provider=PROVIDER_NAMES[info.active], fp16=info.fp16,
                          model_sha256=self.runtime.sha256)
            if not self._active:
                level, message = "warn", "inactive"
            elif counters["rejected_outputs"] or counters["bad_inputs"] \
                    or counters["callback_errors"]:
                level, message = "warn", ("frames skipped (bad input, non-finite output or "
                                          "callback error)")
        self._diagnostics.report(level, message, values, force=True)


def main(args: list[str] | None = None) -> None:
    """Run the encoder node alone."""
    # Two threads: the receive and processing callback groups run concurrently.
    run_node(EncoderNode, args, threads=2)


if __name__ == "__main__":
    main()
