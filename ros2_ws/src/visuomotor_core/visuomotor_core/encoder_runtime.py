"""Vision encoder at run time: preprocess -> ONNX Runtime -> keypoints -> geometry. No torch.

The network finds keypoints; geometry turns them into the target's position.
:class:`EncoderRuntime` loads the model through the manifest (hash checked first), reads
the entry's ``geometry`` record (:class:`visuomotor_core.camera_geometry.GeometrySpec`:
keypoint names, scene landmarks, the calibrated camera), creates the session with provider
fallback (:mod:`visuomotor_core.onnx_session`) and checks the graph against both. Per
camera image it

1. preprocesses it with the manifest's recorded preprocessing (the same
   :class:`visuomotor_core.image.Preprocessor` the trainer used);
2. runs the network: ``embedding`` [1, D], ``keypoints`` [1, K, 2] (u, v in
   network-input pixels) and ``visibility`` [1, K] in [0, 1];
3. refines the camera pose on the landmark keypoints and back-projects the target's
   keypoints (:func:`visuomotor_core.camera_geometry.estimate_target`).

It returns an :class:`EncoderOutput` only when every output has the expected shape and is
finite and the position is finite; otherwise it raises :class:`InvalidEncoderOutput`, so a
caller can count and drop it.

Camera: the model is trained for the manifest's camera (intrinsics at the network-input
size, calibrated pose). :meth:`EncoderRuntime.set_camera_info` accepts a real camera's
``sensor_msgs/CameraInfo`` intrinsics when they show the same view (scaled to the network
input: fx, fy within 2 %, cx, cy within 1.5 px) and the geometry then uses them; images must
have that camera's size. A camera of another aspect ratio (a 640x480 sensor for a square
model) is cropped about its centre to the trained aspect ratio, and the crop's intrinsics
must show the view (a 640x480 camera with the trained vertical field of view: its centre
480x480). Without one, images of any size with
the manifest camera's aspect ratio are accepted and the manifest's intrinsics scaled to
them are used. :meth:`EncoderRuntime.set_extrinsics` replaces the calibrated pose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visuomotor_core.camera_geometry import (
    CameraModel,
    CameraPose,
    GeometryLimits,
    GeometrySpec,
    estimate_target,
    scale_intrinsics,
    scale_pixels,
)
from visuomotor_core.image import SUPPORTED_COLOUR_ORDERS, PreprocessConfig, Preprocessor
from visuomotor_core.manifest import (
    ModelContractError,
    ModelSpec,
    check_session_contract,
    contract_error,
    load_model_spec,
)
from visuomotor_core.onnx_session import SessionConfig, SessionInfo, create_session

MODEL_NAME = "encoder"
INPUT_NAME = "image"
OUTPUT_NAMES = ("embedding", "keypoints", "visibility")
POSITION_DIM = 3
#: (u, v) per keypoint.
KEYPOINT_DIM = 2
#: A camera is the model's when, scaled to the network-input size, its focal lengths are
#: within this fraction of the manifest's ...
CAMERA_FOCAL_TOLERANCE = 0.02
#: ... its principal point within this many network-input pixels ...
CAMERA_CENTRE_TOLERANCE_PX = 1.5
#: ... and its aspect ratio (width / height) within this fraction.
CAMERA_ASPECT_TOLERANCE = 0.01
#: What :class:`visuomotor_core.image.Preprocessor` writes: float32, NCHW, 3 channels.
INPUT_LAYOUT = "NCHW"
INPUT_DTYPE = "float32"
INPUT_CHANNELS = 3

_LOG = logging.getLogger(__name__)


class InvalidEncoderOutput(ValueError):
    """The model produced an output of the wrong shape or with non-finite values, or no
    finite target position follows from its keypoints."""


class ImageCameraMismatch(ValueError):
    """An image whose size does not fit the camera model in use."""


@dataclass(frozen=True)
class EncoderOutput:
    """Encoder result for one image.

    Attributes:
        embedding: float32 (D,) image features (unitless; not an input of the policy).
        target_position: float64 (3,) target centre, m, the geometry record's base frame
            (the robot description's base frame).
        confidence: in [0, 1]; 0 means "do not use" (see
            :func:`visuomotor_core.camera_geometry.estimate_target`).
        inference_time: wall time of preprocessing + inference + geometry, s.
        keypoints: float64 (K, 2) keypoints in the camera image's pixels (u right, v down),
            rows in the geometry record's keypoint order.
        pose_refined: whether the landmark-refined camera pose was used (else the
            calibration).
    """

    embedding: np.ndarray
    target_position: np.ndarray
    confidence: float
    inference_time: float
    keypoints: np.ndarray
    pose_refined: bool


def _crop_text(full: tuple[int, int], crop: tuple[int, int]) -> str:
    return "" if crop == full else f" cropped to {crop[0]}x{crop[1]} about its centre"


@dataclass(frozen=True)
class CameraState:
    """The camera the runtime serves.

    Attributes:
        model: intrinsics of the image the network sees (the camera's image, or its
            centred crop with the trained aspect ratio); from the manifest (at the
            network-input size) until a CameraInfo is accepted.
        from_camera_info: whether ``model`` came from :meth:`EncoderRuntime.set_camera_info`
            (images must then have exactly ``image_size``).
        image_size: (width, height) of the camera's images (CameraInfo only).
        crop: (u0, v0) of the crop's top-left pixel in the camera image; (0, 0) without
            a crop.
    """

    model: CameraModel
    from_camera_info: bool
    image_size: tuple[int, int] = (0, 0)
    crop: tuple[int, int] = (0, 0)


def check_outputs(outputs: dict[str, np.ndarray], embedding_dim: int,
                  keypoint_count: int) -> None:
    """Raise :class:`InvalidEncoderOutput` unless the batch-1 outputs are well formed."""
    expected = {"embedding": (1, embedding_dim),
                "keypoints": (1, keypoint_count, KEYPOINT_DIM),
                "visibility": (1, keypoint_count)}
    for name, shape in expected.items():
        value = outputs.get(name)
        if value is None:
            raise InvalidEncoderOutput(f"encoder output '{name}' missing")
        if value.shape != shape:
            raise InvalidEncoderOutput(f"encoder output '{name}' has shape {value.shape}, "
                                       f"expected {shape}")
        if not np.all(np.isfinite(value)):
            raise InvalidEncoderOutput(f"encoder output '{name}' is not finite")


class EncoderRuntime:
    """Runs the exported keypoint encoder on camera images and locates the target.

    Args:
        manifest_path: model manifest JSON.
        model_path: ONNX file (default: the manifest entry's file beside the manifest).
        session_config: provider / fp16 / threads.
        log: receives the provider log line.
        robot: the robot this runtime serves (checked against the manifest's ``robot``);
            None skips that check.
        base_frame: the frame the caller publishes positions in (checked against the
            geometry record's ``base_frame``); None skips that check.
        limits: pose-refinement and confidence thresholds (default
            :class:`visuomotor_core.camera_geometry.GeometryLimits`).

    Raises:
        ManifestError: the model cannot be verified (before any session is created), or
            (:class:`visuomotor_core.manifest.ModelContractError`) the manifest's inputs,
            outputs, preprocessing or geometry disagree with the ONNX graph or with this
            runtime.
    """

    def __init__(self, manifest_path: str | Path, model_path: str | Path | None = None,
                 session_config: SessionConfig | None = None,
                 log: Callable[[str], None] | None = None, robot: str | None = None,
                 base_frame: str | None = None, limits: GeometryLimits | None = None
                 ) -> None:
        self.spec: ModelSpec = load_model_spec(manifest_path, MODEL_NAME, model_path)
        if robot is not None:
            self.spec.check_robot(robot)
        self._check_names(self.spec)
        self.preprocess_config = _preprocess_config(self.spec)
        self.geometry = GeometrySpec.from_record(self.spec.entry.get("geometry"),
                                                 self.spec.label)
        if base_frame is not None and base_frame != self.geometry.base_frame:
            raise contract_error(self.spec.label, "geometry base_frame",
                                 self.geometry.base_frame, base_frame, "runtime")
        self.limits = limits or GeometryLimits()
        provider_line: list[str] = []  # logged once the graph has passed the checks
        self.session, self.session_info = create_session(
            self.spec.path, session_config or SessionConfig(), MODEL_NAME,
            provider_line.append)
        check_session_contract(self.spec, self.session)
        self._check_graph(self.spec, self.preprocess_config, self.geometry, self.session)
        self._check_geometry(self.spec.label, self.geometry, self.preprocess_config)
        for line in provider_line:
            (log or _LOG.info)(line)
        self.embedding_dim = int(self.spec.output("embedding").shape[-1])
        self._preprocessor = Preprocessor(self.preprocess_config)
        self._input = np.empty((1, *self.preprocess_config.input_shape), np.float32)
        self._net_size = (self.preprocess_config.width, self.preprocess_config.height)
        self._camera = CameraState(self.geometry.camera, from_camera_info=False)
        self._calibration: CameraPose = self.geometry.calibration

    # ------------------------------------------------------------------ contract
    @staticmethod
    def _check_names(spec: ModelSpec) -> None:
        inputs, outputs = [i.name for i in spec.inputs], [o.name for o in spec.outputs]
        if inputs != [INPUT_NAME]:
            raise contract_error(spec.label, "inputs", inputs, [INPUT_NAME], "runtime needs")
        if sorted(outputs) != sorted(OUTPUT_NAMES):
            raise contract_error(spec.label, "outputs", outputs, list(OUTPUT_NAMES),
                                 "runtime needs")

    @staticmethod
    def _check_geometry(label: str, geometry: GeometrySpec, prep: PreprocessConfig) -> None:
        """The geometry record's camera is the network input's: K is at that size."""
        camera = geometry.camera
        if camera.size != (prep.width, prep.height):
            raise contract_error(label, "geometry camera size", list(camera.size),
                                 [prep.width, prep.height], other="preprocessing",
                                 first="manifest")

    @staticmethod
    def _check_graph(spec: ModelSpec, prep: PreprocessConfig, geometry: GeometrySpec,
                     session) -> None:
        """Preprocessing, output sizes and keypoint count against the graph's own tensors
        (whose names, dtypes and shapes :func:`check_session_contract` has matched to the
        manifest)."""
        label, record = spec.label, spec.preprocessing
        image = session.get_inputs()[0]
        shape = list(image.shape)
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise ModelContractError(f"{label}: input '{INPUT_NAME}' shape: model {shape}, "
                                     f"runtime needs [batch, C, H, W] with fixed C, H, W")
        channels, height, width = shape[1:]
        for field, declared, actual in (("channels", record["channels"], channels),
                                        ("height", prep.height, height),
                                        ("width", prep.width, width)):
            if declared != actual:
                raise contract_error(label, f"preprocessing {field}", declared, actual)
        if channels != INPUT_CHANNELS:
            raise contract_error(label, f"input '{INPUT_NAME}' channels", channels,
                                 INPUT_CHANNELS, other="runtime writes", first="model")
        dtype = spec.inputs[0].dtype
        if record["dtype"] != dtype:
            raise contract_error(label, "preprocessing dtype", record["dtype"], dtype)
        if dtype != INPUT_DTYPE:
            raise contract_error(label, f"input '{INPUT_NAME}' dtype", dtype, INPUT_DTYPE,
                                 other="runtime writes", first="model")
        k = geometry.keypoint_count
        needs = {"embedding": ["batch", "D"], "keypoints": ["batch", k, KEYPOINT_DIM],
                 "visibility": ["batch", k]}
        for arg in session.get_outputs():
            want, got = needs[arg.name], list(arg.shape)
            fits = len(got) == len(want) and all(
                isinstance(g, int) and (w == "D" or g == w) for w, g in zip(
                    want[1:], got[1:], strict=True))
            if not fits:
                raise contract_error(label, f"output '{arg.name}' shape", got, want,
                                     other=f"runtime needs (geometry keypoints: {k})",
                                     first="model")

    @property
    def sha256(self) -> str:
        return self.spec.sha256

    @property
    def info(self) -> SessionInfo:
        return self.session_info

    # ------------------------------------------------------------------ camera
    @property
    def camera(self) -> CameraState:
        """The camera model in use."""
        return self._camera

    @property
    def calibration(self) -> CameraPose:
        """The calibrated pose of the camera's optical frame (base frame) in use."""
        return self._calibration

    def set_camera_info(self, width: int, height: int, k) -> None:
        """Use a camera's intrinsics (``sensor_msgs/CameraInfo`` width, height, K row-major)
        for the geometry; later images must have this size.

        Raises:
            ModelContractError: ``camera model mismatch: ...`` when the camera does not
                show the view the model was trained on (aspect ratio, focal lengths,
                principal point, see the module docstring) or K is not a pinhole matrix;
                the camera in use is kept.
        """
        model, crop = self._matching_camera(int(width), int(height), k)
        self._camera = CameraState(model, True, (int(width), int(height)), crop)

    def use_manifest_camera(self) -> None:
        """Go back to the manifest's intrinsics (images of any size with its aspect)."""
        self._camera = CameraState(self.geometry.camera, from_camera_info=False)

    def _matching_camera(self, width: int, height: int, k
                         ) -> tuple[CameraModel, tuple[int, int]]:
        """The model of what the network will see of this camera and the crop's offset:
        a camera of another aspect ratio (a 640x480 sensor for a square model) is cropped
        about its centre to the trained aspect, whose intrinsics must then match."""
        mismatch = f"{self.spec.label}: camera model mismatch:"
        matrix = np.asarray(k, np.float64).reshape(-1)
        if width <= 0 or height <= 0 or matrix.shape != (9,) or \
                not np.all(np.isfinite(matrix)):
            raise ModelContractError(f"{mismatch} camera_info {width}x{height} with K "
                                     f"{matrix.tolist()} is not a camera model")
        matrix = matrix.reshape(3, 3)
        fx, fy = matrix[0, 0], matrix[1, 1]
        if not (fx > 0.0 and fy > 0.0) or np.any(matrix[[1, 2, 2], [0, 0, 1]] != 0.0) \
                or matrix[2, 2] != 1.0 or abs(matrix[0, 1]) > CAMERA_FOCAL_TOLERANCE * fx:
            raise ModelContractError(f"{mismatch} camera_info K {matrix.reshape(-1).tolist()}"
                                     f" is not a pinhole matrix [fx, 0, cx, 0, fy, cy, 0, 0, "
                                     f"1] with fx, fy > 0")
        trained = self.geometry.camera
        full = (width, height)
        crop_size = full
        if abs((width / height) / trained.aspect - 1.0) > CAMERA_ASPECT_TOLERANCE:
            crop_size = ((min(width, round(height * trained.aspect)), height)
                         if width / height > trained.aspect
                         else (width, min(height, round(width / trained.aspect))))
        u0, v0 = (width - crop_size[0]) // 2, (height - crop_size[1]) // 2
        matrix = matrix.copy()
        matrix[0, 2] -= u0
        matrix[1, 2] -= v0
        width, height = crop_size
        at_input = scale_intrinsics(matrix, crop_size, trained.size)
        for name, i in (("fx", 0), ("fy", 1)):
            got, want = at_input[i, i], trained.k[i, i]
            if abs(got / want - 1.0) > CAMERA_FOCAL_TOLERANCE:
                raise ModelContractError(
                    f"{mismatch} {name} {got:.5g} px at the network input "
                    f"{trained.width}x{trained.height} (camera_info {full[0]}x{full[1]}"
                    f"{_crop_text(full, crop_size)}: {matrix[i, i]:.5g} px), the model's "
                    f"camera {want:.5g} px (tolerance {CAMERA_FOCAL_TOLERANCE:.0%})")
        for name, i in (("cx", 0), ("cy", 1)):
            got, want = at_input[i, 2], trained.k[i, 2]
            if abs(got - want) > CAMERA_CENTRE_TOLERANCE_PX:
                raise ModelContractError(
                    f"{mismatch} {name} {got:.5g} px at the network input "
                    f"{trained.width}x{trained.height} (camera_info {full[0]}x{full[1]}"
                    f"{_crop_text(full, crop_size)}: {matrix[i, 2]:.5g} px), the model's "
                    f"camera {want:.5g} px (tolerance {CAMERA_CENTRE_TOLERANCE_PX} px)")
        return CameraModel(width, height, matrix), (u0, v0)

    def set_extrinsics(self, position, quaternion_xyzw) -> None:
        """Calibrated pose of the camera's optical frame (REP-103) in the base frame: a
        position (3,), m, and a quaternion (x, y, z, w), which is normalised.

        Raises:
            ValueError: not finite, or a quaternion of norm < 0.5; the pose in use is kept.
        """
        self._calibration = CameraPose.from_quaternion(position, quaternion_xyzw)

    def use_manifest_extrinsics(self) -> None:
        """Go back to the manifest's calibrated camera pose."""
        self._calibration = self.geometry.calibration

    def _camera_for(self, camera: CameraState, width: int, height: int) -> np.ndarray:
        """Intrinsics at the network-input size for an image of this size."""
        model = camera.model
        if camera.from_camera_info:
            if (width, height) != camera.image_size:
                raise ImageCameraMismatch(
                    f"image {width}x{height} does not fit the camera: camera_info "
                    f"{camera.image_size[0]}x{camera.image_size[1]}")
        elif abs((width / height) / model.aspect - 1.0) > CAMERA_ASPECT_TOLERANCE:
            raise ImageCameraMismatch(
                f"image {width}x{height} does not fit the camera: aspect ratio "
                f"{width / height:.4g}, the model's camera {model.width}x{model.height} "
                f"{model.aspect:.4g} (no camera_info)")
        return scale_intrinsics(model.k, model.size, self._net_size)

    # ------------------------------------------------------------------ inference
    def run_raw(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run preprocessed input (N, 3, H, W) float32; returns {output name: array}."""
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return dict(zip(OUTPUT_NAMES, values, strict=True))

    def infer(self, image: np.ndarray, colour_order: str = "rgb") -> EncoderOutput:
        """Encode one uint8 (H, W, 3) image and locate the target.

        Raises:
            ValueError: the image is not uint8 (H, W, 3).
            ImageCameraMismatch: its size does not fit the camera in use.
            InvalidEncoderOutput: an output has the wrong shape or is not finite, or the
                keypoints give no finite position.
        """
        start = time.perf_counter()
        camera, calibration = self._camera, self._calibration  # one consistent view
        if not (isinstance(image, np.ndarray) and image.ndim == 3):
            self._preprocessor(image, colour_order, out=self._input[0])  # raises ValueError
        height, width = image.shape[:2]
        k_input = self._camera_for(camera, width, height)
        (u0, v0), seen = camera.crop, camera.model.size
        self._preprocessor(image[v0:v0 + seen[1], u0:u0 + seen[0]], colour_order,
                           out=self._input[0])
        outputs = self.run_raw(self._input)
        check_outputs(outputs, self.embedding_dim, self.geometry.keypoint_count)
        keypoints = outputs["keypoints"][0].astype(np.float64)
        estimate = estimate_target(self.geometry, keypoints, outputs["visibility"][0],
                                   k_input, calibration, self.limits)
        if not np.all(np.isfinite(estimate.position)):
            raise InvalidEncoderOutput("no finite target position follows from the "
                                       "keypoints (a ray misses the support plane)")
        return EncoderOutput(
            embedding=outputs["embedding"][0].astype(np.float32, copy=False),
            target_position=estimate.position,
            confidence=estimate.confidence,
            inference_time=time.perf_counter() - start,
            keypoints=scale_pixels(keypoints, self._net_size, seen) + np.array([u0, v0]),
            pose_refined=estimate.pose_refined,
        )

    def estimate_batch(self, preprocessed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Target positions (N, 3), m, base frame, and confidences (N,) of preprocessed
        network-input images (N, 3, H, W) float32, seen by the manifest's camera
        (intrinsics at the network-input size) from the calibrated pose in use.

        For evaluation: a row whose keypoints give no usable position has confidence 0 (its
        position may be non-finite) instead of raising.

        Raises:
            InvalidEncoderOutput: an output has the wrong shape.
        """
        outputs = self.run_raw(np.ascontiguousarray(preprocessed, np.float32))
        n, count = len(preprocessed), self.geometry.keypoint_count
        keypoints, visibility = outputs["keypoints"], outputs["visibility"]
        if keypoints.shape != (n, count, KEYPOINT_DIM) or visibility.shape != (n, count):
            raise InvalidEncoderOutput(
                f"encoder outputs 'keypoints' {keypoints.shape}, 'visibility' "
                f"{visibility.shape}, expected {(n, count, KEYPOINT_DIM)}, {(n, count)}")
        k_input, calibration = self.geometry.camera.k, self._calibration
        positions = np.empty((n, POSITION_DIM))
        confidences = np.empty(n)
        for i in range(n):
            estimate = estimate_target(self.geometry, keypoints[i], visibility[i], k_input,
                                       calibration, self.limits)
            positions[i], confidences[i] = estimate.position, estimate.confidence
        return positions, confidences


class InferenceStats:
    """Rolling latency percentiles and frame rate over the last ``window`` frames.

    Preallocated ring buffer; :meth:`add` does no allocation.

    Args:
        window: number of recent frames kept.
    """

    def __init__(self, window: int = 200) -> None:
        if window < 2:
            raise ValueError("InferenceStats.window must be >= 2")
        self._latency = np.zeros(window)
        self._stamps = np.zeros(window)
        self._count = 0

    def add(self, latency_s: float, wall_time_s: float) -> None:
        """Record one processed frame: its latency (s) and when it finished (s, monotonic)."""
        slot = self._count % self._latency.shape[0]
        self._latency[slot] = latency_s
        self._stamps[slot] = wall_time_s
        self._count += 1

    @property
    def count(self) -> int:
        """Frames recorded since creation."""
        return self._count

    def summary(self) -> dict[str, float]:
        """``fps`` (frames/s over the window), ``latency_p50_ms``, ``latency_p99_ms``."""
        n = min(self._count, self._latency.shape[0])
        if n == 0:
            return {"fps": 0.0, "latency_p50_ms": float("nan"), "latency_p99_ms": float("nan")}
        latency = self._latency[:n]
        stamps = self._stamps[:n]
        span = float(stamps.max() - stamps.min())
        fps = (n - 1) / span if n > 1 and span > 0.0 else 0.0
        p50, p99 = np.percentile(latency, (50, 99)) * 1e3
        return {"fps": fps, "latency_p50_ms": float(p50), "latency_p99_ms": float(p99)}


def _preprocess_config(spec: ModelSpec) -> PreprocessConfig:
    """The manifest's preprocessing record as a config, every field checked (one-line
    :class:`visuomotor_core.manifest.ModelContractError` naming the field)."""
    label, record = spec.label, spec.preprocessing
    missing = [k for k in ("width", "height", "channels", "colour_order", "mean", "std",
                           "interpolation", "layout", "dtype") if k not in record]
    if missing:
        raise ModelContractError(f"{label}: preprocessing lacks {missing}")
    if record["colour_order"] not in SUPPORTED_COLOUR_ORDERS:
        raise contract_error(label, "preprocessing colour_order", record["colour_order"],
                             list(SUPPORTED_COLOUR_ORDERS), "runtime supports")
    if record["layout"] != INPUT_LAYOUT:
        raise contract_error(label, "preprocessing layout", record["layout"], INPUT_LAYOUT,
                             "runtime writes")
    try:
        return PreprocessConfig.from_dict(record)
    except (TypeError, ValueError) as err:
        raise ModelContractError(f"{label}: preprocessing: {err}") from err
