"""Model manifest: which ONNX files may run, with their hashes and I/O contracts.

``models/artifacts/manifest.json`` maps a model name to an entry::

    {"models": {"encoder": {"file": "encoder.onnx", "sha256": "...",
                            "inputs": [{"name": "image", "shape": ["batch", 3, 128, 128],
                                        "dtype": "float32"}],
                            "outputs": [...], "preprocessing": {...}, "opset": 17,
                            "training": {"command": "...", "config": {...}},
                            "metrics": {...}}}}

:func:`load_model_spec` reads an entry and checks the file's SHA-256 against it before
anything creates an inference session; a missing file, a missing entry or a hash
mismatch is a :class:`ManifestError` that says what was expected and where.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HASH_CHUNK_BYTES = 1 << 20


class ManifestError(RuntimeError):
    """A model cannot be used: missing file, missing entry, or hash mismatch."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints; a string names a dynamic axis) and dtype of one model tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        try:
            return cls(str(data["name"]), tuple(data["shape"]), str(data["dtype"]))
        except (KeyError, TypeError) as err:
            raise ManifestError(f"tensor entry {data!r} needs name, shape and dtype") from err

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    def static_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape with every dynamic axis replaced by ``batch``."""
        return tuple(batch if isinstance(d, str) else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """A verified manifest entry.

    Attributes:
        name: manifest key (e.g. ``encoder``).
        path: absolute path of the ONNX file, hash checked.
        sha256: hex digest of the file.
        inputs, outputs: tensor contracts in model order.
        preprocessing: free-form preprocessing record (see visuomotor_core.image).
        entry: the full raw manifest entry (training command, metrics, ...).
    """

    name: str
    path: Path
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    entry: dict[str, Any] = field(default_factory=dict)

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise ManifestError(f"model '{self.name}' has no output '{name}' "
                            f"(outputs: {[o.name for o in self.outputs]})")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(manifest_path: str | Path) -> dict[str, Any]:
    """The parsed manifest (``{"models": {...}}``); a missing or malformed file raises."""
    path = Path(manifest_path)
    if not path.is_file():
        raise ManifestError(f"model manifest not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(f"model manifest {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ManifestError(f"model manifest {path} lacks a top-level 'models' mapping")
    return data


def load_model_spec(manifest_path: str | Path, name: str,
                    model_path: str | Path | None = None) -> ModelSpec:
    """Read entry ``name`` and verify the model file's SHA-256 against it.

    Args:
        manifest_path: the manifest JSON.
        name: model name in the manifest (``encoder``, ``policy``, ...).
        model_path: the ONNX file; default: the entry's ``file`` next to the manifest.

    Raises:
        ManifestError: manifest or entry missing, file missing, or hash mismatch.
    """
    manifest_path = Path(manifest_path)
    models = read_manifest(manifest_path)["models"]
    if name not in models:
        raise ManifestError(f"model manifest {manifest_path} has no entry '{name}' "
                            f"(entries: {sorted(models)})")
    entry = models[name]
    for key in ("file", "sha256", "inputs", "outputs"):
        if key not in entry:
            raise ManifestError(f"manifest entry '{name}' in {manifest_path} lacks '{key}'")
    path = Path(model_path) if model_path else manifest_path.parent / entry["file"]
    if not path.is_file():
        raise ManifestError(f"model file for '{name}' not found: {path}")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ManifestError(
            f"SHA-256 mismatch for model '{name}': {path} hashes to {actual}, manifest "
            f"{manifest_path} expects {entry['sha256']}; refusing to load a model the "
            f"manifest does not describe (re-export it or update the manifest)")
    return ModelSpec(
        name=name,
        path=path.resolve(),
        sha256=actual,
        inputs=tuple(TensorSpec.from_dict(t) for t in entry["inputs"]),
        outputs=tuple(TensorSpec.from_dict(t) for t in entry["outputs"]),
        preprocessing=dict(entry.get("preprocessing", {})),
        entry=dict(entry),
    )
