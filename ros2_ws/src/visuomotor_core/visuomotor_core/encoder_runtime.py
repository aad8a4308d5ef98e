"""Vision encoder at run time: preprocess -> ONNX Runtime -> checked outputs. No torch.

:class:`EncoderRuntime` loads the model through the manifest (hash checked first),
creates the session with provider fallback (:mod:`visuomotor_core.onnx_session`),
preprocesses each camera image with the manifest's recorded preprocessing (the same
:class:`visuomotor_core.image.Preprocessor` the trainer used) and returns an
:class:`EncoderOutput` only when every output has the expected shape and is finite;
otherwise it raises :class:`InvalidEncoderOutput`, so a caller can count and drop it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visuomotor_core.image import PreprocessConfig, Preprocessor
from visuomotor_core.manifest import ManifestError, ModelSpec, load_model_spec
from visuomotor_core.onnx_session import SessionConfig, SessionInfo, create_session

MODEL_NAME = "encoder"
INPUT_NAME = "image"
OUTPUT_NAMES = ("embedding", "target_position", "confidence")
POSITION_DIM = 3


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

    Raises:
        ManifestError: the model cannot be verified (before any session is created).
    """

    def __init__(self, manifest_path: str | Path, model_path: str | Path | None = None,
                 session_config: SessionConfig | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.spec: ModelSpec = load_model_spec(manifest_path, MODEL_NAME, model_path)
        self._check_contract(self.spec)
        self.preprocess_config = PreprocessConfig.from_dict(self.spec.preprocessing)
        self.embedding_dim = int(self.spec.output("embedding").shape[-1])
        self._preprocessor = Preprocessor(self.preprocess_config)
        self._input = np.empty((1, *self.preprocess_config.input_shape), np.float32)
        self.session, self.session_info = create_session(
            self.spec.path, session_config or SessionConfig(), MODEL_NAME, log)

    @staticmethod
    def _check_contract(spec: ModelSpec) -> None:
        names = [o.name for o in spec.outputs]
        if [i.name for i in spec.inputs] != [INPUT_NAME] or sorted(names) != sorted(
                OUTPUT_NAMES):
            raise ManifestError(f"encoder manifest entry declares inputs "
                                f"{[i.name for i in spec.inputs]} and outputs {names}; the "
                                f"runtime needs ['{INPUT_NAME}'] and {list(OUTPUT_NAMES)}")

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
