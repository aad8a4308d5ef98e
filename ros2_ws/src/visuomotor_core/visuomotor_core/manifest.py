"""Model manifest: which ONNX files may run, with their hashes and I/O contracts.

``models/artifacts/manifest.json`` maps a model name to an entry::

    {"models": {"encoder": {"file": "encoder.onnx", "sha256": "...",
                            "robot": "panda",
                            "inputs": [{"name": "image", "shape": ["batch", 3, 128, 128],
                                        "dtype": "float32"}],
                            "outputs": [...], "preprocessing": {...}, "opset": 17,
                            "training": {"command": "...", "config": {...}},
                            "metrics": {...},
                            "record_sha256": "..."}}}

Loading is fail-closed, in this order:

1. :func:`load_model_spec` checks the entry itself: the required keys are present and
   ``record_sha256`` equals :func:`record_digest` of the rest of the entry (canonical
   JSON), so an entry edited by hand, half-merged or copied from another manifest is
   refused. (This detects accidents; it is not a signature.)
   ``visuomotor_models.export.write_manifest_entry`` seals every entry it writes.
2. It checks the ONNX file's SHA-256 against ``sha256`` before anything creates an
   inference session.
3. After the session is created, :func:`check_session_contract` compares the entry's
   inputs and outputs (names, order, dtypes, shapes, symbolic axes) with the graph
   itself (``InferenceSession.get_inputs()/get_outputs()``); each runtime then checks
   its own fields (preprocessing, history length, robot, rates) against the graph and
   against what it is given.

Every refusal is a :class:`ManifestError` (a contract mismatch the subclass
:class:`ModelContractError`) with a one-line message naming the field and both values,
e.g. ``encoder.onnx: input 'image' shape: manifest ['batch', 3, 64, 64], model ['batch',
3, 128, 128]``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_HASH_CHUNK_BYTES = 1 << 20
#: Key of the entry's own digest (see :func:`record_digest`).
RECORD_HASH_KEY = "record_sha256"
#: Keys every entry needs.
REQUIRED_KEYS = ("file", "sha256", "robot", "inputs", "outputs", RECORD_HASH_KEY)
#: ONNX Runtime tensor type names -> manifest dtype names.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}


class ManifestError(RuntimeError):
    """A model cannot be used: missing file or entry, hash mismatch, or a contract that
    the model or the runtime does not meet. The message is one line."""


class ModelContractError(ManifestError):
    """The manifest's contract disagrees with the ONNX graph or with the runtime."""


def contract_error(model: str, field: str, first_value: Any, other_value: Any,
                   other: str = "model", first: str = "manifest") -> ModelContractError:
    """``<model>: <field>: manifest <value>, model <value>`` (the two sides named by
    ``first`` and ``other``) as a one-line :class:`ModelContractError`."""
    text = f"{model}: {field}: {first} {first_value!r}, {other} {other_value!r}"
    return ModelContractError(" ".join(text.split()))


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints; a string names a dynamic axis) and dtype of one model tensor."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        try:
            spec = cls(str(data["name"]), tuple(data["shape"]), str(data["dtype"]))
        except (KeyError, TypeError) as err:
            raise ManifestError(f"tensor entry {data!r} needs name, shape and dtype") from err
        for dim in spec.shape:
            fixed = isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
            if not fixed and not (isinstance(dim, str) and dim):
                raise ManifestError(f"tensor '{spec.name}' shape {list(spec.shape)}: each "
                                    f"axis must be a positive int or an axis name")
        return spec

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

    @property
    def label(self) -> str:
        """The model file's name, the prefix of every contract message."""
        return self.path.name

    @property
    def robot(self) -> str:
        """The robot the model was trained for (e.g. ``panda``)."""
        return str(self.entry["robot"])

    def check_robot(self, robot: str, source: str = "runtime") -> None:
        """Refuse a model trained for another robot than ``robot`` (``source`` names where
        the runtime's value comes from)."""
        if robot != self.robot:
            raise contract_error(self.label, "robot", self.robot, robot, source)

    def check_rate(self, field_name: str, manifest_hz: float, runtime_hz: float,
                   source: str = "runtime") -> None:
        """Refuse a rate (Hz) that differs from the trained one by more than 0.1 %."""
        if not math.isclose(float(manifest_hz), float(runtime_hz), rel_tol=1e-3):
            raise contract_error(self.label, field_name, float(manifest_hz),
                                 float(runtime_hz), source)

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


def robot_name(urdf_path: str | Path) -> str:
    """The ``name`` of a URDF's ``<robot>`` element (what the manifest's ``robot`` records).

    Raises:
        ManifestError: the file is missing, not XML, or its root is not a named <robot>.
    """
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(urdf_path).getroot()
    except (OSError, ET.ParseError) as err:
        raise ManifestError(f"cannot read the robot name from URDF {urdf_path}: {err}") \
            from err
    if root.tag != "robot" or not root.get("name"):
        raise ManifestError(f"URDF {urdf_path} has no named <robot> root element")
    return str(root.get("name"))


def record_digest(entry: dict[str, Any]) -> str:
    """SHA-256 of an entry's canonical JSON (sorted keys, no whitespace), without its own
    ``record_sha256``. Floats are written as Python's ``repr`` (exact round trip)."""
    body = {k: v for k, v in entry.items() if k != RECORD_HASH_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``entry`` with ``record_sha256`` set to its :func:`record_digest`.

    ``entry`` must be plain JSON data (dicts, lists, str, int, float, bool, None).
    """
    body = {k: v for k, v in entry.items() if k != RECORD_HASH_KEY}
    return {**body, RECORD_HASH_KEY: record_digest(body)}


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


def settings_from_record(cls, record: dict, what: str):
    """A frozen settings dataclass ``cls`` from its record in a manifest entry (e.g. the
    policy record's ``sag_estimator``); lists become tuples of floats. ValueError (not
    :class:`ManifestError`: the loader adds the entry's name) for a key ``cls`` lacks,
    naming the settings as ``what``."""
    unknown = set(record) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings {sorted(unknown)}")
    return cls(**{k: tuple(float(x) for x in v) if isinstance(v, list | tuple) else v
                  for k, v in record.items()})


def load_model_spec(manifest_path: str | Path, name: str,
                    model_path: str | Path | None = None) -> ModelSpec:
    """Read entry ``name`` and verify the model file's SHA-256 against it.

    Args:
        manifest_path: the manifest JSON.
        name: model name in the manifest (``encoder``, ``policy``, ...).
        model_path: the ONNX file; default: the entry's ``file`` next to the manifest.

    Raises:
        ManifestError: manifest or entry missing, entry edited since it was written
            (``record_sha256``), file missing, or file hash mismatch.
    """
    manifest_path = Path(manifest_path)
    models = read_manifest(manifest_path)["models"]
    if name not in models:
        raise ManifestError(f"model manifest {manifest_path} has no entry '{name}' "
                            f"(entries: {sorted(models)})")
    entry = models[name]
    if not isinstance(entry, dict):
        raise ManifestError(f"manifest entry '{name}' in {manifest_path} is not a mapping")
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise ManifestError(f"manifest entry '{name}' in {manifest_path} lacks '{key}'")
    if not isinstance(entry["robot"], str) or not entry["robot"]:
        raise ManifestError(f"manifest entry '{name}' in {manifest_path}: 'robot' must name "
                            f"the robot the model was trained for, got {entry['robot']!r}")
    try:
        recorded = record_digest(entry)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"manifest entry '{name}' in {manifest_path} is not plain "
                            f"JSON data: {err}") from err
    if recorded != entry[RECORD_HASH_KEY]:
        raise ManifestError(
            f"manifest entry '{name}' in {manifest_path}: {RECORD_HASH_KEY} mismatch: "
            f"recorded {entry[RECORD_HASH_KEY]}, entry hashes to {recorded}; the entry was "
            f"changed after it was written (re-export the model, or re-write the entry "
            f"with visuomotor_models.export.write_manifest_entry)")
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
        inputs=_tensor_specs(entry["inputs"], name, "inputs"),
        outputs=_tensor_specs(entry["outputs"], name, "outputs"),
        preprocessing=dict(entry.get("preprocessing", {})),
        entry=dict(entry),
    )


def _tensor_specs(data: Any, name: str, key: str) -> tuple[TensorSpec, ...]:
    if not isinstance(data, list) or not data:
        raise ManifestError(f"manifest entry '{name}': '{key}' must be a non-empty list")
    return tuple(TensorSpec.from_dict(t) for t in data)


def _dim_text(dim: Any) -> Any:
    return dim if isinstance(dim, int) else (dim or "?")


def _same_dim(manifest_dim: int | str, model_dim: Any) -> bool:
    """Fixed axes must be equal; a symbolic (named) axis matches any symbolic or unknown
    axis, never a fixed one."""
    if isinstance(manifest_dim, int):
        return isinstance(model_dim, int) and model_dim == manifest_dim
    return not isinstance(model_dim, int)


def check_session_contract(spec: ModelSpec, session: Any) -> None:
    """Compare the entry's inputs and outputs with the graph an ONNX Runtime session loaded.

    Names and their order, dtypes, ranks and every axis (fixed sizes equal; a symbolic
    axis such as ``batch`` must be symbolic in the graph too) must agree.

    Raises:
        ModelContractError: naming the tensor, the field and both values.
    """
    for kind, declared, actual in (("input", spec.inputs, session.get_inputs()),
                                   ("output", spec.outputs, session.get_outputs())):
        names = [t.name for t in declared]
        graph_names = [a.name for a in actual]
        if names != graph_names:
            raise contract_error(spec.label, f"{kind}s", names, graph_names)
        for tensor, arg in zip(declared, actual, strict=True):
            dtype = ORT_DTYPES.get(arg.type, arg.type)
            if tensor.dtype != dtype:
                raise contract_error(spec.label, f"{kind} '{tensor.name}' dtype",
                                     tensor.dtype, dtype)
            shape = list(arg.shape)
            if len(shape) != len(tensor.shape) or not all(
                    _same_dim(d, g) for d, g in zip(tensor.shape, shape, strict=False)):
                raise contract_error(spec.label, f"{kind} '{tensor.name}' shape",
                                     list(tensor.shape), [_dim_text(g) for g in shape])
