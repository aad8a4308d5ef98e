"""ONNX export and manifest writing shared by the encoder and policy trainers.

* :func:`export_onnx` writes a module to ONNX at a fixed opset (17) with an optional
  dynamic batch axis and returns the tensor contracts for the manifest.
* :func:`write_manifest_entry` read-modify-writes ``models/artifacts/manifest.json``,
  replacing one model's entry and leaving the others untouched (atomic rename); every
  entry it writes is sealed with ``record_sha256`` (:func:`visuomotor_core.manifest.
  seal_entry`), which the runtime checks, so evaluation scripts that update metrics
  through it keep the manifest loadable.
* :func:`model_entry` assembles an entry with the file's SHA-256 and the robot the model
  was trained for.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visuomotor_core.manifest import robot_name, seal_entry, sha256_file

OPSET = 17
BATCH_AXIS = "batch"
ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "artifacts"
MANIFEST_PATH = ARTIFACTS_DIR / "manifest.json"

_MANIFEST_MODE = 0o644
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64",
           torch.float16: "float16", torch.uint8: "uint8", torch.int32: "int32"}


def _tensor_entries(names: Sequence[str], tensors: Sequence[torch.Tensor],
                    dynamic_batch: bool) -> list[dict]:
    entries = []
    for name, tensor in zip(names, tensors, strict=True):
        shape: list[int | str] = list(tensor.shape)
        if dynamic_batch:
            shape[0] = BATCH_AXIS
        entries.append({"name": name, "shape": shape, "dtype": _DTYPES[tensor.dtype]})
    return entries


def export_onnx(module: torch.nn.Module, example_inputs: Sequence[torch.Tensor],
                input_names: Sequence[str], output_names: Sequence[str], path: str | Path,
                dynamic_batch: bool = True) -> dict[str, list[dict]]:
    """Export ``module`` (in eval mode) to ONNX opset :data:`OPSET`.

    Args:
        module: the network; ``module(*example_inputs)`` returns a tensor or a tuple.
        example_inputs: tensors with the batch axis first.
        input_names, output_names: ONNX tensor names in call/return order.
        path: destination ``.onnx`` file (parent directories are created).
        dynamic_batch: make axis 0 of every input and output dynamic (``batch``).

    Returns:
        ``{"inputs": [...], "outputs": [...]}`` tensor entries (name, shape, dtype).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    inputs = tuple(example_inputs)
    with torch.no_grad():
        outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    if len(outputs) != len(output_names):
        raise ValueError(f"module returns {len(outputs)} outputs but {len(output_names)} "
                         f"output names were given")
    axes = {n: {0: BATCH_AXIS} for n in [*input_names, *output_names]} if dynamic_batch \
        else None
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: it writes the fixed opset
        # directly and needs no onnxscript; torch flags it as legacy.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, inputs, str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    return {"inputs": _tensor_entries(input_names, inputs, dynamic_batch),
            "outputs": _tensor_entries(output_names, outputs, dynamic_batch)}


def trained_robot() -> str:
    """Name of the robot the simulation trains on (its URDF's ``<robot name>``)."""
    from visuomotor_sim.world import robot_urdf_path

    return robot_name(robot_urdf_path())


def model_entry(path: str | Path, tensors: dict[str, list[dict]], robot: str,
                **fields: Any) -> dict:
    """A manifest entry for the ONNX file at ``path``: file name, SHA-256, opset, the robot
    it was trained for (the URDF's robot name, e.g. ``panda``), I/O and whatever ``fields``
    add (preprocessing, training, metrics, ...)."""
    path = Path(path)
    return {"file": path.name, "sha256": sha256_file(path), "opset": OPSET,
            "size_bytes": path.stat().st_size, "robot": robot, **tensors,
            **_jsonable(fields)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_manifest_entry(manifest_path: str | Path, name: str, entry: dict) -> None:
    """Set ``models[name] = entry`` in the manifest, keeping every other entry.

    The entry is sealed (``record_sha256`` over the rest of it; an old seal is replaced).
    The file is created when missing and replaced atomically (write + rename).
    """
    manifest_path = Path(manifest_path)
    data: dict[str, Any] = {"models": {}}
    if manifest_path.is_file():
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        data.setdefault("models", {})
    data["models"][name] = seal_entry(_jsonable(entry))
    data["models"] = dict(sorted(data["models"].items()))
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=manifest_path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, _MANIFEST_MODE)
    os.replace(tmp, manifest_path)
