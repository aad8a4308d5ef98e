"""Vision encoder at run time: preprocess -> ONNX Runtime -> checked outputs. No torch.

:class:`EncoderRuntime` loads the model through the manifest (hash checked first),
creates the session with provider fallback (:mod:`visuomotor_core.onnx_session`),
preprocesses each camera image with the manifest's recorded preprocessing (the same
:class:`visuomotor_core.image.Preprocessor` the trainer used) and returns an
:class:`EncoderOutput` only when every output has the expected shape and is finite;
otherwise it raises :class:`InvalidEncoderOutput`, so a caller can count and drop it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
OUTPUT_NAMES = ("embedding", "target_position", "confidence")
POSITION_DIM = 3
#: What :class:`visuomotor_core.image.Preprocessor` writes: float32, NCHW, 3 channels.
INPUT_LAYOUT = "NCHW"
INPUT_DTYPE = "float32"
INPUT_CHANNELS = 3

_LOG = logging.getLogger(__name__)


class InvalidEncoderOutput(ValueError):
    """The model produced an output of the wrong shape or with non-finite values."""


@dataclass(frozen=True)
class EncoderOutput:
    """Encoder result for one image.

    Attributes:
        embedding: float32 (D,) features for the policy (unitless).
        target_position: float64 (3,) estimated target position, m, robot base frame.
        confidence: model confidence in the estimate, in [0, 1].
        inference_time: wall time of preprocessing + inference, s.
    """

    embedding: np.ndarray
    target_position: np.ndarray
    confidence: float
    inference_time: float


def check_outputs(outputs: dict[str, np.ndarray], embedding_dim: int) -> None:
    """Raise :class:`InvalidEncoderOutput` unless the batch-1 outputs are well formed."""
    expected = {"embedding": (1, embedding_dim), "target_position": (1, POSITION_DIM),
                "confidence": (1, 1)}
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
    """Runs the exported encoder on single camera images.

    Args:
        manifest_path: model manifest JSON.
        model_path: ONNX file (default: the manifest entry's file beside the manifest).
        session_config: provider / fp16 / threads.
        log: receives the provider log line.
        robot: the robot this runtime serves (checked against the manifest's ``robot``);
            None skips that check.

    Raises:
        ManifestError: the model cannot be verified (before any session is created), or
            (:class:`visuomotor_core.manifest.ModelContractError`) the manifest's inputs,
            outputs or preprocessing disagree with the ONNX graph or with this runtime.
    """

    def __init__(self, manifest_path: str | Path, model_path: str | Path | None = None,
                 session_config: SessionConfig | None = None,
                 log: Callable[[str], None] | None = None, robot: str | None = None) -> None:
        self.spec: ModelSpec = load_model_spec(manifest_path, MODEL_NAME, model_path)
        if robot is not None:
            self.spec.check_robot(robot)
        self._check_names(self.spec)
        self.preprocess_config = _preprocess_config(self.spec)
        provider_line: list[str] = []  # logged once the graph has passed the checks
        self.session, self.session_info = create_session(
            self.spec.path, session_config or SessionConfig(), MODEL_NAME,
            provider_line.append)
        check_session_contract(self.spec, self.session)
        self._check_graph(self.spec, self.preprocess_config, self.session)
        for line in provider_line:
            (log or _LOG.info)(line)
        self.embedding_dim = int(self.spec.output("embedding").shape[-1])
        self._preprocessor = Preprocessor(self.preprocess_config)
        self._input = np.empty((1, *self.preprocess_config.input_shape), np.float32)

    @staticmethod
    def _check_names(spec: ModelSpec) -> None:
        inputs, outputs = [i.name for i in spec.inputs], [o.name for o in spec.outputs]
        if inputs != [INPUT_NAME]:
            raise contract_error(spec.label, "inputs", inputs, [INPUT_NAME], "runtime needs")
        if sorted(outputs) != sorted(OUTPUT_NAMES):
            raise contract_error(spec.label, "outputs", outputs, list(OUTPUT_NAMES),
                                 "runtime needs")

    @staticmethod
    def _check_graph(spec: ModelSpec, prep: PreprocessConfig, session) -> None:
        """Preprocessing and output sizes against the graph's own tensors (whose names,
        dtypes and shapes :func:`check_session_contract` has matched to the manifest)."""
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
        sizes = {"target_position": POSITION_DIM, "confidence": 1}
        for arg in session.get_outputs():
            last = arg.shape[-1] if len(arg.shape) == 2 else None
            if not isinstance(last, int) or sizes.get(arg.name, last) != last:
                raise contract_error(label, f"output '{arg.name}' shape", list(arg.shape),
                                     ["batch", sizes.get(arg.name, "D")],
                                     other="runtime needs", first="model")

    @property
    def sha256(self) -> str:
        return self.spec.sha256

    @property
    def info(self) -> SessionInfo:
        return self.session_info

    def run_raw(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run preprocessed input (N, 3, H, W) float32; returns {output name: array}."""
        values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return dict(zip(OUTPUT_NAMES, values, strict=True))

    def infer(self, image: np.ndarray, colour_order: str = "rgb") -> EncoderOutput:
        """Encode one uint8 (H, W, 3) image.

        Raises:
            ValueError: the image is not uint8 (H, W, 3).
            InvalidEncoderOutput: an output has the wrong shape or is not finite.
        """
        start = time.perf_counter()
        self._preprocessor(image, colour_order, out=self._input[0])
        outputs = self.run_raw(self._input)
        check_outputs(outputs, self.embedding_dim)
        return EncoderOutput(
            embedding=outputs["embedding"][0].astype(np.float32, copy=False),
            target_position=outputs["target_position"][0].astype(np.float64),
            confidence=float(np.clip(outputs["confidence"][0, 0], 0.0, 1.0)),
            inference_time=time.perf_counter() - start,
        )


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
