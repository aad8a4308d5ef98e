"""ONNX Runtime session creation with execution-provider fallback.

The requested provider (``tensorrt``, ``cuda`` or ``cpu``) starts an ordered chain
that always ends at the CPU: ``tensorrt -> cuda -> cpu``, ``cuda -> cpu``, ``cpu``.
Providers this onnxruntime build does not offer are skipped, and after the session
is created the provider that actually runs the first node is reported in one log
line. FP16 is requested from TensorRT with ``trt_fp16_enable``; CUDA and CPU run the
model in its exported precision (FP32), which the log line states.

Used by both the encoder and the policy runtimes. No torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from visuomotor_core.manifest import ManifestError

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
#: Fallback order, fastest first; a request starts at its own position.
FALLBACK_ORDER = ("tensorrt", "cuda", "cpu")

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionConfig:
    """How to run an ONNX model.

    Attributes:
        provider: requested execution provider: ``cpu``, ``cuda`` or ``tensorrt``.
        fp16: ask for FP16 kernels where the provider supports it (TensorRT).
        intra_op_threads: threads inside one operator; 0 lets ONNX Runtime choose.
        trt_cache_dir: directory for TensorRT engine caches ("" = no cache).
    """

    provider: str = "cpu"
    fp16: bool = False
    intra_op_threads: int = 1
    trt_cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDER_NAMES:
            raise ValueError(f"SessionConfig.provider must be one of {list(PROVIDER_NAMES)}, "
                             f"got '{self.provider}'")
        if not 0 <= self.intra_op_threads <= 256:
            raise ValueError(f"SessionConfig.intra_op_threads must be in [0, 256], got "
                             f"{self.intra_op_threads}")


def provider_chain(requested: str, available: list[str] | None = None
                   ) -> tuple[list[str], list[str]]:
    """Ordered provider keys to try for ``requested``, and the ones skipped.

    Args:
        requested: ``tensorrt``, ``cuda`` or ``cpu``.
        available: ONNX Runtime provider names on offer (default: this build's).

    Returns:
        (chain, skipped): chain always ends with ``cpu``.
    """
    if requested not in PROVIDER_NAMES:
        raise ValueError(f"unknown execution provider '{requested}' "
                         f"(choose from {list(PROVIDER_NAMES)})")
    offered = set(ort.get_available_providers() if available is None else available)
    wanted = FALLBACK_ORDER[FALLBACK_ORDER.index(requested):]
    chain = [p for p in wanted if PROVIDER_NAMES[p] in offered or p == "cpu"]
    skipped = [p for p in wanted if p not in chain]
    return chain, skipped


def _provider_entry(key: str, config: SessionConfig) -> tuple[str, dict]:
    options: dict = {}
    if key == "tensorrt":
        options["trt_fp16_enable"] = bool(config.fp16)
        if config.trt_cache_dir:
            options["trt_engine_cache_enable"] = True
            options["trt_engine_cache_path"] = config.trt_cache_dir
    return PROVIDER_NAMES[key], options


@dataclass(frozen=True)
class SessionInfo:
    """What the created session runs on.

    Attributes:
        requested: the provider key asked for.
        active: the provider key that runs the model (first in the session's list).
        fp16: whether FP16 is in effect (TensorRT with fp16 requested).
        skipped: requested-or-below providers this build does not offer.
    """

    requested: str
    active: str
    fp16: bool
    skipped: tuple[str, ...]

    def describe(self, model_name: str) -> str:
        """The one log line naming the provider that runs ``model_name``."""
        precision = "FP16" if self.fp16 else "FP32"
        text = (f"ONNX model '{model_name}' runs on {PROVIDER_NAMES[self.active]} "
                f"({precision}; requested {self.requested}")
        if self.skipped:
            text += f"; unavailable in this onnxruntime build: {', '.join(self.skipped)}"
        return text + ")"


def create_session(model_path: str | Path, config: SessionConfig, model_name: str = "model",
                   log: Callable[[str], None] | None = None
                   ) -> tuple[ort.InferenceSession, SessionInfo]:
    """Create an inference session following the fallback chain; log the active provider.

    Call only after the model's hash has been checked (visuomotor_core.manifest).

    Raises:
        ManifestError: ONNX Runtime cannot load the file (one line, the runtime's reason).

    Args:
        model_path: ONNX file.
        config: provider, precision and threading.
        model_name: name used in the log line.
        log: where the log line goes (default: this module's logger at INFO).
    """
    chain, skipped = provider_chain(config.provider)
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = [_provider_entry(key, config) for key in chain]
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options,
                                       providers=providers)
    except Exception as err:  # onnxruntime raises its own pybind types
        detail = " ".join(str(err).split())
        raise ManifestError(f"{Path(model_path).name}: ONNX Runtime cannot load the "
                            f"model: {detail}") from err
    active_name = session.get_providers()[0]
    active = next(k for k, v in PROVIDER_NAMES.items() if v == active_name)
    # Providers listed but failing to initialise are dropped by ONNX Runtime itself.
    skipped_all = tuple(skipped) + tuple(
        k for k in chain[:chain.index(active)] if k not in skipped)
    info = SessionInfo(requested=config.provider, active=active,
                       fp16=bool(config.fp16 and active == "tensorrt"), skipped=skipped_all)
    (log or _LOG.info)(info.describe(model_name))
    return session, info
